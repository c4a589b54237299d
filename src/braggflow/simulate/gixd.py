"""Simulated grazing-incidence (GIWAXS) frames in the polar (q, chi) representation, with labelled features.

A frame is built directly on the (chi, q) grid that
:func:`braggflow.geometry.remap.remap` (``to="q"``) gives for a detector: rows
are pyFAI's azimuthal angle chi over (-180, 180) deg (-90 deg points from the
beam towards row 0 of the detector, the surface normal of the default sample
orientation), columns are q in 1/Å.  Which (q, chi) bins the detector sees, and
at which exit angle, comes from a :class:`~braggflow.geometry.Geometry` of a
random detector (Pilatus-like with module gaps, or a gapless flat panel).

Each frame holds a random mix of

- powder rings (uniform in chi), textured rings and ring segments (arcs:
  Gaussian in chi around random directions, or uniform over part of the ring),
- Bragg spots of a fibre-textured film: a random lattice (cubic, tetragonal,
  hexagonal, orthorhombic; a = 3-15 Å) with a random contact plane; reflection
  ``hkl`` sits at ``chi = chi_normal +- psi`` with ``psi`` the angle between its
  reciprocal-lattice vector and the surface normal; a small mosaicity gives
  spots, a large one arcs,
- artefacts that carry no label: a smooth background decaying with q, an
  amorphous halo, the sample horizon (shadow below it), the Yoneda band, the
  specular rod, the beam stop and its arm, detector gaps,
- Poisson noise at a random flux (counts per pixel times the number of
  detector pixels in each bin).

Every feature whose integrated signal-to-noise ratio reaches ``min_snr`` is
labelled with its box (q range, chi range: the centre +- 2 sigma, a ring's
chi range is the detector's coverage at its q) and class ``ring``, ``arc`` or
``spot``; weaker ones are kept in the truth table with ``visible = False``
(neither to be found nor a false detection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.geometry.core import Geometry

__all__ = ["CLASSES", "PolarGrid", "GixdFrame", "DetectorSetup", "random_geometry", "polar_grid", "coverage",
           "detector_setup", "random_setups", "random_reflections", "simulate_gixd_frame", "simulate_gixd_set",
           "detector_image"]

CLASSES = ("ring", "arc", "spot")
"""Feature classes, in the order of the detector's class channels."""

CHI_NORMAL = -90.0
"""chi of the sample surface normal on the polar image (pyFAI convention, sample orientation 4), deg."""

TRUTH_COLUMNS = ("q", "chi", "q_lo", "q_hi", "chi_lo", "chi_hi", "kind", "amplitude", "snr", "visible")


