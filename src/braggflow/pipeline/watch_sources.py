"""The sources :func:`braggflow.pipeline.watch.watch` follows, and when their frames are complete.

:class:`_FolderSource` takes the files appearing in a folder in natural name
order, once each is complete: its size and modification time unchanged for
``settle`` seconds, and it parses (for EDF, the data block as long as the
header says).  :class:`_SWMRSource` follows one HDF5 file whose frame
dataset an SWMR writer appends.  :func:`_make_source` picks one for a path.
Their warnings go to the watch's logger, ``braggflow.pipeline.watch``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from natsort import natsort_keygen, natsorted

from braggflow.errors import InputFileError
from braggflow.io.frames import IMAGE_SUFFIXES, open_frames
from braggflow.io.images import edf_complete

log = logging.getLogger("braggflow.pipeline.watch")

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx5")

_natural_key = natsort_keygen()  # names compared as natsort orders them (scan_9 before scan_10)


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


def name_number(name: str) -> int | None:
    """The number in a file name: its last run of digits, the suffix left out (``img_0004.cbf`` -> 4); None without."""
    match = re.search(r"(\d+)\D*$", os.path.splitext(name)[0])
    return int(match.group(1)) if match else None


class _FolderSource:
    """Frame files appearing in a folder, taken in natural order, each frame numbered by its file.

    The frame index of a file's frames never depends on when the file
    arrived (see :func:`braggflow.pipeline.watch.watch` for the rule), so a
    file skipped once and repaired later keeps its own index, and no index
    is given to two files.

    Parameters
    ----------
    folder : Path
    settle, give_up : float
        Seconds (see :func:`braggflow.pipeline.watch.watch`).
    numbering : {"number", "order"} or None
        How frames are numbered; None: decided by the first file taken.
    frames_per_file : int or None
        Frames in each file, with ``numbering="order"``.
    owners : dict of {int: str}, optional
        Frame index -> file name of the frames already in the results file.
    """

    def __init__(self, folder: Path, *, settle: float, give_up: float, numbering: str | None = None,
                 frames_per_file: int | None = None, owners: dict[int, str] | None = None):
        self.folder = folder
        self.suffixes = IMAGE_SUFFIXES
        self.settle = settle
        self.give_up = give_up
        self.numbering = numbering
        self.frames_per_file = frames_per_file
        self.owners: dict[int, str] = dict(owners or {})  # frame index -> file, in the results file or taken now
        self._recorded_first: dict[str, int] = {}  # file -> its first frame index in the results file
        for index, name in self.owners.items():
            self._recorded_first[name] = min(index, self._recorded_first.get(name, index))
        self.files: list[str] = []  # names taken into the series, in order
        self.counts: list[int] = []  # frames per taken file
        self.first: dict[str, int] = {}  # taken file -> index of its first frame
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first time seen this way)
        self._failing: dict[str, float] = {}  # name -> first time it failed to parse when stable
        self.skipped: list[str] = []
        self.reasons: dict[str, str] = {}  # skipped file -> why
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
        """New complete files, in order: [(first frame index, (series, first frame), n, t_complete, path)].

        Stops at the first file that is not complete yet, so frames keep their
        order, and after ``limit`` files with frames still to process (files
        whose frames are all in ``done`` are only counted).
        """
        names = self._listing()
        settled = set(self.first) | set(self.skipped)
        ready = []
        for position, name in enumerate(names):
            if len(ready) >= limit:
                break
            if name in settled or self._out_of_order(name):
                continue
            stable, mtime = self._stable(name, now)
            if not stable:
                break
            path = str(self.folder / name)
            try:
                series, first, frame0 = self._read_complete(name, path, now, position, done)
            except Exception as exc:  # not readable yet; after give_up seconds of stable size, give up
                if self._give_up(name, now, exc):
                    continue
                break
            self._failing.pop(name, None)
            if first is None or not self._same_shape(name, series):
                continue
            n = len(series)
            self.files.append(name)
            self.counts.append(n)
            self.first[name] = first
            for k in range(n):
                self.owners[first + k] = name
            if frame0 is not None:
                ready.append((first, (series, frame0), n, mtime, path))
        return ready

    def _out_of_order(self, name: str) -> bool:
        """With frames numbered by position: whether ``name`` sorts before the last file taken (then it is skipped).

        A file that appears before files already taken would move them; with
        frames numbered by the number in their names it takes its own index.
        """
        last = self.files[-1] if self.files else None
        if self.numbering == "number" or last is None or not _natural_key(name) < _natural_key(last):
            return False
        self._skip(name, f"appeared after {last} was taken (out of order; frames are numbered by position)")
        return True

    def _read_complete(self, name: str, path: str, now: float, position: int, done: set[int]):
        """Open a stable file, number its frames, and parse its first frame when it has frames not in ``done``.

        Returns
        -------
        series : FrameSeries
        first : int or None
            Index of the file's first frame (None: the file is refused, with a warning).
        frame0 : (H, W) ndarray or None
            The first frame (pixel data parsed, not only the header) when a frame is not in ``done``.

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
            if name.lower().endswith(".edf") and not edf_complete(path, os.path.getsize(path)):
                raise InputFileError(f"{path}: EDF data block shorter than its header says")
            series = open_frames(path)
            n = len(series)
            first = self._first_index(name, position, n)
            todo = first is not None and any(first + k not in done for k in range(n))
            frame0 = series[0] if todo else None  # parse the pixel data, not only the header
        return series, first, frame0

    def _first_index(self, name: str, position: int, n: int) -> int | None:
        """Index of the first frame of a file of ``n`` frames; None (and skipped) when it cannot be numbered.

        A file already in the results file keeps its index.  Otherwise the
        first file decides the numbering: a file of one frame whose name holds
        a number numbers the series by the number in each name; any other
        (names without a number, files of several frames) by position in
        natural order times the frames per file, which must then be the same
        for every file.  A file whose frames would take an index another file
        holds is refused.
        """
        first = self._recorded_first.get(name)
        if first is None:
            if self.numbering is None:
                self.numbering = "number" if n == 1 and name_number(name) is not None else "order"
                self.frames_per_file = n
            if self.numbering == "number":
                first = name_number(name)
                if first is None:
                    return self._skip(name, "its name holds no number, and frames are numbered by the number "
                                      "in each file name")
                if n != 1:
                    return self._skip(name, f"holds {n} frames, and frames are numbered by the number in each "
                                      "file name (one frame a file)")
            else:
                if n != self.frames_per_file:
                    return self._skip(name, f"holds {n} frames, not {self.frames_per_file} like the first file "
                                      "(frames are numbered by the position of the file times the frames a file)")
                first = position * n
        taken = next((i for i in range(first, first + n) if self.owners.get(i, name) != name), None)
        if taken is not None:
            return self._skip(name, f"its frame index {taken} is already held by {self.owners[taken]}")
        return first

    def _skip(self, name: str, reason: str) -> None:
        """Skip a file until the watch is started again, with a warning giving the reason."""
        log.warning("%s skipped: %s", name, reason)
        self.skipped.append(name)
        self.reasons[name] = reason

    def _give_up(self, name: str, now: float, exc: Exception) -> bool:
        """After a failed read: True (file skipped, with a warning) once it failed for ``give_up`` seconds."""
        first = self._failing.setdefault(name, now)
        if now - first < self.give_up:
            return False
        self._skip(name, f"still unreadable {self.give_up:g} s after its size settled ({exc})")
        return True

    def _same_shape(self, name: str, series) -> bool:
        """Whether the file's frames are shaped like the first file's (which sets the shape); skipped if not."""
        if self.shape is None:
            self.shape, self.dtype, self.detector_mask = tuple(series.shape), series.dtype, series.detector_mask
            return True
        if tuple(series.shape) == self.shape:
            return True
        self._skip(name, f"holds frames of shape {series.shape}, not {self.shape} like the first file")
        return False

    def pending(self) -> list[str]:
        """Files in the folder neither taken nor skipped (not complete yet, or not looked at)."""
        settled = set(self.first) | set(self.skipped)
        return [n for n in self._listing() if n not in settled]

    def backlog(self, now: float) -> int:
        """Files in the folder not taken yet (the one being written included)."""
        return len(self.pending())

    def frames(self, item, done: set[int]):
        """(index, frame, omega, name, t_complete, path, file, index in file) of each frame of a ready file not done."""
        first, (series, frame0), n, t_complete, path = item
        file = os.path.basename(path)
        for k in range(n):
            if first + k in done:
                continue
            frame = frame0 if k == 0 else series[k]
            yield first + k, frame, series.omega_centre(k), series.describe_frame(k), t_complete, path, file, k

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
        self.reasons: dict[str, str] = {}
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

    def pending(self) -> list[str]:
        """The file, when it holds frames not taken yet or exists without a readable frame dataset."""
        if self.series is None:
            return [self.path.name] if self.path.exists() else []
        try:
            waiting = self.backlog(time.monotonic())
        except InputFileError:
            waiting = 1  # no longer readable: its frames cannot be said to be in
        return [self.path.name] if waiting else []

    def frames(self, item, done: set[int]):
        index, _, t_complete = item
        yield (index, self.series[index], float("nan"), self.series.describe_frame(index), t_complete, str(self.path),
               self.path.name, index)

    def close(self) -> None:
        if self.series is not None:
            self.series.close()
            self.series = None


def _make_source(source, *, dataset, settle, give_up, numbering=None, frames_per_file=None, owners=None):
    """The source for a path: a folder (:class:`_FolderSource`) or an HDF5 file (:class:`_SWMRSource`).

    ``numbering``, ``frames_per_file`` and ``owners`` (frame index -> file) are those of
    the results file being continued, for a folder.
    """
    path = Path(source)
    if path.is_dir():
        return _FolderSource(path, settle=settle, give_up=give_up, numbering=numbering,
                             frames_per_file=frames_per_file, owners=owners)
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
