"""The results file: NeXus-style HDF5 with the peak table and full provenance.

Layout::

    /                       attrs: default="entry", status
    /entry                  NXentry; attrs: default="peaks", status ("running", "incomplete", "complete")
    /entry/peaks            NXcollection: one 1D dataset per peak-table column
                            (categories as int codes with a "labels" attribute, -1 = missing;
                             nullable integers with a "missing" boolean dataset beside them)
    /entry/process          NXprocess: program, version, date, config (YAML text),
                            inputs (name, size, SHA-256), geometry (when known)
    /entry/frames_done      sorted frame indices whose results are in the file
    /entry/<name>           groups written by later commands (identify, link, watch)

Crash safety.  HDF5 files can be damaged by a kill in the middle of a write,
so the results file is never written in place while a run goes on.  Each
batch of finished frames is appended to a journal (``RESULTS.h5.journal/``:
one ``.npz`` per batch, written to a temporary name and renamed, which is
atomic), and the HDF5 file is rewritten from time to time as a whole into a
temporary file that replaces the old one atomically.  After a crash the file
holds an earlier snapshot with ``status != "complete"`` and the journal holds
every finished batch; :func:`read_peaks` merges both, and
``ResultsWriter(resume=True)`` continues from their union.
``ResultsWriter(append=True)`` also continues a file closed as complete (an
open-ended run such as ``braggflow watch``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow import __version__
from braggflow.errors import InputFileError
from braggflow.schema import COLUMNS, conform, empty_peak_table

__all__ = [
    "ResultsWriter",
    "read_peaks",
    "read_status",
    "read_process",
    "write_group",
    "read_group",
    "read_table",
    "write_table",
    "update_peaks",
    "file_provenance",
]

STATUS_COMPLETE = "complete"


def _journal_dir(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def _sha256(path: str) -> str:
    """SHA-256 of a file's content, as hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_provenance(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Name, size (bytes) and SHA-256 of each input file.

    Parameters
    ----------
    paths : iterable of str

    Returns
    -------
    records : list of dict
        ``{"name", "size", "sha256"}``; files that do not exist get size -1.
    """
    out = []
    for p in paths:
        p = str(p)
        if os.path.isfile(p):
            out.append({"name": os.path.abspath(p), "size": os.path.getsize(p), "sha256": _sha256(p)})
        else:
            out.append({"name": p, "size": -1, "sha256": ""})
    return out


# --------------------------------------------------------------------------- table <-> HDF5


def write_table(group, table: pd.DataFrame) -> None:
    """Write a DataFrame as one 1D dataset per column into an open HDF5 group.

    The layout that :func:`read_table` reads: categories as int32 codes with
    their labels, nullable integers and text with a ``<name>__missing`` mask,
    units from the peak-table schema as ``units`` attributes.

    Parameters
    ----------
    group : h5py.Group
        Empty group of a file open for writing.
    table : pandas.DataFrame
        Any columns; names are written as text.
    """
    group.attrs["columns"] = json.dumps([str(c) for c in table.columns])
    group.attrs["nrows"] = len(table)
    for name in table.columns:
        key = str(name)
        ds = _write_column(group, key, table[name])
        unit = COLUMNS[key].unit if key in COLUMNS else ""
        if unit:
            ds.attrs["units"] = unit


def _write_column(group, key: str, s: pd.Series):
    """One column as the dataset ``key`` of ``group`` (with a ``<key>__missing`` mask where needed); returns it."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().astype(np.int32)
        ds = group.create_dataset(key, data=codes, compression="gzip", compression_opts=1)
        ds.attrs["labels"] = json.dumps([str(c) for c in s.cat.categories])
        ds.attrs["kind"] = "category"
        return ds
    if isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and s.dtype.kind in "iu":
        missing = s.isna().to_numpy()
        values = s.fillna(0).to_numpy().astype(s.dtype.numpy_dtype)
        ds = group.create_dataset(key, data=values, compression="gzip", compression_opts=1)
        ds.attrs["kind"] = f"nullable:{s.dtype.name}"
        group.create_dataset(f"{key}__missing", data=missing)
        return ds
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return _write_text(group, key, s)
    return group.create_dataset(key, data=s.to_numpy(), compression="gzip", compression_opts=1)


