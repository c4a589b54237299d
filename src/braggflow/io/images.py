"""Image files in any format fabio reads (TIFF, CBF, EDF, ...): :class:`FabioSeries` and :func:`read_image`."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from braggflow.errors import InputFileError
from braggflow.io.hdf5 import HDF5Series
from braggflow.io.series import FrameSeries

__all__ = ["FabioSeries", "read_image", "missing_file_reason", "cbf_complete", "tiff_frame", "TIFF_SUFFIXES"]


def missing_file_reason(path: str | os.PathLike) -> str:
    """Why a path names no readable file: "no such file", a symbolic link loop, or a link to a missing target.

    Parameters
    ----------
    path : str or PathLike
        A path for which ``os.path.exists`` is False.

    Returns
    -------
    reason : str
    """
    import errno

    path = str(path)
    if not os.path.islink(path):
        return "no such file"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
    return f"a symbolic link to {os.readlink(path)}, which does not exist"


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
        raise InputFileError(f"{what} file {file_part}: {missing_file_reason(file_part)}")
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


def edf_complete(path: str, size: int) -> bool:
    """Whether an EDF file holds as many data bytes as its first header declares.

    fabio reads a truncated EDF without error (zero-padded), so the header's
    ``Size`` is checked against the file size (of a multi-frame file, the
    first frame's).

    Parameters
    ----------
    path : str
        An EDF file.
    size : int
        Its size in bytes (given, so a caller watching a growing file decides when it was taken).

    Returns
    -------
    complete : bool
        True also when the header declares no ``Size``.
    """
    with open(path, "rb") as fh:
        head = fh.read(65536)
    end = head.find(b"}")
    if not head.startswith(b"{") or end < 0:
        return False
    # the header ends with "}" and one line end; the data may itself begin with bytes 10 or 13
    header_len = end + 1
    if head[header_len : header_len + 2] == b"\r\n":
        header_len += 2
    elif head[header_len : header_len + 1] == b"\n":
        header_len += 1
    match = re.search(rb"\bSize\s*=\s*(\d+)", head[:end])
    if match is None:
        return True  # fabio will infer it; nothing better to check
    return size >= header_len + int(match.group(1))


def cbf_complete(path: str, size: int) -> bool:
    """Whether a CBF file holds as many binary bytes as its header declares (``X-Binary-Size``).

    fabio fails on a truncated CBF with an empty ``AssertionError`` (or a
    checksum message); this check names the cause.

    Parameters
    ----------
    path : str
        A CBF file.
    size : int
        Its size in bytes.

    Returns
    -------
    complete : bool
        True also when the header declares no binary size.
    """
    with open(path, "rb") as fh:
        head = fh.read(65536)
    start = head.find(b"\x0c\x1a\x04\xd5")  # the marker that starts the binary section
    match = re.search(rb"X-Binary-Size:\s*(\d+)", head)
    if match is None:
        return True
    if start < 0:
        return False  # the header declares data that never starts
    return size >= start + 4 + int(match.group(1))


#: File name endings of TIFF files, whose pixels :func:`tiff_frame` reads.
TIFF_SUFFIXES = (".tif", ".tiff")


def tiff_frame(path: str, page: int, shape: tuple[int, ...], dtype, out: np.ndarray | None = None):
    """Page ``page`` of a TIFF file as tifffile reads it, when it is the frame fabio would give; else None.

    tifffile reads a page's strips in one pass (a Pilatus 6M frame of int32 in
    ~7 ms, where fabio's own TIFF reader takes 35-75 ms).  A page of another
    shape or dtype than the series' (a colour page), a compression tifffile
    cannot decode here, or a damaged file gives None: the caller reads that
    file with fabio, as before, and the series reports what is wrong.

    Parameters
    ----------
    path : str
        TIFF file.
    page : int
        Page (image file directory) index.
    shape : tuple of int
        The series' frame shape (H, W).
    dtype : numpy dtype
        The series' dtype.
    out : (H, W) ndarray, optional
        C-contiguous buffer of ``shape`` and ``dtype`` to read into.

    Returns
    -------
    frame : (H, W) ndarray or None
        ``out`` (or a new array) holding the page; None where fabio must read it.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if page >= len(tif.pages):
                return None
            found = tif.pages[page]
            if tuple(found.shape) != tuple(shape) or found.dtype != np.dtype(dtype):
                return None
            return found.asarray(out=out)
    except Exception:  # tifffile raises many types for files it cannot read; fabio reads them then
        return None


class FabioSeries(FrameSeries):
    """Frames from a list of files in any format fabio reads (TIFF, CBF, EDF, ...).

    A multi-frame file (EDF, multi-page TIFF) contributes all its frames.
    The number of frames of each file is taken from its header when the series
    is opened; pixel data is read on access.  The file opened last is kept
    (one file), so the first file, which is decoded to learn the frame shape,
    is not decoded again when its frame is read, and the frames of a
    multi-frame file are taken from one opened file.  The pixels of one-page
    TIFF files are read by tifffile (:func:`tiff_frame`), by fabio where
    tifffile cannot give them as fabio would.

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
            raise InputFileError(f"{path}: {missing_file_reason(path)}")
        if path.lower().endswith(".edf") and not edf_complete(path, os.path.getsize(path)):
            raise InputFileError(f"{path}: truncated EDF file (fewer data bytes than its header declares)")
        if path.lower().endswith(".cbf") and not cbf_complete(path, os.path.getsize(path)):
            raise InputFileError(f"{path}: truncated CBF file (fewer data bytes than its header declares)")
        try:
            return fabio.open(path)
        except Exception as exc:  # fabio raises many types for corrupt files
            detail = " ".join(str(exc).split())
            raise InputFileError(f"{path}: not a readable detector image (fabio could not decode it: "
                                 f"{type(exc).__name__}{': ' + detail if detail else ''})") from None

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

    def _locate(self, index: int) -> tuple[int, int]:
        """The file holding frame ``index`` (its place in ``paths``) and the frame's place in that file."""
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return k, index - int(self._offsets[k])

    def _tiff_read(self, k: int, out: np.ndarray | None = None):
        """The frame of file ``k`` by tifffile when it is a one-page TIFF, else None: another format, a multi-page
        file (its pages come from the one fabio image kept open: tifffile would walk the pages to each), fabio's
        decoded copy at hand, or a page tifffile cannot give as fabio would."""
        path, last = self.paths[k], self._last
        if not path.lower().endswith(TIFF_SUFFIXES) or self.counts[k] != 1 or (last is not None and last[0] == path):
            return None
        if not os.path.exists(path):
            raise InputFileError(f"{path}: {missing_file_reason(path)}")
        return tiff_frame(path, 0, self.shape, self.dtype, out=out)

    def _read_into(self, index: int, out: np.ndarray) -> bool:
        return self._tiff_read(self._locate(index)[0], out=out) is not None

    def _read(self, index: int) -> np.ndarray:
        k, sub = self._locate(index)
        path = self.paths[k]
        frame = self._tiff_read(k)
        if frame is not None:
            return frame
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
        k, sub = self._locate(index)
        return f"{self.paths[k]}" + (f" frame {sub}" if self.counts[k] > 1 else "")
