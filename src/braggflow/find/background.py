"""Background level and noise of a frame on coarse tiles, and the test for frames thresholded upstream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from braggflow._stats import MAD_TO_SIGMA, median_last, nanmedian_last
from braggflow.errors import BraggflowError

__all__ = ["Background", "estimate_background", "is_sparse"]


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
    if not np.isnan(blocks).any():
        level = median_last(blocks)
        mad = median_last(np.abs(blocks - level[:, :, None]))
    elif complete and mask is None:  # NaN pixels in the frame itself: their tiles' medians are NaN, filled below
        level = np.median(blocks, axis=2)
        mad = np.median(np.abs(blocks - level[:, :, None]), axis=2)
    else:
        level = nanmedian_last(blocks)
        mad = nanmedian_last(np.abs(blocks - level[:, :, None]))
    noise = MAD_TO_SIGMA * mad
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