def _write_text(group, key: str, s: pd.Series):
    """A text column: strings, with a ``<key>__missing`` mask when values are missing (None, NaN, pd.NA)."""
    import h5py

    missing = s.isna().to_numpy()
    text = np.array(["" if m else str(v) for v, m in zip(s, missing)], dtype=object)
    ds = group.create_dataset(key, data=text, dtype=h5py.string_dtype())
    ds.attrs["kind"] = "string"
    if missing.any():  # missing values (None, NaN, pd.NA) come back as missing, not as text
        group.create_dataset(f"{key}__missing", data=missing)
    return ds


def _read_table(group) -> pd.DataFrame:
    if "columns" in group.attrs:
        columns = json.loads(group.attrs["columns"])
    else:
        columns = [k for k in group if not k.endswith("__missing")]
    return pd.DataFrame({name: _read_column(group, name) for name in columns})


def _read_column(group, name: str):
    """The values of one column written by :func:`_write_column`, missing ones restored."""
    ds = group[name]
    kind = ds.attrs.get("kind", "")
    if kind == "category":
        labels = json.loads(ds.attrs["labels"])
        return pd.Categorical.from_codes(ds[()].astype(int), categories=labels)
    if kind.startswith("nullable:"):
        values = pd.array(ds[()], dtype=kind.split(":", 1)[1])
        values[group[f"{name}__missing"][()]] = pd.NA
        return values
    if kind == "string":
        values = [x.decode() if isinstance(x, bytes) else x for x in ds[()]]
        if f"{name}__missing" in group:
            values = [None if m else v for v, m in zip(values, group[f"{name}__missing"][()])]
        return values
    return ds[()]


