"""Writing a results file during a run: :class:`ResultsWriter`, with its journal and snapshots.

Finished frames are journaled in ``.npz`` batches (peaks and frames-table
rows in one file); the HDF5 file is written into a temporary file that
replaces the old one: during the run a snapshot of the status, the frames
table and the peaks the file held at the start, and at the end the final
file, written part by part into chunked, resizable datasets, so that memory
stays bounded whatever the number of peaks (see :mod:`braggflow.io.results`
for the layout and the crash safety).  Also
:func:`file_provenance`, the names, sizes and SHA-256 of the input files
recorded in ``/entry/process``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow import __version__
from braggflow.checksum import BackgroundChecksums, file_sha256
from braggflow.errors import BraggflowError, InputFileError
from braggflow.io.lock import results_lock
from braggflow.io.nexus import (
    column_units,
    now_iso,
    set_nxdata,
    write_frames_data,
    write_instrument,
    write_peak_map_columns,
    write_peaks_data,
    write_sample,
)
from braggflow.io.store import (
    _RESERVED,
    STATUS_COMPLETE,
    _journal_batches,
    _journal_dir,
    _read_all,
    _read_frames_table,
    _read_rows,
    _snapshot_frames,
    frames_done,
    journal_has_batches,
    read_process,
    read_status,
)
from braggflow.io.tables import _read_group_obj, _restore_group, write_table
from braggflow.schema import COLUMNS, FRAME_COLUMNS, conform, empty_peak_table, frames_table

log = logging.getLogger(__name__)

__all__ = ["ResultsWriter", "CHUNK_ROWS", "file_provenance", "stored_process", "check_output_path", "write_peaks_group",
           "scicat_path", "write_scicat"]


def file_provenance(paths: Iterable[str], *, sha256=file_sha256) -> list[dict[str, Any]]:
    """Name, size (bytes) and SHA-256 of each input file.

    Parameters
    ----------
    paths : iterable of str
    sha256 : callable(path) -> str
        What gives a file's SHA-256 (default: hash it now; the results
        writer passes its background hashes, :class:`braggflow.checksum.BackgroundChecksums`).

    Returns
    -------
    records : list of dict
        ``{"name", "size", "sha256"}``; files that do not exist get size -1.

    Raises
    ------
    OSError
        If a file cannot be read.
    """
    out = []
    for p in paths:
        p = str(p)
        if os.path.isfile(p):
            out.append({"name": os.path.abspath(p), "size": os.path.getsize(p), "sha256": sha256(p)})
        else:
            out.append({"name": p, "size": -1, "sha256": ""})
    return out


class ResultsWriter:
    """Append per-frame peak tables to a results file, safely.

    Parameters
    ----------
    path : str or Path
        Results file (``.h5``).
    config : braggflow.pipeline.config.Config, optional
        Stored as YAML text in ``/entry/process/config``.
    sources : list of str
        Input files (names, sizes and SHA-256 are recorded at close).
    inputs : list of dict, optional
        For inputs that grow while the command runs (``braggflow watch``):
        the input records (``name``, ``size``, ``sha256``) the file holds
        already, instead of ``sources``; more are added with
        :meth:`add_input`.  At a complete close each record without a SHA-256
        gets one, when its file still has the size recorded.
    resume : bool
        Continue an earlier, unfinished run: keep its frames (file snapshot and
        journal) and report them in :attr:`done_frames`.  The inputs (names,
        sizes, frame count and shape) must be those the file records.
    overwrite : bool
        Replace an existing results file wholly (groups added by later commands
        included).  Without it, and without ``resume`` or ``append``, an
        existing file is refused.
    append : bool
        Like ``resume``, and also accept a file already closed as
        ``complete``: its frames are kept and new ones appended, for runs with
        no natural end (``braggflow watch``).  The file's status goes back to
        ``running`` at once (so a crash leaves it not complete, with the
        journal) and becomes ``complete`` again at :meth:`close`.
    flush_frames : int
        Frames buffered before a journal batch is written.
    flush_seconds : float
        Longest time a finished frame waits in memory before it is journaled.
    snapshot_seconds : float
        Interval between rewrites of the HDF5 snapshot during the run.
    geometry : dict, optional
        Geometry description stored in ``/entry/process/geometry`` (JSON).
    extra_process : dict, optional
        More attributes for ``/entry/process``.
    origins : braggflow.io.frames.FrameOrigins, optional
        The file of each frame of the series: the ``source_file`` and
        ``frame_in_file`` columns of the peaks and of the frames table are set
        from it.  Without it they are stored as given.
    instrument : dict, optional
        What is known of the instrument and sample, for ``/entry/instrument``
        and ``/entry/sample`` (see :func:`braggflow.io.nexus.write_instrument`):
        ``wavelength_A``, ``energy_keV``, ``distance_mm``, ``pixel_size_mm``,
        ``beam_center``, ``masked_pixels``, ``saturation``,
        ``incidence_angle_deg``, ``tilt_angle_deg``, and ``geometry_source``
        (where the geometry came from: ``"config"``, ``"poni: FILE"``,
        ``"metadata: ..."``; also stored in ``/entry/process/geometry_source``).
    raw_frames : list of (str, str), optional
        (file, dataset) of the raw frames in HDF5 inputs, linked from
        ``/entry/instrument/detector/data``.
    models : list of dict, optional
        Models used (``name``, ``file``, ``sha256``), stored in ``/entry/process/models`` (JSON).
    hit_min_peaks : int, optional
        The hit rule of the frames table: a frame with at least this many
        peaks is a hit (its ``hit`` column); None: ``hit`` as the rows give it.
    veto_empty : bool
        Store the peaks of hits only: the peaks of other frames are counted
        (``n_peaks``), not stored.  Needs ``hit_min_peaks``.

    Notes
    -----
    The writer holds the file's lock (:func:`braggflow.io.lock.results_lock`)
    from its creation to :meth:`close`: a second writer is refused.

    Memory stays bounded whatever the number of peaks: finished frames go to
    the journal; a snapshot during the run holds the peaks the file held when
    the writer started (copied as stored), the frames table of every frame
    recorded and the status, so that its cost does not grow with the run; and
    :meth:`close` writes the final file part by part (one journal batch, or
    :data:`CHUNK_ROWS` rows of the earlier file, at a time) into chunked,
    resizable datasets.  Readers (:func:`braggflow.io.results.read_peaks`)
    merge the snapshot and the journal during the run.

    Raises
    ------
    InputFileError
        If another process writes the file; if the file exists and neither
        ``resume``, ``append`` nor ``overwrite`` is given; if ``resume`` is asked
        for a file that is complete (without ``append``); or if
        ``resume``/``append`` is asked for a file whose config or inputs differ.
    """

    def __init__(
        self,
        path,
        *,
        config=None,
        sources: list[str] | None = None,
        resume: bool = False,
        append: bool = False,
        overwrite: bool = False,
        flush_frames: int = 8,
        flush_seconds: float = 1.0,
        snapshot_seconds: float = 30.0,
        geometry: dict | None = None,
        extra_process: dict | None = None,
        origins=None,
        inputs: list[dict] | None = None,
        instrument: dict | None = None,
        raw_frames: list[tuple[str, str]] | None = None,
        models: list[dict] | None = None,
        hit_min_peaks: int | None = None,
        veto_empty: bool = False,
    ):
        if veto_empty and hit_min_peaks is None:
            raise ValueError("veto_empty needs hit_min_peaks (the rule that says which frames are hits)")
        self.hit_min_peaks = None if hit_min_peaks is None else int(hit_min_peaks)
        self.veto_empty = bool(veto_empty)
        self.path = Path(path)
        self.instrument = dict(instrument or {})
        self.raw_frames = [(str(f), str(d)) for f, d in (raw_frames or [])]
        self.models = [dict(m) for m in (models or [])]
        self.start_time = now_iso()
        self.origins = origins
        self.config = config
        self.sources = [str(s) for s in (sources or [])]
        self._inputs = None if inputs is None else [dict(r) for r in inputs]
        if self._inputs is not None:
            self.sources = [str(r["name"]) for r in self._inputs]
        self.flush_frames = flush_frames
        self.flush_seconds = flush_seconds
        self.snapshot_seconds = snapshot_seconds
        self.geometry = geometry
        self.extra_process = dict(extra_process or {})
        self.journal = _journal_dir(self.path)
        self._buffer: list[pd.DataFrame] = []
        self._buffer_sizes: list[tuple[int, int]] = []  # (frame, peaks) of each buffered table
        self._buffer_frames: list[int] = []
        self._frame_rows: list[dict] = []
        self._frames_parts: list[pd.DataFrame] = []  # the frames table: one row per frame, small
        self._base_frames: set[int] = set()  # frames whose peaks the file held when the writer started
        self.peaks_stored = 0  # rows of /entry/peaks at the last close
        self._last_flush = time.monotonic()
        self._last_snapshot = time.monotonic()
        self._batch = 0
        self.done_frames: set[int] = set()
        self.frames_added = 0  # by this writer (a resumed run's earlier frames not counted)
        self._closed = False
        self._groups: dict[str, Any] = {}  # groups set by the command, written with the next snapshot
        self._lock = contextlib.ExitStack()
        check_output_path(self.path)
        self._lock.enter_context(results_lock(self.path))
        # the inputs' SHA-256 (recorded at a complete close) are hashed while the run goes on
        hashed = self.sources if self._inputs is None else [r["name"] for r in self._inputs if r.get("size", -1) >= 0]
        self._checksums = BackgroundChecksums(hashed)
        self._lock.callback(self._checksums.stop)
        try:
            exists = self.path.exists() or self.journal.exists()
            if (resume or append) and exists:
                self._continue(append=append)
            elif exists and not overwrite:
                raise InputFileError(f"{self.path}: results file exists; use --overwrite to replace it (the whole "
                                     "file) or --resume to continue it")
            else:
                self._start()
            self.journal.mkdir(parents=True, exist_ok=True)
            self._write_journal_process()
        except BaseException:
            self._lock.close()
            raise

    def _continue(self, *, append: bool) -> None:
        """Take over the frames already in the file (snapshot and journal) of the run being resumed.

        Raises
        ------
        InputFileError
            If the run is complete (without ``append``) or its config differs.
        """
        process = self._stored_process()
        status = process.pop("_status")
        if status == STATUS_COMPLETE and not append:
            raise InputFileError(
                f"{self.path}: run is already complete; nothing to resume (remove --resume to start again)"
            )
        if self.config is not None and _config_differs(process.get("config", ""), self.config):
            raise InputFileError(
                f"{self.path}: cannot resume with a different configuration than the run that wrote it"
            )
        self._check_same_inputs(process)
        self.start_time = _stored_start_time(self.path) or self.start_time
        self.done_frames = frames_done(self.path)  # snapshot and journal, without reading their peaks
        self._base_frames = _snapshot_frames(self.path)
        self._frames_parts = [_read_frames_table(self.path)]
        self._batch = 1 + max((int(p.stem.split("_")[1]) for p in self.journal.glob("batch_*.npz")), default=-1)
        if status == STATUS_COMPLETE:  # append: not complete any more until closed
            self._write_file("running")

    def _stored_process(self) -> dict:
        """The process record of the run being continued, with its status under ``"_status"`` (see
        :func:`stored_process`)."""
        return stored_process(self.path)

    def add_input(self, path, *, size: int | None = None) -> None:
        """Record one more input file (with ``inputs``): its name and size now; its SHA-256 at a complete close.

        Parameters
        ----------
        path : str or Path
        size : int, optional
            Its size in bytes (default: as it is now); -1 for a file still growing (no size, no checksum).
        """
        if self._inputs is None:
            raise RuntimeError(f"{self.path}: add_input needs a writer made with inputs=")
        name = os.path.abspath(path)
        if name in self.sources:
            return
        self._inputs.append({"name": name, "size": os.path.getsize(name) if size is None else int(size),
                             "sha256": ""})
        self.sources.append(name)

    def _input_records(self, *, provenance: bool) -> list[dict]:
        """The inputs for ``/entry/process/inputs``: with sizes and SHA-256 when ``provenance``, else names.

        The SHA-256 are those hashed in the background since the writer started
        (:class:`braggflow.checksum.BackgroundChecksums`), for files unchanged since.
        """
        if self._inputs is None:
            return file_provenance(self.sources, sha256=self._checksums.sha256) if provenance else [
                {"name": s, "size": -1, "sha256": ""} for s in self.sources]
        if provenance:
            for record in self._inputs:
                name, size = record["name"], record.get("size", -1)
                if not record.get("sha256") and size >= 0 and os.path.isfile(name) and os.path.getsize(name) == size:
                    record["sha256"] = self._checksums.sha256(name)
        return [dict(r) for r in self._inputs]

    def _write_journal_process(self) -> None:
        """Keep the run's process record (config, inputs, frame count and shape) in the journal too."""
        record = {"config": self.config.to_yaml() if self.config is not None else "",
                  "inputs": self._input_records(provenance=False), **self.extra_process}
        tmp = self.journal / ".process.json.tmp"
        tmp.write_text(json.dumps(record, default=str))
        os.replace(tmp, self.journal / "process.json")

    def _check_same_inputs(self, process: dict) -> None:
        """Refuse to continue a file recorded from other inputs (names, sizes, frame count, frame shape).

        Raises
        ------
        InputFileError
            Naming what differs.
        """
        stored = process.get("inputs") or []
        old_names = [os.path.abspath(i["name"]) for i in stored]
        new_names = [os.path.abspath(s) for s in self.sources]
        if stored and old_names != new_names:
            shown = ", ".join(old_names[:3]) + (f" and {len(old_names) - 3} more" if len(old_names) > 3 else "")
            raise InputFileError(f"{self.path}: holds results of {shown}, not of the inputs given; "
                                 "choose another output file (or --overwrite)")
        for item in stored:
            size = item.get("size", -1)
            name = os.path.abspath(item["name"])
            if size is not None and size >= 0 and os.path.exists(name) and os.path.getsize(name) != size:
                raise InputFileError(f"{self.path}: its input {name} has changed since ({size} bytes recorded, "
                                     f"{os.path.getsize(name)} now); choose another output file (or --overwrite)")
        for key in ("frames_total", "frame_shape"):
            old, new = process.get(key), self.extra_process.get(key)
            if old is None or new is None:
                continue
            old = json.loads(old) if isinstance(old, str) and old.startswith("[") else old
            if (list(old) if isinstance(old, (list, tuple, np.ndarray)) else old) != new:
                raise InputFileError(f"{self.path}: was written from inputs with {key} {old}, these have {new}; "
                                     "choose another output file (or --overwrite)")

    def _start(self) -> None:
        """Start a new file: an earlier file (with every group in it) and journal are removed."""
        self.path.unlink(missing_ok=True)
        self._empty_journal()
        self._write_file("running")

    def _empty_journal(self) -> None:
        if self.journal.exists():
            for p in self.journal.iterdir():
                p.unlink()

    # -- appending
    def add(self, frame_index: int, table: pd.DataFrame, frame_row: dict | None = None) -> None:
        """Record the peak table of one finished frame (may be empty).

        Parameters
        ----------
        frame_index : int
        table : pandas.DataFrame
            Peaks of that frame (journaled with its ``frame`` column set to
            ``frame_index``).  It is kept as it is, not copied, until its batch
            is journaled (after at most ``flush_frames`` frames or
            ``flush_seconds``): the caller must not change it in place meanwhile.
        frame_row : dict, optional
            The frame's row of the frames table (:data:`braggflow.schema.FRAME_COLUMNS`).
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        frame_row = None if frame_row is None else {**frame_row, "frame": int(frame_index)}
        if self.hit_min_peaks is not None:
            n = len(table) if frame_row is None else int(frame_row.get("n_peaks", len(table)))
            hit = n >= self.hit_min_peaks
            if frame_row is not None:
                frame_row["hit"] = hit
            if self.veto_empty and not hit:
                table = table.iloc[:0]
        if len(table):  # its frame column and its origin are set on the whole batch, at flush
            self._buffer.append(table)  # never changed here: its frame and origin columns are set as it is journaled
            self._buffer_sizes.append((int(frame_index), len(table)))
        self._buffer_frames.append(int(frame_index))
        if frame_row is not None:
            self._frame_rows.append(frame_row)
        self.done_frames.add(int(frame_index))
        self.frames_added += 1
        now = time.monotonic()
        if len(self._buffer_frames) >= self.flush_frames or now - self._last_flush >= self.flush_seconds:
            self.flush()
        if now - self._last_snapshot >= self.snapshot_seconds:
            self.snapshot()

    def add_frames(self, frame_indices, table: pd.DataFrame, frame_rows: pd.DataFrame | dict | None = None) -> None:
        """Record many finished frames at once: their peaks and frames-table rows, as one journal batch.

        Frames buffered by :meth:`add` are journaled first, so that batches keep
        the order in which frames were recorded.  The batch has the layout of
        :meth:`flush` (one ``batch_*.npz`` with the peaks and the frames-table rows).

        Parameters
        ----------
        frame_indices : (F,) array_like of int
            The frames, each once (frames without peaks included).
        table : pandas.DataFrame
            Peaks of those frames, their ``frame`` column set (may be empty); written as given, not copied per frame.
        frame_rows : pandas.DataFrame or dict of array_like, optional
            The frames' rows of the frames table (:data:`braggflow.schema.FRAME_COLUMNS`), one per frame
            (without a ``frame`` column: in the order of ``frame_indices``).

        Raises
        ------
        RuntimeError
            If the writer is closed.
        ValueError
            If a frame is given twice, a peak's frame is not one of ``frame_indices``, or ``frame_rows`` holds
            other frames.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        frames = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        if np.unique(frames).size != frames.size:
            raise ValueError("add_frames: a frame is given twice")
        if len(table) and not np.isin(table["frame"].to_numpy(), frames).all():
            raise ValueError("add_frames: a peak's frame is not one of frame_indices")
        rows = None
        if frame_rows is not None:
            given = pd.DataFrame(frame_rows) if isinstance(frame_rows, dict) else frame_rows
            if len(given) != frames.size:
                raise ValueError(f"add_frames: {len(given)} frames-table rows for {frames.size} frames")
            rows = frames_table(given)
            if "frame" not in given:
                rows["frame"] = frames
            elif not np.array_equal(np.sort(rows["frame"].to_numpy()), np.sort(frames)):
                raise ValueError("add_frames: the frames of frame_rows are not frame_indices")
        self.flush()
        if frames.size == 0:
            return
        table = conform(table)
        table["frame"] = table["frame"].to_numpy(dtype=np.int64)
        if self.hit_min_peaks is not None:
            counts = (rows["n_peaks"].to_numpy() if rows is not None else
                      np.array([np.count_nonzero(table["frame"].to_numpy() == f) for f in frames]))
            hits = counts >= self.hit_min_peaks
            if rows is not None:
                rows["hit"] = hits
            if self.veto_empty and len(table):
                hit_frames = (rows["frame"].to_numpy() if rows is not None else frames)[hits]
                table = conform(table[np.isin(table["frame"].to_numpy(), hit_frames)])
        if self.origins is not None and rows is not None:
            self.origins.fill(rows)
        self._journal_batch(table, frames, rows)
        self.done_frames.update(frames.tolist())
        self.frames_added += int(frames.size)
        if time.monotonic() - self._last_snapshot >= self.snapshot_seconds:
            self.snapshot()

    def flush(self) -> None:
        """Write buffered frames to the journal (atomic rename of one batch file)."""
        if not self._buffer_frames:
            return
        frames = np.asarray(self._buffer_frames, dtype=np.int64)
        sizes = np.asarray(self._buffer_sizes, dtype=np.int64).reshape(-1, 2)
        peak_frames = np.repeat(sizes[:, 0], sizes[:, 1])
        rows = None
        if self._frame_rows:
            rows = frames_table(self._frame_rows)
            if self.origins is not None:
                self.origins.fill(rows)
        self._journal_batch(self._buffer, frames, rows, peak_frames=peak_frames)
        self._buffer, self._buffer_sizes, self._buffer_frames, self._frame_rows = [], [], [], []

    def _journal_batch(self, tables: pd.DataFrame | list[pd.DataFrame], frames: np.ndarray, rows: pd.DataFrame | None,
                       *, peak_frames: np.ndarray | None = None) -> None:
        """One journal batch: the peaks and the frames-table rows in one file (``f``-prefixed keys for the rows), so
        that a batch is there with both or not at all; one write and one sync.

        ``tables`` is the batch's peak table, or the peak tables of its frames
        (conforming) with ``peak_frames`` (the frame of each of their rows, in
        order), written as one without being joined into one table first.
        """
        tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
        if peak_frames is None:
            peak_frames = np.concatenate([t["frame"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
        origin = self.origins.lookup(peak_frames) if self.origins is not None and peak_frames.size else None
        arrays = _journal_arrays(tables, COLUMNS, frame=peak_frames, origin=origin)
        arrays["frames_done"] = frames
        if rows is not None and len(rows):
            arrays.update({f"f{key}": values for key, values in _journal_arrays([rows], FRAME_COLUMNS).items()})
            self._frames_parts.append(rows)
        self._write_journal_file(f"batch_{self._batch:08d}", arrays)
        self._batch += 1
        self._last_flush = time.monotonic()

    def _write_journal_file(self, stem: str, arrays: dict[str, np.ndarray]) -> None:
        """``stem.npz`` in the journal, written to a temporary name, synced and renamed (atomic)."""
        tmp = self.journal / f".tmp_{stem}.npz"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.journal / f"{stem}.npz")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._write_error(exc, "its journal") from exc

    def snapshot(self, status: str = "running") -> None:
        """Rewrite the HDF5 file (atomically): its status, the frames table of every frame recorded so far, and
        the peaks the file held when the writer started (the run's own peaks are in the journal until
        :meth:`close`; :func:`braggflow.io.results.read_peaks` merges both)."""
        self.flush()
        self._write_file(status)
        self._last_snapshot = time.monotonic()

    def set_group(self, name: str, *, tables: dict[str, pd.DataFrame] | None = None,
                  attrs: dict[str, Any] | None = None) -> None:
        """Add or replace the group ``/entry/<name>``, written with the next snapshot (at :meth:`close` at the latest).

        The group is written in the same atomic replacement as the peaks and
        the status, so a reader never sees one without the other.

        Parameters
        ----------
        name : str
            Group name (not ``peaks``, ``process``, ``frames_done`` or ``frames``).
        tables : dict of {str: DataFrame}, optional
            Each becomes a sub-group with one dataset per column.
        attrs : dict, optional
            Attributes (str, int, float; anything else is stored as JSON).

        Raises
        ------
        ValueError
            If ``name`` is reserved.
        """
        if name in _RESERVED or "/" in name:
            raise ValueError(f"group name {name!r} is reserved or invalid")
        clean = {k: v if isinstance(v, (int, float, str, np.integer, np.floating)) else json.dumps(v)
                 for k, v in (attrs or {}).items()}
        self._groups[name] = ({k: t.reset_index(drop=True) for k, t in (tables or {}).items()}, clean)

    def table(self) -> pd.DataFrame:
        """Every peak recorded so far (those of a resumed run included), sorted by frame; read from the files."""
        self.flush()
        table, _ = _read_all(self.path, journal_only_extra=True)
        return table

    def close(self, complete: bool = True) -> None:
        """Consolidate journal and snapshot into the final file.

        Parameters
        ----------
        complete : bool
            Mark the file ``complete`` and remove the journal; otherwise mark it
            ``incomplete`` and keep the journal for ``resume``.

        Raises
        ------
        BraggflowError
            If the file cannot be written (a full disk, a file size limit, an
            I/O error): the journal is left as it was, no temporary file stays,
            and the writer is closed (its lock released) all the same.
        """
        if self._closed:
            return
        try:
            self.flush()
            stored = self._write_file(STATUS_COMPLETE if complete else "incomplete", final=True, provenance=complete)
            if complete and self.journal.exists():
                self._empty_journal()
                self.journal.rmdir()
            self._write_scicat(stored, complete=complete)
        finally:  # a write that failed leaves the journal for --resume; the lock goes with the writer
            self._closed = True
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)
        return False

    # -- file writing
    def _write_file(self, status: str, *, final: bool = False, provenance: bool = False) -> dict[str, Any]:
        """Write the HDF5 file into a temporary file that replaces it (atomic rename).

        With ``final``, every peak (the file's and the journal's) is written,
        part by part (:meth:`_write_all_peaks`); otherwise the peaks the file
        held when the writer started are copied as stored.  The frames table
        holds every frame recorded.

        Returns
        -------
        stored : dict
            ``peaks`` (rows written), ``frames`` (frames whose peaks are in the file), ``frames_with_peaks``.

        Raises
        ------
        BraggflowError
            If the file cannot be written (no temporary file is left).
        """
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        groups = {**(_copy_groups(self.path) if self.path.exists() else {}), **self._groups}
        frame_rows = self._frames_table()
        try:
            with open(tmp, "w+b") as fh:
                # HDF5 writes through a guard that keeps a failed write (a full disk, the file size limit) from
                # HDF5, which does not recover from one; the error is raised once the file is closed.
                guard = _WriteGuard(fh)
                # a chunk cache of two chunks per dataset: columns are appended in order, a full chunk is done
                with h5py.File(guard, "w", rdcc_nbytes=2 * CHUNK_ROWS * 8, rdcc_w0=1.0) as h5:
                    entry = _new_entry(h5, status, name=self.path.name, start_time=self.start_time)
                    stored = self._write_all_peaks(entry) if final else self._copy_base_peaks(entry)
                    entry.create_dataset("frames_done", data=np.array(sorted(stored["frames"]), dtype=np.int64))
                    if len(frame_rows):
                        frames = entry.create_group("frames")
                        write_table(frames, frame_rows)
                        write_frames_data(frames, frame_rows)
                        entry.attrs["default"] = "frames"
                    self._write_process(entry.create_group("process"), provenance=provenance)
                    write_instrument(entry, self.instrument, frame_shape=self.extra_process.get("frame_shape"),
                                     raw_frames=self.raw_frames)
                    write_sample(entry, self.instrument)
                    for name, payload in groups.items():
                        _restore_group(entry, name, payload)
                guard.flush()
                if guard.error is not None:
                    raise guard.error
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise self._write_error(exc, "the HDF5 file") from exc
        return stored

    def _frames_table(self) -> pd.DataFrame:
        """The frames table of the frames recorded (one row per frame, the latest row of a frame recorded twice)."""
        parts = [p for p in self._frames_parts if len(p)]
        if not parts:
            return frames_table([])
        table = pd.concat([frames_table(p) for p in parts], ignore_index=True) if len(parts) > 1 else parts[0]
        table = table.drop_duplicates("frame", keep="last")
        table = table[table["frame"].isin(self.done_frames)].sort_values("frame", kind="stable")
        self._frames_parts = [frames_table(table.reset_index(drop=True))]
        return self._frames_parts[0]

    def _copy_base_peaks(self, entry) -> dict[str, Any]:
        """``/entry/peaks`` and ``/entry/peak_map`` copied as stored from the file the writer started from."""
        import h5py

        if self._base_frames and self.path.exists():
            try:
                with h5py.File(self.path, "r", locking=False) as src:
                    peaks = src["entry/peaks"]
                    entry.copy(peaks, "peaks")
                    if "entry/peak_map" in src:
                        entry.copy(src["entry/peak_map"], "peak_map")
                    n = int(peaks.attrs.get("nrows", len(peaks["frame"])))
                return {"peaks": n, "frames": set(self._base_frames), "frames_with_peaks": None}
            except (OSError, KeyError):  # a damaged file: its frames are read from the journal
                log.warning("%s: the HDF5 snapshot cannot be read; its frames are taken from the journal", self.path)
                self._base_frames = set()
        write_peaks_group(entry, empty_peak_table())
        return {"peaks": 0, "frames": set(), "frames_with_peaks": 0}

    def _write_all_peaks(self, entry) -> dict[str, Any]:
        """``/entry/peaks`` of every frame recorded, and ``/entry/peak_map``, written part by part.

        The parts: the peaks the file held when the writer started (read
        :data:`CHUNK_ROWS` rows at a time), then each journal batch whose frames
        are not written yet, in batch order, as its arrays (no DataFrame is
        made of it); parts are gathered up to :data:`CHUNK_ROWS` rows before
        they are written.  A journal batch that was never completely written
        is left out.
        """
        import h5py

        sink = _PeakSink(entry.create_group("peaks"))
        written: set[int] = set()
        if self._base_frames and self.path.exists():
            try:
                with h5py.File(self.path, "r", locking=False) as src:
                    group = src["entry/peaks"]
                    n = int(group.attrs.get("nrows", len(group["frame"])))
                    for start in range(0, n, CHUNK_ROWS):
                        part = conform(_read_rows(group, start, min(start + CHUNK_ROWS, n)))
                        sink.append(_journal_arrays([part], COLUMNS))
                written |= self._base_frames
            except (OSError, KeyError):
                log.warning("%s: the HDF5 snapshot cannot be read; its frames are taken from the journal", self.path)
        for part in _journal_batches(self.path, written, _batch_arrays):
            if written and "v:frame" in part:
                keep = ~np.isin(part["v:frame"], list(written))
                part = {key: values[keep] for key, values in part.items()}
            sink.append(part)
        sink.finish()
        x, y = sink.scatter_axes()
        set_nxdata(sink.group, "intensity", [x], indices={y: 0}, title=f"Bragg peaks: intensity against {x} (and {y})")
        write_peak_map_columns(entry, sink.group, x, y, frame_shape=self.extra_process.get("frame_shape"))
        self.peaks_stored = sink.rows
        return {"peaks": sink.rows, "frames": written, "frames_with_peaks": len(sink.frames)}

    def _write_scicat(self, stored: dict[str, Any], *, complete: bool) -> None:
        """The SciCat record beside the results file (:func:`write_scicat`), from what the run recorded.

        A record that cannot be written is reported as a warning: the results file is complete without it.
        """
        config = self.config.model_dump(mode="json") if self.config is not None else {}
        frames = _read_frames_table(self.path) if self.path.exists() else None
        summary = {"status": STATUS_COMPLETE if complete else "incomplete", "frames": len(stored["frames"]),
                   "peaks": int(stored["peaks"]),
                   "frames_with_peaks": int(stored["frames_with_peaks"] or 0),
                   **{k: v for k, v in self.extra_process.items() if k in ("frames_total", "frame_shape")}}
        if frames is not None and len(frames):
            summary["peaks_per_frame_median"] = float(np.median(frames["n_peaks"]))
        geometry = {**(self.geometry or {}), "source": self.instrument.get("geometry_source")}
        inputs = getattr(self, "_recorded_inputs", None) or self._input_records(provenance=False)
        record = scicat_record(self.path, config=config, inputs=inputs,
                               summary=summary, geometry=geometry if self.geometry is not None else None,
                               models=self.models, start_time=self.start_time)
        try:
            write_scicat(self.path, record)
        except OSError as exc:  # the results file is written; the catalogue record can be made again from it
            import logging

            logging.getLogger(__name__).warning("%s: SciCat record not written (%s)", scicat_path(self.path),
                                                _reason(exc))

    def _write_error(self, exc: BaseException, what: str) -> BraggflowError:
        """The one-line error for a write that failed: the file, the reason, where the frames are kept."""
        kept = (f"the frames finished so far are kept in the journal {self.journal}; once there is room, continue "
                "with --resume (or start the same watch again)" if journal_has_batches(self.path)
                else "no frame was kept")
        return BraggflowError(f"{self.path}: cannot write {what} ({_reason(exc)}); {kept}")

    def _write_process(self, proc, *, provenance: bool) -> None:
        """The ``/entry/process`` record: program, version, date, config, inputs, geometry, extra attributes.

        With ``provenance`` the inputs' sizes and SHA-256 are computed; otherwise only their names are given.
        """
        proc.attrs["NX_class"] = "NXprocess"
        proc.create_dataset("program", data="braggflow")
        proc.create_dataset("version", data=__version__)
        proc.create_dataset("date", data=_dt.datetime.now(_dt.UTC).isoformat())
        proc.create_dataset("config", data=self.config.to_yaml() if self.config is not None else "")
        self._recorded_inputs = self._input_records(provenance=provenance)
        proc.create_dataset("inputs", data=json.dumps(self._recorded_inputs))
        if self.geometry is not None:
            proc.create_dataset("geometry", data=json.dumps(self.geometry))
        if self.instrument.get("geometry_source"):
            proc.create_dataset("geometry_source", data=str(self.instrument["geometry_source"]))
        proc.create_dataset("models", data=json.dumps(self.models))
        for key, value in self.extra_process.items():
            proc.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        proc.attrs["frames_processed"] = self.frames_added
        if self.hit_min_peaks is not None:  # the rule of the frames table's hit column
            proc.attrs["hit_min_peaks"] = self.hit_min_peaks
            proc.attrs["veto_empty"] = int(self.veto_empty)


#: rows per HDF5 chunk of a peak-table column (and per slice read when copying one)
CHUNK_ROWS = 16384


class _WriteGuard(io.RawIOBase):
    """A file open for HDF5 (h5py's file-object driver) whose failed writes are kept, not raised into HDF5.

    HDF5 does not recover from a write that fails (a full disk, the file size
    limit) and may crash the process at its next flush; here the first
    failed operation is recorded in :attr:`error` and no call ever raises:
    later writes are skipped (the position still moves on), reads of what
    was not written give zeros.  HDF5 finishes normally and the caller raises
    the error once the file is closed (and removes the temporary file).
    """

    def __init__(self, fh):
        super().__init__()
        self.fh = fh
        self.error: OSError | None = None
        self.pos = 0
        self.end = 0  # the file's size as HDF5 sees it

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.end}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        if self.error is None:
            try:
                self.fh.seek(self.pos)
                n = self.fh.readinto(view) or 0
            except OSError as exc:
                self.error = exc
        view[n:] = b"\0" * (len(view) - n)  # what a failed write left out reads as zeros
        self.pos += len(view)
        return len(view)

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                self.fh.seek(self.pos)
                self.fh.write(data)
            except OSError as exc:
                self.error = exc
        self.pos += size
        self.end = max(self.end, self.pos)
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                self.fh.truncate(size)
            except OSError as exc:
                self.error = exc
        self.end = size
        return size

    def flush(self) -> None:
        if self.error is None:
            try:
                self.fh.flush()
            except OSError as exc:
                self.error = exc


