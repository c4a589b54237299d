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
                               pairs: tuple[float, float] | None = None, aspect: float = 1.0) -> ThresholdedFrame:
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
    aspect : float
        Gaussian spots only: the long axis' sigma is ``aspect x width``, in a
        random direction for each spot (1: round).
    pairs : (float, float), optional
        Give every spot a partner this many px away (uniform in the range, in
        a random direction; its own flux from ``flux``): close pairs to split.

    Returns
    -------
    frame : ThresholdedFrame

    Raises
    ------
    BraggflowError
        For a ``profile`` other than the two, non-positive ``width``, ``noise`` or
        ``threshold``, or ``aspect`` below 1.
    """
    if profile not in ("gauss", "moffat"):
        raise BraggflowError(f"simulate_thresholded_frame: profile must be 'gauss' or 'moffat', got {profile!r}")
    if not (width > 0 and noise > 0 and threshold > 0 and aspect >= 1):
        raise BraggflowError(f"simulate_thresholded_frame: width, noise and threshold must be positive, got "
                             f"{width}, {noise}, {threshold} (and aspect >= 1, got {aspect})")
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
                    angle = rng.uniform(0.0, np.pi) if aspect != 1 else 0.0
                    shape = _gaussian(rows - r, cols - c, width, aspect, angle)
                else:
                    shape = moffat_profile(rows, cols, row=r, col=c, sigma_row=width, sigma_col=width, beta=beta)
                expected[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += f * shape
                truth.append((r, c, f))
    counts = np.round(rng.normal(0.0, noise, expected.shape)) + rng.poisson(expected)
    frame = np.where(counts >= threshold, counts, 0).astype(np.float32)
    return ThresholdedFrame(frame, np.array(truth), float(threshold), float(noise))


def _gaussian(dr: np.ndarray, dc: np.ndarray, width: float, aspect: float, angle: float) -> np.ndarray:
    """A unit-integral elliptical Gaussian at the pixel centres ``dr`` (H,) x ``dc`` (W,) from its centre, px."""
    u = dr[:, None] * np.cos(angle) + dc[None, :] * np.sin(angle)
    v = -dr[:, None] * np.sin(angle) + dc[None, :] * np.cos(angle)
    long = aspect * width
    return np.exp(-0.5 * (u**2 / long**2 + v**2 / width**2)) / (2 * np.pi * long * width)
