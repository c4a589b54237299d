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
results in the order the frames were taken.  A file counts as complete when its size and modification time
have stayed the same for ``settle`` seconds and it parses (for EDF, the data
block is as long as the header says); an SWMR dataset is refreshed and only
frames below its current length are read.  The watch stops after
``idle_timeout`` seconds without a new frame, when ``stop`` is set, or on
Ctrl-C.  It closes the results file ``complete`` when every file of the source
is in it; when a file was skipped (unreadable after ``give_up`` seconds, or
not fitting the numbering below) or was not complete yet when the watch
stopped, the file is closed ``incomplete``, with its journal, and names those
files in ``/entry/watch`` (tables ``skipped`` and ``unfinished``).  Started
again on the same output, the watch continues without repeating frames.

Frame indices are keyed by file, never by arrival order.  In a folder the
first file decides the numbering: when it holds one frame and its name holds a
number, each frame's index is the number in its file's name (the last run of
digits before the suffix: ``img_0004.cbf`` is frame 4); otherwise (names
without a number, files of several frames) it is the file's position in
natural name order times the frames a file holds, plus the frame's index in
the file, and every file must hold as many frames as the first.  A file that
does not fit the numbering, or whose index another file holds, is skipped and
named.  A file already in the results file keeps its index, so a file skipped
once (unreadable) and repaired later is processed under its own index when the
watch is started again.  In an SWMR file the index is the frame's index in the
dataset.  Every peak and every row of the frames table names its file
(``source_file``) and the frame's index in it (``frame_in_file``).

With the learned finder and ``frames.skip_empty`` P (``braggflow watch
--finder learned --skip-empty [P]``), a frame whose learned ``p_empty``
reaches P is skipped: its row of the frames table is written (``frame_class``,
``p_empty``, ... and ``n_peaks`` 0: a row with ``p_empty >= P`` and no peaks
is a skipped frame), its features are not localized, integrated or stored, and
the watch log marks it (``skipped``; :attr:`WatchResult.n_skipped` counts them).

This module holds :func:`watch` and its :class:`WatchResult`.  The sources
and their completeness checks are in :mod:`braggflow.pipeline.watch_sources`,
the session (reader thread, processing, journal writer, :class:`FrameRecord`)
in :mod:`braggflow.pipeline.watch_session`; both are importable from here too.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError, InputFileError
from braggflow.pipeline.config import Config
from braggflow.pipeline.watch_session import FrameRecord, _Session
from braggflow.pipeline.watch_sources import HDF5_SUFFIXES, _FolderSource, _make_source, _SWMRSource, log  # noqa: F401

__all__ = ["watch", "WatchResult", "FrameRecord"]

