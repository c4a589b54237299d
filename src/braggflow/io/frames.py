"""Lazy frame readers: HDF5/NeXus, every fabio format, file series, HEXRD frame-cache, NumPy.

:func:`open_frames` returns a :class:`FrameSeries`: a sequence of 2D frames read
one at a time on access, so a series of thousands of 2048 x 2048 frames never
sits in memory whole.  Series are picklable (they hold paths, not open
handles), so Dask workers can read their own frames.

An HDF5 file that a detector is still appending in SWMR (single-writer,
multiple-reader) mode is read with ``open_frames(path, swmr=True)``;
:meth:`FrameSeries.refresh` then picks up the frames written since.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from natsort import natsorted

from braggflow.errors import InputFileError

__all__ = [
    "FrameSeries",
    "ArraySeries",
    "HDF5Series",
    "FabioSeries",
    "FrameCacheSeries",
    "open_frames",
    "read_image",
    "IMAGE_SUFFIXES",
]

#: File name endings recognised as detector images when a folder is given.
IMAGE_SUFFIXES = (
    ".tif", ".tiff", ".cbf", ".edf", ".h5", ".hdf5", ".nxs", ".nx5", ".img", ".mccd", ".sfrm",
    ".gfrm", ".mar3450", ".mar2300", ".npy", ".ge2", ".ge3", ".ge5", ".raw", ".fit2d", ".msk",
)


class FrameSeries:
    """A sequence of 2D detector frames read lazily.

    Attributes
    ----------
    shape : tuple of int
        (H, W) of every frame, px.
    dtype : numpy.dtype
        Pixel type as stored.
    omega : (N, 2) ndarray of float or None
        Start and stop rotation angle of each frame, degrees, when the format knows it.
    detector_mask : (H, W) ndarray of bool or None
        Pixels the file marks as bad (True = bad), e.g. a NeXus ``pixel_mask``.
    sources : list of str
        Files the frames come from.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    omega: np.ndarray | None = None
    detector_mask: np.ndarray | None = None
    sources: list[str]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as an (H, W) array (negative indices count from the end).

        Raises
        ------
        IndexError
            If ``index`` is outside the series.
        InputFileError
            If the frame cannot be read or has the wrong shape; the message names the file.
        """
        n = len(self)
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"frame {index} is outside the series of {n} frames")
        frame = self._read(int(index))
        if frame.shape != tuple(self.shape):
            raise InputFileError(
                f"{self.describe_frame(int(index))}: frame has shape {frame.shape}, "
                f"expected {tuple(self.shape)} like the first frame"
            )
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def refresh(self) -> int:
        """Look again at the source for frames written since it was opened.

        Only a growing HDF5 dataset (:class:`HDF5Series`) can gain frames;
        other series return their length unchanged.

        Returns
        -------
        n : int
            Number of frames now in the series.
        """
        return len(self)

    def omega_centre(self, index: int) -> float:
        """Rotation angle at the centre of frame ``index``, degrees (NaN without omega)."""
        if self.omega is None:
            return float("nan")
        return float(np.mean(self.omega[index]))

    def describe_frame(self, index: int) -> str:
        """Human-readable origin of frame ``index`` (file and position) for messages."""
        return f"{self.sources[0] if self.sources else '<array>'} frame {index}"

    def __repr__(self) -> str:
        more = "..." if len(self.sources) > 1 else ""
        return (f"{type(self).__name__}({len(self)} frames of {self.shape[0]}x{self.shape[1]} {self.dtype}, "
                f"from {self.sources[:1]}{more})")


class ArraySeries(FrameSeries):
    """Frames from an in-memory array.

    Parameters
    ----------
    array : (N, H, W) or (H, W) array_like
    omega : (N, 2) array_like of float, optional
        Start/stop rotation angles, degrees.

    Raises
    ------
    InputFileError
        If the array is not 2D or 3D.
    """

    def __init__(self, array, *, omega=None, detector_mask=None):
        arr = np.asarray(array)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InputFileError(f"frames array must be (N, H, W) or (H, W), got shape {arr.shape}")
        self._array = arr
        self.shape = arr.shape[1:]
        self.dtype = arr.dtype
        self.omega = None if omega is None else np.asarray(omega, dtype=float).reshape(len(arr), 2)
        self.detector_mask = detector_mask
        self.sources = []

    def __len__(self) -> int:
        return len(self._array)

    def _read(self, index: int) -> np.ndarray:
        return self._array[index]

    def describe_frame(self, index: int) -> str:
        return f"<array> frame {index}"


# --------------------------------------------------------------------------- HDF5 / NeXus


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


class HDF5Series(FrameSeries):
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
                dset = self._h5[name]
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

    def _read(self, index: int) -> np.ndarray:
        if self._h5 is None:
            self._h5 = _h5_open(self.path, swmr=self.swmr)
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        dset = self._h5[self.datasets[k]]
        try:
            return dset[()] if dset.ndim == 2 else dset[index - self._offsets[k]]
        except OSError as exc:
            raise InputFileError(f"{self.describe_frame(index)}: cannot read ({exc})") from None

    def describe_frame(self, index: int) -> str:
        return f"{self.path} frame {index}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def close(self) -> None:
        """Close the underlying file handle (reopened on the next read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


# --------------------------------------------------------------------------- fabio formats


def read_image(path: str | os.PathLike, *, what: str = "image") -> np.ndarray:
    """Read one 2D image (a dark, flat or mask file, or a single frame).

    Any fabio format, ``.npy``, or HDF5 (``FILE.h5`` or ``FILE.h5::/path``; a
    3D dataset is averaged over its first axis, as for a stack of darks).

    Parameters
    ----------
    path : str or PathLike
    what : str
        What the file is, for error messages ("dark", "mask", ...).

    Returns
    -------
    image : (H, W) ndarray

    Raises
    ------
    InputFileError
        If the file is missing or unreadable; names ``what`` and the file.
    """
    path = str(path)
    file_part = path.split("::", 1)[0]
    if not os.path.exists(file_part):
        raise InputFileError(f"{what} file {file_part}: no such file")
    if file_part.endswith(".npy"):
        try:
            image = np.load(file_part)
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{what} file {file_part}: not a readable .npy file ({exc})") from None
    elif file_part.lower().endswith((".h5", ".hdf5", ".nxs", ".nx5")):
        dataset = path.split("::", 1)[1] if "::" in path else None
        series = HDF5Series(file_part, dataset)
        image = series[0] if len(series) == 1 else np.mean([series[i] for i in range(len(series))], axis=0)
    else:
        image = FabioSeries([file_part])[0]
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputFileError(f"{what} file {path}: expected a 2D image, got shape {image.shape}")
    return image


class FabioSeries(FrameSeries):
    """Frames from a list of files in any format fabio reads (TIFF, CBF, EDF, ...).

    A multi-frame file (EDF, multi-page TIFF) contributes all its frames.
    The number of frames of each file is taken from its header when the series
    is opened; pixel data is read on access.  The file opened last is kept
    (one file), so the first file, which is decoded to learn the frame shape,
    is not decoded again when its frame is read, and the frames of a
    multi-frame file are taken from one opened file.

    Parameters
    ----------
    paths : sequence of str
        Files in series order.

    Raises
    ------
    InputFileError
        If a file is missing or fabio cannot read it.
    """

    def __init__(self, paths: Sequence[str]):
        if not paths:
            raise InputFileError("no frame files given")
        self.paths = [str(p) for p in paths]
        self._last: tuple[str, object] | None = None  # (path, fabio image) opened last
        first = self._open_cached(self.paths[0])
        if first.data is None:
            raise InputFileError(f"{self.paths[0]}: file holds no image data (truncated?)")
        self.shape = tuple(first.data.shape)
        self.dtype = first.data.dtype
        n0 = int(getattr(first, "nframes", 1) or 1)
        multi = n0 > 1 or self.paths[0].lower().endswith(".edf")
        # Single-frame formats: one frame per file (headers of thousands of files are not opened up front).
        self.counts = [n0] + ([self._open(p).nframes for p in self.paths[1:]] if multi else [1] * (len(self.paths) - 1))
        self._offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.sources = self.paths

    @staticmethod
    def _open(path: str):
        import fabio

        if not os.path.exists(path):
            raise InputFileError(f"{path}: no such file")
        try:
            return fabio.open(path)
        except Exception as exc:  # fabio raises many types for corrupt files
            raise InputFileError(f"{path}: not a readable detector image ({type(exc).__name__}: {exc})") from None

    def _open_cached(self, path: str):
        """The fabio image of ``path``, decoded once while it is the file read last."""
        last = self._last  # one read of the attribute: safe when threads share the series
        if last is not None and last[0] == path:
            return last[1]
        img = self._open(path)
        self._last = (path, img)
        return img

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_last"] = None
        return state

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[str, int]:
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.paths[k], index - int(self._offsets[k])

    def _read(self, index: int) -> np.ndarray:
        path, sub = self._locate(index)
        img = self._open_cached(path)
        try:
            data = img.data if sub == 0 else img.getframe(sub).data
        except Exception as exc:
            raise InputFileError(f"{path}: cannot read frame {sub} ({exc})") from None
        if data is None:
            raise InputFileError(f"{path}: file holds no image data (truncated?)")
        if sub == 0 and self._last is not None and self._last[1] is img:
            self._last = None  # its pixels are handed out: neither kept alive nor shared with a later read
        return data

    def describe_frame(self, index: int) -> str:
        path, sub = self._locate(index)
        return f"{path}" + (f" frame {sub}" if self.counts[self.paths.index(path)] > 1 else "")


# --------------------------------------------------------------------------- HEXRD frame-cache


class FrameCacheSeries(FrameSeries):
    """Frames from a HEXRD frame-cache ``.npz`` (sparse, thresholded frames).

    The file holds ``shape``, ``nframes``, ``dtype``, ``omega`` ((N, 2) start/stop
    degrees) and, for each frame ``i``, the sparse pixels ``{i}_row``,
    ``{i}_col``, ``{i}_data``; unlisted pixels are 0.

    Parameters
    ----------
    path : str

    Raises
    ------
    InputFileError
        If the file is missing, not an ``.npz`` or lacks the frame-cache keys.
    """

    def __init__(self, path: str):
        self.path = str(path)
        npz = self._load()
        try:
            self.shape = tuple(int(x) for x in npz["shape"])
            self._n = int(npz["nframes"])
            dtype = npz["dtype"]
            self.dtype = np.dtype(dtype.item().decode() if isinstance(dtype.item(), bytes) else str(dtype))
            self.omega = np.asarray(npz["omega"], dtype=float).reshape(self._n, 2) if "omega" in npz.files else None
        except KeyError as exc:
            raise InputFileError(f"{self.path}: not a HEXRD frame-cache (missing key {exc.args[0]!r})") from None
        self.sources = [self.path]
        self._npz = None

    def _load(self):
        if not os.path.exists(self.path):
            raise InputFileError(f"{self.path}: no such file")
        try:
            return np.load(self.path, allow_pickle=False)
        except Exception as exc:
            raise InputFileError(f"{self.path}: not a readable .npz file ({exc})") from None

    def __len__(self) -> int:
        return self._n

    def _read(self, index: int) -> np.ndarray:
        if self._npz is None:
            self._npz = self._load()
        frame = np.zeros(self.shape, dtype=self.dtype)
        try:
            frame[self._npz[f"{index}_row"], self._npz[f"{index}_col"]] = self._npz[f"{index}_data"]
        except (KeyError, ValueError, OSError) as exc:
            raise InputFileError(f"{self.path}: frame {index} is missing or corrupt ({exc})") from None
        return frame

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_npz"] = None
        return state


# --------------------------------------------------------------------------- dispatcher


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
        - a HEXRD frame-cache ``.npz``; a ``.npy`` stack;
        - any image file fabio reads (TIFF, CBF, EDF, ...);
        - a folder (its image files in natural order), a glob pattern
          (``scan_*.cbf``), or a list of files (one series, in the given order).
    dataset : str, optional
        Dataset path inside an HDF5 file (same as the ``::`` suffix).
    omega : (N, 2) array_like, optional
        Start/stop rotation angles in degrees, for sources that do not store them.
    swmr : bool, optional
        Open HDF5 files in SWMR read mode, for a file a detector is still
        appending (see :class:`HDF5Series`; :meth:`FrameSeries.refresh` gives
        the new length).  Ignored for other formats.

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
    if all(_is_hdf5(p) for p in paths if os.path.exists(p)) and all(os.path.exists(p) for p in paths):
        return _ConcatSeries([HDF5Series(p, dataset, swmr=swmr) for p in paths])
    return _with_omega(FabioSeries(paths), omega)


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
        raise InputFileError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{path}: file is empty")
    if _is_hdf5(path):
        return HDF5Series(path, dataset, swmr=swmr)
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


def _with_omega(series: FrameSeries, omega) -> FrameSeries:
    """``series`` with the start/stop angles ``omega`` ((N, 2) degrees) when given."""
    if omega is not None:
        series.omega = np.asarray(omega, dtype=float).reshape(len(series), 2)
    return series


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

    def describe_frame(self, index: int) -> str:
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.parts[k].describe_frame(index - int(self._offsets[k]))
