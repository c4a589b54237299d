"""Pixels above the threshold, their 8-connected components and local maxima, on the sparse pixel list."""

from __future__ import annotations

import numpy as np

from braggflow.find._kernels import NO_MASK, list_local_maxima, pixels_above_tiles, sparse_component_labels
from braggflow.find.background import Background

__all__ = ["pixels_above_threshold", "sparse_components", "local_maxima", "same_comparison", "neighbour_positions"]


def pixels_above_threshold(frame: np.ndarray, background: Background, threshold_tiles: np.ndarray,
                           mask: np.ndarray | None = None) -> np.ndarray:
    """Sorted flat indices of the unmasked pixels above a per-tile threshold.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    background : Background
        The tiles (their size and the frame shape).
    threshold_tiles : (TY, TX) ndarray of float
        Threshold of each tile, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel, never above threshold.

    Returns
    -------
    flat_index : (M,) ndarray of int
        Indices into ``frame.ravel()``, ascending.
    """
    h, w = frame.shape
    tile = background.tile
    if (frame.dtype in (np.float32, np.float64) and (mask is None or mask.dtype == np.bool_)
            and np.shape(threshold_tiles) == (-(-h // tile), -(-w // tile))):
        # one compiled read of the frame (the thresholds of the frame's own type give the same comparisons)
        thresholds = np.ascontiguousarray(same_comparison(np.asarray(threshold_tiles, dtype=np.float64), frame.dtype),
                                          dtype=frame.dtype)
        above = pixels_above_tiles(frame, thresholds, int(tile), NO_MASK if mask is None else mask)
        # NumPy's own int64 type: a compiled function's result carries an equal type object of its own, with which
        # the arrays computed from it are slow in ufunc.at (region_boxes: ~15 x)
        return above.view(np.int64)
    flat = frame.ravel()
    # other frames: one contiguous pass against the lowest tile threshold; when few pixels pass it (peaks on a
    # flat background: a few thousand of 4 M) they are checked against their own tile's threshold (with more,
    # picking them out costs more than comparing every row of tiles with its own thresholds)
    lowest = threshold_tiles.min()
    if _few_above(background, lowest):
        candidates = np.flatnonzero(flat > same_comparison(lowest, frame.dtype))
        rows, cols = np.divmod(candidates, w)
        above = candidates[flat[candidates] > threshold_tiles[rows // tile, cols // tile]]
        if mask is not None:
            above = above[~mask.ravel()[above]]
        return above
    # else (a background that varies from tile to tile): row of tiles by row of tiles, each column against its tile
    out = []
    for i in range(threshold_tiles.shape[0]):
        r0, r1 = i * tile, min((i + 1) * tile, h)
        above = frame[r0:r1] > same_comparison(np.repeat(threshold_tiles[i], tile)[:w], frame.dtype)
        if mask is not None:
            above &= ~mask[r0:r1]
        out.append(np.flatnonzero(above) + r0 * w)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def same_comparison(threshold, dtype: np.dtype):
    """Thresholds of a frame's own float type that every value of it exceeds exactly when it exceeds ``threshold``.

    Comparing a float32 frame with float64 thresholds converts every pixel to
    float64 on the way (~1.5 x the time of the pass); the largest float32 not
    above each threshold gives the same answer for every float32 value ``x``:
    ``x > t`` exactly when ``x > t32``, since no float32 lies between ``t32``
    and ``t``.

    Parameters
    ----------
    threshold : float or ndarray of float
        Thresholds, counts.
    dtype : numpy.dtype
        The frame's type.

    Returns
    -------
    threshold : scalar or ndarray
        Of ``dtype`` when that is float32, else ``threshold`` unchanged.
    """
    if np.dtype(dtype) != np.float32:
        return threshold
    wide = np.asarray(threshold, dtype=np.float64)
    narrow = wide.astype(np.float32)
    narrow = np.where(narrow.astype(np.float64) > wide, np.nextafter(narrow, np.float32(-np.inf)), narrow)
    return narrow if narrow.ndim else narrow[()]


def _few_above(background: Background, threshold: float) -> bool:
    """Whether at most ~1/64 of the pixels are expected above ``threshold``, from the tiles' levels and noise.

    Each tile holds about ``Q((threshold - level) / noise)`` of its pixels
    above (``Q`` the normal upper tail).
    """
    from scipy.special import ndtr

    with np.errstate(divide="ignore", invalid="ignore"):
        z = (threshold - background.level) / background.noise
    return float(np.mean(ndtr(-np.nan_to_num(z, nan=0.0)))) <= 1 / 64


def sparse_components(flat_index: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """8-connected components of a sparse set of pixels, as (component id 1..n per pixel, n).

    Works on the sorted flat indices of the pixels above threshold, so the cost
    grows with their number, not with the frame size (a full-frame
    ``ndimage.label`` costs ~20 ms on 2048 x 2048): one compiled union-find
    pass over the list (:func:`braggflow.find._kernels.sparse_component_labels`),
    ids numbered as ``scipy.sparse.csgraph.connected_components`` numbers them.

    Parameters
    ----------
    flat_index : (K,) ndarray of int
        Sorted flat indices (``row * width + col``) of the pixels.
    width : int
        Frame width, px.

    Returns
    -------
    component : (K,) ndarray of int
        Component id (1..n) of each pixel.
    n : int
        Number of components.
    """
    component, n = sparse_component_labels(np.ascontiguousarray(flat_index, dtype=np.int64), int(width))
    return component, int(n)


def neighbour_positions(flat_index: np.ndarray, width: int,
                        rows: tuple[int, ...] = (-1, 0, 1)) -> dict[tuple[int, int], np.ndarray]:
    """Where each pixel's 8-neighbours would be in a sorted list of flat pixel indices.

    ``positions[dr, dc][k]`` is the list position of pixel ``flat_index[k] +
    dr x width + dc`` when the list holds it (the insertion point of
    ``np.searchsorted``, clipped to the list); callers test
    ``flat_index[pos] == target`` (and the column's range) for a hit.  The
    left and right neighbours are the list's previous and next pixels; the
    three of a row above or below are consecutive flat indices, so
    consecutive in the list: one binary search per row finds all three
    (a third of the searches of one per neighbour).

    Parameters
    ----------
    flat_index : (M,) ndarray of int
        Pixels, flat indices ``row x width + col``, ascending, M >= 1.
    width : int
        Row length of the flat indices, px.
    rows : tuple of int
        The row offsets (-1, 0, 1) whose neighbours are wanted.

    Returns
    -------
    positions : dict of {(dr, dc): (M,) ndarray of int}
        For every (dr, dc) != (0, 0) with dr in ``rows``.
    """
    m = flat_index.size
    out = {}
    if 0 in rows:
        k = np.arange(m)
        out[0, -1] = np.maximum(k - 1, 0)
        out[0, 1] = np.minimum(k + 1, m - 1)
    for dr in (r for r in rows if r != 0):
        pos = np.searchsorted(flat_index, flat_index + (dr * width - 1))
        for dc in (-1, 0, 1):
            clipped = np.minimum(pos, m - 1)
            out[dr, dc] = clipped
            if dc < 1:  # the insertion point of the next flat index
                pos = pos + (flat_index[clipped] == flat_index + (dr * width + dc))
    return out


def local_maxima(values: np.ndarray, flat_index: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Which pixels of a list are >= their 8 neighbours (outside the frame counts as -inf).

    Parameters
    ----------
    values : (K,) ndarray
        The pixels' values (``frame.ravel()[flat_index]``), counts.
    flat_index : (K,) ndarray of int
        Flat indices (``row * width + col``) of the pixels in ``frame``.
    frame : (H, W) ndarray
        The frame the neighbours are read from, counts.

    Returns
    -------
    is_max : (K,) ndarray of bool
    """
    return list_local_maxima(np.ascontiguousarray(values, dtype=np.float64),
                             np.ascontiguousarray(flat_index, dtype=np.int64), np.ascontiguousarray(frame))
