"""One watch session: frames read ahead, processed (here or in worker processes) and journaled in order.

:class:`_Session` runs the three overlapping stages of
:func:`braggflow.pipeline.watch.watch`: a :class:`_Reader` thread that
looks at the source and reads complete frames ahead, the processing of each
frame (:func:`_process`, in this thread or in the processes of
:func:`_start_workers`), and a writer thread that journals the results in
the order the frames were taken, one :class:`FrameRecord` per frame.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np
import pandas as pd

from braggflow.pipeline.config import Config
from braggflow.pipeline.statistics import MIN_HOT_PIXEL_FRAMES, SeriesStatistics

__all__ = ["FrameRecord"]


@dataclasses.dataclass
class FrameRecord:
    """What happened to one frame (one row of the watch log).

    Attributes
    ----------
    frame : int
        Frame index in the series.
    source : str
        File the frame came from.
    t_complete : float
        When the frame was complete, s since the epoch: the file's last
        modification (folder) or when the larger SWMR length was first seen.
    t_written : float
        When its peaks were journaled in the results file, s since the epoch.
    n_peaks : int
        Peaks found on the frame.
    process_s : float
        Seconds spent reading and processing the frame.
    backlog : int
        Complete frames still waiting when this one was written.
    skipped : bool
        The frame was skipped as empty (``frames.skip_empty``: its learned
        p_empty reached the threshold); its features were not localized,
        integrated or stored, and ``n_peaks`` is 0.
    """

    frame: int
    source: str
    t_complete: float
    t_written: float
    n_peaks: int
    process_s: float
    backlog: int
    skipped: bool = False

    @property
    def latency(self) -> float:
        """Seconds from frame complete to results written."""
        return self.t_written - self.t_complete


def _process(frame, config, context, index, omega, name):
    """Process one frame; returns (FrameResult, seconds).  Runs in a worker process when workers > 0."""
    from braggflow.pipeline import analyse_frame

    t0 = time.perf_counter()
    result = analyse_frame(frame, config=config, context=context, frame_index=index, omega=omega, name=name)
    return result, time.perf_counter() - t0


def _warm_up(method: str) -> None:
    """Worker initializer: import the pipeline (and the network inference for method nn) before the first frame."""
    import braggflow.locate  # noqa: F401
    import braggflow.pipeline  # noqa: F401

    if method == "nn":
        import braggflow.nn.inference  # noqa: F401


def _start_workers(workers: int, config: Config):
    """A pool of ``workers`` spawned processes, warmed up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_warm_up, initargs=(config.locate.method,))
    for f in [executor.submit(time.sleep, 0) for _ in range(workers)]:
        f.result()
    return executor


class _Reader(threading.Thread):
    """Looks at the source and reads complete frames ahead of processing (a bounded queue).

    Reading and the completeness checks overlap with the processing of the
    previous frame.  Errors are passed through the queue to the main thread.
    """

    def __init__(self, src, *, done: set[int], poll_interval: float, ahead: int = 2):
        super().__init__(name="braggflow-watch-reader", daemon=True)
        self.src = src
        self.done = done
        self.poll_interval = poll_interval
        self.frames: queue.Queue = queue.Queue(maxsize=ahead)
        self.backlog = 0
        self.first_poll = threading.Event()
        self._closing = threading.Event()

    def _put(self, item) -> bool:
        while not self._closing.is_set():
            try:
                self.frames.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            while not self._closing.is_set():
                ready = self.src.poll(time.monotonic(), done=self.done)
                self.first_poll.set()
                self.backlog = self.src.backlog(time.monotonic())
                if not ready:
                    self._closing.wait(self.poll_interval)
                    continue
                for item in ready:
                    for frame_item in self.src.frames(item, self.done):
                        if not self._put(frame_item):
                            return
        except BaseException as exc:  # handed to the main thread
            self.first_poll.set()
            self._put(exc)

    def close(self) -> None:
        self._closing.set()
        self.join()


