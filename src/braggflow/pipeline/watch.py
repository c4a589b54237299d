"""Live mode: process frames while the detector writes them.

:func:`watch` follows a SOURCE that grows during an experiment:

- a folder into which the detector writes numbered files (TIFF, CBF, EDF,
  HDF5, ... anything :func:`braggflow.io.frames.open_frames` reads), one or
  more frames per file, taken in natural name order; or
- one HDF5 file whose frame dataset is being appended by a writer in SWMR
  (single-writer, multiple-reader) mode.

Each frame is processed once, in order, as soon as it is complete, with the
same per-frame function as ``braggflow run`` (:func:`braggflow.pipeline.process_frame`),
and its peaks are appended to the results file through
:class:`braggflow.io.results.ResultsWriter` (journaled at once, so a crash
loses nothing).  Three stages overlap: a reader thread looks at the source and
reads the next complete frames (at most two ahead), the calling thread (or
``workers`` processes) processes them, and a writer thread journals the
results in frame order.  A file counts as complete when its size and modification time
have stayed the same for ``settle`` seconds and it parses (for EDF, the data
block is as long as the header says); an SWMR dataset is refreshed and only
frames below its current length are read.  The watch stops after
``idle_timeout`` seconds without a new frame, when ``stop`` is set, or on
Ctrl-C, and always leaves a complete results file.  Started again on the same
output, it continues without repeating frames.

Frame indices follow the source: the cumulative frame count over the folder's
files in natural order (as ``open_frames(folder)`` numbers them), or the index
in the SWMR dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
from natsort import natsort_keygen, natsorted

from braggflow.errors import BraggflowError, InputFileError
from braggflow.io.frames import IMAGE_SUFFIXES, open_frames
from braggflow.pipeline.config import Config

__all__ = ["watch", "WatchResult", "FrameRecord"]

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx5")
WATCH_GROUP = "watch"


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
    """

    frame: int
    source: str
    t_complete: float
    t_written: float
    n_peaks: int
    process_s: float
    backlog: int

    @property
    def latency(self) -> float:
        """Seconds from frame complete to results written."""
        return self.t_written - self.t_complete


@dataclasses.dataclass
class WatchResult:
    """Summary of one :func:`watch` session.

    Attributes
    ----------
    frames : pandas.DataFrame
        The log of this session, one row per processed frame: the fields of
        :class:`FrameRecord` and ``latency`` (s).
    stopped_by : str
        "idle", "stop", "interrupt" or "max_frames".
    skipped : list of str
        Files that never became readable (reported, not processed).
    elapsed_s : float
        Duration of the session, s.
    """

    frames: pd.DataFrame
    stopped_by: str
    skipped: list[str]
    elapsed_s: float

    @property
    def n_frames(self) -> int:
        """Frames processed in this session."""
        return len(self.frames)


# --------------------------------------------------------------------------- sources


_natural_key = natsort_keygen()  # names compared as natsort orders them (scan_9 before scan_10)


def _edf_complete(path: str, size: int) -> bool:
    """Whether an EDF file holds as many data bytes as its first header declares.

    fabio reads a truncated EDF without error (zero-padded), so the header's
    ``Size`` is checked against the file size.
    """
    with open(path, "rb") as fh:
        head = fh.read(65536)
    end = head.find(b"}")
    if not head.startswith(b"{") or end < 0:
        return False
    header_len = end + 1
    while header_len < len(head) and head[header_len : header_len + 1] in (b"\n", b"\r"):
        header_len += 1
    match = re.search(rb"\bSize\s*=\s*(\d+)", head[:end])
    if match is None:
        return True  # fabio will infer it; nothing better to check
    return size >= header_len + int(match.group(1))


_fabio_quiet_lock = threading.Lock()
_fabio_quiet_depth = 0
_fabio_saved_level = logging.NOTSET


