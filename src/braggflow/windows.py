"""Square windows (patches) cut around pixels, and the border background of a patch.

The one place braggflow cuts windows out of a frame: the locate stage's patches,
the integrate stage's windows and the pipeline's hand-overs all use
:func:`cut_windows`; :func:`patch_background` is the one border-median
background of a patch.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided

from braggflow.errors import BraggflowError

__all__ = ["cut_windows", "cut_box", "check_patch_size", "check_patch_stack", "patch_background", "grow8"]


def cut_windows(array: np.ndarray, rows: np.ndarray, cols: np.ndarray, half: int, fill) -> np.ndarray:
    """Cut (N, 2 half + 1, 2 half + 1) windows centred on integer pixels, padding outside the frame.

    Parameters
    ----------
    array : (H, W) ndarray
    rows, cols : (N,) ndarray of int
        Window centres, px.
    half : int
        Half-size of the window, px.
    fill : scalar
        Value for pixels outside the frame.

    Returns
    -------
    windows : (N, 2 half + 1, 2 half + 1) ndarray, dtype of ``array``
        A new array.

    Notes
    -----
    Arrays of booleans and native-order numbers are copied window by
    window by a compiled loop (:func:`_gather_windows`) that asks the memory
    for the next window's rows while it copies the current one: when the
    frame is not in the cache (a frame of several megapixels after the
    finder) most of the time goes into waiting for those rows, and this
    about halves it.  Other arrays are gathered at once from a strided
    (sliding-window) view, block by block, with their corners clipped into
    the frame; the few windows that reach past the frame's edge are then cut
    again with padding.
    """
    h, w = array.shape
    side = 2 * half + 1
    top = np.asarray(rows, dtype=np.intp) - half
    left = np.asarray(cols, dtype=np.intp) - half
    if array.dtype.kind in "biuf" and array.dtype.isnative:
        out = np.empty((len(top), side, side), dtype=array.dtype)
        _gather_windows(array, top, left, out, out.dtype.type(fill))
        return out
    if h < side or w < side:  # no window fits inside the frame
        out = np.empty((len(top), side, side), dtype=array.dtype)
        _fill_edge_windows(out, np.arange(len(top)), array, top, left, fill)
        return out
    if array.flags.c_contiguous:
        view = np.ndarray((h - side + 1, w - side + 1, side, side), dtype=array.dtype, buffer=array,
                          strides=array.strides * 2)
    else:
        view = as_strided(array, shape=(h - side + 1, w - side + 1, side, side), strides=array.strides * 2,
                          writeable=False)
    inner_top = np.minimum(np.maximum(top, 0), h - side)
    inner_left = np.minimum(np.maximum(left, 0), w - side)
    out = view[inner_top, inner_left]
    edge = np.flatnonzero((inner_top != top) | (inner_left != left))
    if edge.size:
        _fill_edge_windows(out, edge, array, top, left, fill)
    return out


@njit(cache=True, nogil=True)
def _gather_windows(array, top, left, out, fill):  # pragma: no cover - compiled
    """Copy the windows whose first pixels are (``top``, ``left``) into ``out`` (N, s, s), ``fill`` outside.

    Before each window is copied, the first and last pixel of every row of
    the next one are read (their sum is returned, so that the reads are
    kept): the memory then fetches those rows while this window is copied.
    """
    h, w = array.shape
    n, side = out.shape[0], out.shape[1]
    read_ahead = 0.0
    for k in range(n):
        if k + 1 < n:
            first = min(max(left[k + 1], 0), w - 1)
            last = min(max(left[k + 1] + side - 1, 0), w - 1)
            for r in range(max(top[k + 1], 0), min(top[k + 1] + side, h)):
                read_ahead += np.float64(array[r, first]) + np.float64(array[r, last])
        t, c = top[k], left[k]
        if t >= 0 and c >= 0 and t + side <= h and c + side <= w:
            for i in range(side):  # row by row through 1D views: no 2D index arithmetic per pixel
                source = array[t + i, c:c + side]
                target = out[k, i]
                for j in range(side):
                    target[j] = source[j]
        else:
            for i in range(side):
                r = t + i
                for j in range(side):
                    out[k, i, j] = array[r, c + j] if 0 <= r < h and 0 <= c + j < w else fill
    return read_ahead


def _fill_edge_windows(out: np.ndarray, index: np.ndarray, array: np.ndarray, top: np.ndarray, left: np.ndarray,
                       fill) -> None:
    """Write the windows ``index`` of ``out`` (corners ``top``, ``left``), which reach past the frame, padded."""
    h, w = array.shape
    side = out.shape[-1]
    if len(index) <= _FEW_EDGE_WINDOWS:  # slice by slice: cheaper than building index arrays
        for k, r, c in zip(index.tolist(), top[index].tolist(), left[index].tolist()):
            out[k] = fill
            r0, r1, c0, c1 = max(r, 0), min(r + side, h), max(c, 0), min(c + side, w)
            if r0 < r1 and c0 < c1:
                out[k, r0 - r:r1 - r, c0 - c:c1 - c] = array[r0:r1, c0:c1]
        return
    offs = np.arange(side)
    rr = top[index][:, None, None] + offs[None, :, None]
    cc = left[index][:, None, None] + offs[None, None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    cut = array[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
    cut[~inside] = fill
    out[index] = cut


#: Up to this many edge windows are cut slice by slice (cheaper than building index arrays).
_FEW_EDGE_WINDOWS = 16


def cut_box(array: np.ndarray, top: int, left: int, height: int, width: int, fill) -> np.ndarray:
    """Cut the (height, width) box whose first pixel is (``top``, ``left``), padding outside the frame.

    Parameters
    ----------
    array : (H, W) ndarray
    top, left : int
        Frame row and column of the box's first pixel, px (may lie outside the frame).
    height, width : int
        Box size, px.
    fill : scalar
        Value for pixels outside the frame.

    Returns
    -------
    box : (height, width) ndarray, dtype of ``array``
        A new array.
    """
    h, w = array.shape
    out = np.full((height, width), fill, dtype=array.dtype)
    r0, r1, c0, c1 = max(top, 0), min(top + height, h), max(left, 0), min(left + width, w)
    if r0 < r1 and c0 < c1:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = array[r0:r1, c0:c1]
    return out


def check_patch_size(size) -> int:
    """Return ``size`` as an int if it is an odd integer >= 3, else raise BraggflowError."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 3 or size % 2 != 1:
        raise BraggflowError(f"size (patch side) must be an odd integer >= 3, got {size!r}")
    return int(size)


