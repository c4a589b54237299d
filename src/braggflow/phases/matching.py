"""Matching observed lines (1D) or spots (grazing incidence, 2D) to crystal phases.

The method, for one phase:

1. predicted lines from :func:`~braggflow.phases.reflections.reflections`
   (|F|^2, multiplicity, Lorentz-polarisation), merged at the observed resolution;
2. an isotropic lattice scale ``s`` (a = s a0) is scanned over
   ``1 +- max_mismatch``; at each, predicted and observed lines are paired
   one-to-one when closer than ``n_sigma`` times the combined error
   (``sqrt(q_err^2 + (rel_tolerance q)^2)``), and the scale that comes first by
   :func:`rank_key` wins;
3. with more pairs than free cell parameters, the free parameters (by crystal
   system) are refined by bounded least squares on the pairs, within the
   mismatch, weighted by the combined errors scaled by the Birge ratio
   sqrt(chi2_red) of a first fit; with ``refine_distance`` the distance d joins
   them with the Gaussian prior residual (d - d0) / sigma_d, the observed q are
   recomputed at d (untilted detector), and the pairing is repeated there.  With
   fewer pairs the cell is not refined and its errors are NaN;
4. score = f_obs x f_pred x A, where f_obs is the fraction of the observed
   intensity that the phase explains, f_pred the fraction of the predicted
   intensity of the lines that should be seen (expected: predicted above the
   detection limit after scaling) that is found, and A = exp(-s^2 / 2 tau^2),
   s^2 the variance (n - 1 degrees of freedom) of ln(I_obs / K I_calc) over the
   pairs (K: median intensity ratio; one pair gives s = tau);
5. the chance probability is the probability that a random set of lines of the
   observed density (uniform in q) matches at least as many expected lines
   (Poisson-binomial over each line's window), corrected for the lattice
   search (Sidak, one trial per independent scale and free cell parameter), so
   that phases with many lines do not win by luck; with 3 or more pairs it is
   combined (Fisher) with the probability that random intensities are ordered
   as much like the predicted ones (Kendall's tau).  For a contact plane the
   positional part counts only the polar angles: the observed spots kept at
   their q and spread uniformly over 0-90 deg.  ``significance`` = -log10(p);
6. a refined distance z prior errors away from d0 divides the chance probability
   and multiplies the score by the prior density ratio exp(-z^2 / 2), so that no
   phase buys a better match with the distance.

References
----------
The chance-corrected figure of merit follows the idea of de Wolff's M20 and
Smith & Snyder's F_N (J. Appl. Cryst. 1, 108 (1968); 12, 60 (1979)): compare the
number of matched lines with the number expected by chance for the line density.
The distance prior is a restraint in the sense of Waser's restrained least
squares (Acta Cryst. 16, 1091 (1963)): one more residual, (d - d0) / sigma_d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.phases.reflections import reflections
from braggflow.phases.structure import Phase, metric_inverse

__all__ = [
    "MatchOptions",
    "PhaseMatch",
    "match_phase",
    "poisson_binomial_sf",
    "chance_probability",
    "contact_planes",
    "rank_key",
    "combined_probability",
]


@dataclass(frozen=True)
class MatchOptions:
    """Options of phase matching.

    Attributes
    ----------
    max_mismatch : float
        Largest relative lattice mismatch searched and refined (0.01 = 1%); 0 holds
        the cell at its nominal value (not refined).
    rel_tolerance : float
        Relative position tolerance added in quadrature to each line's error
        (unmodelled systematics: tilt, sample displacement, refraction).
    n_sigma : float
        Pairing window in units of the combined error.
    intensity_tau : float
        Width (natural-log units) of the intensity agreement, for lines of an
        azimuthally integrated profile (powder intensities).
    intensity_tau_spots : float
        The same for lines and spots of a peak table (``--spots``, ``--gixd``): spot
        intensities along a ring follow the texture and which maxima were found,
        not the powder intensity.
    detection_limit : float or None
        Weakest observable line intensity (observed units); None: the weakest observed line.
    wavelength : float or None
        Å, for Lorentz-polarisation weights and distance refinement.
    refine : bool
        Refine the cell by least squares (only from more matched lines than free
        cell parameters).
    refine_distance : bool
        Refine the sample-detector distance too, with a Gaussian prior: the residual
        (d - distance_mm) / distance_err_mm joins the line residuals (needs both,
        distance_err_mm > 0).
    distance_mm, distance_err_mm : float
        Sample-detector distance of the observations and its 1-sigma uncertainty; the
        uncertainty is always propagated into the refined cell.
    mosaicity_deg : float
        2D (grazing incidence): 1-sigma angular tolerance of the polar angle.
    max_index : int
        2D: largest Miller index of contact planes searched.
    p_max : float
        Largest chance probability of an accepted phase.
    intensity_order : bool
        With 3 or more matched lines, combine the probability that the matched
        intensities are ordered like the predicted ones by chance (Kendall's tau)
        with that of the positions (Fisher).
    """

    max_mismatch: float = 0.01
    rel_tolerance: float = 1e-3
    n_sigma: float = 3.0
    intensity_tau: float = 0.5
    intensity_tau_spots: float = 2.0
    detection_limit: float | None = None
    wavelength: float | None = None
    refine: bool = True
    refine_distance: bool = False
    distance_mm: float | None = None
    distance_err_mm: float = 0.0
    mosaicity_deg: float = 3.0
    max_index: int = 2
    p_max: float = 1e-3
    intensity_order: bool = True


@dataclass
class PhaseMatch:
    """The result of matching one phase (optionally one contact plane) to the observations.

    Attributes
    ----------
    phase : str
    score : float
        f_obs x f_pred x intensity agreement, 0..1 (times exp(-z^2/2) when the
        distance was refined z prior errors away from its nominal value).
    chance_probability : float
        Probability of a match this good by chance: positions (corrected for the
        lattice search) combined with the order of the matched intensities, divided
        by exp(-z^2/2) when the distance was refined; at most 1.
    significance : float
        -log10(chance_probability).
    p_positions, p_intensity : float
        The two probabilities combined in ``chance_probability`` (``p_intensity``
        NaN when not tested: fewer than 3 pairs).  For a contact plane
        ``p_positions`` is that of the polar angles alone.
    n_matched, n_expected, n_observed : int
        Matched expected lines, expected lines, observed lines.
    f_obs, f_pred, intensity_agreement : float
        Score components.
    cell, cell_err : tuple of 6 float
        Cell (Å, deg) at which the lines were paired and its 1-sigma errors (0 for
        parameters fixed by symmetry; NaN for the free ones when not refined).
    refined : bool
        Whether the cell was refined: only from more matched lines than free cell
        parameters, so that its errors can be estimated.
    n_fit : int
        Lines used in the refinement (0 when not refined).
    n_pairs : int
        Observed lines (or spots) paired with predicted ones, expected or not.
    at_limit : bool
        A refined parameter ended at its search limit (``max_mismatch``, or 10 prior
        errors for the distance): the lines ask for more, and its error is a lower bound.
    free_parameters : tuple of str
        The cell's free parameters (by crystal system).
    cell_nominal : tuple of 6 float
    distance_mm, distance_err_mm : float or None
        Refined distance (when asked) and its error.
    contact_plane : str
        "random" (powder) or "h k l" (fibre texture, grazing incidence).
    pairs : pandas.DataFrame
        One row per matched observation: ``obs`` (index into the observations),
        ``q_obs``, ``q_calc``, ``h, k, l``, ``hkl``, ``intensity_obs``, ``intensity_calc``.
    chi2_red : float
        Reduced chi-square of the line residuals in the cell refinement (NaN when not refined).
    predicted : pandas.DataFrame
        The predicted lines (or spots) at the refined cell: ``q``, ``intensity``
        (scaled to the observations), ``hkl``, ``expected``, ``matched`` (and
        ``polar``, deg from the surface normal, for a contact plane).
    """

    phase: str
    score: float = 0.0
    chance_probability: float = 1.0
    significance: float = 0.0
    n_matched: int = 0
    n_expected: int = 0
    n_observed: int = 0
    f_obs: float = 0.0
    f_pred: float = 0.0
    intensity_agreement: float = 0.0
    cell: tuple = ()
    cell_err: tuple = ()
    cell_nominal: tuple = ()
    distance_mm: float | None = None
    distance_err_mm: float | None = None
    contact_plane: str = "random"
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    chi2_red: float = float("nan")
    predicted: pd.DataFrame = field(default_factory=pd.DataFrame)
    refined: bool = False
    n_fit: int = 0
    n_pairs: int = 0
    free_parameters: tuple = ()
    at_limit: bool = False
    p_positions: float = 1.0
    p_intensity: float = float("nan")

    def summary(self) -> dict:
        """One-line summary as a plain dict (JSON-serialisable)."""
        names = ("a", "b", "c", "alpha", "beta", "gamma")
        out = {
            "phase": self.phase, "score": round(float(self.score), 4),
            "chance_probability": float(self.chance_probability), "significance": round(float(self.significance), 2),
            "n_matched": int(self.n_matched), "n_expected": int(self.n_expected), "n_observed": int(self.n_observed),
            "f_obs": round(float(self.f_obs), 4), "f_pred": round(float(self.f_pred), 4),
            "intensity_agreement": round(float(self.intensity_agreement), 4), "contact_plane": self.contact_plane,
            "chi2_red": float(self.chi2_red), "refined": bool(self.refined), "n_fit": int(self.n_fit),
            "at_limit": bool(self.at_limit),
            "p_positions": float(self.p_positions), "p_intensity": float(self.p_intensity),
        }
        for i, n in enumerate(names):
            out[n] = float(self.cell[i]) if self.cell else float("nan")
            out[f"{n}_err"] = float(self.cell_err[i]) if self.cell_err else float("nan")
        out["distance_mm"] = self.distance_mm
        out["distance_err_mm"] = self.distance_err_mm
        return out


# --------------------------------------------------------------------------- statistics
def poisson_binomial_sf(p: np.ndarray, k: int) -> float:
    """P(X >= k) for X a sum of independent Bernoulli(p_i) variables (exact, dynamic programming).

    Parameters
    ----------
    p : (M,) array_like of float in [0, 1]
    k : int

    Returns
    -------
    prob : float
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if k <= 0:
        return 1.0
    if k > len(p):
        return 0.0
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for pi in p:
        dist[1:] = dist[1:] * (1 - pi) + dist[:-1] * pi
        dist[0] *= 1 - pi
    return float(min(1.0, dist[k:].sum()))


def chance_probability(window_probabilities: np.ndarray, n_matched: int, n_trials: float) -> float:
    """Probability that random lines match ``n_matched`` windows or more, over ``n_trials`` searches.

    Parameters
    ----------
    window_probabilities : (M,) array_like
        Probability that a random observation set has a line in each predicted window.
    n_matched : int
    n_trials : float
        Independent trials of the search (Sidak correction: 1 - (1 - p)^n).

    Returns
    -------
    p : float
    """
    p = poisson_binomial_sf(window_probabilities, n_matched)
    n_trials = max(1.0, float(n_trials))
    if p >= 1.0:
        return 1.0
    return float(-np.expm1(n_trials * np.log1p(-p))) if p > 0 else float(n_trials * 0.0)


# --------------------------------------------------------------------------- predicted lines
@dataclass
class _Predicted:
    """Reflections of a phase grouped into lines (1D) or spots (2D)."""

    hkl: np.ndarray          # (R, 3) reflections (for 2D: every equivalent with q_z >= 0)
    weight: np.ndarray       # (R,) powder intensity of each reflection
    group: np.ndarray        # (R,) line / spot index of each reflection
    polar: np.ndarray | None  # (R,) polar angle from the surface normal, deg (2D only)

    def positions(self, cell) -> tuple[np.ndarray, np.ndarray]:
        """Line q (intensity-weighted mean of members, 1/Å) and line intensity."""
        gstar = metric_inverse(cell)
        q = 2 * np.pi * np.sqrt(np.einsum("ni,ij,nj->n", self.hkl, gstar, self.hkl))
        n = int(self.group.max()) + 1 if len(self.group) else 0
        w = np.bincount(self.group, weights=self.weight, minlength=n)
        qw = np.bincount(self.group, weights=self.weight * q, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w > 0, qw / np.where(w > 0, w, 1), 0.0), w

    def polar_angles(self, cell, normal) -> np.ndarray:
        """Polar angle (deg) of each group from the contact-plane normal (2D)."""
        gstar = metric_inverse(cell)
        hn = np.asarray(normal, dtype=np.float64)
        num = np.einsum("ni,ij,j->n", self.hkl, gstar, hn)
        den = np.sqrt(np.einsum("ni,ij,nj->n", self.hkl, gstar, self.hkl)) * math.sqrt(hn @ gstar @ hn)
        ang = np.degrees(np.arccos(np.clip(num / den, -1, 1)))
        n = int(self.group.max()) + 1 if len(self.group) else 0
        w = np.bincount(self.group, weights=self.weight, minlength=n)
        aw = np.bincount(self.group, weights=self.weight * ang, minlength=n)
        return np.where(w > 0, aw / np.where(w > 0, w, 1), 0.0)

    def labels(self) -> list[str]:
        """Miller indices of the strongest member of each group."""
        n = int(self.group.max()) + 1 if len(self.group) else 0
        out = [""] * n
        best = np.full(n, -1.0)
        for h, w, g in zip(self.hkl, self.weight, self.group):
            if w > best[g]:
                best[g] = w
                out[g] = f"{h[0]} {h[1]} {h[2]}"
        return out


def _predicted_1d(phase: Phase, q_max: float, resolution: float, wavelength: float | None) -> _Predicted:
    refl = reflections(phase, q_max=q_max, wavelength=wavelength)
    hkl = refl[["h", "k", "l"]].to_numpy(dtype=np.int64)
    q = refl["q"].to_numpy()
    order = np.argsort(q)
    hkl, q, w = hkl[order], q[order], refl["intensity"].to_numpy()[order]
    group = (
        np.concatenate([[0], np.cumsum(np.diff(q) > resolution)]).astype(np.int64)
        if len(q)
        else np.zeros(0, np.int64)
    )
    return _Predicted(hkl=hkl, weight=w, group=group, polar=None)


def contact_planes(phase: Phase, max_index: int = 2) -> list[tuple[int, int, int]]:
    """Symmetry-distinct low-index planes (h k l) with gcd 1, for the contact-plane search.

    Parameters
    ----------
    phase : Phase
    max_index : int

    Returns
    -------
    planes : list of (h, k, l)
    """
    from braggflow.phases.reflections import symmetry_equivalents

    seen: set = set()
    out = []
    rng = range(-max_index, max_index + 1)
    for h in rng:
        for k in rng:
            for l in rng:  # noqa: E741 - l is the Miller index, as in (h, k, l)
                if (h, k, l) == (0, 0, 0) or math.gcd(math.gcd(abs(h), abs(k)), abs(l)) != 1:
                    continue
                if (h, k, l) in seen:
                    continue
                eq = {tuple(int(x) for x in e) for e in symmetry_equivalents(phase, (h, k, l))}
                seen |= eq
                out.append(max(eq))
    return out


def _predicted_2d(phase: Phase, q_max: float, normal, q_res: float, polar_res: float,
                  wavelength: float | None) -> _Predicted:
    """Every reflection (all equivalents) above the horizon for a contact plane, grouped into spots."""
    from braggflow.phases.reflections import symmetry_equivalents

    refl = reflections(phase, q_max=q_max, wavelength=wavelength)
    gstar = metric_inverse(phase.cell)
    hn = np.asarray(normal, dtype=np.float64)
    hkl_all, w_all = [], []
    for row in refl.itertuples():
        eq = symmetry_equivalents(phase, (row.h, row.k, row.l))
        f2 = row.F2
        hkl_all.append(eq)
        w_all.append(np.full(len(eq), f2))
    if not hkl_all:
        return _Predicted(hkl=np.zeros((0, 3), np.int64), weight=np.zeros(0), group=np.zeros(0, np.int64),
                          polar=np.zeros(0))
    hkl = np.concatenate(hkl_all)
    w = np.concatenate(w_all)
    q = 2 * np.pi * np.sqrt(np.einsum("ni,ij,nj->n", hkl, gstar, hkl))
    cosang = np.einsum("ni,ij,j->n", hkl, gstar, hn) / (q / (2 * np.pi)) / math.sqrt(hn @ gstar @ hn)
    keep = cosang >= -1e-9
    hkl, w, q = hkl[keep], w[keep], q[keep]
    polar = np.degrees(np.arccos(np.clip(cosang[keep], -1, 1)))
    # group reflections that land on the same (q, polar) spot
    key = np.stack([np.round(q / q_res), np.round(polar / polar_res)], axis=1)
    _, group = np.unique(key, axis=0, return_inverse=True)
    return _Predicted(hkl=hkl, weight=w, group=group.astype(np.int64).ravel(), polar=polar)


# --------------------------------------------------------------------------- pairing and scoring
def _pair(dist: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs (obs j, pred i) with normalised distance <= 1, closest first."""
    j, i = np.nonzero(dist <= 1.0)
    order = np.argsort(dist[j, i])
    used_j, used_i, pairs = set(), set(), []
    for o in order:
        a, b = int(j[o]), int(i[o])
        if a in used_j or b in used_i:
            continue
        used_j.add(a)
        used_i.add(b)
        pairs.append((a, b))
    return pairs


@dataclass
class _Obs:
    q: np.ndarray
    tol: np.ndarray          # n_sigma x combined 1-sigma error, 1/Å
    sigma: np.ndarray        # combined 1-sigma error, 1/Å
    fit_sigma: np.ndarray    # least-squares weight (the combined error), 1/Å
    intensity: np.ndarray
    polar: np.ndarray | None = None  # deg, 2D only
    q_lo: float = 0.0
    q_hi: float = 0.0
    det_limit: float = 0.0
    wavelength: float | None = None  # Å
    distance_mm: float | None = None  # distance at which q was computed

    def at_distance(self, distance: float | None) -> _Obs:
        """The observations as seen from another sample-detector distance (detector points fixed, no tilt)."""
        if distance is None or self.distance_mm is None or not self.wavelength or distance == self.distance_mm:
            return self
        q = _q_obs_at_distance(self.q, self.wavelength, self.distance_mm, distance)
        ratio = np.where(self.q > 0, q / np.where(self.q > 0, self.q, 1.0), 1.0)
        return replace(self, q=q, tol=self.tol * ratio, sigma=self.sigma * ratio, fit_sigma=self.fit_sigma * ratio)


@dataclass
class _Assessment:
    """Pairs and figures of one phase at one cell (and distance)."""

    pairs: list
    comp: dict
    qp: np.ndarray
    ip: np.ndarray
    polar: np.ndarray | None
    expected: np.ndarray
    matched: np.ndarray
    n_matched: int
    p_positions: float
    p_intensity: float
    chance_probability: float
    score: float

    @property
    def significance(self) -> float:
        return float(-math.log10(max(self.chance_probability, 1e-300)))


def rank_key(score: float, chance_probability: float) -> tuple:
    """The one ordering of matches: lower chance probability first, then higher score.

    Used to choose the lattice scale, the hypothesis of a phase (powder or a
    contact plane), the order of the phases and the acceptance of a mixture, so
    that these never disagree: a phase is accepted when its chance probability
    is below ``p_max``, so the accepted phases are always the first ones.

    Parameters
    ----------
    score : float
    chance_probability : float

    Returns
    -------
    key : tuple
        Larger is better.
    """
    return (-float(chance_probability), round(float(score), 12))


def _evaluate(obs: _Obs, qp: np.ndarray, ip: np.ndarray, opts: MatchOptions, polar_p: np.ndarray | None = None):
    """Pairs and score components for predicted positions qp (and polar angles for 2D)."""
    dist = np.abs(obs.q[:, None] - qp[None, :]) / obs.tol[:, None]
    if polar_p is not None:
        tol_ang = opts.n_sigma * opts.mosaicity_deg
        dist = np.hypot(dist, (obs.polar[:, None] - polar_p[None, :]) / tol_ang)
    pairs = _pair(dist)
    in_range = (qp >= obs.q_lo) & (qp <= obs.q_hi) & (ip > 0)
    total_obs = obs.intensity.sum()
    if not pairs:
        return pairs, dict(score=0.0, f_obs=0.0, f_pred=0.0, agreement=0.0, K=np.nan,
                           expected=np.zeros_like(in_range), chi=np.inf)
    j = np.array([p[0] for p in pairs])
    i = np.array([p[1] for p in pairs])
    ratio = np.log(np.maximum(obs.intensity[j], 1e-300) / np.maximum(ip[i], 1e-300))
    lnk = float(np.median(ratio))
    K = math.exp(lnk)
    expected = in_range & (K * ip >= obs.det_limit)
    matched_pred = np.zeros(len(qp), dtype=bool)
    matched_pred[i] = True
    f_obs = float(obs.intensity[j].sum() / total_obs) if total_obs > 0 else 0.0
    exp_sum = ip[expected].sum()
    f_pred = float(ip[expected & matched_pred].sum() / exp_sum) if exp_sum > 0 else 0.0
    agreement = _intensity_agreement(ratio - lnk, opts.intensity_tau)
    chi = float(np.sum(dist[j, i] ** 2))
    return pairs, dict(score=f_obs * f_pred * agreement, f_obs=f_obs, f_pred=f_pred, agreement=agreement, K=K,
                       expected=expected, chi=chi)


def _intensity_agreement(deviation: np.ndarray, tau: float) -> float:
    """exp(-s^2 / 2 tau^2), s^2 the variance of the log intensity ratios about their median.

    One pair fits the scale exactly and says nothing about the agreement: its
    variance is taken as tau^2 (agreement exp(-1/2)); with n pairs the sum of
    squares is divided by n - 1 (one degree of freedom went into the scale).
    """
    n = len(deviation)
    var = tau ** 2 if n < 2 else float(np.sum(deviation ** 2) / (n - 1))
    return float(math.exp(-var / (2 * tau ** 2)))


def _intensity_order_probability(obs_intensity: np.ndarray, calc_intensity: np.ndarray) -> float:
    """One-sided probability that random intensities are ordered as much like the predicted ones (Kendall's tau).

    NaN (no test) with fewer than 3 pairs or constant intensities.
    """
    if len(obs_intensity) < 3:
        return float("nan")
    from scipy.stats import kendalltau

    with np.errstate(all="ignore"):
        p = kendalltau(obs_intensity, calc_intensity, alternative="greater").pvalue
    return float(p) if np.isfinite(p) else float("nan")


def _chance(obs: _Obs, qp: np.ndarray, expected: np.ndarray, matched: np.ndarray, opts: MatchOptions,
            polar_p: np.ndarray | None, n_free: int) -> tuple[float, int]:
    """Chance probability of the match (see the module docstring) and the number of matched expected lines.

    1D: random lines of the observed density (uniform in q) falling in each expected
    line's window, corrected for the lattice search.  2D (a contact plane): the
    observed spots kept at their q but at random polar angles (uniform over
    0-90 deg) falling in each expected spot's window, so that only the agreement
    of the polar angles counts (the q positions are the powder hypothesis' evidence).
    """
    err_med = float(np.median(np.sqrt(np.maximum(obs.sigma ** 2 - (opts.rel_tolerance * obs.q) ** 2, 0.0))))
    tol_pred = opts.n_sigma * np.sqrt(err_med ** 2 + (opts.rel_tolerance * qp) ** 2)
    k = int(np.sum(matched & expected))
    if polar_p is not None:
        # the spots that could pair with each expected spot for some polar angle (the pairing's q window)
        in_band = np.abs(obs.q[None, :] - qp[expected][:, None]) <= obs.tol[None, :]
        n_band = in_band.sum(axis=1)
        fraction = min(1.0, 2 * opts.n_sigma * opts.mosaicity_deg / 90.0)
        p_window = -np.expm1(n_band * math.log1p(-fraction)) if fraction < 1 else (n_band > 0).astype(float)
        return chance_probability(p_window, k, 1.0), k
    density = len(obs.q) / max(obs.q_hi - obs.q_lo, 1e-12)
    p_window = -np.expm1(-density * 2 * tol_pred[expected])
    rel_window = float(np.median(tol_pred / np.maximum(qp, 1e-12))) if len(qp) else 1.0
    n_scale = max(1.0, opts.max_mismatch / max(rel_window, 1e-12))
    return chance_probability(p_window, k, n_scale ** n_free), k


def _assess(obs: _Obs, pred: _Predicted, cell, opts: MatchOptions, normal, n_free: int,
            prior_z: float = 0.0) -> _Assessment:
    """Pair the phase at ``cell`` with the observations and compute its score and chance probability.

    ``prior_z``: distance shift in units of its prior error; the prior density ratio
    exp(-z^2/2) multiplies the score and divides the chance probability.
    """
    qp, ip = pred.positions(cell)
    polar = pred.polar_angles(cell, normal) if normal is not None else None
    pairs, comp = _evaluate(obs, qp, ip, opts, polar)
    matched = np.zeros(len(qp), dtype=bool)
    if pairs:
        matched[[p[1] for p in pairs]] = True
    expected = comp["expected"]
    p_pos, k = _chance(obs, qp, expected, matched, opts, polar, n_free)
    p_int = float("nan")
    if pairs and opts.intensity_order:
        j = np.array([p[0] for p in pairs])
        i = np.array([p[1] for p in pairs])
        p_int = _intensity_order_probability(obs.intensity[j], ip[i])
    p = combined_probability(p_pos, p_int) if np.isfinite(p_int) else p_pos
    prior = math.exp(-0.5 * prior_z ** 2)
    p = min(1.0, p / prior) if prior > 0 else 1.0
    return _Assessment(pairs=pairs, comp=comp, qp=qp, ip=ip, polar=polar, expected=expected, matched=matched,
                       n_matched=k, p_positions=p_pos, p_intensity=p_int, chance_probability=p,
                       score=comp["score"] * prior)


def combined_probability(p1: float, p2: float) -> float:
    """Fisher's combination of two independent probabilities: P(chi2 with 4 dof >= -2 ln(p1 p2)).

    Parameters
    ----------
    p1, p2 : float
        Probabilities in [0, 1], each uniform under the null hypothesis.

    Returns
    -------
    p : float
        ``p1 p2 (1 - ln(p1 p2))``.

    References
    ----------
    R. A. Fisher, Statistical Methods for Research Workers, 4th ed. (1932), section 21.1.
    """
    prod = max(float(p1) * float(p2), 1e-300)
    return float(min(1.0, prod * (1.0 - math.log(prod))))


def _scan_scale(obs: _Obs, pred: _Predicted, cell0, opts: MatchOptions, n_free: int, normal=None):
    """Best isotropic lattice scale within the mismatch (positions scale as 1/s), by :func:`rank_key`."""
    rel = np.min(obs.tol / obs.q) if len(obs.q) else 1e-3
    step = float(np.clip(rel / 3, 2e-5, max(opts.max_mismatch / 5, 2e-5)))
    scales = (
        np.arange(1 - opts.max_mismatch, 1 + opts.max_mismatch + step / 2, step)
        if opts.max_mismatch > 0
        else np.array([1.0])
    )
    best, best_key = 1.0, None
    for s in scales:
        a = _assess(obs, pred, _scaled_cell(cell0, s), opts, normal, n_free)
        key = (*rank_key(a.score, a.chance_probability), -a.comp["chi"])
        if best_key is None or key > best_key:
            best, best_key = float(s), key
    return best


def _scaled_cell(cell, s):
    a, b, c, al, be, ga = cell
    return (a * s, b * s, c * s, al, be, ga)


def _q_obs_at_distance(obs_q, wavelength, d0, d):
    """Observed q re-computed for another distance (detector points fixed, no tilt)."""
    tth = 2 * np.arcsin(np.clip(obs_q * wavelength / (4 * np.pi), -1, 1))
    tth_new = np.arctan(np.tan(tth) * d0 / d)
    return 4 * np.pi * np.sin(tth_new / 2) / wavelength


@dataclass
class _Fit:
    cell: tuple
    cell_err: tuple
    chi2_red: float
    distance: float | None
    distance_err: float | None
    n_fit: int
    at_limit: bool = False


def _refines_distance(opts: MatchOptions) -> bool:
    return bool(opts.refine_distance and opts.distance_mm and opts.distance_err_mm > 0 and opts.wavelength)


def _refine(obs: _Obs, pred: _Predicted, phase: Phase, cell_start, pairs, opts: MatchOptions,
            distance_start: float | None = None) -> _Fit:
    """Least-squares refinement of the free cell parameters (and the distance, with its prior) on the pairs.

    The line residuals are weighted by the measurement errors scaled by the
    Birge ratio sqrt(chi2_red) of a first fit, so that their weight against the
    distance prior (d - d0) / sigma_d reflects how well the lines really agree.
    Needs more pairs than free cell parameters.
    """
    from scipy.optimize import least_squares

    names = phase.free_cell_parameters()
    slots = ("a", "b", "c", "alpha", "beta", "gamma")
    nominal = dict(zip(slots, phase.cell))
    start = dict(zip(slots, cell_start))
    x0 = np.array([start[n] for n in names])
    lo = np.array([
        nominal[n] * (1 - opts.max_mismatch) if n in "abc" else nominal[n] - 100 * opts.max_mismatch for n in names
    ])
    hi = np.array([
        nominal[n] * (1 + opts.max_mismatch) if n in "abc" else nominal[n] + 100 * opts.max_mismatch for n in names
    ])
    x0 = np.clip(x0, lo + 1e-9 * abs(lo), hi - 1e-9 * abs(hi))
    j = np.array([p[0] for p in pairs])
    i = np.array([p[1] for p in pairs])
    use_distance = _refines_distance(opts)
    d0 = opts.distance_mm
    n_par = len(names)
    dof = len(j) - n_par  # the distance brings its own observation: the prior

    def cell_of(x):
        return phase.cell_from_free(dict(zip(names, x[:n_par])))

    def residuals(x, weight_scale=1.0, d=None):
        qp, _ = pred.positions(cell_of(x))
        if use_distance:
            d = x[-1]
        qo = obs.at_distance(d).q[j] if d is not None else obs.q[j]
        r = (qo - qp[i]) / (obs.fit_sigma[j] * weight_scale)
        if use_distance:
            r = np.append(r, (x[-1] - d0) / opts.distance_err_mm)
        return r

    if use_distance:
        start_d = distance_start if distance_start is not None else d0
        x0 = np.append(x0, np.clip(start_d, d0 - 9.99 * opts.distance_err_mm, d0 + 9.99 * opts.distance_err_mm))
        lo = np.append(lo, d0 - 10 * opts.distance_err_mm)
        hi = np.append(hi, d0 + 10 * opts.distance_err_mm)
    res = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac")
    line_chi2 = float(np.sum(res.fun[: len(j)] ** 2))
    chi2_red = line_chi2 / dof if dof > 0 else float("nan")
    birge = math.sqrt(chi2_red) if dof > 0 and chi2_red > 1 else 1.0
    if use_distance and birge > 1:
        res = least_squares(lambda x: residuals(x, birge), res.x, bounds=(lo, hi), x_scale="jac")
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac)
    except np.linalg.LinAlgError:
        cov = np.full((len(res.x), len(res.x)), np.nan)
    if not use_distance:
        cov = cov * birge ** 2
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    cell_err = err[:n_par]
    distance, distance_err = (float(res.x[-1]), float(err[-1])) if use_distance else (None, None)
    if not use_distance and opts.distance_err_mm > 0 and opts.distance_mm and opts.wavelength:
        # propagate the distance uncertainty: refit at d0 + h and add the shift in quadrature
        h = opts.distance_err_mm
        res_h = least_squares(lambda x: residuals(x, 1.0, d0 + h), res.x, bounds=(lo, hi), x_scale="jac")
        shift = (res_h.x - res.x)[:n_par]
        cell_err = np.sqrt(cell_err ** 2 + shift ** 2)
    span = hi - lo
    at_limit = bool(np.any((res.x - lo < 1e-6 * span) | (hi - res.x < 1e-6 * span)))
    return _Fit(cell=tuple(float(v) for v in cell_of(res.x)), cell_err=_full_errors(phase, names, cell_err),
                chi2_red=chi2_red, distance=distance, distance_err=distance_err, n_fit=len(j), at_limit=at_limit)


def _full_errors(phase: Phase, names: list[str], free_err) -> tuple:
    """Errors of the six cell parameters from those of the free ones (tied ones share them, fixed ones are 0)."""
    slots = ("a", "b", "c", "alpha", "beta", "gamma")
    full = dict.fromkeys(slots, 0.0)
    for n, e in zip(names, free_err):
        full[n] = float(e)
    tied = phase.cell_from_free({n: 1.0 + k for k, n in enumerate(names)})
    for slot, value in zip(slots, tied):
        for k, n in enumerate(names):
            if slot != n and value == 1.0 + k:
                full[slot] = full[n]
    return tuple(full[k] for k in slots)


def _unrefined_errors(phase: Phase) -> tuple:
    """Errors of a cell that was not refined: NaN for the free parameters and those tied to them, 0 for fixed ones."""
    names = phase.free_cell_parameters()
    return _full_errors(phase, names, [float("nan")] * len(names))


def _observations(table: pd.DataFrame, opts: MatchOptions, q_range, two_d: bool) -> _Obs:
    for col in ("q", "intensity"):
        if col not in table.columns:
            raise ConfigError(f"observations lack the column {col!r} (needs q in 1/Å and intensity)")
    q = table["q"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise ConfigError("observations have non-finite q values")
    q_err = table["q_err"].to_numpy(dtype=np.float64) if "q_err" in table.columns else np.zeros_like(q)
    q_err = np.where(np.isfinite(q_err), q_err, 0.0)
    sigma = np.sqrt(q_err ** 2 + (opts.rel_tolerance * q) ** 2)
    intensity = np.clip(np.nan_to_num(table["intensity"].to_numpy(dtype=np.float64)), 0.0, None)
    if q_range is None:
        if len(q):
            span = q.max() - q.min() if len(q) > 1 else q.max()
            q_range = (max(0.0, q.min() - 0.05 * span), q.max() + 0.05 * span)
        else:
            q_range = (0.0, 0.0)
    polar = None
    if two_d:
        for col in ("q_xy", "q_z"):
            if col not in table.columns:
                raise ConfigError(f"grazing-incidence matching needs the column {col!r}")
        polar = np.degrees(
            np.arctan2(np.abs(table["q_xy"].to_numpy(dtype=np.float64)), table["q_z"].to_numpy(dtype=np.float64))
        )
    det = (
        opts.detection_limit
        if opts.detection_limit is not None
        else (float(intensity[intensity > 0].min()) if np.any(intensity > 0) else 0.0)
    )
    # least-squares weights: the same combined errors as the pairing (a line measured very precisely
    # but shifted by unmodelled systematics does not pull the cell alone); a worse misfit shows in
    # chi2_red, whose square root scales them (Birge ratio)
    return _Obs(q=q, tol=opts.n_sigma * sigma, sigma=sigma, fit_sigma=sigma, intensity=intensity, polar=polar,
                q_lo=float(q_range[0]), q_hi=float(q_range[1]), det_limit=det, wavelength=opts.wavelength,
                distance_mm=opts.distance_mm)


def match_phase(
    observed: pd.DataFrame,
    phase: Phase,
    *,
    options: MatchOptions = MatchOptions(),
    q_range: tuple[float, float] | None = None,
    contact_plane: tuple[int, int, int] | None = None,
) -> PhaseMatch:
    """Match one phase to observed lines (1D) or, with a contact plane, to grazing-incidence spots.

    Parameters
    ----------
    observed : pandas.DataFrame
        One row per observed line or spot: ``q`` (1/Å), ``q_err`` (1/Å, optional),
        ``intensity``; for a contact plane also ``q_xy``, ``q_z`` (1/Å).
    phase : Phase
    options : MatchOptions
    q_range : (float, float), optional
        q range covered by the data, 1/Å (default: the observed lines' range +- 5%).
    contact_plane : (h, k, l), optional
        Plane parallel to the substrate (fibre texture about its normal); None: powder.

    Returns
    -------
    match : PhaseMatch
        ``refined`` is False (and the free cell parameters' errors NaN) unless more
        lines were matched than the cell has free parameters.

    Raises
    ------
    ConfigError
        If the observations lack q or intensity (or q_xy/q_z for a contact plane).
    """
    two_d = contact_plane is not None
    obs = _observations(observed, options, q_range, two_d)
    result = PhaseMatch(phase=phase.name, n_observed=len(obs.q), cell_nominal=tuple(phase.cell),
                        cell=tuple(phase.cell), cell_err=_unrefined_errors(phase),
                        contact_plane="random" if not two_d else " ".join(map(str, contact_plane)),
                        free_parameters=tuple(phase.free_cell_parameters()))
    if len(obs.q) == 0:
        return result
    q_max = obs.q_hi * (1 + options.max_mismatch) * 1.02
    resolution = float(np.median(obs.sigma))
    if two_d:
        pred = _predicted_2d(phase, q_max, contact_plane, resolution, options.mosaicity_deg / 2, options.wavelength)
    else:
        pred = _predicted_1d(phase, q_max, resolution, options.wavelength)
    if len(pred.hkl) == 0:
        return result
    n_free = len(phase.free_cell_parameters())
    s = _scan_scale(obs, pred, phase.cell, options, n_free, contact_plane)
    cell = _scaled_cell(phase.cell, s)
    distance = options.distance_mm if _refines_distance(options) else None
    fit = None
    for _ in range(2 if options.refine and options.max_mismatch > 0 else 0):
        pairs = _assess(obs.at_distance(distance), pred, cell, options, contact_plane, n_free).pairs
        if len(pairs) <= n_free:
            break
        fit = _refine(obs, pred, phase, cell, pairs, options, distance)
        cell, distance = fit.cell, fit.distance
    z = (distance - options.distance_mm) / options.distance_err_mm if fit is not None and fit.distance else 0.0
    final = _assess(obs.at_distance(distance), pred, cell, options, contact_plane, n_free, prior_z=z)
    refined = fit is not None and len(final.pairs) > n_free
    obs_final = obs.at_distance(distance)
    labels = pred.labels()
    comp = final.comp
    rows = []
    for j, i in final.pairs:
        h, k, ll = (int(x) for x in labels[i].split())
        rows.append({"obs": int(j), "q_obs": float(obs_final.q[j]), "q_calc": float(final.qp[i]), "hkl": labels[i],
                     "h": h, "k": k, "l": ll, "intensity_obs": float(obs.intensity[j]),
                     "intensity_calc": float(comp["K"] * final.ip[i]), "expected": bool(final.expected[i])})
    result.pairs = pd.DataFrame(rows, columns=["obs", "q_obs", "q_calc", "hkl", "h", "k", "l", "intensity_obs",
                                               "intensity_calc", "expected"])
    result.score = final.score
    result.f_obs, result.f_pred, result.intensity_agreement = comp["f_obs"], comp["f_pred"], comp["agreement"]
    result.n_matched, result.n_expected = final.n_matched, int(final.expected.sum())
    result.chance_probability = final.chance_probability
    result.p_positions, result.p_intensity = final.p_positions, final.p_intensity
    result.significance = final.significance
    result.cell = tuple(float(x) for x in cell)
    result.refined = refined
    result.n_pairs = len(final.pairs)
    if refined:
        result.cell_err, result.chi2_red, result.n_fit = fit.cell_err, fit.chi2_red, fit.n_fit
        result.at_limit = fit.at_limit
        result.distance_mm, result.distance_err_mm = fit.distance, fit.distance_err
    result.predicted = pd.DataFrame({"q": final.qp,
                                     "intensity": comp["K"] * final.ip if np.isfinite(comp["K"]) else final.ip,
                                     "hkl": labels, "expected": final.expected, "matched": final.matched,
                                     **({"polar": final.polar} if two_d else {})})
    return result
