"""ImageD11 sparse frames (thresholded pixel lists in HDF5): :class:`SparseSeries`.

ImageD11 (FABLE-3DXRD/ImageD11, used at ESRF ID11 for 3DXRD and scanning
3DXRD) segments the frames of a scan into lists of the pixels above a
threshold and stores them per scan group.  What this reader relies on, from
ImageD11 2.1.3:

- the scan group (``1.1`` in a file written by
  ``ImageD11/sinograms/assemble_label.py::harvest_masterfile``, the detector
  dataset's path such as ``entry_0000/measurement/data`` in a file written by
  ``ImageD11/sinograms/lima_segmenter.py::segment_lima``) has the attributes
  ``nframes``, ``shape0``, ``shape1`` (frames in the scan, frame height and
  width, px);
- its 1D datasets ``row``, ``col`` (uint16), ``intensity`` (the stored pixel
  values) hold every stored pixel of the scan, frame after frame, and ``nnz``
  (length ``nframes``) the number of pixels of each frame: frame ``i`` is the
  slice ``ipt[i]:ipt[i + 1]`` with ``ipt = [0, cumsum(nnz)]``, as
  ``ImageD11/sparseframe.py::nnz_to_pointer`` and ``SparseScan`` read it;
- the rotation angle of each frame, degrees, is the first of
  ``measurement/rot_center``, ``measurement/rot``,
  ``measurement/diffrz_center``, ``measurement/diffrz`` that the group holds
  (``sparseframe.omeganames``; ``SparseScan`` takes it as the frame's angle,
  and ``ImageD11/sinograms/dataset.py`` uses ``rot_center``, the centre of
  the frame's rotation, by default);
- an optional ``frame`` dataset (per pixel, the frame it belongs to; written
  by ImageD11's ``sandbox/segmenter.py``) must agree with ``nnz``.

The ``itype`` attribute is not used: ``segment_lima`` stores the type of
``row``/``col`` there, ``harvest_masterfile`` the detector's pixel type.
The pixel type of the frames is that of the ``intensity`` dataset.  Files
whose ``row``/``col``/``intensity``/``nnz`` are virtual datasets (the
default of ``harvest_masterfile``) are read through HDF5; a source file of
theirs that is missing is an error (HDF5 would read its pixels as zeros).

:meth:`SparseSeries.pixels` reads the pixels of a block of frames with one
slice per dataset and never makes them dense; ``series[i]`` gives the dense
frame (zeros where no pixel is stored) for the general pipeline.
"""

from __future__ import annotations

import os

import numpy as np
from natsort import natsorted

from braggflow.errors import InputFileError
from braggflow.io.hdf5 import _h5_open, _OpenFile
from braggflow.io.series import FrameSeries

__all__ = ["SparseSeries", "FrameIndexError", "sparse_scans", "omega_ranges_from_centres", "OMEGA_DATASETS"]

#: Datasets of the rotation angle of each frame (degrees), in the order ImageD11's ``SparseScan`` tries them.
OMEGA_DATASETS = ("measurement/rot_center", "measurement/rot", "measurement/diffrz_center", "measurement/diffrz")

_PIXEL_DATASETS = ("row", "col", "intensity")
_LAYOUT = "attributes nframes, shape0, shape1 and 1D datasets row, col, intensity, nnz"
_MAX_DEPTH = 3  # scan groups are looked for this deep (entry_0000/measurement/data)


class FrameIndexError(InputFileError, IndexError):
    """A frame index outside the scan (an :class:`InputFileError` that is also an ``IndexError``)."""


def _is_scan_group(group) -> bool:
    """Whether an HDF5 group looks like an ImageD11 sparse scan (by its attributes and members, not its name)."""
    attrs = group.attrs
    if "shape0" in attrs and "shape1" in attrs and ("nframes" in attrs or "nnz" in group):
        return True
    return "row" in group and "col" in group and "nnz" in group


def _scan_name(name: str) -> str:
    return name.strip("/") or "/"


def _find_scans(h5) -> list[str]:
    """Names of the ImageD11 sparse scan groups of an open file (down to ``_MAX_DEPTH``), in natural order.

    Only hard links are followed, so external and soft links are neither
    opened nor counted twice.
    """
    import h5py

    found = []
    level = [h5]
    for depth in range(_MAX_DEPTH + 1):
        below = []
        for group in level:
            if _is_scan_group(group):
                found.append(_scan_name(group.name))
                continue
            if depth == _MAX_DEPTH:
                continue
            for key in group:
                try:
                    if isinstance(group.get(key, getlink=True), h5py.HardLink) and \
                            group.get(key, getclass=True) is h5py.Group:
                        below.append(group[key])
                except (KeyError, OSError):
                    continue
        level = below
    return natsorted(found)


