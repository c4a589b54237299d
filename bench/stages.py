"""Time the locate and integrate stages against those of another commit, in one process.

The stages run as :func:`braggflow.pipeline.process_frame` calls them (regions,
saturated pixels; ``--bare``: without them, as the breakdown of bench/pipeline.py
does) on simulated 2048 x 2048 frames with ~100 peaks, after ``correct`` and
``find`` ran once per frame.  With ``--ref COMMIT`` the locate, integrate and
windows modules of that commit are loaded beside the working tree's (under the
package name ``bfref``; the rest of braggflow is shared), and the two versions
are timed interleaved, repeat by repeat, so that the load of a busy machine falls
on both alike.  Printed: ms per frame of each stage (median over repeats), the
same-repeat ratio reference / working tree, and the largest relative difference
between the two versions' peak tables.

    OMP_NUM_THREADS=1 python bench/stages.py [--frames 6] [--repeats 7] [--method com] [--ref HEAD] [--bare]
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
#: Modules loaded from the reference commit (paths under src/braggflow).
REF_MODULES = ("locate", "integrate", "windows.py")


def load_reference(commit: str, where: Path):
    """Write the stage modules of ``commit`` as the package ``bfref`` under ``where`` and import them.

    Returns
    -------
    locate, integrate : callable
        The reference's stage functions.
    """
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "src/braggflow/"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout.split()
    wanted = [p for p in listing if p.endswith(".py") and p[len("src/braggflow/"):].split("/")[0] in REF_MODULES]
    pattern = re.compile(r"\bbraggflow\.(locate|integrate|windows)\b")
    for path in wanted:
        text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
        target = where / "bfref" / path[len("src/braggflow/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(pattern.sub(r"bfref.\1", text))
    (where / "bfref" / "__init__.py").write_text("")
    sys.path.insert(0, str(where))
    return importlib.import_module("bfref.locate").locate, importlib.import_module("bfref.integrate").integrate


def max_rel_diff(a, b) -> float:
    """Largest relative difference between the numeric columns of two tables (NaN equal to NaN; inf: shapes differ)."""
    import numpy as np

    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return float("inf")
    worst = 0.0
    for name in a.columns:
        if a[name].dtype.kind not in "fiu":
            if not a[name].astype("string").fillna("<NA>").equals(b[name].astype("string").fillna("<NA>")):
                return float("inf")
            continue
        x, y = a[name].to_numpy(dtype=float), b[name].to_numpy(dtype=float)
        both_nan = np.isnan(x) & np.isnan(y)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(both_nan | (x == y), 0.0, np.abs(x - y) / np.maximum(np.abs(x), np.abs(y)))
        worst = max(worst, float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--method", default="com")
    parser.add_argument("--ref", help="commit whose locate/integrate/windows modules to time beside this tree's")
    parser.add_argument("--bare", action="store_true",
                        help="call the stages as bench/pipeline.py's breakdown does: no regions, no saturated pixels")
    args = parser.parse_args()
    import numpy as np

    from braggflow.correct import correct_frame, saturated_pixels
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate
    from braggflow.locate import locate
    from braggflow.pipeline import prepare
    from braggflow.pipeline.config import Config
    from braggflow.simulate.frames import simulate_series

    versions = {"tree": (locate, integrate)}
    tmp = tempfile.TemporaryDirectory()
    if args.ref:
        versions = {"ref": load_reference(args.ref, Path(tmp.name)), **versions}
    config = Config(locate={"method": args.method})
    sim = simulate_series(args.frames, n_peaks=100, seed=7)
    ctx = prepare(config, shape=sim.frames.shape[1:], dtype=sim.frames.dtype)
    c, lc = config.correct, config.locate
    inputs = []
    for f in sim.frames:
        corrected, mask = correct_frame(f, mask=ctx.mask, config=c)
        saturated = saturated_pixels(f, ctx.saturation, binning=c.binning)
        inputs.append((corrected, mask, find_peaks(corrected, mask=mask, config=config.find, gain=c.gain), saturated))
    n_peaks = sum(len(found.table) for _, _, found, _ in inputs) / len(inputs)
    print(f"{len(inputs)} simulated frames, {n_peaks:.0f} peaks/frame, method {args.method}, "
          f"{args.repeats} repeats, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")

    def run(version):
        loc, integ = versions[version]
        t_loc = t_int = 0.0
        tables = []
        for corrected, mask, found, saturated in inputs:
            regions = None if args.bare else found.regions
            saturated = None if args.bare else saturated
            a = time.perf_counter()
            t = loc(corrected, found.table, method=args.method, mask=mask, labels=found.labels,
                    regions=regions, saturated=saturated, saturated_peaks=lc.saturated,
                    extended_peaks=lc.extended, patch_size=lc.patch_size, gain=c.gain, model=lc.model,
                    backend=lc.backend, device=lc.device, batch_size=lc.batch_size)
            b = time.perf_counter()
            t = integ(corrected, t, mask=mask, labels=found.labels, gain=c.gain, radius=config.integrate.radius,
                      background_width=config.integrate.background_width, saturated=saturated)
            t_loc += b - a
            t_int += time.perf_counter() - b
            tables.append(t)
        return t_loc / len(inputs), t_int / len(inputs), tables

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for version in versions:  # warm-up: imports, model load
            run(version)
        times = {version: [] for version in versions}
        tables = {}
        for _ in range(args.repeats):
            for version in versions:
                t_loc, t_int, tables[version] = run(version)
                times[version].append((t_loc, t_int))
    for version, rows in times.items():
        arr = np.array(rows) * 1e3
        print(f"{version:5s} locate {np.median(arr[:, 0]):6.2f} ms/frame (min {arr[:, 0].min():6.2f}), "
              f"integrate {np.median(arr[:, 1]):6.2f} ms/frame (min {arr[:, 1].min():6.2f})")
    if "ref" in versions:
        ratio = np.array(times["ref"]) / np.array(times["tree"])
        print(f"ref / tree, median of same-repeat ratios: locate {np.median(ratio[:, 0]):.2f}x, "
              f"integrate {np.median(ratio[:, 1]):.2f}x, locate + integrate "
              f"{np.median(np.array(times['ref']).sum(1) / np.array(times['tree']).sum(1)):.2f}x")
        worst = max(max_rel_diff(a, b) for a, b in zip(tables["ref"], tables["tree"]))
        print(f"largest relative difference between the peak tables: {worst:.3g}")


if __name__ == "__main__":
    main()