@dataclass
class PolarGrid:
    """Bin centres of a polar (chi, q) image.

    Attributes
    ----------
    q : (n_q,) ndarray
        Column centres, 1/Å, increasing and evenly spaced.
    chi : (n_chi,) ndarray
        Row centres, deg, evenly spaced over (-180, 180).
    """

    q: np.ndarray
    chi: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(n_chi, n_q)."""
        return len(self.chi), len(self.q)

    @property
    def dq(self) -> float:
        """Column step, 1/Å."""
        return float(self.q[1] - self.q[0])

    @property
    def dchi(self) -> float:
        """Row step, deg."""
        return float(self.chi[1] - self.chi[0])


@dataclass
class GixdFrame:
    """A simulated polar frame with its truth.

    Attributes
    ----------
    image : (n_chi, n_q) ndarray of float
        Mean counts per pixel in each bin; NaN where the detector sees nothing.
    grid : PolarGrid
    truth : pandas.DataFrame
        One row per feature: ``q``, ``chi`` (centre), ``q_lo``, ``q_hi``,
        ``chi_lo``, ``chi_hi`` (box, 1/Å and deg), ``kind`` (ring, arc, spot),
        ``amplitude`` (peak counts per pixel), ``snr`` (integrated), ``visible``.
    geometry : Geometry
        The detector the coverage comes from.
    """

    image: np.ndarray
    grid: PolarGrid
    truth: pd.DataFrame
    geometry: Geometry


_DETECTORS = (
    # (rows, cols, pixel mm, module rows, module cols, gap rows, gap cols): Pilatus 1M, Eiger-like 4M, flat panel
    (1043, 981, 0.172, 195, 487, 17, 7),
    (2167, 2070, 0.075, 514, 1030, 37, 10),
    (2048, 2048, 0.2, 0, 0, 0, 0),
)


def random_geometry(rng: np.random.Generator) -> tuple[Geometry, tuple[int, int], np.ndarray | None]:
    """A random grazing-incidence detector setup.

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    geometry : Geometry
        Distance 150-900 mm, wavelength 0.6-1.6 Å, incidence 0.1-0.5 deg, the
        beam centre near the bottom edge, a corner or the middle of the detector.
    shape : (int, int)
        Detector rows and columns.
    gaps : ndarray of bool or None
        Module-gap mask of the detector (True = gap), None without gaps.
    """
    rows, cols, pixel, mr, mc, gr, gc = _DETECTORS[rng.integers(len(_DETECTORS))]
    place = rng.integers(3)
    bc_row = rows * (rng.uniform(0.75, 0.98) if place < 2 else rng.uniform(0.4, 0.6))
    bc_col = cols * (rng.uniform(0.1, 0.35) if place == 0 else rng.uniform(0.35, 0.65))
    wavelength = rng.uniform(0.6, 1.6)
    # distance: the detector's far corner between q = 2 and q = 6 1/Å
    q_far = rng.uniform(2.0, 6.0)
    far_mm = pixel * np.hypot(max(bc_row, rows - bc_row), max(bc_col, cols - bc_col))
    tth = 2 * np.arcsin(min(0.95, q_far * wavelength / (4 * np.pi)))
    distance = float(np.clip(far_mm / np.tan(tth), 100.0, 1500.0))
    geometry = Geometry.from_config(dict(distance_mm=distance, beam_center_row=bc_row, beam_center_col=bc_col,
                                         pixel_size_mm=pixel, wavelength_A=wavelength,
                                         incidence_angle_deg=rng.uniform(0.1, 0.5)))
    gaps = None
    if mr:
        r, c = np.arange(rows), np.arange(cols)
        gaps = ((r % (mr + gr)) >= mr)[:, None] | ((c % (mc + gc)) >= mc)[None, :]
    return geometry, (rows, cols), gaps


def polar_grid(geometry: Geometry, shape: tuple[int, int], n_q: int = 256, n_chi: int = 256) -> PolarGrid:
    """The (chi, q) grid of a detector as :func:`~braggflow.geometry.remap.remap` lays it out.

    Parameters
    ----------
    geometry : Geometry
    shape : (int, int)
        Detector rows and columns.
    n_q, n_chi : int
        Bins along q and chi.

    Returns
    -------
    grid : PolarGrid
        q from the smallest to the largest q of the detector's pixel centres;
        chi over (-180, 180) deg.

    Raises
    ------
    ConfigError
        If a bin count is below 8.
    """
    if n_q < 8 or n_chi < 8:
        raise ConfigError(f"polar grid needs at least 8 bins along q and chi, got n_q={n_q}, n_chi={n_chi}")
    rows, cols = shape
    r = np.linspace(0, rows - 1, 64)
    c = np.linspace(0, cols - 1, 64)
    edge_r = np.concatenate([r, r, np.zeros(64), np.full(64, rows - 1.0)])
    edge_c = np.concatenate([np.zeros(64), np.full(64, cols - 1.0), c, c])
    tth, _ = geometry.pixel_to_angles(edge_r, edge_c)
    q_all = geometry.two_theta_to_q(tth)
    br, bc = geometry.beam_center
    q_min = 0.0 if (0 <= br < rows and 0 <= bc < cols) else float(np.min(q_all))
    q_max = float(np.max(q_all))
    step = (q_max - q_min) / n_q
    q = q_min + step * (np.arange(n_q) + 0.5)
    dchi = 360.0 / n_chi
    chi = -180.0 + dchi * (np.arange(n_chi) + 0.5)
    return PolarGrid(q=q, chi=chi)


def coverage(geometry: Geometry, shape: tuple[int, int], grid: PolarGrid,
             gaps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which (chi, q) bins a detector sees, their exit angle and pixel count.

    Parameters
    ----------
    geometry : Geometry
        With an incidence angle.
    shape : (int, int)
        Detector rows and columns.
    grid : PolarGrid
    gaps : (rows, cols) ndarray of bool, optional
        Module gaps (True = no pixel).

    Returns
    -------
    seen : (n_chi, n_q) ndarray of bool
        The bin centre falls on a detector pixel (outside the gaps).
    exit_angle : (n_chi, n_q) ndarray, deg
        Vertical exit angle at the bin centre (negative below the sample horizon).
    pixels : (n_chi, n_q) ndarray of float
        Approximate number of detector pixels per bin (the bin's solid angle over a pixel's).

    Raises
    ------
    ConfigError
        If the geometry has no incidence angle.
    """
    if not geometry.has_incidence:
        raise ConfigError("simulated GIWAXS frames need a geometry with an incidence angle")
    qq, cc = np.meshgrid(grid.q, grid.chi)
    row, col = geometry.angles_to_pixel(geometry.q_to_two_theta(qq), cc)
    rows, cols = shape
    inside = np.isfinite(row) & (row > -0.5) & (row < rows - 0.5) & (col > -0.5) & (col < cols - 0.5)
    ri = np.clip(np.nan_to_num(np.round(row), nan=0).astype(int), 0, rows - 1)
    ci = np.clip(np.nan_to_num(np.round(col), nan=0).astype(int), 0, cols - 1)
    seen = inside & (~gaps[ri, ci] if gaps is not None else True)
    exit_angle = geometry.exit_angle(np.where(inside, row, 0.0), np.where(inside, col, 0.0))
    # pixels per bin: ring area on the detector (flat, small angles) over the pixel area
    px = geometry.pixel_size_mm[0]
    tth = np.radians(geometry.q_to_two_theta(qq))
    dtth = np.gradient(np.radians(geometry.q_to_two_theta(grid.q)))[None, :]
    radius = geometry.distance_mm * np.tan(tth)
    dr = geometry.distance_mm * dtth / np.cos(tth) ** 2
    pixels = np.maximum(radius * np.radians(grid.dchi) * dr / px ** 2, 0.05)
    return seen, exit_angle, pixels


