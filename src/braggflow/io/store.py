"""The results file as stored: its HDF5 snapshot and its journal, read and merged.

See :mod:`braggflow.io.results` for the layout.  This module opens a results
file, reads its status and its ``/entry/process`` record, and reads the
peaks of the snapshot together with the journal batches of frames the
snapshot lacks (:func:`_read_all`), for the readers and for
:class:`braggflow.io.writer.ResultsWriter`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import InputFileError
from braggflow.io.tables import _npz_columns, _read_table, _table_from_npz
from braggflow.schema import conform, empty_peak_table, frames_table

__all__ = ["read_status", "read_process", "read_peak_parts", "PART_ROWS"]

log = logging.getLogger(__name__)

STATUS_COMPLETE = "complete"
#: peaks read at a time from the HDF5 snapshot by :func:`read_peak_parts`
PART_ROWS = 262_144

_RESERVED = {"peaks", "process", "frames_done", "frames", "instrument", "sample", "title", "start_time", "end_time",
             "program_name", "peak_map"}


def _journal_dir(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


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
        try:
            snap, snap_done = _read_snapshot(path)
        except InputFileError:
            if not journal_has_batches(path):
                raise
            # a damaged snapshot never hides the journal: its frames are read from the journal alone
            log.warning("%s: the HDF5 snapshot cannot be read; using the frames of its journal", path)
            snap, snap_done = empty_peak_table(), set()
        if base is None or len(base) == 0:
            tables = [snap]
        else:  # the snapshot may hold frames added since base was read (a resumed run's own snapshots)
            tables.append(snap[~snap["frame"].astype(int).isin(done)])
        done |= snap_done
    tables += _journal_tables(path, done)
    table = pd.concat([conform(t) for t in tables], ignore_index=True) if tables else empty_peak_table()
    table = conform(table.sort_values("frame", kind="stable"))
    return table, done


def journal_has_batches(path) -> bool:
    """Whether the journal beside a results file holds at least one batch of frames."""
    journal = _journal_dir(Path(path))
    return journal.is_dir() and any(journal.glob("batch_*.npz"))


def _read_snapshot(path: Path) -> tuple[pd.DataFrame, set]:
    """The peak table of the HDF5 snapshot and the frames it holds.

    Raises
    ------
    InputFileError
        If the file cannot be read as a results file.
    """
    with _open_results(path) as h5:
        if "entry/peaks" not in h5:
            raise InputFileError(f"{path}: not a braggflow results file (no /entry/peaks)")
        snap = conform(_read_table(h5["entry/peaks"]))
        if "entry/frames_done" in h5:
            return snap, set(h5["entry/frames_done"][()].tolist())
        return snap, set(snap["frame"].tolist())


def frames_done(path) -> set[int]:
    """The frames a results file holds (snapshot and journal), read without loading their peaks.

    Falls back to the journal alone when the snapshot cannot be read, as :func:`_read_all` does.

    Raises
    ------
    InputFileError
        If the snapshot cannot be read and there is no journal.
    """
    path = Path(path)
    done: set[int] = set()
    if path.exists():
        try:
            with _open_results(path) as h5:
                if "entry/frames_done" in h5:
                    done = set(h5["entry/frames_done"][()].tolist())
                else:
                    done = set(_read_snapshot(path)[1])
        except InputFileError:
            if not journal_has_batches(path):
                raise
    journal = _journal_dir(path)
    for p in sorted(journal.glob("batch_*.npz")) if journal.exists() else []:
        try:
            with np.load(p) as npz:
                done |= set(npz["frames_done"].tolist())
        except (OSError, ValueError, KeyError):
            continue  # a batch that was never completely written is ignored
    return {int(f) for f in done}


def _journal_batches(path: Path, done: set, read):
    """What ``read(npz)`` takes from each journal batch holding a frame not in ``done``, in batch order.

    A batch's frames are added to ``done`` once the caller has taken what it
    yields, so at each step ``done`` holds the frames of the snapshot and of
    the earlier batches (the rows the caller must leave out: later rows of a
    frame never replace earlier ones). A batch that was never completely
    written is ignored.
    """
    journal = _journal_dir(path)
    for p in sorted(journal.glob("batch_*.npz")) if journal.exists() else []:
        try:
            with np.load(p) as npz:
                frames = set(npz["frames_done"].tolist())
                if frames <= done:
                    continue
                payload = read(npz)
        except (OSError, ValueError, KeyError):
            continue
        yield payload
        done |= frames


def _journal_tables(path: Path, done: set) -> list[pd.DataFrame]:
    """The peaks of journal batches of frames not in ``done``, in batch order; their frames are added to ``done``."""
    return [t[~t["frame"].isin(done)] for t in _journal_batches(path, done, _table_from_npz)]


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
        for k in ("inputs", "geometry", "models"):
            if k in out:
                out[k] = json.loads(out[k])
        out.update({k: (v.decode() if isinstance(v, bytes) else v) for k, v in proc.attrs.items() if k != "NX_class"})
        return out


def _snapshot_frames(path: Path) -> set[int]:
    """The frames whose peaks the HDF5 snapshot holds (its ``frames_done``); empty when it cannot be read."""
    path = Path(path)
    if not path.exists():
        return set()
    try:
        with _open_results(path) as h5:
            if "entry/peaks" not in h5:
                return set()
            if "entry/frames_done" in h5:
                return {int(f) for f in h5["entry/frames_done"][()]}
            return {int(f) for f in np.unique(h5["entry/peaks/frame"][()])}
    except (InputFileError, OSError, KeyError):
        return set()


def _read_rows(group, start: int, stop: int, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows ``start:stop`` of a table group (the layout of :func:`braggflow.io.tables.write_table`).

    Parameters
    ----------
    group : h5py.Group
    start, stop : int
        Row range, as a slice.
    columns : list of str, optional
        Read only these of the group's columns (those it lacks are left out); default: all.

    Returns
    -------
    table : pandas.DataFrame
        Those rows, with categories, nullable integers and missing text restored.
    """
    stored = json.loads(group.attrs["columns"]) if "columns" in group.attrs else [
        k for k in group if not k.endswith("__missing")]
    columns = stored if columns is None else [c for c in stored if c in columns]
    data = {}
    for name in columns:
        ds = group[name]
        kind = ds.attrs.get("kind", "")
        values = ds[start:stop]
        if kind == "category":
            labels = json.loads(ds.attrs["labels"])
            data[name] = pd.Categorical.from_codes(values.astype(int), categories=labels)
        elif kind.startswith("nullable:"):
            out = pd.array(values, dtype=kind.split(":", 1)[1])
            out[group[f"{name}__missing"][start:stop]] = pd.NA
            data[name] = out
        elif kind == "string":
            text = [x.decode() if isinstance(x, bytes) else x for x in values]
            if f"{name}__missing" in group:
                text = [None if m else v for v, m in zip(text, group[f"{name}__missing"][start:stop])]
            data[name] = text
        else:
            data[name] = values
    return pd.DataFrame(data)


