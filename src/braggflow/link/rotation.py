"""Rotation series: merging a spot seen on several frames into one 3D spot.

While a crystal rotates (omega), a reflection crosses the Ewald sphere over one
or a few frames.  Its peaks on those frames are one spot, with a centroid in
(row, col, omega).  Frames are neighbours when their omega ranges touch, not
when their indices are consecutive: a series may jump (the HEXRD Zr example
goes from -65 to 65 degrees between frames 49 and 50), and a full 360 degree
series closes on itself.  The per-frame linking is trackpy's, run on a
"rotation time" that advances by one between touching frames and by two across
a jump, so no spot is carried over a gap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.link.tracks import _check_link_options, _trackpy_link
from braggflow.schema import validate_peak_table

__all__ = [
    "link_rotation",
    "merge_rotation_spots",
    "omega_ranges_from_table",
    "omega_ranges_from_steps",
    "SPOT_COLUMNS",
]

SPOT_COLUMNS = ("spot_id", "row", "col", "omega", "intensity", "intensity_err", "first_frame", "last_frame",
                "n_peaks")
"""Columns of the table returned by :func:`merge_rotation_spots`."""


def _omega_ranges(omega_ranges: Any, frames: np.ndarray) -> np.ndarray:
    """Validate (N, 2) ranges: finite and of non-zero width on every frame the table uses."""
    ranges = np.asarray(omega_ranges, dtype=float)
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise BraggflowError(f"omega_ranges must have shape (n_frames, 2) (start, stop in deg), got {ranges.shape}")
    if len(frames) == 0:
        return ranges
    if frames.min() < 0:
        raise BraggflowError(f"frame indices must be non-negative, got {frames.min()}")
    if len(ranges) <= frames.max():
        raise BraggflowError(
            f"omega_ranges has {len(ranges)} frames but the peak table refers to frame {frames.max()}"
        )
    used = ranges[np.unique(frames)]
    if not np.isfinite(used).all():
        raise BraggflowError("omega_ranges holds NaN or infinite values for frames that have peaks")
    if np.any(used[:, 0] == used[:, 1]):
        raise BraggflowError("omega_ranges has a frame with zero width (start == stop)")
    return ranges


def _rotation_order(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Order frames along the rotation and find where touching chains break.

    Frames whose range is NaN (no omega known, no peaks) are left out.

    Returns
    -------
    order : (M,) int, indices of the frames with a range, sorted by lower omega bound
    rtime : (N,) int, rotation time per frame index: +1 between touching
        frames, +2 across a gap (-1 for frames without a range)
    closed : bool, whether the last frame touches the first modulo 360 deg
    """
    low = ranges.min(axis=1)  # NaN where a frame has no range
    high = ranges.max(axis=1)
    valid = np.flatnonzero(np.isfinite(low) & np.isfinite(high))
    rtime = np.full(len(ranges), -1, dtype=np.int64)
    if len(valid) == 0:
        return valid, rtime, False
    tol = 1e-3 * float(np.median(high[valid] - low[valid]))
    order = valid[np.argsort(low[valid], kind="stable")]
    steps = np.ones(len(order), dtype=np.int64)
    steps[0] = 0
    touching = low[order][1:] <= high[order][:-1] + tol
    steps[1:][~touching] = 2
    rtime[order] = np.cumsum(steps)
    closed = len(order) > 1 and abs(high[order[-1]] - 360.0 - low[order[0]]) <= tol
    return order, rtime, closed


def omega_ranges_from_steps(n_frames: int, *, step: float, start: float = 0.0) -> np.ndarray:
    """Omega ranges of a series rotated by ``step`` per frame from ``start``: frame k covers
    ``[start + k step, start + (k + 1) step]``.

    Parameters
    ----------
    n_frames : int
        Frames in the series.
    step : float
        Rotation per frame, deg (> 0).
    start : float
        Angle at the start of frame 0, deg.

    Returns
    -------
    omega_ranges : (n_frames, 2) ndarray of float, deg

    Raises
    ------
    BraggflowError
        If ``step`` is not positive and finite or ``start`` not finite.
    """
    if not (np.isfinite(step) and step > 0) or not np.isfinite(start):
        raise BraggflowError(f"omega step must be positive and start finite, got step={step!r}, start={start!r}")
    k = np.arange(int(n_frames), dtype=float)
    return np.stack([start + k * step, start + (k + 1) * step], axis=1)