def sparse_scans(path: str, *, swmr: bool = False) -> list[str]:
    """Names of the ImageD11 sparse scan groups in an HDF5 file (empty when it has none).

    Parameters
    ----------
    path : str
        HDF5 file.
    swmr : bool, optional
        Open it in SWMR read mode (a file an SWMR writer holds open cannot be opened otherwise).

    Returns
    -------
    scans : list of str
        Group paths without the leading ``/`` (``"1.1"``,
        ``"entry_0000/measurement/data"``; ``"/"`` for the root group), in
        natural order.  A group counts as a scan when it has the attributes
        ``shape0`` and ``shape1`` and either ``nframes`` or a ``nnz`` member,
        or the members ``row``, ``col`` and ``nnz``.

    Raises
    ------
    InputFileError
        If the file cannot be read as HDF5.
    """
    h5 = _h5_open(str(path), swmr=swmr)
    try:
        return _find_scans(h5)
    finally:
        h5.close()


def omega_ranges_from_centres(centres) -> np.ndarray:
    """Start/stop rotation angles of frames from their centre angles.

    Each frame reaches half way to its neighbours: frame ``i`` spans
    ``c[i] - (c[i] - c[i-1]) / 2`` to ``c[i] + (c[i+1] - c[i]) / 2``; the first
    and last frames take the step of their one neighbour on both sides.  The
    steps are measured on the centres unwrapped with a period of 360 degrees,
    so a scan that crosses 360 -> 0 keeps its step.  A lone frame gets a range
    of zero width at its centre.

    Parameters
    ----------
    centres : (N,) array_like of float
        Rotation angle at the centre of each frame, degrees.

    Returns
    -------
    omega : (N, 2) ndarray of float
        Start and stop angle of each frame, degrees (start > stop for a scan
        that turns the other way).
    """
    c = np.asarray(centres, dtype=float).reshape(-1)
    if len(c) < 2:
        return np.stack([c, c], axis=1)
    step = np.diff(np.unwrap(c, period=360.0))
    before = np.concatenate([step[:1], step])
    after = np.concatenate([step, step[-1:]])
    return np.stack([c - before / 2, c + after / 2], axis=1)