def _table_to_npz_dict(table: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for name in table.columns:
        s = table[name]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            out[f"s:{name}"] = np.array([("" if pd.isna(v) else str(v)) for v in s], dtype=str)
            out[f"n:{name}"] = s.isna().to_numpy()
        elif isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            out[f"x:{name}"] = s.fillna(0).to_numpy().astype(np.int64)
            out[f"n:{name}"] = s.isna().to_numpy()
        else:
            out[f"v:{name}"] = s.to_numpy()
    return out


def _table_from_npz(npz) -> pd.DataFrame:
    data = {}
    for key in npz.files:
        if ":" not in key:
            continue  # bookkeeping arrays such as frames_done
        kind, name = key.split(":", 1)
        if kind == "s":
            values = npz[key].astype(object)
            values[npz[f"n:{name}"]] = None
            data[name] = values
        elif kind == "x":
            values = pd.array(npz[key], dtype="Int64")
            values[npz[f"n:{name}"]] = pd.NA
            data[name] = values
        elif kind == "v":
            data[name] = npz[key]
    return conform(pd.DataFrame(data))


# --------------------------------------------------------------------------- writer


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
    resume : bool
        Continue an earlier, unfinished run: keep its frames (file snapshot and
        journal) and report them in :attr:`done_frames`.  Without ``resume`` an
        existing file is replaced.
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

    Raises
    ------
    InputFileError
        If ``resume`` is asked for a file that is complete (without
        ``append``), or ``resume``/``append`` for a file whose config differs.
    """

    def __init__(
        self,
        path,
        *,
        config=None,
        sources: list[str] | None = None,
        resume: bool = False,
        append: bool = False,
        flush_frames: int = 8,
        flush_seconds: float = 1.0,
        snapshot_seconds: float = 30.0,
        geometry: dict | None = None,
        extra_process: dict | None = None,
    ):
        self.path = Path(path)
        self.config = config
        self.sources = [str(s) for s in (sources or [])]
        self.flush_frames = flush_frames
        self.flush_seconds = flush_seconds
        self.snapshot_seconds = snapshot_seconds
        self.geometry = geometry
        self.extra_process = dict(extra_process or {})
        self.journal = _journal_dir(self.path)
        self._buffer: list[pd.DataFrame] = []
        self._buffer_frames: list[int] = []
        self._last_flush = time.monotonic()
        self._last_snapshot = time.monotonic()
        self._batch = 0
        self.done_frames: set[int] = set()
        self._closed = False
        if (resume or append) and (self.path.exists() or self.journal.exists()):
            self._continue(append=append)
        else:
            self._start()
        self.journal.mkdir(parents=True, exist_ok=True)

    def _continue(self, *, append: bool) -> None:
        """Take over the frames of an earlier run (snapshot and journal).

        Raises
        ------
        InputFileError
            If the run is complete (without ``append``) or its config differs.
        """
        status = read_status(self.path) if self.path.exists() else "running"
        if status == STATUS_COMPLETE and not append:
            raise InputFileError(
                f"{self.path}: run is already complete; nothing to resume (remove --resume to start again)"
            )
        if self.config is not None and self.path.exists():
            if _config_differs(read_process(self.path).get("config", ""), self.config):
                raise InputFileError(
                    f"{self.path}: cannot resume with a different configuration than the run that wrote it"
                )
        table, done = _read_all(self.path)
        self._previous = table
        self.done_frames = set(int(f) for f in done)
        self._batch = 1 + max((int(p.stem.split("_")[1]) for p in self.journal.glob("batch_*.npz")), default=-1)
        if status == STATUS_COMPLETE:  # append: not complete any more until closed
            self._write_snapshot("running", table, self.done_frames)

    def _start(self) -> None:
        """Start a new file (an earlier journal is emptied)."""
        self._empty_journal()
        self._previous = empty_peak_table()
        self._write_snapshot("running", self._previous, set())

    def _empty_journal(self) -> None:
        if self.journal.exists():
            for p in self.journal.iterdir():
                p.unlink()

    # -- appending
    def add(self, frame_index: int, table: pd.DataFrame) -> None:
        """Record the peak table of one finished frame (may be empty).

        Parameters
        ----------
        frame_index : int
        table : pandas.DataFrame
            Peaks of that frame (its ``frame`` column is set to ``frame_index``).
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        table = table.copy()
        table["frame"] = int(frame_index)
        self._buffer.append(table)
        self._buffer_frames.append(int(frame_index))
        self.done_frames.add(int(frame_index))
        now = time.monotonic()
        if len(self._buffer_frames) >= self.flush_frames or now - self._last_flush >= self.flush_seconds:
            self.flush()
        if now - self._last_snapshot >= self.snapshot_seconds:
            self.snapshot()

    def flush(self) -> None:
        """Write buffered frames to the journal (atomic rename of one batch file)."""
        if not self._buffer_frames:
            return
        table = pd.concat(self._buffer, ignore_index=True) if self._buffer else empty_peak_table()
        arrays = _table_to_npz_dict(conform(table))
        arrays["frames_done"] = np.asarray(self._buffer_frames, dtype=np.int64)
        final = self.journal / f"batch_{self._batch:08d}.npz"
        tmp = self.journal / f".tmp_{self._batch:08d}.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._batch += 1
        self._buffer, self._buffer_frames = [], []
        self._last_flush = time.monotonic()

    def snapshot(self, status: str = "running") -> None:
        """Rewrite the HDF5 file from everything recorded so far (atomically)."""
        self.flush()
        table, done = _read_all(self.path, journal_only_extra=True, base=self._previous)
        self._write_snapshot(status, table, done)
        self._last_snapshot = time.monotonic()

    def table(self) -> pd.DataFrame:
        """Every peak recorded so far (earlier run included), sorted by frame."""
        self.flush()
        table, _ = _read_all(self.path, journal_only_extra=True, base=self._previous)
        return table

    def close(self, complete: bool = True) -> None:
        """Consolidate journal and snapshot into the final file.

        Parameters
        ----------
        complete : bool
            Mark the file ``complete`` and remove the journal; otherwise mark it
            ``incomplete`` and keep the journal for ``resume``.
        """
        if self._closed:
            return
        self.flush()
        table, done = _read_all(self.path, journal_only_extra=True, base=self._previous)
        self._write_snapshot(STATUS_COMPLETE if complete else "incomplete", table, done, provenance=complete)
        if complete and self.journal.exists():
            self._empty_journal()
            self.journal.rmdir()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)
        return False

    # -- file writing
    def _write_snapshot(self, status: str, table: pd.DataFrame, done: set[int], provenance: bool = False) -> None:
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        groups = _copy_groups(self.path) if self.path.exists() else {}
        with h5py.File(tmp, "w") as h5:
            entry = _new_entry(h5, status)
            peaks = entry.create_group("peaks")
            peaks.attrs["NX_class"] = "NXcollection"
            write_table(peaks, conform(table).sort_values(["frame"], kind="stable").reset_index(drop=True))
            entry.create_dataset("frames_done", data=np.array(sorted(done), dtype=np.int64))
            self._write_process(entry.create_group("process"), provenance=provenance)
            for name, payload in groups.items():
                _restore_group(entry, name, payload)
            h5.flush()
        os.replace(tmp, self.path)

    def _write_process(self, proc, *, provenance: bool) -> None:
        """The ``/entry/process`` record: program, version, date, config, inputs, geometry, extra attributes.

        With ``provenance`` the inputs' sizes and SHA-256 are computed; otherwise only their names are given.
        """
        proc.attrs["NX_class"] = "NXprocess"
        proc.create_dataset("program", data="braggflow")
        proc.create_dataset("version", data=__version__)
        proc.create_dataset("date", data=_dt.datetime.now(_dt.UTC).isoformat())
        proc.create_dataset("config", data=self.config.to_yaml() if self.config is not None else "")
        if provenance:
            inputs = file_provenance(self.sources)
        else:
            inputs = [{"name": s, "size": -1, "sha256": ""} for s in self.sources]
        proc.create_dataset("inputs", data=json.dumps(inputs))
        if self.geometry is not None:
            proc.create_dataset("geometry", data=json.dumps(self.geometry))
        for key, value in self.extra_process.items():
            proc.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def _new_entry(h5, status: str):
    """The root attributes and the ``/entry`` group of a results file being written; returns the group."""
    h5.attrs["default"] = "entry"
    h5.attrs["status"] = status
    h5.attrs["creator"] = f"braggflow {__version__}"
    entry = h5.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "peaks"
    entry.attrs["status"] = status
    return entry