class _PeakSink:
    """The peak table written into an HDF5 group part by part: chunked, resizable 1D datasets, one per column.

    The layout of :func:`braggflow.io.tables.write_table` (categories as int32
    codes with their labels, nullable integers and text with a
    ``<name>__missing`` mask, units), grown part by part.  A part is given as
    the arrays of a journal batch (:func:`_journal_arrays`' layout: ``v:``,
    ``s:``, ``x:`` and ``n:`` arrays), so journal batches are written without
    being made into DataFrames; columns a part lacks take their schema
    default (the datasets' fill value).  Parts are gathered up to
    :data:`CHUNK_ROWS` rows before they are written; only those are held in
    memory.

    Parameters
    ----------
    group : h5py.Group
        Empty group of a file open for writing.
    """

    def __init__(self, group):
        self.group = group
        self.rows = 0  # rows written
        self._kinds: dict[str, str] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._order: list[str] = []
        self._labels: dict[str, dict[str, int]] = {}
        self._pending: list[tuple[dict[str, np.ndarray], int]] = []
        self._held = 0
        self.monotonic = True  # frames never decrease from one row to the next
        self._last_frame = -np.inf
        self.frames: set[int] = set()  # frames with at least one peak
        self.finite: dict[str, bool] = {"q_xy": False, "two_theta": False}

    @property
    def columns(self) -> list[str]:
        """The columns: those of the schema in its order, then the others in the order first seen."""
        return [c for c in COLUMNS if c in self._kinds] + [c for c in self._order if c not in COLUMNS]

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Add the rows of one part (journal-batch arrays; bookkeeping arrays such as ``frames_done`` are ignored).

        Raises
        ------
        ValueError
            If the part has no ``frame`` column while it has rows.
        """
        part = {key: arrays[key] for key in arrays if key[1:2] == ":"}
        lengths = {len(v) for k, v in part.items() if k[0] in "vsx"}
        n = lengths.pop() if lengths else 0
        if n == 0:
            return
        if "v:frame" not in part:
            raise ValueError("a part of the peak table without its frame column")
        self._pending.append((part, n))
        self._held += n
        if self._held >= CHUNK_ROWS:
            self._write_pending()

    def _kind_of(self, key: str, values: np.ndarray) -> str:
        """The stored kind of a column from its journal key (``v:``, ``s:``, ``x:``) and the schema."""
        name = key[2:]
        col = COLUMNS.get(name)
        if key[0] == "s":
            return "category" if col is None or col.dtype == "category" else "string"
        return "nullable" if key[0] == "x" else "plain"

    def _add_column(self, name: str, kind: str, dtype) -> None:
        """Create the datasets of a column first seen now (the rows before it take its default)."""
        import h5py

        col = COLUMNS.get(name)
        if kind == "category":
            self._dataset(name, np.int32, "category", fill=-1)
            self._labels[name] = {}
        elif kind == "nullable":
            stored = np.dtype(pd.api.types.pandas_dtype(col.dtype).numpy_dtype) if col is not None else np.int64
            label = col.dtype if col is not None else "Int64"
            self._dataset(name, stored, f"nullable:{label}", fill=0)
            self._dataset(f"{name}__missing", bool, "", fill=True, units=False)
        elif kind == "string":
            self._dataset(name, h5py.string_dtype(), "string", units=False)
            self._dataset(f"{name}__missing", bool, "", fill=True, units=False)
        else:
            dtype = np.dtype(col.dtype) if col is not None else np.dtype(dtype)
            fill = col.default if col is not None else (np.nan if dtype.kind == "f" else 0)
            self._dataset(name, dtype, "", fill=fill)
            self._dtypes[name] = dtype
        self._kinds[name] = kind
        self._order.append(name)

    def _dataset(self, name: str, dtype, kind: str, fill=None, *, units: bool = True):
        ds = self.group.create_dataset(name, shape=(self.rows,), maxshape=(None,), dtype=dtype,
                                       chunks=(CHUNK_ROWS,), compression="gzip", compression_opts=1,
                                       fillvalue=fill)
        if kind:
            ds.attrs["kind"] = kind
        unit = column_units(name) if units else ""
        if unit:
            ds.attrs["units"] = unit
        return ds

    def _codes(self, name: str, text: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Text of a category column as codes in the labels gathered so far (new labels added; -1 = missing)."""
        labels = self._labels[name]
        unique, inverse = np.unique(text, return_inverse=True)
        mapping = np.array([labels.setdefault(str(u), len(labels)) for u in unique], dtype=np.int32)
        codes = mapping[inverse.reshape(-1)] if unique.size else np.zeros(text.size, np.int32)
        codes[missing] = -1
        return codes

    def _write_pending(self) -> None:
        """Write the parts gathered: one resize and one write per dataset."""
        if not self._pending:
            return
        parts, self._pending, self._held = self._pending, [], 0
        n = sum(size for _, size in parts)
        for part, _ in parts:
            for key, values in part.items():
                if key[0] in "vsx" and key[2:] not in self._kinds:
                    self._add_column(key[2:], self._kind_of(key, values), values.dtype)
        start, stop = self.rows, self.rows + n
        for name in self._order:
            kind = self._kinds[name]
            prefix = {"category": "s", "string": "s", "nullable": "x", "plain": "v"}[kind]
            pieces, masks, given = [], [], False
            for part, size in parts:
                values = part.get(f"{prefix}:{name}")
                if values is None:
                    pieces.append(None)
                    masks.append(np.ones(size, bool))
                    continue
                given = True
                pieces.append(values)
                masks.append(part.get(f"n:{name}", np.zeros(size, bool)))
            ds = self.group[name]
            ds.resize((stop,))
            if kind in ("nullable", "string"):
                self.group[f"{name}__missing"].resize((stop,))
            if not given:
                continue  # the fill value throughout: the default
            filled = self._filled(name, kind, pieces, [size for _, size in parts])
            missing = np.concatenate(masks)
            if kind == "category":
                ds[start:stop] = self._codes(name, filled, missing)
            elif kind in ("nullable", "string"):
                ds[start:stop] = filled.astype(object) if kind == "string" else filled
                self.group[f"{name}__missing"][start:stop] = missing
            else:
                ds[start:stop] = filled
        self._track(parts)
        self.rows = stop

    def _track(self, parts: list[tuple[dict[str, np.ndarray], int]]) -> None:
        """Note the frames of the parts written (their order, those with peaks) and whether they have q or angles."""
        frames = np.concatenate([part["v:frame"] for part, _ in parts])
        if frames[0] < self._last_frame or np.any(np.diff(frames) < 0):
            self.monotonic = False
        self._last_frame = max(self._last_frame, frames.max())
        self.frames.update(np.unique(frames).tolist())
        for name in self.finite:
            for part, _ in parts:
                values = part.get(f"v:{name}")
                if not self.finite[name] and values is not None and np.isfinite(values).any():
                    self.finite[name] = True

    def _filled(self, name: str, kind: str, pieces: list, sizes: list[int]) -> np.ndarray:
        """One column of the parts, those without it given its default."""
        if all(p is not None for p in pieces):
            return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        out = []
        for p, size in zip(pieces, sizes):
            if p is not None:
                out.append(p)
            elif kind in ("category", "string"):
                out.append(np.full(size, "", dtype=str))
            elif kind == "nullable":
                out.append(np.zeros(size, np.int64))
            else:
                col = COLUMNS.get(name)
                out.append(np.full(size, col.default if col is not None else np.nan, dtype=self._dtypes[name]))
        return np.concatenate(out)

    def finish(self) -> None:
        """Write what is gathered; set the table's attributes (columns, nrows, category labels); give every schema
        column a dataset; sort the rows by frame if they are not.

        Sorting reads one column at a time (the ``frame`` column, then each
        column in turn, reordered in place).
        """
        self._write_pending()
        for name, col in COLUMNS.items():
            if name not in self._kinds:
                kind = {"category": "category", "Int32": "nullable"}.get(col.dtype, "plain")
                self._add_column(name, kind, col.dtype if kind == "plain" else None)
        self.group.attrs["columns"] = json.dumps(self.columns)
        self.group.attrs["nrows"] = self.rows
        for name, labels in self._labels.items():
            self.group[name].attrs["labels"] = json.dumps(list(labels))
        if self.monotonic or self.rows < 2:
            return
        order = np.argsort(self.group["frame"][()], kind="stable")
        for name in list(self.group):
            ds = self.group[name]
            ds[...] = ds[()][order]
        self.monotonic = True

    def scatter_axes(self) -> tuple[str, str]:
        """The two columns to plot the peaks against (as :func:`braggflow.io.nexus.write_peaks_data` chooses)."""
        if self.finite["q_xy"]:
            return "q_xy", "q_z"
        if self.finite["two_theta"]:
            return "two_theta", "eta"
        return "col", "row"


