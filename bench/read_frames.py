"""How fast braggflow reads detector frames, against the libraries' own reads of the same files.

Frames of a Pilatus 6M (2527 x 2463 pixels) are written in three formats: TIFF
(int32, uncompressed, as ``fabio`` writes it), CBF (int32, byte-offset, by
``fabio``) and one HDF5 stack (uint32, one bitshuffle-LZ4 chunk a frame, as an
Eiger writes and ``braggflow simulate`` does).  For each format the script times
reading every frame into the one buffer a run reuses
(``FrameSeries.read(i, out=buffer)``, what ``braggflow run`` does) against the
plain library read of the same frames (``fabio.open(path).data``; h5py's
``read_direct`` into the buffer, through HDF5's filter pipeline), the two
alternated in each round, and prints the least of the rounds in ms a frame and
their ratio; every frame read both ways must be equal.

    python bench/read_frames.py [--frames 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (2527, 2463)  # Pilatus 6M


def write_files(folder: Path, frames: int, seed: int = 7) -> dict[str, list[str]]:
    """The same frames as TIFF files, CBF files and one HDF5 stack; paths per format."""
    import fabio
    import h5py
    import hdf5plugin

    rng = np.random.default_rng(seed)
    stack = rng.poisson(3.0, size=(frames, *SHAPE)).astype(np.int32)
    for frame in stack:  # a few hundred bright spots a frame
        rows, cols = rng.integers(0, SHAPE[0], 300), rng.integers(0, SHAPE[1], 300)
        frame[rows, cols] += rng.integers(50, 5000, 300).astype(np.int32)
    paths: dict[str, list[str]] = {"TIFF": [], "CBF": []}
    for k, frame in enumerate(stack):
        paths["TIFF"].append(str(folder / f"frame_{k:05d}.tif"))
        fabio.tifimage.TifImage(data=frame).write(paths["TIFF"][-1])
        paths["CBF"].append(str(folder / f"frame_{k:05d}.cbf"))
        fabio.cbfimage.CbfImage(data=frame).write(paths["CBF"][-1])
    h5_path = folder / "frames.h5"
    with h5py.File(h5_path, "w") as h5:
        h5.create_dataset("entry/data/data", data=stack.astype(np.uint32), chunks=(1, *SHAPE),
                          **hdf5plugin.Bitshuffle(cname="lz4"))
    paths["HDF5 bitshuffle-LZ4"] = [str(h5_path)]
    return paths


def library_reader(kind: str, paths: list[str]):
    """The library's own read of frame i (fabio, or h5py's read_direct into a buffer)."""
    if kind.startswith("HDF5"):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the filter)

        data = h5py.File(paths[0], "r", locking=False)["entry/data/data"]
        buffer = np.empty(data.shape[1:], dtype=data.dtype)

        def read(i):
            data.read_direct(buffer, np.s_[i])
            return buffer

        return read, len(data)
    import fabio

    return (lambda i: fabio.open(paths[i]).data), len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from braggflow.io.frames import open_frames

    with tempfile.TemporaryDirectory(prefix="braggflow-read-") as tmp:
        paths = write_files(Path(tmp), args.frames)
        print(f"{args.frames} frames of {SHAPE[0]} x {SHAPE[1]} (Pilatus 6M), least of {args.rounds} alternated "
              "rounds, ms a frame")
        print(f"{'format':<20} {'braggflow run':>14} {'library':>9} {'ratio':>6}   library read")
        for kind, files in paths.items():
            series = open_frames(files if len(files) > 1 else files[0])
            library, n = library_reader(kind, files)
            buffer = series.read(0).copy()
            ours, theirs = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for i in range(n):
                    buffer = series.read(i, out=buffer)
                ours.append((time.perf_counter() - t0) / n)
                t0 = time.perf_counter()
                for i in range(n):
                    library(i)
                theirs.append((time.perf_counter() - t0) / n)
            for i in range(n):
                if not np.array_equal(series.read(i, out=buffer), library(i)):
                    raise SystemExit(f"{kind}: frame {i} differs between the two reads")
            how = "h5py read_direct (HDF5's filter pipeline)" if kind.startswith("HDF5") else "fabio.open(path).data"
            print(f"{kind:<20} {min(ours) * 1e3:>14.1f} {min(theirs) * 1e3:>9.1f} "
                  f"{min(theirs) / min(ours):>5.2f}x   {how}")


if __name__ == "__main__":
    main()
