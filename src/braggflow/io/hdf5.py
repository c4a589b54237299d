"""HDF5 and NeXus frames: :class:`HDF5Series`, the NeXus signal lookup, several HDF5 files as one series.

A series opened with ``swmr=True`` keeps its file open in SWMR
(single-writer, multiple-reader) read mode, so :meth:`HDF5Series.refresh`
picks up the frames a detector appended since.
"""

from __future__ import annotations

import re

import numpy as np

from braggflow.errors import InputFileError
from braggflow.io.series import FrameSeries

__all__ = ["HDF5Series"]


def _h5_open(path: str, *, swmr: bool = False):
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other filters)

    try:
        return h5py.File(path, "r", swmr=swmr, locking=False)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 file ({exc})") from None


def _nexus_signal(h5) -> str | None:
    """Follow NeXus ``default`` attributes to the NXdata signal dataset, if declared."""
    import h5py

    node = h5
    for _ in range(4):
        default = node.attrs.get("default")
        if default is None:
            break
        default = default.decode() if isinstance(default, bytes) else str(default)
        if default not in node:
            break
        node = node[default]
        if isinstance(node, h5py.Group) and _attr_str(node, "NX_class") == "NXdata":
            break
    if isinstance(node, h5py.Group) and _attr_str(node, "NX_class") == "NXdata":
        signal = node.attrs.get("signal")
        if signal is not None:
            signal = signal.decode() if isinstance(signal, bytes) else str(signal)
            if signal in node:
                return node[signal].name
        if "data" in node:
            return node["data"].name
    return None


def _attr_str(node, name: str) -> str | None:
    value = node.attrs.get(name)
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def _image_datasets(h5) -> list[str]:
    """Names of datasets with >= 2 dimensions (candidate frame stacks), largest first."""
    import h5py

    found: list[tuple[int, str]] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and min(obj.shape[-2:]) > 1:
            found.append((int(np.prod(obj.shape)), "/" + name))

    try:
        h5.visititems(visit)
    except (KeyError, OSError):  # broken external links (e.g. a missing Eiger data file)
        pass
    return [name for _, name in sorted(found, reverse=True)]


class _OpenFile:
    """An HDF5 file handle ``_h5`` kept open between reads, dropped when pickled (a Dask worker reopens it)."""

    _h5 = None
    _open_datasets: dict | None = None  # name -> (h5py.Dataset, whether bitshuffle.read_frame_into reads its frames)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_open_datasets"] = None
        return state

    def close(self) -> None:
        """Close the underlying file handle (reopened on the next read)."""
        self._open_datasets = None
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


