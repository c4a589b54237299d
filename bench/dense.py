"""Benchmark of the finder and the per-frame pipeline on dense stills (Pilatus 6M).

Frames: ``braggflow.simulate.dense.simulate_dense_series`` (2527 x 2463 px, the
Pilatus 6M module gaps masked and 0; round Gaussian spots of sigma 0.7-1.5 px,
flux 50-5,000 photons log-uniform, new places in every frame; smooth background
1-5 photons/px; Poisson noise), with 100 and with 1,000 spots a frame.

For each spot count it prints, on one core, measured in the same run:

* the CPU time per frame (``time.process_time``: on one core of a quiet machine the
  wall-clock time, and far less changed by other jobs on a busy one) of
  ``braggflow.find.find_peaks`` (on the corrected frame,
  with the pipeline's mask: the detector's gaps found from the frame shape) and of
  ``braggflow.pipeline.process_frame`` (correct, find, locate, integrate; the
  default config), after one warm-up frame;
* recall and precision against the truth, matched one to one within 1.5 px
  (``match_peaks``): recall over the spots whose centre is not in a gap;
  precision = found peaks matched to any true spot (a spot centred in a gap may
  show its tail beside it) / found peaks; for the finder (its position is the
  highest pixel) and for the pipeline (the located centre); recall also for the
  spots of at least 500 photons;

then the time of each stage (correct, find, locate, integrate) called one by one
on the same frames, and the ratio of the times at 1,000 and at 100 spots.  Every
spot count's frames are simulated and processed once untimed first; then
``--repeats N`` rounds each run one timed pass per spot count, the spot counts
in turn (a change of the machine's load weighs on all alike), and the figures
are given twice: each frame's median and each frame's minimum over the N
passes, averaged over the frames (on a busy machine single passes scatter by
tens of per cent; a frame's minimum is its time least slowed by other jobs).

    OMP_NUM_THREADS=1 python bench/dense.py [--frames 4] [--spots 100 1000] [--method com] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, also for NumPy/BLAS
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MATCH_PX = 1.5
BRIGHT = 500.0  # photons: recall is also given for the spots at least this bright


def scores(found: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float, float]:
    """Recall over the spots outside the gaps, the same for those of >= BRIGHT photons, and precision."""
    from braggflow.simulate.frames import match_peaks

    m = match_peaks(found, truth, max_distance=MATCH_PX)
    hit = m["found_index"].to_numpy() >= 0
    t = truth.loc[m["truth_index"]]
    visible = ~t["masked"].to_numpy()
    bright = visible & (t["intensity"].to_numpy() >= BRIGHT)
    return hit[visible].mean(), hit[bright].mean(), hit.sum() / max(len(found), 1)


def prepare_set(n_spots: int, n_frames: int, seed: int, method: str | None) -> dict:
    """The simulated frames of one spot count, their corrected frames, and one untimed pass over them."""
    from braggflow.correct import correct_frame
    from braggflow.pipeline import prepare, process_frame
    from braggflow.pipeline.config import Config
    from braggflow.simulate.dense import simulate_dense_series

    t0 = time.perf_counter()
    sim = simulate_dense_series(n_frames, n_spots, seed=seed)
    t_sim = time.perf_counter() - t0
    frames = sim.frames
    config = Config(locate={"method": method}) if method else Config()
    ctx = prepare(config, shape=frames.shape[1:], dtype=frames.dtype)
    corrected = [correct_frame(f, mask=ctx.mask, config=config.correct) for f in frames]
    # warm-up: every frame once untimed (heap growth to its working size, first calls)
    for f in frames:
        process_frame(f, config=config, context=ctx, frame_index=0)
    return dict(spots=n_spots, sim=sim, t_sim=t_sim, config=config, ctx=ctx, corrected=corrected)


def timed_pass(s: dict) -> tuple[np.ndarray, np.ndarray, dict, list, list]:
    """One timed pass over the frames of a set: CPU s of find_peaks, process_frame and each stage, frame by frame."""
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate
    from braggflow.locate import locate
    from braggflow.pipeline import process_frame

    config, ctx, frames = s["config"], s["ctx"], s["sim"].frames
    n_frames = len(frames)
    lc = config.locate
    found, t_find = [], np.zeros(n_frames)
    for i, (c, m) in enumerate(s["corrected"]):
        a = time.process_time()
        table = find_peaks(c, mask=m, config=config.find).table
        t_find[i] = time.process_time() - a
        found.append(table.assign(frame=i))
    tables, t_proc = [], np.zeros(n_frames)
    for i, f in enumerate(frames):
        a = time.process_time()
        tables.append(process_frame(f, config=config, context=ctx, frame_index=i))
        t_proc[i] = time.process_time() - a
    # the pipeline's stages one by one on the same frames (the breakdown of process_frame)
    stages = {k: np.zeros(n_frames) for k in ("correct", "find", "locate", "integrate")}
    for i, f in enumerate(frames):
        a = time.process_time()
        c, m = correct_frame(f, mask=ctx.mask, config=config.correct)
        b = time.process_time()
        fp = find_peaks(c, mask=m, config=config.find)
        d = time.process_time()
        t = locate(c, fp.table, method=lc.method, mask=m, labels=fp.labels, regions=fp.regions,
                   patch_size=lc.patch_size, model=lc.model)
        e = time.process_time()
        integrate(c, t, mask=m, labels=fp.labels, regions=fp.regions)
        g = time.process_time()
        for k, v in (("correct", b - a), ("find", d - b), ("locate", e - d), ("integrate", g - e)):
            stages[k][i] = v
    return t_find, t_proc, stages, found, tables


def summary(s: dict, runs: list, statistic) -> dict:
    """The figures of one spot count: ``statistic`` (median or min) of each frame's times over the timed passes,
    averaged over the frames, and the scores."""
    sim = s["sim"]
    found, tables = runs[-1][3], runs[-1][4]
    r_find, rb_find, p_find = scores(pd.concat(found, ignore_index=True), sim.truth)
    r_proc, rb_proc, p_proc = scores(pd.concat(tables, ignore_index=True), sim.truth)

    def per_frame(times: list[np.ndarray]) -> float:
        return float(np.mean(statistic(np.stack(times), axis=0)))

    return dict(spots=s["spots"], in_gaps=sim.truth["masked"].mean(), t_sim=s["t_sim"] / len(sim.frames),
                find=per_frame([r[0] for r in runs]), process=per_frame([r[1] for r in runs]),
                found=sum(len(t) for t in found) / len(sim.frames),
                r_find=r_find, rb_find=rb_find, p_find=p_find, r_proc=r_proc, rb_proc=rb_proc, p_proc=p_proc,
                method=s["config"].locate.method,
                stages={k: per_frame([r[2][k] for r in runs]) for k in runs[0][2]})


def bench_all(spots: list[int], n_frames: int, seed: int, method: str | None,
              repeats: int = 1) -> tuple[list[dict], list[dict]]:
    """Every spot count's frames prepared first, then ``repeats`` rounds of one timed pass per spot count.

    The spot counts take turns pass by pass, so that a change of the
    machine's load during the run weighs on all of them alike.  Returns the
    figures with each frame's median and with each frame's minimum over the
    passes.
    """
    sets = [prepare_set(n, n_frames, seed + k, method) for k, n in enumerate(spots)]
    runs = [[] for _ in sets]
    for _ in range(repeats):
        for k, s in enumerate(sets):
            runs[k].append(timed_pass(s))
    return ([summary(s, r, np.median) for s, r in zip(sets, runs)],
            [summary(s, r, np.min) for s, r in zip(sets, runs)])


def report(rows: list[dict], what: str) -> None:
    """Print the table, the stage breakdown and the ratios of one statistic's figures."""
    print(f"{what}:")
    print(f"| spots/frame | in gaps | find_peaks ms/frame | process_frame ms/frame | found/frame "
          f"| finder recall (>= {BRIGHT:.0f} photons) | finder precision | pipeline recall (>= {BRIGHT:.0f} photons) "
          f"| pipeline precision |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['spots']} | {r['in_gaps']:.1%} | {r['find'] * 1e3:.0f} | {r['process'] * 1e3:.0f} "
              f"| {r['found']:.0f} | {r['r_find']:.3f} ({r['rb_find']:.3f}) | {r['p_find']:.3f} "
              f"| {r['r_proc']:.3f} ({r['rb_proc']:.3f}) | {r['p_proc']:.3f} |")
    for r in rows:
        parts = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["stages"].items())
        print(f"{r['spots']} spots, stage by stage: {parts}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['spots']}/{a['spots']} spots: find_peaks {b['find'] / a['find']:.2f}, "
              f"process_frame {b['process'] / a['process']:.2f}; "
              + ", ".join(f"{k} {b['stages'][k] / a['stages'][k]:.2f}" for k in a["stages"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4, help="frames per spot count")
    parser.add_argument("--spots", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--method", default=None, help="locate.method of process_frame (default: the config's)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed passes over the frames of each spot count, the spot counts in turn; the "
                             "figures: each frame's median and minimum over the passes, averaged over the frames")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    medians, minima = bench_all(args.spots, args.frames, args.seed, args.method, args.repeats)
    print(f"dense stills, Pilatus 6M (2527 x 2463), {args.frames} frames per spot count, 1 core, "
          f"{args.repeats} timed pass(es) per spot count, the spot counts in turn, "
          f"locate.method {medians[0]['method']}; match within {MATCH_PX} px; times are CPU time per frame")
    report(medians, f"each frame's median over the {args.repeats} passes, averaged over the frames")
    report(minima, f"each frame's minimum over the {args.repeats} passes, averaged over the frames")
    rows = medians
    print(f"simulation: {np.mean([r['t_sim'] for r in rows]):.2f} s/frame (not part of the timings); "
          f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
