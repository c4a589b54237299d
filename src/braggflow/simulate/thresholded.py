"""Frames as a frame cache stores them: dark-subtracted counts, only the pixels at or above a threshold kept.

HEXRD's frame caches and ImageD11's sparse scans keep a pixel only where its
dark-subtracted value reaches a storage threshold; every other pixel reads 0.
:func:`simulate_thresholded_frame` draws such a frame with known spots, for
the tests and benchmarks of what happens below the threshold (the wings of
weak spots, the noise model of the stored pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggflow.errors import BraggflowError

__all__ = ["ThresholdedFrame", "simulate_thresholded_frame"]


@dataclass
class ThresholdedFrame:
    """A simulated thresholded frame and its truth.

    Attributes
    ----------
    frame : (H, W) ndarray of float32
        Whole counts (gain 1: one count a photon) at or above ``threshold``, 0 elsewhere.
    truth : (N, 3) ndarray of float64
        Each spot's row and col (px) and flux (photons = counts); a pair's
        two spots follow each other.
    threshold : float
        The storage threshold, counts.
    noise : float
        Standard deviation of the dark-subtracted background, counts.
    """

    frame: np.ndarray
    truth: np.ndarray
    threshold: float
    noise: float


def simulate_thresholded_frame(seed: int, *, side: int = 6, spacing: int = 64,
                               flux: tuple[float, float] = (150.0, 600.0), width: float = 1.2,
                               profile: str = "gauss", beta: float = 2.5,
                               threshold: float = 6.0, noise: float = 2.0,
                               pairs: tuple[float, float] | None = None) -> ThresholdedFrame:
    """A grid of round spots on dark-subtracted normal noise, stored only at or above ``threshold``.

    Parameters
    ----------
    seed : int
        Seed of the random generator.
    side : int
        Spots per row and column of the grid (``side**2`` spots), each placed
        within half a pixel of its grid point.
    spacing : int
        Distance of the grid points, px; the frame is ``side * spacing + 16`` px square.
    flux : (float, float)
        Range of the spots' flux, photons, drawn log-uniform.
    width : float
        The Gaussian's sigma, px (the Moffat's core sigma, as
        :func:`braggflow.profiles.render.moffat_profile`).
    profile : {"gauss", "moffat"}
        The spots' shape; "moffat" has wings falling as ``r^(-2 beta)``.
    beta : float
        The Moffat exponent.
    threshold : float
        The storage threshold, counts.
    noise : float
        Standard deviation of the background's counts before thresholding
        (rounded normal noise around 0: a dark-subtracted detector).
    pairs : (float, float), optional
        Give every spot a partner this many px away (uniform in the range, in
        a random direction; its own flux from ``flux``): close pairs to split.

    Returns
    -------
    frame : ThresholdedFrame

    Raises
    ------
    BraggflowError
        For a ``profile`` other than the two, or non-positive ``width``, ``noise`` or ``threshold``.
    """
    if profile not in ("gauss", "moffat"):
        raise BraggflowError(f"simulate_thresholded_frame: profile must be 'gauss' or 'moffat', got {profile!r}")
    if not (width > 0 and noise > 0 and threshold > 0):
        raise BraggflowError(f"simulate_thresholded_frame: width, noise and threshold must be positive, got "
                             f"{width}, {noise}, {threshold}")
    from braggflow.profiles.render import moffat_profile

    rng = np.random.default_rng(seed)
    size = side * spacing + 16
    reach = spacing // 2 - 2  # each spot is drawn in its own box: its light beyond lies below 1e-4 of it
    expected, truth = np.zeros((size, size)), []
    for i in range(side):
        for j in range(side):
            r0 = spacing * i + 40 + rng.uniform(-0.5, 0.5)
            c0 = spacing * j + 40 + rng.uniform(-0.5, 0.5)
            spots = [(r0, c0)]
            if pairs is not None:
                gap, angle = rng.uniform(*pairs), rng.uniform(0.0, np.pi)
                spots = [(r0 - 0.5 * gap * np.sin(angle), c0 - 0.5 * gap * np.cos(angle)),
                         (r0 + 0.5 * gap * np.sin(angle), c0 + 0.5 * gap * np.cos(angle))]
            for r, c in spots:
                f = float(np.exp(rng.uniform(*np.log(flux))))
                rows = np.arange(max(int(r) - reach, 0), min(int(r) + reach + 1, size))
                cols = np.arange(max(int(c) - reach, 0), min(int(c) + reach + 1, size))
                if profile == "gauss":
                    shape = np.exp(-((rows[:, None] - r) ** 2 + (cols[None, :] - c) ** 2) / (2 * width**2)) / (
                        2 * np.pi * width**2)
                else:
                    shape = moffat_profile(rows, cols, row=r, col=c, sigma_row=width, sigma_col=width, beta=beta)
                expected[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += f * shape
                truth.append((r, c, f))
    counts = np.round(rng.normal(0.0, noise, expected.shape)) + rng.poisson(expected)
    frame = np.where(counts >= threshold, counts, 0).astype(np.float32)
    return ThresholdedFrame(frame, np.array(truth), float(threshold), float(noise))
