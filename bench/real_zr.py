"""Real data: the HEXRD Zr frame cache (APS 1-ID-C, GE 41RT) run as a user runs it, against HEXRD's spots.

Runs ``braggflow run`` on the 100-frame cache with no options, then
``braggflow link --omega``, and compares with the 1,373 spots HEXRD measured
for three indexed grains (``spots_0000{0,1,2}.out``):

- spots with signal in the cache: the sum of the 5 x 5 window around the spot
  in its own frame >= 50 counts;
- recall: such spots with a peak within 2 px in their own frame, and the
  median distance of those; the same on all 1,373 spots;
- detections per frame and the fraction of them that are single-pixel regions;
- 3D spots of ``link --omega``: reference spots matched by a 3D spot within
  2 px and 1.5 deg, 3D spots matched to two reference spots, 3D spots
  spanning >= 2 frames;
- the same on the distinct measured spots: HEXRD lists a measured spot once
  for each grain that predicts a reflection there (40 rows here repeat
  another grain's spot, 21 of them with signal);
- those figures apart for the spots HEXRD measured within 2 px of its own
  prediction and for the others: HEXRD takes a spot's centroid in a window
  centred on the predicted position, which can cut a spot lying far from it.

    python bench/real_zr.py [--data ../shared/data] [--keep DIR] [-- extra run options]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

CACHE = "LT1_Ne_zr001_00000-fc_GE2.npz"
BRAGGFLOW = str(Path(sys.executable).with_name("braggflow"))


def reference_spots(folder: Path, series) -> pd.DataFrame:
    """HEXRD's measured spots as frame, row, col (px), omega (deg), and the 5 x 5 sum around each in its frame."""
    from braggflow.io.hexrd import measured_spots_in_frames

    return measured_spots_in_frames(sorted(folder.glob("spots_0000*.out")), series, pixel_size_mm=0.2)


