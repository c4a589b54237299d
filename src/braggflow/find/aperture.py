"""Faint spots: a matched-filter sum around local maxima tested against the Poisson statistics of the background.

A spot of a few tens to a few hundred photons on a background of a few
photons per pixel rarely lifts a single pixel ``threshold_sigma`` noise sigma
above the background, yet the pixels around it together hold a highly
significant excess.  Every local maximum of the frame at least
:data:`SEED_SIGMA` standard deviations above the tile mean (a seed) is tested:

    T = sum_i w_i n_i  over the 5 x 5 pixels around it (masked ones left out)

with ``w`` a round Gaussian of :data:`MATCHED_SIGMA` px integrated over the
pixels (:func:`matched_weights`; the matched filter of a compact spot).  The
background counts are modelled as Poisson counts of ``lambda = variance /
gain^2`` quanta a pixel (exact for a photon-counting background, ``variance
= gain x mean``; nearer a normal distribution where read noise adds
variance), with ``mean`` and ``variance`` the tile's sigma-clipped moments
(:class:`~braggflow.find.background.Background`).  The probability of the
observed ``T`` or more under the background alone is found with a saddlepoint
approximation (:func:`weighted_poisson_significance`) and expressed as a
normal deviate; the seed is a spot when that is at least ``aperture_sigma``.
The Poisson tail, not the normal one, sets the level: on a background of one
photon per pixel a normal approximation takes noise for 5-sigma spots several
times too often.  Since any of a frame's pixels could be a seed, a frame of
``N`` pixels of pure noise holds about ``N Q(aperture_sigma)`` false spots
(``Q`` the normal upper tail): 0.08 in 2048 x 2048 pixels at 5.5.

A significant seed is measured again against the mean of the ring of pixels
3 px outside its 3 x 3 aperture when that is higher than the tile mean (the
annulus background of aperture photometry; the mean, not the median, takes in
the wings of a bright peak that cross part of the ring).  Seeds within 2 px of
a peak found by the threshold (or of a zinger) are not spots of their own, and
of several significant seeds closer than 3 px only the most significant is
kept (their apertures would overlap).  The spot's region is its 3 x 3
aperture's unmasked pixels.

This is the detection test of aperture photometry on a Poisson background
(the probability of the counts around a position under the
background-only hypothesis), as in the dispersion spot finder of DIALS and in
X-ray source detection, applied at the local maxima only.

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

from braggflow.find._kernels import NO_MASK, clear_of, window_excess
from braggflow.find.background import Background
from braggflow.find.regions import LOCAL_RING_MARGIN, ring_means

__all__ = ["SEED_SIGMA", "APERTURE", "MATCHED_SIGMA", "matched_weights", "weighted_poisson_significance",
           "seed_levels", "aperture_peaks"]

#: a seed (a local maximum tested) is at least this many standard deviations above the tile mean; on the dense
#: Pilatus frames of bench/dense.py seeds from 3 sd find 0.1 % more spots at 6 x the seeds
SEED_SIGMA = 4.0
#: side of the square aperture, px
APERTURE = 3
_HALF = APERTURE // 2
#: width (Gaussian sigma, px) of the matched filter whose weighted sum is tested
MATCHED_SIGMA = 1.0
_WINDOW = 5
_W_HALF = _WINDOW // 2
#: windows whose normal approximation is this far below the level asked for are not tested exactly (their exact
#: significance is lower still)
_SCREEN_MARGIN = 0.5
_WIN_DR, _WIN_DC = (a.ravel() for a in np.mgrid[-_W_HALF : _W_HALF + 1, -_W_HALF : _W_HALF + 1])
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


def _significance(excess: np.ndarray, good: np.ndarray, variance: np.ndarray, gain: float,
                  level: float) -> np.ndarray:
    """Significance of the matched-filter sums of windows over a background of ``variance`` per pixel.

    ``excess`` (K, 25) are the counts above the background mean (0 for pixels
    left out, ``good`` False).  The background is modelled as Poisson counts of
    ``lambda = variance / gain^2`` quanta a pixel (photons, for a
    photon-counting background); the observed window in the same quanta is
    ``lambda + excess / gain``.  A normal approximation screens first (the
    Poisson tail is the heavier: what is well below ``level`` there is below it
    in the exact test), then :func:`weighted_poisson_significance`.  A tile without background variance
    gives nothing to test against: ``-inf``.
    """
    weights = matched_weights()
    lam = np.asarray(variance, dtype=np.float64) / gain**2
    # einsum, not a BLAS matrix product: no thread start-up for these thin products
    goodf = good.astype(np.float64)
    sum_w = np.einsum("ij,j->i", goodf, weights)
    signal = np.einsum("ij,j->i", excess, weights) / gain
    with np.errstate(divide="ignore", invalid="ignore"):
        rough = signal / np.sqrt(lam * np.einsum("ij,j->i", goodf, weights * weights))
    z = np.where(np.isfinite(rough), rough, -np.inf)
    # the upper tail of a Poisson-like sum is heavier than the normal one: far out, its normal-equivalent
    # significance is below the normal approximation's, so windows well below the level need no exact test
    screened = np.flatnonzero(z >= level - _SCREEN_MARGIN)
    if screened.size:
        z[screened] = weighted_poisson_significance(lam[screened] * sum_w[screened] + signal[screened],
                                                    np.where(good[screened], weights, 0.0), lam[screened])
    return z


def seed_levels(bg: Background) -> np.ndarray:
    """The level a seed must pass in each tile: :data:`SEED_SIGMA` standard deviations above the tile mean.

    From the tile's sigma-clipped mean and variance when measured (on a few
    photons a pixel the median and the MAD of integer counts are coarse),
    else from its level and noise.

    Returns
    -------
    levels : (TY, TX) ndarray of float
        Counts.
    """
    if bg.mean is None or bg.variance is None:
        return bg.level + SEED_SIGMA * bg.noise
    return bg.mean + SEED_SIGMA * np.sqrt(bg.variance)


def aperture_peaks(frame: np.ndarray, mask: np.ndarray | None, seeds: np.ndarray, occupied: np.ndarray,
                   bg: Background, *, sigma: float, gain: float) -> dict[str, np.ndarray]:
    """Faint spots at local maxima whose matched-filter sum is significant (the module's test).

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts (masked pixels are left out of every sum).
    mask : (H, W) ndarray of bool or None
        True = bad pixel.
    seeds : (K,) ndarray of int
        Flat indices of the local maxima to test (each above :func:`seed_levels`).
    occupied : (M,) ndarray of int
        Sorted flat indices of the pixels of peaks found otherwise (and of
        zingers); a seed within 2 px of one (Chebyshev distance) is no spot
        of its own, so apertures do not touch those peaks.
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
        ``signal`` (counts above the tile mean in the 3 x 3 aperture), ``npix``
        (unmasked aperture pixels), and ``pixels`` with ``owner``: the flat
        indices of the apertures' unmasked pixels and the row of ``index``
        each belongs to.  Rows in order of descending score.
    """
    h, w = frame.shape
    seeds = np.asarray(seeds, dtype=np.int64)
    if occupied.size:  # the maxima of the peaks found otherwise first (the rest of their neighbourhood below)
        pos = np.minimum(np.searchsorted(occupied, seeds), occupied.size - 1)
        seeds = seeds[occupied[pos] != seeds]
    rows, cols = np.divmod(seeds, w)
    bad = mask.ravel() if mask is not None else None
    mean_map = bg.mean if bg.mean is not None else bg.level
    var_map = bg.variance if bg.variance is not None else bg.noise**2
    mean, var = bg.at(rows, cols, values=mean_map), bg.at(rows, cols, values=var_map)
    # the 5 x 5 window around each seed, counts above the tile mean; pixels outside the frame or masked are left out
    excess, good = window_excess(np.ascontiguousarray(frame), NO_MASK if mask is None else np.ascontiguousarray(mask),
                                 rows, cols, np.ascontiguousarray(mean, dtype=np.float64), _W_HALF)
    z = _significance(excess, good, var, gain, sigma)
    keep = np.flatnonzero(z >= sigma)
    z = z[keep]
    if keep.size and occupied.size:  # clear of the peaks found otherwise: no aperture pixel within 1 px of them
        clear = clear_of(occupied.astype(np.int64, copy=False), rows[keep], cols[keep], h, w, 2)
        keep, z = keep[clear], z[clear]
    if keep.size:
        # against the mean of the ring around the aperture where it is higher than the tile mean
        ring = ring_means(frame, mask, rows[keep] - _HALF, cols[keep] - _HALF, np.full(keep.size, APERTURE),
                          np.full(keep.size, APERTURE), LOCAL_RING_MARGIN)
        lift = np.nan_to_num(np.clip(ring - mean[keep], 0.0, None))
        lifted = lift > 0
        if lifted.any():
            k = keep[lifted]
            z[lifted] = _significance(excess[k] - np.where(good[k], lift[lifted][:, None], 0.0), good[k],
                                      var[k] + gain * lift[lifted], gain, sigma)
        keep, z = keep[z >= sigma], z[z >= sigma]
    box = (np.abs(_WIN_DR) <= _HALF) & (np.abs(_WIN_DC) <= _HALF)
    n_pix = np.zeros(seeds.size, dtype=np.int64)
    signal = np.zeros(seeds.size)
    n_pix[keep] = good[keep][:, box].sum(axis=1)
    signal[keep] = excess[keep][:, box].sum(axis=1)
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
    return {"index": seeds[keep], "score": z, "signal": signal[keep],
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
