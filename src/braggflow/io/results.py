"""The results file: NeXus HDF5 with the peak table, the frames table, the instrument and full provenance.

Layout (docs/results.md shows it as h5web does; :mod:`braggflow.io.nexus` writes the NeXus parts)::

    /                       NXroot; attrs: default="entry", status, creator, file_name, file_time
    /entry                  NXentry; attrs: default="frames" (or "peaks"), status ("running",
                            "incomplete", "complete"); title, start_time, end_time, program_name@version
    /entry/peaks            NXdata (signal intensity, axis two_theta, q_xy or col): one 1D dataset per
                            peak-table column, with UDUNITS units
                            (categories as int codes with a "labels" attribute, -1 = missing;
                             nullable integers with a "missing" boolean dataset beside them)
    /entry/frames           NXdata (signal n_peaks against omega or frame; the default plot): the
                            frames table, one row per processed frame (braggflow.schema.FRAME_COLUMNS)
    /entry/peak_map         NXdata: peaks per bin of (q_z, q_xy), (eta, two_theta) or (row, col)
    /entry/frames_done      sorted frame indices whose results are in the file
    /entry/instrument       NXinstrument: source (NXsource), beam (NXbeam: wavelength, energy),
                            detector (NXdetector: distance, pixel size, beam centre, shape, masked
                            pixels, external link to the raw HDF5 frames)
    /entry/sample           NXsample: incidence angle (grazing incidence)
    /entry/process          NXprocess: program, version, date, config (YAML text), inputs (name, size,
                            SHA-256), geometry and geometry_source (when known), models (with SHA-256)
    /entry/<name>           NXcollection groups written by later commands (identify, link, watch)

Beside it, ``RESULTS.scicat.json`` (:func:`braggflow.io.writer.scicat_record`)
describes the file for a SciCat catalogue; :func:`write_group`,
:func:`record_group` and :func:`update_peaks` add what they wrote to it.

Crash safety.  HDF5 files can be damaged by a kill in the middle of a write,
so the results file is never written in place while a run goes on.  Each
batch of finished frames is appended to a journal (``RESULTS.h5.journal/``:
one ``.npz`` per batch, written to a temporary name and renamed, which is
atomic), and the HDF5 file is rewritten from time to time into a temporary
file that replaces the old one atomically (a snapshot: the status, the frames
table, the peaks the file held when the run started; the final file, with
every peak, when the run ends).  After a crash the file holds a snapshot with
``status != "complete"`` and the journal holds every finished batch;
:func:`read_peaks` merges both, and
``ResultsWriter(resume=True)`` continues from their union.
``ResultsWriter(append=True)`` also continues a file closed as complete (an
open-ended run such as ``braggflow watch``).

This module holds the readers (:func:`read_peaks`, :func:`read_table`,
:func:`read_group`) and the commands that add to a finished file
(:func:`write_group`, :func:`update_peaks`).  The rest is importable from
here too: :class:`ResultsWriter` and :func:`file_provenance` live in
:mod:`braggflow.io.writer`, :func:`read_status` and :func:`read_process` in
:mod:`braggflow.io.store`, :func:`write_table` in :mod:`braggflow.io.tables`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import InputFileError
from braggflow.io.lock import results_lock
from braggflow.io.store import (
    _RESERVED,
    STATUS_COMPLETE,
    _journal_dir,
    _open_results,
    _read_all,
    _read_frames_table,
    frames_done,
    journal_has_batches,
    read_process,
    read_status,
)
from braggflow.io.tables import _read_group_obj, _read_table, _restore_group, write_table
from braggflow.io.writer import ResultsWriter, file_provenance, scicat_path, write_peaks_group, write_scicat

__all__ = [
    "ResultsWriter",
    "read_peaks",
    "read_frames",
    "read_status",
    "read_process",
    "write_group",
    "record_group",
    "recorded_groups",
    "read_group",
    "read_table",
    "write_table",
    "update_peaks",
    "file_provenance",
]


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
    if not journal_has_batches(path):
        read_status(path)  # a clear error for a file that is not a results file
    table, _ = _read_all(Path(path))
    return table


def read_frames(path) -> pd.DataFrame:
    """The frames table of a results file (snapshot and journal), one row per processed frame.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    frames : pandas.DataFrame
        Columns of :data:`braggflow.schema.FRAME_COLUMNS`, sorted by frame; empty
        for a file written before the table existed.

    Raises
    ------
    InputFileError
        If the file does not exist.
    """
    path = Path(path)
    if not path.exists() and not _journal_dir(path).exists():
        raise InputFileError(f"{path}: no such results file")
    return _read_frames_table(path)


def read_frames_done(path) -> set[int]:
    """Frame indices recorded in a results file (snapshot and journal), without reading their peaks."""
    return frames_done(path)


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
    with _rewritten_entry(path, name) as entry:
        if name in entry:
            del entry[name]
        clean = {k: _attr_value(v) for k, v in (attrs or {}).items()}
        _restore_group(entry, name, ({k: conform_any(t) for k, t in (tables or {}).items()}, clean))
    _update_scicat(path, name, {**(attrs or {}), "tables": {k: len(t) for k, t in (tables or {}).items()}})


@contextlib.contextmanager
def _rewritten_entry(path, name: str):
    """``/entry`` of a temporary copy of a results file, open for writing; the copy replaces the file at the end.

    The group ``name`` is checked first, the file's lock is held throughout, and
    the replacement is an atomic rename, so a crash leaves the old file.

    Raises
    ------
    InputFileError
        If ``path`` is not a results file.
    ValueError
        If ``name`` is reserved or holds a ``/``.
    """
    import shutil

    import h5py

    if name in _RESERVED or "/" in name:
        raise ValueError(f"group name {name!r} is reserved or invalid")
    read_status(path)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with results_lock(path):
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as h5:
            yield h5["entry"]
        os.replace(tmp, path)


def record_group(path, name: str, *, tables: dict[str, pd.DataFrame] | None = None,
                 attrs: dict[str, Any] | None = None) -> tuple[int, dict[int, dict[str, Any]]]:
    """Record a numbered group ``/entry/<name>_<n>`` and make it the current ``/entry/<name>``.

    Each call keeps what earlier calls recorded: the new record gets the number
    ``n`` one above the highest recorded, and ``/entry/<name>`` is replaced by a
    copy of it with the attributes ``current`` (n) and ``record``
    (``"<name>_<n>"``), so readers of ``/entry/<name>`` see the latest.  A
    ``/entry/<name>`` written by :func:`write_group` (no ``current`` attribute)
    is first kept as a record of its own.  One atomic rewrite, as :func:`write_group`.

    Parameters
    ----------
    path : str or Path
        An existing results file.
    name : str
        Group name (not ``peaks``, ``process``, ``frames_done`` or ``frames``).
    tables : dict of {str: DataFrame}
    attrs : dict
        Attributes (str, int, float; anything else is stored as JSON); ``number``
        is set to n.

    Returns
    -------
    number : int
        n of the new record.
    earlier : dict of {int: dict}
        The attributes of the records that were there before, by number.

    Raises
    ------
    InputFileError
        If ``path`` is not a results file.
    ValueError
        If ``name`` is reserved.
    """
    with _rewritten_entry(path, name) as entry:
        earlier = _records(entry, name)
        if name in entry and "current" not in entry[name].attrs:
            number = max(earlier, default=0) + 1
            entry.copy(entry[name], f"{name}_{number}")
            entry[f"{name}_{number}"].attrs["number"] = number
            earlier = _records(entry, name)
        number = max(earlier, default=0) + 1
        clean = {k: _attr_value(v) for k, v in (attrs or {}).items()}
        clean["number"] = number
        payload = {k: conform_any(t) for k, t in (tables or {}).items()}
        _restore_group(entry, f"{name}_{number}", (payload, clean))
        if name in entry:
            del entry[name]
        _restore_group(entry, name, (payload, {**clean, "current": number, "record": f"{name}_{number}"}))
    _update_scicat(path, name, {**(attrs or {}), "number": number,
                                "tables": {k: len(t) for k, t in (tables or {}).items()}})
    return number, earlier


def _update_scicat(path, name: str, summary: dict[str, Any]) -> None:
    """Record what a later command added (``scientificMetadata.added[name]``) in the SciCat record, if there is one.

    A record that cannot be read or written is left as it is (the results file is what counts); a warning says so.
    """
    import logging

    record_path = scicat_path(path)
    if not record_path.exists():
        return
    try:
        record = json.loads(record_path.read_text())
        record.setdefault("scientificMetadata", {}).setdefault("added", {})[name] = summary
        record["size"] = Path(path).stat().st_size
        write_scicat(path, record)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("%s: SciCat record not updated (%s)", record_path, exc)


def _records(entry, name: str) -> dict[int, dict[str, Any]]:
    """Attributes of the groups ``<name>_<n>`` under an open ``/entry``, by n."""
    out = {}
    for key in entry:
        suffix = key[len(name) + 1:]
        if key.startswith(f"{name}_") and suffix.isdigit():
            out[int(suffix)] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in entry[key].attrs.items()
                                if k != "NX_class"}
    return dict(sorted(out.items()))


def recorded_groups(path, name: str) -> dict[int, dict[str, Any]]:
    """The records ``/entry/<name>_<n>`` of :func:`record_group`: their attributes by n (empty when none).

    Raises
    ------
    InputFileError
        If the file cannot be read as a results file.
    """
    with _open_results(path) as h5:
        return _records(h5["entry"], name) if "entry" in h5 else {}


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
    with results_lock(path):
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as h5:
            del h5["entry/peaks"]
            write_peaks_group(h5["entry"], table)
        os.replace(tmp, path)
    _update_scicat(path, "peaks", {"peaks": int(len(table)), "columns_filled": [
        str(c) for c in table.columns if not table[c].isna().all()]})
