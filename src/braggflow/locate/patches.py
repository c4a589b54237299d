"""Square patches around found peaks, with the pixels that must not be used.

A patch is the (s, s) block of the frame centred on the pixel nearest a peak's
(row, col); the finder puts the peak's highest pixel there.  Pixels outside the
detector, masked pixels and pixels of other peaks are marked in ``mask`` and
replaced in ``data`` by the patch's local background, so that every localizer
(centre of mass, fits, the networks) sees a complete array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from braggflow._stats import MAD_TO_SIGMA
from braggflow.errors import BraggflowError
from braggflow.schema import Flag
from braggflow.windows import _border_index, check_patch_size, cut_windows, patch_background

__all__ = ["Patches", "extract_patches", "patch_background", "remove_other_peaks", "check_patch_size"]

# 8-connectivity inside each patch, none across the patch axis.
_STRUCTURE_2D = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_2D[1] = True
# 8-connectivity in a 2D image.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


@dataclass
class Patches:
    """Patches cut from a frame around a table of peaks.

    Attributes
    ----------
    data : (N, s, s) ndarray of float32
        Pixel values, counts; unusable pixels (``mask``) hold the patch's local
        background estimate.
    mask : (N, s, s) ndarray of bool
        True where a pixel is unusable: outside the detector, masked, not finite,
        or belonging to another peak.
    origin : (N, 2) ndarray of int64
        Frame (row, col) of patch pixel [0, 0]; frame coordinate = origin + patch
        coordinate.
    flags : (N,) ndarray of uint32
        :class:`braggflow.schema.Flag` bits: EDGE, MASKED_NEIGHBOUR, OVERLAPPING,
        SATURATED, BAD_BACKGROUND.
    background : (N,) ndarray of float64
        The local background estimate used for the replaced pixels, counts/px.
    own : (N, s, s) ndarray of bool or None
        With the finder's labels: the pixels of each patch's own label (patch k
        is label k + 1, after ``relabel``), inside the frame or not; None without
        labels.
    counts : (N, s, s) ndarray or None
        The frame's pixels as cut, before any was replaced (the frame's dtype,
        0 outside the frame); None where not kept.
    """

    data: np.ndarray
    mask: np.ndarray
    origin: np.ndarray
    flags: np.ndarray
    background: np.ndarray | None = None
    own: np.ndarray | None = None
    counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def size(self) -> int:
        """Patch side s, px."""
        return int(self.data.shape[-1])


def _masked_median(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Row-wise median of ``values`` over ``good`` entries; NaN for rows without any."""
    v = np.sort(np.where(good, values, np.inf), axis=1)
    count = good.sum(axis=1)
    lo = np.maximum((count - 1) // 2, 0)[:, None]
    hi = np.maximum(count // 2, 0)[:, None]
    med = 0.5 * (np.take_along_axis(v, lo, axis=1) + np.take_along_axis(v, hi, axis=1))[:, 0]
    return np.where(count > 0, med, np.nan)


def select_central_component(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each patch's ``region`` into 8-connected components; keep the central one.

    The kept component is the one holding the centre pixel or, failing that, the
    one with a pixel nearest the centre.

    Parameters
    ----------
    region : (N, s, s) ndarray of bool

    Returns
    -------
    keep : (N, s, s) ndarray of bool
        The central component of each patch (all False where ``region`` is empty).
    labels : (N, s, s) ndarray of int
        Component labels, unique over all patches (0 = not in ``region``).
    keep_label : (N,) ndarray of int
        Label of the kept component, 0 when none.
    """
    n, s = region.shape[0], region.shape[-1]
    # the patches stacked into one (N (s + 1), s) image, an empty row between patches: 8-connected 2D labels
    # (the same components, numbered in the same raster order, as a 3D labelling without links across patches)
    stacked = np.zeros((n, s + 1, s), dtype=bool)
    stacked[:, :s] = region
    stacked_labels = ndimage.label(stacked.reshape(n * (s + 1), s), structure=_STRUCTURE_8)[0].reshape(n, (s + 1) * s)
    labels = stacked_labels.reshape(n, s + 1, s)[:, :s]
    h = s // 2
    rr, cc = np.indices((s, s))
    dist2 = ((rr - h) ** 2 + (cc - h) ** 2).reshape(-1)
    nearest = np.argmin(np.where(region.reshape(n, -1), dist2, np.iinfo(np.int64).max), axis=1)
    keep_label = stacked_labels[np.arange(n), nearest].astype(np.int64)  # a patch's pixels lead its stacked rows
    keep = (labels == keep_label[:, None, None]) & region
    return keep, labels, keep_label


def _noise(data: np.ndarray, bad: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-patch background noise, counts: the larger of the border pixels' robust
    spread and sqrt(background) (Poisson at unit gain)."""
    n = len(data)
    ring = _border_index(data.shape[-1])
    spread = _masked_median(np.abs(data.reshape(n, -1)[:, ring] - background[:, None]), ~bad.reshape(n, -1)[:, ring])
    return np.maximum(np.nan_to_num(MAD_TO_SIGMA * spread, nan=0.0), np.sqrt(np.maximum(np.abs(background), 1.0)))


_SMOOTH_SIGMA = 0.6  # px, smoothing before the search for merged neighbours


def _smooth_noise_factor(sigma: float) -> float:
    """rms of unit white noise after ``ndimage.gaussian_filter`` with ``sigma``."""
    delta = np.zeros((15, 15))
    delta[7, 7] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum()))


_SMOOTH_NOISE = _smooth_noise_factor(_SMOOTH_SIGMA)


def _max3x3(x: np.ndarray) -> np.ndarray:
    """3 x 3 maximum filter of each (s, s) slice of x (edges: the pixels present)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    rows = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def _split_merged(excess: np.ndarray, keep: np.ndarray, noise: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels of neighbours merged into the central component at the threshold.

    The excess is smoothed (Gaussian, 0.6 px); local maxima of the central
    component at least 2 px from its central maximum (the one nearest the patch
    centre) are neighbours when the smoothed profile dips between them by more
    than 4 times the noise of the difference (a significance test of the
    saddle).  The component is then split by a watershed of the smoothed excess
    from those maxima, and the neighbours' basins are returned.
    """
    from skimage.segmentation import watershed

    s = excess.shape[-1]
    h = s // 2
    out = np.zeros_like(keep)
    big = np.flatnonzero(keep.sum(axis=(1, 2)) >= 5)  # room for two maxima 2 px apart
    if len(big) == 0:
        return out
    sm = ndimage.gaussian_filter(excess[big], sigma=(0, _SMOOTH_SIGMA, _SMOOTH_SIGMA), mode="nearest")
    keep_b = keep[big]
    cand = (sm == _max3x3(sm)) & keep_b
    p, r, c = np.nonzero(cand)
    if len(p) < 2:
        return out
    order = np.lexsort(((r - h) ** 2 + (c - h) ** 2, p))
    p, r, c = p[order], r[order], c[order]
    first = np.ones(len(p), dtype=bool)
    first[1:] = p[1:] != p[:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(len(p)), 0))  # index of each patch's central maximum
    cr, cc = r[head], c[head]
    val = sm[p, r, c]
    noise_p = noise[big][p]
    test = ~first & (np.hypot(r - cr, c - cc) >= 2.0) & (val > 5.0 * _SMOOTH_NOISE * noise_p)
    if not test.any():
        return out
    t = np.linspace(0.0, 1.0, 11)
    pt, rt, ct, crt, cct = p[test], r[test], c[test], cr[test], cc[test]
    path = np.stack([np.repeat(pt, len(t)).astype(float), (crt[:, None] + t * (rt - crt)[:, None]).ravel(),
                     (cct[:, None] + t * (ct - cct)[:, None]).ravel()])
    saddle = ndimage.map_coordinates(sm, path, order=1).reshape(len(pt), len(t)).min(axis=1)
    background_b = background[big]
    gain = np.maximum(noise[big] ** 2 / np.maximum(np.abs(background_b), 1.0), 1.0)
    vt = val[test]
    dnoise = _SMOOTH_NOISE * np.sqrt(2.0 * noise_p[test] ** 2 + gain[pt] * (np.maximum(vt, 0) + np.maximum(saddle, 0)))
    split = np.zeros(len(p), dtype=bool)
    split[np.flatnonzero(test)[vt - saddle > 4.0 * dnoise]] = True
    if not split.any():
        return out
    patches = np.unique(p[split])
    sel = np.isin(p, patches) & (first | split)
    local = np.searchsorted(patches, p[sel])
    markers = np.zeros((len(patches), s, s), dtype=np.int64)
    ids = np.arange(1, sel.sum() + 1)
    markers[local, r[sel], c[sel]] = ids
    central_id = np.zeros(len(patches), dtype=np.int64)
    central_id[local[first[sel]]] = ids[first[sel]]
    basins = watershed(-sm[patches], markers, mask=keep_b[patches], connectivity=_STRUCTURE_2D)
    out[big[patches]] = (basins > 0) & (basins != central_id[:, None, None])
    return out


