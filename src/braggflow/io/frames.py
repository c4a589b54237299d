"""Lazy frame readers: HDF5/NeXus, every fabio format, file series, HEXRD frame-cache, NumPy.

:func:`open_frames` returns a :class:`FrameSeries`: a sequence of 2D frames read
one at a time on access, so a series of thousands of 2048 x 2048 frames never
sits in memory whole.  Series are picklable (they hold paths, not open
handles), so Dask workers can read their own frames.

An HDF5 file that a detector is still appending in SWMR (single-writer,
multiple-reader) mode is read with ``open_frames(path, swmr=True)``;
:meth:`FrameSeries.refresh` then picks up the frames written since.

This module holds :func:`open_frames`, which picks the reader for a source,
and the listing of a folder or a glob pattern.  The readers live beside it,
and are importable from here too: :class:`FrameSeries` and
:class:`ArraySeries` in :mod:`braggflow.io.series`, :class:`HDF5Series` in
:mod:`braggflow.io.hdf5`, :class:`FabioSeries` and :func:`read_image` in
:mod:`braggflow.io.images`, :class:`FrameCacheSeries` in
:mod:`braggflow.io.framecache`, :class:`SparseSeries` (ImageD11 sparse
pixel lists) in :mod:`braggflow.io.sparse`.

An HDF5 file is read by :class:`SparseSeries` when it holds an ImageD11
sparse scan (a group with the attributes and datasets of that layout,
whatever its name), by :class:`HDF5Series` otherwise.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from natsort import natsorted

from braggflow.errors import InputFileError
from braggflow.io.framecache import FrameCacheSeries
from braggflow.io.hdf5 import HDF5Series, _ConcatSeries, _h5_open
from braggflow.io.images import FabioSeries, missing_file_reason, read_image
from braggflow.io.series import ArraySeries, FrameSeries
from braggflow.io.sparse import SparseSeries, sparse_scans

__all__ = [
    "FrameSeries",
    "ArraySeries",
    "HDF5Series",
    "FabioSeries",
    "FrameCacheSeries",
    "SparseSeries",
    "open_frames",
    "read_image",
    "IMAGE_SUFFIXES",
    "FrameOrigins",
    "frame_origins",
]

#: File name endings recognised as detector images when a folder is given.
IMAGE_SUFFIXES = (
    ".tif", ".tiff", ".cbf", ".edf", ".h5", ".hdf5", ".nxs", ".nx5", ".img", ".mccd", ".sfrm",
    ".gfrm", ".mar3450", ".mar2300", ".npy", ".ge2", ".ge3", ".ge5", ".raw", ".fit2d", ".msk",
)


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _is_framecache(path: str) -> bool:
    if not path.endswith(".npz"):
        return False
    try:
        with np.load(path) as npz:
            return "nframes" in npz.files and "shape" in npz.files
    except Exception:
        return False


def open_frames(source, *, dataset: str | None = None, omega=None, swmr: bool = False) -> FrameSeries:
    """Open a series of detector frames, lazily.

    Parameters
    ----------
    source : str, PathLike, sequence of them, or ndarray
        - an (N, H, W) or (H, W) array;
        - an HDF5/NeXus file, optionally as ``FILE.h5::/path/to/dataset``;
        - an ImageD11 sparse HDF5 file (:class:`SparseSeries`), optionally as
          ``FILE.h5::SCAN`` (e.g. ``scan.h5::1.1``) when it holds several scans;
        - a HEXRD frame-cache ``.npz``; a ``.npy`` stack;
        - any image file fabio reads (TIFF, CBF, EDF, ...);
        - a folder (its image files in natural order), a glob pattern
          (``scan_*.cbf``), or a list of files (one series, in the given order).
    dataset : str, optional
        Dataset path inside an HDF5 file, or scan group of an ImageD11 sparse
        file (same as the ``::`` suffix).
    omega : (N, 2) array_like, optional
        Start/stop rotation angles in degrees, for sources that do not store them.
    swmr : bool, optional
        Open HDF5 files in SWMR read mode, for a file a detector is still
        appending (see :class:`HDF5Series`; :meth:`FrameSeries.refresh` gives
        the new length).  Refused for an ImageD11 sparse file; ignored for
        other formats.

    Returns
    -------
    series : FrameSeries

    Raises
    ------
    InputFileError
        If the source does not exist, matches no file, or cannot be read; the
        message names the file.
    """
    if isinstance(source, np.ndarray):
        return ArraySeries(source, omega=omega)
    if isinstance(source, (list, tuple)):
        return _open_files([str(p) for p in source], dataset=dataset, omega=omega, swmr=swmr)
    path = str(source)
    if "::" in path:
        path, dataset = path.split("::", 1)
    files = _listed_files(path)
    if files is not None:
        return open_frames(files, dataset=dataset, omega=omega, swmr=swmr)
    return _with_omega(_open_file(path, dataset=dataset, swmr=swmr), omega)


def _open_files(paths: list[str], *, dataset: str | None, omega, swmr: bool) -> FrameSeries:
    """A list of files as one series: several HDF5 files, or files fabio reads (one file: as itself)."""
    if len(paths) == 1:
        return open_frames(paths[0], dataset=dataset, omega=omega, swmr=swmr)
    _check_one_kind(paths)
    if all(_is_hdf5(p) for p in paths if os.path.exists(p)) and all(os.path.exists(p) for p in paths):
        if sparse_scans(paths[0], swmr=swmr):
            raise InputFileError(f"{paths[0]}: an ImageD11 sparse file is read one file (and scan) at a time, "
                                 f"not as part of a list of {len(paths)} files; open it alone (FILE.h5::SCAN)")
        return _ConcatSeries([HDF5Series(p, dataset, swmr=swmr) for p in paths])
    return _with_omega(FabioSeries(paths), omega)


def _file_kind(path: str) -> str:
    """The kind of a frame file, by content for HDF5 and by name otherwise ("HDF5", "TIF", "CBF", ...)."""
    if _is_hdf5(path):
        return "HDF5"
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"tiff": "TIF", "npz": "HEXRD frame cache", "npy": "NumPy"}.get(suffix, suffix.upper() or "no suffix")


def _check_one_kind(paths: list[str]) -> None:
    """Refuse a list of files of several kinds (HDF5 files beside a preview TIFF would count as one frame each).

    Raises
    ------
    InputFileError
        Listing the kinds found, with a few names of each.
    """
    kinds: dict[str, list[str]] = {}
    for p in paths:
        if os.path.exists(p):
            kinds.setdefault(_file_kind(p), []).append(os.path.basename(p))
    if len(kinds) > 1:
        found = "; ".join(f"{kind}: {len(names)} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})"
                          for kind, names in kinds.items())
        raise InputFileError(f"{os.path.dirname(paths[0]) or '.'}: the inputs are files of several kinds ({found}); "
                             "select one kind, e.g. with a glob such as 'DIR/*.h5'")


def _listed_files(path: str) -> list[str] | None:
    """The image files of a folder or the files a glob pattern matches, in natural order; None for other paths.

    Raises
    ------
    InputFileError
        If the folder holds no image file or the pattern matches no file.
    """
    if os.path.isdir(path):
        files = natsorted(
            str(p) for p in Path(path).iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            raise InputFileError(
                f"{path}: folder holds no detector image files ({', '.join(IMAGE_SUFFIXES[:5])}, ...)"
            )
        return files
    if any(ch in path for ch in "*?["):
        files = natsorted(glob.glob(path))
        if not files:
            raise InputFileError(f"{path}: pattern matches no file")
        return files
    return None


def _open_file(path: str, *, dataset: str | None, swmr: bool) -> FrameSeries:
    """One file, by its content: HDF5, HEXRD frame-cache ``.npz``, ``.npy`` stack, else anything fabio reads."""
    if not os.path.exists(path):
        raise InputFileError(f"{path}: {missing_file_reason(path)}")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{path}: file is empty")
    if _is_hdf5(path):
        return _open_hdf5(path, dataset=dataset, swmr=swmr)
    if path.endswith(".npz"):
        if not _is_framecache(path):
            raise InputFileError(
                f"{path}: .npz is not a HEXRD frame-cache (needs 'shape', 'nframes', '{{i}}_row/col/data')"
            )
        return FrameCacheSeries(path)
    if path.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{path}: not a readable .npy file ({exc})") from None
        series = ArraySeries(arr)
        series.sources = [path]
        return series
    return FabioSeries([path])


def _open_hdf5(path: str, *, dataset: str | None, swmr: bool) -> FrameSeries:
    """An HDF5 file: :class:`SparseSeries` when it holds ImageD11 sparse scans, else :class:`HDF5Series`.

    With sparse scans in the file, ``dataset`` chooses the scan; a ``dataset``
    that names an HDF5 dataset (not a group) keeps :class:`HDF5Series`.

    Raises
    ------
    InputFileError
        If the file cannot be read, or it is a sparse file and ``swmr`` is asked for.
    """
    if not sparse_scans(path, swmr=swmr) or (dataset is not None and _names_a_dataset(path, dataset, swmr=swmr)):
        return HDF5Series(path, dataset, swmr=swmr)
    if swmr:
        raise InputFileError(f"{path}: an ImageD11 sparse file cannot be read while it is written (swmr); "
                             "open it when complete")
    return SparseSeries(path, scan=dataset)


def _names_a_dataset(path: str, name: str, *, swmr: bool) -> bool:
    """Whether ``name`` is an HDF5 dataset (not a group, not absent) in the file."""
    import h5py

    h5 = _h5_open(path, swmr=swmr)
    try:
        return isinstance(h5.get(name), h5py.Dataset)
    finally:
        h5.close()


def _with_omega(series: FrameSeries, omega) -> FrameSeries:
    """``series`` with the start/stop angles ``omega`` ((N, 2) degrees) when given."""
    if omega is not None:
        series.omega = np.asarray(omega, dtype=float).reshape(len(series), 2)
    return series


@dataclass(frozen=True)
class FrameOrigins:
    """Which file each frame of a series comes from, and its index inside that file.

    Attributes
    ----------
    names : tuple of str
        The files in series order, each named relative to the inputs' common
        folder (a single file: its name); empty for frames given as an array.
    first : (F,) ndarray of int64
        Series index of the first frame of each file (ascending; the first is 0).
    """

    names: tuple[str, ...]
    first: np.ndarray

    def lookup(self, frames) -> tuple[pd.Categorical, np.ndarray]:
        """The file and the index inside it of each frame.

        Parameters
        ----------
        frames : (N,) array_like of int
            Series indices.

        Returns
        -------
        source_file : pandas.Categorical
            File names (missing for frames given as an array).
        frame_in_file : (N,) ndarray of int64
            Index inside the file (-1 for frames given as an array).
        """
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        if not self.names:
            return pd.Categorical([None] * frames.size), np.full(frames.size, -1, dtype=np.int64)
        k = np.searchsorted(self.first, frames, side="right") - 1
        return pd.Categorical.from_codes(k, dtype=self._source_dtype), frames - self.first[k]

    @functools.cached_property
    def _source_dtype(self) -> pd.CategoricalDtype:
        """The dtype of ``source_file`` (the file names as categories), made once: making one costs ~0.5 ms."""
        return pd.CategoricalDtype(list(self.names))

    def fill(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with ``source_file`` and ``frame_in_file`` set from its ``frame`` column (in place)."""
        source_file, frame_in_file = self.lookup(table["frame"].to_numpy())
        table["source_file"] = source_file
        table["frame_in_file"] = frame_in_file
        return table


