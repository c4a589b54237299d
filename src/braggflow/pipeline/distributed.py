"""The per-frame pipeline mapped over Dask workers: tasks of frame indices, compact results, one journal.

How the work is split, and why:

- **Workers read the frames themselves.**  The series is sent to each worker
  once (:meth:`distributed.Client.scatter` with ``broadcast``), as a reader
  that holds file names, not frames: its HDF5 handle is dropped when pickled
  and reopened on the worker's first read (:class:`braggflow.io.hdf5.HDF5Series`),
  and the detector's pixel mask it carries is left out (it is already in the
  context's static mask).  A task carries only a list of frame indices.
- **Workers return compact results.**  A task gives back a
  :class:`ChunkResult`: the peaks of its frames as one dict of NumPy columns,
  the frames-table rows as another, and the seconds the worker spent; no
  pandas object and no frame travels through the scheduler.
- **The main process only journals.**  Each finished task becomes one journal
  batch (:meth:`braggflow.io.writer.ResultsWriter.add_frames`), so the main
  process writes one small file per task and leaves the cores to the workers.
- **The task size is measured.**  The first task of every worker holds
  :data:`PROBE_FRAMES` frames; from the seconds per frame they took,
  :func:`task_frames` chooses the size of the rest so that one task lasts
  about :data:`TASK_SECONDS`, and long enough that recording the tasks (the
  measured seconds the main process takes to journal one) keeps the main
  process busy for at most :data:`MAIN_SHARE` of the time, while every worker
  still gets several tasks, so that the last ones end together.

- **Local workers start warm.**  A local cluster
  (:func:`braggflow.pipeline.cluster.local_cluster`) forks its workers from
  the main process where the platform allows, so they start with the pipeline
  imported; the main process analyses (and journals) the run's first frame
  before it starts them, so that they also inherit what a first frame loads
  (the compiled kernels read from numba's cache, the modules imported on first
  use) instead of each loading it again.
- **A worker that dies is an error of the run.**  Its tasks and the series and
  context sent to it are lost; the run stops with a
  :class:`~braggflow.errors.BraggflowError` naming the cause, after the frames
  already finished are journaled (a resumed run goes on from them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["ChunkResult", "process_chunk", "run_distributed", "run_on_workers", "task_frames",
           "worker_series", "warm_up", "PROBE_FRAMES", "TASK_SECONDS", "MAIN_SHARE"]

#: frames in the first task of each worker, whose timing sets the size of the others
PROBE_FRAMES = 2
#: seconds one task should last (its size in frames follows from the measured seconds per frame)
TASK_SECONDS = 0.75
#: the largest share of its time the main process should spend recording tasks
MAIN_SHARE = 0.1
#: tasks in flight per worker (one running, one waiting, so a worker never waits for the main process)
IN_FLIGHT = 2
#: seconds between two looks at the scheduler's worker count (a round trip to the scheduler each)
WORKERS_REFRESH = 1.0


@dataclass
class ChunkResult:
    """What a worker returns for one task: its frames' peaks and frames-table rows as NumPy columns.

    Attributes
    ----------
    frames : (F,) ndarray of int64
        The frames processed, in order; frames without peaks included.
    peaks : dict of str to (P,) ndarray
        The peak table's columns (:data:`braggflow.schema.COLUMNS`) for all ``F`` frames together.
    rows : dict of str to (F,) ndarray
        The frames-table columns (:data:`braggflow.schema.FRAME_COLUMNS`), one value per frame.
    seconds : float
        Wall time the worker spent on the task (reading included), s.
    error : BaseException or None
        The error that stopped the task at the frame after the last of ``frames`` (None: all done).
    """

    frames: np.ndarray
    peaks: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    seconds: float
    error: BaseException | None = field(default=None)

    def peak_table(self) -> pd.DataFrame:
        """The peaks as a conforming :mod:`braggflow.schema` table."""
        from braggflow.schema import conform, empty_peak_table

        if not self.peaks or not len(next(iter(self.peaks.values()))):
            return empty_peak_table()
        return conform(pd.DataFrame(self.peaks))

    def frame_rows(self) -> pd.DataFrame:
        """The frames-table rows as a DataFrame (without ``source_file``/``frame_in_file``: the writer sets them)."""
        return pd.DataFrame(self.rows)


def _columns(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """A table's columns as NumPy arrays, without the columns the writer fills from the frame index."""
    return {c: table[c].to_numpy() for c in table.columns if c not in ("source_file", "frame_in_file")}