def _journal_arrays(tables: list[pd.DataFrame], schema: dict, *, frame: np.ndarray | None = None,
                    origin: tuple | None = None) -> dict[str, np.ndarray]:
    """The arrays of a journal batch for ``tables`` written one after the other, as one table.

    The layout of :func:`braggflow.io.tables._table_to_npz_dict` (``v:``
    values, ``s:`` text of categories and strings, ``x:`` nullable integers,
    ``n:`` masks of missing values), made column by column from the parts
    without joining them into one DataFrame first.  A column of ``schema``
    whose values are all its default is left out: the readers conform what
    they read to the schema, which puts the default back.

    Parameters
    ----------
    tables : list of pandas.DataFrame
        With the same columns (else they are joined with :func:`pandas.concat` first).
    schema : dict of str to braggflow.schema.Column
        :data:`braggflow.schema.COLUMNS` or :data:`braggflow.schema.FRAME_COLUMNS`.
    frame : (N,) ndarray of int64, optional
        The ``frame`` column (set whatever the tables hold).
    origin : (pandas.Categorical, ndarray), optional
        ``source_file`` and ``frame_in_file`` of every row (:meth:`braggflow.io.frames.FrameOrigins.lookup`).

    Returns
    -------
    arrays : dict of str to ndarray
    """
    tables = [t for t in tables if len(t)] or tables[:1]
    if any(t.columns is not tables[0].columns for t in tables) and len({tuple(t.columns) for t in tables}) > 1:
        tables = [pd.concat(tables, ignore_index=True)]  # (the tables built by braggflow.schema share one Index)
    columns = [str(c) for c in tables[0].columns] if tables else []
    given: dict[str, Any] = {}
    if frame is not None:
        given["frame"] = np.asarray(frame, dtype=np.int64)
    if origin is not None:
        given["source_file"], given["frame_in_file"] = origin
    by_table = [_column_arrays(t) for t in tables]
    out: dict[str, np.ndarray] = {}
    texts: dict[int, tuple] = {}  # the text of each categories Index met, by its id (the parts often share one)
    for k, name in enumerate(columns + [c for c in given if c not in columns]):
        parts = [given[name]] if name in given else [arrays[k] for arrays in by_table]
        _encode_column(out, name, parts, schema.get(name), texts)
    return out