def stored_peak_count(path) -> int:
    """Rows of ``/entry/peaks`` in a results file's HDF5 snapshot, read from its attributes (no peak is read).

    Parameters
    ----------
    path : str or Path
        The results file.

    Returns
    -------
    rows : int

    Raises
    ------
    InputFileError
        If the file is missing or not a results file.
    """
    with _open_results(path) as h5:
        if "entry/peaks" not in h5:
            raise InputFileError(f"{path}: not a braggflow results file (no /entry/peaks)")
        group = h5["entry/peaks"]
        return int(group.attrs.get("nrows", len(group["frame"]) if "frame" in group else 0))


def count_peaks(path) -> int:
    """Peaks a results file stores (snapshot and journal, as :func:`_read_all` merges them), without reading them.

    The snapshot's rows come from its attributes; a journal batch is counted
    by its ``frame`` column, less the rows of frames the snapshot holds.

    Parameters
    ----------
    path : str or Path
        The results file (its journal beside it is counted too).

    Returns
    -------
    peaks : int

    Raises
    ------
    InputFileError
        If the snapshot cannot be read and there is no journal.
    """
    path = Path(path)
    total, done = 0, set()
    if path.exists():
        try:
            total, done = stored_peak_count(path), _snapshot_frames(path)
        except InputFileError:
            if not journal_has_batches(path):
                raise
    def peak_frames(npz) -> np.ndarray:
        return npz["v:frame"] if "v:frame" in npz.files else np.zeros(0, np.int64)

    for frames in _journal_batches(path, done, peak_frames):
        total += int(np.count_nonzero(~np.isin(frames, list(done)))) if done else len(frames)
    return total


class _RowArrays:
    """The frames-table rows of a journal batch (its ``f``-prefixed arrays) with the keys of a table's arrays."""

    def __init__(self, npz):
        self.npz = npz
        self.files = [key[1:] for key in npz.files if key.startswith("f") and ":" in key]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.npz[f"f{key}"]