@contextlib.contextmanager
def _fabio_quiet():
    """fabio's loggers at CRITICAL while a file that may be half written is probed.

    fabio logs an error ("Error in opening ... image file is truncated") for a
    TIFF still being written and returns no data.  For the watch that only
    means "not complete yet": the exception still reaches the caller, which
    tries again and reports a file that stays unreadable after ``give_up``.
    Thread-safe and re-entrant: the level is restored when the last probe ends.
    """
    global _fabio_quiet_depth, _fabio_saved_level

    logger = logging.getLogger("fabio")
    with _fabio_quiet_lock:
        if _fabio_quiet_depth == 0:
            _fabio_saved_level = logger.level
            logger.setLevel(logging.CRITICAL)
        _fabio_quiet_depth += 1
    try:
        yield
    finally:
        with _fabio_quiet_lock:
            _fabio_quiet_depth -= 1
            if _fabio_quiet_depth == 0:
                logger.setLevel(_fabio_saved_level)


class _FolderSource:
    """Numbered frame files appearing in a folder, taken in natural order."""

    def __init__(self, folder: Path, *, settle: float, give_up: float):
        self.folder = folder
        self.suffixes = IMAGE_SUFFIXES
        self.settle = settle
        self.give_up = give_up
        self.files: list[str] = []  # names taken into the series, in order
        self.counts: list[int] = []  # frames per taken file
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first time seen this way)
        self._failing: dict[str, float] = {}  # name -> first time it failed to parse when stable
        self.skipped: list[str] = []
        self.shape = None
        self.dtype = None
        self.detector_mask = None

    def describe(self) -> str:
        return f"folder {self.folder}"

    def _listing(self) -> list[str]:
        try:
            names = [e.name for e in os.scandir(self.folder) if e.is_file() and not e.name.startswith(".")]
        except FileNotFoundError:
            raise InputFileError(f"{self.folder}: the watched folder has disappeared") from None
        return natsorted(n for n in names if n.lower().endswith(self.suffixes))

    def _stable(self, name: str, now: float) -> tuple[bool, float]:
        """Whether the file has not changed for ``settle`` s; also its mtime (s)."""
        st = os.stat(self.folder / name)
        key = (st.st_size, st.st_mtime_ns)
        old = self._seen.get(name)
        if old is None or old[:2] != key:
            self._seen[name] = (*key, now)
            since = now
        else:
            since = old[2]
        unchanged_for = max(now - since, time.time() - st.st_mtime)
        return st.st_size > 0 and unchanged_for >= self.settle, st.st_mtime

    def poll(self, now: float, *, done: set[int], limit: int = 2) -> list[tuple[int, object, int, float, str]]:
        """New complete files, in order: [(first frame index, series, n, t_complete, path)].

        Stops at the first file that is not complete yet, so frames keep their
        order, and after ``limit`` files with frames still to process (files
        whose frames are all in ``done`` are only counted).
        """
        names = self._listing()
        taken = set(self.files) | set(self.skipped)
        ready = []
        next_index = int(np.sum(self.counts))
        for name in names:
            if len(ready) >= limit:
                break
            if name in taken or self._out_of_order(name):
                continue
            stable, mtime = self._stable(name, now)
            if not stable:
                break
            path = str(self.folder / name)
            try:
                series, n, todo, frame0 = self._read_complete(name, path, now, next_index, done)
            except Exception as exc:  # not readable yet; after give_up seconds of stable size, give up
                if self._give_up(name, now, exc):
                    continue
                break
            self._failing.pop(name, None)
            if not self._same_shape(name, series):
                continue
            self.files.append(name)
            self.counts.append(n)
            if todo:
                ready.append((next_index, (series, frame0), n, mtime, path))
            next_index += n
        return ready

    def _out_of_order(self, name: str) -> bool:
        """Whether ``name`` sorts before the last file taken (then it is skipped with a warning)."""
        last = self.files[-1] if self.files else None
        if last is None or not _natural_key(name) < _natural_key(last):
            return False
        log.warning("%s appeared after %s was taken; it is out of order and ignored", name, last)
        self.skipped.append(name)
        return True

    def _read_complete(self, name: str, path: str, now: float, first: int, done: set[int]):
        """Open a stable file and parse its first frame when it has frames not in ``done``.

        Returns
        -------
        series : FrameSeries
        n : int
            Frames in the file, numbered from ``first``.
        todo : bool
            Whether one of them is not in ``done``.
        frame0 : (H, W) ndarray or None
            The first frame (pixel data parsed, not only the header) when ``todo``.

        Raises
        ------
        Exception
            Whatever reading a file still being written raises (fabio raises many types).
        """
        failing_since = self._failing.get(name)
        # fabio's own messages are muted while the file may still be being written; the
        # attempt that gives up on it lets them through, next to braggflow's warning
        muted = failing_since is None or now - failing_since < self.give_up
        with _fabio_quiet() if muted else contextlib.nullcontext():
            if name.lower().endswith(".edf") and not _edf_complete(path, os.path.getsize(path)):
                raise InputFileError(f"{path}: EDF data block shorter than its header says")
            series = open_frames(path)
            n = len(series)
            todo = any(i not in done for i in range(first, first + n))
            frame0 = series[0] if todo else None  # parse the pixel data, not only the header
        return series, n, todo, frame0

    def _give_up(self, name: str, now: float, exc: Exception) -> bool:
        """After a failed read: True (file skipped, with a warning) once it failed for ``give_up`` seconds."""
        first = self._failing.setdefault(name, now)
        if now - first < self.give_up:
            return False
        log.warning("%s stayed unreadable for %.0f s and is skipped (%s)", name, self.give_up, exc)
        self.skipped.append(name)
        return True

    def _same_shape(self, name: str, series) -> bool:
        """Whether the file's frames are shaped like the first file's (which sets the shape); skipped if not."""
        if self.shape is None:
            self.shape, self.dtype, self.detector_mask = tuple(series.shape), series.dtype, series.detector_mask
            return True
        if tuple(series.shape) == self.shape:
            return True
        log.warning("%s holds frames of shape %s, not %s like the first file; skipped",
                    name, series.shape, self.shape)
        self.skipped.append(name)
        return False

    def backlog(self, now: float) -> int:
        """Files in the folder not taken yet (the one being written included)."""
        taken = set(self.files) | set(self.skipped)
        return sum(1 for n in self._listing() if n not in taken)

    def frames(self, item, done: set[int]):
        """(index, frame, omega, name, t_complete, path) for each frame of a ready file not in ``done``."""
        first, (series, frame0), n, t_complete, path = item
        for k in range(n):
            if first + k in done:
                continue
            frame = frame0 if k == 0 else series[k]
            yield first + k, frame, series.omega_centre(k), series.describe_frame(k), t_complete, path

    def close(self) -> None:
        pass