def _other_peaks(data: np.ndarray, bad: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels of peaks other than the central one, from a local threshold (no labels).

    Components above ``background + 3 noise`` other than the central one count as
    peaks when they have at least 2 pixels and reach ``background + 5 noise``;
    neighbours merged into the central component are split off by
    :func:`_split_merged`.  Their pixels and 8-neighbours (outside the central
    peak) are returned.
    """
    noise = _noise(data, bad, background)
    excess = np.where(bad, 0.0, data - background[:, None, None])
    region = (excess > 3.0 * noise[:, None, None]) & ~bad
    keep, labels, keep_label = select_central_component(region)
    others = region & ~keep
    other = np.zeros_like(region)
    if others.any():
        nlab = int(labels.max())
        lab = labels[others]
        npix = np.bincount(lab, minlength=nlab + 1)
        strong = others & (excess >= 5.0 * noise[:, None, None])
        is_peak = (npix >= 2) & (np.bincount(labels[strong], minlength=nlab + 1) > 0)
        is_peak[0] = False
        other = is_peak[labels]
    merged = _split_merged(excess, keep, noise, background)
    other |= merged
    keep &= ~merged
    hit = other.any(axis=(1, 2))
    if hit.any():
        other[hit] = ndimage.binary_dilation(other[hit], structure=_STRUCTURE_2D) & ~keep[hit]
    return other


def remove_other_peaks(data, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove the pixels of peaks other than the central one from patches.

    The same deblending as :func:`extract_patches` without labels: connected
    components above a local threshold (background + 3 noise), neighbours merged
    into the central component split off by a significance-tested watershed of
    the smoothed patch; other peaks' pixels (grown by one pixel) are masked and
    replaced by the local background.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts.
    mask : (N, s, s) array_like of bool, optional
        True = unusable pixel.

    Returns
    -------
    data : (N, s, s) ndarray of float32
        Patches with removed pixels replaced by the local background.
    mask : (N, s, s) ndarray of bool
        The input mask plus the removed pixels.
    overlapping : (N,) ndarray of bool
        True where pixels were removed.
    """
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data) if mask is None else (np.asarray(mask, dtype=bool) | ~np.isfinite(data))
    if len(data) == 0:
        return data.copy(), bad, np.zeros(0, dtype=bool)
    other = _other_peaks(data, bad, patch_background(data, bad))
    removed = bad | other
    background = patch_background(data, removed)
    return (np.where(removed, background[:, None, None].astype(np.float32), data), removed,
            other.any(axis=(1, 2)))


