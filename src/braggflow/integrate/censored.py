"""Intensities on frames thresholded upstream: a Gaussian fitted by the censored (Tobit) likelihood.

A frame cache that stores only the pixels at or above a threshold ``t``
(HEXRD's frame caches, ImageD11's sparse scans) keeps a weak spot's core and
drops its wings: summation over the stored pixels loses the part of the spot
below ``t`` (~11 % of a 150-600 photon Gaussian spot of sigma 1.2 px at
``t`` = 3 noise sigmas), and a fit that takes the zeros for counts learns
nothing from them.  A zero is not a count of 0 but the statement "this pixel
was below ``t``"; the censored likelihood (Tobin 1958) gives each pixel the
probability of what was stored:

- a stored value ``y``: the normal density ``phi((y - mu) / s) / s``;
- a zero: the probability of a value below the threshold,
  ``Phi((t - 1/2 - mu) / s)`` (counts are whole numbers: the largest value
  not stored is ``t - 1``);

with ``mu = b + I g`` the background ``b`` (the finder's level, held) plus
an elliptical Gaussian ``g`` of integral 1 (centre, two sigmas and their
correlation: spots of deformed grains are elongated in any direction),
sampled at the pixel centres with the pixel's box variance (1/12 px^2) added
to its covariance, and ``s^2 = sigma^2 + gain I g`` the noise of the frame's
background pixels (the finder's fit to the isolated stored pixels,
:class:`braggflow.find.noise.ThresholdNoise`) plus the photon noise of the
spot.  The six parameters are fitted by damped scoring steps, compiled, one
window at a time (:mod:`braggflow.integrate._censored_kernels`: the analytic
gradient, the expected information of each pixel as the curvature,
Levenberg-Marquardt damping); the error of ``I`` is from the expected
(Fisher) information of the censored normal at the optimum (Tobin 1958;
Amemiya 1973).

On simulated thresholded frames (noise of 2 counts, stored from 6; gain 1)
the fitted intensities of round Gaussian spots of sigma 1.2 px are 0.988 /
0.999 / 0.998 of the truth (medians; 150-600 / 600-1,500 / 1,500-5,000
photons) where summation gives 0.880 / 0.961 / 0.986, and those of spots
elongated 2.5 : 1 0.981 / 0.997 where summation gives 0.758 / 0.957; the
standard deviation of ``(I - I_true) / intensity_err`` is 0.98-1.15 (the
sums': 1.05-2.76).  A Gaussian does not describe Moffat wings (0.80-0.91).
``bench/thresholded.py``, ``docs/benchmarks.md``.
"""

from __future__ import annotations

import numpy as np

from braggflow.integrate._censored_kernels import fit_windows
from braggflow.windows import cut_windows

__all__ = ["censored_gaussian_fits", "CENSORED_HALF"]

#: half-size of the fitted window, px (15 x 15 px, as the profile fit's)
CENSORED_HALF = 7
_LOG_WIDTH = (float(np.log(0.3)), float(np.log(5.0)))  # each sigma's bounds, px
_MOVE = 2.0  # the centre stays within this distance of its start, px (either axis)
_LOG_GROWTH = float(np.log(1e3))  # the intensity stays below 1,000 x its start (and above 1 count)
_MAX_ATANH = 3.0  # |correlation| <= tanh(3) = 0.995 (a streak beyond that is not a Gaussian spot)
_BOUNDS = np.array([_LOG_GROWTH, _MOVE, *_LOG_WIDTH, _MAX_ATANH])


def _windows(frame, centre_r, centre_c, half, *, labels, mask):
    """Each peak's window (N, m, m) of values, the pixels the fit uses, and whether its region ends inside it."""
    h, w = frame.shape
    offsets = np.arange(-half, half + 1)
    inside = (((centre_r[:, None] + offsets >= 0) & (centre_r[:, None] + offsets < h))[:, :, None]
              & ((centre_c[:, None] + offsets >= 0) & (centre_c[:, None] + offsets < w))[:, None, :])
    values = cut_windows(frame, centre_r, centre_c, half, 0).astype(float)
    used = inside.copy()
    described = np.ones(centre_r.size, dtype=bool)
    if mask is not None:
        used &= ~cut_windows(np.asarray(mask, dtype=bool), centre_r, centre_c, half, True)
    if labels is not None:
        labels = np.asarray(labels)
        own = labels[np.clip(centre_r, 0, h - 1), np.clip(centre_c, 0, w - 1)][:, None, None]
        other = cut_windows(labels, centre_r, centre_c, half, 0)
        used &= (other == 0) | (other == own)
        ring = np.ones((2 * half + 1, 2 * half + 1), dtype=bool)
        ring[1:-1, 1:-1] = False
        # a centre outside its region (a ring or arc's centroid) cannot tell which pixels are its own
        described &= (own[:, 0, 0] > 0) & ~((other == own) & ring).any(axis=(1, 2))
    return values, used, described


def _variance_of_log_intensity(information: np.ndarray) -> np.ndarray:
    """The (log I, log I) element of the inverse information (N,); NaN where it is not positive definite."""
    out = np.full(information.shape[0], np.nan)
    ok = np.flatnonzero(np.all(np.isfinite(information), axis=(1, 2)))
    if ok.size:
        definite = ok[np.linalg.eigvalsh(information[ok]).min(axis=1) > 0]
        if definite.size:
            out[definite] = np.linalg.inv(information[definite])[:, 0, 0]
    return out