def _reciprocal_metric(system: str, rng: np.random.Generator) -> np.ndarray:
    """Reciprocal metric tensor G* (1/Å^2) of a random cell of the given crystal system."""
    a = rng.uniform(3.0, 15.0)
    if system == "cubic":
        b, c, gamma = a, a, 90.0
    elif system == "tetragonal":
        b, c, gamma = a, a * rng.uniform(0.6, 1.6), 90.0
    elif system == "hexagonal":
        b, c, gamma = a, a * rng.uniform(0.8, 2.0), 120.0
    else:
        b, c, gamma = a * rng.uniform(0.6, 1.6), a * rng.uniform(0.6, 1.6), 90.0
    g = np.radians(gamma)
    metric = np.array([[a * a, a * b * np.cos(g), 0.0], [a * b * np.cos(g), b * b, 0.0], [0.0, 0.0, c * c]])
    return np.linalg.inv(metric)


def random_reflections(rng: np.random.Generator, q_max: float, *, max_lines: int = 12) -> pd.DataFrame:
    """Reflections of a random lattice: ``h, k, l``, ``q`` (1/Å), ``intensity`` (relative).

    Parameters
    ----------
    rng : numpy.random.Generator
    q_max : float
        Largest q kept, 1/Å.
    max_lines : int
        At most this many distinct lines (the lowest q first, a random share
        dropped as if extinct).

    Returns
    -------
    reflections : pandas.DataFrame
        One row per ``hkl`` (one of each +- pair), with the reciprocal-lattice
        vector's Cartesian components ``gx, gy, gz`` (1/Å, crystal frame) and the
        line index ``line``.
    """
    system = ("cubic", "tetragonal", "hexagonal", "orthorhombic")[rng.integers(4)]
    gstar = _reciprocal_metric(system, rng)
    basis = np.linalg.cholesky(gstar).T  # rows: a*, b*, c* in a Cartesian frame (up to a rotation)
    n = 6
    hkl = np.stack([x.ravel() for x in np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij")], 1)
    h, k = hkl[:, 0], hkl[:, 1]
    keep = (h > 0) | ((h == 0) & (k > 0)) | ((h == 0) & (k == 0) & (hkl[:, 2] > 0))
    hkl = hkl[keep]
    g = hkl @ basis * 2 * np.pi
    q = np.linalg.norm(g, axis=1)
    sel = (q < q_max) & (q > 0.3)
    hkl, g, q = hkl[sel], g[sel], q[sel]
    lines, line = np.unique(np.round(q, 4), return_inverse=True)
    chosen = np.flatnonzero(rng.random(len(lines)) > 0.3)[:max_lines]
    line_int = np.exp(rng.uniform(np.log(0.1), 0.0, len(lines)))
    sel = np.isin(line, chosen)
    return pd.DataFrame({"h": hkl[sel, 0], "k": hkl[sel, 1], "l": hkl[sel, 2],
                         "gx": g[sel, 0], "gy": g[sel, 1], "gz": g[sel, 2],
                         "q": q[sel], "line": line[sel], "intensity": line_int[line[sel]]})


def _gauss(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _wrap(d: np.ndarray) -> np.ndarray:
    """Angle differences wrapped into (-180, 180] deg."""
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


class _Canvas:
    """Signal image and the features drawn on it."""

    def __init__(self, grid: PolarGrid, seen: np.ndarray):
        self.grid = grid
        self.seen = seen
        self.signal = np.zeros(grid.shape)
        self.features: list[dict] = []
        self._index: dict[tuple, int] = {}

    def add(self, kind: str, amp: float, q0: float, sq: float, chi_profile: np.ndarray, chi0: float,
            chi_lo: float, chi_hi: float) -> None:
        qprof = _gauss(self.grid.q, q0, sq)
        self.signal += amp * chi_profile[:, None] * qprof[None, :]
        key = (kind, round(q0, 6), round(chi0, 4), round(sq, 6))
        same = self._index.get(key)
        if same is not None:  # a symmetry-equivalent reflection on the same spot: one feature, intensities added
            self.features[same]["amplitude"] += amp
            return
        self._index[key] = len(self.features)
        self.features.append(dict(kind=kind, amplitude=amp, q=q0, sq=sq, chi=chi0, chi_lo=chi_lo, chi_hi=chi_hi,
                                  profile=chi_profile))


def _chi_extent_seen(seen: np.ndarray, grid: PolarGrid, q0: float) -> tuple[float, float] | None:
    """chi range of the seen bins in the column of q0 (None: no bin seen)."""
    j = int(np.clip(np.searchsorted(grid.q, q0), 0, len(grid.q) - 1))
    rows = np.flatnonzero(seen[:, j])
    if not len(rows):
        return None
    half = grid.dchi / 2
    return float(grid.chi[rows[0]] - half), float(grid.chi[rows[-1]] + half)


def _add_powder(canvas: _Canvas, rng: np.random.Generator, refl: pd.DataFrame, level: float) -> None:
    """Rings, textured rings (arcs around random directions) and ring segments of one phase."""
    grid = canvas.grid
    texture = rng.choice(["powder", "textured", "segments"], p=[0.45, 0.35, 0.2])
    sq0 = rng.uniform(0.6, 2.5) * grid.dq / 2.3548 * 2
    directions = rng.uniform(-180, 180, rng.integers(1, 4))
    width = rng.uniform(4.0, 30.0)
    for _, line in refl.groupby("line"):
        q0 = float(line["q"].iloc[0])
        amp = level * float(line["intensity"].iloc[0]) * rng.uniform(0.5, 1.5)
        sq = sq0 * (1 + 0.2 * q0 / grid.q[-1])
        if texture == "powder":
            ext = _chi_extent_seen(canvas.seen, grid, q0)
            if ext is None:
                continue
            canvas.add("ring", amp, q0, sq, np.ones(len(grid.chi)), 0.5 * (ext[0] + ext[1]), *ext)
        elif texture == "textured":
            iso = rng.uniform(0.0, 0.2)
            for d in directions:
                prof = _gauss(_wrap(grid.chi - d), 0.0, width)
                canvas.add("arc", amp, q0, sq, prof + iso / len(directions), d, d - 2 * width, d + 2 * width)
        else:
            lo = rng.uniform(-180, 150)
            span = rng.uniform(15, 120)
            edge = 1.0 / (1 + np.exp(-(grid.chi - lo) / 1.5)) / (1 + np.exp((grid.chi - lo - span) / 1.5))
            canvas.add("arc", amp, q0, sq, edge, lo + span / 2, lo, lo + span)


def _add_film(canvas: _Canvas, rng: np.random.Generator, refl: pd.DataFrame, level: float) -> None:
    """Bragg spots (small mosaicity) or arcs (large) of a fibre-textured film with a random contact plane."""
    grid = canvas.grid
    normal_hkl = refl[["gx", "gy", "gz"]].to_numpy()[rng.integers(min(len(refl), 6))]
    normal = normal_hkl / np.linalg.norm(normal_hkl)
    mosaic = rng.choice([rng.uniform(0.3, 1.5), rng.uniform(3.0, 12.0)], p=[0.7, 0.3])
    kind = "spot" if mosaic < 2.0 else "arc"
    sq = rng.uniform(0.6, 2.0) * grid.dq / 2.3548 * 2
    g = refl[["gx", "gy", "gz"]].to_numpy()
    psi = np.degrees(np.arccos(np.clip(np.abs(g @ normal) / refl["q"].to_numpy(), 0, 1)))
    for i, (_, r) in enumerate(refl.iterrows()):
        amp = level * float(r["intensity"]) * rng.uniform(0.5, 1.5)
        for sign in (-1, 1) if psi[i] > 0.5 else (1,):
            chi0 = CHI_NORMAL + sign * psi[i]
            s = mosaic + 0.6 * grid.dchi / 2.3548
            prof = _gauss(_wrap(grid.chi - chi0), 0.0, s)
            canvas.add(kind, amp, float(r["q"]), sq, prof, chi0, chi0 - 2 * s, chi0 + 2 * s)


def _background(rng: np.random.Generator, grid: PolarGrid, exit_angle: np.ndarray, seen: np.ndarray,
                incidence: float) -> tuple[np.ndarray, float]:
    """Smooth background with its artefacts (counts per pixel) and its median level above the horizon."""
    q = grid.q[None, :]
    level = 10 ** rng.uniform(0.0, 3.0)
    bg = level * (0.2 + np.exp(-q / rng.uniform(0.3, 2.0)) * rng.uniform(0.5, 5.0))
    bg = bg + level * rng.uniform(0, 1.5) * _gauss(q, rng.uniform(0.8, 2.2), rng.uniform(0.15, 0.5))  # halo
    bg = bg * (1 + 0.3 * rng.uniform(-1, 1) * np.sin(np.radians(grid.chi))[:, None])
    alpha_c = rng.uniform(0.08, 0.3)
    yoneda = rng.uniform(0.5, 4.0) if rng.random() < 0.6 else 0.0
    bg = bg * (1 + yoneda * _gauss(exit_angle, alpha_c, rng.uniform(0.03, 0.1)))  # Yoneda band
    bg = np.where(exit_angle < 0, bg * rng.uniform(0.02, 0.5), bg)  # shadow below the sample horizon
    rod_w = rng.uniform(0.02, 0.08) / np.maximum(grid.q, 0.02)[None, :] * 57.3  # specular rod: constant q_xy width
    rod = rng.uniform(0.2, 10.0) if rng.random() < 0.5 else 0.0
    bg = bg + level * rod * np.exp(-q / rng.uniform(0.3, 1.5)) * _gauss(
        _wrap(grid.chi[:, None] - CHI_NORMAL), 0.0, np.minimum(rod_w, 20))
    sky = bg[seen & (exit_angle > 0)]
    return bg, float(np.median(sky)) if sky.size else level


def _beam_stop(rng: np.random.Generator, grid: PolarGrid, seen: np.ndarray) -> np.ndarray:
    """Bins shadowed by the beam stop and its arm (True), from a random beam-stop size and arm direction."""
    q_bs = rng.uniform(0.0, 0.12) * grid.q[-1]
    shadow = np.broadcast_to(grid.q[None, :] < q_bs, seen.shape).copy()
    if rng.random() < 0.5:
        arm = rng.uniform(-180, 180)
        w = rng.uniform(0.01, 0.05) * grid.q[-1] / np.maximum(grid.q, 1e-3) * 57.3
        shadow |= np.abs(_wrap(grid.chi[:, None] - arm)) < np.minimum(w, 30)[None, :]
    return shadow


def _labels(canvas: _Canvas, noise: np.ndarray, seen: np.ndarray, min_snr: float) -> pd.DataFrame:
    """The truth table: boxes of the features, their integrated SNR and visibility."""
    grid = canvas.grid
    rows = []
    for f in canvas.features:
        j = int(np.clip(np.searchsorted(grid.q, f["q"]), 0, len(grid.q) - 1))
        col = seen[:, j]
        w = f["profile"] * col
        n_q = max(1.0, 2.5 * f["sq"] / grid.dq)  # bins across the feature in q
        # matched-filter SNR: amplitude over the bin noise, summed in quadrature over the feature's bins
        snr = f["amplitude"] * np.sqrt(np.sum((w / np.maximum(noise[:, j], 1e-9)) ** 2) * n_q * 0.5)
        chi_lo, chi_hi = max(f["chi_lo"], -180.0), min(f["chi_hi"], 180.0)
        if f["kind"] != "ring":
            core = np.flatnonzero(f["profile"] * col > 0.135)  # bins within ~2 sigma that the detector sees
            if not len(core):
                snr = 0.0
            else:
                lo, hi = grid.chi[core[0]] - grid.dchi / 2, grid.chi[core[-1]] + grid.dchi / 2
                if hi - lo < 300:  # not wrapped around
                    chi_lo, chi_hi = max(chi_lo, lo), min(chi_hi, hi)
        half = max(2.0 * f["sq"], 0.5 * grid.dq)
        in_q = grid.q[0] <= f["q"] <= grid.q[-1]
        rows.append(dict(q=f["q"], chi=0.5 * (chi_lo + chi_hi), q_lo=f["q"] - half, q_hi=f["q"] + half,
                         chi_lo=chi_lo, chi_hi=chi_hi, kind=f["kind"], amplitude=f["amplitude"], snr=float(snr),
                         visible=bool(in_q and snr >= min_snr and chi_hi > chi_lo)))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "kind" else float) for c in TRUTH_COLUMNS})
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))