def extract_patches(
    frame: np.ndarray,
    table: pd.DataFrame,
    *,
    size: int = 11,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    saturation: float | None = None,
) -> Patches:
    """Cut an (s, s) patch around each peak of ``table``.

    Patches are centred on the pixel nearest ``table.row``, ``table.col``.
    Patches reaching past the detector edge are padded (pixels masked) and
    flagged EDGE, never dropped.  The work is vectorised over peaks (fancy
    indexing of the frame; connected components of all patches at once).

    Parameters
    ----------
    frame : (H, W) ndarray
        Detector frame, counts.  Non-finite pixels are treated as masked.
    table : pandas.DataFrame
        Peak table with ``row`` and ``col`` (px, pixel centres on integers).
    size : int
        Patch side s, odd, px.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    labels : (H, W) ndarray of int, optional
        The finder's label image: label k (1-based) is the region of table row
        k - 1, 0 is background.  Pixels with another peak's label are removed and
        the peak is flagged OVERLAPPING.  Without labels each patch is split into
        connected components above a local threshold (background + 3 noise);
        components other than the central one that are clearly peaks (>= 2
        pixels, reaching background + 5 noise) and neighbours merged into the
        central component (split off by a significance-tested watershed, see
        :func:`remove_other_peaks`) are removed, grown by one pixel.
    saturation : float, optional
        Counts at or above which a pixel is saturated (flag SATURATED).

    Returns
    -------
    patches : Patches
        ``data`` (N, s, s) float32, ``mask`` (N, s, s) bool, ``origin`` (N, 2)
        int64, ``flags`` (N,) uint32, ``background`` (N,) float64.

    Raises
    ------
    BraggflowError
        If ``size`` is not an odd integer >= 3, ``frame`` is not 2D, ``mask`` or
        ``labels`` do not match its shape, or the table lacks finite row/col.
    """
    frame, rows, cols, size = check_patch_inputs(frame, table, size=size, mask=mask, labels=labels)
    return patches_at(frame, rows, cols, size=size, mask=mask, labels=labels, saturation=saturation)