class _Session:
    """One watch session: frames read ahead, processed (here or in workers) and journaled in the order taken.

    Parameters
    ----------
    src : _FolderSource or _SWMRSource
    writer : ResultsWriter
        The results file; frames in its ``done_frames`` are not processed again.
    config : Config
    poll_interval : float
        Seconds between looks at the source when nothing is waiting.
    workers : int
        0: frames processed in this thread; N > 0: in N worker processes (up to 2 N in flight).
    progress : callable(FrameRecord) or None
    static : dict
        ``mask``, ``dark``, ``flat`` arrays (or None) for the pipeline's context.
    """

    def __init__(self, src, writer, *, config: Config, poll_interval: float, workers: int,
                 progress: Callable[[FrameRecord], None] | None, static: dict):
        from braggflow.pipeline import prepare

        self._prepare = prepare
        self.src = src
        self.writer = writer
        self.config = config
        self.poll_interval = poll_interval
        self.workers = workers
        self.progress = progress
        self.static = static
        self.context = None
        self.base_context = None
        self.statistics = None
        self.measured_at = 0
        self.records: list[FrameRecord] = []
        self.reader = _Reader(src, done=set(writer.done_frames), poll_interval=poll_interval)
        self.inflight: deque = deque()  # (index, processing future, t_complete, path, (file, in file)), as taken
        self.written: deque = deque()  # journal-write futures returning FrameRecord, as taken
        self.executor = _start_workers(workers, config) if workers else None
        self.journal = ThreadPoolExecutor(max_workers=1, thread_name_prefix="braggflow-watch-writer")
        self.start = time.time()
        self.last_new = time.monotonic()
        self.n_taken = 0

    def run(self, *, stop: threading.Event | None, started: threading.Event | None, max_frames: int | None,
            idle_timeout: float | None) -> str:
        """Take frames until told to stop, idle or interrupted; every frame processed is written.

        Returns
        -------
        stopped_by : str
            "idle", "stop", "interrupt" or "max_frames".
        """
        try:
            if started is not None:
                self.reader.first_poll.wait()
                started.set()
            stopped_by = self._take_frames(stop=stop, max_frames=max_frames, idle_timeout=idle_timeout)
            self._collect(block=True)
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            self._drop_unfinished()
            self._collect(block=True)
        return stopped_by

    def _take_frames(self, *, stop, max_frames, idle_timeout) -> str:
        """Start processing each frame the reader hands over, reporting written ones; returns why it stopped."""
        while True:
            if stop is not None and stop.is_set():
                return "stop"
            if max_frames is not None and self.n_taken >= max_frames:
                return "max_frames"
            self._collect(block=False)
            try:
                item = self.reader.frames.get(timeout=self.poll_interval)
            except queue.Empty:
                if self._idle(idle_timeout):
                    return "idle"
                continue
            if isinstance(item, BaseException):
                raise item
            self._take(item)

    def _idle(self, idle_timeout: float | None) -> bool:
        """Nothing in flight, and no new frame for ``idle_timeout`` seconds."""
        if self.inflight or self.written:
            return False
        return idle_timeout is not None and time.monotonic() - self.last_new >= idle_timeout

    def _record_instrument(self) -> None:
        """Give the results file the instrument (detector, beam, geometry and its source) once the frames' shape
        is known, as ``run`` does from the start."""
        from braggflow.pipeline import instrument_record
        from braggflow.pipeline.config import with_input_geometry

        source = with_input_geometry(self.config, [])[1]  # a PONI file or the config keys: watch reads no metadata
        self.writer.instrument = instrument_record(self.base_context, source)
        self.writer.extra_process.setdefault("frame_shape", list(self.src.shape))

    def _take(self, item) -> None:
        """Start processing one frame (done at once without workers); wait while too many are in flight."""
        index, frame, omega, name, t_complete, path, file, in_file = item
        self.last_new = time.monotonic()
        if self.context is None:
            self.base_context = self._prepare(self.config, shape=self.src.shape, dtype=self.src.dtype,
                                              detector_mask=self.src.detector_mask, **self.static)
            self.context = self.base_context
            self.statistics = SeriesStatistics(self.config, self.base_context)
            self._record_instrument()
        self._learn(frame, name)
        if self.executor is None:
            future: Future = Future()
            future.set_result(_process(frame, self.config, self.context, index, omega, name))
        else:
            future = self.executor.submit(_process, frame, self.config, self.context, index, omega, name)
        self.inflight.append((index, future, t_complete, path, (file, in_file)))
        self.n_taken += 1
        if len(self.inflight) > 2 * self.workers:
            wait([self.inflight[0][1]])

    def _learn(self, frame, name) -> None:
        """Take a frame into the series statistics; hand the per-frame function new ones when due.

        The hot-pixel map starts empty and is measured over the frames seen so
        far: all of the first ``correct.hot_pixel_frames``, then one in
        ``seen / hot_pixel_frames`` (the sample thins out as the run goes on).
        The context is renewed once :data:`MIN_HOT_PIXEL_FRAMES` frames are in and
        then each time the frames seen have grown by half; frames already
        processed keep the map of their time.
        """
        seen = self.n_taken + 1
        size = self.config.correct.hot_pixel_frames
        if seen > size and seen % max(1, seen // size):
            return
        if not self.statistics.add_frame(frame, name):
            return  # the frame's error comes from its processing
        if self.statistics.n_frames >= MIN_HOT_PIXEL_FRAMES and seen >= 1.5 * self.measured_at:
            self.measured_at = seen
            self.context = self.statistics.context()

    def _write(self, index, result, seconds, t_complete, path, origin) -> FrameRecord:
        """Journal one frame's peaks and frames-table row (in the journal thread); its log record.

        ``origin`` is (file name, index of the frame in the file), stored in both tables.
        """
        table = result.table
        file, in_file = origin
        table["source_file"] = pd.Categorical([file] * len(table), categories=[file])
        table["frame_in_file"] = np.full(len(table), in_file, dtype=np.int64)
        # latency up to the moment the row is handed to the journal (the batch is written at once: flush_frames=1)
        self.writer.add(index, table, {**result.row, "source_file": file, "frame_in_file": int(in_file),
                                       "latency": time.time() - t_complete})
        return FrameRecord(index, path, t_complete, time.time(), len(table), seconds,
                           self.reader.frames.qsize() + len(self.inflight) + self.reader.backlog,
                           skipped=self._skipped(result.row))

    def _skipped(self, row: dict) -> bool:
        """Whether ``frames.skip_empty`` skipped the frame of this frames-table row (its learned p_empty)."""
        skip_empty = self.config.frames.skip_empty
        if skip_empty is None:
            return False
        from braggflow.pipeline.learned import skips_frame

        return skips_frame(float(row.get("p_empty", float("nan"))), skip_empty)

    def _collect(self, block: bool) -> None:
        """Hand processed frames to the journal thread and report written ones, in the order taken."""
        while self.inflight and (block or self.inflight[0][1].done()):
            index, future, t_complete, path, origin = self.inflight.popleft()
            result, seconds = future.result()
            self.written.append(self.journal.submit(self._write, index, result, seconds, t_complete, path, origin))
        while self.written and (block or self.written[0].done()):
            record = self.written.popleft().result()
            self.records.append(record)
            self.last_new = time.monotonic()
            if self.progress is not None:
                self.progress(record)

    def _drop_unfinished(self) -> None:
        """Cancel the frames still being processed; those already done stay to be written."""
        for _, future, *_ in self.inflight:
            future.cancel()
        self.inflight = deque(x for x in self.inflight if x[1].done() and not x[1].cancelled())

    def stop(self) -> pd.DataFrame:
        """Stop reader, workers and journal thread; the source and the results file stay open.

        Returns
        -------
        log : pandas.DataFrame
            The session's log (see :attr:`WatchResult.frames`).
        """
        self.reader.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.journal.shutdown(wait=True)
        log = pd.DataFrame([dataclasses.asdict(r) for r in self.records],
                           columns=[f.name for f in dataclasses.fields(FrameRecord)])
        log["latency"] = log["t_written"] - log["t_complete"]
        return log

    def close(self, *, complete: bool) -> None:
        """Close the source and the results file: ``complete``, or ``incomplete`` with its journal kept."""
        try:
            self.src.close()
        finally:
            self.writer.close(complete=complete)