_RESERVED = {"peaks", "process", "frames_done"}


def _copy_groups(path: Path) -> dict[str, Any]:
    """Groups added by later commands, kept across snapshots (tables and attrs)."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as h5:
            if "entry" not in h5:
                return out
            for name in h5["entry"]:
                if name in _RESERVED:
                    continue
                out[name] = _read_group_obj(h5["entry"][name])
    except OSError:
        pass
    return out


def _read_group_obj(group) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    import h5py

    tables = {k: _read_table(v) for k, v in group.items() if isinstance(v, h5py.Group)}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
    return tables, attrs


def _restore_group(parent, name: str, payload) -> None:
    tables, attrs = payload
    g = parent.create_group(name)
    for k, v in attrs.items():
        g.attrs[k] = v
    for k, t in tables.items():
        write_table(g.create_group(k), t)


# --------------------------------------------------------------------------- reading


def _open_results(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such results file")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 results file ({exc})") from None


def read_status(path) -> str:
    """The run status stored in a results file ("running", "incomplete", "complete").

    Raises
    ------
    InputFileError
        If the file is missing or not a braggflow results file.
    """
    with _open_results(path) as h5:
        if "entry" not in h5 or "peaks" not in h5["entry"]:
            raise InputFileError(f"{path}: not a braggflow results file (no /entry/peaks)")
        status = h5["entry"].attrs.get("status", "")
        return status.decode() if isinstance(status, bytes) else str(status)


def _read_all(path: Path, *, journal_only_extra: bool = True, base: pd.DataFrame | None = None):
    """Snapshot table plus journal batches whose frames the snapshot lacks."""
    path = Path(path)
    tables, done = [], set()
    if base is not None:
        tables.append(base)
        done |= set(base["frame"].astype(int).tolist())
    if path.exists():
        snap, snap_done = _read_snapshot(path)
        if base is None or len(base) == 0:
            tables = [snap]
        done |= snap_done
    tables += _journal_tables(path, done)
    table = pd.concat([conform(t) for t in tables], ignore_index=True) if tables else empty_peak_table()
    table = conform(table.sort_values("frame", kind="stable"))
    return table, done


def _read_snapshot(path: Path) -> tuple[pd.DataFrame, set]:
    """The peak table of the HDF5 snapshot and the frames it holds."""
    with _open_results(path) as h5:
        snap = conform(_read_table(h5["entry/peaks"]))
        if "entry/frames_done" in h5:
            return snap, set(h5["entry/frames_done"][()].tolist())
        return snap, set(snap["frame"].tolist())


def _journal_tables(path: Path, done: set) -> list[pd.DataFrame]:
    """The peaks of journal batches of frames not in ``done``, in batch order; their frames are added to ``done``."""
    tables = []
    journal = _journal_dir(path)
    if not journal.exists():
        return tables
    for p in sorted(journal.glob("batch_*.npz")):
        try:
            with np.load(p) as npz:
                frames = set(npz["frames_done"].tolist())
                if frames <= done:
                    continue
                t = _table_from_npz(npz)
        except (OSError, ValueError, KeyError):
            continue  # a batch that was never completely written is ignored
        tables.append(t[~t["frame"].isin(done)])
        done |= frames
    return tables


def read_peaks(path) -> pd.DataFrame:
    """Read the peak table of a results file, including journaled frames of an unfinished run.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    table : pandas.DataFrame
        Peak-table schema, sorted by frame.

    Raises
    ------
    InputFileError
        If the file is missing or not a braggflow results file.
    """
    read_status(path)
    table, _ = _read_all(Path(path))
    return table


def read_frames_done(path) -> set[int]:
    """Frame indices recorded in a results file (snapshot and journal)."""
    _, done = _read_all(Path(path))
    return done


def read_process(path) -> dict[str, Any]:
    """The ``/entry/process`` record: program, version, date, config text, inputs, geometry.

    Raises
    ------
    InputFileError
        If the file is missing or has no process record.
    """
    with _open_results(path) as h5:
        if "entry/process" not in h5:
            raise InputFileError(f"{path}: no /entry/process record")
        proc = h5["entry/process"]
        out = {}
        for k, ds in proc.items():
            v = ds[()]
            out[k] = v.decode() if isinstance(v, bytes) else v
        for k in ("inputs", "geometry"):
            if k in out:
                out[k] = json.loads(out[k])
        out.update({k: (v.decode() if isinstance(v, bytes) else v) for k, v in proc.attrs.items() if k != "NX_class"})
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
    for data in (stored, current):
        for key in ("dark", "flat", "mask"):
            (data.get("correct") or {}).pop(key, None)
    return stored != current


def write_group(path, name: str, *, tables: dict[str, pd.DataFrame] | None = None,
                attrs: dict[str, Any] | None = None) -> None:
    """Add or replace the group ``/entry/<name>`` with tables and attributes.

    Used by later commands (identify, link, watch).  The file is rewritten into
    a temporary copy that replaces it atomically, so a crash leaves the old file.

    Parameters
    ----------
    path : str or Path
        An existing results file.
    name : str
        Group name (not ``peaks``, ``process`` or ``frames_done``).
    tables : dict of {str: DataFrame}
        Each becomes a sub-group with one dataset per column.
    attrs : dict
        Attributes (str, int, float; anything else is stored as JSON).

    Raises
    ------
    InputFileError
        If ``path`` is not a results file.
    ValueError
        If ``name`` is reserved.
    """
    import shutil

    import h5py

    if name in _RESERVED or "/" in name:
        raise ValueError(f"group name {name!r} is reserved or invalid")
    read_status(path)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "a") as h5:
        entry = h5["entry"]
        if name in entry:
            del entry[name]
        clean = {k: _attr_value(v) for k, v in (attrs or {}).items()}
        _restore_group(entry, name, ({k: conform_any(t) for k, t in (tables or {}).items()}, clean))
    os.replace(tmp, path)


def _attr_value(value):
    """``value`` as an HDF5 attribute: numbers and text as they are, anything else as JSON text."""
    return value if isinstance(value, (int, float, str, np.integer, np.floating)) else json.dumps(value)


def conform_any(table: pd.DataFrame) -> pd.DataFrame:
    """A table with a plain 0..n-1 index (other tables than the peak table are stored as they are)."""
    return table.reset_index(drop=True)


def read_group(path, name: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read ``/entry/<name>`` written by :func:`write_group`.

    Returns
    -------
    tables : dict of {str: DataFrame}
    attrs : dict

    Raises
    ------
    InputFileError
        If the file or the group does not exist.
    """
    with _open_results(path) as h5:
        if f"entry/{name}" not in h5:
            raise InputFileError(f"{path}: no group /entry/{name}")
        return _read_group_obj(h5[f"entry/{name}"])


