"""ImageD11 sparse scans processed block by block from their stored pixels, never made dense.

:func:`run_sparse` reads the stored pixels of a block of frames at a time
(:meth:`braggflow.io.sparse.SparseSeries.pixels`), corrects them as
:func:`braggflow.correct.correct_frame` corrects a frame, finds the peaks of
the whole block with :func:`braggflow.find.sparse_batch.find_peaks_in_pixels`
(the decisions of :func:`braggflow.find.find_peaks` on each frame) and writes
the block's peaks and frames-table rows as one journal batch
(:meth:`braggflow.io.writer.ResultsWriter.add_frames`).  A frame that the
batch finder does not decide (not thresholded, or a background tile half
stored) goes through :func:`braggflow.pipeline.analyse_frame`.

Peaks found this way are located and measured by the moments of their region
(``method`` ``moments``: intensity-weighted centroid, region sum), as
ImageD11's connected-component peak search measures them, not by the patch
localizers and the aperture integration of the per-frame pipeline; so the path
is taken (:func:`sparse_path_applies`) only when those stages are left at
their defaults, and only for corrections that act on each stored pixel alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from braggflow.correct.options import CorrectConfig
from braggflow.integrate.options import IntegrateConfig
from braggflow.locate.options import LocateConfig
from braggflow.pipeline.config import Config
from braggflow.schema import conform, empty_peak_table, frames_table

__all__ = ["sparse_path_applies", "run_sparse", "correct_pixels", "BLOCK_FRAMES", "BLOCK_PIXELS"]

#: most frames in one block
BLOCK_FRAMES = 20_000
#: most stored pixels in one block (a block holds at least one frame)
BLOCK_PIXELS = 200_000


def sparse_path_applies(series, config: Config, context) -> bool:
    """Whether :func:`run_sparse` processes ``series`` (else the per-frame pipeline does).

    It does for a series with stored pixel lists (an ImageD11 sparse scan,
    :class:`braggflow.io.sparse.SparseSeries`) when

    - ``locate`` and ``integrate`` are left at their defaults (their methods
      work on dense patches; asking for one of them, e.g. ``locate.method: gauss``,
      runs the per-frame pipeline);
    - the corrections act on each stored pixel alone: no dark, no flat, no
      binning, no flag value 0 (a dark or flat would change the unstored
      pixels too);
    - ``find.method`` is ``components`` and ``find.sparse`` is not ``no``;
    - the pixel type is a number type and the mask leaves some pixel good.

    Parameters
    ----------
    series : FrameSeries
    config : Config
    context : Context
        From :func:`braggflow.pipeline.prepare` and :func:`braggflow.pipeline.measure_series`.

    Returns
    -------
    applies : bool
    """
    from braggflow.io.sparse import SparseSeries

    if not isinstance(series, SparseSeries):
        return False
    c, fc = config.correct, config.find
    per_pixel = c.dark is None and c.flat is None and c.binning == 1 and 0 not in c.flag_values
    defaults = config.locate == LocateConfig() and config.integrate == IntegrateConfig()
    finder = fc.method == "components" and fc.sparse != "no"
    usable = np.dtype(series.dtype).kind in "uif" and (context.mask is None or not bool(np.all(context.mask)))
    return bool(per_pixel and defaults and finder and usable)


def correct_pixels(values: np.ndarray, config: CorrectConfig, saturation: float) -> tuple[np.ndarray, np.ndarray]:
    """Stored pixel values corrected as :func:`braggflow.correct.correct_frame` corrects them, and saturation.

    Parameters
    ----------
    values : (K,) ndarray
        Raw stored values, ADU.
    config : CorrectConfig
        ``flag_values`` and ``minval`` are applied (dark, flat and binning
        are not: :func:`sparse_path_applies` leaves them to the per-frame pipeline).
    saturation : float
        Saturation level, ADU (``inf``: never).

    Returns
    -------
    corrected : (K,) ndarray of float32
        Counts; NaN where the pixel is bad (non-finite or a flag value), 0
        where ``minval`` cuts it.
    saturated : (K,) ndarray of bool
        Raw value at or above ``saturation``.
    """
    values = np.asarray(values)
    out = values.astype(np.float32)
    bad = ~np.isfinite(out) if values.dtype.kind == "f" else np.zeros(values.size, bool)
    for flag in config.flag_values:
        if flag < 0 and values.dtype.kind == "u":
            continue  # an unsigned frame cannot hold a negative flag value
        bad |= values == flag
    if config.minval is not None:
        out[out < config.minval] = 0.0
    out[bad] = np.nan
    with np.errstate(invalid="ignore"):
        saturated = values >= saturation if np.isfinite(saturation) else np.zeros(values.size, bool)
    return out, saturated


def _blocks(series, indices: list[int], block_frames: int, block_pixels: int) -> list[tuple[int, int]]:
    """(start, stop) of the blocks that cover ``indices``: runs of consecutive frames cut at the size limits."""
    idx = np.asarray(sorted(indices), dtype=np.int64)
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    offsets = np.concatenate([[0], np.cumsum(series.nnz)])  # first stored pixel of each frame
    out = []
    for run in np.split(idx, cut):
        start, last = int(run[0]), int(run[-1])
        while start <= last:
            # the furthest stop within the pixel limit, at least one frame, at most block_frames
            stop = int(np.searchsorted(offsets, offsets[start] + block_pixels, side="right")) - 1
            stop = min(max(stop, start + 1), start + block_frames, last + 1)
            out.append((start, stop))
            start = stop
    return out


def run_sparse(series, indices, *, config: Config, context, writer=None,
               progress: Callable[[int, int, int], None] | None = None, block_frames: int = BLOCK_FRAMES,
               block_pixels: int = BLOCK_PIXELS) -> list[pd.DataFrame]:
    """Process frames of an ImageD11 sparse scan block by block (see the module).

    Parameters
    ----------
    series : SparseSeries
    indices : sequence of int
        Frames to process.
    config : Config
    context : Context
        From :func:`braggflow.pipeline.prepare` and :func:`braggflow.pipeline.measure_series`.
    writer : ResultsWriter, optional
        Gets each block's peaks and frames-table rows (:meth:`~braggflow.io.writer.ResultsWriter.add_frames`).
    progress : callable(done, total, peaks), optional
        Called after every block.
    block_frames, block_pixels : int
        Most frames and most stored pixels in a block.

    Returns
    -------
    tables : list of pandas.DataFrame
        Each block's peak table when there is no writer; empty with one.

    Raises
    ------
    InputFileError
        If a block's pixels cannot be read (the blocks before it are recorded).
    BraggflowError
        From the per-frame pipeline, for a frame it processes.
    """
    from braggflow.find.sparse_batch import find_peaks_in_pixels
    from braggflow.pipeline.selection import check_selection

    check_selection(config.find, geometry_known=context.geometry is not None)
    indices = list(indices)
    tables: list[pd.DataFrame] = []
    done = n_peaks = 0
    hot = int(np.count_nonzero(context.hot_pixels)) if context.hot_pixels is not None else 0
    wanted = np.zeros(len(series), dtype=bool)
    wanted[np.asarray(indices, dtype=np.int64)] = True
    for start, stop in _blocks(series, indices, block_frames, block_pixels):
        t0 = time.perf_counter()
        frame_index, rows, cols, raw = series.pixels(start, stop)
        frames = np.arange(start, stop, dtype=np.int64)[wanted[start:stop]]
        keep = wanted[frame_index]
        values, saturated = correct_pixels(raw[keep], config.correct, context.saturation)
        found = find_peaks_in_pixels(frame_index[keep], rows[keep], cols[keep], values, shape=series.shape,
                                     config=config.find, threshold_noise=context.threshold_noise,
                                     gain=config.correct.gain, mask=context.mask, frames=frames, saturated=saturated)
        table, frame_rows = _block_results(series, found, context, hot, time.perf_counter() - t0)
        table, frame_rows = _selected(table, frame_rows, config)
        if found.dense.any():
            table, frame_rows = _with_dense_frames(series, found.frames[found.dense], table, frame_rows, config,
                                                   context)
        if writer is not None:
            writer.add_frames(frames, table, frame_rows)
        else:
            tables.append(table)
        done += len(frames)
        n_peaks += len(table)
        if progress is not None:
            progress(done, len(indices), n_peaks)
    return tables


def _selected(table: pd.DataFrame, frame_rows: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The block's peaks within find.max_size / find.d_min / find.d_max, and its frames' n_peaks counted again."""
    from braggflow.pipeline.selection import select_peaks

    kept = select_peaks(table, config.find)
    if kept is table:
        return table, frame_rows
    counts = kept.groupby("frame").size()
    frame_rows = frame_rows.assign(n_peaks=counts.reindex(frame_rows["frame"].to_numpy(), fill_value=0).to_numpy())
    return conform(kept), frame_rows