def distances_in_own_frame(reference: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Distance from each reference spot to the nearest peak of its own frame, px (inf: no peak)."""
    dist = np.full(len(reference), np.inf)
    for f, idx in reference.groupby("frame").groups.items():
        peaks = table[table["frame"] == f]
        if len(peaks):
            dist[reference.index.get_indexer(idx)] = cKDTree(peaks[["row", "col"]].to_numpy()).query(
                reference.loc[idx, ["row", "col"]].to_numpy())[0]
    return dist


def match_3d(reference: pd.DataFrame, spots: pd.DataFrame, *, max_px=2.0, max_deg=1.5) -> np.ndarray:
    """Index of the 3D spot matched to each reference spot (nearest in omega within the limits), -1 when none."""
    near = cKDTree(spots[["row", "col"]].to_numpy()).query_ball_point(reference[["row", "col"]].to_numpy(), r=max_px)
    omega = spots["omega"].to_numpy()
    out = np.full(len(reference), -1)
    for k, cand in enumerate(near):
        if cand:
            d = np.abs(omega[cand] - reference["omega"].iloc[k])
            if d.min() <= max_deg:
                out[k] = cand[int(np.argmin(d))]
    return out


def single_pixel_share(series) -> float:
    """Share of the finder's regions (``find_peaks`` labels, frames 5, 15, ..., 95) that are one pixel.

    The peak table's ``npix`` counts the integrated signal pixels (the region
    grown by one pixel), never 1; the regions themselves are the finder's.
    """
    from braggflow.find import find_peaks

    sizes = []
    for f in range(5, len(series), 10):
        found = find_peaks(np.asarray(series[f], dtype=np.float32))
        sizes.append(np.bincount(found.labels.ravel(), minlength=len(found) + 1)[1:])
    sizes = np.concatenate(sizes)
    return float(np.mean(sizes == 1)) if sizes.size else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--keep", type=Path, help="folder for the results file (default: a temporary folder)")
    parser.add_argument("run_options", nargs="*", help="extra options for braggflow run (after --)")
    args = parser.parse_args()
    from braggflow.io.frames import open_frames
    from braggflow.io.results import read_group, read_peaks
    from braggflow.schema import Flag

    folder = args.data / "hexrd_zr_ge2"
    series = open_frames(str(folder / CACHE))
    reference = reference_spots(folder, series)
    signal = reference["sum5"] >= 50
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.keep or Path(tmp)) / "zr.h5"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [BRAGGFLOW, "run", str(folder / CACHE), "-o", str(out), "--overwrite",
               *args.run_options]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        t_run = time.perf_counter() - t0
        subprocess.run([BRAGGFLOW, "link", str(out), "--omega"], check=True)
        table = read_peaks(out)
        spots = read_group(out, "link")[0]["spots"]
    placed = np.isfinite(table["row"].to_numpy(dtype=float)) & np.isfinite(table["col"].to_numpy(dtype=float))
    blended = (table["flags"].to_numpy() & int(Flag.BLENDED)) > 0
    dist = distances_in_own_frame(reference, table[placed])
    within = dist < 2.0
    per_frame = table.groupby("frame").size().reindex(range(len(series)), fill_value=0)
    single = single_pixel_share(series)
    print(f"braggflow run {' '.join(args.run_options)}: {len(table)} peaks in {len(series)} frames, "
          f"{t_run:.1f} s whole process")
    print(f"detections per frame: mean {per_frame.mean():.0f}, max {per_frame.max()}; single-pixel regions "
          f"{single:.1%} (find_peaks, 10 frames); median score {table['score'].median():.2f}; "
          f"rows without a position {(~placed).sum()}; "
          f"BLENDED rows {blended.sum()}")
    print(f"reference spots with 5x5 sum >= 50 counts: {signal.sum()} of {len(reference)}")
    print(f"  found within 2 px in own frame: {within[signal].mean():.1%}, median distance "
          f"{np.median(dist[signal & within]):.3f} px")
    print(f"all {len(reference)} reference spots: {within.mean():.1%} within 2 px, median distance "
          f"{np.median(dist[within]):.3f} px")
    matched = match_3d(reference, spots)
    ms = matched[signal.to_numpy()]
    hit = ms[ms >= 0]
    shared = np.bincount(matched[matched >= 0]) if (matched >= 0).any() else np.zeros(0, int)
    multi = spots["last_frame"] - spots["first_frame"] >= 1
    print(f"link --omega: {len(spots)} 3D spots, {multi.mean():.1%} spanning >= 2 frames; of the {signal.sum()} "
          f"reference spots with signal {(ms >= 0).mean():.1%} matched within 2 px and 1.5 deg; "
          f"3D spots matched to two reference spots: {(shared >= 2).sum()} (among those with signal: "
          f"{(np.bincount(hit) >= 2).sum() if hit.size else 0})")
    # HEXRD lists a measured spot once per grain predicting a reflection there (column repeat)
    distinct = (signal & ~reference["repeat"]).to_numpy()
    md = matched[distinct]
    hit = md[md >= 0]
    print(f"distinct measured spots with signal: {distinct.sum()} ({(signal & reference['repeat']).sum()} rows "
          f"repeat another grain's spot): within 2 px in own frame {within[distinct].mean():.1%}, median "
          f"{np.median(dist[distinct & within]):.3f} px; matched by a 3D spot {(md >= 0).mean():.1%}; "
          f"3D spots matched to two of them: {(np.bincount(hit) >= 2).sum() if hit.size else 0}")
    # HEXRD's positions are centroids over each spot's omega range: the 3D spots' are the like quantity
    ok = md >= 0
    ref = reference[distinct]
    d3 = np.hypot(ref["row"].to_numpy()[ok] - spots["row"].to_numpy()[md[ok]],
                  ref["col"].to_numpy()[ok] - spots["col"].to_numpy()[md[ok]])
    several = multi.to_numpy()[md[ok]]
    print(f"  median distance of the matched 3D spots: {np.median(d3):.3f} px (spanning >= 2 frames "
          f"{np.median(d3[several]):.3f}, one frame {np.median(d3[~several]):.3f}), against "
          f"{np.median(dist[distinct & within]):.3f} px for the peaks in their own frame")
    # HEXRD measures a centroid in a window centred on the predicted position: far from it, the window can cut the spot
    offset = reference["pred_offset"].to_numpy()
    for label, part in (("< 2 px", offset < 2.0), (">= 2 px", offset >= 2.0)):
        sel = distinct & part
        print(f"  measured {label} from HEXRD's own prediction: {sel.sum()} spots, within 2 px in own frame "
              f"{within[sel].mean():.1%} (median {np.median(dist[sel & within]):.3f} px), matched by a 3D spot "
              f"{(matched[sel] >= 0).mean():.1%}")


if __name__ == "__main__":
    main()
