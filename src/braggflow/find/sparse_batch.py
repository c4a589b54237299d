"""Peaks of many thresholded frames at once, from their stored pixels alone (ImageD11 sparse scans).

A scan thresholded upstream (an ImageD11 sparse file) holds a few pixels a
frame; making each frame dense and running :func:`braggflow.find.find_peaks`
on it costs milliseconds a frame for microseconds of work.
:func:`find_peaks_in_pixels` takes the stored pixels of a block of frames and
makes the decisions that :func:`~braggflow.find.find_peaks` makes on each of
those frames (with ``sparse`` in force, the method ``components``):

- every stored pixel above ``min(threshold, t)`` is a candidate (``t`` the
  storage threshold of the noise model, the threshold ``threshold_sigma``
  noise sigma or ``threshold``), masked pixels never;
- 8-connected components of the candidates (:func:`~braggflow.find.components.sparse_components`),
  local maxima, splits by the elder rule with the same dip rule
  (:func:`~braggflow.find.split.split_pixel_components`);
- the score ``signal / sqrt(n noise^2 + gain x signal)`` over a background 0,
  ``min_snr`` (default 4), ``min_size`` (default 1), one-pixel regions only
  ``single_pixel_sigma`` noise sigma high, ``max_peaks``;
- the zinger test, an unstored ring pixel counting as ``t``
  (:func:`~braggflow.find.zingers.zinger_regions_at`).

The frames of a block share one flat index: frame ``k`` of the block (its
position in ``frames``) is stacked below frame ``k - 1`` with one empty row
between them, ``flat = (k (H + 1) + row) W + col``, so that no 8-neighbour
crosses from one frame into the next (the empty rows count as bad pixels);
neighbours are looked up by ``searchsorted`` in the sorted flat indices with
row and column bounds checks.

What the batch assumes of a frame, and checks.  The dense finder's tile
background (:func:`~braggflow.find.background.estimate_background`) of a
thresholded frame is 0 with noise ``max(gain, sigma)`` as long as no tile has
half of its sampled pixels stored; a frame with such a tile, or one that
:func:`~braggflow.find.background.is_sparse` would not call thresholded
(``find.sparse: auto``), is not decided here: it comes back in ``dense`` for
``find_peaks``.  So does every frame when ``find.sparse`` is ``no``.

Positions and intensities come from the moments of each region, as ImageD11's
connected-component peak search measures them (``ImageD11/sparseframe.py``:
``sparse_connected_pixels`` labels the stored pixels, ``sparse_moments``
gives each label's pixel count, intensity sum and intensity-weighted first
and second moments through ``cImageD11.sparse_blob2Dproperties``), not with
the patch localizers of :mod:`braggflow.locate`: the centre is the intensity-weighted
centroid of the region's pixels (their values above the background 0), its
errors are propagated from the noise model (``noise^2 + gain x counts`` per
pixel), the intensity is the region's sum and its error the score's
denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.find.components import sparse_components
from braggflow.find.noise import MIN_ISOLATED, ThresholdNoise, fit_threshold_noise
from braggflow.find.options import FindConfig
from braggflow.find.peaks import _region_statistics
from braggflow.find.split import split_pixel_components
from braggflow.find.zingers import MAX_ZINGER_PIXELS, zinger_regions_at
from braggflow.schema import Flag, new_peak_table

__all__ = ["PixelPeaks", "find_peaks_in_pixels", "PEAK_COLUMNS", "MOMENTS_METHOD"]

#: Peak-table columns :func:`find_peaks_in_pixels` fills.
PEAK_COLUMNS = ("frame", "row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col", "peak_value",
                "intensity", "intensity_err", "background", "snr", "score", "npix", "flags")
#: The ``method`` column of the peaks it finds: region moments.
MOMENTS_METHOD = "moments"
#: samples per tile side of the dense finder's background estimate (estimate_background's default)
_TILE_SAMPLES = 16
#: the 8 neighbours; those before the pixel in raster order are compared strictly (one maximum per plateau)
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


@dataclass(frozen=True)
class PixelPeaks:
    """What :func:`find_peaks_in_pixels` finds in a block of frames.

    Attributes
    ----------
    columns : dict of str to (P,) ndarray
        Peak-table columns (:data:`PEAK_COLUMNS`), one entry per peak, by
        frame and, within a frame, by descending score (the order of
        :func:`~braggflow.find.find_peaks`).  ``row``, ``col``: centroid, px;
        ``background``: 0.
    peak_row, peak_col : (P,) ndarray of int64
        The peak's highest pixel, px (the ``row``, ``col`` of ``find_peaks``).
    frames : (F,) ndarray of int64
        The block's frames, ascending.
    dense : (F,) ndarray of bool
        Frames not decided here (see :mod:`braggflow.find.sparse_batch`); their
        entries below are 0 and they have no peak in ``columns``.
    n_peaks, zingers, saturated : (F,) ndarray of int64
        Per frame: peaks, candidate regions dropped as zingers, stored pixels
        flagged saturated.
    background, noise : (F,) ndarray of float64
        Per frame: the background (0) and the noise of one pixel,
        ``max(gain, sigma)``, counts (what ``find_peaks``' tile maps hold).
    """

    columns: dict[str, np.ndarray]
    peak_row: np.ndarray
    peak_col: np.ndarray
    frames: np.ndarray
    dense: np.ndarray
    n_peaks: np.ndarray
    zingers: np.ndarray
    saturated: np.ndarray
    background: np.ndarray
    noise: np.ndarray

    def __len__(self) -> int:
        """Number of peaks found."""
        return len(self.peak_row)

    def peak_table(self) -> pd.DataFrame:
        """The peaks as a peak table (schema of :mod:`braggflow.schema`), ``method`` :data:`MOMENTS_METHOD`.

        Returns
        -------
        table : pandas.DataFrame
        """
        n = len(self)
        method = pd.Series(pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[MOMENTS_METHOD]))
        return new_peak_table(n, **self.columns, method=method)


@dataclass(frozen=True)
class _Block:
    """The stored pixels of a block in the stacked layout, sorted by flat index, duplicates resolved."""

    shape: tuple[int, int]
    frames: np.ndarray
    key: np.ndarray  # (K,) flat index (k (H + 1) + row) W + col, ascending
    local: np.ndarray  # (K,) block position of each pixel's frame
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray  # (K,) float64; NaN = bad
    saturated: np.ndarray  # (K,) bool

    @property
    def stride(self) -> int:
        """Flat-index distance between two frames of the block."""
        return (self.shape[0] + 1) * self.shape[1]


def find_peaks_in_pixels(
    frame_index: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    *,
    shape: tuple[int, int],
    config: FindConfig | None = None,
    threshold_noise: ThresholdNoise | None = None,
    gain: float = 1.0,
    mask: np.ndarray | None = None,
    frames: np.ndarray | None = None,
    saturated: np.ndarray | None = None,
) -> PixelPeaks:
    """Find the peaks of a block of thresholded frames from their stored pixels, as ``find_peaks`` would frame by frame.

    Parameters
    ----------
    frame_index, rows, cols : (K,) array_like of int
        Frame, row and column of each stored pixel (any order; of a pixel
        given twice the last value counts, as in a dense assignment).
    values : (K,) array_like of float
        Corrected counts of the stored pixels (the values ``find_peaks`` would
        read from the corrected frame); NaN or inf marks a bad pixel of its
        frame (masked there, as :func:`braggflow.correct.correct_frame` masks
        non-finite and flagged pixels); 0 is the same as not stored.
    shape : (int, int)
        Frame shape (H, W), px.
    config : FindConfig, optional
        ``method`` must be ``components``.
    threshold_noise : ThresholdNoise, optional
        Noise model of the series (:func:`braggflow.pipeline.measure_series`);
        when None, per frame as ``find_peaks`` makes it (``config.noise``, a
        fit to the frame's isolated pixels, or a third of its smallest value).
    gain : float
        ADU per photon.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel, in every frame.
    frames : (F,) array_like of int, optional
        The block's frames (those without a stored pixel too); default: those of ``frame_index``.
    saturated : (K,) array_like of bool, optional
        Stored pixels at or above the saturation level (raw counts); they flag
        their peaks ``SATURATED`` and are counted per frame.

    Returns
    -------
    found : PixelPeaks

    Raises
    ------
    BraggflowError
        If ``config.method`` is not ``components``, the arrays differ in
        length, a pixel lies outside the frame or in a frame not in
        ``frames``, or the mask has another shape.
    """
    config = config or FindConfig()
    if config.method != "components":
        raise BraggflowError(f"find_peaks_in_pixels: find.method {config.method!r}; only 'components' is done on "
                             "pixel lists")
    block = _block(frame_index, rows, cols, values, shape=shape, mask=mask, frames=frames, saturated=saturated)
    nf = len(block.frames)
    if nf * block.stride * (block.key.size + 2) >= 2**62:
        raise BraggflowError(f"find_peaks_in_pixels: a block of {nf} frames with {block.key.size} pixels is too large "
                             "for one flat index; give fewer frames at a time")
    sat = np.bincount(block.local[block.saturated], minlength=nf).astype(np.int64)
    bad = ~np.isfinite(block.values)
    if mask is not None:
        bad |= mask[block.rows, block.cols]
    good = ~bad & (block.values != 0)
    dense = _not_decided(block, good, bad, mask, config, gain)
    keep = ~dense[block.local]
    t, sigma = _frame_noise(block, good & keep, threshold_noise, config)
    noise = np.maximum(gain, sigma)
    level = config.threshold if config.threshold is not None else config.threshold_sigma * noise
    # every stored pixel of a tile with no background of its own is a candidate: it passed the storage threshold
    level = np.where(0 < t, np.minimum(level, np.nextafter(t, -np.inf)), level)
    cand = np.flatnonzero(good & keep & (block.values > level[block.local]))
    found = _peaks_of_candidates(block, cand, good & keep, bad & keep, mask, noise, t, config, gain)
    sat[dense] = 0
    zeros_f = np.zeros(nf)
    noise = np.where(dense, 0.0, noise)
    return PixelPeaks(**found, frames=block.frames, dense=dense, saturated=sat, background=zeros_f, noise=noise)


def _block(frame_index, rows, cols, values, *, shape, mask, frames, saturated) -> _Block:
    """The pixels in the stacked layout, sorted, the last of duplicates kept; checked."""
    h, w = (int(s) for s in shape)
    frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    rows = np.asarray(rows).astype(np.int64).reshape(-1)
    cols = np.asarray(cols).astype(np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    saturated = np.zeros(values.size, bool) if saturated is None else np.asarray(saturated, bool).reshape(-1)
    if not frame_index.size == rows.size == cols.size == values.size == saturated.size:
        raise BraggflowError(f"find_peaks_in_pixels: frame_index, rows, cols, values (and saturated) differ in length "
                             f"({frame_index.size}, {rows.size}, {cols.size}, {values.size}, {saturated.size})")
    if mask is not None and mask.shape != (h, w):
        raise BraggflowError(f"mask has shape {mask.shape}, expected the frame shape {(h, w)}")
    if rows.size and (rows.min() < 0 or rows.max() >= h or cols.min() < 0 or cols.max() >= w):
        raise BraggflowError(f"find_peaks_in_pixels: a pixel lies outside the frame shape {(h, w)}")
    frames = np.unique(frame_index) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
    if frames.size > 1 and np.any(np.diff(frames) <= 0):
        frames = np.unique(frames)
    local = np.searchsorted(frames, frame_index)
    if frame_index.size and (local.max() >= frames.size or np.any(frames[np.minimum(local, frames.size - 1)]
                                                                  != frame_index)):
        raise BraggflowError("find_peaks_in_pixels: a pixel's frame is not one of frames")
    key = (local * (h + 1) + rows) * w + cols
    order = np.argsort(key, kind="stable")
    key = key[order]
    last = np.r_[key[1:] != key[:-1], True] if key.size else np.zeros(0, bool)
    order = order[last]
    return _Block((h, w), frames, key[last], local[order], rows[order], cols[order], values[order], saturated[order])


def _not_decided(block: _Block, good, bad, mask, config: FindConfig, gain: float) -> np.ndarray:
    """Frames the batch leaves to ``find_peaks``: not thresholded (``is_sparse``), or a tile half stored."""
    nf = len(block.frames)
    if config.sparse == "no":
        return np.ones(nf, dtype=bool)
    h, w = block.shape
    dense = np.zeros(nf, dtype=bool)
    if config.sparse == "auto":  # is_sparse: over half of the good pixels on a 7 px grid are 0
        grid = (block.rows % 7 == 0) & (block.cols % 7 == 0)
        static_good = (~mask[::7, ::7]).sum() if mask is not None else len(range(0, h, 7)) * len(range(0, w, 7))
        n_good = static_good - np.bincount(block.local[grid & bad & ~_static(block, mask)], minlength=nf)
        nonzero = np.bincount(block.local[grid & good], minlength=nf)
        dense |= ~((n_good > 0) & (n_good - nonzero > 0.5 * n_good))
    # estimate_background's tiles: level and MAD are 0 while under half of a tile's valid samples are stored
    tile_of, valid = _sample_tiles(block.rows, block.cols, block.shape, mask, config.tile)
    on = (tile_of >= 0) & (good | (bad & ~_static(block, mask)))
    if on.any():
        key, count = np.unique(block.local[on] * valid.size + tile_of[on], return_counts=True)
        k, tile_id = np.divmod(key, valid.size)
        full = (valid[tile_id] > 0) & (2 * count >= valid[tile_id])
        dense[k[full]] = True
    return dense


def _static(block: _Block, mask) -> np.ndarray:
    """Whether each pixel of the block is masked in every frame."""
    return mask[block.rows, block.cols] if mask is not None else np.zeros(block.key.size, bool)


def _sample_tiles(rows, cols, shape, mask, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of the background samples of :func:`~braggflow.find.background.estimate_background`.

    It samples every ``step``-th pixel of every ``step``-th row and gives
    sample ``(i, j)`` to tile ``(i // per, j // per)`` (``per = tile // step``).

    Returns
    -------
    tile_of : (K,) ndarray of int64
        Tile (raster order) of each pixel that is a sample, -1 for the others.
    valid : (TY * TX,) ndarray of int64
        Unmasked samples of each tile.
    """
    h, w = shape
    step = max(1, tile // _TILE_SAMPLES)
    per = tile // step
    ty, tx = -(-h // tile), -(-w // tile)
    i, j = rows // step, cols // step
    used = (rows % step == 0) & (cols % step == 0) & (i < ty * per) & (j < tx * per)
    tile_of = np.where(used, (i // per) * tx + j // per, -1)
    sample = ~mask[::step, ::step] if mask is not None else np.ones((-(-h // step), -(-w // step)), bool)
    si, sj = np.nonzero(sample[: ty * per, : tx * per])
    return tile_of, np.bincount((si // per) * tx + sj // per, minlength=ty * tx)


def _frame_noise(block: _Block, good, threshold_noise, config: FindConfig) -> tuple[np.ndarray, np.ndarray]:
    """Storage threshold and noise sigma of each frame, as ``find_peaks`` gets them (counts)."""
    nf = len(block.frames)
    if threshold_noise is not None:
        return np.full(nf, float(threshold_noise.threshold)), np.full(nf, float(threshold_noise.sigma))
    positive = good & (block.values > 0)
    t = np.full(nf, np.inf)
    np.minimum.at(t, block.local[positive], block.values[positive])
    t = np.where(np.isfinite(t), t, 1.0)  # a frame with no stored pixel: threshold 1
    if config.noise is not None:
        return t, np.full(nf, float(config.noise))
    sigma = np.maximum(t, 1e-12) / 3.0
    lonely = np.flatnonzero(positive)
    lonely = lonely[~_has_neighbour(block, block.key[positive], lonely)]
    per_frame = np.bincount(block.local[lonely], minlength=nf)
    for k in np.flatnonzero((per_frame >= MIN_ISOLATED) & (t > 0)):
        fit = fit_threshold_noise(block.values[lonely[block.local[lonely] == k]])
        t[k], sigma[k] = fit.threshold, fit.sigma
    return t, sigma


def _neighbours(block: _Block, index: np.ndarray, dr: int, dc: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat index of the (dr, dc) neighbour of pixels ``index`` of the block, and whether it lies in the frame."""
    h, w = block.shape
    r, c = block.rows[index] + dr, block.cols[index] + dc
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return block.key[index] + dr * w + dc, inside


def _find(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query in ``sorted_keys``, -1 where absent."""
    if sorted_keys.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == query, pos, -1)


def _has_neighbour(block: _Block, sorted_keys, index) -> np.ndarray:
    """Whether pixels ``index`` of the block have an 8-neighbour in ``sorted_keys``."""
    out = np.zeros(index.size, dtype=bool)
    for dr, dc in _OFFSETS:
        nb, inside = _neighbours(block, index, dr, dc)
        out |= inside & (_find(sorted_keys, nb) >= 0)
    return out


def _local_maxima(block: _Block, cand, good) -> np.ndarray:
    """``local_maxima`` on the stored pixels: >= the 8 neighbours (0 where not stored or bad, -inf outside)."""
    stored = np.flatnonzero(good)
    keys, vals = block.key[stored], block.values[stored]
    v = block.values[cand]
    is_max = np.ones(cand.size, dtype=bool)
    for dr, dc in _OFFSETS:
        nb, inside = _neighbours(block, cand, dr, dc)
        pos = _find(keys, nb)
        nbv = np.where(pos >= 0, vals[pos], 0.0)
        nbv = np.where(inside, nbv, -np.inf)
        is_max &= (v > nbv) if (dr, dc) < (0, 0) else (v >= nbv)
    return is_max


def _peaks_of_candidates(block: _Block, cand, good, bad, mask, noise, t, config: FindConfig, gain: float) -> dict:
    """Components, splits, scores, selection, zingers and moments of the candidates (``_peaks_from_pixels``)."""
    nf = len(block.frames)
    if cand.size == 0:
        return _no_peaks(nf)
    h, w = block.shape
    comp_of, ncomp = sparse_components(block.key[cand], w)
    values = block.values[cand]
    local = block.local[cand]
    is_max = _local_maxima(block, cand, good)
    tile_noise = noise[local]
    tile_level = np.zeros(cand.size)
    final, nreg, _ = split_pixel_components(w, block.key[cand], values, comp_of, ncomp, is_max, tile_level,
                                            tile_noise, config=config, gain=gain)
    stats = _region_statistics(final, nreg, values, tile_level, tile_noise, gain)
    brightest = stats["brightest"]
    reg_ids = final[brightest]
    peak_value, peak_frame = values[brightest], local[brightest]
    npix, signal, rnoise = stats["npix"], stats["signal"], stats["noise"]
    min_size = config.min_size if config.min_size is not None else 1
    min_snr = config.min_snr if config.min_snr is not None else 4.0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = signal[reg_ids] / rnoise[reg_ids]
    selected = (npix[reg_ids] >= min_size) & (score >= min_snr)
    selected &= (npix[reg_ids] != 1) | (peak_value >= config.single_pixel_sigma * noise[peak_frame])
    zinger = np.zeros(reg_ids.size, dtype=bool)
    if config.zingers:
        small = np.flatnonzero(selected & (npix[reg_ids] <= MAX_ZINGER_PIXELS))
        zinger[small] = _zingers(block, cand, final, reg_ids[small], npix, signal, good, bad, mask, noise, t, config)
        selected &= ~zinger
    order = np.lexsort((-score, peak_frame))  # by frame, then by descending score (stable)
    order = order[selected[order]]
    if config.max_peaks is not None:
        order = order[_rank_in_group(peak_frame[order]) < config.max_peaks]
    moments = _moments(block, cand, final, nreg, tile_noise, gain)
    sat = np.bincount(final, weights=block.saturated[cand], minlength=nreg) > 0
    ids = reg_ids[order]
    snr = signal[ids] / rnoise[ids]
    flags = np.where(sat[ids], np.uint32(Flag.SATURATED), np.uint32(0))
    flags |= np.where(~(snr >= 3), np.uint32(Flag.LOW_SNR), np.uint32(0))
    peak_pos = block.key[cand[brightest[order]]]
    columns = {"frame": block.frames[peak_frame[order]], **{k: v[ids] for k, v in moments.items()},
               "peak_value": peak_value[order], "intensity": signal[ids], "intensity_err": rnoise[ids],
               "background": np.zeros(ids.size), "snr": snr, "score": score[order], "npix": npix[ids],
               "flags": flags}
    return {"columns": columns, "peak_row": (peak_pos // w) % (h + 1), "peak_col": peak_pos % w,
            "n_peaks": np.bincount(peak_frame[order], minlength=nf).astype(np.int64),
            "zingers": np.bincount(peak_frame[zinger], minlength=nf).astype(np.int64)}


def _no_peaks(nf: int) -> dict:
    """The fields of :class:`PixelPeaks` for a block without a candidate."""
    columns = {name: np.zeros(0) for name in PEAK_COLUMNS}
    columns.update(frame=np.zeros(0, np.int64), npix=np.zeros(0, np.int64), flags=np.zeros(0, np.uint32))
    return {"columns": columns, "peak_row": np.zeros(0, np.int64), "peak_col": np.zeros(0, np.int64),
            "n_peaks": np.zeros(nf, np.int64), "zingers": np.zeros(nf, np.int64)}


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of ``groups`` (sorted)."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.r_[True, groups[1:] != groups[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(groups.size), 0))
    return np.arange(groups.size) - first


def _zingers(block: _Block, cand, final, ids, npix, signal, good, bad, mask, noise, t, config: FindConfig):
    """The zinger test on regions ``ids`` with the stored pixels looked up; unstored ring pixels count as ``t``."""
    h, w = block.shape
    stored = np.flatnonzero(good)
    keys, vals = block.key[stored], block.values[stored]
    bad_keys = block.key[np.flatnonzero(bad)]
    stride = block.stride

    def value_at(pix):
        pos = _find(keys, pix)
        return np.where(pos >= 0, vals[pos], 0.0)

    def bad_at(pix):
        r = (pix // w) % (h + 1)
        gap = r == h
        out = gap | (_find(bad_keys, pix) >= 0)
        if mask is not None:
            out[~gap] |= mask[r[~gap], pix[~gap] % w]
        return out

    def noise_at(rows, cols):
        return noise[rows // (h + 1)]

    def level_at(rows, cols):
        return np.zeros(np.shape(rows))

    unstored = t[0] if np.all(t == t[0]) else (lambda pix: t[pix // stride])
    return zinger_regions_at((len(block.frames) * (h + 1), w), value_at, bad_at, block.key[cand], final, ids, npix,
                             signal, level_at, noise_at, min_sigma=config.min_sigma, unstored=unstored)


def _moments(block: _Block, cand, final, nreg: int, tile_noise, gain: float) -> dict[str, np.ndarray]:
    """Intensity-weighted centroid, its errors and covariance, and second moments of every region (by region id).

    The weights are the counts above the background 0; each pixel's variance
    is ``noise^2 + gain x counts``, as in :func:`braggflow.find.region_centroids`.
    NaN for a region without net signal.
    """
    r = block.rows[cand].astype(np.float64)
    c = block.cols[cand].astype(np.float64)
    excess = block.values[cand]
    var = tile_noise**2 + gain * np.clip(excess, 0, None)
    total = np.bincount(final, weights=excess, minlength=nreg)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(total > 0, 1.0 / total, np.nan)
        row = np.bincount(final, weights=excess * r, minlength=nreg) * inv
        col = np.bincount(final, weights=excess * c, minlength=nreg) * inv
        dr, dc = r - row[final], c - col[final]

        def total_of(weights):
            return np.bincount(final, weights=weights, minlength=nreg)

        return {"row": row, "col": col, "row_err": np.sqrt(total_of(var * dr * dr)) * inv,
                "col_err": np.sqrt(total_of(var * dc * dc)) * inv, "rc_cov": total_of(var * dr * dc) * inv**2,
                "sigma_row": np.sqrt(np.clip(total_of(excess * dr * dr) * inv, 0, None)),
                "sigma_col": np.sqrt(np.clip(total_of(excess * dc * dc) * inv, 0, None))}