def _border(size: int) -> np.ndarray:
    b = np.zeros((size, size), dtype=bool)
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True
    return b


def patch_background(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Local background of each patch: median of its usable border pixels.

    The one border-median background of braggflow: :func:`extract_patches`,
    the centroid, the simulator and the networks' input normalisation
    (:mod:`braggflow.nn.preprocess`) all use it.  Patches with fewer than
    3 usable border pixels use the lower quartile of all their usable pixels
    (the median would be pulled up by the peak), and 0 when none is usable.
    Vectorised: one sort of the border pixels of all patches.

    Parameters
    ----------
    data : (N, s, s) ndarray
        Patch pixels, counts.  Non-finite pixels are unusable.
    mask : (N, s, s) ndarray of bool, optional
        True = unusable pixel.

    Returns
    -------
    background : (N,) ndarray of float64
        Counts per pixel.
    """
    data = np.asarray(data)
    n, s = data.shape[0], data.shape[-1]
    if n == 0:
        return np.zeros(0)
    work = np.float64 if data.dtype == np.float64 else np.float32
    flat = data.reshape(n, s * s)
    ring = _border_index(s)
    border = flat[:, ring].astype(work)  # a copy
    bmask = ~np.isfinite(border)
    if mask is not None:
        bmask |= np.asarray(mask, dtype=bool).reshape(n, s * s)[:, ring]
    k = border.shape[1]
    any_bad = bool(bmask.any())
    if any_bad:
        np.copyto(border, np.inf, where=bmask)
    border.sort(axis=1)
    if not any_bad:
        return 0.5 * (border[:, (k - 1) // 2].astype(float) + border[:, k // 2])
    n_valid = k - bmask.sum(axis=1)
    rows = np.arange(n)
    lo = np.clip((n_valid - 1) // 2, 0, k - 1)
    hi = np.clip(n_valid // 2, 0, k - 1)
    bg = 0.5 * (border[rows, lo].astype(float) + border[rows, hi])
    few = np.flatnonzero(n_valid < 3)
    if len(few):
        v = flat[few].astype(work)
        vmask = ~np.isfinite(v)
        if mask is not None:
            vmask |= np.asarray(mask, dtype=bool)[few].reshape(len(few), s * s)
        np.copyto(v, np.inf, where=vmask)
        v.sort(axis=1)
        count = s * s - vmask.sum(axis=1)
        q = v[np.arange(len(few)), np.clip(count // 4, 0, s * s - 1)]
        bg[few] = np.where(count > 0, q, 0.0)
    return bg


@functools.lru_cache(maxsize=8)
def _border_index(size: int) -> np.ndarray:
    """Flat indices of the border pixels of an (s, s) patch."""
    return np.flatnonzero(_border(size))


def check_patch_stack(data, mask=None, *, dtype=np.float64, odd: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate a stack of square patches and combine its mask with the non-finite pixels.

    Parameters
    ----------
    data : (N, s, s) or (s, s) array_like
        Patches, counts; a single patch becomes a stack of one.
    mask : (N, s, s) or (s, s) array_like of bool, optional
        True marks an unusable pixel.
    dtype : numpy dtype
        Type of the returned data.
    odd : bool
        Require an odd side s >= 3 (a patch centred on a pixel).

    Returns
    -------
    data : (N, s, s) ndarray of ``dtype``
        Non-finite pixels are left as they are.
    mask : (N, s, s) ndarray of bool
        The given mask OR the non-finite pixels.

    Raises
    ------
    BraggflowError
        If ``data`` is not a stack of square patches (odd, with ``odd``) or
        ``mask`` has another shape.
    """
    data = np.asarray(data, dtype=dtype)
    if data.ndim == 2:
        data = data[None]
    side = data.shape[-1] if data.ndim == 3 else 0
    if data.ndim != 3 or data.shape[1] != side or (odd and (side < 3 or side % 2 == 0)):
        need = " with odd s >= 3" if odd else ""
        raise BraggflowError(f"patches must be an (N, s, s) array{need}, got shape {data.shape}")
    if mask is None:
        mask = np.zeros(data.shape, dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != data.shape:
            raise BraggflowError(f"patch mask has shape {mask.shape}, expected the patches' shape {data.shape}")
    return data, mask | ~np.isfinite(data)


def grow8(image: np.ndarray) -> np.ndarray:
    """Grow an image, or a stack of patches, by one pixel to its 8 neighbours (nothing beyond its edges).

    Each pixel becomes the bitwise OR of itself and its 8 neighbours in the
    last two axes: for booleans the binary dilation by a 3 x 3 square,
    ``scipy.ndimage.binary_dilation(image, structure=np.ones((3, 3)))`` of
    each 2D image, by four shifted ORs (rows, then columns); for integer
    codes each bit is grown on its own.

    Parameters
    ----------
    image : (..., H, W) ndarray of bool or integers
        One image or a stack of them (patches, windows).

    Returns
    -------
    grown : (..., H, W) ndarray, dtype of ``image``
        A new array.
    """
    rows = image.copy()
    rows[..., 1:, :] |= image[..., :-1, :]
    rows[..., :-1, :] |= image[..., 1:, :]
    grown = rows.copy()
    grown[..., :, 1:] |= rows[..., :, :-1]
    grown[..., :, :-1] |= rows[..., :, 1:]
    return grown
