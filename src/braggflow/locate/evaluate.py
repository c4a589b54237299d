"""Accuracy of the localizers on simulated patches, against the Cramér-Rao bound.

Run ``python -m braggflow.locate.evaluate --help``.  For each patch kind of
:func:`braggflow.simulate.patches.simulate_patches` and each method it reports
the median radial error, its ratio to the CRLB reference (1.1774 x the per-axis
CRLB, the median radial error of an ideal unbiased estimator), the spread of the
pulls ``(estimate - truth) / reported error`` (1 for honest errors), the failure
rate and the time per patch (indicative only; speed is measured in bench/).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from braggflow._stats import MAD_TO_SIGMA
from braggflow.locate._locate import locate_patches
from braggflow.locate.patches import remove_other_peaks

__all__ = ["MEDIAN_RADIAL_PER_SIGMA", "score_localizer", "evaluate_methods"]

MEDIAN_RADIAL_PER_SIGMA = float(np.sqrt(2 * np.log(2)))
"""Median of the radial error of an isotropic 2D normal, per axis sigma (1.1774)."""


def score_localizer(row, col, row_err, col_err, patches) -> dict:
    """Accuracy figures of one localizer on a :class:`~braggflow.simulate.patches.PatchSet`.

    Parameters
    ----------
    row, col, row_err, col_err : (N,) array_like
        Estimated centres and errors in patch coordinates, px (NaN = failed).
    patches : PatchSet
        The simulated patches with their truth and CRLB.

    Returns
    -------
    figures : dict
        ``median_error`` (px), ``crlb_ref`` (median of 1.1774 x the per-axis
        CRLB, px), ``ratio`` (median over patches of radial error / per-patch
        reference), ``pull_std`` (std of the pulls of both axes; robust: 1.4826 x
        median absolute pull in ``pull_mad``), ``failed`` (fraction).
    """
    row, col = np.asarray(row, float), np.asarray(col, float)
    ok = np.isfinite(row) & np.isfinite(col)
    radial = np.hypot(row - patches.row, col - patches.col)
    ref = MEDIAN_RADIAL_PER_SIGMA * np.sqrt(
        0.5 * (patches.params["crlb_row"] ** 2 + patches.params["crlb_col"] ** 2)
    ).to_numpy()
    pulls = np.r_[(row - patches.row) / np.asarray(row_err, float), (col - patches.col) / np.asarray(col_err, float)]
    pulls = pulls[np.isfinite(pulls)]
    return {
        "median_error": float(np.median(radial[ok])) if ok.any() else np.nan,
        "crlb_ref": float(np.median(ref)),
        "ratio": float(np.median(radial[ok] / ref[ok])) if ok.any() else np.nan,
        "pull_std": float(np.std(pulls)) if len(pulls) else np.nan,
        "pull_mad": float(MAD_TO_SIGMA * np.median(np.abs(pulls))) if len(pulls) else np.nan,
        "failed": float(1 - ok.mean()) if len(ok) else np.nan,
    }


def evaluate_methods(*, kinds=("isotropic", "elongated", "broad", "neighbour", "edge", "masked"),
                     methods=("com", "gauss", "pvoigt"), n: int = 500, size: int = 11, seed: int = 0,
                     deblend: bool = False, model=None, **simulate_kwargs) -> pd.DataFrame:
    """Score localization methods on simulated patches of several kinds.

    Parameters
    ----------
    kinds : sequence of str
        Patch kinds (see :func:`~braggflow.simulate.patches.simulate_patches`).
    methods : sequence of str
        Methods of :func:`~braggflow.locate.locate_patches`.
    n : int
        Patches per kind.
    size : int
        Patch side, px.
    seed : int
        Simulation seed (each kind uses ``seed + its index``).
    deblend : bool
        Remove other peaks from the patches first (:func:`remove_other_peaks`),
        as :func:`~braggflow.locate.extract_patches` does without labels.
    model
        network (name, file or loaded model) for method "nn".
    **simulate_kwargs
        Passed to ``simulate_patches`` (intensity, background, sigma, ...).

    Returns
    -------
    table : pandas.DataFrame
        One row per (kind, method) with the figures of :func:`score_localizer`
        and ``ms_per_patch``.
    """
    from braggflow.simulate.patches import simulate_patches

    rows = []
    for k, kind in enumerate(kinds):
        ps = simulate_patches(n, size=size, kind=kind, seed=seed + k, **simulate_kwargs)
        data, mask = ps.data, ps.mask
        if deblend:
            data, mask, _ = remove_other_peaks(data, mask)
        for method in methods:
            t0 = time.perf_counter()
            res = locate_patches(data, mask, method=method, gain=simulate_kwargs.get("gain", 1.0), model=model)
            dt = time.perf_counter() - t0
            rows.append({"kind": kind, "method": method,
                         **score_localizer(res.row, res.col, res.row_err, res.col_err, ps),
                         "ms_per_patch": 1e3 * dt / max(n, 1)})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    """Print :func:`evaluate_methods` as a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m braggflow.locate.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="patches per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default="isotropic,elongated,broad,neighbour,edge,masked")
    parser.add_argument("--methods", default="com,gauss,pvoigt")
    parser.add_argument("--deblend", action="store_true", help="remove other peaks first (as extract_patches does)")
    parser.add_argument("--intensity", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    parser.add_argument("--background", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    parser.add_argument("--sigma", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    parser.add_argument("--pvoigt-fraction", type=float, default=None)
    args = parser.parse_args(argv)
    kw = {k: v for k, v in dict(intensity=args.intensity, background=args.background, sigma=args.sigma,
                                 pvoigt_fraction=args.pvoigt_fraction).items() if v is not None}
    table = evaluate_methods(kinds=args.kinds.split(","), methods=args.methods.split(","), n=args.n, seed=args.seed,
                             deblend=args.deblend, **kw)
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
