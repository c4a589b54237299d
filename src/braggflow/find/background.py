"""Background level and noise of a frame on coarse tiles, and the test for frames thresholded upstream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggflow._stats import MAD_TO_SIGMA, median_last, nanmedian_last
from braggflow.errors import BraggflowError
from braggflow.find._kernels import NO_MASK, clip_deviations, counted_medians, median3x3_tiles, sampled_zeros

__all__ = ["Background", "estimate_background", "is_sparse", "CLIP_SIGMA"]

#: samples farther than this many noise sigma from a tile's level are left out of its mean and variance
CLIP_SIGMA = 5.0


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
    mean, variance : (TY, TX) ndarray of float or None
        Mean and variance per tile of the samples within ``CLIP_SIGMA`` noise of
        the level (a sigma-clipped mean, which, unlike the median, is unbiased
        for the skewed counts of a background of a few photons), counts/px and
        counts^2; None when not measured (then ``level`` and ``noise**2`` stand in).
    """

    level: np.ndarray
    noise: np.ndarray
    tile: int
    shape: tuple[int, int]
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Expand a (TY, TX) tile map to the (H, W) frame, px by px."""
        h, w = self.shape
        return np.repeat(np.repeat(values, self.tile, axis=0), self.tile, axis=1)[:h, :w]

    def at(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Tile-map values (default: ``level``) at integer pixel positions."""
        values = self.level if values is None else values
        return values[np.asarray(rows) // self.tile, np.asarray(cols) // self.tile]


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
    if mask is not None and mask.any():  # a contiguous pass, cheaper than the strided one when nothing is masked
        masked = mask[::step, ::step]
        if masked.any():
            sub[masked] = np.nan
    ty, tx = -(-h // tile), -(-w // tile)
    complete = sub.shape[0] >= ty * per and sub.shape[1] >= tx * per
    if complete:
        blocks = sub[: ty * per, : tx * per]
    else:
        blocks = np.full((ty * per, tx * per), np.nan, dtype=np.float32)
        blocks[: sub.shape[0], : sub.shape[1]] = sub[: ty * per, : tx * per]
    blocks = blocks.reshape(ty, per, tx, per).transpose(0, 2, 1, 3).reshape(ty * tx, per * per)
    # medians: a partition for the tiles with every sample, a sort (NaN last) for those with masked samples
    partial = np.isnan(blocks).any(axis=1)
    if mask is None and complete:  # a NaN in the frame itself makes its tile's values NaN, filled below
        level, mad, dev, distance = _tile_medians(blocks, partial,
                                                  lambda v: np.full(v.shape[0], np.nan, dtype=v.dtype))
    else:
        level, mad, dev, distance = _tile_medians(blocks, partial, nanmedian_last)
    noise = MAD_TO_SIGMA * mad
    # sigma-clipped moments around the level (masked samples, NaN, are outside too)
    n_in = clip_deviations(dev, distance, (CLIP_SIGMA * np.maximum(noise, gain)).astype(np.float32)).view(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.add.reduce(dev, axis=1, dtype=np.float64) / n_in
        variance = np.einsum("ij,ij->i", dev, dev) / n_in - shift * shift
    maps = np.stack([level, noise, level + shift, variance]).astype(np.float32).reshape(4, ty, tx)
    # tiles with no good pixel take the frame's typical values
    for values in maps:
        bad = ~np.isfinite(values)
        if bad.any():
            values[bad] = np.median(values[~bad]) if not bad.all() else 0.0
    if min(ty, tx) >= 3:
        maps = _median3x3(maps)
    level, noise, mean, variance = maps
    noise = np.maximum(noise, np.sqrt(gain * np.clip(level, 0, None)))
    noise = np.maximum(noise, gain)
    variance = np.maximum(variance, gain * np.clip(mean, 0, None))
    level, noise, mean, variance = (a.astype(np.float64) for a in (level, noise, mean, variance))
    return Background(level=level, noise=noise, tile=tile, shape=(h, w), mean=mean, variance=variance)


def _median3x3(maps: np.ndarray) -> np.ndarray:
    """Median over 3 x 3 tiles of each (TY, TX) map of a stack, edges repeated.

    The values of ``ndimage.median_filter(maps, size=(1, 3, 3), mode="nearest")``
    (the median of 9 values is one of them): for finite maps without -0.0 a
    compiled network of compare-exchanges (:func:`braggflow.find._kernels.median3x3_tiles`),
    else one partition of the nine shifted maps stacked along the last axis.
    """
    if maps.dtype in (np.float32, np.float64) and np.isfinite(maps).all() and not np.signbit(maps[maps == 0]).any():
        # (which of -0.0 and 0.0 is picked is the partition's); the view: NumPy's own type object (see components)
        return median3x3_tiles(np.ascontiguousarray(maps)).view(maps.dtype)
    k, ty, tx = maps.shape
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
    shifted = np.empty((k, ty, tx, 9), dtype=maps.dtype)
    for i in range(3):
        for j in range(3):
            shifted[..., 3 * i + j] = padded[:, i : i + ty, j : j + tx]
    return np.partition(shifted, 4, axis=-1)[..., 4]


def _tile_medians(blocks: np.ndarray, partial: np.ndarray,
                  nan_median) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median and median absolute deviation of each row of ``blocks``; rows flagged ``partial`` by ``nan_median``.

    Also returns the deviations from the median and their absolute values
    (the clipping of the tile moments uses them too), each (rows, samples).
    """
    level = np.empty(blocks.shape[0], dtype=blocks.dtype)
    mad = np.empty(blocks.shape[0], dtype=blocks.dtype)
    counted = np.zeros(blocks.shape[0], dtype=bool)
    if blocks.dtype == np.float32:
        # tiles of whole counts (the common case: integer frames): both medians from each tile's histogram
        counted_level, counted_mad, counted = counted_medians(np.ascontiguousarray(blocks))
        level[counted], mad[counted] = counted_level[counted], counted_mad[counted]
    groups = [(rows, median) for rows, median in ((~partial & ~counted, median_last), (partial & ~counted, nan_median))
              if rows.any()]
    for rows, median in groups:
        level[rows] = median(blocks if rows.all() else blocks[rows])
    dev = blocks - level[:, None]
    distance = np.abs(dev)
    for rows, median in groups:
        mad[rows] = median(distance if rows.all() else distance[rows])
    return level, mad, dev, distance


def is_sparse(frame: np.ndarray, mask: np.ndarray | None = None, *, fraction: float = 0.5,
              gain: float = 1.0) -> bool:
    """Whether a frame was thresholded upstream (a frame cache, a sparse file).

    Such a frame keeps only the pixels at or above a storage threshold ``t`` and
    stores 0 for the others: more than ``fraction`` of its good pixels are
    exactly 0, none is negative, and nothing is stored between 0 and ``t``.  A
    photon-counting frame at low flux is also mostly zeros, but its zeros are
    data: its values start at one photon (``gain`` ADU), so a frame whose
    smallest stored value is below 1.5 photons is not taken for a thresholded
    one (a threshold at one photon removes nothing from photon counts).

    Sampled on every 7th pixel of every 7th row (cheap).

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel, left out.
    fraction : float
        Share of exact zeros above which a frame may be thresholded.
    gain : float
        ADU per photon.

    Returns
    -------
    sparse : bool
    """
    if frame.dtype.kind in "uif" and (mask is None or mask.dtype == np.bool_):
        # the common answer (not thresholded) from one compiled pass over the sample, without copies
        n_good, n_zero = sampled_zeros(frame, NO_MASK if mask is None else mask, 7)
        if n_good == 0 or n_zero <= fraction * n_good:
            return False
    sub = frame[::7, ::7]
    good = ~mask[::7, ::7] if mask is not None else np.ones(sub.shape, bool)
    values = sub[good]
    if values.size == 0 or (values == 0).sum() <= fraction * values.size:
        return False
    stored = values[values != 0]
    if stored.size == 0:  # too few stored pixels to sample: look at all of them
        stored = frame[(frame != 0) & ~mask] if mask is not None else frame[frame != 0]
    return bool(stored.size == 0 or stored.min() >= 1.5 * gain)