class _SWMRSource:
    """One HDF5 file whose frame dataset grows (SWMR writer), read through ``open_frames(path, swmr=True)``."""

    def __init__(self, path: Path, dataset: str | None, *, give_up: float):
        self.path = path
        self.dataset_name = dataset
        self.give_up = give_up
        self.series = None
        self.next_index = 0
        self.skipped: list[str] = []
        self.shape = None
        self.dtype = None
        self.detector_mask = None
        self._failing_since: float | None = None
        self._warned = False

    def describe(self) -> str:
        return f"HDF5 file {self.path}" + (f"::{self.dataset_name}" if self.dataset_name else "")

    def _open(self, now: float) -> bool:
        """Open the file once it exists and holds a 3D frame dataset; False while it does not yet."""
        if not self.path.exists():
            return False
        try:
            series = open_frames(self.path, dataset=self.dataset_name, swmr=True)
        except InputFileError as exc:  # still being created, or no frame dataset yet: look again later
            since = self._failing_since = self._failing_since if self._failing_since is not None else now
            if now - since >= self.give_up and not self._warned:
                log.warning("%s: still not readable as a growing frame series after %.0f s (%s); waiting",
                            self.path, now - since, exc)
                self._warned = True
            return False
        self.series, self.dataset_name = series, series.datasets[0]
        self.shape, self.dtype, self.detector_mask = tuple(series.shape), series.dtype, series.detector_mask
        return True

    def poll(self, now: float, *, done: set[int], limit: int = 2) -> list[tuple[int, int, float]]:
        """Frames below the dataset's current length not taken yet: [(index, 1, t_seen)]."""
        if self.series is None and not self._open(now):
            return []
        n = self.series.refresh()
        ready = [(i, 1, time.time()) for i in range(self.next_index, n) if i not in done]
        self.next_index = max(self.next_index, n)
        return ready

    def backlog(self, now: float) -> int:
        """Frames written but not taken yet."""
        if self.series is None:
            return 0
        return max(0, self.series.refresh() - self.next_index)

    def frames(self, item, done: set[int]):
        index, _, t_complete = item
        yield index, self.series[index], float("nan"), self.series.describe_frame(index), t_complete, str(self.path)

    def close(self) -> None:
        if self.series is not None:
            self.series.close()
            self.series = None


