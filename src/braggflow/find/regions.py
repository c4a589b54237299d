"""Peak regions: bounding boxes, signals, the ring background of weak regions, whole-region centroids."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from braggflow.find._kernels import NO_MASK, box_rings
from braggflow.find.background import Background
from braggflow.windows import grow8

__all__ = ["Regions", "region_boxes", "ring_medians", "ring_means", "region_centroids", "LOCAL_RING_MARGIN"]

#: px between a weak region's bounding box and the ring whose median is its local background
LOCAL_RING_MARGIN = 3


@dataclass(frozen=True)
class Regions:
    """Bounding boxes and signals of the finder's peak regions, aligned with the peak table's rows.

    Computed from the pixel list at little cost; :func:`region_centroids` turns
    them into centres for peaks larger than a localizer's patch.

    Attributes
    ----------
    top, left : (N,) ndarray of int
        First row and column of the region's bounding box, px.
    height, width : (N,) ndarray of int
        Bounding-box size, px.
    signal : (N,) ndarray of float
        Sum of the counts above the tile background over the region's pixels
        (those above threshold), counts.
    noise : (N,) ndarray of float
        Tile noise (1 sigma per pixel, counts) at the region's brightest pixel.
    background : Background or None
        The finder's background and noise maps (None for an empty frame).
    """

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    signal: np.ndarray
    noise: np.ndarray
    background: Background | None = None

    @classmethod
    def empty(cls) -> Regions:
        """Regions of a frame with no peak."""
        f, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return cls(i, i, i, i, f, f)


def region_boxes(final: np.ndarray, rows: np.ndarray, cols: np.ndarray, nreg: int) -> dict[str, np.ndarray]:
    """Bounding box of each region id of ``final`` (per-pixel region ids)."""
    out = {}
    for first, size, coord in (("top", "height", rows), ("left", "width", cols)):
        lo = np.full(nreg, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(nreg, -1, dtype=np.int64)
        np.minimum.at(lo, final, coord)
        np.maximum.at(hi, final, coord)
        out[first], out[size] = lo, hi - lo + 1
    return out


def ring_medians(frame: np.ndarray, mask: np.ndarray | None, top, left, height, width, margin: int) -> np.ndarray:
    """Median of the unmasked pixels on the border of each box grown by ``margin`` px (NaN: none).

    ``top, left, height, width`` are (K,) integer arrays (a region's bounding
    box); the ring is clipped to the frame.
    """
    return _box_rings(frame, mask, top, left, height, width, margin, True)


def ring_means(frame: np.ndarray, mask: np.ndarray | None, top, left, height, width, margin: int) -> np.ndarray:
    """Mean of the unmasked pixels on the border of each box grown by ``margin`` px (NaN: none).

    As :func:`ring_medians`, with the mean: it includes the wings of a bright
    neighbour that cross part of the ring, which the median leaves out.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    mask : (H, W) ndarray of bool or None
        True = bad pixel, left out.
    top, left, height, width : (N,) ndarray of int
        Boxes, px.
    margin : int
        Distance of the ring from each box, px.

    Returns
    -------
    means : (N,) ndarray of float
        Counts per pixel.
    """
    return _box_rings(frame, mask, top, left, height, width, margin, False)


def _box_rings(frame, mask, top, left, height, width, margin, median: bool) -> np.ndarray:
    """:func:`~braggflow.find._kernels.box_rings` on any box arrays and mask (None: no bad pixel)."""
    as_int = [np.ascontiguousarray(np.asarray(a), dtype=np.int64) for a in (top, left, height, width)]
    bad = NO_MASK if mask is None else np.ascontiguousarray(mask, dtype=bool)
    return box_rings(np.ascontiguousarray(frame), bad, *as_int, int(margin), median)


def region_centroids(
    frame: np.ndarray,
    labels: np.ndarray,
    regions: Regions,
    index: np.ndarray,
    *,
    background: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    gain: float = 1.0,
) -> dict[str, np.ndarray]:
    """Intensity-weighted centroids of whole peak regions (for peaks larger than a patch).

    The region of label ``k + 1`` is grown by one pixel (8-connected, not into
    other peaks or masked pixels), as for integration; the centroid weights are
    the counts above ``background``.  Growing keeps the threshold's cut from
    moving the centroid: with the pixels above threshold alone the centroid
    scatters ~1.4 x more than the Poisson error says, with the grown region as
    the error says (tested).  This is the centroid of a segment in photutils'
    source properties, and of a spot within one frame in HEXRD.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    labels : (H, W) ndarray of int
        The finder's label image (label k + 1 is table row k).
    regions : Regions
        The finder's regions (same rows as the table).
    index : (M,) ndarray of int
        Table rows to compute.
    background : (M,) ndarray of float, optional
        Background level of each, counts/px; default: the finder's tile
        background under each pixel (``regions.background``), which follows the
        background across a large region (a region 371 px wide on a real
        GIWAXS frame has a net negative signal against the level at its
        brightest pixel).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    gain : float
        ADU per photon (Poisson variance ``gain x counts``).

    Returns
    -------
    centroids : dict of (M,) ndarray of float
        ``row``, ``col`` (px), ``row_err``, ``col_err`` (px, 1 sigma from the
        pixels' variances: tile noise squared plus Poisson), ``rc_cov`` (px^2),
        ``sigma_row``, ``sigma_col`` (px, square roots of the second moments).
        NaN for a region with no net signal above its background.

    Notes
    -----
    The errors are statistical.  Where the threshold cuts a peak's tails
    unevenly (a background gradient along a long streak) the region itself is
    lopsided, a bias they do not include (a few px on a 400 px streak over a
    background falling from 300 to 20 counts, tested).
    """
    h, w = frame.shape
    names = ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col")
    out = {name: np.full(len(index), np.nan) for name in names}
    for j, k in enumerate(np.asarray(index, dtype=np.intp)):
        r0, c0 = max(int(regions.top[k]) - 1, 0), max(int(regions.left[k]) - 1, 0)
        r1 = min(int(regions.top[k] + regions.height[k]) + 1, h)
        c1 = min(int(regions.left[k] + regions.width[k]) + 1, w)
        lab = labels[r0:r1, c0:c1]
        own = lab == k + 1
        grown = grow8(own) & ((lab == 0) | own)
        if mask is not None:
            grown &= ~mask[r0:r1, c0:c1]
        rr, cc = np.nonzero(grown)
        counts = frame[r0:r1, c0:c1][rr, cc].astype(np.float64)
        if background is not None:
            level, noise = background[j], regions.noise[k]
        else:
            tiles = regions.background
            rows, cols = rr + r0, cc + c0
            level, noise = tiles.at(rows, cols), tiles.at(rows, cols, values=tiles.noise)
        excess = counts - level
        total = excess.sum()
        if not total > 0:
            continue
        # np.maximum, not np.clip: the same values once added to noise**2 (it differs only in the sign of a zero)
        var = noise**2 + gain * np.maximum(excess, 0)
        row, col = (excess * rr).sum() / total, (excess * cc).sum() / total
        dr, dc = rr - row, cc - col
        var_dr, excess_dr = var * dr, excess * dr  # the products are those of var * dr * dr, ... (left to right)
        out["row"][j], out["col"][j] = row + r0, col + c0
        out["row_err"][j] = np.sqrt((var_dr * dr).sum()) / total
        out["col_err"][j] = np.sqrt((var * dc * dc).sum()) / total
        out["rc_cov"][j] = (var_dr * dc).sum() / total**2
        out["sigma_row"][j] = math.sqrt(max((excess_dr * dr).sum() / total, 0.0))
        out["sigma_col"][j] = math.sqrt(max((excess * dc * dc).sum() / total, 0.0))
    return out

