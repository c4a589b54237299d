"""Peak finding: candidate Bragg peaks with their regions and a detection score.

Two methods share one engine:

``components`` (default)
    Pixels above ``background + threshold_sigma x noise`` (background and noise
    estimated per tile, so the threshold adapts to each frame) are grouped into
    8-connected components.  A component with several local maxima is split
    by a watershed from those maxima; two maxima stay separate only when the
    dip between them is significant under Poisson statistics (deeper than
    ``split_sigma`` standard deviations of the counts at the saddle).  The score
    is the detection SNR of the region against the tile background.  A weak
    region (SNR below ``local_snr_below``) is measured again against the
    median of a ring of pixels around it (an annulus background, as in
    aperture photometry): it is dropped unless its highest pixel passes the
    threshold and its SNR passes ``min_snr`` above that level.  Noise
    on the Lorentzian wings of a bright peak rises above the tile threshold
    but not above its own surroundings.
``persistence``
    The "topology" method of findpeaks: 0-dimensional persistent homology of
    the upper level sets above a low level (background + 3 noise sigma).  Each
    maximum is born at its height and dies where its region merges with that
    of a higher maximum (elder rule); the difference is its persistence.
    Maxima with persistence >= ``min_persistence`` are peaks; the score is the
    persistence in counts.

The per-component work runs only where a component holds more than one
maximum, so a frame with ~100 isolated peaks costs a few full-frame passes.

References
----------
.. [1] H. Edelsbrunner, D. Letscher, A. Zomorodian, "Topological persistence and
   simplification", Discrete Comput. Geom. 28, 511 (2002).
.. [2] A. Barty et al., "Cheetah: software for high-throughput reduction and
   analysis of serial femtosecond X-ray diffraction data", J. Appl. Cryst. 47,
   1118 (2014) (peakfinder8: local thresholds from a robust noise estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from braggflow._stats import nanmedian_last
from braggflow.errors import BraggflowError
from braggflow.find.options import FindConfig
from braggflow.schema import empty_peak_table, new_peak_table

__all__ = ["Background", "Regions", "estimate_background", "find_peaks", "is_sparse", "region_centroids"]

_MAD_TO_SIGMA = 1.4826
#: The persistence method builds its level sets above background + this many noise sigma
#: (lower levels join noise into frame-spanning clusters and cost far more than they add).
PERSISTENCE_BASE_SIGMA = 3.0
#: px between a weak region's bounding box and the ring whose median is its local background
LOCAL_RING_MARGIN = 3
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Background:
    """Coarse background and noise maps of one frame.

    Attributes
    ----------
    level : (TY, TX) ndarray of float
        Robust background (median) per tile, counts/px.
    noise : (TY, TX) ndarray of float
        Robust noise (1.4826 x MAD, floored by Poisson sqrt(gain x level) and by
        one photon, ``gain``) per tile, counts.
    tile : int
        Tile side, px.
    shape : (int, int)
        Frame shape (H, W).
    """

    level: np.ndarray
    noise: np.ndarray
    tile: int
    shape: tuple[int, int]

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Expand a (TY, TX) tile map to the (H, W) frame, px by px."""
        h, w = self.shape
        return np.repeat(np.repeat(values, self.tile, axis=0), self.tile, axis=1)[:h, :w]

    def at(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Tile-map values (default: ``level``) at integer pixel positions."""
        values = self.level if values is None else values
        return values[np.asarray(rows) // self.tile, np.asarray(cols) // self.tile]


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
    tiles : Background or None
        The finder's background and noise maps (None for an empty frame).
    """

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    signal: np.ndarray
    noise: np.ndarray
    tiles: "Background | None" = None

    @classmethod
    def empty(cls) -> "Regions":
        """Regions of a frame with no peak."""
        f, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return cls(i, i, i, i, f, f)


def _region_boxes(final: np.ndarray, rows: np.ndarray, cols: np.ndarray, nreg: int) -> dict[str, np.ndarray]:
    """Bounding box of each region id of ``final`` (per-pixel region ids)."""
    out = {}
    for first, size, coord in (("top", "height", rows), ("left", "width", cols)):
        lo = np.full(nreg, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(nreg, -1, dtype=np.int64)
        np.minimum.at(lo, final, coord)
        np.maximum.at(hi, final, coord)
        out[first], out[size] = lo, hi - lo + 1
    return out


def _ring_medians(frame: np.ndarray, mask: np.ndarray | None, top, left, height, width, margin: int) -> np.ndarray:
    """Median of the unmasked pixels on the border of each box grown by ``margin`` px (NaN: none).

    ``top, left, height, width`` are (K,) integer arrays (a region's bounding
    box); the ring is clipped to the frame.
    """
    h, w = frame.shape
    out = np.full(len(top), np.nan)
    for k, (t, l, hh, ww) in enumerate(zip(top, left, height, width)):
        r0, r1 = max(t - margin, 0), min(t + hh + margin, h)  # half-open
        c0, c1 = max(l - margin, 0), min(l + ww + margin, w)
        box = frame[r0:r1, c0:c1]
        ring = np.ones(box.shape, dtype=bool)
        ring[1:-1, 1:-1] = False
        if mask is not None:
            ring &= ~mask[r0:r1, c0:c1]
        if ring.any():
            out[k] = float(np.median(box[ring]))
    return out


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
        background under each pixel (``regions.tiles``), which follows the
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
    from scipy import ndimage

    h, w = frame.shape
    names = ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col")
    out = {name: np.full(len(index), np.nan) for name in names}
    for j, k in enumerate(np.asarray(index, dtype=np.intp)):
        r0, c0 = max(int(regions.top[k]) - 1, 0), max(int(regions.left[k]) - 1, 0)
        r1 = min(int(regions.top[k] + regions.height[k]) + 1, h)
        c1 = min(int(regions.left[k] + regions.width[k]) + 1, w)
        lab = labels[r0:r1, c0:c1]
        own = lab == k + 1
        grown = ndimage.binary_dilation(own, structure=_EIGHT) & ((lab == 0) | own)
        if mask is not None:
            grown &= ~mask[r0:r1, c0:c1]
        rr, cc = np.nonzero(grown)
        counts = frame[r0:r1, c0:c1][rr, cc].astype(np.float64)
        if background is not None:
            level, noise = background[j], regions.noise[k]
        else:
            level, noise = regions.tiles.at(rr + r0, cc + c0), regions.tiles.at(rr + r0, cc + c0, values=regions.tiles.noise)
        excess = counts - level
        total = excess.sum()
        if not total > 0:
            continue
        var = noise**2 + gain * np.clip(excess, 0, None)
        row, col = (excess * rr).sum() / total, (excess * cc).sum() / total
        dr, dc = rr - row, cc - col
        out["row"][j], out["col"][j] = row + r0, col + c0
        out["row_err"][j] = np.sqrt((var * dr * dr).sum()) / total
        out["col_err"][j] = np.sqrt((var * dc * dc).sum()) / total
        out["rc_cov"][j] = (var * dr * dc).sum() / total**2
        out["sigma_row"][j] = np.sqrt(max((excess * dr * dr).sum() / total, 0.0))
        out["sigma_col"][j] = np.sqrt(max((excess * dc * dc).sum() / total, 0.0))
    return out


def estimate_background(
    frame: np.ndarray, *, mask: np.ndarray | None = None, tile: int = 64, gain: float = 1.0, samples: int = 16
) -> Background:
    """Estimate the background level and noise of a frame on coarse tiles.

    Each ``tile x tile`` block is subsampled to about ``samples x samples``
    pixels (a median of a whole 2048 x 2048 frame costs ~40 ms; this costs a
    few ms); masked pixels are ignored.  The tile maps are median-filtered over
    3 x 3 tiles so that tiles crowded with peaks or crossed by a ring borrow
    from their neighbours.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    tile : int
        Tile side, px.
    gain : float
        ADU per photon; Poisson noise floor sqrt(gain x level), and at least
        ``gain`` (one photon).
    samples : int
        Samples per tile side.

    Returns
    -------
    background : Background

    Raises
    ------
    BraggflowError
        If ``tile`` < 2 or the frame is not 2D.
    """
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be 2D, got shape {frame.shape}")
    if tile < 2:
        raise BraggflowError(f"find.tile must be >= 2 px, got {tile}")
    h, w = frame.shape
    step = max(1, tile // samples)
    per = tile // step  # samples per tile side
    sub = frame[::step, ::step].astype(np.float32)
    if mask is not None:
        sub = np.where(mask[::step, ::step], np.nan, sub)
    ty, tx = -(-h // tile), -(-w // tile)
    complete = sub.shape[0] >= ty * per and sub.shape[1] >= tx * per
    if complete:
        blocks = sub[: ty * per, : tx * per]
    else:
        blocks = np.full((ty * per, tx * per), np.nan, dtype=np.float32)
        blocks[: sub.shape[0], : sub.shape[1]] = sub[: ty * per, : tx * per]
    blocks = blocks.reshape(ty, per, tx, per).transpose(0, 2, 1, 3).reshape(ty, tx, per * per)
    if complete and mask is None:
        level = np.median(blocks, axis=2)
        mad = np.median(np.abs(blocks - level[:, :, None]), axis=2)
    else:
        level = nanmedian_last(blocks)
        mad = nanmedian_last(np.abs(blocks - level[:, :, None]))
    noise = _MAD_TO_SIGMA * mad
    # tiles with no good pixel take the frame's typical values
    fill_level = np.nanmedian(level) if np.isfinite(level).any() else 0.0
    fill_noise = np.nanmedian(noise) if np.isfinite(noise).any() else 0.0
    level = np.where(np.isfinite(level), level, fill_level)
    noise = np.where(np.isfinite(noise), noise, fill_noise)
    if min(ty, tx) >= 3:
        level = ndimage.median_filter(level, size=3, mode="nearest")
        noise = ndimage.median_filter(noise, size=3, mode="nearest")
    noise = np.maximum(noise, np.sqrt(gain * np.clip(level, 0, None)))
    noise = np.maximum(noise, gain)
    return Background(level=level.astype(np.float64), noise=noise.astype(np.float64), tile=tile, shape=(h, w))


def is_sparse(frame: np.ndarray, mask: np.ndarray | None = None, *, fraction: float = 0.5) -> bool:
    """Whether a frame was thresholded upstream: more than ``fraction`` of its good pixels are exactly 0.

    Sampled on every 7th pixel of every 7th row (cheap).  Photon-counting frames
    with a very low background can also qualify; for them single-pixel peaks
    are kept too, which is what a thresholded frame needs.

    Parameters
    ----------
    frame : (H, W) ndarray
    mask : (H, W) ndarray of bool, optional
    fraction : float

    Returns
    -------
    sparse : bool
    """
    sub = frame[::7, ::7]
    good = ~mask[::7, ::7] if mask is not None else np.ones(sub.shape, bool)
    n = good.sum()
    return bool(n and ((sub == 0) & good).sum() > fraction * n)


def _sparse_components(flat_index: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """8-connected components of a sparse set of pixels, as (component id 1..n per pixel, n).

    Works on the sorted flat indices of the pixels above threshold, so the cost
    grows with their number, not with the frame size (a full-frame
    ``ndimage.label`` costs ~20 ms on 2048 x 2048).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = flat_index.size
    cols = flat_index % width
    src, dst = [], []
    # neighbours "after" each pixel in raster order: right, down-left, down, down-right
    for offset, dc in ((1, 1), (width - 1, -1), (width, 0), (width + 1, 1)):
        target = flat_index + offset
        pos = np.searchsorted(flat_index, target)
        pos_c = np.minimum(pos, n - 1)
        hit = (flat_index[pos_c] == target) & (cols + dc >= 0) & (cols + dc < width)
        src.append(np.flatnonzero(hit))
        dst.append(pos_c[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    ncomp, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64) + 1, int(ncomp)


def _local_maxima(values: np.ndarray, flat_index: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Boolean: pixel (of the list) is >= its 8 neighbours (outside the frame counts as -inf)."""
    h, w = frame.shape
    rows, cols = np.divmod(flat_index, w)
    is_max = np.ones(len(values), dtype=bool)
    flat = frame.ravel()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            nb = np.full(len(values), -np.inf, dtype=np.float64)
            nb[inside] = flat[r[inside] * w + c[inside]]
            # strict for "earlier" neighbours breaks ties on plateaus: one maximum per plateau
            if (dr, dc) < (0, 0):
                is_max &= values > nb
            else:
                is_max &= values >= nb
    return is_max


def _may_split(sub: np.ndarray, rows: np.ndarray, cols: np.ndarray, peaks: np.ndarray, keep) -> bool:
    """Whether any but the highest of a component's maxima can survive the elder rule.

    A maximum dies at the highest saddle joining it to a higher maximum; the
    minimum of ``sub`` along the straight 8-connected line between the two is a
    lower bound of that saddle (``sub`` is -inf outside the component, so a line
    leaving it bounds nothing).  ``keep(peak, saddle)`` is monotone: false at a
    lower bound means false at the saddle itself.  When every maximum fails at
    its bound no split is possible and the watershed can be skipped.

    Parameters
    ----------
    sub : (h, w) ndarray of float
        Component bounding box, -inf outside the component.
    rows, cols : (M,) ndarray of int
        Maxima in ``sub``, in order of descending ``peaks``.
    peaks : (M,) ndarray of float
    keep : callable(peak_value, saddle_value) -> bool
    """
    for i in range(1, len(peaks)):
        bound = -np.inf
        for j in range(i):
            n = max(abs(int(rows[i]) - int(rows[j])), abs(int(cols[i]) - int(cols[j])))
            t = np.arange(n + 1) / n
            rr = np.rint(rows[i] + t * (rows[j] - rows[i])).astype(int)
            cc = np.rint(cols[i] + t * (cols[j] - cols[i])).astype(int)
            bound = max(bound, float(sub[rr, cc].min()))
        if not math.isfinite(bound) or keep(peaks[i], bound):
            return True
    return False


def _merge_basins(sub: np.ndarray, basins: np.ndarray, peaks: np.ndarray, keep) -> tuple[np.ndarray, np.ndarray]:
    """Elder-rule merging of watershed basins (persistence within one component).

    Parameters
    ----------
    sub : (h, w) ndarray of float
        Pixel values of the component's bounding box.
    basins : (h, w) ndarray of int
        Watershed labels 1..M (0 outside the component).
    peaks : (M,) ndarray of float
        Peak value of each basin (label m -> peaks[m - 1]).
    keep : callable(peak_value, saddle_value) -> bool
        Whether a maximum that meets a higher one at ``saddle_value`` survives.

    Returns
    -------
    owner : (M + 1,) ndarray of int
        Surviving basin label that each basin belongs to (index by label).
    persistence : (M + 1,) ndarray of float
        Persistence of each surviving basin's maximum (NaN for merged ones;
        ``inf`` for the component's highest maximum).
    """
    m = len(peaks)
    lo_list, hi_list, s_list = [], [], []
    slices = [
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
        ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
        ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),
    ]
    for sa, sb in slices:
        la, lb = basins[sa], basins[sb]
        edge = (la > 0) & (lb > 0) & (la != lb)
        if edge.any():
            lo_list.append(np.minimum(la[edge], lb[edge]))
            hi_list.append(np.maximum(la[edge], lb[edge]))
            s_list.append(np.minimum(sub[sa][edge], sub[sb][edge]))
    parent = np.arange(m + 1)
    owner = np.arange(m + 1)
    persistence = np.full(m + 1, np.nan)
    if not lo_list:
        persistence[1:] = np.inf
        return owner, persistence
    lo, hi, sad = np.concatenate(lo_list), np.concatenate(hi_list), np.concatenate(s_list)
    key = lo * (m + 1) + hi
    order = np.lexsort((-sad, key))
    key, sad = key[order], sad[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, sad = key[first], sad[first]  # highest saddle of each basin pair
    lo, hi = np.divmod(key, m + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    alive = np.ones(m + 1, dtype=bool)
    alive[0] = False
    for idx in np.argsort(-sad, kind="stable"):
        ra, rb = root(int(lo[idx])), root(int(hi[idx]))
        if ra == rb:
            continue
        elder, younger = (ra, rb) if peaks[ra - 1] >= peaks[rb - 1] else (rb, ra)
        parent[younger] = elder
        if not keep(peaks[younger - 1], float(sad[idx])):
            alive[younger] = False
            owner[younger] = elder
        else:
            persistence[younger] = peaks[younger - 1] - float(sad[idx])
    # follow chains of merged basins to a surviving one
    for i in range(1, m + 1):
        j = i
        while not alive[j]:
            j = owner[j]
        owner[i] = j
    for i in range(1, m + 1):
        if alive[i] and np.isnan(persistence[i]):
            persistence[i] = np.inf
    return owner, persistence


def find_peaks(
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    config: FindConfig | None = None,
    gain: float = 1.0,
    background: Background | None = None,
    return_labels: bool = False,
    return_regions: bool = False,
):
    """Find Bragg peaks in a corrected frame.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel; never part of a peak.
    config : FindConfig, optional
        Method and thresholds (defaults adapt to the frame's own noise).
    gain : float
        ADU per photon, for the Poisson noise floor and the detection SNR.
    background : Background, optional
        Precomputed background; estimated from the frame when None.
    return_labels : bool
        Also return the label image.
    return_regions : bool
        Also return the regions' bounding boxes and signals (:class:`Regions`,
        aligned with the table's rows), computed from the pixel list at little
        cost.

    Returns
    -------
    table : pandas.DataFrame
        One row per peak (peak-table schema): ``row``, ``col`` of the peak's
        highest pixel (integers), ``peak_value``, ``npix``, ``score``,
        ``background`` (tile level, counts/px); sorted by descending score.
    labels : (H, W) ndarray of int32
        Only with ``return_labels``: label k (1-based) marks the pixels of
        table row k - 1; 0 elsewhere.
    regions : Regions
        Only with ``return_regions`` (after ``labels`` when both are asked).

    Raises
    ------
    BraggflowError
        If the frame is not 2D or the mask has another shape.
    """
    config = config or FindConfig()
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be 2D, got shape {frame.shape}")
    if mask is not None and mask.shape != frame.shape:
        raise BraggflowError(f"mask has shape {mask.shape}, expected the frame shape {frame.shape}")
    h, w = frame.shape
    bg = background or estimate_background(frame, mask=mask, tile=config.tile, gain=gain)

    if config.method == "persistence":
        level_sigma = PERSISTENCE_BASE_SIGMA
    else:
        level_sigma = config.threshold_sigma
    if config.threshold is not None and config.method != "persistence":
        thr_tiles = bg.level + config.threshold
    else:
        thr_tiles = bg.level + level_sigma * bg.noise
    if h % bg.tile == 0 and w % bg.tile == 0:
        above = frame.reshape(h // bg.tile, bg.tile, w // bg.tile, bg.tile) > thr_tiles[:, None, :, None]
        above = above.reshape(h, w)
    else:
        above = frame > bg.expand(thr_tiles)
    if mask is not None:
        above &= ~mask

    flat_index = np.flatnonzero(above)

    def result(table, labels, regions):
        out = (table,) + ((labels,) if return_labels else ()) + ((regions,) if return_regions else ())
        return out if len(out) > 1 else table

    if flat_index.size == 0:
        return result(empty_peak_table(), np.zeros((h, w), dtype=np.int32), Regions.empty())
    comp_of, ncomp = _sparse_components(flat_index, w)
    # defaults; on frames thresholded upstream every stored pixel already passed a threshold: single pixels are peaks
    sparse = config.sparse == "yes" or (config.sparse == "auto" and is_sparse(frame, mask))
    min_size = config.min_size if config.min_size is not None else (1 if sparse else 2)
    min_snr = config.min_snr if config.min_snr is not None else (0.0 if sparse else 3.0)
    values = frame.ravel()[flat_index].astype(np.float64)

    # local maxima, then greedy suppression within min_separation (only where a component has several)
    is_max = _local_maxima(values, flat_index, frame)
    n_max = np.bincount(comp_of[is_max], minlength=ncomp + 1)
    final = comp_of.astype(np.int64)  # final region id per above-threshold pixel; start: component id
    next_id = ncomp + 1
    persistence_of: dict[int, float] = {}
    pix_rows, pix_cols = np.divmod(flat_index, w)
    tile_noise = bg.at(pix_rows, pix_cols, values=bg.noise)
    tile_level = bg.at(pix_rows, pix_cols)

    multi = np.flatnonzero(n_max > 1)
    if multi.size:
        order = np.argsort(comp_of, kind="stable")
        sorted_comp = comp_of[order]
        starts = np.searchsorted(sorted_comp, multi, side="left")
        stops = np.searchsorted(sorted_comp, multi, side="right")
        from skimage.segmentation import watershed

        for cid, a, b in zip(multi, starts, stops):
            members = order[a:b]
            rows, cols = np.divmod(flat_index[members], w)
            r0, c0 = rows.min(), cols.min()
            sub_mask = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), dtype=bool)
            sub_mask[rows - r0, cols - c0] = True
            sub = np.where(sub_mask, frame[r0 : r0 + sub_mask.shape[0], c0 : c0 + sub_mask.shape[1]], -np.inf)
            mx = members[is_max[members]]
            mx = mx[np.argsort(-values[mx], kind="stable")]
            kept: list[int] = []
            mr, mc = np.divmod(flat_index[mx], w)
            for i in range(len(mx)):
                if all((mr[i] - mr[j]) ** 2 + (mc[i] - mc[j]) ** 2 >= config.min_separation**2 for j in kept):
                    kept.append(i)
            if len(kept) < 2:
                continue
            peaks = values[mx[kept]]
            lvl = float(tile_level[mx[0]])  # tile background and noise at the component's highest pixel
            nse = float(tile_noise[mx[0]])
            if config.method == "persistence":
                h_min = config.min_persistence if config.min_persistence is not None else config.threshold_sigma * nse

                def keep(peak, saddle, h_min=h_min):
                    return peak - saddle >= h_min
            else:
                k_split = config.split_sigma

                def keep(peak, saddle, lvl=lvl, nse=nse, k=k_split):
                    # dip significant against the Poisson noise of the counts at the saddle
                    return peak - saddle >= k * np.sqrt(nse**2 + gain * max(saddle - lvl, 0.0))

            if not _may_split(sub, mr[kept] - r0, mc[kept] - c0, peaks, keep):
                continue  # most multi-maximum components: noise on a bright peak's top, no watershed needed
            markers = np.zeros(sub_mask.shape, dtype=np.int32)
            markers[mr[kept] - r0, mc[kept] - c0] = np.arange(1, len(kept) + 1)
            basins = watershed(-np.where(sub_mask, sub, 0.0), markers, mask=sub_mask, connectivity=2)
            owner, pers = _merge_basins(np.where(sub_mask, sub, 0.0), basins, peaks, keep)
            survivors = np.unique(owner[1:])
            if len(survivors) < 2:
                continue
            new_ids = {int(s): (cid if k == 0 else next_id + k - 1) for k, s in enumerate(survivors)}
            next_id += len(survivors) - 1
            lut = np.zeros(len(owner), dtype=np.int64)
            for lab in range(1, len(owner)):
                lut[lab] = new_ids[int(owner[lab])]
            pix_basin = basins[rows - r0, cols - c0]
            final[members] = lut[pix_basin]
            for s in survivors:
                persistence_of[new_ids[int(s)]] = float(pers[int(s)])

    # per-region statistics over the pixel list
    boxes = None  # bounding boxes of all regions, computed once when needed
    nreg = next_id
    npix = np.bincount(final, minlength=nreg)
    excess = values - tile_level
    var = tile_noise**2 + gain * np.clip(excess, 0, None)
    signal = np.bincount(final, weights=excess, minlength=nreg)
    noise = np.sqrt(np.bincount(final, weights=var, minlength=nreg))
    # highest pixel of each region
    order = np.lexsort((-values, final))
    first = np.r_[True, final[order][1:] != final[order][:-1]]
    top = order[first]
    reg_ids = final[top]
    top_r, top_c = np.divmod(flat_index[top], w)
    peak_value = values[top]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = signal[reg_ids] / noise[reg_ids]
    if config.method == "persistence":
        thr_at_top = bg.at(top_r, top_c) + bg.at(top_r, top_c, values=bg.noise)
        score = np.array([persistence_of.get(int(r), np.inf) for r in reg_ids])
        score = np.where(np.isinf(score), peak_value - thr_at_top, score)
        min_pers = config.min_persistence
        if min_pers is None:
            min_pers = config.threshold_sigma * bg.at(top_r, top_c, values=bg.noise)
        good = (score >= min_pers) & (npix[reg_ids] >= min_size)
    else:
        score = snr
        good = (npix[reg_ids] >= min_size) & (snr >= min_snr)
        weak = np.flatnonzero(good & (snr < config.local_snr_below) & (min_snr > 0))
        if weak.size:
            boxes = _region_boxes(final, pix_rows, pix_cols, nreg)
            ids = reg_ids[weak]
            local = _ring_medians(frame, mask, boxes["top"][ids], boxes["left"][ids], boxes["height"][ids],
                                  boxes["width"][ids], LOCAL_RING_MARGIN)
            # the same tests against the ring's level: the highest pixel above the threshold, the region's SNR
            tile_bg = bg.at(top_r[weak], top_c[weak])
            lift = np.nan_to_num(np.clip(local - tile_bg, 0.0, None))  # NaN (no usable ring pixel): no lift
            if config.threshold is not None:
                above_local = peak_value[weak] - (tile_bg + lift) >= config.threshold
            else:
                local_noise = np.sqrt(bg.at(top_r[weak], top_c[weak], values=bg.noise) ** 2 + gain * lift)
                above_local = peak_value[weak] - (tile_bg + lift) >= level_sigma * local_noise
            good[weak] = above_local & ((signal[ids] - npix[ids] * lift) / noise[ids] >= min_snr)
    reg_ids, top_r, top_c, peak_value, score = reg_ids[good], top_r[good], top_c[good], peak_value[good], score[good]
    sort = np.argsort(-score, kind="stable")
    if config.max_peaks is not None:
        sort = sort[: config.max_peaks]
    reg_ids, top_r, top_c, peak_value, score = reg_ids[sort], top_r[sort], top_c[sort], peak_value[sort], score[sort]
    table = new_peak_table(
        len(reg_ids),
        row=top_r.astype(float),
        col=top_c.astype(float),
        peak_value=peak_value,
        npix=npix[reg_ids],
        score=score,
        background=bg.at(top_r, top_c),
    )
    regions = None
    if return_regions:
        if boxes is None:
            boxes = _region_boxes(final, pix_rows, pix_cols, nreg)
        regions = Regions(**{k: v[reg_ids] for k, v in boxes.items()}, signal=signal[reg_ids],
                          noise=bg.at(top_r, top_c, values=bg.noise), tiles=bg)
    labels = None
    if return_labels:
        lut = np.zeros(nreg, dtype=np.int32)
        lut[reg_ids] = np.arange(1, len(reg_ids) + 1, dtype=np.int32)
        labels = np.zeros((h, w), dtype=np.int32)
        labels.ravel()[flat_index] = lut[final]
    return result(table, labels, regions)
