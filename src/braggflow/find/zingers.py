"""Zingers: events of 1-4 pixels far above all their neighbours, told from Bragg peaks by their shape.

A zinger (a cosmic ray, or a gamma from the sample environment, absorbed in
the sensor or the scintillator of an integrating detector) deposits its charge
in one to a few pixels and leaves their neighbours at the background.  A Bragg
peak is blurred at least by the detector's point-spread function and the
beam: a Gaussian spot of width ``sigma >= min_sigma`` puts a known least share
of its counts into the ring of pixels around its brightest 1-4 pixels.

For every region of the finder with at most four pixels above threshold, with
``E`` its counts above background and ``R`` the counts above background in the
ring of pixels that touch it (8-neighbours, masked pixels left out),

    zinger  if  R < f_k E / 2  and  f_k E / 2 >= 2 noise sqrt(n_ring)

where ``f_k`` is the least ring-to-event ratio of a Gaussian spot of width
``min_sigma`` whose brightest ``k`` pixels form the event, over all sub-pixel
positions (:func:`least_ring_ratio`).  The test sits halfway between a zinger
(``R = 0``) and the faintest-ringed real spot (``R = f_k E``), and decides only
when that half is at least twice the noise of ``R``: a weak event is left to
the significance test.  On a frame thresholded upstream a ring pixel that was
not stored counts as the storage threshold (the most it can have held).  The decision
uses the frame alone, as the zinger
filters of ImageD11 and MIDAS do (a pixel far above its neighbourhood), but
compares with the shape of the narrowest real spot instead of a fixed factor.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage, special

__all__ = ["least_ring_ratio", "zinger_regions", "MAX_ZINGER_PIXELS"]

#: regions with more pixels above threshold than this are never zingers
MAX_ZINGER_PIXELS = 4
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


@lru_cache(maxsize=16)
def least_ring_ratio(k: int, min_sigma: float) -> float:
    """Least (ring counts) / (event counts) of a round Gaussian spot whose brightest ``k`` pixels are the event.

    The spot's centre runs over a grid of sub-pixel positions (a quarter of a
    pixel, by symmetry); the event is its ``k`` brightest pixels and the ring
    the pixels touching them.

    Parameters
    ----------
    k : int
        Pixels in the event, 1 to :data:`MAX_ZINGER_PIXELS`.
    min_sigma : float
        Width of the narrowest real spot (Gaussian sigma), px.

    Returns
    -------
    ratio : float
    """
    edges = np.arange(-7.5, 8.5)
    worst = np.inf
    for dr in np.linspace(0.0, 0.5, 11):
        for dc in np.linspace(0.0, 0.5, 11):
            fr = np.diff(special.ndtr((edges - dr) / min_sigma))
            fc = np.diff(special.ndtr((edges - dc) / min_sigma))
            pix = np.outer(fr, fc)
            event = np.zeros(pix.size, dtype=bool)
            event[np.argsort(-pix.ravel(), kind="stable")[:k]] = True
            event = event.reshape(pix.shape)
            ring = ndimage.binary_dilation(event, np.ones((3, 3), bool)) & ~event
            worst = min(worst, pix[ring].sum() / pix[event].sum())
    return float(worst)


def zinger_regions(frame: np.ndarray, mask: np.ndarray | None, flat_index: np.ndarray, region_of: np.ndarray,
                   candidates: np.ndarray, npix: np.ndarray, signal: np.ndarray, level_at, noise_at, *,
                   min_sigma: float, unstored: float | None = None) -> np.ndarray:
    """Which candidate regions are zingers (see the module's test).

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    mask : (H, W) ndarray of bool or None
        True = bad pixel (left out of the ring).
    flat_index : (M,) ndarray of int
        The pixels above threshold (flat indices, ascending).
    region_of : (M,) ndarray of int
        Region id of each of those pixels.
    candidates : (K,) ndarray of int
        Region ids to test (regions of at most :data:`MAX_ZINGER_PIXELS` pixels).
    npix, signal : ndarray, indexed by region id
        Pixels above threshold, and their counts above background, of each region.
    level_at, noise_at : callable(rows, cols) -> ndarray
        Background level (counts/px) and noise of one pixel (counts) at pixel positions.
    min_sigma : float
        Width of the narrowest real spot, px.
    unstored : float, optional
        On a frame thresholded upstream: the storage threshold.  A ring pixel
        that was not stored (0) may have held anything below it, so it counts
        as this value, the most a real spot could have put there.

    Returns
    -------
    zinger : (K,) ndarray of bool
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.size == 0:
        return np.zeros(0, dtype=bool)
    h, w = frame.shape
    is_cand = np.zeros(int(region_of.max()) + 1, dtype=bool)
    is_cand[candidates] = True
    members = np.flatnonzero(is_cand[region_of])  # positions in the pixel list of the candidates' pixels
    m_rows, m_cols = np.divmod(flat_index[members], w)
    m_reg = region_of[members]
    nb_flat, nb_reg = [], []
    for dr, dc in _OFFSETS:
        r, c = m_rows + dr, m_cols + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        nb_flat.append(r[inside] * w + c[inside])
        nb_reg.append(m_reg[inside])
    nb_flat, nb_reg = np.concatenate(nb_flat), np.concatenate(nb_reg)
    # one entry per (region, neighbour pixel); the region's own pixels are not its ring
    key = np.unique(nb_reg * (h * w) + nb_flat)
    nb_reg, nb_flat = np.divmod(key, h * w)
    pos = np.minimum(np.searchsorted(flat_index, nb_flat), flat_index.size - 1)
    own = (flat_index[pos] == nb_flat) & (region_of[pos] == nb_reg)
    keep = ~own
    if mask is not None:
        keep &= ~mask.ravel()[nb_flat]
    nb_reg, nb_flat = nb_reg[keep], nb_flat[keep]
    rows, cols = np.divmod(nb_flat, w)
    ring_values = frame.ravel()[nb_flat].astype(np.float64)
    if unstored is not None:
        ring_values = np.where(ring_values == 0, unstored, ring_values)
    excess = ring_values - level_at(rows, cols)
    var = noise_at(rows, cols) ** 2
    size = int(region_of.max()) + 1
    ring = np.bincount(nb_reg, weights=excess, minlength=size)[candidates]
    ring_sd = np.sqrt(np.bincount(nb_reg, weights=var, minlength=size))[candidates]
    ratio = np.array([least_ring_ratio(int(k), float(min_sigma)) for k in npix[candidates]])
    half = 0.5 * ratio * signal[candidates]
    return (ring < half) & (half >= 2.0 * ring_sd)
