"""Per-frame statistics of a series: peak count, mean intensity, position error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.viz import _draw

__all__ = ["frame_statistics", "plot_series"]


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
    nearest found peak (within ``max_distance``), with the matched fraction.

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
    stats = frame_statistics(table, reference=reference, max_distance=max_distance, n_frames=n_frames)
    panels = 3 if reference is not None else 2
    fig = _draw.new_figure(figsize or (7.0, 7.0 if reference is not None else 5.0), dpi)
    axes = fig.subplots(panels, 1, sharex=True)
    x = stats["frame"].to_numpy()
    axes[0].plot(x, stats["n_peaks"], ".-", color="C0", ms=3)
    axes[0].set_ylabel("peaks per frame")
    axes[1].plot(x, stats["mean_intensity"], ".-", color="C1", ms=3)
    axes[1].set_ylabel("mean intensity\n(counts)")
    if np.nanmin(stats["mean_intensity"].to_numpy(dtype=float), initial=np.inf) > 0:
        axes[1].set_yscale("log")
    if reference is not None:
        ax = axes[2]
        ax.plot(x, stats["mean_error"], ".-", color="C3", ms=3, label="mean")
        ax.plot(x, stats["median_error"], ".-", color="C2", ms=3, label="median")
        ax.set_ylabel("position error (px)")
        ax.set_ylim(bottom=0)
        twin = ax.twinx()
        twin.plot(x, stats["recall"], color="0.5", lw=0.8, ls="--", label="matched fraction")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("matched fraction", color="0.4")
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("frame")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title if title is not None else f"{len(table)} peaks in {len(stats)} frames")
    fig.subplots_adjust(left=0.14, right=0.88, top=0.93, bottom=0.09, hspace=0.12)
    return _draw.save(fig, output)