WATCH_GROUP = "watch"


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
        Files this watch skipped (never readable, out of order, not
        fitting the numbering or the frame shape), not processed.
    elapsed_s : float
        Duration of the session, s.
    reasons : dict of {str: str}
        Why each skipped file was skipped.
    unfinished : list of str
        Files (or the SWMR file) with frames not processed when the watch
        stopped: not complete yet, or still unreadable before ``give_up``.
    status : str
        The results file's status: "complete" when every file of the source is
        in it, else "incomplete" (the journal kept; a later watch continues).
    """

    frames: pd.DataFrame
    stopped_by: str
    skipped: list[str]
    elapsed_s: float
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    unfinished: list[str] = dataclasses.field(default_factory=list)
    status: str = "complete"

    @property
    def n_frames(self) -> int:
        """Frames processed in this session."""
        return len(self.frames)

    @property
    def n_skipped(self) -> int:
        """Frames of this session skipped as empty (``frames.skip_empty``; counted in :attr:`n_frames`)."""
        return int(self.frames["skipped"].sum()) if "skipped" in self.frames else 0


def _check_same_source(output: Path, source) -> None:
    """Refuse to continue a results file made from another source."""
    from braggflow.io.results import read_process

    if Path(source).resolve() == output.resolve():
        raise InputFileError(f"{output}: the results file cannot be the watched source")
    process = read_process(output)
    earlier = process.get("source")
    if process.get("mode") != "watch":
        inputs = ", ".join(i["name"] for i in process.get("inputs") or []) or "a braggflow run"
        raise InputFileError(f"{output}: holds the results of a run over {inputs}, not of watching {source}; "
                             "choose another output file")
    if earlier and os.path.abspath(earlier) != os.path.abspath(source):
        raise InputFileError(f"{output}: holds results of {earlier}, not of {source}; choose another output file")


def _previous_log(output: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """The tables of ``/entry/watch`` in ``output`` (frames log, skipped files) and its attributes."""
    from braggflow.io.results import read_group

    try:
        return read_group(output, WATCH_GROUP)
    except InputFileError:
        return {}, {}


def _previous_owners(output: Path) -> dict[int, str]:
    """Frame index -> file of the frames already in ``output`` (from its frames table).

    A file whose frames name no file (no ``source_file``) is warned about: its
    frames are then matched to files by index only.
    """
    from braggflow.io.results import read_frames

    rows = read_frames(output)
    named = rows[rows["source_file"].notna()]
    if len(named) < len(rows):
        log.warning("%s: %d frames in it name no source file; a file whose frame index is among them is taken as "
                    "processed", output, len(rows) - len(named))
    return dict(zip(named["frame"].astype(int).tolist(), named["source_file"].astype(str).tolist()))


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
        Pipeline options (default: ``Config()``); with ``find.method`` learned,
        ``frames.skip_empty`` skips the frames the detector calls empty.
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
        this many seconds is skipped with a warning, and named in the
        results file (``/entry/watch/skipped``).
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
        the order the frames were taken.  Call from under ``if __name__ == "__main__":``.
    mask, dark, flat : (H, W) ndarray, optional
        Static arrays (override files named in ``config.correct``).

    Returns
    -------
    WatchResult
        The session's per-frame log (latency, peaks, backlog), why it stopped,
        the files skipped and unfinished, and the status of the results file.
        The log of every session is also stored in the results file as the
        group ``/entry/watch`` (tables ``frames``, ``skipped``, ``unfinished``;
        attributes ``source``, ``sessions``, ``numbering``, ``frames_per_file``).

    Raises
    ------
    InputFileError
        If the source is neither a folder nor an HDF5 file, a frame cannot be
        read, or ``output`` cannot be resumed (different config).
    BraggflowError
        For invalid timing options.  Frames processed before any error stay in
        ``output``, which is closed incomplete.
    """
    config = config or Config()
    _check_options(workers=workers, poll_interval=poll_interval, give_up=give_up, idle_timeout=idle_timeout)
    from braggflow.io.writer import check_output_path
    from braggflow.pipeline import resolve_device

    work = resolve_device(config)  # processed with; the file records the device as asked ("auto")
    settle = poll_interval if settle is None else settle
    output = Path(output)
    check_output_path(output)
    previous, attrs, owners = {}, {}, {}
    if output.exists():
        _check_same_source(output, source)
        previous, attrs = _previous_log(output)
        owners = _previous_owners(output)
    per_file = attrs.get("frames_per_file")
    src = _make_source(source, dataset=dataset, settle=settle, give_up=give_up, numbering=attrs.get("numbering"),
                       frames_per_file=None if per_file is None else int(per_file), owners=owners)
    session = _Session(src, _open_writer(output, config, source), config=work, poll_interval=poll_interval,
                       workers=workers, progress=progress, static={"mask": mask, "dark": dark, "flat": flat})
    session.reader.start()
    stopped_by, failed = "error", True
    try:
        stopped_by = session.run(stop=stop, started=started, max_frames=max_frames, idle_timeout=idle_timeout)
        failed = False
    finally:
        frames_log = session.stop()
        unfinished = src.pending()
        complete = not failed and not src.skipped and not unfinished
        tables, group_attrs = _watch_group(source, frames_log, previous, attrs, src, unfinished)
        session.writer.set_group(WATCH_GROUP, tables=tables, attrs=group_attrs)
        _record_inputs(session.writer, src)
        session.close(complete=complete)
    return WatchResult(frames=frames_log, stopped_by=stopped_by, skipped=list(src.skipped),
                       elapsed_s=time.time() - session.start, reasons=dict(src.reasons), unfinished=unfinished,
                       status="complete" if complete else "incomplete")