def _make_source(source, *, dataset, settle, give_up):
    path = Path(source)
    if path.is_dir():
        return _FolderSource(path, settle=settle, give_up=give_up)
    if path.exists() and not path.is_file():
        raise InputFileError(f"{path}: not a folder or a file")
    if path.is_file() or path.suffix.lower() in HDF5_SUFFIXES:
        if path.suffix.lower() not in HDF5_SUFFIXES and path.is_file():
            with open(path, "rb") as fh:
                if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                    raise InputFileError(f"{path}: watch needs a folder or an HDF5 file being appended, "
                                         "not a single image file")
        return _SWMRSource(path, dataset, give_up=give_up)
    raise InputFileError(f"{path}: no such folder (watch needs an existing folder, "
                         "or an HDF5 file that may appear later)")


# --------------------------------------------------------------------------- the results file


def _check_same_source(output: Path, source) -> None:
    """Refuse to continue a results file made from another source."""
    from braggflow.io.results import read_process

    if Path(source).resolve() == output.resolve():
        raise InputFileError(f"{output}: the results file cannot be the watched source")
    earlier = read_process(output).get("source")
    if earlier and os.path.abspath(earlier) != os.path.abspath(source):
        raise InputFileError(f"{output}: holds results of {earlier}, not of {source}; choose another output file")


def _previous_log(output: Path) -> tuple[pd.DataFrame | None, int]:
    """The watch log of earlier sessions in ``output`` and their number."""
    from braggflow.io.results import read_group

    try:
        tables, attrs = read_group(output, WATCH_GROUP)
    except InputFileError:
        return None, 0
    return tables.get("frames"), int(attrs.get("sessions", 1))


# --------------------------------------------------------------------------- processing


def _process(frame, config, context, index, omega, name):
    """Process one frame; returns (peak table, seconds).  Runs in a worker process when workers > 0."""
    from braggflow.pipeline import process_frame

    t0 = time.perf_counter()
    table = process_frame(frame, config=config, context=context, frame_index=index, omega=omega, name=name)
    return table, time.perf_counter() - t0


def _warm_up(method: str) -> None:
    """Worker initializer: import the pipeline (and torch for BraggNN) before the first frame arrives."""
    import braggflow.locate  # noqa: F401
    import braggflow.pipeline  # noqa: F401

    if method == "braggnn":
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


# --------------------------------------------------------------------------- the loop


