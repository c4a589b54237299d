"""Hot pixels: pixels far above their neighbours in most frames of a series.

A hot pixel (a defect of the sensor or its readout) reads high in frame after
frame while its neighbours read the background, and a finder that keeps
one-pixel peaks reports it in every frame.  A powder or pressure-medium ring
also lights the same pixels in every frame, but each of its pixels has ring
pixels beside it, so it is not an outlier against its neighbours.

:func:`hot_pixel_map` therefore marks a pixel hot when it exceeds the median
of its 8 neighbours by ``sigma`` noise standard deviations in at least
``fraction`` of a sample of frames, the test pyFAI's and ImageD11's hot-pixel
filters make (a pixel against its neighbourhood), applied over frames so that
one bright spot is not a defect.  A Bragg spot that stays in place through the
series (a still crystal) is not hot either: its neighbours share its counts,
and a pixel counts as an outlier only when it is the highest of its 3 x 3
neighbourhood and the median of its neighbours holds less than
:data:`NEIGHBOUR_SHARE` of its excess (plus one noise sigma).  The noise of a pixel is
``sqrt(noise_frame**2 + gain x (median8 - level))``: the frame's robust pixel
noise (from differences of neighbouring pixels, so that a smooth background
does not count), Poisson on the neighbours' rise above the frame's level, and
at least one
``gain`` (one photon), so that a frame thresholded upstream (all 0 below its
threshold) still has a scale.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from braggflow._stats import MAD_TO_SIGMA
from braggflow.errors import BraggflowError

__all__ = ["outlier_pixels", "hot_pixel_map", "NEIGHBOUR_SHARE"]

#: least share of its peak (above the level) that a spot of width >= 0.5 px leaves in the median of its 8
#: neighbours (0.14 for a spot of sigma 0.5 px centred on a pixel, more for wider spots)
NEIGHBOUR_SHARE = 0.1
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def _frame_noise(frame: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Robust level (median) and pixel noise of a frame, from every 7th pixel of every 7th row.

    The noise is 1.4826 MAD of the differences between horizontal neighbours,
    divided by sqrt(2): a smooth background (a gradient, a ring) does not
    inflate it.
    """
    a, b = frame[::7, :-1:7].astype(np.float64), frame[::7, 1::7].astype(np.float64)
    n = min(a.shape[1], b.shape[1])
    a, b = a[:, :n], b[:, :n]
    both = good[::7, :-1:7][:, :n] & good[::7, 1::7][:, :n]
    if not both.any():
        return 0.0, 0.0
    level = float(np.median(a[both]))
    diff = (a - b)[both]
    return level, float(MAD_TO_SIGMA * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2))


def outlier_pixels(frame: np.ndarray, mask: np.ndarray | None = None, *, sigma: float = 5.0,
                   gain: float = 1.0, noise: float | None = None) -> np.ndarray:
    """Flat indices of the pixels that exceed the median of their 8 neighbours by ``sigma`` noise sigma.

    Parameters
    ----------
    frame : (H, W) ndarray
        A corrected (or raw) frame, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel: never an outlier, and left out of its neighbours' medians.
    sigma : float
        Outlier threshold in noise standard deviations.
    gain : float
        ADU per photon (Poisson on the neighbours' level, and the least noise).
    noise : float, optional
        Least noise of one pixel, counts: for frames thresholded upstream,
        whose zeros hide the noise (:mod:`braggflow.find.noise`).

    Returns
    -------
    flat_index : (M,) ndarray of int
        Ascending indices into ``frame.ravel()``.

    Raises
    ------
    BraggflowError
        If the frame is not 2D or the mask has another shape.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be 2D, got shape {frame.shape}")
    if mask is not None and mask.shape != frame.shape:
        raise BraggflowError(f"mask has shape {mask.shape}, expected the frame shape {frame.shape}")
    good = np.isfinite(frame) if mask is None else np.isfinite(frame) & ~mask
    level, frame_noise = _frame_noise(frame, good)
    floor = max(frame_noise, gain, noise or 0.0)
    # only pixels above the frame's level by the threshold can be outliers against any neighbourhood
    candidates = np.flatnonzero(good & (frame > level + sigma * floor))
    if candidates.size == 0:
        return candidates
    h, w = frame.shape
    rows, cols = np.divmod(candidates, w)
    neighbours = np.full((candidates.size, 8), np.nan)
    flat = frame.ravel()
    good_flat = good.ravel()
    for k, (dr, dc) in enumerate(_OFFSETS):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        idx = r[inside] * w + c[inside]
        vals = flat[idx].astype(np.float64)
        neighbours[np.flatnonzero(inside), k] = np.where(good_flat[idx], vals, np.nan)
    with np.errstate(all="ignore"):
        med = np.nanmedian(neighbours, axis=1)
    med = np.where(np.isfinite(med), med, level)
    pixel_noise = np.sqrt(floor**2 + gain * np.clip(med - level, 0, None))
    excess = flat[candidates] - level
    # a spot of width >= 0.5 px keeps the median of its 8 neighbours above NEIGHBOUR_SHARE of its peak
    lonely = med - level < NEIGHBOUR_SHARE * excess + floor
    with np.errstate(all="ignore"):
        top = flat[candidates] >= np.nanmax(np.where(np.isfinite(neighbours), neighbours, -np.inf), axis=1)
    return candidates[(flat[candidates] - med > sigma * pixel_noise) & lonely & top]


def hot_pixel_map(frames: Iterable[np.ndarray], mask: np.ndarray | None = None, *, sigma: float = 5.0,
                  fraction: float = 0.5, gain: float = 1.0, noise: float | None = None) -> np.ndarray:
    """Pixels that are outliers against their neighbours (:func:`outlier_pixels`) in ``fraction`` of the frames.

    Parameters
    ----------
    frames : iterable of (H, W) ndarray
        A sample of the series' frames (e.g. 20 spread over it), counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel (never hot: it is masked already).
    sigma : float
        Outlier threshold in noise standard deviations.
    fraction : float
        Least fraction of the sampled frames in which a pixel must be an outlier, in (0, 1].
    gain : float
        ADU per photon.
    noise : float, optional
        Least noise of one pixel, counts (see :func:`outlier_pixels`).

    Returns
    -------
    hot : (H, W) ndarray of bool
        True = hot pixel.

    Raises
    ------
    BraggflowError
        If no frame is given, frames differ in shape, or ``fraction`` is outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise BraggflowError(f"hot-pixel fraction must be in (0, 1], got {fraction}")
    counts = None
    n = 0
    for frame in frames:
        frame = np.asarray(frame)
        if counts is None:
            counts = np.zeros(frame.size, dtype=np.int32)
            shape = frame.shape
        elif frame.shape != shape:
            raise BraggflowError(f"hot-pixel map: frame of shape {frame.shape}, expected {shape}")
        counts[outlier_pixels(frame, mask, sigma=sigma, gain=gain, noise=noise)] += 1
        n += 1
    if counts is None:
        raise BraggflowError("hot-pixel map: no frame given")
    return (counts >= max(1, int(np.ceil(fraction * n)))).reshape(shape)