class HDF5Series(_OpenFile, FrameSeries):
    """Frames from one HDF5/NeXus dataset of shape (N, H, W) or (H, W).

    Eiger master files whose ``/entry/data`` holds several ``data_NNNNNN``
    datasets are read as one series.  Compressed datasets (bitshuffle/LZ4 and
    the other hdf5plugin filters) are supported.

    With ``swmr=True`` the file is opened in SWMR read mode and kept open, so
    a writer may go on appending frames (resizing the first axis of a 3D
    dataset); :meth:`refresh` re-reads the number of frames.

    Parameters
    ----------
    path : str
        HDF5 file.
    dataset : str, optional
        Path of the frames inside the file; default: the NeXus default
        ``NXdata`` signal, else the Eiger ``/entry/data/data_*`` sets, else the
        largest 2D/3D dataset (3D only with ``swmr``).
    swmr : bool, optional
        Read a file that is still being written by an SWMR writer.  The
        frames must be a 3D (N, H, W) dataset; N may be 0 when opened.

    Raises
    ------
    InputFileError
        If the file cannot be read, the dataset does not exist or is not 2D/3D
        (not 3D with ``swmr``).
    """

    def __init__(self, path: str, dataset: str | None = None, *, swmr: bool = False):
        self.path = str(path)
        self.swmr = bool(swmr)
        h5 = _h5_open(self.path, swmr=self.swmr)
        try:
            names = self._resolve(h5, dataset)
            shapes = [h5[n].shape for n in names]
            self.dtype = h5[names[0]].dtype
            mask_name = "/entry/instrument/detector/pixel_mask"
            self.detector_mask = h5[mask_name][()].astype(bool) if mask_name in h5 else None
        except BaseException:
            h5.close()
            raise
        self.datasets = names
        self.shape = tuple(shapes[0][-2:])
        self._set_counts(shapes)
        self.sources = [self.path]
        if self.swmr:  # kept open: refresh() needs the SWMR handle
            self._h5 = h5
        else:
            h5.close()
            self._h5 = None

    def _set_counts(self, shapes) -> None:
        for name, s in zip(self.datasets, shapes):
            if tuple(s[-2:]) != self.shape:
                raise InputFileError(f"{self.path}::{name}: frames of shape {s[-2:]}, expected {self.shape}")
        self.counts = [1 if len(s) == 2 else int(s[0]) for s in shapes]
        self._offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def refresh(self) -> int:
        """Re-read the number of frames, which an SWMR writer may have increased.

        With ``swmr=True`` each dataset's metadata is refreshed through the
        open SWMR handle; otherwise the file is opened again (for a file
        appended between reads by a writer that closed it).

        Returns
        -------
        n : int
            Number of frames now in the series.

        Raises
        ------
        InputFileError
            If the file can no longer be read or its frames changed shape.
        """
        if not self.swmr:
            self.close()
        if self._h5 is None:
            self._h5 = _h5_open(self.path, swmr=self.swmr)
        try:
            shapes = []
            for name in self.datasets:
                dset = self._h5[name] if name not in (self._open_datasets or {}) else self._open_datasets[name][0]
                if self.swmr:
                    dset.refresh()
                shapes.append(dset.shape)
        except (KeyError, OSError) as exc:
            raise InputFileError(f"{self.path}: cannot refresh the frame datasets ({exc})") from None
        self._set_counts(shapes)
        return len(self)

    def _resolve(self, h5, dataset: str | None) -> list[str]:
        """Names of the frame datasets: ``dataset``, else the NeXus signal, the Eiger data sets, the largest."""
        ndims = (3,) if self.swmr else (2, 3)
        if dataset:
            return [self._named_dataset(h5, dataset, ndims)]
        signal = _nexus_signal(h5)
        if signal is not None and h5[signal].ndim in ndims:
            return [signal]
        eiger = self._eiger_datasets(h5)
        if eiger:
            return eiger
        found = [n for n in _image_datasets(h5) if h5[n].ndim in ndims]
        if not found:
            raise InputFileError(f"{self.path}: no {'3D' if self.swmr else '2D or 3D'} dataset of frames found")
        return [found[0]]

    def _named_dataset(self, h5, dataset: str, ndims: tuple[int, ...]) -> str:
        """The full name of the dataset asked for, checked to hold frames."""
        import h5py

        if dataset not in h5:
            candidates = ", ".join(_image_datasets(h5)[:5]) or "none"
            raise InputFileError(f"{self.path}: no dataset {dataset!r} (image datasets found: {candidates})")
        obj = h5[dataset]
        if not isinstance(obj, h5py.Dataset) or obj.ndim not in ndims:
            if self.swmr:
                expected = "a 3D (frames, H, W) dataset to read while it grows"
            else:
                expected = "a 2D or 3D dataset of frames"
            raise InputFileError(
                f"{self.path}::{dataset}: expected {expected}, got shape {getattr(obj, 'shape', None)}"
            )
        return obj.name

    def _eiger_datasets(self, h5) -> list[str]:
        """The 3D ``/entry/data/data_NNNNNN`` datasets of an Eiger master file, in order (may be none)."""
        if "entry/data" not in h5:
            return []
        eiger = sorted(k for k in h5["entry/data"] if re.fullmatch(r"data_\d{6}", k))
        readable = []
        for k in eiger:
            try:
                if h5[f"entry/data/{k}"].ndim == 3:
                    readable.append(f"/entry/data/{k}")
            except KeyError:  # a data file of the master is missing
                raise InputFileError(f"{self.path}: Eiger data file for /entry/data/{k} is missing") from None
        return readable

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _dataset(self, index: int):
        """The open dataset holding frame ``index``, the frame's index in it, and whether its chunks are whole
        bitshuffle-LZ4 frames (:mod:`braggflow.io.bitshuffle`); datasets are looked up once per open file."""
        from braggflow.io.bitshuffle import whole_frame_chunks

        if self._h5 is None:
            self._h5 = _h5_open(self.path, swmr=self.swmr)
        if self._open_datasets is None:
            self._open_datasets = {}
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        name = self.datasets[k]
        if name not in self._open_datasets:
            dset = self._h5[name]
            self._open_datasets[name] = (dset, whole_frame_chunks(dset))
        dset, whole_frames = self._open_datasets[name]
        return dset, int(index - self._offsets[k]), whole_frames

    def _read(self, index: int) -> np.ndarray:
        from braggflow.io.bitshuffle import read_frame_into

        dset, local, whole_frames = self._dataset(index)
        if whole_frames:
            frame = np.empty(dset.shape[-2:], dtype=dset.dtype)
            if read_frame_into(dset, local, frame):
                return frame
        try:
            return dset[()] if dset.ndim == 2 else dset[local]
        except OSError as exc:
            raise InputFileError(f"{self.describe_frame(index)}: cannot read ({exc})") from None

    def _read_into(self, index: int, out: np.ndarray) -> bool:
        """Frame ``index`` into the caller's buffer (no new array, and its page faults, per frame): bitshuffle's
        decompression straight into it where each chunk is a whole frame, else HDF5's read_direct."""
        from braggflow.io.bitshuffle import read_frame_into

        dset, local, whole_frames = self._dataset(index)
        if dset.dtype != out.dtype or tuple(dset.shape[-2:]) != out.shape:
            return False
        if whole_frames and read_frame_into(dset, local, out):
            return True
        try:
            dset.read_direct(out, np.s_[()] if dset.ndim == 2 else np.s_[local])
        except OSError as exc:
            raise InputFileError(f"{self.describe_frame(index)}: cannot read ({exc})") from None
        return True

    def describe_frame(self, index: int) -> str:
        return f"{self.path} frame {index}"



class _ConcatSeries(FrameSeries):
    """Several HDF5 series read as one (a list of HDF5 files)."""

    def __init__(self, parts: list[HDF5Series]):
        self.parts = parts
        self.shape = parts[0].shape
        self.dtype = parts[0].dtype
        for p in parts[1:]:
            if p.shape != self.shape:
                raise InputFileError(f"{p.path}: frames of shape {p.shape}, expected {self.shape} like {parts[0].path}")
        self.detector_mask = parts[0].detector_mask
        self._offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        self.sources = [p.path for p in parts]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def refresh(self) -> int:
        """Refresh every part (see :meth:`HDF5Series.refresh`); returns the new number of frames."""
        self._offsets = np.concatenate([[0], np.cumsum([p.refresh() for p in self.parts])])
        return len(self)

    def _read(self, index: int) -> np.ndarray:
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.parts[k][index - int(self._offsets[k])]

    def _read_into(self, index: int, out: np.ndarray) -> bool:
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.parts[k]._read_into(index - int(self._offsets[k]), out)

    def describe_frame(self, index: int) -> str:
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.parts[k].describe_frame(index - int(self._offsets[k]))
