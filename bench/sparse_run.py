"""Time ``braggflow run`` end to end on a long ImageD11 sparse scan (:mod:`braggflow.pipeline.sparse_run`).

Writes a scan of ``--frames`` frames (default 180,000) of ``--shape`` (an
Eiger 4M, 2162 x 2068) in the layout of ImageD11's sparse files (group
``1.1``, lzf-compressed ``row``/``col``/``intensity`` in chunks of 10,000,
``nnz``, ``measurement/rot_center``), thresholded at 6 counts over a
dark-subtracted normal noise of sigma 2 (uint16):

- noise pixels, ``--noise`` a frame on average (Poisson), values from the
  normal tail above the threshold;
- Gaussian spots, ``--spots`` a frame on average, width 0.8-1.5 px, flux
  log-uniform 300-10,000 counts, with the noise added, their pixels above
  the threshold kept;
- a zinger (one pixel, 300-3,000 counts) in one frame of 50, and one hot
  pixel stored in every frame.

Then runs ``braggflow run SCAN -o RESULTS`` in a subprocess (``OMP_NUM_THREADS=1``)
and prints the frames per second end to end (the subprocess's wall time,
start-up included), and as ``braggflow run`` reports them (overall, and after
its first progress report, which the block path gives after the first
block), the peaks and frames-table rows of the results file, and how many
simulated spots have a peak within 1 px (of all, and of those clear of the
detector's module gaps, which the default run masks).

Usage::

    python bench/sparse_run.py [--frames 180000] [--noise 3] [--spots 0.12] [--work /tmp/sparse_run_bench]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import special

OPTS = {"chunks": (10000,), "maxshape": (None,), "compression": "lzf", "shuffle": True}
SIGMA, THRESHOLD = 2.0, 6


def noise_pixels(rng, n_frames: int, per_frame: float, shape) -> tuple[np.ndarray, ...]:
    """Isolated noise excursions above the threshold: (frame, row, col, value)."""
    count = rng.poisson(per_frame, n_frames)
    frame = np.repeat(np.arange(n_frames), count)
    lo = special.ndtr((THRESHOLD - 0.5) / SIGMA)
    u = rng.uniform(lo, 1.0, frame.size)
    value = np.rint(SIGMA * special.ndtri(u))
    return frame, rng.integers(0, shape[0], frame.size), rng.integers(0, shape[1], frame.size), value


def spot_pixels(rng, n_frames: int, per_frame: float, shape) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Gaussian spots with noise, their pixels above the threshold: ((frame, row, col, value), truth (S, 3))."""
    count = rng.poisson(per_frame, n_frames)
    frame = np.repeat(np.arange(n_frames), count)
    s = frame.size
    r0, c0 = rng.uniform(4, shape[0] - 4, s), rng.uniform(4, shape[1] - 4, s)
    width = rng.uniform(0.8, 1.5, s)
    flux = np.exp(rng.uniform(np.log(300), np.log(10_000), s))
    d = np.arange(-3, 4)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    rows = np.rint(r0)[:, None] + dr.ravel()
    cols = np.rint(c0)[:, None] + dc.ravel()
    # pixel-integrated Gaussian (product of the normal CDF differences along rows and columns)
    fr = special.ndtr((rows + 0.5 - r0[:, None]) / width[:, None]) - special.ndtr((rows - 0.5 - r0[:, None]) /
                                                                                   width[:, None])
    fc = special.ndtr((cols + 0.5 - c0[:, None]) / width[:, None]) - special.ndtr((cols - 0.5 - c0[:, None]) /
                                                                                   width[:, None])
    value = np.rint(flux[:, None] * fr * fc + rng.normal(0, SIGMA, rows.shape))
    keep = value >= THRESHOLD
    pixels = (np.broadcast_to(frame[:, None], rows.shape)[keep], rows[keep], cols[keep], value[keep])
    return pixels, np.c_[frame, r0, c0]


