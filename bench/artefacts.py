"""Zingers, hot pixels and a powder ring on the demo's simulated series: what the pipeline reports.

Simulates the demo's series (2048 x 2048, ~100 peaks a frame), adds 50 zingers a
frame (events of 1-4 pixels at 5-100 x the noise), 20 hot pixels (saturated,
moderate and flickering) and optionally a powder ring
(:func:`braggflow.simulate.artefacts.add_artefacts`), and runs
:func:`braggflow.pipeline.run` on both series as a user would (default config).
Prints recall and precision against the true peaks with and without the
artefacts, whether every hot pixel and no ring pixel is in the hot-pixel map,
and the zinger events that leave a false peak within 2 px of one of their
pixels, with the shape test of :mod:`braggflow.find.spot_shape` and, in the
same run, with the ring test alone.  Without a ring (the default) precision
counts every peak; with ``--ring``, peaks whose region lies on the ring are not
counted (a ring is signal, not a Bragg spot, and has no truth).

With ``--shape-calibration`` it prints instead how often the shape statistic
of :mod:`braggflow.find.spot_shape` exceeds its threshold for the small
regions (at most 4 pixels) of faint real spots: round Gaussian spots of width
0.7-1.5 px and 20-1,000 photons on backgrounds of 1, 3, 10 and 20 photons/px
(Poisson), 12 frames of 1024 x 1024 with 400 spots each per background; a
tested event within 1.5 px of a true spot counts as the spot's.

    python bench/artefacts.py [--frames 10] [--ring]
    python bench/artefacts.py --shape-calibration
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def scores(table, truth):
    """Recall and precision of a peak table against the truth (matched within 1.5 px)."""
    from braggflow.simulate.frames import match_peaks

    m = match_peaks(table, truth)
    found = set(m["found_index"][m["found_index"] >= 0].tolist())
    return float((m["found_index"] >= 0).mean()), len(found) / max(len(table), 1), found


def zinger_events_with_a_peak(table, found, zingers, within: float = 2.0) -> int:
    """Zinger events (rows of ``ArtefactSeries.zingers``) with a false peak (a table row not in ``found``) within
    ``within`` px of one of their pixels."""
    table = table.iloc[[i for i in range(len(table)) if i not in found]]
    hit = set()
    for frame, rows in zingers.groupby("frame"):
        peaks = table[table["frame"] == frame]
        if not len(peaks):
            continue
        d = np.hypot(rows["row"].to_numpy()[:, None] - peaks["row"].to_numpy()[None],
                     rows["col"].to_numpy()[:, None] - peaks["col"].to_numpy()[None]).min(axis=1)
        hit.update(rows["event"].to_numpy()[d <= within].tolist())
    return len(hit)


def shape_calibration(frames: int = 12) -> None:
    """Print the share of faint real spots' small regions whose shape statistic exceeds ``SHAPE_CHI2``."""
    import pandas as pd

    from braggflow.find import find_peaks, spot_shape
    from braggflow.simulate.frames import simulate_series

    statistic = spot_shape.shape_statistic
    tested = []

    def recording(shape, value_at, bad_at, event_of, event_flat, *args, **kwargs):
        d = statistic(shape, value_at, bad_at, event_of, event_flat, *args, **kwargs)
        rows, cols = np.divmod(event_flat, shape[1])
        n = np.bincount(event_of, minlength=d.size)
        tested.append((np.bincount(event_of, weights=rows, minlength=d.size) / n,
                       np.bincount(event_of, weights=cols, minlength=d.size) / n, n, d))
        return d

    spot_shape.shape_statistic = recording
    out = []
    try:
        for background in (1.0, 3.0, 10.0, 20.0):
            s = simulate_series(frames, shape=(1024, 1024), n_peaks=400, seed=int(background * 10) + 7,
                                profile="gaussian", sigma=(0.7, 1.5), flux=(20.0, 1000.0), background=background,
                                n_hot=0, n_dead=0, gap=False)
            for f in range(frames):
                tested.clear()
                find_peaks(s.frames[f].astype(np.float32))
                truth = s.truth[s.truth["frame"] == f]
                for rows, cols, n, d in tested:
                    dist = np.hypot(truth["row"].to_numpy()[None] - rows[:, None],
                                    truth["col"].to_numpy()[None] - cols[:, None])
                    nearest = dist.argmin(axis=1)
                    close = dist[np.arange(rows.size), nearest] < 1.5
                    out.append(pd.DataFrame({"n": n[close], "d": d[close],
                                             "sigma": truth["sigma_row"].to_numpy()[nearest[close]]}))
    finally:
        spot_shape.shape_statistic = statistic
    real = pd.concat(out, ignore_index=True)
    over = real["d"] > spot_shape.SHAPE_CHI2
    narrow = real["sigma"] < 0.85
    print(f"small regions of faint real spots tested by shape: {len(real)}; statistic > {spot_shape.SHAPE_CHI2:g}: "
          f"{int(over.sum())} ({over.mean():.2%}); of those of width < 0.85 px: {int(over[narrow].sum())} of "
          f"{int(narrow.sum())} ({over[narrow].mean():.2%})")
    for k, g in real.groupby("n"):
        print(f"  events of {k} px: {int((g['d'] > spot_shape.SHAPE_CHI2).sum())} of {len(g)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--ring", action="store_true", help="add a powder ring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape-calibration", action="store_true",
                        help="how often faint real spots' small regions are taken for zingers by their shape")
    args = parser.parse_args()
    if args.shape_calibration:
        shape_calibration()
        return
    from braggflow.pipeline import measure_series, prepare, run
    from braggflow.pipeline.config import Config
    from braggflow.simulate.artefacts import add_artefacts
    from braggflow.simulate.frames import simulate_series

    base = simulate_series(args.frames, seed=args.seed, n_hot=0, n_dead=0)
    art = add_artefacts(base, zingers=50, hot=20, ring=args.ring, seed=args.seed + 1)
    print(f"{args.frames} frames of 2048 x 2048, {len(base.truth)} true peaks; {art.zingers['event'].nunique()} "
          f"zinger events, {len(art.hot_pixels)} hot pixels{', a powder ring' if args.ring else ''}")
    t0 = time.perf_counter()
    plain = run(base.frames, mask=base.mask)
    t1 = time.perf_counter()
    dirty = run(art.frames, mask=art.mask)
    t2 = time.perf_counter()
    r0, p0, _ = scores(plain, base.truth)
    print(f"without artefacts: recall {r0:.4f}, precision {p0:.4f}, {len(plain)} peaks ({t1 - t0:.1f} s)")
    from braggflow.find import spot_shape

    chi2, spot_shape.SHAPE_CHI2 = spot_shape.SHAPE_CHI2, None
    try:
        ring_only = run(art.frames, mask=art.mask)
    finally:
        spot_shape.SHAPE_CHI2 = chi2
    for label, table, seconds in (("with artefacts:   ", dirty, t2 - t1),
                                  ("  ring test alone (no shape test):", ring_only, None)):
        recall, precision, found = scores(table, art.truth)
        if args.ring:
            on_ring = art.ring_map[np.round(table["row"]).astype(int).clip(0, 2047),
                                   np.round(table["col"]).astype(int).clip(0, 2047)]
            counted = ~on_ring
            fp = sum(1 for i in np.flatnonzero(counted) if i not in found)
            precision = 1 - fp / max(counted.sum(), 1)
        print(f"{label} recall {recall:.4f}, precision {precision:.4f}, {len(table)} peaks"
              f"{f' ({seconds:.1f} s)' if seconds is not None else ''}"
              f"{f', {int(on_ring.sum())} centred on the ring (not counted)' if args.ring else ''}; "
              f"zinger events with a false peak: {zinger_events_with_a_peak(table, found, art.zingers)}")
    config = Config()
    ctx = measure_series(art.frames, config, prepare(config, shape=art.frames.shape[1:], mask=art.mask))
    hp = art.hot_pixels
    inmap = ctx.hot_pixels[hp["row"], hp["col"]]
    print(f"hot-pixel map: {int(ctx.hot_pixels.sum())} pixels; {int(inmap.sum())} of {len(hp)} hot pixels in it"
          f"{'' if inmap.all() else ' (missing: ' + ', '.join(hp['kind'][~inmap]) + ')'}; ring pixels in it: "
          f"{int((ctx.hot_pixels & art.ring_map).sum())}")


if __name__ == "__main__":
    main()
