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

    python bench/artefacts.py [--frames 10] [--ring]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--ring", action="store_true", help="add a powder ring")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