def _check_options(*, workers: int, poll_interval: float, give_up: float, idle_timeout: float | None) -> None:
    """Refuse a number of workers outside 0 .. cores and timing options that are not positive seconds."""
    from braggflow.pipeline import check_workers

    check_workers(workers)
    for name, value in (("poll_interval", poll_interval), ("give_up", give_up)):
        if not value > 0:
            raise BraggflowError(f"{name} must be positive seconds, got {value!r}")
    if idle_timeout is not None and not idle_timeout > 0:
        raise BraggflowError(f"idle_timeout must be positive seconds or None, got {idle_timeout!r}")


def _open_writer(output: Path, config: Config, source):
    """The results file, continued: each session closes it (a watch has no natural end), the next appends.

    Its inputs are the files of the source taken so far (:func:`_record_inputs`), those of earlier watches kept.
    """
    from braggflow.io.results import ResultsWriter
    from braggflow.io.writer import stored_process

    journal = output.with_name(output.name + ".journal")
    earlier = (stored_process(output).get("inputs") or []) if output.exists() or journal.exists() else []
    return ResultsWriter(output, config=config, inputs=earlier, append=True, flush_frames=1,
                         extra_process={"mode": "watch", "source": os.path.abspath(source)},
                         hit_min_peaks=config.frames.hit_min_peaks, veto_empty=config.frames.veto_empty)


def _record_inputs(writer, src) -> None:
    """Record the files the source took in ``/entry/process/inputs``: a folder's files with their sizes (SHA-256
    at a complete close); an SWMR file by name (it may still grow)."""
    if isinstance(src, _FolderSource):
        for name in src.files:
            path = src.folder / name
            if path.is_file():
                writer.add_input(path)
    elif src.shape is not None:
        writer.add_input(src.path, size=-1)


def _watch_group(source, frames_log: pd.DataFrame, previous: dict[str, pd.DataFrame], attrs: dict, src,
                 unfinished: list[str]) -> tuple[dict[str, pd.DataFrame], dict]:
    """The group ``/entry/watch``: the log of every watch so far, the files skipped and unfinished, the numbering.

    ``skipped`` (file, reason) holds the files a watch skipped that are
    still not in the results file; ``unfinished`` (file) those with frames not
    processed when this watch stopped.
    """
    previous_log = previous.get("frames")
    full_log = frames_log if previous_log is None else pd.concat([previous_log, frames_log], ignore_index=True)
    full_log["skipped"] = full_log["skipped"].fillna(False).astype(bool)  # rows of logs written without the column
    reasons = {}
    old = previous.get("skipped")
    if old is not None and len(old):
        reasons.update(zip(old["file"].astype(str), old["reason"].astype(str)))
    reasons.update(src.reasons)
    in_file = set(getattr(src, "owners", {}).values())
    reasons = {name: why for name, why in reasons.items() if name not in in_file}
    skipped = pd.DataFrame({"file": list(reasons), "reason": list(reasons.values())}, dtype=object)
    tables = {"frames": full_log, "skipped": skipped, "unfinished": pd.DataFrame({"file": unfinished}, dtype=object)}
    group_attrs = {"source": os.path.abspath(source), "sessions": int(attrs.get("sessions", 0)) + 1}
    if getattr(src, "numbering", None) is not None:
        group_attrs.update(numbering=src.numbering, frames_per_file=int(src.frames_per_file))
    return tables, group_attrs