def watch(
    source,
    output,
    *,
    config: Config | None = None,
    idle_timeout: float | None = 60.0,
    poll_interval: float = 0.1,
    settle: float | None = None,
    give_up: float = 30.0,
    dataset: str | None = None,
    stop: threading.Event | None = None,
    started: threading.Event | None = None,
    max_frames: int | None = None,
    progress: Callable[[FrameRecord], None] | None = None,
    workers: int = 0,
    mask: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    flat: np.ndarray | None = None,
) -> WatchResult:
    """Process frames as a detector writes them, appending peaks to a results file.

    Parameters
    ----------
    source : str or Path
        A folder receiving numbered frame files, or an HDF5 file whose 3D
        frame dataset is appended by an SWMR writer (it may not exist yet).
    output : str or Path
        Results file (HDF5).  If it exists from an earlier watch or run of the
        same source and config, frames already in it are not processed again.
    config : Config, optional
        Pipeline options (default: ``Config()``).
    idle_timeout : float or None, optional
        Stop after this many seconds without a new frame, s; ``None``: never
        (stop with ``stop`` or Ctrl-C).
    poll_interval : float, optional
        Seconds between looks at the source when nothing is waiting.
    settle : float, optional
        A file is complete once its size and modification time have not
        changed for this many seconds (and it parses); default: the poll
        interval (so two polls see the same size).
    give_up : float, optional
        A file whose size is stable but which still cannot be read after
        this many seconds is skipped with a warning.
    dataset : str, optional
        Frame dataset of the HDF5 source (default: as
        ``open_frames(source, swmr=True)`` finds it: the NeXus default signal,
        else the Eiger data sets, else the largest 3D dataset).
    stop : threading.Event, optional
        Set it (from another thread) to stop after the current frame.
    started : threading.Event, optional
        Set by the watch once it is ready (results file open, workers
        started) and looking at the source.
    max_frames : int, optional
        Stop after processing this many frames in this session.
    progress : callable(FrameRecord), optional
        Called after each frame is written.
    workers : int, optional
        0: process frames in this process; N > 0: in N worker processes
        (started once, up to 2 N frames in flight), results still written in
        frame order.  Call from under ``if __name__ == "__main__":``.
    mask, dark, flat : (H, W) ndarray, optional
        Static arrays (override files named in ``config.correct``).

    Returns
    -------
    WatchResult
        The session's per-frame log (latency, peaks, backlog) and why it stopped.
        The log of every session is also stored in the results file as the
        group ``/entry/watch`` (table ``frames``).

    Raises
    ------
    InputFileError
        If the source is neither a folder nor an HDF5 file, a frame cannot be
        read, or ``output`` cannot be resumed (different config).
    BraggflowError
        For invalid timing options.  Frames processed before any error stay in
        ``output``, which is closed complete.
    """
    config = config or Config()
    _check_options(workers=workers, poll_interval=poll_interval, give_up=give_up, idle_timeout=idle_timeout)
    settle = poll_interval if settle is None else settle
    output = Path(output)
    src = _make_source(source, dataset=dataset, settle=settle, give_up=give_up)
    if output.exists():
        _check_same_source(output, source)
    previous_log, sessions = _previous_log(output) if output.exists() else (None, 0)
    session = _Session(src, _open_writer(output, config, source), config=config, poll_interval=poll_interval,
                       workers=workers, progress=progress, static={"mask": mask, "dark": dark, "flat": flat})
    session.reader.start()
    try:
        stopped_by = session.run(stop=stop, started=started, max_frames=max_frames, idle_timeout=idle_timeout)
    finally:
        frames_log = session.close()
        _store_log(output, source, frames_log, previous_log, sessions)
    return WatchResult(frames=frames_log, stopped_by=stopped_by, skipped=list(src.skipped),
                       elapsed_s=time.time() - session.start)


def _check_options(*, workers: int, poll_interval: float, give_up: float, idle_timeout: float | None) -> None:
    """Refuse a negative number of workers and timing options that are not positive seconds."""
    if workers < 0:
        raise BraggflowError(f"workers must be >= 0, got {workers!r}")
    for name, value in (("poll_interval", poll_interval), ("give_up", give_up)):
        if not value > 0:
            raise BraggflowError(f"{name} must be positive seconds, got {value!r}")
    if idle_timeout is not None and not idle_timeout > 0:
        raise BraggflowError(f"idle_timeout must be positive seconds or None, got {idle_timeout!r}")