def omega_ranges_from_table(table: pd.DataFrame, *, step: float | None = None,
                            start: float | None = None) -> np.ndarray:
    """Rebuild per-frame omega ranges from the ``omega`` (frame centre) column of a peak table.

    For when the frames themselves are not at hand: each frame with peaks gets
    ``[omega - step / 2, omega + step / 2]``.  A table without omega values (a
    TIFF or CBF series) gets the ranges of :func:`omega_ranges_from_steps`
    from ``step`` and ``start`` (default 0).

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``frame`` and ``omega`` (deg, the frame's centre).
    step : float, optional
        Rotation per frame, deg; default: the median difference between
        neighbouring frame centres (differences within 1.5 times the
        smallest; larger ones are gaps).  Needed when the table has no omega.
    start : float, optional
        Angle at the start of frame 0, deg, for a table without omega values;
        refused for a table that has them.

    Returns
    -------
    omega_ranges : (max frame + 1, 2) ndarray of float, deg
        NaN for frames without peaks.

    Raises
    ------
    BraggflowError
        If the table has no finite omega, a frame has two different omegas,
        or the step cannot be found (fewer than two frames) and is not given.
    """
    validate_peak_table(table, required=("frame", "omega"))
    per_frame = table.groupby("frame")["omega"].agg(["min", "max"])
    per_frame = per_frame[np.isfinite(per_frame["min"])]
    if per_frame.empty:
        if step is None:
            raise BraggflowError("the peak table has no omega values; give the rotation per frame (--omega-step) "
                                 "and the angle of frame 0 (--omega-start)")
        return omega_ranges_from_steps(int(table["frame"].max()) + 1, step=step, start=start or 0.0)
    if start is not None:
        raise BraggflowError("the peak table records omega; --omega-start is for series without omega values")
    if (per_frame["max"] - per_frame["min"]).abs().max() > 1e-9:
        raise BraggflowError("a frame has peaks with different omega values; the omega column is inconsistent")
    centres = per_frame["min"]
    if step is None:
        diffs = np.diff(np.sort(centres.unique()))
        diffs = diffs[diffs > 1e-9]
        if len(diffs) == 0:
            raise BraggflowError("cannot infer the omega step from fewer than two frames; give it")
        step = float(np.median(diffs[diffs <= 1.5 * diffs.min()]))  # neighbours, not gaps
    if not step > 0:
        raise BraggflowError(f"omega step must be positive, got {step!r}")
    ranges = np.full((int(per_frame.index.max()) + 1, 2), np.nan)
    idx = per_frame.index.to_numpy(dtype=np.int64)
    ranges[idx, 0] = centres.to_numpy() - step / 2
    ranges[idx, 1] = centres.to_numpy() + step / 2
    return ranges