@dataclass
class DetectorSetup:
    """A detector and its polar grid, with what the simulator needs of it (built once, used for many frames).

    Attributes
    ----------
    geometry : Geometry
    shape : (int, int)
        Detector rows and columns.
    grid : PolarGrid
    seen, exit_angle, pixels : (n_chi, n_q) ndarray
        From :func:`coverage`.
    """

    geometry: Geometry
    shape: tuple[int, int]
    grid: PolarGrid
    seen: np.ndarray
    exit_angle: np.ndarray
    pixels: np.ndarray


def detector_setup(geometry: Geometry, shape: tuple[int, int], gaps: np.ndarray | None = None, *,
                   n_q: int = 256, n_chi: int = 256) -> DetectorSetup:
    """The polar grid and coverage of a detector (see :func:`polar_grid`, :func:`coverage`).

    Parameters
    ----------
    geometry : Geometry
        With an incidence angle.
    shape : (int, int)
        Detector rows and columns.
    gaps : (rows, cols) ndarray of bool, optional
    n_q, n_chi : int
        Bins along q and chi.

    Returns
    -------
    setup : DetectorSetup

    Raises
    ------
    ConfigError
        Without an incidence angle, or with fewer than 8 bins.
    """
    grid = polar_grid(geometry, shape, n_q=n_q, n_chi=n_chi)
    seen, exit_angle, pixels = coverage(geometry, shape, grid, gaps)
    return DetectorSetup(geometry=geometry, shape=tuple(shape), grid=grid, seen=seen, exit_angle=exit_angle,
                         pixels=pixels)