def _open_writer(output: Path, config: Config, source):
    """The results file, continued: each session closes it complete (a watch has no natural end), the next appends."""
    from braggflow.io.results import ResultsWriter

    # Inputs are recorded by name only: hashing a growing folder or a file still being written means nothing.
    return ResultsWriter(output, config=config, sources=[], append=True, flush_frames=1,
                         extra_process={"mode": "watch", "source": os.path.abspath(source)})


class _Session:
    """One watch session: frames read ahead, processed (here or in workers) and journaled in frame order.

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
        self.records: list[FrameRecord] = []
        self.reader = _Reader(src, done=set(writer.done_frames), poll_interval=poll_interval)
        self.inflight: deque = deque()  # (index, processing future, t_complete, path), frame order
        self.written: deque = deque()  # journal-write futures returning FrameRecord, frame order
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

    def _take(self, item) -> None:
        """Start processing one frame (done at once without workers); wait while too many are in flight."""
        index, frame, omega, name, t_complete, path = item
        self.last_new = time.monotonic()
        if self.context is None:
            self.context = self._prepare(self.config, shape=self.src.shape, dtype=self.src.dtype,
                                         detector_mask=self.src.detector_mask, **self.static)
        if self.executor is None:
            future: Future = Future()
            future.set_result(_process(frame, self.config, self.context, index, omega, name))
        else:
            future = self.executor.submit(_process, frame, self.config, self.context, index, omega, name)
        self.inflight.append((index, future, t_complete, path))
        self.n_taken += 1
        if len(self.inflight) > 2 * self.workers:
            wait([self.inflight[0][1]])

    def _write(self, index, table, seconds, t_complete, path) -> FrameRecord:
        """Journal one frame's peaks (in the journal thread); its log record."""
        self.writer.add(index, table)
        return FrameRecord(index, path, t_complete, time.time(), len(table), seconds,
                           self.reader.frames.qsize() + len(self.inflight) + self.reader.backlog)

    def _collect(self, block: bool) -> None:
        """Hand processed frames to the journal thread and report written ones, in frame order."""
        while self.inflight and (block or self.inflight[0][1].done()):
            index, future, t_complete, path = self.inflight.popleft()
            table, seconds = future.result()
            self.written.append(self.journal.submit(self._write, index, table, seconds, t_complete, path))
        while self.written and (block or self.written[0].done()):
            record = self.written.popleft().result()
            self.records.append(record)
            self.last_new = time.monotonic()
            if self.progress is not None:
                self.progress(record)

    def _drop_unfinished(self) -> None:
        """Cancel the frames still being processed; those already done stay to be written."""
        for _, future, _, _ in self.inflight:
            future.cancel()
        self.inflight = deque(x for x in self.inflight if x[1].done() and not x[1].cancelled())

    def close(self) -> pd.DataFrame:
        """Stop reader, workers and journal thread, close the source and the results file (complete).

        Returns
        -------
        log : pandas.DataFrame
            The session's log (see :attr:`WatchResult.frames`).
        """
        self.reader.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.journal.shutdown(wait=True)
        self.src.close()
        self.writer.close(complete=True)
        log = pd.DataFrame([dataclasses.asdict(r) for r in self.records],
                           columns=[f.name for f in dataclasses.fields(FrameRecord)])
        log["latency"] = log["t_written"] - log["t_complete"]
        return log


def _store_log(output: Path, source, frames_log: pd.DataFrame, previous_log: pd.DataFrame | None,
               sessions: int) -> None:
    """Store the log of every session so far in the results file (group ``/entry/watch``)."""
    from braggflow.io.results import write_group

    full_log = frames_log if previous_log is None else pd.concat([previous_log, frames_log], ignore_index=True)
    write_group(output, WATCH_GROUP, tables={"frames": full_log},
                attrs={"source": os.path.abspath(source), "sessions": sessions + 1})