def _column_arrays(table: pd.DataFrame) -> list:
    """The columns of ``table`` as arrays (NumPy or pandas extension arrays), in order, without making Series."""
    get = getattr(table, "_get_column_array", None)  # pandas' own accessor, ~20x cheaper than table[name]
    if get is not None:
        return [get(i) for i in range(table.shape[1])]
    return [table.iloc[:, i].array for i in range(table.shape[1])]


def _encode_column(out: dict[str, np.ndarray], name: str, parts: list, col, texts: dict | None = None) -> None:
    """Add one column, given as parts, to journal arrays (see :func:`_journal_arrays`); all-default columns of the
    schema (``col``) are left out, ``frame`` never.  ``texts`` keeps the text of the categories met (by the id of
    their Index, which it holds) for the next parts and columns."""
    dtype = getattr(parts[0], "dtype", np.dtype(float))
    keep = col is None or name == "frame"
    if isinstance(dtype, pd.CategoricalDtype) and all(isinstance(p, pd.Categorical) for p in parts):
        codes = [np.asarray(p.codes) for p in parts]
        missing = np.concatenate([c < 0 for c in codes])
        if not keep and col.default is None and missing.all():
            return
        texts = {} if texts is None else texts
        text = [_category_text(p.categories, texts)[c] for p, c in zip(parts, codes)]
        out[f"s:{name}"], out[f"n:{name}"] = np.concatenate(text), missing
    elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iu":
        missing = np.concatenate([np.asarray(pd.isna(p)) for p in parts])
        if not keep and missing.all():
            return
        out[f"x:{name}"] = np.concatenate([np.asarray(p.to_numpy(dtype=np.int64, na_value=0)) for p in parts])
        out[f"n:{name}"] = missing
    elif isinstance(dtype, pd.api.extensions.ExtensionDtype) or dtype is np.dtype(object):
        values = [v for p in parts for v in p]
        missing = np.array([bool(pd.isna(v)) if np.ndim(v) == 0 else False for v in values], dtype=bool)
        out[f"s:{name}"] = np.array(["" if m else str(v) for v, m in zip(values, missing)], dtype=str)
        out[f"n:{name}"] = missing
    else:
        values = np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 else np.asarray(parts[0])
        if not keep and values.size and _all_default(values, col.default):
            return
        out[f"v:{name}"] = values


