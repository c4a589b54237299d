"""Zingers: events of 1-4 pixels far above all their neighbours, told from Bragg peaks by their shape.

A zinger (a cosmic ray, or a gamma from the sample environment, absorbed in
the sensor or the scintillator of an integrating detector) deposits its charge
in one to a few pixels and leaves their neighbours at the background.  A Bragg
peak is blurred at least by the detector's point-spread function and the
beam: a Gaussian spot of width ``sigma >= min_sigma`` puts a known least share
of its counts into the ring of pixels around its brightest 1-4 pixels.

For every region of the finder with at most four pixels above threshold, the
event is the region and the pixels connected to it that are 3 noise sigma above
background (the parts of a zinger below the detection threshold), grown pixel ring
by pixel ring while they keep it within four pixels; with ``E``
the event's counts above background and ``R`` the counts above background in
the ring of pixels that touch the event (8-neighbours, masked pixels left out),
an event of at most four pixels is a

    zinger  if  R < f_k E / 2  and  f_k E / 2 >= noise sqrt(n_ring)

where ``f_k`` is the least ring-to-event ratio of a Gaussian spot of width
``min_sigma`` whose brightest ``k`` pixels form the event, over all sub-pixel
positions (:func:`least_ring_ratio`).  The test sits halfway between a zinger
(``R = 0``) and the faintest-ringed real spot (``R = f_k E``), and decides only
when that half is at least the noise (1 sd) of ``R``: a weak event is left to
the significance test.  A real spot of exactly ``min_sigma`` in the least
favourable sub-pixel position is thus taken for a zinger at most 16 % of the
time when it is that faint, and wider or brighter spots far more rarely.

An event this test leaves undecided is then weighed by its shape
(:mod:`braggflow.find.spot_shape`): it is a zinger when the best spot of width
at least ``min_sigma`` fits its pixels and ring worse than a zinger does by more
than ``SHAPE_CHI2`` in chi2 (a chain of pixels, an S, an L, a line with dark
flanks, which no blurred spot draws).  That test reads the pixels around the
event and is made on frames with a background only.

On a frame thresholded upstream a ring pixel that was not stored counts as the
storage threshold (the most it can have held).  The decision uses the frame
alone, as the zinger filters of ImageD11 and MIDAS do (a pixel far above its
neighbourhood), but compares with the shape of the narrowest real spot instead of a fixed factor.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage, special

from braggflow.find import spot_shape
from braggflow.find._kernels import event_ring_keys

__all__ = ["least_ring_ratio", "zinger_regions", "zinger_regions_at", "MAX_ZINGER_PIXELS"]

#: the test decides only when half the expected ring of the faintest-ringed real spot is this many sd of the ring
DECISIVE_SD = 1.0
#: ring pixels this many noise sigma above background join the event they touch
_GROW_SIGMA = 3.0
#: regions with more pixels above threshold than this are never zingers
MAX_ZINGER_PIXELS = 4


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
                   min_sigma: float, unstored: float | None = None, gain: float = 1.0) -> np.ndarray:
    """Which candidate regions are zingers (see the module's test).

    :func:`zinger_regions_at` with the pixel values and the mask read from the frame.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    mask : (H, W) ndarray of bool or None
        True = bad pixel (left out of the ring).
    flat_index, region_of, candidates, npix, signal, level_at, noise_at, min_sigma, unstored, gain
        As :func:`zinger_regions_at`.

    Returns
    -------
    zinger : (K,) ndarray of bool
    """
    flat = frame.ravel()
    bad = mask.ravel() if mask is not None else None
    return zinger_regions_at(frame.shape, flat.__getitem__, None if bad is None else bad.__getitem__, flat_index,
                             region_of, candidates, npix, signal, level_at, noise_at, min_sigma=min_sigma,
                             unstored=unstored, gain=gain)


def zinger_regions_at(shape: tuple[int, int], value_at, bad_at, flat_index: np.ndarray, region_of: np.ndarray,
                      candidates: np.ndarray, npix: np.ndarray, signal: np.ndarray, level_at, noise_at, *,
                      min_sigma: float, unstored=None, gain: float = 1.0) -> np.ndarray:
    """Which candidate regions are zingers (see the module's test), with the pixels read through functions.

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the image the flat indices run over, px (a frame, or a block
        of frames stacked along the rows, with ``bad_at`` true between them).
    value_at : callable(flat_indices) -> ndarray
        Corrected counts of pixels (0 where not stored on a thresholded frame).
    bad_at : callable(flat_indices) -> ndarray of bool, or None
        True = bad pixel (left out of the ring); None: no bad pixel.
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
    unstored : float or callable(flat_indices) -> ndarray, optional
        On a frame thresholded upstream: the storage threshold.  A ring pixel
        that was not stored (0) may have held anything below it, so it counts
        as this value, the most a real spot could have put there.  A callable
        gives it per pixel (frames of a block with thresholds of their own).
    gain : float
        Counts per photon: the Poisson variance of the counts above background
        in the shape test.

    Returns
    -------
    zinger : (K,) ndarray of bool
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.size == 0:
        return np.zeros(0, dtype=bool)
    if unstored is None and spot_shape.SHAPE_CHI2 is not None:
        spot_shape.prepare_shape_test(float(min_sigma))  # once: on the first frame, not on a later one
    h, w = shape
    is_cand = np.zeros(int(region_of.max()) + 1, dtype=bool)
    is_cand[candidates] = True
    members = np.flatnonzero(is_cand[region_of])  # positions in the pixel list of the candidates' pixels
    ev_reg, ev_flat = region_of[members], flat_index[members]

    def ring_of(ev_reg, ev_flat):
        """Region id, flat index, excess, variance and 'measured' (not an unstored 0) of the ring pixels of events."""
        # (event, neighbour) keys sorted, each once, the events' own pixels left out
        key = event_ring_keys(np.ascontiguousarray(ev_reg, dtype=np.int64),
                              np.ascontiguousarray(ev_flat, dtype=np.int64), h, w)
        reg, pix = np.divmod(key, h * w)
        if bad_at is not None:
            good = ~bad_at(pix)
            reg, pix = reg[good], pix[good]
        r, c = np.divmod(pix, w)
        values = np.asarray(value_at(pix), dtype=np.float64)
        measured = np.ones(values.size, dtype=bool) if unstored is None else values != 0
        if unstored is not None:
            values = np.where(measured, values, unstored(pix) if callable(unstored) else unstored)
        return reg, pix, values - level_at(r, c), noise_at(r, c) ** 2, measured

    # the event: the region's pixels and the ring pixels 3 sigma above background (parts of a zinger that
    # missed the detection threshold), as long as it stays within MAX_ZINGER_PIXELS
    # grown step by step, so that a track whose middle pixel dipped below the detection threshold (two regions)
    # is one event
    size = int(region_of.max()) + 1
    n_ev, e_ev = np.zeros(size, dtype=np.int64), np.zeros(size)
    n_ev[candidates], e_ev[candidates] = npix[candidates], signal[candidates]
    growing = np.zeros(size, dtype=bool)
    growing[candidates] = True
    for _ in range(MAX_ZINGER_PIXELS - 1):
        now = growing[ev_reg]
        reg, pix, excess, var, measured = ring_of(ev_reg[now], ev_flat[now])
        strong = measured & (excess > _GROW_SIGMA * np.sqrt(var)) & growing[reg]
        n_grown = np.bincount(reg[strong], minlength=size)
        growing &= (n_grown > 0) & (n_ev + n_grown <= MAX_ZINGER_PIXELS)  # else: the event as it is
        strong &= growing[reg]
        if not strong.any():
            break
        n_ev += np.bincount(reg[strong], minlength=size)
        e_ev += np.bincount(reg[strong], weights=excess[strong], minlength=size)
        ev_reg, ev_flat = np.concatenate([ev_reg, reg[strong]]), np.concatenate([ev_flat, pix[strong]])
    n_event, e_event = n_ev[candidates], e_ev[candidates]
    reg, pix, excess, var, _ = ring_of(ev_reg, ev_flat)
    ring = np.bincount(reg, weights=excess, minlength=size)[candidates]
    ring_sd = np.sqrt(np.bincount(reg, weights=var, minlength=size))[candidates]
    ratios = np.array([least_ring_ratio(k, float(min_sigma)) for k in range(1, MAX_ZINGER_PIXELS + 1)])
    ratio = ratios[n_event - 1]  # events of 1 to MAX_ZINGER_PIXELS pixels
    half = 0.5 * ratio * e_event
    zinger = (ring < half) & (half >= DECISIVE_SD * ring_sd)
    rest = np.flatnonzero(~zinger)
    if unstored is None and rest.size and spot_shape.SHAPE_CHI2 is not None:
        # the events the ring leaves undecided, by their shape (not on thresholded frames: no values around them)
        event_of = np.full(size, -1, dtype=np.int64)
        event_of[candidates[rest]] = np.arange(rest.size)
        k = event_of[ev_reg]
        d = spot_shape.shape_statistic(shape, value_at, bad_at, k[k >= 0], ev_flat[k >= 0], level_at, noise_at,
                                       n_events=rest.size, min_sigma=min_sigma, gain=gain,
                                       decided_at=spot_shape.SHAPE_CHI2)
        zinger[rest] = d > spot_shape.SHAPE_CHI2
    return zinger
