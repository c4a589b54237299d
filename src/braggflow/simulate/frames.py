"""Synthetic detector series with ground truth, for the demo, tests and benchmarks.

A series holds a fixed set of peaks that drift slowly and change intensity
from frame to frame, drawn from the kinds a real detector shows: round
Gaussian and pseudo-Voigt spots, elongated (rotated anisotropic) spots, broad
spots, close pairs, and spots cut by the detector edge; on a smooth
background, with Poisson noise, a few hot and dead pixels and a masked module
gap.  Every peak is rendered with :func:`braggflow.profiles.render.peak_profile`.

``simulate_series(profile="gaussian", ...)`` draws a population of round
Gaussian spots with given width and flux ranges and a given fraction of close
pairs instead, and :func:`benchmark_series` pins the frames of the pipeline
benchmark (``bench/pipeline.py``).  Detector artefacts with their own truth
(zingers, hot pixels, a powder ring) are added by :mod:`braggflow.simulate.artefacts`;
dense stills on a Pilatus 6M are drawn by :mod:`braggflow.simulate.dense`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from braggflow.errors import BraggflowError
from braggflow.profiles.render import peak_profile

__all__ = ["SimulatedSeries", "simulate_series", "benchmark_series", "match_peaks", "write_nexus",
           "BENCHMARK_SEED"]

KINDS = ("gaussian", "pvoigt", "elongated", "broad", "neighbour", "edge")
KIND_P = (0.35, 0.2, 0.15, 0.1, 0.1, 0.1)
PROFILES = ("mixed", "gaussian")
"""Peak populations of :func:`simulate_series`."""

MIXED_SIGMA = (0.8, 1.8)
"""Range of the base sigma of the mixed population, px."""
MIXED_FLUX = (1500.0, 60000.0)
"""Range of the base intensity of the mixed population, photons (log-uniform)."""
NEIGHBOUR_SEP = (4.0, 7.0)
"""Distance of the ``neighbour`` peaks of the mixed population (no ``pairs``), px."""
GAUSSIAN_SIGMA = (0.8, 2.0)
"""Default sigma range of the Gaussian population, px."""
GAUSSIAN_FLUX = (2000.0, 50000.0)
"""Default intensity range of the Gaussian population, photons (log-uniform)."""
PAIR_SEP = (3.0, 6.0)
"""Default distance between the members of a close pair when ``pairs`` is given, px."""
BENCHMARK_SEED = 2048
"""Seed of :func:`benchmark_series`."""
_MARGIN = 12  # px between drawn peak centres and the frame edge (but for the edge kind)


@dataclass
class SimulatedSeries:
    """A simulated series and its ground truth.

    Attributes
    ----------
    frames : (N, H, W) ndarray of uint32
        Counts (photons; gain 1).  Dead pixels are 0, hot pixels high, the
        module gap 0.
    mask : (H, W) ndarray of bool
        The module gap (True = bad), as a detector definition would give it.
    truth : pandas.DataFrame
        One row per peak per frame: frame, row, col (px), intensity (photons),
        sigma_row, sigma_col (px), angle (rad), eta (Lorentzian fraction),
        kind, peak_id, masked (centre on a masked pixel).
    background : (H, W) ndarray of float32
        Expected background, counts/px.
    """

    frames: np.ndarray
    mask: np.ndarray
    truth: pd.DataFrame
    background: np.ndarray


def _draw_peaks(rng: np.random.Generator, shape: tuple[int, int], n: int, *, sigma: tuple[float, float] = MIXED_SIGMA,
                flux: tuple[float, float] = MIXED_FLUX, neighbour_sep: tuple[float, float] = NEIGHBOUR_SEP,
                neighbours: bool = True) -> pd.DataFrame:
    """The mixed population; with ``neighbours`` False no peak gets a ``neighbour``."""
    h, w = shape
    if neighbours:
        kinds = rng.choice(KINDS, size=n, p=list(KIND_P))
    else:
        keep = [i for i, k in enumerate(KINDS) if k != "neighbour"]
        p = np.array([KIND_P[i] for i in keep])
        kinds = rng.choice([KINDS[i] for i in keep], size=n, p=p / p.sum())
    rows, cols = rng.uniform(_MARGIN, h - _MARGIN, n), rng.uniform(_MARGIN, w - _MARGIN, n)
    sigma = rng.uniform(sigma[0], sigma[1], n)
    sr, sc = sigma.copy(), sigma.copy()
    angle = np.zeros(n)
    eta = np.zeros(n)
    intensity = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1]), n))
    extra = []
    for i, kind in enumerate(kinds):
        if kind == "pvoigt":
            eta[i] = rng.uniform(0.3, 0.8)
        elif kind == "elongated":
            sr[i] = sigma[i] * rng.uniform(2.0, 3.0)
            angle[i] = rng.uniform(0, np.pi)
        elif kind == "broad":
            sr[i] = sc[i] = rng.uniform(2.5, 4.0)
            intensity[i] *= 3
        elif kind == "edge":
            side = rng.integers(4)
            offset = rng.uniform(1.5, 4.0)
            if side == 0:
                rows[i] = offset
            elif side == 1:
                rows[i] = h - 1 - offset
            elif side == 2:
                cols[i] = offset
            else:
                cols[i] = w - 1 - offset
        elif kind == "neighbour":
            dist = rng.uniform(neighbour_sep[0], neighbour_sep[1])
            phi = rng.uniform(0, 2 * np.pi)
            extra.append(dict(row=rows[i] + dist * np.sin(phi), col=cols[i] + dist * np.cos(phi),
                              sigma_row=sigma[i], sigma_col=sigma[i], angle=0.0, eta=0.0,
                              intensity=intensity[i] * rng.uniform(0.5, 1.5), kind="neighbour"))
    table = pd.DataFrame(dict(row=rows, col=cols, sigma_row=sr, sigma_col=sc, angle=angle, eta=eta,
                              intensity=intensity, kind=kinds))
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    table["kind"] = table["kind"].astype(str)
    return table


def _draw_round(rng: np.random.Generator, shape: tuple[int, int], n: int, *, sigma: tuple[float, float],
                flux: tuple[float, float], kind: str, margin: float = _MARGIN) -> pd.DataFrame:
    """``n`` round Gaussian spots at uniform places at least ``margin`` px inside the frame."""
    h, w = shape
    rows, cols = rng.uniform(margin, h - margin, n), rng.uniform(margin, w - margin, n)
    s = rng.uniform(sigma[0], sigma[1], n)
    intensity = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1]), n))
    return pd.DataFrame(dict(row=rows, col=cols, sigma_row=s, sigma_col=s.copy(), angle=np.zeros(n), eta=np.zeros(n),
                             intensity=intensity, kind=np.full(n, kind, dtype=object)))


def _draw_pairs(rng: np.random.Generator, shape: tuple[int, int], n_pairs: int, *, sigma: tuple[float, float],
                flux: tuple[float, float], sep: tuple[float, float], kind: str) -> pd.DataFrame:
    """``2 n_pairs`` round Gaussian spots: rows 2k and 2k + 1 are a pair ``sep`` px apart, column ``partner``."""
    first = _draw_round(rng, shape, n_pairs, sigma=sigma, flux=flux, kind=kind, margin=_MARGIN + sep[1])
    second = _draw_round(rng, shape, n_pairs, sigma=sigma, flux=flux, kind=kind)
    dist = rng.uniform(sep[0], sep[1], n_pairs)
    phi = rng.uniform(0, 2 * np.pi, n_pairs)
    second["row"] = first["row"].to_numpy() + dist * np.sin(phi)
    second["col"] = first["col"].to_numpy() + dist * np.cos(phi)
    table = pd.concat([first, second]).sort_index(kind="stable").reset_index(drop=True)
    table["partner"] = np.arange(2 * n_pairs) ^ 1  # 0 <-> 1, 2 <-> 3, ...
    return table


def _check_range(name: str, value, *, low: float = 0.0) -> tuple[float, float]:
    """``value`` as a (lo, hi) pair of finite floats with ``low < lo <= hi``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BraggflowError(f"{name} must be a pair of numbers (lo, hi), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and low < lo <= hi):
        raise BraggflowError(f"{name} must satisfy {low:g} < lo <= hi, got ({lo:g}, {hi:g})")
    return lo, hi


def _population(rng: np.random.Generator, shape: tuple[int, int], n_peaks: int, *, profile: str, sigma, flux,
                pairs: float | None, pair_sep) -> pd.DataFrame:
    """Draw the peaks of :func:`simulate_series` (the default call draws exactly as it always has)."""
    if profile == "mixed" and pairs is None:
        return _draw_peaks(rng, shape, n_peaks, sigma=sigma or MIXED_SIGMA, flux=flux or MIXED_FLUX,
                           neighbour_sep=pair_sep or NEIGHBOUR_SEP)
    pairs = 0.0 if pairs is None else pairs
    n_pairs = int(round(pairs * n_peaks / 2))
    n_single = n_peaks - 2 * n_pairs
    if profile == "mixed":
        single = _draw_peaks(rng, shape, n_single, sigma=sigma or MIXED_SIGMA, flux=flux or MIXED_FLUX,
                             neighbours=False)
        kind = "neighbour"
    else:
        single = _draw_round(rng, shape, n_single, sigma=sigma or GAUSSIAN_SIGMA, flux=flux or GAUSSIAN_FLUX,
                             kind="gaussian")
        kind = "gaussian"
    paired = _draw_pairs(rng, shape, n_pairs, sigma=sigma or (MIXED_SIGMA if profile == "mixed" else GAUSSIAN_SIGMA),
                         flux=flux or (MIXED_FLUX if profile == "mixed" else GAUSSIAN_FLUX),
                         sep=pair_sep or PAIR_SEP, kind=kind)
    single["partner"] = -1
    paired["partner"] += n_single
    table = pd.concat([single, paired], ignore_index=True)
    table["kind"] = table["kind"].astype(str)
    return table


def simulate_series(
    n_frames: int = 20,
    *,
    shape: tuple[int, int] = (2048, 2048),
    n_peaks: int = 100,
    seed: int = 0,
    background: float = 20.0,
    drift: tuple[float, float] = (0.05, -0.03),
    gap: bool = True,
    n_hot: int = 20,
    n_dead: int = 20,
    profile: str = "mixed",
    sigma: tuple[float, float] | None = None,
    flux: tuple[float, float] | None = None,
    pairs: float | None = None,
    pair_sep: tuple[float, float] | None = None,
    variation: float = 0.2,
    flat_background: bool = False,
) -> SimulatedSeries:
    """Simulate a series of frames with about ``n_peaks`` peaks each.

    The peaks are one fixed set that drifts by ``drift`` per frame and whose
    intensities vary from frame to frame by ``variation``.  The default call
    draws the mixed population of the demo (its frames and truth are pinned by
    a test); ``profile="gaussian"`` with ``sigma``, ``flux`` and ``pairs``
    draws round Gaussian spots with a given fraction of close pairs.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    shape : (int, int)
        Frame shape (H, W), px; at least 64 x 64.
    n_peaks : int
        Peaks drawn per series.  Without ``pairs`` the mixed population adds
        about 10 % more (``neighbour`` peaks 4-7 px from a drawn one); with
        ``pairs`` (or ``profile="gaussian"``) every frame holds ``n_peaks``
        peaks but for those leaving the frame by drifting.
    seed : int
        Seed of the random generator (same seed, same series).
    background : float
        Mean background, counts/px; it varies smoothly by +-50 % over the frame
        unless ``flat_background``.
    drift : (float, float)
        Drift of every peak, (row, col) px per frame.
    gap : bool
        Mask a horizontal module gap of 8 rows across the middle.
    n_hot, n_dead : int
        Hot (60000 counts, unmasked) and dead (0, unmasked) pixels.
    profile : {"mixed", "gaussian"}
        Peak population.  ``"mixed"``: Gaussian, pseudo-Voigt, elongated,
        broad, neighbour and edge peaks.  ``"gaussian"``: round Gaussian spots
        only (``kind`` "gaussian"), all at least 12 px inside the frame.
    sigma : (float, float), optional
        Range of the (base) Gaussian sigma, px, drawn uniformly.  Default:
        (0.8, 1.8) for "mixed" (broad peaks keep 2.5-4 px, elongated ones are
        2-3 times longer), (0.8, 2.0) for "gaussian".
    flux : (float, float), optional
        Range of the (base) integrated intensity, photons, drawn log-uniformly.
        Default: (1500, 60000) for "mixed" (broad peaks get 3 times more),
        (2000, 50000) for "gaussian".
    pairs : float, optional
        Fraction of the ``n_peaks`` peaks that are members of close pairs, 0 to
        1 (``round(pairs * n_peaks / 2)`` pairs).  Both members of a pair are
        round Gaussian spots whose sigma and flux are drawn independently from
        ``sigma`` and ``flux``; with "mixed" their kind is ``neighbour``, and the
        other peaks are drawn from the other kinds.  Default: 0 for "gaussian";
        for "mixed" the demo's ``neighbour`` peaks described under ``n_peaks``.
    pair_sep : (float, float), optional
        Range of the distance between the centres of a pair, px (uniform).
        Default (3, 6) with ``pairs`` or ``profile="gaussian"``.  For the mixed
        population without ``pairs`` it sets the distance of the ``neighbour``
        peaks instead (default (4, 7)).
    variation : float
        Relative amplitude of the frame-to-frame intensity variation of every
        peak (``1 + variation * sin(...)``), 0 to 1; 0 keeps the drawn flux.
    flat_background : bool
        A flat background of ``background`` counts/px instead of a smooth one.

    Returns
    -------
    series : SimulatedSeries
        ``truth`` has one row per peak inside the frame per frame.  Unless
        the population is the default mixed one without ``pairs``, it also has
        the column ``partner``: the ``peak_id`` of the other member of the
        peak's close pair, -1 for peaks in no pair.

    Raises
    ------
    BraggflowError
        If the shape is smaller than 64 x 64, a count is negative, ``profile``
        is unknown, a range is not ``0 < lo <= hi``, ``pairs`` or
        ``variation`` is outside [0, 1], or the frame is too small for close
        pairs ``pair_sep`` px apart.
    """
    h, w = (int(shape[0]), int(shape[1]))
    if h < 64 or w < 64:
        raise BraggflowError(f"shape must be at least 64 x 64, got {shape}")
    if n_frames < 1 or n_peaks < 0:
        raise BraggflowError(f"n_frames must be >= 1 and n_peaks >= 0, got {n_frames}, {n_peaks}")
    if n_hot < 0 or n_dead < 0:
        raise BraggflowError(f"n_hot and n_dead must be >= 0, got {n_hot}, {n_dead}")
    if profile not in PROFILES:
        raise BraggflowError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    sigma = None if sigma is None else _check_range("sigma", sigma)
    flux = None if flux is None else _check_range("flux", flux)
    pair_sep = None if pair_sep is None else _check_range("pair_sep", pair_sep)
    if pairs is not None and not 0.0 <= float(pairs) <= 1.0:
        raise BraggflowError(f"pairs must be a fraction in [0, 1], got {pairs}")
    if not 0.0 <= float(variation) <= 1.0:
        raise BraggflowError(f"variation must be in [0, 1], got {variation}")
    if (pairs or profile == "gaussian") and min(h, w) <= 2 * (_MARGIN + (pair_sep or PAIR_SEP)[1]):
        raise BraggflowError(f"pair_sep: close pairs up to {(pair_sep or PAIR_SEP)[1]:g} px apart need frames larger "
                             f"than {2 * (_MARGIN + (pair_sep or PAIR_SEP)[1]):g} px, got {shape}")
    rng = np.random.default_rng(seed)
    peaks = _population(rng, (h, w), n_peaks, profile=profile, sigma=sigma, flux=flux, pairs=pairs,
                        pair_sep=pair_sep)
    peaks["peak_id"] = np.arange(len(peaks))
    yy = np.linspace(-1, 1, h)[:, None]
    xx = np.linspace(-1, 1, w)[None, :]
    if flat_background:
        bg = np.full((h, w), background, dtype=np.float32)
    else:
        bg = (background * (1 + 0.3 * xx + 0.2 * yy - 0.2 * (xx**2 + yy**2))).astype(np.float32)
    mask = np.zeros((h, w), dtype=bool)
    if gap:
        g0 = h // 2 - 4
        mask[g0 : g0 + 8, :] = True
    hot = (rng.integers(0, h, n_hot), rng.integers(0, w, n_hot))
    dead = (rng.integers(0, h, n_dead), rng.integers(0, w, n_dead))
    frames = np.empty((n_frames, h, w), dtype=np.uint32)
    truth_rows = []
    for f in range(n_frames):
        lam = bg.astype(np.float64).copy()
        scale = 1 + variation * np.sin(2 * np.pi * f / max(n_frames, 2) + peaks["peak_id"].to_numpy())
        for p, s in zip(peaks.itertuples(index=False), scale):
            r, c = p.row + drift[0] * f, p.col + drift[1] * f
            if not (-0.5 <= r < h - 0.5 and -0.5 <= c < w - 0.5):
                continue
            half = int(np.ceil(5 * max(p.sigma_row, p.sigma_col))) + 2
            r0, r1 = max(0, int(r) - half), min(h, int(r) + half + 1)
            c0, c1 = max(0, int(c) - half), min(w, int(c) + half + 1)
            prof = peak_profile(np.arange(r0, r1), np.arange(c0, c1), row=r, col=c, sigma_row=p.sigma_row,
                                sigma_col=p.sigma_col, angle=p.angle, eta=p.eta, supersample=5)
            lam[r0:r1, c0:c1] += p.intensity * s * prof
            truth_rows.append((f, r, c, p.intensity * s, p.sigma_row, p.sigma_col, p.angle, p.eta, p.kind, p.peak_id,
                               bool(mask[int(round(r)), int(round(c))])))
        frame = rng.poisson(lam)
        frame[hot] = 60000
        frame[dead] = 0
        frame[mask] = 0
        frames[f] = frame
    truth = pd.DataFrame(truth_rows, columns=["frame", "row", "col", "intensity", "sigma_row", "sigma_col", "angle",
                                              "eta", "kind", "peak_id", "masked"])
    if "partner" in peaks:
        truth["partner"] = peaks["partner"].to_numpy()[truth["peak_id"].to_numpy()]
    return SimulatedSeries(frames=frames, mask=mask, truth=truth, background=bg)


def benchmark_series(n_frames: int = 24, *, seed: int = BENCHMARK_SEED) -> SimulatedSeries:
    """The frames of the pipeline benchmark, pinned: Gaussian spots with close pairs.

    ``n_frames`` frames of 2048 x 2048 px, 100 round Gaussian spots each
    (sigma 0.8-2.0 px uniform, flux 2,000-50,000 photons log-uniform, the
    same in every frame), 30 % of them members of close pairs 3-6 px apart;
    a flat background of 50 photons/px, Poisson noise, gain 1; no gap, no
    hot or dead pixels.  The spots drift by (0.05, -0.03) px per frame.
    Frame ``k`` does not depend on ``n_frames``.

    Parameters
    ----------
    n_frames : int
        Number of frames (the benchmark uses 24).
    seed : int
        Seed; the benchmark's is :data:`BENCHMARK_SEED`.

    Returns
    -------
    series : SimulatedSeries
        (n_frames, 2048, 2048) uint32 frames; ``truth`` with ``partner``.

    Raises
    ------
    BraggflowError
        If ``n_frames`` < 1.
    """
    return simulate_series(n_frames, shape=(2048, 2048), n_peaks=100, seed=seed, background=50.0, gap=False, n_hot=0,
                           n_dead=0, profile="gaussian", sigma=(0.8, 2.0), flux=(2000.0, 50000.0), pairs=0.3,
                           pair_sep=(3.0, 6.0), variation=0.0, flat_background=True)


def match_peaks(found: pd.DataFrame, truth: pd.DataFrame, *, max_distance: float = 1.5) -> pd.DataFrame:
    """Match found peaks to true peaks, frame by frame, one to one, nearest first.

    Parameters
    ----------
    found : pandas.DataFrame
        Peak table with ``frame``, ``row``, ``col`` (px).
    truth : pandas.DataFrame
        True peaks with ``frame``, ``row``, ``col`` (px).
    max_distance : float
        Largest distance for a match, px.

    Returns
    -------
    matches : pandas.DataFrame
        One row per true peak: ``truth_index``, ``found_index`` (-1: missed),
        ``distance`` (px, NaN if missed), ``d_row``, ``d_col`` (found - true, px).
    """
    out = []
    for frame, t in truth.groupby("frame", sort=True):
        f = found[found["frame"] == frame]
        f = f[np.isfinite(f["row"]) & np.isfinite(f["col"])]
        res = pd.DataFrame({"truth_index": t.index, "found_index": -1, "distance": np.nan,
                            "d_row": np.nan, "d_col": np.nan})
        if len(f):
            tree = cKDTree(f[["row", "col"]].to_numpy())
            dist, idx = tree.query(t[["row", "col"]].to_numpy(), k=min(4, len(f)), distance_upper_bound=max_distance)
            dist, idx = np.atleast_2d(dist.T).T, np.atleast_2d(idx.T).T
            cand = [(dist[i, j], i, idx[i, j])
                    for i in range(len(t)) for j in range(dist.shape[1]) if np.isfinite(dist[i, j])]
            used_t, used_f = set(), set()
            for d, i, j in sorted(cand):
                if i in used_t or j in used_f:
                    continue
                used_t.add(i)
                used_f.add(j)
                res.iloc[i, 1] = f.index[j]
                res.iloc[i, 2] = d
                res.iloc[i, 3] = f["row"].iloc[j] - t["row"].iloc[i]
                res.iloc[i, 4] = f["col"].iloc[j] - t["col"].iloc[i]
        out.append(res)
    if not out:
        return pd.DataFrame(columns=["truth_index", "found_index", "distance", "d_row", "d_col"])
    return pd.concat(out, ignore_index=True)


def write_nexus(path, series: SimulatedSeries, *, compression: str = "bitshuffle") -> None:
    """Write a simulated series as a NeXus/HDF5 file with its ground truth.

    Layout: ``/entry/data/data`` (NXdata signal, (N, H, W) uint32,
    bitshuffle-LZ4 compressed like an Eiger file), ``/entry/instrument/detector/pixel_mask``
    (nonzero = bad), ``/entry/truth`` (one dataset per ground-truth column).

    Parameters
    ----------
    path : str or Path
    series : SimulatedSeries
    compression : {"bitshuffle", "gzip", "none"}
    """
    import h5py
    import hdf5plugin

    from braggflow.io.results import write_table

    kwargs = {}
    if compression == "bitshuffle":
        kwargs = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    elif compression == "gzip":
        kwargs = dict(compression="gzip", compression_opts=1)
    n, h, w = series.frames.shape
    with h5py.File(path, "w") as h5:
        h5.attrs["default"] = "entry"
        entry = h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data.create_dataset("data", data=series.frames, chunks=(1, h, w), **kwargs)
        det = entry.create_group("instrument/detector")
        entry["instrument"].attrs["NX_class"] = "NXinstrument"
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("pixel_mask", data=series.mask.astype(np.uint32), compression="gzip")
        truth = entry.create_group("truth")
        truth.attrs["NX_class"] = "NXcollection"
        write_table(truth, series.truth)