def _category_text(categories: pd.Index, texts: dict) -> np.ndarray:
    """The categories as text with ``""`` (code -1, missing) last; made once per Index object in ``texts``."""
    known = texts.get(id(categories))
    if known is None or known[0] is not categories:
        known = texts[id(categories)] = (categories, np.asarray([str(v) for v in categories] + [""], dtype=str))
    return known[1]


def _all_default(values: np.ndarray, default) -> bool:
    """Whether every value is the column's default (NaN for a NaN default)."""
    if isinstance(default, float) and np.isnan(default):
        return values.dtype.kind == "f" and bool(np.isnan(values).all())
    try:
        return bool(np.all(values == default))
    except (TypeError, ValueError):
        return False


def _batch_arrays(npz) -> dict[str, np.ndarray]:
    """The peak columns of a journal batch as its arrays (``v:``, ``s:``, ``x:``, ``n:``), read in full.

    Raises
    ------
    KeyError, ValueError, OSError
        For a batch that cannot be read.
    """
    return {key: npz[key] for key in npz.files if key[1:2] == ":"}  # not the rows' f-prefixed arrays


def scicat_path(path) -> Path:
    """The SciCat record beside a results file: ``RESULTS.scicat.json`` for ``RESULTS.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.scicat.json")


def software_versions() -> dict[str, str]:
    """Versions of braggflow and of the libraries its results depend on (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"braggflow": __version__}
    for name in ("numpy", "scipy", "pandas", "h5py", "hdf5plugin", "fabio", "pyFAI", "scikit-image",
                 "onnxruntime", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def scicat_record(path, *, config: dict, inputs: list[dict], summary: dict, geometry: dict | None = None,
                  models: list[dict] | None = None, start_time: str | None = None) -> dict[str, Any]:
    """A SciCat dataset record (derived dataset) for a results file.

    The fields a facility fills (``owner``, ``ownerEmail``, ``ownerGroup``,
    ``accessGroups``, ``contactEmail``, ``principalInvestigator``,
    ``orcidOfOwner``) are null; ``scientificMetadata`` holds the config, the
    software versions, the inputs with their SHA-256 and the summary counts.

    Parameters
    ----------
    path : str or Path
        The results file.
    config : dict
        The run's configuration.
    inputs : list of dict
        ``name``, ``size`` (bytes), ``sha256`` of each input file.
    summary : dict
        Counts (frames, peaks, ...).
    geometry : dict, optional
        The geometry used, with its ``source``.
    models : list of dict, optional
        Models used, with their SHA-256.
    start_time : str, optional
        When the run started (ISO 8601).

    Returns
    -------
    record : dict
        JSON-serialisable.

    References
    ----------
    SciCat data catalogue, dataset model: https://scicatproject.github.io/documentation/
    """
    path = Path(path).resolve()
    return {
        "datasetName": path.stem,
        "description": f"Bragg peaks found by braggflow in {len(inputs)} input file(s)",
        "type": "derived",
        "creationTime": now_iso(),
        "startTime": start_time,
        "owner": None, "ownerEmail": None, "ownerGroup": None, "accessGroups": None,
        "contactEmail": None, "principalInvestigator": None, "orcidOfOwner": None,
        "sourceFolder": str(path.parent),
        "size": path.stat().st_size if path.exists() else None,
        "numberOfFiles": 1,
        "inputDatasets": [str(i.get("name")) for i in inputs],
        "usedSoftware": [f"{k} {v}" for k, v in software_versions().items()],
        "keywords": ["Bragg peaks", "X-ray diffraction", "braggflow"],
        "scientificMetadata": {
            "results_file": {"value": path.name, "unit": ""},
            "config": config,
            "software": software_versions(),
            "inputs": inputs,
            "summary": summary,
            "geometry": geometry,
            "models": list(models or []),
        },
    }


def write_scicat(path, record: dict[str, Any]) -> Path:
    """Write a SciCat record beside a results file, atomically (temporary name, then rename).

    Parameters
    ----------
    path : str or Path
        The results file.
    record : dict
        As :func:`scicat_record` makes it.

    Returns
    -------
    written : Path

    Raises
    ------
    OSError
        If the file cannot be written (no temporary file is left).
    """
    out = scicat_path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1, default=_json_default) + "\n")
        os.replace(tmp, out)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _json_default(value):
    """NumPy scalars and arrays, and other objects, as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def check_output_path(path: Path) -> None:
    """Refuse a results name that is a folder, or a symbolic link that leads nowhere (it would be replaced).

    Raises
    ------
    InputFileError
        Naming the path and what it is.
    """
    from braggflow.io.images import missing_file_reason

    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not a results file; give a file name, such as "
                             f"{path / 'results.h5'}")
    if path.is_symlink() and not path.exists():
        raise InputFileError(f"{path}: {missing_file_reason(path)}; give another output file")


def stored_process(path) -> dict:
    """The process record of a results file, with its status under ``"_status"``.

    From the HDF5 snapshot; when that cannot be read but the journal holds
    frames, from the copy kept in the journal (``process.json``, status
    ``"running"``), so that a damaged snapshot neither hides the journaled
    frames nor lets other inputs in.

    Parameters
    ----------
    path : str or Path
        The results file.

    Returns
    -------
    process : dict
        As :func:`braggflow.io.store.read_process`, plus ``"_status"``.

    Raises
    ------
    InputFileError
        If the snapshot cannot be read and the journal holds no frame.
    """
    path = Path(path)
    if path.exists():
        try:
            return {**read_process(path), "_status": read_status(path)}
        except InputFileError:
            if not journal_has_batches(path):
                raise
    copy = _journal_dir(path) / "process.json"
    process = json.loads(copy.read_text()) if copy.exists() else {}
    return {**process, "_status": "running"}


def _reason(exc: BaseException) -> str:
    """Why a write failed, in words: the system's text for its errno (also when h5py puts it in its message)."""
    import re

    number = getattr(exc, "errno", None)
    if not isinstance(number, int):
        found = re.search(r"errno = (\d+)", str(exc))
        number = int(found.group(1)) if found else None
    if number:
        return f"{os.strerror(number)}, errno {number}"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _new_entry(h5, status: str, *, name: str = "", start_time: str | None = None):
    """The root attributes and the ``/entry`` group of a results file being written; returns the group.

    ``/entry`` (NXentry) gets ``start_time`` (given: when the run started), ``end_time`` (now) and
    ``program_name`` with its ``version``; its ``default`` is ``peaks`` (the caller points it elsewhere).
    """
    import h5py

    end_time = now_iso()
    h5.attrs["NX_class"] = "NXroot"
    h5.attrs["default"] = "entry"
    h5.attrs["status"] = status
    h5.attrs["creator"] = f"braggflow {__version__}"
    h5.attrs["file_name"] = name
    h5.attrs["file_time"] = end_time
    h5.attrs["HDF5_Version"] = h5py.version.hdf5_version
    h5.attrs["h5py_version"] = h5py.version.version
    entry = h5.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "peaks"
    entry.attrs["status"] = status
    entry.create_dataset("title", data=f"braggflow results {name}".strip())
    entry.create_dataset("start_time", data=start_time or end_time)
    entry.create_dataset("end_time", data=end_time)
    program = entry.create_dataset("program_name", data="braggflow")
    program.attrs["version"] = __version__
    return entry


