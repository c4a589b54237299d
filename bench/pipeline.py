"""Benchmark of the pipeline on the pinned benchmark frames, in-process and as a user runs it.

Frames: ``braggflow.simulate.frames.benchmark_series`` (24 frames of 2048 x 2048,
100 round Gaussian spots a frame, sigma 0.8-2.0 px, flux 2,000-50,000 photons
log-uniform, 30 % of them in close pairs 3-6 px apart, flat background of 50
photons/px, Poisson noise; the same frames as ``braggflow simulate --benchmark``).

For each localization method it prints, all measured in the same run, on one core:

* the per-frame pipeline (``braggflow.pipeline.process_frame``) in this process:
  frames/s after the first frame (the first frame loads models and warms caches),
  the time of one plain pass over a frame (``frame.max()``) and the ratio of the
  two, the CPU time per frame (``time.process_time``: the wall clock's on a quiet
  core, far less changed by other jobs on a busy machine) and that of each stage;
* the whole process as a user calls it: the frames written once to a NeXus file in
  a temporary folder (``write_nexus``, as ``braggflow simulate --benchmark`` does),
  then ``braggflow run FILE -o RESULTS --method M`` in a subprocess with
  ``OMP_NUM_THREADS=1``: frames/s after the first frame (printed by ``run``:
  reading the frames and writing the results included), the process's wall time
  (start-up included), and the ratio in-process / whole-process;
* the time to read one frame of the NeXus file into a new array, into a reused
  buffer (``FrameSeries.read(i, out=buffer)``, what ``braggflow run`` does: the
  bitshuffle-LZ4 chunks decompressed straight into it) and into the buffer
  through HDF5's filter pipeline (h5py's ``read_direct``);
* recall and precision of the peaks found against the truth (matched one to one
  within 1.5 px, ``match_peaks``), for all true peaks and for the members of close
  pairs, in-process and from the results file;

and the peak resident memory of this process.

    OMP_NUM_THREADS=1 python bench/pipeline.py [--frames 24] [--methods com nn] [--no-process]

A method may carry options after ``+``: ``deblend`` (``locate.deblend: true``) and
``profile`` (``integrate.method: profile``), e.g. ``--methods com gauss+deblend+profile``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, also for NumPy/BLAS
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MATCH_PX = 1.5


def scores(found: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Recall (all true peaks, pair members), precision, median distance of the matches (px)."""
    from braggflow.simulate.frames import match_peaks

    m = match_peaks(found, truth, max_distance=MATCH_PX)
    hit = m["found_index"].to_numpy() >= 0
    in_pair = truth.loc[m["truth_index"], "partner"].to_numpy() >= 0
    return dict(recall=hit.mean(), recall_pairs=hit[in_pair].mean(), recall_single=hit[~in_pair].mean(),
                precision=hit.sum() / max(len(found), 1), median_px=float(np.nanmedian(m["distance"])),
                found=len(found))


def fmt(s: dict) -> str:
    return (f"recall {s['recall']:.3f} (pair members {s['recall_pairs']:.3f}, single {s['recall_single']:.3f}), "
            f"precision {s['precision']:.3f}, median distance {s['median_px']:.3f} px, {s['found']} found")


def parse_method(entry: str) -> tuple[str, dict]:
    """``METHOD[+deblend][+profile]`` -> (method, the configuration's sections beyond the method)."""
    method, *options = entry.split("+")
    unknown = set(options) - {"deblend", "profile"}
    if unknown:
        raise SystemExit(f"unknown option(s) {', '.join(sorted(unknown))} in {entry!r}: use deblend, profile")
    return method, {"locate": {"method": method, "deblend": "deblend" in options},
                    "integrate": {"method": "profile" if "profile" in options else "sum"}}


def run_arguments(entry: str) -> list[str]:
    """``braggflow run`` arguments of an entry: ``--method`` and a ``--set`` for each option."""
    method, *options = entry.split("+")
    sets = {"deblend": "locate.deblend=true", "profile": "integrate.method=profile"}
    return ["--method", method, *(item for option in options for item in ("--set", sets[option]))]


def in_process(frames: np.ndarray, entry: str, t_max: float) -> tuple[float, pd.DataFrame]:
    """Time process_frame after the first frame, and stage by stage; return (s/frame, peak table)."""
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate
    from braggflow.locate import locate
    from braggflow.pipeline import prepare, process_frame
    from braggflow.pipeline.config import Config

    method, sections = parse_method(entry)
    config = Config(**sections)
    ctx = prepare(config, shape=frames.shape[1:], dtype=frames.dtype)
    tables = [process_frame(frames[0], config=config, context=ctx, frame_index=0)]  # first frame: model load, imports
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, len(frames)):
        tables.append(process_frame(frames[i], config=config, context=ctx, frame_index=i))
    n = len(frames) - 1
    total = (time.perf_counter() - t0) / n
    cpu = (time.process_time() - c0) / n
    stages = dict(correct=0.0, find=0.0, locate=0.0, integrate=0.0)
    for f in frames[1:]:  # the same work stage by stage, for the breakdown (CPU time)
        a = time.process_time()
        c, m = correct_frame(f, mask=ctx.mask, config=config.correct)
        b = time.process_time()
        found = find_peaks(c, mask=m, config=config.find)
        t, lab = found.table, found.labels
        d = time.process_time()
        t = locate(c, t, method=method, mask=m, labels=lab, patch_size=config.locate.patch_size,
                   model=config.locate.model, deblend=config.locate.deblend)
        e = time.process_time()
        integrate(c, t, mask=m, labels=lab, method=config.integrate.method)
        g = time.process_time()
        stages["correct"] += b - a
        stages["find"] += d - b
        stages["locate"] += e - d
        stages["integrate"] += g - e
    # the rest: saturation map, extended peaks' region centroids, table assembly
    stages["other"] = max(cpu * n - sum(stages.values()), 0.0)
    parts = ", ".join(f"{k} {v / n * 1e3:.1f} ms" for k, v in stages.items())
    print(f"  per-frame pipeline, in this process: {1 / total:6.2f} frames/s after the first frame "
          f"({total * 1e3:.1f} ms/frame = {total / t_max:.0f} x frame.max()); CPU time {cpu * 1e3:.1f} ms/frame "
          f"({1 / cpu:.2f} frames/s of CPU, the wall clock's rate on a quiet core), stage by stage: {parts}")
    return total, pd.concat(tables, ignore_index=True)