def frame_origins(series: FrameSeries) -> FrameOrigins:
    """The file of each frame of ``series`` and the frame's index inside it.

    A series of several files (a folder, a glob, a list) names each file
    relative to the files' common folder; a series from one file names that
    file (its base name) and counts frames inside it from 0.  An HDF5 file
    that gathers external data files (an Eiger master) is the file given.

    Parameters
    ----------
    series : FrameSeries

    Returns
    -------
    origins : FrameOrigins
    """
    if isinstance(series, FabioSeries):
        paths, first = series.paths, np.asarray(series._offsets[:-1], dtype=np.int64)
    elif isinstance(series, _ConcatSeries):
        paths, first = [p.path for p in series.parts], np.asarray(series._offsets[:-1], dtype=np.int64)
    else:
        paths, first = list(series.sources[:1]), np.zeros(min(1, len(series.sources)), dtype=np.int64)
    return FrameOrigins(names=tuple(_relative_names(paths)), first=first)


def _relative_names(paths: list[str]) -> list[str]:
    """Each path relative to the common folder of them all (one path: its base name)."""
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.dirname(absolute[0]) if len(absolute) == 1 else os.path.commonpath(absolute)
    if len(absolute) > 1 and common in absolute:  # one path is the common part itself (the same file twice)
        common = os.path.dirname(common)
    return [os.path.relpath(p, common) for p in absolute]
