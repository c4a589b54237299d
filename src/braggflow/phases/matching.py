"""Matching observed lines (1D) or spots (grazing incidence, 2D) to crystal phases.

The method, for one phase:

1. predicted lines from :func:`~braggflow.phases.reflections.reflections`
   (|F|^2, multiplicity, Lorentz-polarisation), merged at the observed resolution;
2. an isotropic lattice scale ``s`` (a = s a0) is scanned over
   ``1 +- max_mismatch``; at each, predicted and observed lines are paired
   one-to-one when closer than ``n_sigma`` times the combined error
   (``sqrt(q_err^2 + (rel_tolerance q)^2)``), and the scale with the best score wins;
3. the cell's free parameters (by crystal system) are refined by bounded least
   squares on the pairs, within the mismatch, and the pairing is repeated;
4. score = f_obs x f_pred x A, where f_obs is the fraction of the observed
   intensity that the phase explains, f_pred the fraction of the predicted
   intensity of the lines that should be seen (expected: predicted above the
   detection limit after scaling) that is found, and A = exp(-<ln(I_obs / K I_calc)^2> / 2 tau^2)
   the intensity agreement of the pairs (K: median intensity ratio);
5. the chance probability is the probability that a random set of lines of the
   observed density (uniform in q) matches at least as many expected lines
   (Poisson-binomial over each line's window), corrected for the lattice
   search (Sidak, one trial per independent scale and free cell parameter), so
   that phases with many lines do not win by luck.  ``significance`` = -log10(p).

References
----------
The chance-corrected figure of merit follows the idea of de Wolff's M20 and
Smith & Snyder's F_N (J. Appl. Cryst. 1, 108 (1968); 12, 60 (1979)): compare the
number of matched lines with the number expected by chance for the line density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
]


@dataclass(frozen=True)
class MatchOptions:
    """Options of phase matching.

    Attributes
    ----------
    max_mismatch : float
        Largest relative lattice mismatch searched and refined (0.01 = 1%).
    rel_tolerance : float
        Relative position tolerance added in quadrature to each line's error
        (unmodelled systematics: tilt, sample displacement, refraction).
    n_sigma : float
        Pairing window in units of the combined error.
    intensity_tau : float
        Width (natural-log units) of the intensity agreement.
    detection_limit : float or None
        Weakest observable line intensity (observed units); None: the weakest observed line.
    wavelength : float or None
        Å, for Lorentz-polarisation weights and distance refinement.
    refine : bool
        Refine the cell by least squares.
    refine_distance : bool
        Refine the sample-detector distance too (needs distance_mm and distance_err_mm > 0 as prior).
    distance_mm, distance_err_mm : float
        Sample-detector distance of the observations and its 1-sigma uncertainty; the
        uncertainty is always propagated into the refined cell.
    mosaicity_deg : float
        2D (grazing incidence): 1-sigma angular tolerance of the polar angle.
    max_index : int
        2D: largest Miller index of contact planes searched.
    """

    max_mismatch: float = 0.01
    rel_tolerance: float = 1e-3
    n_sigma: float = 3.0
    intensity_tau: float = 0.5
    detection_limit: float | None = None
    wavelength: float | None = None
    refine: bool = True
    refine_distance: bool = False
    distance_mm: float | None = None
    distance_err_mm: float = 0.0
    mosaicity_deg: float = 3.0
    max_index: int = 2


@dataclass
class PhaseMatch:
    """The result of matching one phase (optionally one contact plane) to the observations.

    Attributes
    ----------
    phase : str
    score : float
        f_obs x f_pred x intensity agreement, 0..1.
    chance_probability : float
        Probability of a match this good by chance (corrected for the lattice search).
    significance : float
        -log10(chance_probability).
    n_matched, n_expected, n_observed : int
        Matched expected lines, expected lines, observed lines.
    f_obs, f_pred, intensity_agreement : float
        Score components.
    cell, cell_err : tuple of 6 float
        Refined cell (Å, deg) and 1-sigma errors (0 for parameters fixed by symmetry).
    cell_nominal : tuple of 6 float
    distance_mm, distance_err_mm : float or None
        Refined distance (when asked) and its error.
    contact_plane : str
        "random" (powder) or "h k l" (fibre texture, grazing incidence).
    pairs : pandas.DataFrame
        One row per matched observation: ``obs`` (index into the observations),
        ``q_obs``, ``q_calc``, ``h, k, l``, ``hkl``, ``intensity_obs``, ``intensity_calc``.
    chi2_red : float
        Reduced chi-square of the cell refinement.
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

    def summary(self) -> dict:
        """One-line summary as a plain dict (JSON-serialisable)."""
        names = ("a", "b", "c", "alpha", "beta", "gamma")
        out = {
            "phase": self.phase, "score": round(float(self.score), 4),
            "chance_probability": float(self.chance_probability), "significance": round(float(self.significance), 2),
            "n_matched": int(self.n_matched), "n_expected": int(self.n_expected), "n_observed": int(self.n_observed),
            "f_obs": round(float(self.f_obs), 4), "f_pred": round(float(self.f_pred), 4),
            "intensity_agreement": round(float(self.intensity_agreement), 4), "contact_plane": self.contact_plane,
            "chi2_red": float(self.chi2_red),
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
    fit_sigma: np.ndarray    # measurement error used as least-squares weight, 1/Å
    intensity: np.ndarray
    polar: np.ndarray | None = None  # deg, 2D only
    q_lo: float = 0.0
    q_hi: float = 0.0
    det_limit: float = 0.0


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
    agreement = float(math.exp(-np.mean((ratio - lnk) ** 2) / (2 * opts.intensity_tau ** 2)))
    chi = float(np.sum(dist[j, i] ** 2))
    return pairs, dict(score=f_obs * f_pred * agreement, f_obs=f_obs, f_pred=f_pred, agreement=agreement, K=K,
                       expected=expected, chi=chi)


def _scan_scale(obs: _Obs, pred: _Predicted, cell0, opts: MatchOptions, normal=None):
    """Best isotropic lattice scale within the mismatch (positions scale as 1/s)."""
    q0, ip = pred.positions(cell0)
    polar = pred.polar_angles(cell0, normal) if normal is not None else None
    rel = np.min(obs.tol / obs.q) if len(obs.q) else 1e-3
    step = float(np.clip(rel / 3, 2e-5, max(opts.max_mismatch / 5, 2e-5)))
    scales = (
        np.arange(1 - opts.max_mismatch, 1 + opts.max_mismatch + step / 2, step)
        if opts.max_mismatch > 0
        else np.array([1.0])
    )
    best = (-1.0, np.inf, 1.0)
    for s in scales:
        _, comp = _evaluate(obs, q0 / s, ip, opts, polar)
        key = (comp["score"], -comp["chi"])
        if key > (best[0], -best[1]):
            best = (comp["score"], comp["chi"], float(s))
    return best[2]


def _scaled_cell(cell, s):
    a, b, c, al, be, ga = cell
    return (a * s, b * s, c * s, al, be, ga)


def _q_obs_at_distance(obs_q, wavelength, d0, d):
    """Observed q re-computed for another distance (detector points fixed, no tilt)."""
    tth = 2 * np.arcsin(np.clip(obs_q * wavelength / (4 * np.pi), -1, 1))
    tth_new = np.arctan(np.tan(tth) * d0 / d)
    return 4 * np.pi * np.sin(tth_new / 2) / wavelength


def _refine(obs: _Obs, pred: _Predicted, phase: Phase, cell_start, pairs, opts: MatchOptions, normal=None):
    """Least-squares refinement of the free cell parameters (and distance) on the pairs."""
    from scipy.optimize import least_squares

    names = phase.free_cell_parameters()
    nominal = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), phase.cell))
    start = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), cell_start))
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
    use_distance = bool(opts.refine_distance and opts.distance_mm and opts.distance_err_mm > 0 and opts.wavelength)
    d0 = opts.distance_mm

    def cell_of(x):
        return phase.cell_from_free(dict(zip(names, x[: len(names)])))

    def residuals(x, d=None):
        qp, _ = pred.positions(cell_of(x))
        qo = obs.q[j]
        if use_distance:
            d = x[-1]
        if d is not None and d != d0:
            qo = _q_obs_at_distance(qo, opts.wavelength, d0, d)
        r = (qo - qp[i]) / obs.fit_sigma[j]
        if use_distance:
            r = np.append(r, (x[-1] - d0) / opts.distance_err_mm)
        return r

    if use_distance:
        x0 = np.append(x0, d0)
        lo = np.append(lo, d0 - 10 * opts.distance_err_mm)
        hi = np.append(hi, d0 + 10 * opts.distance_err_mm)
    res = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac")
    n_par = len(names)
    dof = len(j) - n_par
    chi2_red = float(np.sum(res.fun ** 2) / dof) if dof > 0 else float("nan")
    jac = res.jac
    try:
        cov = np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((len(res.x), len(res.x)), np.nan)
    if dof > 0 and chi2_red > 1:
        cov = cov * chi2_red
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    cell_err = np.sqrt(np.maximum(np.diag(cov)[:n_par], 0.0))
    distance, distance_err = (float(res.x[-1]), float(err[-1])) if use_distance else (None, None)
    if not use_distance and opts.distance_err_mm > 0 and opts.distance_mm and opts.wavelength:
        # propagate the distance uncertainty: refit at d0 + h and scale the shift
        h = opts.distance_err_mm
        res_h = least_squares(lambda x: residuals(x, d0 + h), res.x, bounds=(lo, hi), x_scale="jac")
        shift = (res_h.x - res.x)[:n_par]
        cell_err = np.sqrt(cell_err ** 2 + shift ** 2)
    # expand the free-parameter errors to the six cell parameters
    full_err = dict.fromkeys(("a", "b", "c", "alpha", "beta", "gamma"), 0.0)
    for n, e in zip(names, cell_err):
        full_err[n] = float(e)
    tied = phase.cell_from_free({n: 1.0 + i for i, n in enumerate(names)})
    for slot, value in zip(("a", "b", "c", "alpha", "beta", "gamma"), tied):
        for i_n, n in enumerate(names):
            if slot != n and value == 1.0 + i_n:
                full_err[slot] = full_err[n]
    cell = cell_of(res.x)
    return cell, tuple(full_err[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")), chi2_red, distance, distance_err


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
        span = q.max() - q.min() if len(q) > 1 else q.max()
        q_range = (max(0.0, q.min() - 0.05 * span), q.max() + 0.05 * span)
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
    # least-squares weights: the measurement errors (a tiny floor keeps them finite); systematic
    # misfit then shows in chi2_red, which scales the covariance
    fit_sigma = np.sqrt(q_err ** 2 + (1e-5 * q) ** 2) if np.any(q_err > 0) else sigma
    return _Obs(q=q, tol=opts.n_sigma * sigma, sigma=sigma, fit_sigma=fit_sigma, intensity=intensity, polar=polar,
                q_lo=float(q_range[0]), q_hi=float(q_range[1]), det_limit=det)


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

    Raises
    ------
    ConfigError
        If the observations lack q or intensity (or q_xy/q_z for a contact plane).
    """
    two_d = contact_plane is not None
    obs = _observations(observed, options, q_range, two_d)
    result = PhaseMatch(phase=phase.name, n_observed=len(obs.q), cell_nominal=tuple(phase.cell),
                        cell=tuple(phase.cell), cell_err=(0.0,) * 6,
                        contact_plane="random" if not two_d else " ".join(map(str, contact_plane)))
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
    s = _scan_scale(obs, pred, phase.cell, options, contact_plane)
    cell = _scaled_cell(phase.cell, s)
    cell_err = (0.0,) * 6
    chi2_red, distance, distance_err = float("nan"), None, None
    for _ in range(2 if options.refine else 0):
        qp, ip = pred.positions(cell)
        polar = pred.polar_angles(cell, contact_plane) if two_d else None
        pairs, _ = _evaluate(obs, qp, ip, options, polar)
        if len(pairs) < 2:
            break
        cell, cell_err, chi2_red, distance, distance_err = _refine(
            obs, pred, phase, cell, pairs, options, contact_plane
        )
    qp, ip = pred.positions(cell)
    polar = pred.polar_angles(cell, contact_plane) if two_d else None
    pairs, comp = _evaluate(obs, qp, ip, options, polar)
    expected = comp["expected"]
    matched = np.zeros(len(qp), dtype=bool)
    if pairs:
        matched[[p[1] for p in pairs]] = True
    # chance probability: random lines with the observed density, each expected window its own Bernoulli
    err_med = float(np.median(np.sqrt(np.maximum(obs.sigma ** 2 - (options.rel_tolerance * obs.q) ** 2, 0.0))))
    tol_pred = options.n_sigma * np.sqrt(err_med ** 2 + (options.rel_tolerance * qp) ** 2)
    if two_d:
        area = (obs.q_hi - obs.q_lo) * 90.0
        density = len(obs.q) / area
        window = math.pi * tol_pred * options.n_sigma * options.mosaicity_deg
    else:
        density = len(obs.q) / max(obs.q_hi - obs.q_lo, 1e-12)
        window = 2 * tol_pred
    p_window = -np.expm1(-density * window[expected])
    n_free = len(phase.free_cell_parameters())
    rel_window = float(np.median(tol_pred / np.maximum(qp, 1e-12)))
    n_scale = max(1.0, options.max_mismatch / max(rel_window, 1e-12))
    n_trials = n_scale ** n_free
    k = int(np.sum(matched & expected))
    p = chance_probability(p_window, k, n_trials)
    labels = pred.labels()
    rows = []
    for j, i in pairs:
        rows.append({"obs": int(j), "q_obs": float(obs.q[j]), "q_calc": float(qp[i]), "hkl": labels[i],
                     "h": int(labels[i].split()[0]), "k": int(labels[i].split()[1]), "l": int(labels[i].split()[2]),
                     "intensity_obs": float(obs.intensity[j]), "intensity_calc": float(comp["K"] * ip[i]),
                     "expected": bool(expected[i])})
    result.pairs = pd.DataFrame(rows, columns=["obs", "q_obs", "q_calc", "hkl", "h", "k", "l", "intensity_obs",
                                               "intensity_calc", "expected"])
    result.score = comp["score"]
    result.f_obs, result.f_pred, result.intensity_agreement = comp["f_obs"], comp["f_pred"], comp["agreement"]
    result.n_matched, result.n_expected = k, int(expected.sum())
    result.chance_probability = p
    result.significance = float(-math.log10(max(p, 1e-300)))
    result.cell, result.cell_err, result.chi2_red = tuple(float(x) for x in cell), tuple(cell_err), chi2_red
    result.distance_mm, result.distance_err_mm = distance, distance_err
    result.predicted = pd.DataFrame({"q": qp, "intensity": comp["K"] * ip if np.isfinite(comp["K"]) else ip,
                                     "hkl": labels, "expected": expected, "matched": matched,
                                     **({"polar": polar} if two_d else {})})
    return result
