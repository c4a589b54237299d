"""Time opening a long ImageD11 sparse scan and reading all its pixels with :meth:`SparseSeries.pixels`.

Writes a scan of ``--frames`` frames (default 180,000, a 3DXRD rotation of
0.002 degrees a frame) with about ``--pixels`` stored pixels per frame
(Poisson-distributed) in the layout of ImageD11's sparse files (group
``1.1``, lzf-compressed ``row``/``col``/``intensity`` in chunks of 10,000,
``nnz``, ``measurement/rot_center``), then times, each the best of
``--repeat`` runs in a fresh series:

- opening the scan (attributes, ``nnz`` and the angles; no pixel);
- ``pixels(0, N)``: every pixel of the scan in one slice per dataset;
- ``pixels`` over blocks of ``--block`` frames;
- ``sparse_frame(i)`` and ``series[i]`` (dense) for ``--sample`` frames.

Usage::

    python bench/sparse_read.py [--frames 180000] [--pixels 8] [--shape 2162 2068] [--work /tmp/sparse_bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from braggflow.io.frames import open_frames

OPTS = {"chunks": (10000,), "maxshape": (None,), "compression": "lzf", "shuffle": True}


def write_scan(path: Path, n_frames: int, pixels: float, shape: tuple[int, int], seed: int = 0) -> int:
    """Write the scan; returns the number of stored pixels."""
    rng = np.random.default_rng(seed)
    nnz = rng.poisson(pixels, n_frames).astype(np.uint32)
    total = int(nnz.sum())
    with h5py.File(path, "w") as h5:
        g = h5.create_group("1.1")
        g.attrs.update({"itype": "uint16", "nframes": n_frames, "shape0": shape[0], "shape1": shape[1]})
        g.create_dataset("row", data=rng.integers(0, shape[0], total, dtype=np.uint16), **OPTS)
        g.create_dataset("col", data=rng.integers(0, shape[1], total, dtype=np.uint16), **OPTS)
        g.create_dataset("intensity", data=rng.integers(10, 5000, total, dtype=np.uint16), **OPTS)
        g.create_dataset("nnz", data=nnz)
        g.create_dataset("measurement/rot_center", data=0.001 + 0.002 * np.arange(n_frames))
    return total


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=180_000)
    parser.add_argument("--pixels", type=float, default=8.0, help="mean stored pixels per frame")
    parser.add_argument("--shape", type=int, nargs=2, default=(2162, 2068), help="frame shape (Eiger 4M)")
    parser.add_argument("--block", type=int, default=3600, help="frames per block for the block reads")
    parser.add_argument("--sample", type=int, default=200, help="frames read one at a time")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparse_bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "scan_sparse.h5"
    t = time.perf_counter()
    total = write_scan(path, args.frames, args.pixels, tuple(args.shape))
    print(f"wrote {path}: {args.frames} frames of {args.shape[0]}x{args.shape[1]}, {total} pixels "
          f"({total / args.frames:.2f} a frame), {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.2f} s")

    t_open, series = best(lambda: open_frames(str(path)), args.repeat)
    print(f"open (attributes, nnz, rot_center): {t_open * 1e3:8.1f} ms  -> {series!r}")

    def read_all():
        s = open_frames(str(path))
        return s.pixels(0, len(s))

    t_all, (fi, rows, cols, values) = best(read_all, args.repeat)
    assert len(values) == len(fi) == total
    print(f"open + pixels(0, {args.frames}) ({total} pixels): {t_all * 1e3:8.1f} ms  "
          f"({total / t_all / 1e6:.1f} M pixels/s)")

    def read_blocks():
        s = open_frames(str(path))
        return sum(len(s.pixels(k, min(k + args.block, len(s)))[3]) for k in range(0, len(s), args.block))

    t_blocks, n = best(read_blocks, args.repeat)
    assert n == total
    print(f"open + pixels() in blocks of {args.block} frames: {t_blocks * 1e3:8.1f} ms")

    sample = np.linspace(0, args.frames - 1, args.sample).astype(int)
    s = open_frames(str(path))
    t_sparse, _ = best(lambda: [s.sparse_frame(int(i)) for i in sample], args.repeat)
    t_dense, _ = best(lambda: [s[int(i)] for i in sample], args.repeat)
    print(f"sparse_frame(i): {t_sparse / len(sample) * 1e3:.3f} ms a frame; "
          f"series[i] (dense {args.shape[0]}x{args.shape[1]}): {t_dense / len(sample) * 1e3:.3f} ms a frame")
    s.close()


if __name__ == "__main__":
    main()