def write_peaks_group(entry, table: pd.DataFrame) -> None:
    """``/entry/peaks``: the peak table, one dataset per column, as an NXdata scatter plot of the peaks.

    Parameters
    ----------
    entry : h5py.Group
        The ``NXentry`` group, without a ``peaks`` member.
    table : pandas.DataFrame
        Peak table (conformed to the schema here).
    """
    table = conform(table)
    group = entry.create_group("peaks")
    write_table(group, table)
    write_peaks_data(group, table)


def _stored_start_time(path: Path) -> str | None:
    """``/entry/start_time`` of an existing results file, or None when it has none or cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as h5:
            value = h5["entry/start_time"][()] if "entry/start_time" in h5 else None
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _copy_groups(path: Path) -> dict[str, Any]:
    """Groups added by later commands, kept across snapshots (tables and attrs)."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as h5:
            if "entry" not in h5:
                return out
            for name, node in h5["entry"].items():
                if name in _RESERVED or not isinstance(node, h5py.Group):
                    continue
                out[name] = _read_group_obj(h5["entry"][name])
    except OSError:
        pass
    return out


def _config_differs(stored_text: str, config) -> bool:
    """Whether a stored config (YAML text) differs from ``config`` in anything but its dark, flat and mask files.

    ``config`` is the run's configuration object (a pydantic model such as
    :class:`braggflow.pipeline.config.Config`); an empty stored text never differs.
    """
    import yaml

    if not stored_text:
        return False
    stored = yaml.safe_load(stored_text) or {}
    current = config.model_dump(mode="json")
    # a section that a file written by an earlier version lacks takes its defaults there: compare the others
    current = {key: value for key, value in current.items() if key in stored}
    for data in (stored, current):
        for key in ("dark", "flat", "mask"):
            (data.get("correct") or {}).pop(key, None)
    return stored != current