def check_patch_inputs(frame, table: pd.DataFrame, *, size, mask=None, labels=None):
    """Check the inputs of :func:`extract_patches`.

    Returns
    -------
    frame : (H, W) ndarray
    rows, cols : (N,) ndarray of float64
        The table's ``row`` and ``col``, px.
    size : int

    Raises
    ------
    BraggflowError
        As :func:`extract_patches` says.
    """
    frame, size = _check_frame(frame, size, mask, labels)
    if "row" not in table.columns or "col" not in table.columns:
        raise BraggflowError("table must have 'row' and 'col' columns (peak positions, px)")
    return _checked_positions(frame, table["row"].to_numpy(dtype=float), table["col"].to_numpy(dtype=float), size)


def check_patch_arrays(frame, rows, cols, *, size, mask=None, labels=None):
    """:func:`check_patch_inputs` for peak positions given as arrays (a table's ``row`` and ``col``).

    Parameters
    ----------
    frame : (H, W) array_like
    rows, cols : (N,) array_like of float
        Peak positions, px.
    size : int
        Patch side, odd, px.
    mask, labels : (H, W) array_like, optional

    Returns
    -------
    frame : (H, W) ndarray
    rows, cols : (N,) ndarray of float64
    size : int

    Raises
    ------
    BraggflowError
        As :func:`extract_patches` says.
    """
    frame, size = _check_frame(frame, size, mask, labels)
    return _checked_positions(frame, np.asarray(rows, dtype=float), np.asarray(cols, dtype=float), size)


def _check_frame(frame, size, mask, labels):
    """The checked patch ``size`` and a 2D ``frame`` whose shape ``mask`` and ``labels`` share."""
    size = check_patch_size(size)
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be a 2D array (H, W), got shape {frame.shape}")
    for name, arr in (("mask", mask), ("labels", labels)):
        if arr is not None and np.shape(arr) != frame.shape:
            raise BraggflowError(f"{name} has shape {np.shape(arr)}, expected the frame's shape {frame.shape}")
    return frame, size


def _checked_positions(frame, rows, cols, size):
    """``check_patch_inputs``'s result, after checking that the positions are finite."""
    if not (np.isfinite(rows).all() and np.isfinite(cols).all()):
        raise BraggflowError("table row/col must be finite to cut patches")
    return frame, rows, cols, size


