"""HEXRD frame-cache files (sparse, thresholded frames in an ``.npz``): :class:`FrameCacheSeries`."""

from __future__ import annotations

import os

import numpy as np

from braggflow.errors import InputFileError
from braggflow.io.series import FrameSeries

__all__ = ["FrameCacheSeries"]


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
