"""One frame with its peaks overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
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
    region: tuple[int, int, int, int] | None = None,
    reference: pd.DataFrame | None = None,
    title: str | None = None,
    geometry=None,
    figsize: tuple[float, float] = (7.0, 6.0),
    dpi: float = 100,
):
    """Draw a detector frame on a log colour scale with its peaks as circles and learned features as outlines.

    Masked pixels are drawn in blue; peaks are open circles whose area grows
    with ``sqrt(size_by)``, cyan, or amber when any flag is set (the legend
    names the flags set on the peaks drawn).  The colour bar is in counts.
    Rows of the learned detector (a ``kind``: ring, arc or spot, with their
    extent in q and chi) are drawn, with a geometry, as the outline of their
    extent on the detector (a ring's or an arc's is a band between two arcs),
    coloured by kind (:data:`braggflow.viz.style.FEATURE_COLOURS`, in the
    legend with their numbers); without a geometry, as circles of their kind's
    colour at their ``row``, ``col``.

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
    region : (row_start, row_stop, col_start, col_stop) of int, optional
        Draw only this part of the frame, px (axes keep frame coordinates).
    reference : pandas.DataFrame, optional
        Reference peaks (``row``, ``col``; ``frame`` selects as for ``table``),
        e.g. a simulation's truth or another program's spots, drawn as green +.
    title : str, optional
    geometry : braggflow.geometry.Geometry, optional
        Detector geometry: draws the learned features' extents (``q``, ``eta``,
        ``q_width``, ``chi_width``, or ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``).
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
        column, ``region`` is empty or outside the frame, or the output folder
        does not exist.
    """
    frame, mask = _draw.check_frame(frame, mask)
    peaks = _draw.frame_peaks(table, frame_index)
    features = _draw.feature_rows(peaks)
    if len(features):  # the learned features: drawn by kind, the other rows as peaks
        learned = peaks["kind"].astype(object).isin(("ring", "arc", "spot")).to_numpy()
        unboxed = peaks[learned] if geometry is None else peaks.iloc[:0]
        peaks = peaks[~learned]
    ref = _draw.frame_peaks(reference, frame_index) if reference is not None else None
    r0 = c0 = 0
    if region is not None:
        r0, r1, c0, c1 = (int(v) for v in region)
        if not (0 <= r0 < r1 <= frame.shape[0] and 0 <= c0 < c1 <= frame.shape[1]):
            raise BraggflowError(f"region {region} is empty or outside the frame of shape {frame.shape}")
        frame = frame[r0:r1, c0:c1]
        mask = None if mask is None else mask[r0:r1, c0:c1]
        inside = peaks["row"].between(r0 - 0.5, r1 - 0.5) & peaks["col"].between(c0 - 0.5, c1 - 0.5)
        peaks = peaks[inside]
        if ref is not None:
            ref = ref[ref["row"].between(r0 - 0.5, r1 - 0.5) & ref["col"].between(c0 - 0.5, c1 - 0.5)]
    fig = _draw.new_figure(figsize, dpi)
    ax = fig.add_subplot()
    norm = _draw.frame_norm([frame], mask=mask)
    im, _ = _draw.show_frame(ax, frame, mask, norm, origin=(r0, c0))
    fig.colorbar(im, ax=ax, label="counts", fraction=0.046, pad=0.02)
    if len(peaks):
        _draw.draw_peaks(ax, peaks, _draw.marker_sizes(_draw.size_column(peaks, size_by)))
    if ref is not None and len(ref):
        ax.scatter(ref["col"].to_numpy(dtype=float), ref["row"].to_numpy(dtype=float), s=30, marker="+",
                   c=_draw.REFERENCE_COLOUR, linewidths=0.8)
    handles = _draw.legend_handles(mask is not None and bool(mask.any()), ref is not None,
                                   flags=_draw.flag_names(peaks))
    if len(features) and not len(peaks):  # learned features only: no entries for peak circles
        handles = handles[2:]
    if len(features):
        handles += _draw.feature_handles(_draw_features(ax, features, unboxed, geometry))
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.6)
    if title is None:
        title = (f"{len(peaks)} peaks" if len(peaks) or not len(features) else "") + \
            (f"{', ' if len(peaks) else ''}{len(features)} learned features" if len(features) else "") + \
            (f", frame {frame_index}" if frame_index is not None else "")
    ax.set_title(title)
    return _draw.save(fig, output)


def _draw_features(ax, features: pd.DataFrame, unboxed: pd.DataFrame, geometry) -> dict:
    """Learned features: outlines with a geometry, else kind-coloured circles at their row, col."""
    if geometry is not None:
        return _draw.draw_features(ax, features, "detector", geometry)
    from braggflow.viz.style import FEATURE_COLOURS

    drawn = {}
    kinds = unboxed["kind"].astype(str).to_numpy()
    for kind, colour in FEATURE_COLOURS.items():
        rows = unboxed[kinds == kind]
        if len(rows):
            drawn[kind] = ax.scatter(rows["col"].to_numpy(dtype=float), rows["row"].to_numpy(dtype=float), s=60,
                                     facecolors="none", edgecolors=colour, linewidths=1.0,
                                     label=f"{kind} ({len(rows)})")
    return drawn
