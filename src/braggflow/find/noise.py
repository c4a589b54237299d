"""The noise of frames thresholded upstream, measured from the pixels that were stored.

A frame cache (HEXRD), a sparse file (ImageD11) or a detector that sends only
pixels above a level keeps no background: every pixel below the storage
threshold ``t`` reads 0.  The tile statistics of :mod:`braggflow.find.background`
then see zeros and call the noise 0, so that every stored pixel, a
noise excursion just above ``t`` included, would look significant.

The noise is still there to be measured: the stored pixels that have no stored
neighbour are, for the most part, noise excursions above ``t``.  If the
background under the threshold is 0 (the frames were dark-subtracted before
they were thresholded, as frame caches are) and the noise is normal with
standard deviation ``sigma``, the values of those isolated pixels follow the
tail of that normal distribution above ``t``; ``sigma`` is the maximum-likelihood
fit of that tail to the isolated pixels within a few ``sigma`` of ``t`` (the
bright end belongs to weak spots and zingers and is left out).  Integer frames
are fitted with the discrete tail (each integer value stands for the interval
of width 1 around it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from braggflow.errors import BraggflowError

__all__ = ["ThresholdNoise", "isolated_pixel_values", "fit_threshold_noise", "fitted_threshold_noise"]

#: isolated pixels up to this many (first-guess) sigma above the threshold enter the fit of the tail
_FIT_SPAN_SIGMA = 2.5
#: fewer isolated pixels than this and the fit is not trusted
MIN_ISOLATED = 50


@dataclass(frozen=True)
class ThresholdNoise:
    """The noise model of frames thresholded upstream.

    Attributes
    ----------
    threshold : float
        Smallest stored value (the storage threshold), counts.
    sigma : float
        Standard deviation of one background pixel, counts.
    n_pixels : int
        Isolated stored pixels the fit used.
    source : str
        ``"fit"`` (from isolated pixels) or ``"config"`` (``find.noise``).
    """

    threshold: float
    sigma: float
    n_pixels: int = 0
    source: str = "fit"


def isolated_pixel_values(frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Values of the stored (nonzero) pixels none of whose 8 neighbours is stored.

    Parameters
    ----------
    frame : (H, W) ndarray
        A thresholded frame (0 = not stored).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel; bad pixels are never counted.

    Returns
    -------
    values : (M,) ndarray of float64
        Counts.
    """
    stored = frame > 0
    if mask is not None:
        stored &= ~mask
    rows, cols = np.nonzero(stored)
    h, w = frame.shape
    lonely = np.ones(rows.size, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            nb = np.zeros(rows.size, dtype=bool)
            nb[inside] = stored[r[inside], c[inside]]
            lonely &= ~nb
    return frame[rows[lonely], cols[lonely]].astype(np.float64)


def fit_threshold_noise(values: np.ndarray, *, integer: bool | None = None) -> ThresholdNoise:
    """Fit the noise sigma to the values of isolated stored pixels (normal tail above the threshold, mean 0).

    Parameters
    ----------
    values : (M,) ndarray of float
        Values of isolated stored pixels (:func:`isolated_pixel_values`), from
        one frame or pooled over a sample of frames, counts.
    integer : bool, optional
        Whether the values are integers (discrete tail); default: whether they all are.

    Returns
    -------
    noise : ThresholdNoise

    Raises
    ------
    BraggflowError
        If fewer than :data:`MIN_ISOLATED` values are given, or the threshold is not above 0.
    """
    from scipy import optimize  # only thresholded frames need it (an import of ~0.2 s kept off every run)

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < MIN_ISOLATED:
        raise BraggflowError(f"{values.size} isolated stored pixels: too few to measure the noise of thresholded "
                             f"frames (at least {MIN_ISOLATED}); give it as find.noise")
    t = float(values.min())
    if t <= 0:
        raise BraggflowError(f"storage threshold {t} <= 0: the frames are not thresholded above a zero background")
    if integer is None:
        integer = bool(np.all(values == np.round(values)))
    lo = t - 0.5 if integer else t

    def negloglik(log_sigma: float, v: np.ndarray, hi: float) -> float:
        s = float(np.exp(log_sigma))
        norm = special.ndtr(hi / s) - special.ndtr(lo / s)
        if integer:
            p = special.ndtr((v + 0.5) / s) - special.ndtr((v - 0.5) / s)
        else:
            p = np.exp(-0.5 * (v / s) ** 2) / (s * np.sqrt(2 * np.pi))
        return float(-np.sum(np.log(np.maximum(p, 1e-300))) + v.size * np.log(max(norm, 1e-300)))

    # the tail is fitted inside a window of the values up to a few sigma above t; the window follows the estimate
    sigma = t / 3.0
    for _ in range(4):
        hi = t + _FIT_SPAN_SIGMA * sigma + (0.5 if integer else 0.0)
        v = values[values <= hi]
        res = optimize.minimize_scalar(negloglik, bounds=(np.log(t / 30), np.log(t * 2)), args=(v, hi),
                                       method="bounded")
        new = float(np.exp(res.x))
        if abs(new - sigma) < 1e-3 * sigma:
            sigma = new
            break
        sigma = new
    n_used = int((values <= t + _FIT_SPAN_SIGMA * sigma + (0.5 if integer else 0.0)).sum())
    return ThresholdNoise(threshold=t, sigma=sigma, n_pixels=n_used)


def fitted_threshold_noise(values: np.ndarray) -> ThresholdNoise | None:
    """:func:`fit_threshold_noise` when there are enough isolated pixels to fit, else None.

    Parameters
    ----------
    values : (M,) ndarray of float
        Values of isolated stored pixels, counts.

    Returns
    -------
    noise : ThresholdNoise or None
        None with fewer than :data:`MIN_ISOLATED` finite values, or none above 0.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < MIN_ISOLATED or values.min() <= 0:
        return None
    return fit_threshold_noise(values)