def process_chunk(series, indices, config, context) -> ChunkResult:
    """Worker task: read and analyse frames ``indices`` of ``series``; the results as NumPy columns.

    Parameters
    ----------
    series : FrameSeries
        A reader of the input (it opens its files on the worker).
    indices : sequence of int
        Frames to process, in order.
    config : braggflow.pipeline.config.Config
    context : braggflow.pipeline.Context

    Returns
    -------
    result : ChunkResult
        A :class:`braggflow.errors.BraggflowError` raised by a frame stops the
        task there: the frames before it are returned with the error, so that
        the main process journals them before it reports the error.
    """
    from braggflow.errors import BraggflowError
    from braggflow.pipeline import analyse_frame

    start = time.perf_counter()
    tables, rows, done, error = [], [], [], None
    frame = None  # one raw-frame buffer, read into again for each frame (analyse_frame keeps no reference)
    for i in indices:
        try:
            frame = series.read(int(i), out=frame)
            result = analyse_frame(frame, config=config, context=context, frame_index=int(i),
                                   omega=series.omega_centre(int(i)), name=series.describe_frame(int(i)))
        except BraggflowError as exc:
            error = exc
            break
        tables.append(result.table)
        rows.append(result.row)
        done.append(int(i))
    nonempty = [t for t in tables if len(t)]
    peaks = _columns(pd.concat(nonempty, ignore_index=True)) if nonempty else {}
    row_columns = {k: np.asarray([r[k] for r in rows]) for k in (rows[0] if rows else {})}
    return ChunkResult(np.asarray(done, dtype=np.int64), peaks, row_columns, time.perf_counter() - start, error)


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a task's future raises when its worker died (or the data sent to it was lost)."""
    from concurrent.futures import CancelledError  # distributed's FutureCancelledError is one

    from distributed.scheduler import KilledWorker

    return (CancelledError, KilledWorker)