def patches_at(
    frame: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    size: int,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    relabel: np.ndarray | None = None,
    saturation: float | None = None,
) -> Patches:
    """:func:`extract_patches` on arrays already checked: finite ``rows``, ``cols`` (N,), odd ``size``.

    ``relabel``, optional, maps the label image's values to the labels used
    (``relabel[labels]``; peak k of ``rows`` is label k + 1, 0 stays
    background), applied to the patches only.
    """
    n = len(rows)
    height, width = frame.shape
    h = size // 2
    offs = np.arange(size) - h
    r0 = np.rint(rows).astype(np.int64)
    c0 = np.rint(cols).astype(np.int64)
    if n and labels is not None and _compiled_patches(frame, labels):
        return _patches_compiled(frame, r0, c0, size, mask, labels, relabel, saturation)
    edge = (r0 < h) | (r0 + h >= height) | (c0 < h) | (c0 + h >= width)  # the patch reaches past the frame
    inside = None  # every pixel of every patch inside the frame
    if edge.any():  # the pixels inside, set patch by patch for those at the edge only
        at = np.flatnonzero(edge)
        rr = r0[at, None] + offs  # (E, s)
        cc = c0[at, None] + offs
        inside = np.ones((n, size, size), dtype=bool)
        inside[at] = ((rr >= 0) & (rr < height))[:, :, None] & ((cc >= 0) & (cc < width))[:, None, :]
    counts = cut_windows(frame, r0, c0, h, 0)
    data = counts.astype(np.float32, copy=False)
    flags = np.zeros(n, dtype=np.uint32)
    flags[edge] |= np.uint32(Flag.EDGE)
    bad = ~np.isfinite(data)
    if inside is not None:
        bad |= ~inside
    if mask is not None:
        bad |= cut_windows(np.asarray(mask, dtype=bool), r0, c0, h, False)
    masked = bad if inside is None else bad & inside
    flags[masked.any(axis=(1, 2))] |= np.uint32(Flag.MASKED_NEIGHBOUR)
    own = None
    if n and labels is not None:
        lab = cut_windows(np.asarray(labels), r0, c0, h, 0)
        if relabel is not None:
            lab = relabel[lab]
        own = lab == np.arange(1, n + 1)[:, None, None]
        other = (lab != 0) & ~own & ~bad  # the pixels outside the frame are bad
        background = None
    elif n:
        background = patch_background(data, bad)
        other = _other_peaks(data, bad, background)
    else:
        other = np.zeros_like(bad)
        background = np.zeros(0)
    overlapping = other.any(axis=(1, 2))
    flags[overlapping] |= np.uint32(Flag.OVERLAPPING)
    removed = bad | other
    if saturation is not None:
        sat = (data >= saturation) & ~removed
        flags[sat.any(axis=(1, 2))] |= np.uint32(Flag.SATURATED)
    if background is None:
        background = patch_background(data, removed)
    elif overlapping.any():
        background[overlapping] = patch_background(data[overlapping], removed[overlapping])
    no_bg = removed.reshape(n, size * size)[:, _border_index(size)].all(axis=1)
    flags[no_bg] |= np.uint32(Flag.BAD_BACKGROUND)
    data = np.where(removed, background[:, None, None].astype(np.float32), data)
    origin = np.stack([r0 - h, c0 - h], axis=1).astype(np.int64) if n else np.zeros((0, 2), dtype=np.int64)
    return Patches(data=data, mask=removed, origin=origin, flags=flags, background=background, own=own,
                   counts=counts)


#: Cut patches with labels by the compiled loop (:func:`braggflow.locate._kernels.cut_patches`).
_COMPILED = True


def _compiled_patches(frame: np.ndarray, labels) -> bool:
    """Whether :func:`patches_at` takes ``frame`` and ``labels`` through the compiled loop."""
    return (_COMPILED and isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.dtype.isnative
            and frame.dtype.kind in "iuf" and frame.dtype.isnative)


def _patches_compiled(frame, r0, c0, size, mask, labels, relabel, saturation) -> Patches:
    """:func:`patches_at` with the finder's labels by :func:`braggflow.locate._kernels.cut_patches`: the same
    values, each patch read from the frame, mask and label images once."""
    from braggflow.locate._kernels import cut_patches

    h = size // 2
    use_mask, use_relabel = mask is not None, relabel is not None
    bits = np.array([Flag.EDGE, Flag.MASKED_NEIGHBOUR, Flag.OVERLAPPING, Flag.SATURATED, Flag.BAD_BACKGROUND],
                    dtype=np.uint32)
    counts, data, removed, own, flags, background, _ = cut_patches(
        frame, np.asarray(mask, dtype=bool) if use_mask else _NO_IMAGE, use_mask, labels,
        np.asarray(relabel, dtype=np.int64) if use_relabel else _NO_RELABEL, use_relabel, r0, c0, size,
        _saturation_level(saturation), saturation is not None, bits)
    origin = np.stack([r0 - h, c0 - h], axis=1).astype(np.int64)
    return Patches(data=data, mask=removed, origin=origin, flags=flags, background=background, own=own,
                   counts=counts)


def _saturation_level(saturation) -> float:
    """The level that float32 patch values, taken to float64, are compared with as NumPy compares them with
    ``saturation`` (a Python number in float32, a NumPy float64 in float64); 0 for None."""
    if saturation is None:
        return 0.0
    if np.result_type(np.float32, saturation) == np.float32:
        return float(np.float32(saturation))
    return float(saturation)


_NO_IMAGE = np.zeros((1, 1), dtype=bool)
_NO_RELABEL = np.zeros(1, dtype=np.int64)