def random_setups(n: int, seed: int, *, n_q: int = 256, n_chi: int = 256) -> list[DetectorSetup]:
    """``n`` random detector setups (:func:`random_geometry`), setup ``i`` from the seed sequence ``(seed, i)``.

    Parameters
    ----------
    n : int
        At least 1.
    seed : int
    n_q, n_chi : int

    Returns
    -------
    setups : list of DetectorSetup

    Raises
    ------
    ConfigError
        If ``n`` is below 1.
    """
    if n < 1:
        raise ConfigError(f"number of detector setups must be >= 1, got {n}")
    out = []
    for i in range(n):
        geometry, shape, gaps = random_geometry(np.random.default_rng([seed, i]))
        out.append(detector_setup(geometry, shape, gaps, n_q=n_q, n_chi=n_chi))
    return out


def simulate_gixd_frame(
    rng: np.random.Generator | int,
    setup: DetectorSetup | None = None,
    *,
    min_snr: float = 8.0,
) -> GixdFrame:
    """One simulated GIWAXS frame in polar (chi, q) bins, with its labelled features.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Random generator or seed (the frame is reproducible from the seed).
    setup : DetectorSetup, optional
        Detector and polar grid; default: a random one (:func:`random_geometry`, 256 x 256 bins).
    min_snr : float
        Integrated signal-to-noise ratio from which a feature is labelled visible.

    Returns
    -------
    frame : GixdFrame
    """
    rng = np.random.default_rng(rng)
    if setup is None:
        setup = detector_setup(*random_geometry(rng))
    grid, seen, exit_angle, pixels = setup.grid, setup.seen, setup.exit_angle, setup.pixels
    bg, level = _background(rng, grid, exit_angle, seen, float(setup.geometry.incidence_angle_deg))
    canvas = _Canvas(grid, seen)
    n_phases = rng.choice([0, 1, 1, 2, 2, 3])
    for _ in range(n_phases):
        refl = random_reflections(rng, grid.q[-1])
        if not len(refl):
            continue
        strength = level * 10 ** rng.uniform(-1.0, 1.0)
        (_add_film if rng.random() < 0.4 else _add_powder)(canvas, rng, refl, strength)
    shadow = _beam_stop(rng, grid, seen)
    mean = (bg + canvas.signal) * np.where(exit_angle < 0, rng.uniform(0.05, 0.6), 1.0)
    mean = np.where(shadow, mean * 0.02, mean)
    flux = 10 ** rng.uniform(-2.0, 1.0)  # photons per count unit
    expected = np.maximum(mean * flux * pixels, 0)
    counts = rng.poisson(expected) / (flux * pixels)
    noise = np.sqrt(np.maximum(bg, 1e-9) / (flux * pixels))
    ok = seen & ~shadow
    truth = _labels(canvas, noise, ok, min_snr)
    image = np.where(seen, counts, np.nan)
    return GixdFrame(image=image, grid=grid, truth=truth, geometry=setup.geometry)


