"""Per-frame statistics of a series: peak count, mean intensity, position error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.viz import _draw

__all__ = ["frame_statistics", "plot_series", "frame_omega"]


def _check(table: pd.DataFrame, what: str) -> None:
    missing = [c for c in ("frame", "row", "col") if c not in table.columns]
    if missing:
        raise BraggflowError(f"the {what} table lacks column(s) {', '.join(missing)}")


def frame_statistics(
    table: pd.DataFrame,
    *,
    reference: pd.DataFrame | None = None,
    max_distance: float = 2.0,
    n_frames: int | None = None,
) -> pd.DataFrame:
    """Peak count, mean intensity and (against a reference) position error per frame.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table (``frame``, ``row``, ``col`` in px; ``intensity`` if any).
    reference : pandas.DataFrame, optional
        Reference peaks (ground truth of a simulation, or another method's
        result) with ``frame``, ``row``, ``col``.
    max_distance : float, optional
        A reference peak is matched to a peak of ``table`` on the same frame
        within this distance, px, one to one, nearest pairs first
        (:func:`braggflow.simulate.frames.match_peaks`); its error is their distance.
    n_frames : int, optional
        Report frames 0..n_frames-1 (frames without peaks get a count of 0);
        default: every frame present in either table.

    Returns
    -------
    stats : pandas.DataFrame
        One row per frame: ``frame``, ``n_peaks``, ``mean_intensity``
        (counts, NaN without peaks); with a reference also ``n_reference``,
        ``n_matched``, ``recall`` (n_matched / n_reference), ``mean_error``
        and ``median_error`` (px, over matched reference peaks).

    Raises
    ------
    BraggflowError
        If a table lacks ``frame``, ``row`` or ``col``, or ``max_distance`` <= 0.
    """
    _check(table, "peak")
    if reference is not None:
        _check(reference, "reference")
    if not max_distance > 0:
        raise BraggflowError(f"max_distance must be positive, got {max_distance!r}")
    if n_frames is not None:
        frames = np.arange(int(n_frames))
    else:
        present = [table["frame"].to_numpy()] + ([reference["frame"].to_numpy()] if reference is not None else [])
        frames = np.unique(np.concatenate(present)).astype(np.int64)
    g = table.groupby("frame")
    stats = pd.DataFrame({"frame": frames})
    stats["n_peaks"] = g.size().reindex(frames, fill_value=0).to_numpy(dtype=np.int64)
    if "intensity" in table.columns:
        stats["mean_intensity"] = g["intensity"].mean().reindex(frames).to_numpy(dtype=float)
    else:
        stats["mean_intensity"] = np.nan
    if reference is None:
        return stats
    from braggflow.simulate.frames import match_peaks

    ref = reference[
        np.isfinite(reference["row"].to_numpy(dtype=float)) & np.isfinite(reference["col"].to_numpy(dtype=float))
    ]
    matches = match_peaks(table, ref.reset_index(drop=True), max_distance=max_distance)
    matches["frame"] = ref["frame"].to_numpy()[matches["truth_index"].to_numpy(dtype=np.int64)] if len(matches) else []
    per = matches.groupby("frame")
    n_ref = per.size().reindex(frames, fill_value=0).to_numpy()
    n_match = per["distance"].count().reindex(frames, fill_value=0).to_numpy()
    mean_err = per["distance"].mean().reindex(frames).to_numpy(dtype=float)
    median_err = per["distance"].median().reindex(frames).to_numpy(dtype=float)
    stats["n_reference"] = np.asarray(n_ref, dtype=np.int64)
    stats["n_matched"] = np.asarray(n_match, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["recall"] = stats["n_matched"] / stats["n_reference"].where(stats["n_reference"] > 0)
    stats["mean_error"] = mean_err
    stats["median_error"] = median_err
    return stats


def plot_series(
    table: pd.DataFrame,
    *,
    output: str | Path | None,
    reference: pd.DataFrame | None = None,
    max_distance: float = 2.0,
    n_frames: int | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
):
    """Plot per-frame peak count, mean intensity and, with a reference, position error.

    The error panel is the error-per-frame plot of published BraggNN
    pipelines: mean and median distance from each reference peak to the
    nearest found peak (within ``max_distance``), with the matched fraction
    (dashed, right axis; in the legend).  The x axis is the rotation angle
    omega (deg) for a rotation series (a table with a varying ``omega``
    column), else the frame number (integer ticks).  The mean intensity is
    on a log axis when it spans more than two decades.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table of the series.
    output : str or Path or None
        Image file to write; ``None`` returns the Figure.
    reference : pandas.DataFrame, optional
        Reference peak table (see :func:`frame_statistics`).
    max_distance : float, optional
        Matching radius, px.
    n_frames : int, optional
        Number of frames of the series (frames without peaks then show 0).
    title : str, optional
    figsize : (float, float), optional
        Inches; default (7, 5) or (7, 7) with a reference.  The image is
        ``figsize * dpi`` pixels.
    dpi : float, optional

    Returns
    -------
    Path or matplotlib.figure.Figure

    Raises
    ------
    BraggflowError
        As :func:`frame_statistics`, or when the output folder does not exist.

    References
    ----------
    Z. Liu et al., "BraggNN: fast X-ray Bragg peak analysis using deep
    learning", IUCrJ 9, 104 (2022).
    """
    from braggflow.viz import style

    stats = frame_statistics(table, reference=reference, max_distance=max_distance, n_frames=n_frames)
    panels = 3 if reference is not None else 2
    fig = _draw.new_figure(figsize or (7.0, 7.0 if reference is not None else 5.0), dpi)
    axes = fig.subplots(panels, 1, sharex=True)
    omega = frame_omega(table, stats["frame"].to_numpy())
    if omega is not None:
        x, xlabel = omega, style.axis_label("ω", "deg")
    else:
        x, xlabel = stats["frame"].to_numpy(), "frame"
    n_shown = len(stats)
    x, stats = _with_gaps(np.asarray(x, dtype=float), stats)
    axes[0].plot(x, stats["n_peaks"], ".-", color="C0", ms=3)
    axes[0].set_ylabel("peaks per frame")
    axes[0].set_ylim(bottom=0)
    style.integer_ticks(axes[0], "y")
    intensity = stats["mean_intensity"].to_numpy(dtype=float)
    axes[1].plot(x, intensity, ".-", color="C1", ms=3)
    axes[1].set_ylabel(style.axis_label("mean intensity", "counts"))
    axes[1].set_yscale(style.value_scale(intensity))
    style.plain_numbers(axes[1], "y")
    if reference is not None:
        ax = axes[2]
        ax.plot(x, stats["mean_error"], ".-", color="C3", ms=3, label="mean error")
        ax.plot(x, stats["median_error"], ".-", color="C2", ms=3, label="median error")
        ax.set_ylabel(style.axis_label("position error", "px"))
        top = np.nanmax(stats[["mean_error", "median_error"]].to_numpy(dtype=float), initial=0.0)
        ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)  # headroom for the legend
        twin = ax.twinx()
        twin.plot(x, stats["recall"], color="0.5", lw=0.8, ls="--", label="matched fraction (right axis)")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("matched fraction", color="0.4")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", ncols=3, fontsize=7, framealpha=0.8)
        twin.set_ylim(0, 1.4)
        twin.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    axes[-1].set_xlabel(xlabel)
    if omega is None:
        style.integer_ticks(axes[-1], "x")
    style.plain_numbers(axes[-1], "x")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title if title is not None else f"{len(table)} peaks in {n_shown} frames")
    return _draw.save(fig, output)


def _with_gaps(x: np.ndarray, stats: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """``x`` and ``stats`` with a NaN row inserted where x jumps by more than 3 median steps, so lines break there.

    A rotation series recorded in two wedges (omega -115..-65 and 65..115)
    is then drawn as two curves, not joined across the wedge it did not record.
    """
    if len(x) < 3:
        return x, stats
    step = np.diff(x)
    typical = np.median(np.abs(step[step != 0])) if (step != 0).any() else 0.0
    jumps = np.flatnonzero(np.abs(step) > 3 * typical) if typical > 0 else np.zeros(0, dtype=int)
    if not jumps.size:
        return x, stats
    gap = pd.DataFrame(np.nan, index=range(jumps.size), columns=stats.columns)
    parts, xs, start = [], [], 0
    for k, j in enumerate(jumps):
        parts += [stats.iloc[start:j + 1], gap.iloc[[k]]]
        xs += [x[start:j + 1], [np.nan]]
        start = j + 1
    parts.append(stats.iloc[start:])
    xs.append(x[start:])
    return np.concatenate(xs), pd.concat(parts, ignore_index=True)


def frame_omega(table: pd.DataFrame, frames: np.ndarray) -> np.ndarray | None:
    """Rotation angle of each frame (median ``omega`` of its peaks, deg), or None for a series without rotation.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table; its ``omega`` column (deg) when the series is a rotation series.
    frames : (N,) ndarray of int
        The frames to place.

    Returns
    -------
    omega : (N,) ndarray of float or None
        None when the table has no finite ``omega`` that varies between
        frames; frames without peaks are interpolated between their
        neighbours (linearly in the frame number).
    """
    if "omega" not in table.columns or not len(table):
        return None
    values = table["omega"].to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return None
    per = pd.Series(values[ok]).groupby(table["frame"].to_numpy()[ok]).median()
    if len(per) < 2 or np.ptp(per.to_numpy()) == 0:
        return None
    return np.interp(np.asarray(frames, dtype=float), per.index.to_numpy(dtype=float), per.to_numpy())
