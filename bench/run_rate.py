"""``braggflow run`` of the pinned benchmark frames as a user runs it: frames/s after the first frame, medians.

A single run's rate moves by a quarter or more on a shared machine, so the
runs are repeated ``--rounds`` times, every configuration in turn (and, with
``--compare SRC``, the same configurations of another source tree, the two
alternating in each round), and the medians and ranges are printed.

The frames are ``braggflow.simulate.frames.benchmark_series(24)`` written once
to a NeXus file (as ``braggflow simulate --benchmark`` does); each run is
``braggflow run FILE -o RESULTS --overwrite [options]`` in its own process with
``OMP_NUM_THREADS=1``, and its rate is the "frames/s after the first frame" it
prints. The peak counts of the runs of one configuration must agree.

    python bench/run_rate.py [--rounds 6] [--candidate] [--compare SRC] [--frames-file FILE]

``--candidate`` adds ``--method gauss --set locate.deblend=true --set
integrate.method=profile``; ``SRC`` is a tree like ``git archive COMMIT src``
unpacked (``PYTHONPATH=SRC``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATE = ["--method", "gauss", "--set", "locate.deblend=true", "--set", "integrate.method=profile"]


def write_frames(path: Path) -> None:
    """The pinned benchmark frames as a NeXus file (bitshuffle-LZ4)."""
    from braggflow.simulate.frames import benchmark_series, write_nexus

    write_nexus(path, benchmark_series(24))


def one_run(frames: Path, out: Path, options: list[str], src: Path | None) -> tuple[float, int]:
    """Frames/s after the first frame and peaks of one ``braggflow run`` process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    text = subprocess.run([sys.executable, "-m", "braggflow", "run", str(frames), "-o", str(out), "--overwrite",
                           *options], capture_output=True, text=True, env=env, check=True).stdout
    rate = re.search(r"([0-9.]+) after the first frame", text)
    peaks = re.search(r"(\d+) peaks ->", text)
    if rate is None or peaks is None:
        raise RuntimeError(f"unexpected output of braggflow run: {text!r}")
    return float(rate.group(1)), int(peaks.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--candidate", action="store_true", help="also gauss + deblend + profile")
    parser.add_argument("--compare", type=Path, help="source tree of another version, run alternately")
    parser.add_argument("--frames-file", type=Path, help="the pinned frames already written (else written here)")
    args = parser.parse_args()
    configs = {"default": []} | ({"candidate": CANDIDATE} if args.candidate else {})
    trees = {"this": None} | ({"other": args.compare} if args.compare else {})
    with tempfile.TemporaryDirectory() as tmp:
        frames = args.frames_file or Path(tmp) / "pinned.h5"
        if args.frames_file is None:
            write_frames(frames)
        rates: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in configs}
        peaks: dict[tuple[str, str], set[int]] = {(t, c): set() for t in trees for c in configs}
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
            for c, options in configs.items():
                for t, src in order:
                    rate, n = one_run(frames, Path(tmp) / f"{t}.h5", options, src)
                    rates[(t, c)].append(rate)
                    peaks[(t, c)].add(n)
            print(f"round {r + 1}: " + ", ".join(f"{t}/{c} {v[-1]:.1f}" for (t, c), v in rates.items()), flush=True)
    print(f"\nbraggflow run, frames/s after the first frame, {args.rounds} rounds (other: {args.compare})")
    for (t, c), v in rates.items():
        print(f"  {t:5s} {c:9s} median {statistics.median(v):5.1f}  range {min(v):.1f}-{max(v):.1f}  "
              f"peaks {sorted(peaks[(t, c)])}")
    if args.compare:
        for c in configs:
            ratio = statistics.median(rates[("this", c)]) / statistics.median(rates[("other", c)])
            print(f"  {c}: this / other = {ratio:.2f} (medians)")


if __name__ == "__main__":
    main()