def read_times(nexus: Path, rounds: int = 3) -> tuple[float, float, float]:
    """Seconds per frame to read the NeXus file's frames: into new arrays (``series[i]``), into one buffer (the
    chunks decompressed by bitshuffle straight into it), and into one buffer through HDF5's filter pipeline
    (h5py's ``read_direct``); the least of ``rounds`` rounds, the three alternated in each."""
    import h5py

    from braggflow.io.frames import open_frames

    series = open_frames(str(nexus))
    buffer = series.read(0)
    fresh, reused, pipeline = [], [], []
    with h5py.File(nexus, "r", locking=False) as h5:
        data = h5["/entry/data/data"]
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(1, len(series)):
                series[i]
            fresh.append((time.perf_counter() - t0) / (len(series) - 1))
            t0 = time.perf_counter()
            for i in range(1, len(series)):
                buffer = series.read(i, out=buffer)
            reused.append((time.perf_counter() - t0) / (len(series) - 1))
            t0 = time.perf_counter()
            for i in range(1, len(series)):
                data.read_direct(buffer, np.s_[i])
            pipeline.append((time.perf_counter() - t0) / (len(series) - 1))
    return min(fresh), min(reused), min(pipeline)


def whole_process(nexus: Path, method: str, folder: Path) -> tuple[float, float, pd.DataFrame]:
    """``braggflow run`` in a subprocess on one core; return (frames/s after the first frame, wall s, peaks)."""
    from braggflow.io.results import read_peaks

    exe = shutil.which("braggflow")
    cmd = [exe] if exe else [sys.executable, "-c", "from braggflow.cli import main; main()"]
    results = folder / f"results-{method.replace('+', '-')}.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "run", str(nexus), "-o", str(results), *run_arguments(method), "--overwrite"],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"braggflow run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = " ".join(proc.stdout.split())
    match = re.search(r"([\d.]+) after the first frame", line)
    rate = float(match.group(1)) if match else float("nan")
    return rate, wall, read_peaks(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="benchmark frames (at least 3)")
    parser.add_argument("--methods", nargs="+", default=["com", "nn"])
    parser.add_argument("--no-process", action="store_true", help="skip the braggflow run subprocess")
    args = parser.parse_args()
    if args.frames < 3:
        parser.error("--frames must be at least 3")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from braggflow.simulate.frames import BENCHMARK_SEED, benchmark_series, write_nexus

    t0 = time.perf_counter()
    sim = benchmark_series(args.frames)
    frames = sim.frames
    t_sim = time.perf_counter() - t0
    truth = sim.truth
    print(f"benchmark_series({args.frames}) (seed {BENCHMARK_SEED}): {len(frames)} frames of "
          f"{frames.shape[1]}x{frames.shape[2]}, {len(truth) / len(frames):.0f} peaks/frame "
          f"({(truth['partner'] >= 0).mean():.0%} in close pairs), simulated in {t_sim:.1f} s; 1 core")
    t0 = time.perf_counter()
    for f in frames:
        f.max()
    t_max = (time.perf_counter() - t0) / len(frames)
    print(f"plain pass frame.max(): {t_max * 1e3:.2f} ms/frame")
    with tempfile.TemporaryDirectory(prefix="braggflow-bench-") as tmp:
        folder = Path(tmp)
        nexus = folder / "benchmark.h5"
        if not args.no_process:
            t0 = time.perf_counter()
            write_nexus(nexus, sim)
            print(f"wrote {nexus.name} ({nexus.stat().st_size / 2**20:.0f} MiB, bitshuffle-LZ4) "
                  f"in {time.perf_counter() - t0:.1f} s")
            fresh, reused, pipeline = read_times(nexus)
            print(f"reading a frame: {fresh * 1e3:.1f} ms into a new array, {reused * 1e3:.1f} ms into one buffer "
                  f"(series.read(i, out=buffer), as braggflow run does), {pipeline * 1e3:.1f} ms through HDF5's "
                  "filter pipeline (h5py read_direct into the buffer); least of 3 alternated rounds")
        for method in args.methods:
            print(f"{method}:")
            per_frame, table = in_process(frames, method, t_max)
            print(f"  in-process peaks: {fmt(scores(table, truth))}")
            if args.no_process:
                continue
            rate, wall, peaks = whole_process(nexus, method, folder)
            print(f"  braggflow run (subprocess, OMP_NUM_THREADS=1): {rate:6.2f} frames/s after the first frame, "
                  f"process wall time {wall:.1f} s for {len(frames)} frames; "
                  f"in-process / run rate = {(1 / per_frame) / rate:.2f}")
            print(f"  braggflow run peaks: {fmt(scores(peaks, truth))}")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
