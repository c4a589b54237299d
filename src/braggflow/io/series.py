"""The frame series interface: :class:`FrameSeries`, and :class:`ArraySeries` for in-memory frames.

A :class:`FrameSeries` is a sequence of 2D frames read one at a time on
access.  The readers of each format (:mod:`braggflow.io.hdf5`,
:mod:`braggflow.io.images`, :mod:`braggflow.io.framecache`) subclass it;
:func:`braggflow.io.frames.open_frames` picks the one for a source.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from braggflow.errors import InputFileError

__all__ = ["FrameSeries", "ArraySeries"]


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

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index``, read into ``out`` when the format can (a loop over frames reuses one buffer).

        Parameters
        ----------
        index : int
            Frame index (negative indices count from the end).
        out : (H, W) ndarray, optional
            A C-contiguous buffer of the series' shape and dtype; it is
            overwritten.  Other buffers, or None, are not used.

        Returns
        -------
        frame : (H, W) ndarray
            ``out`` when it was filled, else a new array (as ``series[index]``).

        Raises
        ------
        IndexError, InputFileError
            As ``series[index]``.
        """
        usable = (out is not None and out.shape == tuple(self.shape) and out.dtype == self.dtype
                  and out.flags.c_contiguous and out.flags.writeable)
        if not usable or not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            return self[index]
        index = int(index) % len(self)
        return out if self._read_into(index, out) else self[index]

    def _read_into(self, index: int, out: np.ndarray) -> bool:
        """Read frame ``index`` into ``out`` (shape and dtype checked); False when the format cannot."""
        return False

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