def link_rotation(
    table: pd.DataFrame,
    omega_ranges: Any,
    *,
    search_range: float = 3.0,
    **trackpy_options: Any,
) -> pd.DataFrame:
    """Give the peaks of one rotation spot a common ``track_id``.

    Peaks on frames whose omega ranges touch (or overlap) are linked when they
    lie within ``search_range`` of each other on the detector; frames that do
    not touch are never linked, whatever their indices.  When the ranges cover
    a full turn, the last frame is linked to the first.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``frame``, ``row``, ``col`` (px).  ``frame`` indexes
        ``omega_ranges``.  Rows with NaN position get ``track_id`` -1.
    omega_ranges : (N, 2) array_like of float, deg
        Start and stop rotation angle of each frame of the series (as
        ``FrameSeries.omega``); NaN is allowed for frames without peaks.
    search_range : float, optional
        Largest distance between the peaks of one spot on touching frames, px.
    **trackpy_options
        Passed to :func:`trackpy.link` (not ``memory``).

    Returns
    -------
    table : pandas.DataFrame
        A copy of ``table`` with ``track_id`` (int64) = spot id, numbered
        0, 1, ... along the rotation; -1 for rows with NaN position.

    Raises
    ------
    BraggflowError
        If ``omega_ranges`` is not (N, 2), is not finite or has zero width on
        a frame with peaks, or has fewer frames than the table refers to; if
        ``search_range`` is not positive.
    ValueError
        If a required column is missing.

    References
    ----------
    J. C. Crocker and D. G. Grier, J. Colloid Interface Sci. 179, 298 (1996)
    (the linker, via trackpy).
    """
    validate_peak_table(table, required=("frame", "row", "col"))
    _check_link_options(search_range, 0)
    if "memory" in trackpy_options:
        raise BraggflowError("memory is not used for rotation series: a spot ends on the first frame without it")
    frames = table["frame"].to_numpy(dtype=np.int64)
    ranges = _omega_ranges(omega_ranges, frames)
    order, rtime, closed = _rotation_order(ranges)
    out = table.copy()
    ok = np.isfinite(out["row"].to_numpy(dtype=float)) & np.isfinite(out["col"].to_numpy(dtype=float))
    ids = np.full(len(out), -1, dtype=np.int64)
    if not ok.any():
        out["track_id"] = ids
        return out
    t = rtime[frames[ok]]
    pos = out.loc[ok, ["row", "col"]]
    raw = _trackpy_link(pos, t, search_range=search_range, memory=0, **trackpy_options)
    if closed:
        raw = _close_seam(pos, frames[ok], raw, order, search_range, trackpy_options)
    # number spots 0, 1, ... by first appearance along the rotation
    first_t = pd.Series(t).groupby(raw).transform("min").to_numpy()
    key = np.lexsort((raw, first_t))
    codes = np.empty(len(raw), dtype=np.int64)
    codes[key] = pd.factorize(raw[key])[0]
    ids[ok] = codes
    out["track_id"] = ids
    return out


def _close_seam(
    pos: pd.DataFrame, frames: np.ndarray, raw: np.ndarray, order: np.ndarray, search_range: float, options: dict
) -> np.ndarray:
    """Join spots on the last frame of a full turn to those on the first frame."""
    last, first = order[-1], order[0]
    on_last = np.flatnonzero(frames == last)
    on_first = np.flatnonzero(frames == first)
    if len(on_last) == 0 or len(on_first) == 0:
        return raw
    both = np.concatenate([on_last, on_first])
    t = np.r_[np.zeros(len(on_last)), np.ones(len(on_first))].astype(np.int64)
    pair = _trackpy_link(pos.iloc[both], t, search_range=search_range, memory=0, **options)
    raw = raw.copy()
    for p in np.unique(pair):
        members = both[pair == p]
        if len(members) == 2:  # one peak on each side of the seam
            raw[raw == raw[members[1]]] = raw[members[0]]
    return raw


