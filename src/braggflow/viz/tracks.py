"""Trajectories drawn over the summed image of a series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.viz import _draw

__all__ = ["plot_tracks", "summed_image"]


def summed_image(frames: Sequence[np.ndarray], *, indices: Sequence[int] | None = None) -> np.ndarray:
    """Sum the frames of a series, pixel by pixel.

    Parameters
    ----------
    frames : FrameSeries or (N, H, W) ndarray or sequence of (H, W) ndarray
    indices : sequence of int, optional
        Frames to sum (default: all).

    Returns
    -------
    image : (H, W) ndarray of float64, counts

    Raises
    ------
    BraggflowError
        If there is no frame to sum.
    """
    indices = range(len(frames)) if indices is None else indices
    total = None
    for i in indices:
        frame = np.asarray(frames[i], dtype=np.float64)
        total = frame.copy() if total is None else total + frame
    if total is None:
        raise BraggflowError("no frames to sum")
    return total


def plot_tracks(
    image: np.ndarray,
    table: pd.DataFrame,
    *,
    output: str | Path | None,
    mask: np.ndarray | None = None,
    min_length: int = 2,
    max_tracks: int | None = 2000,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.0),
    dpi: float = 100,
):
    """Draw each trajectory as a line over an image (usually the summed series).

    Parameters
    ----------
    image : (H, W) ndarray
        Background image, counts (see :func:`summed_image`).
    table : pandas.DataFrame
        Linked peak table: ``frame``, ``row``, ``col`` (px), ``track_id``.
    output : str or Path or None
        Image file to write; ``None`` returns the Figure.
    mask : (H, W) ndarray of bool, optional
        Bad pixels, drawn in blue.
    min_length : int, optional
        Draw tracks seen on at least this many frames.
    max_tracks : int or None, optional
        Draw at most this many tracks (the longest); ``None``: all.  The
        title says how many of how many are drawn.
    title : str, optional
    figsize : (float, float), optional
        Inches; the image is ``figsize * dpi`` pixels.
    dpi : float, optional

    Returns
    -------
    Path or matplotlib.figure.Figure

    Raises
    ------
    BraggflowError
        If the table has no ``track_id`` (link it first), the image is not 2D,
        or ``max_tracks`` is below 1.
    """
    from matplotlib.collections import LineCollection

    image, mask = _draw.check_frame(image, mask)
    if "track_id" not in table.columns:
        raise BraggflowError("the peak table has no track_id column: link it first (braggflow link)")
    t = table[table["track_id"].to_numpy() >= 0].sort_values(["track_id", "frame"], kind="stable")
    lengths = t.groupby("track_id")["frame"].nunique()
    keep = lengths[lengths >= min_length].sort_values(ascending=False, kind="stable")
    n_long = len(keep)
    if max_tracks is not None:
        if max_tracks < 1:
            raise BraggflowError(f"max_tracks must be >= 1 or None (all), got {max_tracks!r}")
        keep = keep.iloc[:max_tracks]
    t = t[t["track_id"].isin(keep.index)]
    fig = _draw.new_figure(figsize, dpi)
    ax = fig.add_subplot()
    im, _ = _draw.show_frame(ax, image, mask, _draw.frame_norm([image], mask=mask))
    fig.colorbar(im, ax=ax, label="summed counts", fraction=0.046, pad=0.02)
    segments = [g[["col", "row"]].to_numpy(dtype=float) for _, g in t.groupby("track_id", sort=True)]
    if segments:
        import matplotlib

        colours = matplotlib.colormaps["tab20"](np.arange(len(segments)) % 20)
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=1.2))
        starts = np.array([s[0] for s in segments])
        ax.scatter(starts[:, 0], starts[:, 1], s=6, c=colours, marker="o", linewidths=0)
    if title is None:
        drawn = (f"{n_long} tracks (all)" if len(segments) == n_long
                 else f"{len(segments)} of {n_long} tracks (the longest)")
        title = f"{drawn}\non >= {min_length} frames; dot: start"
    ax.set_title(title)
    return _draw.save(fig, output)