def read_table(path, group: str) -> pd.DataFrame:
    """Read one table stored as one 1D dataset per column in an HDF5 group.

    Reads the tables braggflow writes: ``/entry/peaks`` of a results file (as
    stored in the snapshot; :func:`read_peaks` adds journaled frames), a table
    of :func:`write_group` (``/entry/<name>/<table>``), or the ground truth
    ``/entry/truth`` of a simulated NeXus file.

    Parameters
    ----------
    path : str or Path
        HDF5 file.
    group : str
        Path of the table's group inside the file, e.g. ``"/entry/truth"``.

    Returns
    -------
    table : pandas.DataFrame
        One column per dataset, in the stored column order; categories,
        nullable integers and strings restored.

    Raises
    ------
    InputFileError
        If the file is not readable HDF5 or ``group`` is not a table group.
    """
    import h5py

    with _open_results(path) as h5:
        node = h5.get(group)
        if not isinstance(node, h5py.Group):
            raise InputFileError(f"{path}: no table group {group!r}")
        try:
            return _read_table(node)
        except (KeyError, ValueError, TypeError) as exc:
            raise InputFileError(f"{path}::{group}: not a table of 1D column datasets ({exc})") from None


def update_peaks(path, table: pd.DataFrame) -> None:
    """Replace ``/entry/peaks`` with ``table`` (e.g. after adding track_id or phase columns).

    Raises
    ------
    InputFileError
        If the file is not a complete results file (finish or resume the run first).
    """
    import shutil

    import h5py

    path = Path(path)
    if read_status(path) != STATUS_COMPLETE:
        raise InputFileError(f"{path}: run is not complete; finish it (braggflow run --resume) before adding results")
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "a") as h5:
        del h5["entry/peaks"]
        g = h5["entry"].create_group("peaks")
        g.attrs["NX_class"] = "NXcollection"
        write_table(g, conform(table))
    os.replace(tmp, path)
