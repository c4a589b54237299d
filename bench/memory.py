"""Does memory stay bounded?  Peak RSS of whole ``braggflow run`` processes against the frames run, and snapshot times.

Two measurements, each for the source tree given (``--src``; default the
installed braggflow), so that two commits can be compared in one invocation:

1. **Peak RSS of a whole run.**  ``braggflow run`` of N frames of 256 x 256
   with about 30 peaks each (ten distinct frames simulated by ``braggflow
   simulate`` and repeated, as in ``bench/scale.py``), for each N of
   ``--frames``; each run is the only child of a fresh Python process, which
   reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the run's peak
   resident set, kB on Linux).  The growth from the smallest to the largest N
   is what bounded memory keeps small (the target: at most 40 MB from 300 to
   3,000 frames).
2. **Snapshot time against the file's size.**  A
   :class:`braggflow.io.results.ResultsWriter` is fed synthetic frames of
   30 peaks; after 300, 1,000, 3,000 and 10,000 frames one snapshot (the
   rewrite of the HDF5 file every ``snapshot_seconds`` of a run) is timed
   (CPU seconds of this process, ``time.process_time``, median of 3) and the
   final close too.

3. **The dashboard's view of a results file.**  Results files of N frames
   of 50 peaks (q known; ``--view-frames``) are written with this tree, then a
   fresh process of the tree measured makes a
   :class:`braggflow.dashboard.ResultsView` and updates it once (all frames new)
   and once more (no new frame): the memory Python allocated at the peak of the
   update and still held after it (``tracemalloc``), and the CPU seconds.

Run from the repository root (``uptime`` below ~1 for the times)::

    python bench/memory.py --frames 300 3000
    mkdir /tmp/other && git archive COMMIT src | tar -x -C /tmp/other
    python bench/memory.py --src /tmp/other/src   # the same for another commit
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import make_input  # noqa: E402  (bench/ is not a package)

#: runs one command as the only child of this process and prints its peak RSS (kB) as JSON
_RSS = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(json.dumps({'rss_kB': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "'seconds': time.perf_counter() - t}))")


def _env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def run_rss(source: Path, out: Path, frames: int, src: Path | None) -> dict:
    """Peak RSS (kB) and wall seconds of ``braggflow run SOURCE --frames 0:N`` as one whole process."""
    cmd = [sys.executable, "-c", _RSS, sys.executable, "-m", "braggflow", "run", str(source), "-o", str(out),
           "--overwrite", "--frames", f"0:{frames}"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env(src))
    record = json.loads(done.stdout.strip().splitlines()[-1])
    check = subprocess.run([sys.executable, "-c", "import sys, braggflow.io.results as r; "
                            "t = r.read_frames(sys.argv[1]); print(len(t), int(t['n_peaks'].sum()))", str(out)],
                           check=True, capture_output=True, text=True, env=_env(src))
    n_frames, n_peaks = (int(v) for v in check.stdout.split())
    return {**record, "frames": n_frames, "peaks": n_peaks}


def snapshot_times(folder: Path, marks: list[int], peaks: int = 30, repeat: int = 3) -> list[dict]:
    """CPU seconds of one snapshot of a writer holding each of ``marks`` frames of ``peaks`` peaks, and of close."""
    from braggflow.io.results import ResultsWriter
    from braggflow.schema import new_peak_table

    rng = np.random.default_rng(0)
    writer = ResultsWriter(folder / "snap.h5", sources=[], overwrite=True, snapshot_seconds=1e9, flush_frames=8)
    rows = []
    done = 0
    for mark in marks:
        while done < mark:
            table = new_peak_table(peaks, row=rng.uniform(0, 255, peaks), col=rng.uniform(0, 255, peaks),
                                   intensity=rng.uniform(100, 1e4, peaks))
            writer.add(done, table, {"n_peaks": peaks})
            done += 1
        writer.flush()
        spent = []
        for _ in range(repeat):
            t0 = time.process_time()
            writer.snapshot()
            spent.append(time.process_time() - t0)
        rows.append({"frames": mark, "peaks": mark * peaks, "snapshot_s": float(np.median(spent)),
                     "file_MB": (folder / "snap.h5").stat().st_size / 1e6})
    t0 = time.process_time()
    writer.close()
    rows.append({"frames": done, "peaks": done * peaks, "close_s": time.process_time() - t0,
                 "file_MB": (folder / "snap.h5").stat().st_size / 1e6})
    return rows


def write_results(path: Path, frames: int, peaks: int = 50, batch: int = 200) -> None:
    """A finished results file: ``frames`` frames of ``peaks`` peaks (row, col, q uniform), journaled by batch."""
    import pandas as pd

    from braggflow.io.results import ResultsWriter
    from braggflow.schema import conform

    rng = np.random.default_rng(1)
    writer = ResultsWriter(path, sources=[], overwrite=True)
    for start in range(0, frames, batch):
        indices = np.arange(start, min(frames, start + batch))
        n = peaks * indices.size
        table = conform(pd.DataFrame({"frame": np.repeat(indices, peaks), "row": rng.uniform(0, 1023, n),
                                      "col": rng.uniform(0, 1023, n), "intensity": rng.uniform(1, 100, n),
                                      "q": rng.uniform(0.2, 4.0, n)}))
        writer.add_frames(indices, table, {"n_peaks": np.full(indices.size, peaks)})
    writer.close()


def view_memory(path: Path) -> dict:
    """Peak and held memory (tracemalloc, MB) and CPU seconds of a dashboard view's first and second update."""
    import tracemalloc

    import braggflow.io.results  # noqa: F401  (imported before the measurement)
    from braggflow.dashboard import ResultsView

    view = ResultsView(path)
    tracemalloc.start()
    t0 = time.process_time()
    view.update()
    first_s = time.process_time() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0 = time.process_time()
    view.update()
    again_s = time.process_time() - t0
    again_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"first_s": first_s, "peak_MB": peak / 1e6, "held_MB": held / 1e6, "again_s": again_s,
            "again_peak_MB": again_peak / 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--marks", type=int, nargs="+", default=[300, 1000, 3000, 10000],
                        help="frames held at each timed snapshot")
    parser.add_argument("--src", type=Path, help="source tree to measure (PYTHONPATH), e.g. a git worktree's src")
    parser.add_argument("--keep", type=Path, help="folder for the input and results (default: a temporary one)")
    parser.add_argument("--view-frames", type=int, nargs="+", default=[2000, 20000],
                        help="frames of 50 peaks in the results files the dashboard's view reads")
    parser.add_argument("--snapshots-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--view-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.view_only is not None:  # in a process of the tree measured
        print(json.dumps(view_memory(args.view_only)))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="braggflow-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if args.snapshots_only:  # in a process of the tree measured
            print(json.dumps(snapshot_times(folder, args.marks)))
            return
        import braggflow

        where = args.src or Path(braggflow.__file__).parents[1]
        print(f"source tree: {where}; {os.cpu_count()} cores; load before: {os.getloadavg()[0]:.2f}")
        source = make_input(folder, max(args.frames), shape=256, peaks=27)
        print(f"input: {max(args.frames)} frames of 256 x 256 (ten distinct, repeated), ~30 peaks each")
        print(f"\n{'frames':>7s} {'peaks':>8s} {'peak RSS MB':>12s} {'wall s':>8s}  (whole braggflow run process)")
        results = []
        for n in sorted(args.frames):
            r = run_rss(source, folder / "R.h5", n, args.src)
            results.append(r)
            print(f"{r['frames']:7d} {r['peaks']:8d} {r['rss_kB'] / 1024:12.1f} {r['seconds']:8.1f}", flush=True)
        growth = (results[-1]["rss_kB"] - results[0]["rss_kB"]) / 1024
        print(f"peak RSS growth {results[0]['frames']} -> {results[-1]['frames']} frames: {growth:+.1f} MB "
              f"({growth * 1024 / max(results[-1]['peaks'] - results[0]['peaks'], 1) * 1024:.0f} bytes per "
              "added peak)")
        done = subprocess.run([sys.executable, __file__, "--snapshots-only", "--keep", str(folder / "snap"),
                               "--marks", *map(str, args.marks)], check=True, capture_output=True, text=True,
                              env=_env(args.src))
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\n{'frames':>7s} {'peaks':>8s} {'snapshot CPU s':>15s} {'file MB':>8s}  (ResultsWriter.snapshot, "
              "median of 3)")
        for r in rows:
            if "snapshot_s" in r:
                print(f"{r['frames']:7d} {r['peaks']:8d} {r['snapshot_s']:15.3f} {r['file_MB']:8.2f}")
        close = rows[-1]
        print(f"close (final file) at {close['frames']} frames: {close['close_s']:.2f} s CPU, "
              f"{close['file_MB']:.2f} MB")
        first, last = rows[0], rows[-2]
        print(f"snapshot time ratio {last['frames']} / {first['frames']} frames: "
              f"{last['snapshot_s'] / max(first['snapshot_s'], 1e-9):.2f}")
        print(f"\n{'frames':>7s} {'peaks':>9s} {'peak MB':>8s} {'held MB':>8s} {'CPU s':>6s} {'again s':>8s} "
              f"{'again peak MB':>14s}  (dashboard ResultsView.update, tracemalloc)")
        for n in args.view_frames:
            path = folder / f"view{n}.h5"
            write_results(path, n)
            done = subprocess.run([sys.executable, __file__, "--view-only", str(path)], check=True,
                                  capture_output=True, text=True, env=_env(args.src))
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{n:7d} {n * 50:9d} {r['peak_MB']:8.1f} {r['held_MB']:8.1f} {r['first_s']:6.2f} "
                  f"{r['again_s']:8.3f} {r['again_peak_MB']:14.1f}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
