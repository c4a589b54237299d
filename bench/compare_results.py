"""Compare the peak tables of two versions of braggflow on the same inputs, row by row.

The reference version (a git commit) is installed into a scratch virtual
environment (``--system-site-packages``, ``--no-deps``: the same numpy, scipy,
torch and ONNX Runtime as this interpreter); the version under test is the one
this interpreter imports.  Each case runs ``braggflow run`` (or ``demo``) as a
user would, reads the results file back with that version's own reader, and the
two tables are compared: same rows in the same order, every numeric column
within ``--rtol`` relative (NaN equal to NaN), every other column equal.

Usage::

    python bench/compare_results.py --ref f54431e --work /tmp/compare

Cases whose input under ``../shared/data`` is missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: (name, input needed, braggflow arguments); {work} is the case's own folder, {out} its results file
CASES = [
    ("demo (braggnn, 20 frames)", None, ["demo", "--out", "{work}"]),
    ("HEXRD Zr frame cache, com", "hexrd_zr_ge2/LT1_Ne_zr001_00000-fc_GE2.npz",
     ["run", "{input}", "-o", "{out}"]),
    ("HEXRD Zr frame cache, braggnn, frames 0:20", "hexrd_zr_ge2/LT1_Ne_zr001_00000-fc_GE2.npz",
     ["run", "{input}", "-o", "{out}", "--method", "braggnn", "--frames", "0:20"]),
    ("MAPbBr3 GIWAXS frame, com", "gixd_mapbbr3/S123_MABr_A2_00865-00000.tif",
     ["run", "{input}", "-o", "{out}"]),
    ("MAPbBr3 GIWAXS frame, pvoigt", "gixd_mapbbr3/S123_MABr_A2_00865-00000.tif",
     ["run", "{input}", "-o", "{out}", "--method", "pvoigt"]),
    ("Pilatus 1M GIWAXS series, com", "giwaxs_gixsgui", ["run", "{input}", "-o", "{out}"]),
    ("Pilatus 1M GIWAXS series, braggnn", "giwaxs_gixsgui",
     ["run", "{input}", "-o", "{out}", "--method", "braggnn"]),
    ("Pilatus 1M GIWAXS series, gauss", "giwaxs_gixsgui",
     ["run", "{input}", "-o", "{out}", "--method", "gauss"]),
]

_RUN = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from braggflow.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        if exc.code:
            raise
""")

_EXPORT = textwrap.dedent("""
    import sys
    from braggflow.io.results import read_peaks
    read_peaks(sys.argv[1]).to_pickle(sys.argv[2])
""")


def reference_python(ref: str, work: Path) -> Path:
    """A scratch venv holding braggflow at ``ref`` (built once, reused)."""
    venv = work / f"venv-{ref}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    tree = work / f"tree-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(tree)],
                   check=True)
    return python


def run_case(python: Path, args: list[str], work: Path, input_path: Path | None) -> pd.DataFrame:
    """Run one case with ``python``'s braggflow and return its peak table."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "results.h5"
    for stale in (out, work / "frames.h5"):
        stale.unlink(missing_ok=True)
    argv = [a.format(work=work, out=out, input=input_path) for a in args]
    subprocess.run([str(python), "-c", _RUN, *argv], check=True, cwd=work, stdout=subprocess.DEVNULL)
    table = work / "peaks.pkl"
    subprocess.run([str(python), "-c", _EXPORT, str(out), str(table)], check=True)
    return pd.read_pickle(table)


#: Values of categorical columns renamed between versions: (column, old, new).  The localization method that runs
#: a network is "nn"; earlier versions recorded it as "braggnn".
RENAMED = [("method", "braggnn", "nn")]


def compare(ref: pd.DataFrame, new: pd.DataFrame, *, rtol: float) -> list[str]:
    """Differences between two peak tables (empty: equal within ``rtol``)."""
    problems = []
    ref = ref.copy()
    for column, old, renamed in RENAMED:
        if column in ref.columns:
            ref[column] = ref[column].astype(object).replace(old, renamed)
    if len(ref) != len(new):
        return [f"{len(ref)} rows in the reference, {len(new)} now"]
    for name in ref.columns:
        if name not in new.columns:
            problems.append(f"column {name} missing")
            continue
        a, b = ref[name], new[name]
        if pd.api.types.is_numeric_dtype(a) and not isinstance(a.dtype, pd.CategoricalDtype):
            x = a.to_numpy(dtype=float, na_value=np.nan)
            y = b.to_numpy(dtype=float, na_value=np.nan)
            same_nan = np.isnan(x) == np.isnan(y)
            close = np.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
            bad = ~(same_nan & close)
            if bad.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.nanmax(np.abs(x - y)[bad] / np.abs(x)[bad])
                problems.append(f"{name}: {bad.sum()} rows differ (max relative {rel:.2e})")
        else:
            x = a.astype(object).where(a.notna(), "<missing>").astype(str).to_numpy()
            y = b.astype(object).where(b.notna(), "<missing>").astype(str).to_numpy()
            if (x != y).any():
                problems.append(f"{name}: {(x != y).sum()} rows differ")
    extra = set(new.columns) - set(ref.columns)
    if extra:
        problems.append(f"new columns {sorted(extra)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="f54431e", help="git commit of the reference version")
    parser.add_argument("--work", type=Path, default=Path("/tmp/braggflow-compare"), help="scratch folder")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of numeric columns")
    parser.add_argument("--only", nargs="*", help="case numbers to run (default: all)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    python_ref = reference_python(args.ref, args.work)
    failures = 0
    for k, (name, needed, case_args) in enumerate(CASES):
        if args.only and str(k) not in args.only:
            continue
        input_path = DATA / needed if needed else None
        if input_path is not None and not input_path.exists():
            print(f"[{k}] {name}: skipped ({input_path} is absent)")
            continue
        if input_path is not None and input_path.is_dir():
            input_path = input_path / "*.tif"
        cached = args.work / f"case{k}-ref" / "peaks.pkl"  # the reference's results do not change: run it once
        if cached.exists():
            ref = pd.read_pickle(cached)
        else:
            ref = run_case(python_ref, case_args, args.work / f"case{k}-ref", input_path)
        new = run_case(Path(sys.executable), case_args, args.work / f"case{k}-new", input_path)
        problems = compare(ref, new, rtol=args.rtol)
        status = "same" if not problems else "DIFFERENT: " + "; ".join(problems)
        print(f"[{k}] {name}: {len(ref)} peaks x {len(ref.columns)} columns, {status}", flush=True)
        failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
