"""Series statistics: the hot-pixel map and the noise of thresholded frames, gathered frame by frame.

:class:`SeriesStatistics` takes corrected frames one at a time and keeps only
what the statistics need (a count per pixel of the frames in which it was an
outlier, and the values of isolated stored pixels), so a run measures them over
a sample of its series and a live run over the frames seen so far, in bounded
memory.  :meth:`SeriesStatistics.context` hands them to the per-frame function
through its :class:`~braggflow.pipeline.Context`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

__all__ = ["SeriesStatistics", "MIN_HOT_PIXEL_FRAMES", "MAX_NOISE_VALUES"]

#: a hot-pixel map needs at least this many frames (one frame cannot tell a hot pixel from a sharp spot)
MIN_HOT_PIXEL_FRAMES = 5
#: isolated stored pixels kept for the noise fit of thresholded frames (a spread subsample beyond)
MAX_NOISE_VALUES = 200_000


class SeriesStatistics:
    """Accumulate the series statistics over corrected frames.

    Parameters
    ----------
    config : braggflow.pipeline.config.Config
        ``correct.hot_pixels``, ``hot_pixel_sigma``, ``hot_pixel_fraction``,
        ``gain``; ``find.sparse`` and ``find.noise``.
    context : braggflow.pipeline.Context
        Static inputs from :func:`braggflow.pipeline.prepare`; its mask holds no
        hot-pixel map.

    Notes
    -----
    A pixel is counted in a frame when :func:`braggflow.correct.outliers.outlier_pixels`
    finds it; on a frame thresholded upstream the noise floor of that test is the
    noise fitted to that frame's isolated stored pixels (``find.noise`` when set).
    """

    def __init__(self, config, context):
        self.config = config
        self.base = context
        self.n_frames = 0
        self.counts: np.ndarray | None = None
        self.sparse: bool | None = None
        self._values: list[np.ndarray] = []
        self._n_values = 0

    def add(self, corrected: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Take one corrected frame into the statistics.

        Parameters
        ----------
        corrected : (H, W) ndarray
            A frame as :func:`braggflow.correct.correct_frame` returns it with ``correct.binning`` 1, counts: hot
            pixels are pixels of the detector, found on its own grid. With ``correct.binning`` 2 the decision
            whether the series is thresholded, and its noise, are taken on the frame binned as the finder
            sees it.
        mask : (H, W) ndarray of bool, optional
            Its mask as ``correct_frame`` returns it (default: the base context's static mask).

        Raises
        ------
        ValueError
            If ``mask`` and ``corrected`` differ in shape.
        """
        from braggflow.correct import bin2x2
        from braggflow.correct.outliers import outlier_pixels
        from braggflow.find.background import is_sparse
        from braggflow.find.noise import fitted_threshold_noise, isolated_pixel_values

        c, fc = self.config.correct, self.config.find
        mask = self.base.mask if mask is None else mask
        if mask is not None and mask.shape != corrected.shape:
            raise ValueError(f"the mask has shape {mask.shape}, the corrected frame {corrected.shape}")
        seen, seen_mask = corrected, mask  # the frame as the finder sees it
        if c.binning == 2:
            seen, seen_mask = bin2x2(corrected, np.zeros(corrected.shape, bool) if mask is None else mask)
        if self.sparse is None:
            self.sparse = fc.sparse == "yes" or (fc.sparse == "auto" and is_sparse(seen, seen_mask, gain=c.gain))
        floor = None
        if self.sparse:
            values = isolated_pixel_values(seen, seen_mask)
            # the outlier test's noise floor is that of the detector's pixels: find.noise describes the frames
            # the finder sees, binned ones too, so on binned frames the floor is fitted to the unbinned pixels
            pixel_values = values if seen is corrected else isolated_pixel_values(corrected, mask)
            if fc.noise is not None and seen is corrected:
                floor = fc.noise
            elif (fitted := fitted_threshold_noise(pixel_values)) is not None:
                floor = fitted.sigma
            self._keep_values(values)
        if c.hot_pixels:
            if self.counts is None:
                self.counts = np.zeros(corrected.size, dtype=np.int32)
            self.counts[outlier_pixels(corrected, mask, sigma=c.hot_pixel_sigma, gain=c.gain, noise=floor)] += 1
        self.n_frames += 1

    def add_frame(self, frame: np.ndarray, name: str | None = None) -> bool:
        """Correct a raw frame with the base context and take it in (:meth:`add`).

        Parameters
        ----------
        frame : (H, W) ndarray
            Raw frame, ADU.
        name : str, optional
            How to name the frame in error messages.

        Returns
        -------
        taken : bool
            False when the frame cannot be corrected: it is left out, and its
            error comes when the frame itself is processed.
        """
        from braggflow.correct import correct_frame
        from braggflow.errors import BraggflowError

        unbinned = self.config.correct.model_copy(update={"binning": 1})  # hot pixels: on the detector's grid
        try:
            corrected, bad = correct_frame(frame, mask=self.base.mask, dark=self.base.dark, flat=self.base.flat,
                                           config=unbinned, name=name or "frame")
        except BraggflowError:
            return False
        self.add(corrected, bad)
        return True

    def _keep_values(self, values: np.ndarray) -> None:
        """Pool isolated-pixel values; beyond :data:`MAX_NOISE_VALUES` keep every other one."""
        self._values.append(values)
        self._n_values += values.size
        if self._n_values > 2 * MAX_NOISE_VALUES:
            pooled = np.concatenate(self._values)[::2]
            self._values, self._n_values = [pooled], pooled.size

    def hot_pixels(self) -> np.ndarray | None:
        """The hot-pixel map so far ((H, W) bool), or None below :data:`MIN_HOT_PIXEL_FRAMES` frames."""
        c = self.config.correct
        if self.counts is None or self.n_frames < MIN_HOT_PIXEL_FRAMES:
            return None
        need = max(1, int(np.ceil(c.hot_pixel_fraction * self.n_frames)))
        return (self.counts >= need).reshape(self.base.shape if self.base.shape else (-1,))

    def threshold_noise(self):
        """The noise model of thresholded frames fitted to the pooled isolated pixels, or None."""
        from braggflow.find.noise import fitted_threshold_noise

        if not self.sparse or self.config.find.noise is not None or not self._values:
            return None
        return fitted_threshold_noise(np.concatenate(self._values))

    def context(self):
        """The base context with the hot-pixel map joined to its mask and the noise model set."""
        hot = self.hot_pixels()
        mask = self.base.mask
        if hot is not None:
            mask = hot if mask is None else (mask | hot)
        return replace(self.base, mask=mask, hot_pixels=hot, threshold_noise=self.threshold_noise())