def _read_frames_table(path: Path) -> pd.DataFrame:
    """The frames table: the snapshot's ``/entry/frames`` plus the journal's rows (later rows win).

    A journal batch holds its rows under ``f``-prefixed keys (``fv:n_peaks``, ...); rows kept in
    ``frames_*.npz`` files of their own are read too.
    """
    import h5py

    parts = []
    path = Path(path)
    if path.exists():
        try:
            with h5py.File(path, "r") as h5:
                node = h5.get("entry/frames")
                if isinstance(node, h5py.Group):
                    parts.append(_read_table(node))
        except OSError:
            pass  # a damaged snapshot: the journal still holds its frames
    journal = _journal_dir(path)
    files = sorted(journal.glob("frames_*.npz")) + sorted(journal.glob("batch_*.npz")) if journal.exists() else []
    for p in files:
        try:
            with np.load(p) as npz:
                if p.name.startswith("frames_"):
                    parts.append(_npz_columns(npz))
                elif any(key.startswith("f") and ":" in key for key in npz.files):
                    parts.append(_npz_columns(_RowArrays(npz)))
        except (OSError, ValueError, KeyError):
            continue
    if not parts:
        return frames_table([])
    table = pd.concat([frames_table(t) for t in parts], ignore_index=True)
    table = table.drop_duplicates("frame", keep="last").sort_values("frame", kind="stable").reset_index(drop=True)
    return frames_table(table)  # the files of the parts as one category again


def _batch_columns(npz, columns) -> pd.DataFrame:
    """The peak columns ``columns`` of a journal batch that it stores (left-out all-default columns stay out)."""
    data = {}
    for name in columns:
        if f"v:{name}" in npz.files:
            data[name] = npz[f"v:{name}"]
        elif f"s:{name}" in npz.files:
            values = npz[f"s:{name}"].astype(object)
            values[npz[f"n:{name}"]] = None
            data[name] = values
        elif f"x:{name}" in npz.files:
            values = pd.array(npz[f"x:{name}"], dtype="Int64")
            values[npz[f"n:{name}"]] = pd.NA
            data[name] = values
    frames = data.get("frame")
    size = len(frames) if frames is not None else len(npz["v:frame"]) if "v:frame" in npz.files else 0
    return pd.DataFrame(data, index=pd.RangeIndex(size))


def read_peak_parts(path, frames=None, *, columns=("frame", "row", "col", "q", "phase"), part_rows: int = PART_ROWS):
    """The peaks of some frames of a results file, part by part, as :func:`braggflow.io.results.read_peaks` merges them.

    The HDF5 snapshot is read ``part_rows`` rows at a time and each journal
    batch on its own, so memory holds one part whatever the file's size; a
    frame's peaks come from the snapshot when it holds the frame, else from the
    first batch that does (the rule of :func:`_read_all`).

    Parameters
    ----------
    path : str or Path
        The results file (its journal beside it is read too).
    frames : iterable of int, optional
        Frames whose peaks to read; default: all.
    columns : sequence of str
        Peak-table columns to read (``frame`` is always read); a column the
        file does not store (a journal batch leaves out the columns whose values
        are all the default) is absent from a part.
    part_rows : int
        Snapshot rows read at a time.

    Yields
    ------
    peaks : pandas.DataFrame
        Rows of the frames asked for, in the file's order; may be empty.
    covered : set of int
        The frames asked for whose peaks this part's source (the snapshot, or one
        batch) holds; a frame whose peaks are split over snapshot parts is in the
        set of each.

    Raises
    ------
    InputFileError
        If the snapshot cannot be read and there is no journal.
    """
    path = Path(path)
    wanted = None if frames is None else {int(f) for f in frames}
    columns = list(dict.fromkeys(["frame", *columns]))
    done: set[int] = set()
    if path.exists():
        try:
            with _open_results(path) as h5:
                if "entry/peaks" not in h5:
                    raise InputFileError(f"{path}: not a braggflow results file (no /entry/peaks)")
                group = h5["entry/peaks"]
                done = ({int(f) for f in h5["entry/frames_done"][()]} if "entry/frames_done" in h5 else
                        {int(f) for f in np.unique(group["frame"][()])} if "frame" in group else set())
                covered = done if wanted is None else done & wanted
                rows = int(group.attrs.get("nrows", len(group["frame"]) if "frame" in group else 0))
                for start in range(0, rows if covered else 0, max(1, int(part_rows))):
                    part = _read_rows(group, start, min(rows, start + part_rows), columns)
                    if wanted is not None:
                        part = part[np.isin(part["frame"].to_numpy(), list(covered))]
                    yield part.reset_index(drop=True), covered
        except InputFileError:
            if not journal_has_batches(path):
                raise
            log.warning("%s: the HDF5 snapshot cannot be read; using the frames of its journal", path)
            done = set()

    def batch(npz):
        return _batch_columns(npz, columns), {int(f) for f in npz["frames_done"]}

    for part, held in _journal_batches(path, done, batch):
        new = held - done
        if wanted is not None:
            new &= wanted
        if not new:
            continue
        yield part[np.isin(part["frame"].to_numpy(), list(new))].reset_index(drop=True), new