def write_scan(path: Path, n_frames: int, noise: float, spots: float, shape, seed: int = 0) -> tuple[int, np.ndarray]:
    """Write the scan; returns (stored pixels, the spots' (frame, row, col))."""
    rng = np.random.default_rng(seed)
    parts = [noise_pixels(rng, n_frames, noise, shape)]
    spot, truth = spot_pixels(rng, n_frames, spots, shape)
    parts.append(spot)
    z = np.arange(0, n_frames, 50)
    parts.append((z, rng.integers(0, shape[0], z.size), rng.integers(0, shape[1], z.size),
                  rng.integers(300, 3000, z.size).astype(float)))
    hot = np.arange(n_frames)
    parts.append((hot, np.full(hot.size, 1000), np.full(hot.size, 1200), rng.normal(150, 5, hot.size).round()))
    frame, row, col, value = (np.concatenate(a) for a in zip(*parts))
    frame, row, col = frame.astype(np.int64), row.astype(np.int64), col.astype(np.int64)
    key = (frame * shape[0] + row) * shape[1] + col
    order = np.lexsort((-value, key))  # a pixel drawn twice keeps its highest value
    key, value = key[order], value[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, value = key[first], np.clip(value[first], THRESHOLD, 65534).astype(np.uint16)
    frame, rest = np.divmod(key, shape[0] * shape[1])
    row, col = np.divmod(rest, shape[1])
    with h5py.File(path, "w") as h5:
        g = h5.create_group("1.1")
        g.attrs.update({"itype": "uint16", "nframes": n_frames, "shape0": shape[0], "shape1": shape[1]})
        g.create_dataset("row", data=row.astype(np.uint16), **OPTS)
        g.create_dataset("col", data=col.astype(np.uint16), **OPTS)
        g.create_dataset("intensity", data=value, **OPTS)
        g.create_dataset("nnz", data=np.bincount(frame, minlength=n_frames).astype(np.uint32))
        g.create_dataset("measurement/rot_center", data=0.001 + 0.002 * np.arange(n_frames))
    return int(key.size), truth


def recall(results: Path, truth: np.ndarray, shape) -> tuple[float, float]:
    """Share of the simulated spots with a peak of their frame within 1 px: of all, and of those clear of the mask.

    The mask is the default run's (the detector's module gaps and a pixel beside them); a spot whose
    nearest pixel or one of its neighbours is masked is not clear of it.
    """
    from braggflow.correct import build_static_mask
    from braggflow.io.results import read_peaks

    table = read_peaks(results)
    f, r, c = table["frame"].to_numpy(), table["row"].to_numpy(), table["col"].to_numpy()
    order = np.argsort(f, kind="stable")
    f, r, c = f[order], r[order], c[order]
    lo, hi = np.searchsorted(f, truth[:, 0], "left"), np.searchsorted(f, truth[:, 0], "right")
    found = np.array([a < b and np.min(np.hypot(r[a:b] - tr, c[a:b] - tc)) < 1.0
                      for (_, tr, tc), a, b in zip(truth, lo, hi)], dtype=bool)
    mask = build_static_mask(tuple(shape), detector="auto", gap_margin=1)
    clear = np.ones(len(truth), dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr = np.clip(np.rint(truth[:, 1]).astype(int) + dr, 0, shape[0] - 1)
            cc = np.clip(np.rint(truth[:, 2]).astype(int) + dc, 0, shape[1] - 1)
            clear &= ~mask[rr, cc]
    return float(found.mean()) if found.size else 0.0, float(found[clear].mean()) if clear.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=180_000)
    parser.add_argument("--noise", type=float, default=3.0, help="mean noise pixels per frame")
    parser.add_argument("--spots", type=float, default=0.12, help="mean spots per frame")
    parser.add_argument("--shape", type=int, nargs=2, default=(2162, 2068), help="frame shape (Eiger 4M)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparse_run_bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    scan, results = args.work / "scan_sparse.h5", args.work / "results.h5"
    t = time.perf_counter()
    total, truth = write_scan(scan, args.frames, args.noise, args.spots, tuple(args.shape))
    print(f"wrote {scan}: {args.frames} frames of {args.shape[0]}x{args.shape[1]}, {total} pixels "
          f"({total / args.frames:.2f} a frame), {len(truth)} spots, in {time.perf_counter() - t:.1f} s")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from braggflow.cli import main; main()", "run", str(scan), "-o", str(results),
           "--overwrite"]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"braggflow run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(" ".join(done.stdout.split()))
    rates = re.search(r"\(([\d.]+) frames/s overall(?:, ([\d.]+) after the first frame)?\)", done.stdout)
    print(f"end to end (subprocess, start-up included): {wall:.1f} s, {args.frames / wall:,.0f} frames/s")
    if rates:
        after = f", {float(rates.group(2)):,.0f} frames/s after the first block" if rates.group(2) else ""
        print(f"braggflow run: {float(rates.group(1)):,.0f} frames/s overall{after}")
    from braggflow.io.results import read_frames, read_peaks

    table, frames = read_peaks(results), read_frames(results)
    methods = ", ".join(f"{k} {v}" for k, v in table["method"].value_counts().items())
    print(f"results: {len(table)} peaks (method: {methods}), {len(frames)} rows in /entry/frames, "
          f"{int(frames['zingers'].sum())} zingers, {int(frames['hot_pixels'].max())} hot pixel(s)")
    everywhere, clear = recall(results, truth, args.shape)
    print(f"spots with a peak within 1 px: {everywhere:.3f} of all, {clear:.3f} of those clear of the detector gaps")


if __name__ == "__main__":
    main()