def censored_gaussian_fits(frame: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, threshold: float,
                           sigma: float, gain: float = 1.0, background: np.ndarray | None = None,
                           intensity: np.ndarray | None = None, width: float = 1.0,
                           labels: np.ndarray | None = None, mask: np.ndarray | None = None,
                           half: int = CENSORED_HALF,
                           max_iterations: int = 100) -> dict[str, np.ndarray]:
    """Fit an elliptical Gaussian to each peak of a thresholded frame by the censored likelihood.

    Parameters
    ----------
    frame : (H, W) ndarray
        The frame as stored, counts: 0 where a pixel was below ``threshold``.
    rows, cols : (N,) ndarray of float
        Starting centres, px (the located peaks).
    threshold : float
        The storage threshold, counts (the smallest stored value).
    sigma : float
        Noise of one background pixel, counts (before thresholding).
    gain : float
        Counts per photon (the spot's photon noise is ``gain`` x its counts).
    background : (N,) ndarray, optional
        Background level under each peak, counts/px, held (default 0: a
        dark-subtracted cache).
    intensity : (N,) ndarray, optional
        Starting intensities, counts (default: the window's sum).
    width : float
        Starting sigma of both axes, px (round, no correlation).
    labels : (H, W) ndarray of int, optional
        The finder's label image: in each window, the pixels of another peak
        than the one at the starting pixel are left out.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel, left out.
    half : int
        Window half-size, px: the window is (2 half + 1)^2 px.
    max_iterations : int
        Scoring steps at most; a fit still moving after them is not converged.

    Returns
    -------
    fits : dict of str to (N,) ndarray
        ``intensity`` (counts) and ``intensity_err`` (its standard error from
        the expected information), ``row``, ``col`` (px), ``sigma_row``,
        ``sigma_col`` (px) and ``correlation`` of the Gaussian,
        ``converged`` (bool: finite, the step small at the end, no parameter
        at a bound, the information positive definite), ``described``
        (bool, with ``labels``: the starting pixel belongs to a region, and
        that region ends inside the window: a streak or a large spot that
        reaches its edge is not a Gaussian of this window),
        ``nll`` (the negative log-likelihood at the fit).
        Windows cut by the frame's edge use the pixels inside it.

    Raises
    ------
    ValueError
        If ``threshold`` or ``sigma`` is not positive and finite, or the
        arrays' shapes disagree.

    References
    ----------
    Tobin, J. (1958). Estimation of relationships for limited dependent
    variables. Econometrica 26, 24-36 (the censored normal likelihood).
    """
    frame = np.asarray(frame)
    rows, cols = np.asarray(rows, dtype=float), np.asarray(cols, dtype=float)
    if not (np.isfinite(threshold) and threshold > 0 and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"censored fit: threshold and sigma must be positive, got {threshold!r} and {sigma!r}")
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(f"censored fit: rows and cols must be (N,) arrays of one shape, got {rows.shape} "
                         f"and {cols.shape}")
    n = rows.size
    if n == 0:
        empty = {k: np.zeros(0) for k in ("intensity", "intensity_err", "row", "col", "sigma_row", "sigma_col",
                                          "correlation", "nll")}
        return {**empty, "converged": np.zeros(0, dtype=bool), "described": np.zeros(0, dtype=bool)}
    bg = np.zeros(n) if background is None else np.nan_to_num(np.asarray(background, dtype=float))
    if bg.shape != (n,):
        raise ValueError(f"censored fit: background must be ({n},), got {bg.shape}")
    centre_r, centre_c = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    values, used, described = _windows(frame, centre_r, centre_c, half, labels=labels, mask=mask)
    start_i = np.maximum(values.sum(axis=(1, 2)) - bg * used.sum(axis=(1, 2)), 1.0) if intensity is None else (
        np.maximum(np.nan_to_num(np.asarray(intensity, dtype=float), nan=1.0), 1.0))
    start = np.column_stack([np.log(start_i), rows - centre_r, cols - centre_c, np.full(n, np.log(width)),
                             np.full(n, np.log(width)), np.zeros(n)])
    p, information, moving, held, nll = fit_windows(values, used, bg, start,
                                                    np.arange(-half, half + 1, dtype=float), float(threshold),
                                                    float(sigma) ** 2, float(gain), int(max_iterations), _BOUNDS)
    variance_log_i = _variance_of_log_intensity(information)
    intensity_fit = np.exp(p[:, 0])
    # a fit held at a bound has not found its optimum (a spot one pixel wide runs to the smallest sigma, a
    # streak to the largest correlation)
    converged = np.isfinite(variance_log_i) & np.isfinite(nll) & ~moving & ~held
    return {
        "intensity": intensity_fit,
        "intensity_err": intensity_fit * np.sqrt(variance_log_i),
        "row": centre_r + p[:, 1],
        "col": centre_c + p[:, 2],
        "sigma_row": np.exp(p[:, 3]),
        "sigma_col": np.exp(p[:, 4]),
        "correlation": np.tanh(p[:, 5]),
        "converged": converged,
        "described": described,
        "nll": nll,
    }
