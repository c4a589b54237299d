"""Does the Dask path pay off?  ``braggflow run`` serial against ``--workers N``, whole process, as a user runs it.

The input is 600 frames of 1024 x 1024 with about 50 peaks each: ten distinct
frames simulated by ``braggflow simulate`` and repeated (their compressed
chunks copied as they are, so the file is the size of a real 600-frame
bitshuffle-LZ4 file).  Each configuration is run as its own ``braggflow run``
process, timed from start to exit (imports, start-up, series statistics,
results file and all), alternating serial and parallel runs ``--repeat``
times; the figures are the medians, and the ratios are of runs made in the
same invocation.  The peak counts of the runs must agree.  It also prints
what bounds the ratio: the part of a serial run that is not frames (its wall
time less the frames after the first at the rate the run printed) and the
local cluster's own start (measured in a fresh process that has imported the
pipeline); with those and the frames split evenly over the workers, the ratio
cannot exceed the printed bound.

Run from the repository root on a quiet machine (``uptime`` below ~1)::

    python bench/scale.py --frames 600 --workers 2 --repeat 3

``--compare SRC`` adds runs of another source tree (``PYTHONPATH=SRC``,
e.g. ``git archive COMMIT src | tar -x -C /tmp/before``) to each repeat, a
serial one and one for each ``--workers`` N, so that two versions are measured
alternately in one invocation.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_input(folder: Path, frames: int, distinct: int = 10, shape: int = 1024, peaks: int = 50) -> Path:
    """``frames`` frames of ``shape`` x ``shape``: ``distinct`` simulated ones, repeated in order."""
    import h5py
    import hdf5plugin

    small = folder / "distinct.h5"
    subprocess.run([sys.executable, "-m", "braggflow", "simulate", str(small), "--frames", str(distinct),
                    "--shape", str(shape), str(shape), "--peaks", str(peaks)], check=True, capture_output=True)
    path = folder / f"frames{frames}.h5"
    with h5py.File(small) as src, h5py.File(path, "w") as dst:
        data = src["/entry/data/data"]
        chunks = [data.id.read_direct_chunk((k, 0, 0)) for k in range(distinct)]
        entry = dst.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default="data")
        group = entry.create_group("data")
        group.attrs.update(NX_class="NXdata", signal="data")
        out = group.create_dataset("data", shape=(frames, shape, shape), dtype=data.dtype, chunks=(1, shape, shape),
                                   **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        for k in range(frames):
            mask, chunk = chunks[k % distinct]
            out.id.write_direct_chunk((k, 0, 0), chunk, mask)
        detector = entry.create_group("instrument").create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["pixel_mask"] = src["/entry/instrument/detector/pixel_mask"][()]
    small.unlink()
    return path


def timed_run(source: Path, out: Path, extra: list[str],
              src: Path | None = None) -> tuple[float, float, int, float]:
    """Wall seconds of one whole ``braggflow run`` process, the CPU seconds of it and its workers, its peaks, and
    the frames/s after the first frame it printed (NaN where it printed none: runs on workers).

    ``src``: a source tree to run instead of the installed braggflow (``PYTHONPATH``).
    """
    import resource

    from braggflow.io.results import read_frames

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(src)) if src is not None else None
    done = subprocess.run([sys.executable, "-m", "braggflow", "run", str(source), "-o", str(out), "--overwrite",
                           *extra], check=True, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    steady = re.search(r"([0-9.]+) after the first frame", done.stdout + done.stderr)
    return seconds, cpu, int(read_frames(out)["n_peaks"].sum()), float(steady.group(1)) if steady else float("nan")


def cluster_start_seconds(workers: int) -> float:
    """Seconds a fresh process that has imported the pipeline takes to import Dask's distributed, start the
    local cluster of ``workers`` processes the runs use and get a first task's result (median of 3)."""
    code = ("import time, braggflow.pipeline\n"
            "from braggflow.pipeline.cluster import local_cluster\n"
            "if __name__ == '__main__':\n"
            "    t = time.perf_counter()\n"
            f"    cluster = local_cluster({workers})\n"
            "    from dask.distributed import Client\n"
            "    client = Client(cluster)\n"
            "    client.submit(abs, -1).result()\n"
            "    print(time.perf_counter() - t)\n"
            "    client.close(); cluster.close()\n")
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                  .stdout.split()[-1]) for _ in range(3)]
    return float(np.median(runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="folder for the input and results (default: a temporary one)")
    parser.add_argument("--compare", type=Path, help="source tree of another version: a serial run of it too")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="braggflow-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        source = make_input(folder, args.frames)
        size = source.stat().st_size
        print(f"input: {args.frames} frames of 1024 x 1024, ~50 peaks each, {size / args.frames / 1e6:.2f} MB/frame "
              f"stored (bitshuffle-LZ4); {os.cpu_count()} cores; load before: {os.getloadavg()[0]:.2f}")
        configs = [("serial", [])] + [(f"--workers {n}", ["--workers", str(n)]) for n in args.workers]
        if args.compare is not None:
            configs += [("serial other", [])] + [(f"-w {n} other", ["--workers", str(n)]) for n in args.workers]
        times: dict[str, list[float]] = {name: [] for name, _ in configs}
        cpus: dict[str, list[float]] = {name: [] for name, _ in configs}
        peaks: dict[str, set[int]] = {name: set() for name, _ in configs}
        steady: list[float] = []  # the serial runs' frames/s after the first frame
        for rep in range(args.repeat):
            for name, extra in configs:
                seconds, cpu, n, rate = timed_run(source, folder / "R.h5", extra,
                                                  args.compare if name.endswith(" other") else None)
                if name == "serial":
                    steady.append(rate)
                times[name].append(seconds)
                cpus[name].append(cpu)
                peaks[name].add(n)
                print(f"  repeat {rep + 1}: {name:12s} {seconds:6.2f} s  {args.frames / seconds:6.1f} frames/s  "
                      f"CPU {cpu:6.1f} s  {n} peaks  (load {os.getloadavg()[0]:.2f})", flush=True)
        serial = float(np.median(times["serial"]))
        print(f"\n{'run':14s} {'median s':>9s} {'frames/s':>9s} {'x serial':>9s}  (whole process, median of "
              f"{args.repeat})")
        for name, _ in configs:
            t = float(np.median(times[name]))
            pairs = [s / p for s, p in zip(times["serial"], times[name])]
            print(f"{name:14s} {t:9.2f} {args.frames / t:9.1f} {serial / t:9.2f}  (per repeat: "
                  + ", ".join(f"{r:.2f}" for r in pairs) + ")")
        print("CPU seconds (the run's process and its workers; on a machine of its own, wall >= CPU / cores):")
        for name, _ in configs:
            c = float(np.median(cpus[name]))
            print(f"  {name:14s} {c:7.1f} s CPU, {c / args.frames * 1e3:.1f} ms per frame")
        if args.compare is not None:
            print(f"other: {args.compare}")
        # what bounds the ratio: the part of a serial run that is not frames, and the cluster's own start
        t_frame = 1.0 / float(np.median(steady))
        fixed = serial - (args.frames - 1) * t_frame
        print(f"serial run: {t_frame * 1e3:.1f} ms a frame after the first (median of its printed rates), the "
              f"rest {fixed:.2f} s (imports, numba's start, statistics, first frame, file, exit)")
        for n in args.workers:
            start = cluster_start_seconds(n)
            bound = serial / (fixed + start + (args.frames - 1) * t_frame / n)
            print(f"  --workers {n}: the local cluster starts in {start:.2f} s; with the serial run's rest and frames "
                  f"split evenly, no other cost, the ratio is at most {bound:.2f}")
        counts = set().union(*peaks.values())
        print(f"peaks written: {sorted(counts)} ({'the same in every run' if len(counts) == 1 else 'DIFFERENT'})")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