class SparseSeries(_OpenFile, FrameSeries):
    """Frames of one scan of an ImageD11 sparse HDF5 file (lists of thresholded pixels).

    Opening reads the attributes, ``nnz`` and the omega dataset only, never
    the pixels.  ``series[i]`` gives frame ``i`` dense (zeros where no pixel
    is stored); :meth:`sparse_frame` and :meth:`pixels` give the stored
    pixels.  The file layout and its sources are described in
    :mod:`braggflow.io.sparse`.

    Parameters
    ----------
    path : str
        HDF5 file written by ImageD11's sparse segmentation.
    scan : str, optional
        Scan group, e.g. ``"1.1"`` (with or without a leading ``/``); default:
        the only scan of the file.

    Attributes
    ----------
    scan : str
        The scan group read.
    shape : tuple of int
        (``shape0``, ``shape1``), px.
    dtype : numpy.dtype
        Type of the ``intensity`` dataset.
    omega : (N, 2) ndarray of float or None
        Start/stop angle of each frame, degrees, built from the frame centres
        by :func:`omega_ranges_from_centres`; None when the scan records no
        angle.  A scalar angle dataset gives every frame that angle.
    omega_name : str or None
        The dataset ``omega`` comes from (see :data:`OMEGA_DATASETS`).
    nnz : (N,) ndarray of int64
        Stored pixels of each frame.

    Raises
    ------
    InputFileError
        Naming the file and scan: if the file has no sparse scan, several and
        ``scan`` is not given (the message lists them), ``scan`` is not one of
        them; a dataset or attribute is missing or not 1D; ``row``, ``col``
        and ``intensity`` differ in length; ``nnz`` has not ``nframes`` values,
        has negative ones or does not add up to the length of ``row``; the
        omega dataset has not ``nframes`` values; a source file of a virtual
        dataset is missing.
    """

    def __init__(self, path: str, scan: str | None = None):
        self.path = str(path)
        h5 = _h5_open(self.path)
        try:
            self.scan = self._choose_scan(h5, scan)
            self._check_layout(h5[self.scan])
        finally:
            h5.close()
        self.detector_mask = None
        self.sources = [self.path]
        self._h5 = None

    # -- opening -----------------------------------------------------------------------------------------------------

    def _choose_scan(self, h5, scan: str | None) -> str:
        import h5py

        scans = _find_scans(h5)
        listed = ", ".join(scans[:20]) + (f", ... ({len(scans)} in all)" if len(scans) > 20 else "")
        if scan is None:
            if not scans:
                raise InputFileError(f"{self.path}: no ImageD11 sparse scan found (a group with {_LAYOUT})")
            if len(scans) > 1:
                raise InputFileError(f"{self.path}: holds {len(scans)} ImageD11 sparse scans ({listed}); "
                                     f"choose one as FILE::SCAN, e.g. {self.path}::{scans[0]}")
            return scans[0]
        name = _scan_name(str(scan))
        if name not in h5 or not isinstance(h5[name], h5py.Group):
            raise InputFileError(f"{self.path}: no scan group {name!r} (ImageD11 sparse scans: {listed or 'none'})")
        return name

    def _where(self) -> str:
        return f"{self.path}::{self.scan}"

    def _check_layout(self, grp) -> None:
        """Read and check the scan's attributes, dataset shapes, ``nnz`` and omega (not the pixels)."""
        import h5py

        where = self._where()
        missing = [k for k in (*_PIXEL_DATASETS, "nnz") if not isinstance(grp.get(k), h5py.Dataset)]
        missing += [f"attribute {a}" for a in ("shape0", "shape1") if a not in grp.attrs]
        if missing:
            raise InputFileError(f"{where}: missing {', '.join(missing)} (an ImageD11 sparse scan has {_LAYOUT})")
        for k in (*_PIXEL_DATASETS, "nnz"):
            if grp[k].ndim != 1:
                raise InputFileError(f"{where}/{k}: expected a 1D dataset, got shape {grp[k].shape}")
        self._check_virtual_sources(grp)
        lengths = {k: grp[k].shape[0] for k in _PIXEL_DATASETS}
        if len(set(lengths.values())) > 1:
            raise InputFileError(f"{where}: row, col and intensity must have one length each pixel, got {lengths}")
        self.shape = (int(grp.attrs["shape0"]), int(grp.attrs["shape1"]))
        if min(self.shape) < 1:
            raise InputFileError(f"{where}: frame shape (shape0, shape1) = {self.shape}, expected positive sizes")
        self.dtype = grp["intensity"].dtype
        nnz = grp["nnz"][()]
        n = int(grp.attrs["nframes"]) if "nframes" in grp.attrs else len(nnz)
        if len(nnz) != n:
            raise InputFileError(f"{where}/nnz: {len(nnz)} values, expected one per frame (nframes = {n})")
        if nnz.dtype.kind not in "iu" or (len(nnz) and nnz.min() < 0):
            raise InputFileError(f"{where}/nnz: expected counts of pixels (non-negative integers), got {nnz.dtype}")
        self.nnz = nnz.astype(np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self.nnz)]).astype(np.int64)
        if self._offsets[-1] != lengths["row"]:
            raise InputFileError(f"{where}: nnz adds up to {self._offsets[-1]} pixels but row holds "
                                 f"{lengths['row']}; expected equal (file truncated or corrupt?)")
        self._has_frame = isinstance(grp.get("frame"), h5py.Dataset)
        if self._has_frame and grp["frame"].shape != (lengths["row"],):
            raise InputFileError(f"{where}/frame: shape {grp['frame'].shape}, expected ({lengths['row']},) "
                                 "(one frame number per pixel)")
        self.omega_name, self.omega = self._read_omega(grp, n)

    def _check_virtual_sources(self, grp) -> None:
        """Refuse a virtual dataset whose source file is missing (HDF5 would read its values as zeros)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        for k in (*_PIXEL_DATASETS, "nnz"):
            dset = grp[k]
            if not dset.is_virtual:
                continue
            for source in dset.virtual_sources():
                name = source.file_name
                if name == "." or os.path.exists(name) or os.path.exists(os.path.join(folder, name)):
                    continue
                raise InputFileError(f"{self._where()}/{k}: virtual dataset whose source file {name} is missing "
                                     f"(looked in {folder})")

    def _read_omega(self, grp, n: int) -> tuple[str | None, np.ndarray | None]:
        for name in OMEGA_DATASETS:
            if name not in grp:
                continue
            values = np.asarray(grp[name][()], dtype=float)
            if values.ndim == 0:
                values = np.full(n, float(values))
            if values.shape != (n,):
                raise InputFileError(f"{self._where()}/{name}: {values.size} angles, expected one per frame "
                                     f"(nframes = {n})")
            return name, omega_ranges_from_centres(values)
        return None, None

    # -- reading -----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nnz)

    def _group(self):
        if self._h5 is None:
            self._h5 = _h5_open(self.path)
        return self._h5[self.scan]

    def _block(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """(rows, cols, values) of frames ``start:stop``, one slice per dataset, checked against the frame shape."""
        lo, hi = int(self._offsets[start]), int(self._offsets[stop])
        grp = self._group()
        try:
            if hi == lo:
                rows, cols, values = (np.empty(0, grp[k].dtype) for k in _PIXEL_DATASETS)
            else:
                rows, cols, values = (grp[k][lo:hi] for k in _PIXEL_DATASETS)
            stored = grp["frame"][lo:hi] if self._has_frame and hi > lo else None
        except OSError as exc:
            raise InputFileError(f"{self._where()}: cannot read the pixels of frames {start}:{stop} ({exc})") from None
        if hi > lo:
            for values_, size, name in ((rows, self.shape[0], "row"), (cols, self.shape[1], "col")):
                if values_.min() < 0 or values_.max() >= size:
                    bad = int(np.flatnonzero((values_ < 0) | (values_ >= size))[0])
                    frame = int(np.searchsorted(self._offsets, lo + bad, side="right") - 1)
                    raise InputFileError(f"{self._where()}/{name}: value {int(values_[bad])} in frame {frame}, "
                                         f"expected 0 <= {name} < {size} (shape0, shape1 = {self.shape})")
        if stored is not None:
            self._check_frame_numbers(stored, start, stop, lo)
        return rows, cols, values

    def _check_frame_numbers(self, stored: np.ndarray, start: int, stop: int, lo: int) -> None:
        """The optional per-pixel ``frame`` dataset must name the frames ``nnz`` assigns the pixels to."""
        expected = np.repeat(np.arange(start, stop, dtype=np.int64), self.nnz[start:stop])
        if np.array_equal(stored, expected):
            return
        bad = int(np.flatnonzero(stored != expected)[0])
        if not 0 <= stored[bad] < len(self):
            raise InputFileError(f"{self._where()}/frame: frame index {int(stored[bad])} at pixel {lo + bad} is "
                                 f"beyond the scan, expected 0 <= frame < nframes = {len(self)}")
        raise InputFileError(f"{self._where()}/frame: pixel {lo + bad} is in frame {int(stored[bad])}, but nnz puts "
                             f"it in frame {int(expected[bad])}; expected the two to agree")

    def _frame_index(self, index) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}")
        i = int(index) + (n if index < 0 else 0)
        if not 0 <= i < n:
            raise FrameIndexError(f"{self._where()}: frame {int(index)} is beyond the scan, "
                                  f"expected -{n} <= frame < nframes = {n}")
        return i

    def _read(self, index: int) -> np.ndarray:
        rows, cols, values = self.sparse_frame(index)
        frame = np.zeros(self.shape, dtype=self.dtype)
        frame[rows, cols] = values
        return frame

    def sparse_frame(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored pixels of one frame.

        Parameters
        ----------
        index : int
            Frame in the scan (negative counts from the end).

        Returns
        -------
        rows, cols : (K,) ndarray
            Pixel positions, px, as stored (uint16 in ImageD11's files).
        values : (K,) ndarray of ``dtype``
            Stored pixel values.

        Raises
        ------
        FrameIndexError
            (an :class:`InputFileError` and an ``IndexError``) if ``index`` is beyond the scan.
        InputFileError
            If a row or column lies outside the frame, the ``frame`` dataset disagrees with ``nnz``, or the
            pixels cannot be read.
        """
        i = self._frame_index(index)
        return self._block(i, i + 1)

    def pixels(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, ...]:
        """The stored pixels of the frames ``start:stop``, read with one slice per dataset, never densified.

        Parameters
        ----------
        start, stop : int, optional
            First frame and one past the last (default: the whole scan); ``0 <= start <= stop <= len(self)``.

        Returns
        -------
        frame_index : (K,) ndarray of int64
            Frame of each pixel (numbered in the scan, from ``nnz``), non-decreasing.
        rows, cols : (K,) ndarray
            Pixel positions, px, as stored.
        values : (K,) ndarray of ``dtype``
            Stored pixel values.

        Raises
        ------
        FrameIndexError
            (an :class:`InputFileError` and an ``IndexError``) if the range is not inside the scan.
        InputFileError
            As :meth:`sparse_frame`.
        """
        n = len(self)
        stop = n if stop is None else stop
        if not 0 <= int(start) <= int(stop) <= n:
            raise FrameIndexError(f"{self._where()}: frames {start}:{stop} are beyond the scan, "
                                  f"expected 0 <= start <= stop <= nframes = {n}")
        start, stop = int(start), int(stop)
        rows, cols, values = self._block(start, stop)
        frame_index = np.repeat(np.arange(start, stop, dtype=np.int64), self.nnz[start:stop])
        return frame_index, rows, cols, values

    def describe_frame(self, index: int) -> str:
        return f"{self._where()} frame {index}"

