"""One frame with its peaks overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.viz import _draw

__all__ = ["plot_frame"]


def plot_frame(
    frame: np.ndarray,
    table: pd.DataFrame | None = None,
    *,
    output: str | Path | None,
    mask: np.ndarray | None = None,
    frame_index: int | None = None,
    size_by: str | None = "intensity",
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.0),
    dpi: float = 100,
):
    """Draw a detector frame on a log colour scale with its peaks as circles.

    Masked pixels are drawn in blue; peaks are open circles whose area grows
    with ``sqrt(size_by)``, cyan, or amber when any flag is set.

    Parameters
    ----------
    frame : (H, W) ndarray
        Detector frame, counts.  Non-positive pixels take the lowest colour.
    table : pandas.DataFrame, optional
        Peak table (``row``, ``col`` in px; ``frame``, ``flags`` and the
        ``size_by`` column when used).
    output : str or Path or None
        Image file to write (PNG, PDF, SVG, ... by suffix); ``None`` returns
        the matplotlib Figure instead (for notebooks).
    mask : (H, W) ndarray of bool, optional
        True for bad pixels.
    frame_index : int, optional
        Draw only the peaks of this frame (default: every row of ``table``).
    size_by : {'intensity', 'score', 'peak_value', 'snr', 'npix'} or None, optional
        Column that sets the marker size; ``None``: equal sizes.
    title : str, optional
    figsize : (float, float), optional
        Figure size, inches.
    dpi : float, optional
        Pixels per inch: the image is ``figsize * dpi`` pixels.

    Returns
    -------
    Path or matplotlib.figure.Figure
        The file written, or the figure when ``output`` is None.

    Raises
    ------
    BraggflowError
        If the frame is not 2D, the mask's shape differs, ``size_by`` is not a
        column, or the output folder does not exist.
    """
    frame, mask = _draw.check_frame(frame, mask)
    peaks = _draw.frame_peaks(table, frame_index)
    fig = _draw.new_figure(figsize, dpi)
    ax = fig.add_subplot()
    norm = _draw.frame_norm([frame], mask=mask)
    im = _draw.show_frame(ax, frame, mask, norm)
    fig.colorbar(im, ax=ax, label="counts", fraction=0.046, pad=0.02)
    if len(peaks):
        _draw.draw_peaks(ax, peaks, _draw.marker_sizes(_draw.size_column(peaks, size_by)))
    ax.set_xlim(-0.5, frame.shape[1] - 0.5)
    ax.set_ylim(frame.shape[0] - 0.5, -0.5)
    ax.legend(handles=_draw.legend_handles(mask is not None and bool(mask.any())), loc="upper right", fontsize=7,
              framealpha=0.6)
    if title is None:
        title = f"{len(peaks)} peaks" + (f", frame {frame_index}" if frame_index is not None else "")
    ax.set_title(title)
    return _draw.save(fig, output)
