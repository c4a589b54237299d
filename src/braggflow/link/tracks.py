"""Linking peaks of a time series into trajectories, and summarising them.

The linking itself is trackpy's Crocker-Grier linker; this module only maps the
peak table onto it (``row``/``col`` positions, ``frame`` as time), keeps the
schema's ``track_id`` convention (-1: not linked) and summarises each track.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.schema import validate_peak_table

__all__ = ["link", "track_summary"]


@contextmanager
def _trackpy_quiet():
    """Silence trackpy's per-frame progress messages and its pandas deprecation noise."""
    logger = logging.getLogger("trackpy")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")
            yield
    finally:
        logger.setLevel(level)


def _check_link_options(search_range: float, memory: int) -> None:
    if not np.isfinite(search_range) or search_range <= 0:
        raise BraggflowError(f"search_range must be a positive distance in px, got {search_range!r}")
    if int(memory) != memory or memory < 0:
        raise BraggflowError(f"memory must be a non-negative whole number of frames, got {memory!r}")


def _trackpy_link(
    positions: pd.DataFrame, time: np.ndarray, *, search_range: float, memory: int, **kwargs: Any
) -> np.ndarray:
    """Run trackpy on (row, col, time); return one particle id per input row.

    ``positions`` must hold finite ``row`` and ``col``; ``time`` is an integer
    array of the same length (gaps in it break tracks unless ``memory`` spans them).
    """
    import trackpy

    n = len(positions)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    f = pd.DataFrame(
        {
            "row": positions["row"].to_numpy(dtype=float),
            "col": positions["col"].to_numpy(dtype=float),
            "t": np.asarray(time, dtype=np.int64),
        },
        index=pd.RangeIndex(n),
    )
    with _trackpy_quiet():
        linked = trackpy.link(
            f, search_range, pos_columns=["row", "col"], t_column="t", memory=int(memory), **kwargs
        )
    ids = np.empty(n, dtype=np.int64)
    ids[linked.index.to_numpy()] = linked["particle"].to_numpy(dtype=np.int64)
    return ids


def link(
    table: pd.DataFrame,
    *,
    search_range: float = 3.0,
    memory: int = 0,
    min_length: int = 1,
    **trackpy_options: Any,
) -> pd.DataFrame:
    """Link the peaks of a frame series into trajectories (fills ``track_id``).

    A peak in frame ``t`` is joined to the nearest unclaimed peak of frame
    ``t + 1`` within ``search_range`` (globally optimal within each subnetwork),
    or, with ``memory``, of up to ``memory + 1`` frames later.  Use it for time
    series (charging, annealing, crystallisation); for rotation series use
    :func:`braggflow.link.merge_rotation_spots`.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with at least ``frame``, ``row``, ``col`` (px).  Rows whose
        ``row`` or ``col`` is NaN are not linked (``track_id`` -1).
    search_range : float, optional
        Largest distance a peak moves between two frames, px.
    memory : int, optional
        Number of frames a peak may vanish and still keep its track.
    min_length : int, optional
        Shortest track kept, in frames with a peak (trackpy's ``filter_stubs``):
        the peaks of shorter tracks get ``track_id`` -1.  1 keeps every track.
    **trackpy_options
        Passed to :func:`trackpy.link` (e.g. ``adaptive_stop``, ``predictor``,
        ``link_strategy``).

    Returns
    -------
    table : pandas.DataFrame
        A copy of ``table`` (same index and row order) with ``track_id``
        (int64): 0, 1, ... numbered by first appearance, -1 for unlinked rows.
        A peak seen on one frame only gets a track of its own (with
        ``min_length`` 1).

    Raises
    ------
    BraggflowError
        If ``search_range`` is not positive, ``memory`` is negative or
        ``min_length`` is below 1.
    ValueError
        If a required column is missing.

    References
    ----------
    J. C. Crocker and D. G. Grier, J. Colloid Interface Sci. 179, 298 (1996),
    as implemented in trackpy (D. B. Allan et al., doi:10.5281/zenodo.1213240).
    """
    validate_peak_table(table, required=("frame", "row", "col"))
    _check_link_options(search_range, memory)
    if not (isinstance(min_length, (int, np.integer)) and min_length >= 1):
        raise BraggflowError(f"min_length must be an integer >= 1 (frames), got {min_length!r}")
    out = table.copy()
    ok = np.isfinite(out["row"].to_numpy(dtype=float)) & np.isfinite(out["col"].to_numpy(dtype=float))
    ids = np.full(len(out), -1, dtype=np.int64)
    if ok.any():
        frames = out["frame"].to_numpy(dtype=np.int64)
        ids[ok] = _trackpy_link(
            out.loc[ok, ["row", "col"]], frames[ok], search_range=search_range, memory=memory, **trackpy_options
        )
    if min_length > 1 and (ids >= 0).any():
        linked = ids >= 0
        frames = out["frame"].to_numpy(dtype=np.int64)
        spans = pd.DataFrame({"track": ids[linked], "frame": frames[linked]}).groupby("track")["frame"].nunique()
        short = np.isin(ids, spans.index[spans.to_numpy() < min_length])
        ids[short] = -1
        kept = ids >= 0
        # ids count up by first appearance, so their ranks keep that order
        ids[kept] = np.unique(ids[kept], return_inverse=True)[1].astype(np.int64)
    out["track_id"] = ids
    return out