def task_frames(seconds_per_frame: float, *, frames_left: int, workers: int, target: float = TASK_SECONDS,
                record_seconds: float = 0.0) -> int:
    """Frames per task, from measured times: long enough for the main process, short enough to share the rest.

    A task lasts about ``target`` seconds, shorter when that leaves a worker
    fewer than four tasks of what is left (so that the last ones end
    together); but always long enough that the main process, recording one
    task of every worker in turn, is busy for at most :data:`MAIN_SHARE` of
    the time (``F >= workers * record_seconds / (MAIN_SHARE * seconds_per_frame)``):
    a main process that cannot keep up holds every worker back.

    Parameters
    ----------
    seconds_per_frame : float
        Measured on a worker (the probe tasks), s.
    frames_left : int
        Frames not yet handed out.
    workers : int
        Workers of the cluster.
    target : float
        Seconds one task should last.
    record_seconds : float
        Measured seconds the main process takes to record (journal) one task.

    Returns
    -------
    frames : int
        At least 1.
    """
    if not np.isfinite(seconds_per_frame) or seconds_per_frame <= 0:
        return PROBE_FRAMES
    by_time = target / seconds_per_frame
    by_balance = -(-frames_left // (4 * max(1, workers)))
    by_main = 0.0
    if np.isfinite(record_seconds) and record_seconds > 0:
        by_main = max(1, workers) * record_seconds / (MAIN_SHARE * seconds_per_frame)
    return max(1, min(int(round(max(min(by_time, by_balance), by_main))), max(frames_left, 1)))


def worker_series(series):
    """A copy of ``series`` for the workers: the readers' state without the detector's pixel mask.

    The pixel mask is already part of the context's static mask; everything
    else a reader holds is file names, the dataset path and per-frame metadata
    (omega), and open file handles are dropped when it is pickled.
    """
    light = copy.copy(series)
    if getattr(light, "detector_mask", None) is not None:
        light.detector_mask = None
    return light


def run_distributed(series, indices, config, context, *, client,
                    record: Callable[[np.ndarray, pd.DataFrame, dict[str, np.ndarray]], None],
                    wait_workers: float = 0.0) -> None:
    """Process frames ``indices`` of ``series`` on the workers of ``client``; ``record`` each task's results.

    Parameters
    ----------
    series : FrameSeries
    indices : sequence of int
        Frames to process.
    config : braggflow.pipeline.config.Config
    context : braggflow.pipeline.Context
    client : distributed.Client
    record : callable(frames, peaks, rows)
        Called in this process for every finished task, in the order tasks
        finish: ``frames`` (F,) int64, ``peaks`` a peak table, ``rows`` the
        frames-table rows of those frames (a dict of (F,) arrays).
    wait_workers : float
        Seconds to wait for at least one worker to join (workers of a batch
        system start when their jobs do); 0: do not wait.

    Raises
    ------
    BraggflowError
        The first error a frame raised, after every frame finished before it
        (in its task and in tasks already finished) was recorded.
    """
    from dask.distributed import as_completed

    from braggflow.errors import BraggflowError

    _LOST_WORKER = _lost_worker_errors()
    if wait_workers > 0:
        client.wait_for_workers(1, timeout=wait_workers)
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    series_f = client.scatter(worker_series(series), broadcast=True, hash=False)
    context_f = client.scatter(context, broadcast=True, hash=False)
    todo = [int(i) for i in indices]
    position = 0
    pending = as_completed()
    per_frame: list[float] = []
    recording: list[float] = []

    def submit(size: int) -> bool:
        nonlocal position
        if position >= len(todo):
            return False
        chunk = todo[position : position + size]
        position += len(chunk)
        pending.add(client.submit(process_chunk, series_f, chunk, config, context_f, pure=False))
        return True

    for _ in range(IN_FLIGHT * n_workers):
        submit(PROBE_FRAMES)
    error: BaseException | None = None
    counted = time.monotonic()
    for future in pending:
        try:
            result: ChunkResult = future.result()
        except _LOST_WORKER as exc:
            error = error or BraggflowError(
                f"a Dask worker was lost during the run ({type(exc).__name__}: {exc}); the frames finished before "
                "are kept in the results file (run again with --resume to go on)")
            continue
        finally:
            future.release()
        if len(result.frames):
            start = time.perf_counter()
            record(result.frames, result.peak_table(), result.rows)
            recording.append(time.perf_counter() - start)
            per_frame.append(result.seconds / len(result.frames))
        if result.error is not None:
            error = error or result.error
            continue
        if error is None:
            if time.monotonic() - counted > WORKERS_REFRESH:
                n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
                counted = time.monotonic()
            spf = float(np.median(per_frame[-20:])) if per_frame else float("nan")
            rec = float(np.median(recording[-20:])) if recording else 0.0
            submit(task_frames(spf, frames_left=len(todo) - position, workers=n_workers, record_seconds=rec))
    if error is not None:
        raise error


def warm_up(series, index: int, *, config, context, record: Callable[[np.ndarray, pd.DataFrame, dict], None]) -> None:
    """Analyse frame ``index`` in this process and ``record`` it, before a local cluster forks its workers.

    The first frame a process analyses loads what later frames reuse (the
    compiled kernels from numba's on-disk cache, modules imported on first
    use); workers forked after it inherit all of it, so none of them loads it
    again, and the frame's result is the run's like any other.

    Parameters
    ----------
    series : FrameSeries
    index : int
        The frame to analyse.
    config : braggflow.pipeline.config.Config
    context : braggflow.pipeline.Context
    record : callable(frames, peaks, rows)
        As :func:`run_distributed`'s: called with (1,) int64 frames, the frame's peak table and its frames-table row.

    Raises
    ------
    BraggflowError
        What the frame raised (nothing is recorded).
    """
    result = process_chunk(series, [int(index)], config, context)  # a worker's task of one frame, run here
    if result.error is not None:
        raise result.error
    record(result.frames, result.peak_table(), result.rows)


def run_on_workers(series, indices, *, config, context, writer=None, progress=None, workers: int = 0,
                   scheduler_address: str | None = None, cluster=None, local=None) -> list[pd.DataFrame]:
    """Start the workers a run asked for, process ``indices`` on them, journal each task; close what was started.

    Parameters
    ----------
    series : FrameSeries
    indices : sequence of int
        Frames to process.
    config : braggflow.pipeline.config.Config
    context : braggflow.pipeline.Context
    writer : braggflow.io.writer.ResultsWriter, optional
        Each finished task's frames become one journal batch (:meth:`~braggflow.io.writer.ResultsWriter.add_frames`).
    progress : callable(done, total, peaks), optional
        Called after every task.
    workers, scheduler_address, cluster, local
        Where the workers come from (:func:`braggflow.pipeline.cluster.start_cluster`).

    Returns
    -------
    tables : list of pandas.DataFrame
        The tasks' peak tables when there is no ``writer`` (else empty).

    Raises
    ------
    BraggflowError
        The first error a frame raised, after the frames finished before it were recorded.
    ConfigError
        For more than one source of workers, or a batch system that cannot be used here.
    """
    from braggflow.pipeline.cluster import start_cluster

    collected: list[pd.DataFrame] = []
    if not len(indices):
        return collected
    counts = {"done": 0, "peaks": 0}

    def record(frames: np.ndarray, table: pd.DataFrame, rows: dict[str, np.ndarray]) -> None:
        if writer is not None:
            writer.add_frames(frames, table, rows)
        else:
            collected.append(table)
        counts["done"] += len(frames)
        counts["peaks"] += len(table)
        if progress is not None:
            progress(counts["done"], len(indices), counts["peaks"])

    todo = [int(i) for i in indices]
    if workers and not scheduler_address and cluster is None:
        todo = todo[1:]
        warm_up(series, indices[0], config=config, context=context, record=record)
        if not todo:
            return collected
    starter = start_cluster(workers=workers, scheduler_address=scheduler_address, cluster=cluster, local=local)
    try:
        run_distributed(series, todo, config, context, client=starter.client(), record=record,
                        wait_workers=starter.wait)
    finally:
        starter.close()
    return collected
