"""Detector artefacts with ground truth, added to a simulated series.

Three kinds of signal that are not Bragg peaks, for testing their rejection:

zingers
    Cosmic rays and other single events: in every frame, events of 1-4
    4-connected pixels at 5-100 times the local noise (the square root of the
    expected background), at new random places in every frame.
hot pixels
    Fixed, unmasked pixels well above the background: some always saturated,
    some at a constant high level (10-50 times the noise, with Poisson noise),
    some flickering (lit in most but not all frames).
powder ring
    A ring a few px wide at a fixed radius around a centre, the same pixels in
    every frame (as from a pressure medium or a gasket), well above the
    background, with Poisson noise.

Each function takes a :class:`~braggflow.simulate.frames.SimulatedSeries` and
returns a new :class:`ArtefactSeries` (the input is not changed), so the calls
compose::

    series = add_artefacts(simulate_series(10, n_hot=0, n_dead=0), zingers=50, hot=20, ring=True, seed=1)
    series.zingers, series.hot_pixels, series.ring_map   # the artefacts' truth

The hot and dead pixels that :func:`~braggflow.simulate.frames.simulate_series`
draws itself (``n_hot``, ``n_dead``) are not part of this truth: pass
``n_hot=0, n_dead=0`` for a series whose only defects are the ones added here.
Masked pixels stay 0 and get no artefact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.simulate.frames import SimulatedSeries

__all__ = ["ArtefactSeries", "add_zingers", "add_hot_pixels", "add_ring", "add_artefacts", "HOT_KINDS"]

HOT_KINDS = ("saturated", "moderate", "flickering")
"""Kinds of hot pixel drawn by :func:`add_hot_pixels`."""

_ZINGER_COLUMNS = {"frame": np.int64, "event": np.int64, "row": np.int64, "col": np.int64, "excess": np.int64,
                   "strength": np.float64}
_HOT_COLUMNS = {"row": np.int64, "col": np.int64, "kind": str, "level": np.float64, "lit_frames": np.int64}


def _empty(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


@dataclass
class ArtefactSeries(SimulatedSeries):
    """A simulated series with detector artefacts and their ground truth.

    The attributes of :class:`~braggflow.simulate.frames.SimulatedSeries`
    (``frames`` now include the artefacts; ``truth`` is still the Bragg peaks
    only), and:

    Attributes
    ----------
    zingers : pandas.DataFrame
        One row per zinger pixel: ``frame``, ``event`` (id, unique in the
        series), ``row``, ``col`` (px), ``excess`` (counts added), ``strength``
        (excess / sqrt(expected background)).
    hot_pixels : pandas.DataFrame
        One row per hot pixel: ``row``, ``col`` (px), ``kind`` (one of
        :data:`HOT_KINDS`), ``level`` (counts read when lit: the saturation
        level, or the expected counts background + excess), ``lit_frames``
        (number of frames in which it is lit).
    hot_lit : (K, N) ndarray of bool
        Whether hot pixel k (row k of ``hot_pixels``) is lit in frame n.
    ring_map : (H, W) ndarray of bool
        Pixels lit by the powder ring (all False without one); masked pixels
        are never in it.
    ring : dict
        The ring's parameters: ``centre`` (row, col px), ``radius`` (px),
        ``width`` (px), ``intensity`` (mean expected counts added per ring
        pixel); empty without a ring.
    """

    zingers: pd.DataFrame = field(default_factory=lambda: _empty(_ZINGER_COLUMNS))
    hot_pixels: pd.DataFrame = field(default_factory=lambda: _empty(_HOT_COLUMNS))
    hot_lit: np.ndarray | None = None
    ring_map: np.ndarray | None = None
    ring: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.hot_lit is None:
            self.hot_lit = np.zeros((len(self.hot_pixels), len(self.frames)), dtype=bool)
        if self.ring_map is None:
            self.ring_map = np.zeros(self.mask.shape, dtype=bool)


def _copy(series: SimulatedSeries) -> ArtefactSeries:
    """An ArtefactSeries with a copy of the frames and the input's artefact truth, if any."""
    if not isinstance(series, SimulatedSeries):
        raise BraggflowError(f"series must be a SimulatedSeries, got {type(series).__name__}")
    values = {f.name: getattr(series, f.name) for f in fields(series)}
    values["frames"] = series.frames.copy()
    return ArtefactSeries(**values)