def track_summary(table: pd.DataFrame, *, geometry: Any = None) -> pd.DataFrame:
    """One row per trajectory: extent, mean position, drift, intensity, strain.

    Parameters
    ----------
    table : pandas.DataFrame
        Linked peak table (``frame``, ``row``, ``col``, ``track_id``; optional
        ``intensity`` and ``d``).  Rows with ``track_id`` -1 are ignored.
    geometry : braggflow.geometry.Geometry or GeometryConfig or dict, optional
        Detector geometry used to fill ``d`` (through
        :func:`braggflow.geometry.add_geometry_columns`) when the table has
        no d-spacings.  ``None``: use the table's ``d`` column as it is.

    Returns
    -------
    summary : pandas.DataFrame
        Columns ``track_id``; ``first_frame``, ``last_frame``, ``n_frames``
        (frames where the track has a peak); ``row``, ``col`` (mean position,
        px); ``drift_row``, ``drift_col`` (least-squares slope of the position
        against frame, px/frame; NaN for one-frame tracks) and ``drift``
        (their magnitude, px/frame); ``intensity`` (mean, counts); ``d`` (mean
        d-spacing, Å) and ``d_rel_change`` (d at the last frame over d at the
        first, minus 1: the lattice strain along the scattering vector; NaN
        without d-spacings).  Sorted by ``track_id``.

    Raises
    ------
    ValueError
        If ``frame``, ``row``, ``col`` or ``track_id`` is missing.
    """
    validate_peak_table(table, required=("frame", "row", "col", "track_id"))
    if geometry is not None and ("d" not in table.columns or not np.isfinite(table["d"].to_numpy(dtype=float)).any()):
        from braggflow.geometry import Geometry, add_geometry_columns  # lazy: pyFAI is heavy

        if not isinstance(geometry, Geometry):
            geometry = Geometry.from_config(geometry)
        table = add_geometry_columns(table, geometry)
    t = table.loc[table["track_id"].to_numpy() >= 0].sort_values(["track_id", "frame"], kind="stable")
    columns = [
        "track_id", "first_frame", "last_frame", "n_frames", "row", "col",
        "drift_row", "drift_col", "drift", "intensity", "d", "d_rel_change",
    ]
    if len(t) == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in columns[:4] else "float64") for c in columns})
    frame = t["frame"].to_numpy(dtype=float)
    work = pd.DataFrame(
        {
            "track_id": t["track_id"].to_numpy(dtype=np.int64),
            "frame": frame,
            "row": t["row"].to_numpy(dtype=float),
            "col": t["col"].to_numpy(dtype=float),
            "intensity": t["intensity"].to_numpy(dtype=float) if "intensity" in t.columns else np.nan,
            "d": t["d"].to_numpy(dtype=float) if "d" in t.columns else np.nan,
        }
    )
    g = work.groupby("track_id", sort=True)
    summary = pd.DataFrame(
        {
            "first_frame": g["frame"].min().astype(np.int64),
            "last_frame": g["frame"].max().astype(np.int64),
            "n_frames": g["frame"].nunique().astype(np.int64),
            "row": g["row"].mean(),
            "col": g["col"].mean(),
        }
    )
    # least-squares slope x(t): sum((t - <t>)(x - <x>)) / sum((t - <t>)^2), per track
    dt = work["frame"] - g["frame"].transform("mean")
    sxx = (dt * dt).groupby(work["track_id"]).sum()
    for axis in ("row", "col"):
        dx = work[axis] - g[axis].transform("mean")
        sxy = (dt * dx).groupby(work["track_id"]).sum()
        summary[f"drift_{axis}"] = (sxy / sxx.where(sxx > 0)).astype(float)
    summary["drift"] = np.hypot(summary["drift_row"], summary["drift_col"])
    summary["intensity"] = g["intensity"].mean()
    finite_d = work.loc[np.isfinite(work["d"].to_numpy())]
    gd = finite_d.groupby("track_id", sort=True)["d"]
    summary["d"] = gd.mean()
    summary["d_rel_change"] = gd.last() / gd.first() - 1.0
    summary = summary.reset_index()
    return summary[columns]
