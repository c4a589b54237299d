"""Faint spots: the counts of a 3 x 3 aperture tested against the Poisson statistics of the local background.

A spot of a few tens to a few hundred photons on a background of a few
photons per pixel rarely lifts a single pixel ``threshold_sigma`` noise sigma
above the background, yet its 3 x 3 aperture holds a highly significant
excess.  Every local maximum of the frame at least :data:`SEED_SIGMA` noise
sigma above the tile level (a seed; the maximum of a 3 x 3 aperture that
passes at ``aperture_sigma`` >= 4.5 is always this high) that lies clear of the
threshold's peaks is tested:

    n = sum of the aperture's counts,  b = n_pix x mean,  V = n_pix x variance

with ``mean`` and ``variance`` the tile's sigma-clipped moments
(:class:`~braggflow.find.background.Background`).  The background counts of the
aperture are modelled as Poisson counts of ``lambda = V / gain^2`` quanta
(exact for a photon-counting background, ``V = gain x b``; nearer a normal
distribution where read noise adds variance), and the aperture is significant
when the probability of at least ``lambda + (n - b) / gain`` quanta,
``P(lambda + (n - b) / gain, lambda)`` (regularised lower incomplete gamma
function), is at most that of a normal deviate beyond ``aperture_sigma``.  The
Poisson tail, not the normal one, sets the level: on a background of one
photon per pixel the normal approximation would take ~1e-4 of all apertures
for 5 sigma events (dozens of false peaks per frame), the Poisson tail ~3e-7.

A significant aperture is measured again against the mean of the ring of
pixels 3 px outside it when that is higher than the tile mean (the annulus
background of aperture photometry; the mean, not the median, takes in the
wings of a bright peak that cross part of the ring), and of
several significant apertures closer than 3 px only the most significant is
kept (their apertures would overlap).  The spot's region is its aperture's
unmasked pixels.

This is the detection test of aperture photometry on a Poisson background
(the probability of the counts in a fixed aperture under the background-only
hypothesis), as in the dispersion spot finder of DIALS and X-ray source
detection (a local Poisson significance, e.g. CIAO celldetect), applied at the
local maxima only.

References
----------
.. [1] G. Winter et al., "DIALS: implementation and evaluation of a new
   integration package", Acta Cryst. D74, 85 (2018) (dispersion spot finding).
.. [2] N. Gehrels, "Confidence limits for small numbers of events in
   astrophysical data", ApJ 303, 336 (1986) (Poisson upper tails).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from braggflow.find.background import Background
from braggflow.find.regions import LOCAL_RING_MARGIN, ring_means

__all__ = ["SEED_SIGMA", "APERTURE", "MATCHED_SIGMA", "matched_weights", "weighted_poisson_significance",
           "aperture_peaks"]

#: a seed (a local maximum tested) is at least this many tile noise sigma above the tile level
SEED_SIGMA = 3.0
#: side of the square aperture, px
APERTURE = 3
_HALF = APERTURE // 2
#: width (Gaussian sigma, px) of the matched filter whose weighted sum is tested
MATCHED_SIGMA = 1.0
_WINDOW = 5
_W_HALF = _WINDOW // 2
_WINDOW_OFFSETS = [(dr, dc) for dr in range(-_W_HALF, _W_HALF + 1) for dc in range(-_W_HALF, _W_HALF + 1)]
_OFFSETS = [(dr, dc) for dr in range(-_HALF, _HALF + 1) for dc in range(-_HALF, _HALF + 1)]


def matched_weights(sigma: float = MATCHED_SIGMA) -> np.ndarray:
    """Weights of the matched filter: a round Gaussian of ``sigma`` px integrated over the pixels of a 5 x 5 window.

    Returns
    -------
    weights : (25,) ndarray of float
        In the order of the window's rows, then columns; they sum to the
        share of the Gaussian inside the window (0.975 for ``sigma`` 1).
    """
    edges = np.arange(-_WINDOW // 2, _WINDOW // 2 + 1) + 0.5
    share = np.diff(special.ndtr(edges / sigma))
    return np.outer(share, share).ravel()


def weighted_poisson_significance(observed: np.ndarray, weights: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Normal-equivalent significance of a weighted sum of Poisson counts (saddlepoint approximation).

    ``T = sum_i w_i X_i`` with independent ``X_i ~ Poisson(lam)``; its cumulant
    generating function is ``K(t) = lam sum_i (exp(t w_i) - 1)``.  With
    ``K'(t) = T_obs`` solved for ``t`` (Newton, from the right, where the
    convex ``K'`` makes it converge monotonically), ``r = sqrt(2 (t T_obs - K(t)))``
    and ``q = t sqrt(K''(t))``, Barndorff-Nielsen's ``r* = r + log(q / r) / r``
    is a normal deviate with the tail probability of ``T_obs`` (the
    Lugannani-Rice approximation), accurate to a few per cent of the tail far
    out where a normal approximation is off by orders of magnitude.

    Parameters
    ----------
    observed : (K,) ndarray of float
        ``T_obs``, in quanta (photons).
    weights : (K, N) ndarray of float
        Non-negative weights of each sum (0 for a pixel left out).
    lam : (K,) ndarray of float
        Expected quanta per pixel under the background alone, > 0.

    Returns
    -------
    z : (K,) ndarray of float
        ``-inf`` where ``T_obs`` is not above its mean ``lam sum_i w_i``, or ``lam`` is 0.

    References
    ----------
    R. Lugannani, S. Rice, "Saddle point approximation for the distribution of
    the sum of independent random variables", Adv. Appl. Prob. 12, 475 (1980);
    O. E. Barndorff-Nielsen, "Modified signed log likelihood ratio",
    Biometrika 78, 557 (1991).
    """
    observed = np.asarray(observed, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)[:, None]
    z = np.full(observed.shape, -np.inf)
    mean = lam[:, 0] * weights.sum(axis=1)
    ok = np.flatnonzero((observed > mean) & (lam[:, 0] > 0))
    if not ok.size:
        return z
    w, lam, x = weights[ok], lam[ok], observed[ok]
    w_max = w.max(axis=1)
    t = np.log(x / (lam[:, 0] * w_max)) / w_max  # K'(t) >= lam w_max exp(t w_max) = x: right of the root
    for _ in range(60):
        e = lam * np.exp(t[:, None] * w)
        k1 = (w * e).sum(axis=1)
        k2 = (w * w * e).sum(axis=1)
        step = (k1 - x) / k2
        t = t - step
        if np.all(np.abs(step) <= 1e-10 * np.maximum(np.abs(t), 1.0)):
            break
    e = lam * np.exp(t[:, None] * w)
    k0 = (e - lam).sum(axis=1)
    k2 = (w * w * e).sum(axis=1)
    r = np.sqrt(np.maximum(2.0 * (t * x - k0), 1e-300))
    q = t * np.sqrt(k2)
    z[ok] = r + np.log(q / r) / r
    return z