def merge_rotation_spots(
    table: pd.DataFrame,
    omega_ranges: Any,
    *,
    search_range: float = 3.0,
    return_table: bool = False,
    **trackpy_options: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Merge the peaks of a rotation series into 3D spots.

    The peaks of one spot are found by :func:`link_rotation`.  Each spot's
    centroid is the intensity-weighted mean of its peaks' ``row``, ``col`` and
    omega (each frame's omega is the centre of its range), its intensity is
    the sum of theirs and its error their errors added in quadrature
    (independent frames).

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``frame``, ``row``, ``col`` (px) and ``intensity``
        (counts; ``peak_value`` is used when ``intensity`` is absent or NaN),
        optionally ``intensity_err`` (counts, 1 sigma).
    omega_ranges : (N, 2) array_like of float, deg
        Start and stop rotation angle of each frame.
    search_range : float, optional
        Largest distance between the peaks of one spot on touching frames, px.
    return_table : bool, optional
        Also return the peak table with ``track_id`` set to the spot id.
    **trackpy_options
        Passed to :func:`trackpy.link`.

    Returns
    -------
    spots : pandas.DataFrame
        One row per spot, columns :data:`SPOT_COLUMNS`: ``spot_id`` (int64,
        equal to the peaks' ``track_id``), ``row``, ``col`` (px), ``omega``
        (deg, within the series' range), ``intensity`` (counts, summed over
        the peaks with a finite one), ``intensity_err`` (counts: the peaks'
        ``intensity_err`` added in quadrature; NaN when a summed peak has no
        finite error, its intensity taken from ``peak_value``, or the table no
        ``intensity_err``),
        ``first_frame``, ``last_frame`` (frame indices of the spot's first and
        last peak along the rotation), ``n_peaks``.  Peaks with negative
        intensity weigh nothing in the centroid; a spot whose weights are all
        zero gets the unweighted mean.
    table : pandas.DataFrame
        Only with ``return_table``: the linked peak table.

    Raises
    ------
    BraggflowError
        As :func:`link_rotation`.
    ValueError
        If a required column is missing.
    """
    linked = link_rotation(table, omega_ranges, search_range=search_range, **trackpy_options)
    ranges = np.asarray(omega_ranges, dtype=float)
    closed = _rotation_order(ranges)[2]
    sel = linked["track_id"].to_numpy() >= 0
    frames = linked.loc[sel, "frame"].to_numpy(dtype=np.int64)
    intensity = (
        linked.loc[sel, "intensity"].to_numpy(dtype=float)
        if "intensity" in linked.columns
        else np.full(sel.sum(), np.nan)
    )
    err = (
        linked.loc[sel, "intensity_err"].to_numpy(dtype=float)
        if "intensity_err" in linked.columns
        else np.full(sel.sum(), np.nan)
    )
    err = np.where(np.isfinite(intensity), err, np.nan)
    if "peak_value" in linked.columns:
        fallback = ~np.isfinite(intensity)
        intensity = np.where(fallback, linked.loc[sel, "peak_value"].to_numpy(dtype=float), intensity)
        err = np.where(fallback, np.nan, err)
    counted = np.isfinite(intensity)
    w = np.clip(np.nan_to_num(intensity, nan=0.0), 0.0, None)
    work = pd.DataFrame(
        {
            "spot_id": linked.loc[sel, "track_id"].to_numpy(dtype=np.int64),
            "row": linked.loc[sel, "row"].to_numpy(dtype=float),
            "col": linked.loc[sel, "col"].to_numpy(dtype=float),
            "omega": ranges.mean(axis=1)[frames],
            "intensity": intensity,
            "var": np.where(counted, err * err, 0.0),
            "unknown": counted & ~np.isfinite(err),
            "frame": frames,
            "w": w,
        }
    )
    if len(work) == 0:
        spots = pd.DataFrame({
            c: pd.Series(dtype="int64" if c in ("spot_id", "first_frame", "last_frame", "n_peaks") else "float64")
            for c in SPOT_COLUMNS
        })
        return (spots, linked) if return_table else spots
    g = work.groupby("spot_id", sort=True)
    if closed:  # a spot across the seam: bring its omegas within 180 deg of its strongest peak
        ref = work.loc[g["w"].idxmax(), ["spot_id", "omega"]].set_index("spot_id")["omega"]
        delta = work["omega"] - work["spot_id"].map(ref)
        work["omega"] = work["omega"] - 360.0 * np.round(delta / 360.0)
    work["along"] = work["omega"]  # position along the rotation, unwrapped across a seam
    wsum = g["w"].transform("sum")
    n = g["w"].transform("size")
    eff = np.where(wsum > 0, work["w"] / wsum.where(wsum > 0, 1.0), 1.0 / n)
    work[["row", "col", "omega"]] = work[["row", "col", "omega"]].mul(eff, axis=0)
    g = work.sort_values(["spot_id", "along"], kind="stable").groupby("spot_id", sort=True)
    spots = pd.DataFrame(
        {
            "row": g["row"].sum(),
            "col": g["col"].sum(),
            "omega": g["omega"].sum(),
            "intensity": g["intensity"].sum(min_count=1),
            "intensity_err": np.sqrt(g["var"].sum()).where(~g["unknown"].any() & g["intensity"].count().gt(0)),
            "first_frame": g["frame"].first(),
            "last_frame": g["frame"].last(),
            "n_peaks": g["frame"].size(),
        }
    ).reset_index()
    if closed:
        low = np.nanmin(ranges[np.isfinite(ranges).all(axis=1)])
        spots["omega"] = low + np.mod(spots["omega"] - low, 360.0)
    spots = spots.astype({"spot_id": np.int64, "first_frame": np.int64, "last_frame": np.int64, "n_peaks": np.int64})
    spots = spots[list(SPOT_COLUMNS)]
    return (spots, linked) if return_table else spots