def _rng(seed) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise BraggflowError(f"seed must be an int or None, got {seed!r}") from None


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise BraggflowError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _range(name: str, value, *, low: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BraggflowError(f"{name} must be a pair of numbers (lo, hi), got {value!r}") from None
    if not (np.isfinite(hi) and low <= lo <= hi):
        raise BraggflowError(f"{name} must satisfy {low:g} <= lo <= hi < inf, got ({lo:g}, {hi:g})")
    return lo, hi


def _top(dtype: np.dtype) -> float:
    """Largest value a pixel of ``dtype`` holds (inf for floats)."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else float("inf")


def _noise(series: SimulatedSeries) -> np.ndarray:
    """Local noise, counts: sqrt of the expected background (at least 1)."""
    return np.sqrt(np.maximum(series.background.astype(np.float64), 1.0))


def _taken(series: ArtefactSeries) -> np.ndarray:
    """Pixels that get no new artefact: masked, hot or on the ring."""
    taken = series.mask.copy()
    taken |= series.ring_map
    if len(series.hot_pixels):
        taken[series.hot_pixels["row"].to_numpy(), series.hot_pixels["col"].to_numpy()] = True
    return taken


def add_zingers(series: SimulatedSeries, n: int = 50, *, strength: tuple[float, float] = (5.0, 100.0),
                max_size: int = 4, seed=0) -> ArtefactSeries:
    """Add zingers: ``n`` events per frame of 1 to ``max_size`` connected pixels.

    Every event is a 4-connected set of 1 to ``max_size`` pixels (size drawn
    uniformly) grown from a random seed pixel; events do not touch masked,
    hot or ring pixels, nor each other within a frame, and are drawn anew in
    every frame.  The event's strength ``a`` is drawn log-uniformly in
    ``strength``; its first pixel gets ``a`` times the local noise, the others
    ``a * U(0.5, 1)`` times it, but never less than ``strength[0]`` times.  The
    local noise is the square root of the expected background
    (``series.background``).  The excess is rounded to counts and added to the
    frame (clipped at the dtype's maximum).

    Parameters
    ----------
    series : SimulatedSeries
        Series to add to (not changed).
    n : int
        Events per frame.
    strength : (float, float)
        Range of the excess of a zinger pixel over the background, in units
        of the local noise (log-uniform), ``1 <= lo <= hi``.
    max_size : int
        Largest event, pixels (1 to 9).
    seed : int or None
        Seed of the random generator.

    Returns
    -------
    series : ArtefactSeries
        With the frames' zingers and ``zingers`` (the input's zinger rows, if
        any, are kept; event ids continue after them).

    Raises
    ------
    BraggflowError
        If ``n`` is negative, ``strength`` is not a range ``1 <= lo <= hi``,
        ``max_size`` is outside 1-9, or the frame has too few free pixels.
    """
    n = _count("n", n)
    lo, hi = _range("strength", strength, low=1.0)
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or not 1 <= max_size <= 9:
        raise BraggflowError(f"max_size must be an int from 1 to 9, got {max_size!r}")
    out = _copy(series)
    rng = _rng(seed)
    h, w = out.mask.shape
    taken0 = _taken(out)
    if n and (~taken0).sum() < 20 * n * max_size:
        raise BraggflowError(f"n: {n} zingers of up to {max_size} px do not fit in the {(~taken0).sum()} free pixels")
    noise = _noise(out)
    top = _top(out.frames.dtype)
    steps = np.array([(0, 1), (0, -1), (1, 0), (-1, 0)])
    event = int(out.zingers["event"].max()) + 1 if len(out.zingers) else 0
    rows = []
    for f in range(len(out.frames)):
        taken = taken0.copy()
        frame = out.frames[f]
        for _ in range(n):
            size = int(rng.integers(1, max_size + 1))
            for _attempt in range(100_000):
                pixels = [(int(rng.integers(0, h)), int(rng.integers(0, w)))]
                if taken[pixels[0]]:
                    continue
                for _tries in range(50):
                    if len(pixels) == size:
                        break
                    r, c = pixels[rng.integers(len(pixels))]
                    dr, dc = steps[rng.integers(4)]
                    p = (r + int(dr), c + int(dc))
                    if 0 <= p[0] < h and 0 <= p[1] < w and not taken[p] and p not in pixels:
                        pixels.append(p)
                if len(pixels) == size:
                    break
            else:
                raise BraggflowError(f"n: no room for {n} zingers of up to {max_size} px in frame {f}")
            a = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            factors = np.maximum(a * np.r_[1.0, rng.uniform(0.5, 1.0, size - 1)], lo)
            pr, pc = np.array(pixels).T
            # whole counts, still within [lo, hi] times the noise
            nz = noise[pr, pc]
            excess = np.clip(np.rint(factors * nz), np.ceil(lo * nz), np.floor(hi * nz))
            before = frame[pr, pc].astype(np.float64)
            frame[pr, pc] = np.minimum(before + excess, top).astype(frame.dtype)
            excess = (frame[pr, pc] - before).astype(np.int64)  # less where the dtype's maximum clips it
            # the event and the pixels around it are not free for the next events of this frame
            taken[max(pr.min() - 1, 0) : pr.max() + 2, max(pc.min() - 1, 0) : pc.max() + 2] = True
            for k in range(size):
                rows.append((f, event, pr[k], pc[k], excess[k], excess[k] / nz[k]))
            event += 1
    new = pd.DataFrame(rows, columns=list(_ZINGER_COLUMNS)).astype(_ZINGER_COLUMNS)
    out.zingers = pd.concat([out.zingers, new], ignore_index=True) if len(out.zingers) else new
    return out


def add_hot_pixels(series: SimulatedSeries, n: int = 20, *, saturation: float | None = None,
                   seed=0) -> ArtefactSeries:
    """Add ``n`` hot pixels: fixed, unmasked, well above the background.

    A quarter of them (rounded) are always saturated (they read
    ``saturation`` in every frame), a quarter flicker (lit in each frame with
    a probability of 0.6-0.9, and in more than half but not all of the
    frames when the series has 3 frames or more), the rest are moderately
    high in every frame.  A lit moderate or flickering pixel reads a Poisson
    draw of background + excess, the excess 10-50 times the local noise
    (sqrt of the expected background, log-uniform, fixed per pixel).  Hot
    pixels are distinct and are not masked, on the ring or on earlier hot
    pixels.

    Parameters
    ----------
    series : SimulatedSeries
        Series to add to (not changed).
    n : int
        Number of hot pixels.
    saturation : float, optional
        Counts of a saturated pixel; default: the frames' integer dtype's
        maximum (what ``braggflow run`` takes as saturated without
        ``correct.saturation``).
    seed : int or None
        Seed of the random generator.

    Returns
    -------
    series : ArtefactSeries
        With the hot pixels in the frames, ``hot_pixels`` and ``hot_lit``
        (the input's, if any, come first).

    Raises
    ------
    BraggflowError
        If ``n`` is negative or exceeds the free pixels, or ``saturation`` is
        not a positive number the frames' dtype holds.
    """
    n = _count("n", n)
    out = _copy(series)
    top = _top(out.frames.dtype)
    if saturation is None:
        if not np.isfinite(top):
            raise BraggflowError("saturation must be given for float frames")
        saturation = top
    if not (np.isfinite(saturation) and 0 < saturation <= top):
        raise BraggflowError(f"saturation must be > 0 and at most {top:g} ({out.frames.dtype}), got {saturation}")
    rng = _rng(seed)
    n_frames = len(out.frames)
    free = np.flatnonzero(~_taken(out))
    if n > len(free):
        raise BraggflowError(f"n: {n} hot pixels do not fit in the {len(free)} free pixels")
    flat = rng.choice(free, size=n, replace=False)
    rows, cols = np.unravel_index(flat, out.mask.shape)
    n_sat = int(round(n / 4))
    n_flicker = int(round(n / 4)) if n - n_sat >= 2 else 0
    kinds = np.array(["saturated"] * n_sat + ["flickering"] * n_flicker + ["moderate"] * (n - n_sat - n_flicker))
    kinds = kinds[rng.permutation(n)] if n else kinds
    noise = _noise(out)[rows, cols]
    bg = out.background.astype(np.float64)[rows, cols]
    excess = np.exp(rng.uniform(np.log(10.0), np.log(50.0), n)) * noise
    lit = np.ones((n, n_frames), dtype=bool)
    for k in np.flatnonzero(kinds == "flickering"):
        lit[k] = rng.random(n_frames) < rng.uniform(0.6, 0.9)
        if n_frames >= 3:
            while lit[k].all():
                lit[k, rng.integers(n_frames)] = False
            while lit[k].sum() <= n_frames // 2:
                lit[k, rng.choice(np.flatnonzero(~lit[k]))] = True
    level = np.where(kinds == "saturated", float(saturation), bg + excess)
    for f in range(n_frames):
        on = lit[:, f]
        values = np.where(kinds == "saturated", float(saturation), rng.poisson(bg + excess).astype(np.float64))
        out.frames[f, rows[on], cols[on]] = np.minimum(values[on], top).astype(out.frames.dtype)
    new = pd.DataFrame({"row": rows.astype(np.int64), "col": cols.astype(np.int64), "kind": kinds.astype(str),
                        "level": level, "lit_frames": lit.sum(axis=1).astype(np.int64)})
    if len(out.hot_pixels):
        out.hot_pixels = pd.concat([out.hot_pixels, new], ignore_index=True)
        out.hot_lit = np.concatenate([out.hot_lit, lit])
    else:
        out.hot_pixels, out.hot_lit = new, lit
    return out


def add_ring(series: SimulatedSeries, *, centre: tuple[float, float] | None = None, radius: float | None = None,
             width: float = 3.0, intensity: float | None = None, seed=0) -> ArtefactSeries:
    """Add a powder ring that lights the same pixels in every frame.

    The ring is the set of unmasked pixels whose centre lies within
    ``width / 2`` px of the circle of ``radius`` px around ``centre`` (so the
    pixel map is exact).  Its expected signal per pixel is ``intensity``
    times a smooth azimuthal modulation ``1 + 0.3 cos(2 phi + phi0)`` (a
    textured powder), the same in every frame; each frame adds a Poisson draw
    of it to the ring pixels.

    Parameters
    ----------
    series : SimulatedSeries
        Series to add to (not changed).
    centre : (float, float), optional
        Ring centre (row, col), px; default (0.45 H, 0.55 W).  It may lie
        outside the frame.
    radius : float, optional
        Radius, px (> width); default 0.35 min(H, W).
    width : float
        Radial width of the ring, px (> 0).
    intensity : float, optional
        Mean expected counts added per ring pixel (> 0); default 10 times the
        noise of the mean background, ``10 sqrt(mean(background))`` (at least 10).
    seed : int or None
        Seed of the random generator.

    Returns
    -------
    series : ArtefactSeries
        With the ring in the frames, ``ring_map`` and ``ring``.

    Raises
    ------
    BraggflowError
        If the series already has a ring, a value is not finite or out of
        range, or the ring misses every unmasked pixel of the frame.
    """
    out = _copy(series)
    if out.ring_map.any():
        raise BraggflowError("series: it already has a powder ring (one ring per series)")
    h, w = out.mask.shape
    centre = (0.45 * h, 0.55 * w) if centre is None else centre
    try:
        cr, cc = (float(v) for v in centre)
    except (TypeError, ValueError):
        raise BraggflowError(f"centre must be a pair of numbers (row, col), got {centre!r}") from None
    radius = 0.35 * min(h, w) if radius is None else float(radius)
    width = float(width)
    if intensity is None:
        intensity = max(10.0 * float(np.sqrt(out.background.mean())), 10.0)
    intensity = float(intensity)
    for name, value in (("centre", cr), ("centre", cc), ("radius", radius), ("width", width),
                        ("intensity", intensity)):
        if not np.isfinite(value):
            raise BraggflowError(f"{name} must be finite, got {value}")
    if not width > 0:
        raise BraggflowError(f"width must be > 0 px, got {width}")
    if not radius > width:
        raise BraggflowError(f"radius must be larger than width ({width:g} px), got {radius}")
    if not intensity > 0:
        raise BraggflowError(f"intensity must be > 0 counts/px, got {intensity}")
    rng = _rng(seed)
    rr = np.arange(h, dtype=np.float64)[:, None] - cr
    cc_ = np.arange(w, dtype=np.float64)[None, :] - cc
    dist = np.hypot(rr, cc_)
    ring_map = (np.abs(dist - radius) <= width / 2) & ~out.mask & ~_taken(out)
    if not ring_map.any():
        raise BraggflowError(f"radius, centre: the ring ({radius:g} px around ({cr:g}, {cc:g})) misses the frame")
    phi0 = rng.uniform(0, 2 * np.pi)
    ri, ci = np.nonzero(ring_map)
    expected = intensity * (1 + 0.3 * np.cos(2 * np.arctan2(rr[ri, 0], cc_[0, ci]) + phi0))
    top = _top(out.frames.dtype)
    for f in range(len(out.frames)):
        values = out.frames[f, ri, ci].astype(np.float64) + rng.poisson(expected)
        out.frames[f, ri, ci] = np.minimum(values, top).astype(out.frames.dtype)
    out.ring_map = ring_map
    out.ring = {"centre": (cr, cc), "radius": radius, "width": width, "intensity": intensity}
    return out


def add_artefacts(series: SimulatedSeries, *, zingers: int = 50, hot: int = 20, ring: bool = True,
                  seed=0) -> ArtefactSeries:
    """Add a powder ring, hot pixels and zingers to a simulated series, with their truth.

    Calls :func:`add_ring` (if ``ring``), :func:`add_hot_pixels` and
    :func:`add_zingers` with their defaults, in that order, with seeds
    spawned from ``seed``; hot pixels and zingers avoid the ring's pixels.

    Parameters
    ----------
    series : SimulatedSeries
        Series to add to (not changed).
    zingers : int
        Zinger events per frame (0: none).
    hot : int
        Hot pixels (0: none).
    ring : bool
        Add a powder ring.
    seed : int or None
        Seed of the random generators.

    Returns
    -------
    series : ArtefactSeries
        Frames with the artefacts; ``zingers``, ``hot_pixels``, ``hot_lit``,
        ``ring_map``, ``ring``.

    Raises
    ------
    BraggflowError
        As the functions it calls.
    """
    try:
        s_ring, s_hot, s_zing = np.random.SeedSequence(seed).spawn(3)
    except (TypeError, ValueError):
        raise BraggflowError(f"seed must be an int or None, got {seed!r}") from None
    out = add_ring(series, seed=s_ring) if ring else series
    out = add_hot_pixels(out, _count("hot", hot), seed=s_hot)
    return add_zingers(out, _count("zingers", zingers), seed=s_zing)