def _omega(series, frames: np.ndarray) -> np.ndarray:
    """Rotation angle at the centre of each frame, degrees (NaN without omega)."""
    if series.omega is None:
        return np.full(frames.size, np.nan)
    return np.mean(series.omega[frames], axis=1)


def _block_results(series, found, context, hot: int, seconds: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The block's peak table (omega, geometry) and frames table (the block's time shared by its frames)."""
    table = found.peak_table()
    table["omega"] = _omega(series, table["frame"].to_numpy())
    if context.geometry is not None and len(table):
        from braggflow.geometry import add_geometry_columns

        table = conform(add_geometry_columns(table, context.geometry))
    decided = ~found.dense
    frames = found.frames[decided]
    rows = frames_table(pd.DataFrame({
        "frame": frames, "omega": _omega(series, frames), "n_peaks": found.n_peaks[decided],
        "background": found.background[decided], "noise": found.noise[decided],
        "saturated": found.saturated[decided], "zingers": found.zingers[decided],
        "hot_pixels": np.full(frames.size, hot), "thresholded": np.ones(frames.size, dtype=bool),
        "time": np.full(frames.size, seconds / max(frames.size, 1)),
    }))
    return table, rows


def _with_dense_frames(series, dense, table, frame_rows, config, context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add the frames the batch did not decide, processed by :func:`braggflow.pipeline.analyse_frame`."""
    from braggflow.pipeline import analyse_frame

    tables, rows = [table], [frame_rows]
    for i in dense.tolist():
        result = analyse_frame(series[i], config=config, context=context, frame_index=i,
                               omega=series.omega_centre(i), name=series.describe_frame(i))
        tables.append(result.table)
        rows.append(frames_table([result.row]))
    table = pd.concat([conform(t) for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) \
        else empty_peak_table()
    table = conform(table.sort_values("frame", kind="stable"))
    frame_rows = pd.concat(rows, ignore_index=True).sort_values("frame", kind="stable").reset_index(drop=True)
    return table, frame_rows
