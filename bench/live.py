"""Live-mode benchmark: can ``braggflow watch`` keep up with a detector?

A writer process imitates a detector: it replays 2048 x 2048 frames with about
100 peaks, simulated beforehand (``braggflow.simulate.frames.simulate_series``)
and encoded once, so writing costs it little CPU.  It writes them at a set rate

- into a folder, one uint16 TIFF per frame (written in place, not renamed, as
  many detector servers do), or
- into one HDF5 file in SWMR mode (resize, write, flush per frame),

and records when each frame was complete.  ``braggflow.pipeline.watch.watch``
runs in this process at the same time.  For each source and localization
method the benchmark prints

- the throughput of watch on a folder/file that is already full (frames/s),
- the highest rate of a ladder that watch keeps up with: over the trial the
  latency (frame complete -> results journaled) grows by less than
  max(0.5 s, two frame periods), i.e. the backlog does not grow,
- the median and 95th-percentile latency at 5 frames/s.

All figures come from the same run on the same machine.  Run from the
repository root, e.g. pinned to two cores::

    taskset -c 0,1 python bench/live.py --methods com braggnn --sources folder swmr
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

LADDER = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 20.0)


# --------------------------------------------------------------------------- the detector


def _encode_tiffs(frames: np.ndarray) -> list[bytes]:
    from fabio.tifimage import TifImage

    out = []
    for frame in frames:
        with tempfile.NamedTemporaryFile(suffix=".tif") as tmp:
            TifImage(data=frame).write(tmp.name)
            out.append(Path(tmp.name).read_bytes())
    return out


def writer_main(kind: str, frames_path: str, target: str, rate: float, n: int, log_path: str, ready, go) -> None:
    """Child process: write ``n`` frames at ``rate`` frames/s (inf: at once); log completion times."""
    frames = np.load(frames_path)
    payloads = _encode_tiffs(frames) if kind == "folder" else None
    h5 = ds = None
    if kind == "swmr":
        import h5py

        h5 = h5py.File(target, "w", libver="latest")
        ds = h5.create_dataset("/entry/data/data", shape=(0, *frames.shape[1:]), maxshape=(None, *frames.shape[1:]),
                               chunks=(1, *frames.shape[1:]), dtype=frames.dtype)
        h5.swmr_mode = True
    ready.set()
    go.wait()
    t0 = time.time() + 0.2
    done = []
    for i in range(n):
        if np.isfinite(rate):
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        if kind == "folder":
            with open(Path(target) / f"frame_{i:05d}.tif", "wb") as fh:
                fh.write(payloads[i % len(payloads)])
        else:
            ds.resize(i + 1, axis=0)
            ds[i] = frames[i % len(frames)]
            ds.flush()
        done.append(time.time())
    if h5 is not None:
        h5.close()
    Path(log_path).write_text(json.dumps(done))


# --------------------------------------------------------------------------- one trial


def trial(kind: str, method: str, rate: float, n: int, frames_path: Path, work: Path, *, prefill: bool = False,
          workers: int = 0) -> dict:
    """Run writer and watch together; return latencies and whether watch kept up."""
    from braggflow.pipeline.config import Config
    from braggflow.pipeline.watch import watch

    for p in work.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    target = work / ("detector" if kind == "folder" else "scan.h5")
    if kind == "folder":
        target.mkdir()
    log_path = work / "writer.json"
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=writer_main, args=(kind, str(frames_path), str(target), float("inf") if prefill else rate,
                                                   n, str(log_path), ready, go))
    proc.start()
    ready.wait(120)
    config = Config(locate={"method": method})
    started = threading.Event()
    if prefill:  # the source is full before the watch starts
        go.set()
        proc.join()
    else:  # the detector starts once the watch is ready, as at a beamline
        threading.Thread(target=lambda: (started.wait(), go.set()), daemon=True).start()
    start = time.time()
    result = watch(target, work / "results.h5", config=config, idle_timeout=10.0, poll_interval=0.02, max_frames=n,
                   workers=workers, started=started)
    elapsed = time.time() - start
    proc.join()
    complete = np.asarray(json.loads(log_path.read_text()))
    log = result.frames.sort_values("frame")
    written = log["t_written"].to_numpy()
    frames = log["frame"].to_numpy()
    latency = written - complete[frames]
    out = {"kind": kind, "method": method, "workers": workers, "rate": rate, "frames": int(len(log)),
           "elapsed_s": elapsed,
           "latency_median_s": float(np.median(latency)), "latency_p95_s": float(np.percentile(latency, 95)),
           "latency_max_s": float(latency.max()), "max_backlog": int(log["backlog"].max()),
           "process_median_s": float(log["process_s"].median())}
    if prefill:
        span = written.max() - written.min()
        out["throughput_fps"] = (len(log) - 1) / span if span > 0 else float("nan")
    else:
        k = max(3, len(latency) // 4)
        growth = float(np.median(latency[-k:]) - np.median(latency[:k]))
        out["latency_growth_s"] = growth
        out["keeps_up"] = bool(len(log) == n and growth < max(0.5, 2.0 / rate))
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["com", "braggnn"])
    parser.add_argument("--sources", nargs="+", default=["folder", "swmr"], choices=["folder", "swmr"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0], help="watch worker processes (0: in process)")
    parser.add_argument("--frames", type=int, default=40, help="frames per trial")
    parser.add_argument("--distinct", type=int, default=8, help="distinct simulated frames, replayed in turn")
    parser.add_argument("--peaks", type=int, default=100, help="peaks per frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write every trial as JSON")
    args = parser.parse_args(argv)

    from braggflow.simulate.frames import simulate_series

    work_root = Path(tempfile.mkdtemp(prefix="braggflow-live-", dir=args.workdir))
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}; cores available: {len(os.sched_getaffinity(0))}; "
              f"simulating {args.distinct} frames of 2048 x 2048 "
              f"with ~{args.peaks} peaks ...", flush=True)
        sim = simulate_series(args.distinct, n_peaks=args.peaks, seed=args.seed)
        frames_path = work_root / "frames.npy"
        np.save(frames_path, np.clip(sim.frames, 0, 65535).astype(np.uint16))
        work = work_root / "trial"
        work.mkdir()
        trials = []
        summary = []
        combos = [(k, m, w) for k in args.sources for m in args.methods for w in args.workers]
        for kind, method, workers in combos:
            tag = f"[{kind:6s} {method:7s} w={workers}]"
            run = partial(trial, kind, method, n=args.frames, frames_path=frames_path, work=work, workers=workers)
            full = run(0.0, prefill=True)
            trials.append(full)
            throughput = full["throughput_fps"]
            print(f"{tag} throughput on a full source: {throughput:.1f} frames/s "
                  f"(process {full['process_median_s'] * 1e3:.0f} ms/frame)", flush=True)
            at5 = run(5.0)
            trials.append(at5)
            print(f"{tag} at 5 frames/s: latency median {at5['latency_median_s']:.3f} s, "
                  f"p95 {at5['latency_p95_s']:.3f} s, growth {at5['latency_growth_s']:+.3f} s, "
                  f"keeps up: {at5['keeps_up']}", flush=True)
            best = 5.0 if at5["keeps_up"] else None
            ladder = [r for r in LADDER if r <= 1.25 * throughput and r != 5.0]
            up = [r for r in ladder if r > 5.0] if at5["keeps_up"] else []
            down = [r for r in reversed(ladder) if r < 5.0] if not at5["keeps_up"] else []
            for r in up:  # climb while it keeps up
                t = run(r)
                trials.append(t)
                print(f"{tag} at {r:g} frames/s: latency median {t['latency_median_s']:.3f} s, "
                      f"growth {t['latency_growth_s']:+.3f} s, keeps up: {t['keeps_up']}", flush=True)
                if not t["keeps_up"]:
                    break
                best = r
            for r in down:  # descend until it keeps up
                t = run(r)
                trials.append(t)
                print(f"{tag} at {r:g} frames/s: keeps up: {t['keeps_up']}", flush=True)
                if t["keeps_up"]:
                    best = r
                    break
            summary.append((kind, method, workers, throughput, best, at5["latency_median_s"], at5["latency_p95_s"]))
        print("\nsource  method   workers  throughput(full)  highest rate kept up  latency@5fps median  p95")
        for kind, method, workers, throughput, best, med, p95 in summary:
            best_text = f"{best:g} frames/s" if best is not None else f"< {min(LADDER):g} frames/s"
            print(f"{kind:7s} {method:8s} {workers:7d} {throughput:9.1f} fps     {best_text:>18s}   "
                  f"{med:14.3f} s  {p95:6.3f} s")
        print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the machine compete for its cores)")
        if args.json is not None:
            args.json.write_text(json.dumps(trials, indent=1))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
