"""Synthetic detector series with ground truth, for the demo, tests and benchmarks.

A series holds a fixed set of peaks that drift slowly and change intensity
from frame to frame, drawn from the kinds a real detector shows: round
Gaussian and pseudo-Voigt spots, elongated (rotated anisotropic) spots, broad
spots, close pairs, and spots cut by the detector edge; on a smooth
background, with Poisson noise, a few hot and dead pixels and a masked module
gap.  Every peak is rendered with :func:`braggflow.profiles.render.peak_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from braggflow.errors import BraggflowError
from braggflow.profiles.render import peak_profile

__all__ = ["SimulatedSeries", "simulate_series", "match_peaks", "write_nexus"]

KINDS = ("gaussian", "pvoigt", "elongated", "broad", "neighbour", "edge")


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


def _draw_peaks(rng: np.random.Generator, shape: tuple[int, int], n: int) -> pd.DataFrame:
    h, w = shape
    kinds = rng.choice(KINDS, size=n, p=[0.35, 0.2, 0.15, 0.1, 0.1, 0.1])
    rows, cols = rng.uniform(12, h - 12, n), rng.uniform(12, w - 12, n)
    sigma = rng.uniform(0.8, 1.8, n)
    sr, sc = sigma.copy(), sigma.copy()
    angle = np.zeros(n)
    eta = np.zeros(n)
    intensity = np.exp(rng.uniform(np.log(1500), np.log(60000), n))
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
            dist = rng.uniform(4.0, 7.0)
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
) -> SimulatedSeries:
    """Simulate a series of frames with about ``n_peaks`` peaks each.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    shape : (int, int)
        Frame shape (H, W), px; at least 64 x 64.
    n_peaks : int
        Peaks drawn per series (close pairs add about 10 % more).
    seed : int
        Seed of the random generator (same seed, same series).
    background : float
        Mean background, counts/px; it varies smoothly by +-50 % over the frame.
    drift : (float, float)
        Drift of every peak, (row, col) px per frame.
    gap : bool
        Mask a horizontal module gap of 8 rows across the middle.
    n_hot, n_dead : int
        Hot (saturated, unmasked) and dead (0, unmasked) pixels.

    Returns
    -------
    series : SimulatedSeries

    Raises
    ------
    BraggflowError
        If the shape is smaller than 64 x 64 or a count is negative.
    """
    h, w = (int(shape[0]), int(shape[1]))
    if h < 64 or w < 64:
        raise BraggflowError(f"shape must be at least 64 x 64, got {shape}")
    if n_frames < 1 or n_peaks < 0:
        raise BraggflowError(f"n_frames must be >= 1 and n_peaks >= 0, got {n_frames}, {n_peaks}")
    rng = np.random.default_rng(seed)
    peaks = _draw_peaks(rng, (h, w), n_peaks)
    peaks["peak_id"] = np.arange(len(peaks))
    yy = np.linspace(-1, 1, h)[:, None]
    xx = np.linspace(-1, 1, w)[None, :]
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
        scale = 1 + 0.2 * np.sin(2 * np.pi * f / max(n_frames, 2) + peaks["peak_id"].to_numpy())
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
    return SimulatedSeries(frames=frames, mask=mask, truth=truth, background=bg)


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
