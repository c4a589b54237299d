"""Dense still frames on a Pilatus 6M, with ground truth.

Serial-crystallography-like stills: many (default 1,000) small round Gaussian
spots per frame at independent random places, on a weak, smoothly varying
background, with Poisson noise, on the module layout of a Pilatus 6M whose
gaps are masked and read 0.

Pilatus 6M geometry
-------------------
2527 rows x 2463 columns of 172 um pixels: 12 rows x 5 columns = 60 modules of
195 rows x 487 columns, with gaps of 17 px between module rows and 7 px
between module columns (12 x 195 + 11 x 17 = 2527, 5 x 487 + 4 x 7 = 2463;
526,101 gap pixels).  Sources: DECTRIS, PILATUS 6M detector specifications
(2463 x 2527 pixels, 172 x 172 um, 5 x 12 modules); pyFAI's detector
definition ``pyFAI.detectors.Pilatus6M`` (``MODULE_SIZE = (195, 487)``,
``MODULE_GAP = (17, 7)``, ``MAX_SHAPE = (2527, 2463)``), whose ``calc_mask()``
equals :func:`pilatus6m_gap_mask` (checked by a test), so ``braggflow run``
masks the same gaps on these frames by itself.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.profiles.render import peak_profile
from braggflow.simulate.frames import SimulatedSeries

__all__ = ["PILATUS6M_SHAPE", "PILATUS6M_MODULES", "PILATUS6M_MODULE_SIZE", "PILATUS6M_GAP", "pilatus6m_gap_mask",
           "simulate_dense_series", "simulate_dense_frame"]

PILATUS6M_MODULES = (12, 5)
"""Modules of a Pilatus 6M, (rows, columns)."""
PILATUS6M_MODULE_SIZE = (195, 487)
"""Pixels of one module, (rows, columns)."""
PILATUS6M_GAP = (17, 7)
"""Gap between modules, px: (between module rows, between module columns)."""
PILATUS6M_SHAPE = (
    PILATUS6M_MODULES[0] * PILATUS6M_MODULE_SIZE[0] + (PILATUS6M_MODULES[0] - 1) * PILATUS6M_GAP[0],
    PILATUS6M_MODULES[1] * PILATUS6M_MODULE_SIZE[1] + (PILATUS6M_MODULES[1] - 1) * PILATUS6M_GAP[1],
)
"""Frame shape of a Pilatus 6M, (2527, 2463) px."""


def pilatus6m_gap_mask() -> np.ndarray:
    """The module gaps of a Pilatus 6M.

    Returns
    -------
    mask : (2527, 2463) ndarray of bool
        True on the gaps between modules (526,101 px), False on the modules.
    """
    (nr, nc), (mr, mc), (gr, gc) = PILATUS6M_MODULES, PILATUS6M_MODULE_SIZE, PILATUS6M_GAP
    mask = np.ones(PILATUS6M_SHAPE, dtype=bool)
    for i in range(nr):
        for j in range(nc):
            r0, c0 = i * (mr + gr), j * (mc + gc)
            mask[r0 : r0 + mr, c0 : c0 + mc] = False
    return mask


def _background(shape: tuple[int, int], low: float, high: float) -> np.ndarray:
    """Smooth background from ``low`` to ``high`` counts/px: solvent scatter around an off-centre beam."""
    h, w = shape
    rr = (np.arange(h, dtype=np.float64)[:, None] - 0.52 * h) / h
    cc = (np.arange(w, dtype=np.float64)[None, :] - 0.47 * w) / w
    g = np.exp(-(rr**2 + cc**2) / (2 * 0.3**2)) * (1 + 0.15 * np.cos(3 * np.pi * cc))
    g = (g - g.min()) / (g.max() - g.min())
    return (low + (high - low) * g).astype(np.float32)


def _pair(name: str, value, *, positive: bool = True) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BraggflowError(f"{name} must be a pair of numbers (lo, hi), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi and (lo > 0 if positive else lo >= 0)):
        low = "0 <" if positive else "0 <="
        raise BraggflowError(f"{name} must satisfy {low} lo <= hi < inf, got ({lo:g}, {hi:g})")
    return lo, hi


def simulate_dense_series(
    n_frames: int = 1,
    n_spots: int = 1000,
    *,
    seed: int = 0,
    sigma: tuple[float, float] = (0.7, 1.5),
    flux: tuple[float, float] = (50.0, 5000.0),
    background: tuple[float, float] = (1.0, 5.0),
) -> SimulatedSeries:
    """Simulate dense stills on a Pilatus 6M: ``n_spots`` new Gaussian spots per frame.

    Every frame holds its own ``n_spots`` round Gaussian spots, centres uniform
    over the whole detector (gaps included), sigma uniform in ``sigma``,
    integrated intensity log-uniform in ``flux``, rendered pixel-integrated
    (:func:`braggflow.profiles.render.peak_profile`) on a smooth background
    from ``background[0]`` to ``background[1]`` counts/px (the same in every
    frame); Poisson noise, gain 1.  Gap pixels are masked and read 0.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 1).
    n_spots : int
        Spots per frame (>= 0).
    seed : int
        Seed of the random generator.
    sigma : (float, float)
        Range of the spots' sigma, px, ``0 < lo <= hi``.
    flux : (float, float)
        Range of the spots' integrated intensity, photons, ``0 < lo <= hi``.
    background : (float, float)
        Smallest and largest expected background, counts/px, ``0 <= lo <= hi``.

    Returns
    -------
    series : SimulatedSeries
        ``frames`` (n_frames, 2527, 2463) uint32; ``mask`` the module gaps
        (:func:`pilatus6m_gap_mask`); ``background`` (2527, 2463) float32;
        ``truth`` one row per spot: frame, row, col (px), intensity (photons),
        sigma_row = sigma_col (px), angle = 0, eta = 0, kind "gaussian",
        peak_id (unique in the series), masked (True when the pixel holding
        the centre is in a gap: such spots are partly or wholly hidden).

    Raises
    ------
    BraggflowError
        If ``n_frames`` < 1, ``n_spots`` < 0 or a range is not ``lo <= hi``
        with positive (background: non-negative) finite values.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, Integral) or n_frames < 1:
        raise BraggflowError(f"n_frames must be an int >= 1, got {n_frames!r}")
    if isinstance(n_spots, bool) or not isinstance(n_spots, Integral) or n_spots < 0:
        raise BraggflowError(f"n_spots must be an int >= 0, got {n_spots!r}")
    n_frames, n_spots = int(n_frames), int(n_spots)
    s_lo, s_hi = _pair("sigma", sigma)
    f_lo, f_hi = _pair("flux", flux)
    b_lo, b_hi = _pair("background", background, positive=False)
    rng = np.random.default_rng(seed)
    h, w = PILATUS6M_SHAPE
    mask = pilatus6m_gap_mask()
    bg = _background((h, w), b_lo, b_hi)
    frames = np.empty((n_frames, h, w), dtype=np.uint32)
    tables = []
    for f in range(n_frames):
        rows = rng.uniform(-0.5, h - 0.5, n_spots)
        cols = rng.uniform(-0.5, w - 0.5, n_spots)
        sig = rng.uniform(s_lo, s_hi, n_spots)
        intensity = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n_spots))
        lam = bg.astype(np.float64)
        for r, c, s, i in zip(rows, cols, sig, intensity):
            half = int(np.ceil(5 * s)) + 2
            r0, r1 = max(0, int(r) - half), min(h, int(r) + half + 1)
            c0, c1 = max(0, int(c) - half), min(w, int(c) + half + 1)
            lam[r0:r1, c0:c1] += i * peak_profile(np.arange(r0, r1), np.arange(c0, c1), row=r, col=c, sigma_row=s,
                                                  sigma_col=s)
        frame = rng.poisson(lam)
        frame[mask] = 0
        frames[f] = frame
        ri = np.clip(np.rint(rows).astype(int), 0, h - 1)
        ci = np.clip(np.rint(cols).astype(int), 0, w - 1)
        tables.append(pd.DataFrame({"frame": np.full(n_spots, f, dtype=np.int64), "row": rows, "col": cols,
                                    "intensity": intensity, "sigma_row": sig, "sigma_col": sig.copy(),
                                    "angle": np.zeros(n_spots), "eta": np.zeros(n_spots),
                                    "kind": ["gaussian"] * n_spots, "masked": mask[ri, ci]}))
    truth = pd.concat(tables, ignore_index=True)
    truth.insert(9, "peak_id", np.arange(len(truth), dtype=np.int64))
    truth["kind"] = truth["kind"].astype(str)
    return SimulatedSeries(frames=frames, mask=mask, truth=truth, background=bg)


def simulate_dense_frame(n_spots: int = 1000, *, seed: int = 0, sigma: tuple[float, float] = (0.7, 1.5),
                         flux: tuple[float, float] = (50.0, 5000.0),
                         background: tuple[float, float] = (1.0, 5.0)) -> SimulatedSeries:
    """One dense still on a Pilatus 6M: :func:`simulate_dense_series` with one frame.

    Parameters
    ----------
    n_spots : int
        Spots in the frame.
    seed : int
        Seed of the random generator.
    sigma, flux, background : (float, float)
        As in :func:`simulate_dense_series`: px, photons, counts/px.

    Returns
    -------
    series : SimulatedSeries
        One frame, (1, 2527, 2463) uint32, with its gap mask and truth.

    Raises
    ------
    BraggflowError
        As :func:`simulate_dense_series`.
    """
    return simulate_dense_series(1, n_spots, seed=seed, sigma=sigma, flux=flux, background=background)