def simulate_gixd_set(n: int, seed: int, *, n_setups: int = 16, n_q: int = 256, n_chi: int = 256,
                      min_snr: float = 8.0) -> list[GixdFrame]:
    """``n`` simulated frames on ``n_setups`` random detectors; frame ``i`` from the seed sequence ``(seed, i)``.

    Parameters
    ----------
    n : int
        Number of frames (>= 0).
    seed : int
    n_setups : int
        Random detector setups (:func:`random_setups` with ``seed``); frame ``i`` uses setup ``i % n_setups``.
    n_q, n_chi : int
        Bins along q and chi.
    min_snr : float
        See :func:`simulate_gixd_frame`.

    Returns
    -------
    frames : list of GixdFrame

    Raises
    ------
    ConfigError
        If ``n`` is negative or ``n_setups`` below 1.
    """
    if n < 0:
        raise ConfigError(f"number of simulated frames must be >= 0, got {n}")
    setups = random_setups(min(n_setups, max(n, 1)), seed, n_q=n_q, n_chi=n_chi)
    return [simulate_gixd_frame(np.random.default_rng([seed, i, 1]), setups[i % len(setups)], min_snr=min_snr)
            for i in range(n)]


def detector_image(frame: GixdFrame, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A simulated polar frame drawn on the detector: each pixel takes the value of the polar bin it falls in.

    The pixel's (q, chi) comes from the frame's geometry (pixel centres); its bin
    is the nearest bin centre of the frame's grid.  Within a bin all pixels hold
    the bin's mean counts per pixel, so the detector image is piecewise constant
    (its noise is the polar image's, not that of independent pixels).

    Parameters
    ----------
    frame : GixdFrame
        From :func:`simulate_gixd_frame`.
    shape : (int, int)
        Detector rows and columns (the shape of the setup the frame was simulated on).

    Returns
    -------
    image : (rows, cols) ndarray of float
        Counts per pixel; 0 on masked pixels.
    mask : (rows, cols) ndarray of bool
        True where the pixel's bin is not seen (outside the grid, detector gaps, beam stop seen as NaN).

    Raises
    ------
    ConfigError
        If ``shape`` is not two positive integers.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ConfigError(f"detector shape must be two positive integers (rows, cols), got {tuple(shape)}")
    rows, cols = np.indices(tuple(int(s) for s in shape), dtype=np.float64)
    tth, chi = frame.geometry.pixel_to_angles(rows, cols)
    q = frame.geometry.two_theta_to_q(tth)
    grid = frame.grid
    iq = np.rint((q - grid.q[0]) / grid.dq).astype(np.int64)
    ic = np.rint((np.asarray(chi) - grid.chi[0]) / grid.dchi).astype(np.int64) % len(grid.chi)
    inside = (iq >= 0) & (iq < len(grid.q))
    values = np.where(inside, frame.image[ic, np.clip(iq, 0, len(grid.q) - 1)], np.nan)
    mask = ~np.isfinite(values)
    return np.where(mask, 0.0, values), mask