def _significance(values: np.ndarray, weights: np.ndarray, mean: np.ndarray, variance: np.ndarray,
                  gain: float) -> np.ndarray:
    """Significance of the matched-filter sums of windows over a background of ``mean`` and ``variance`` per pixel.

    The background is modelled as Poisson counts of ``lambda = variance / gain^2``
    quanta a pixel (photons, for a photon-counting background); the observed
    window in the same quanta is ``lambda + (values - mean) / gain``.  A normal
    approximation screens first (the Poisson tail is the heavier: what fails
    it fails the exact test), then :func:`weighted_poisson_significance`.  A
    tile without background variance gives nothing to test against: ``-inf``.
    """
    lam = np.asarray(variance, dtype=np.float64) / gain**2
    excess = ((values - np.asarray(mean)[:, None]) * weights).sum(axis=1) / gain
    sw2 = (weights * weights).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rough = excess / np.sqrt(lam * sw2)
    z = np.where(np.isfinite(rough), rough, -np.inf)
    screened = np.flatnonzero(z >= 3.0)
    if screened.size:
        w = weights[screened]
        z[screened] = weighted_poisson_significance(lam[screened] * w.sum(axis=1) + excess[screened], w,
                                                    lam[screened])
    return z


def aperture_peaks(frame: np.ndarray, mask: np.ndarray | None, seeds: np.ndarray, occupied: np.ndarray,
                   bg: Background, *, sigma: float, gain: float) -> dict[str, np.ndarray]:
    """Faint spots at local maxima whose 3 x 3 aperture is significant (the module's test).

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts (masked pixels are left out of every sum).
    mask : (H, W) ndarray of bool or None
        True = bad pixel.
    seeds : (K,) ndarray of int
        Flat indices of the local maxima to test (each at least
        :data:`SEED_SIGMA` tile noise sigma above the tile level).
    occupied : (M,) ndarray of int
        Sorted flat indices of the pixels of peaks found otherwise (and of
        zingers); a seed within 2 px of one (Chebyshev distance) is not tested,
        so apertures do not touch those peaks.
    bg : Background
        Tile maps; ``mean`` and ``variance`` (else ``level`` and ``noise**2``).
    sigma : float
        Significance asked for, normal-equivalent sigma.
    gain : float
        Counts per photon.

    Returns
    -------
    peaks : dict of ndarray
        ``index`` (flat index of each spot's maximum), ``score`` (significance
        against the background the spot was kept on, normal-equivalent sigma),
        ``signal`` (counts above the tile mean in the aperture), ``npix``
        (unmasked aperture pixels), and ``pixels`` with ``owner``: the flat
        indices of the apertures' unmasked pixels and the row of ``index``
        each belongs to.  Rows in order of descending score.
    """
    h, w = frame.shape
    seeds = np.asarray(seeds, dtype=np.int64)
    rows, cols = np.divmod(seeds, w)
    clear = np.ones(seeds.size, dtype=bool)
    if occupied.size:
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                r, c = rows + dr, cols + dc
                inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
                target = np.where(inside, r * w + c, -1)
                pos = np.minimum(np.searchsorted(occupied, target), occupied.size - 1)
                clear &= occupied[pos] != target
    seeds, rows, cols = seeds[clear], rows[clear], cols[clear]
    flat = frame.ravel()
    bad = mask.ravel() if mask is not None else None
    # the 5 x 5 window around each seed: values and the weights of its good pixels
    win_dr = np.array([o[0] for o in _WINDOW_OFFSETS])
    win_dc = np.array([o[1] for o in _WINDOW_OFFSETS])
    r, c = rows[:, None] + win_dr, cols[:, None] + win_dc
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    idx = np.where(inside, r * w + c, 0)
    good = inside if bad is None else inside & ~bad[idx]
    values = np.where(good, flat[idx], 0.0)
    weights = np.where(good, matched_weights()[None, :], 0.0)
    box = (np.abs(win_dr) <= _HALF) & (np.abs(win_dc) <= _HALF)
    mean_map = bg.mean if bg.mean is not None else bg.level
    var_map = bg.variance if bg.variance is not None else bg.noise**2
    mean, var = bg.at(rows, cols, values=mean_map), bg.at(rows, cols, values=var_map)
    n_pix = good[:, box].sum(axis=1)
    total = values[:, box].sum(axis=1)
    z = _significance(values, weights, mean, var, gain)
    keep = np.flatnonzero(z >= sigma)
    z = z[keep]
    if keep.size:
        # against the mean of the ring around the aperture where it is higher than the tile mean
        ring = ring_means(frame, mask, rows[keep] - _HALF, cols[keep] - _HALF, np.full(keep.size, APERTURE),
                            np.full(keep.size, APERTURE), LOCAL_RING_MARGIN)
        lift = np.nan_to_num(np.clip(ring - mean[keep], 0.0, None))
        lifted = lift > 0
        if lifted.any():
            k = keep[lifted]
            z[lifted] = _significance(values[k], weights[k], mean[k] + lift[lifted], var[k] + gain * lift[lifted],
                                      gain)
        keep, z = keep[z >= sigma], z[z >= sigma]
    # one spot per cluster of significant apertures: the most significant, apertures apart
    order = np.argsort(-z, kind="stable")
    keep, z = keep[order], z[order]
    chosen = _apart(rows[keep], cols[keep])
    keep, z = keep[chosen], z[chosen]
    pix, owner = [], []
    for dr, dc in _OFFSETS:
        r, c = rows[keep] + dr, cols[keep] + dc
        good = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        idx = r * w + c
        if bad is not None:
            good[good] = ~bad[idx[good]]
        pix.append(idx[good])
        owner.append(np.flatnonzero(good))
    return {"index": seeds[keep], "score": z, "signal": total[keep] - n_pix[keep] * mean[keep],
            "npix": n_pix[keep], "pixels": np.concatenate(pix), "owner": np.concatenate(owner)}


def _apart(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Greedy choice, in the given order, of points at least 3 px apart (Chebyshev): non-overlapping apertures."""
    chosen = np.zeros(rows.size, dtype=bool)
    if not rows.size:
        return chosen
    from scipy.spatial import cKDTree

    pairs = cKDTree(np.column_stack([rows, cols])).query_pairs(APERTURE - 1, p=np.inf, output_type="ndarray")
    if not pairs.size:
        return ~chosen
    conflicts: dict[int, list[int]] = {}
    for a, b in pairs.tolist():
        conflicts.setdefault(a, []).append(b)
        conflicts.setdefault(b, []).append(a)
    for i in range(rows.size):
        chosen[i] = not any(chosen[j] for j in conflicts.get(i, ()) if j < i)
    return chosen
