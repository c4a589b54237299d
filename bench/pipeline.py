"""Benchmark of the per-frame pipeline on simulated 2048 x 2048 frames with ~100 peaks.

Prints, for each localization method, frames/s on one core, the time of one plain
pass over the same frame (``frame.max()``) measured in the same run and the ratio
of the two, the time of each stage, and the peak resident memory.

    OMP_NUM_THREADS=1 python bench/pipeline.py [--frames 10] [--methods com braggnn]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["com", "braggnn"])
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate
    from braggflow.locate import locate
    from braggflow.pipeline import prepare, process_frame
    from braggflow.pipeline.config import Config
    from braggflow.simulate.frames import simulate_series

    sim = simulate_series(args.frames, n_peaks=100, seed=7)
    frames = sim.frames
    print(f"{len(frames)} simulated frames of {frames.shape[1]}x{frames.shape[2]}, "
          f"{len(sim.truth) / len(frames):.0f} peaks/frame, 1 core")
    t0 = time.perf_counter()
    for f in frames:
        f.max()
    t_max = (time.perf_counter() - t0) / len(frames)
    print(f"plain pass frame.max(): {t_max * 1e3:.2f} ms/frame")
    for method in args.methods:
        config = Config(locate={"method": method})
        ctx = prepare(config, shape=frames.shape[1:], dtype=frames.dtype)
        process_frame(frames[0], config=config, context=ctx)  # warm-up (model load, imports)
        stages = dict(correct=0.0, find=0.0, locate=0.0, integrate=0.0)
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            process_frame(f, config=config, context=ctx, frame_index=i)
        total = (time.perf_counter() - t0) / len(frames)
        for f in frames:  # the same work stage by stage, for the breakdown
            a = time.perf_counter()
            c, m = correct_frame(f, mask=ctx.mask, config=config.correct)
            b = time.perf_counter()
            found = find_peaks(c, mask=m, config=config.find)
            t, lab = found.table, found.labels
            d = time.perf_counter()
            t = locate(c, t, method=method, mask=m, labels=lab, patch_size=config.locate.patch_size,
                       model=config.locate.model)
            e = time.perf_counter()
            integrate(c, t, mask=m, labels=lab)
            g = time.perf_counter()
            stages["correct"] += b - a
            stages["find"] += d - b
            stages["locate"] += e - d
            stages["integrate"] += g - e
        # the rest: saturation map, extended peaks' region centroids, table assembly
        stages["other"] = max(total * len(frames) - sum(stages.values()), 0.0)
        parts = ", ".join(f"{k} {v / len(frames) * 1e3:.1f} ms" for k, v in stages.items())
        print(f"{method:8s}: {1 / total:6.2f} frames/s "
              f"({total * 1e3:.1f} ms/frame = {total / t_max:.0f} x frame.max()); {parts}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
