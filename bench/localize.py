"""Benchmark of the localizers on simulated patches: accuracy vs the CRLB, and speed on one core.

One run, the same patches for every method:

* methods: centre of mass (``com``), 2D Gaussian fit (``gauss``), pseudo-Voigt
  fit (``pvoigt``) (both batched, all patches at once) and the same fits one
  patch at a time with scipy (``gauss-scipy``, ``pvoigt-scipy``), the
  published BraggNN weights (``braggnn-published``, only with
  ``--published-weights FILE``), and every shipped braggflow model;
* patch sets (``braggflow.simulate.patches.simulate_patches``, true centre
  within +-0.5 px of the central pixel, +-1 px for neighbour and edge): clean
  isolated peaks (isotropic Gaussian and pseudo-Voigt, integrated intensity
  500-50,000 photons, background 1-200 photons/px, sigma 0.5-3 px) split
  into low / medium / high SNR bins, and the elongated, broad, neighbour and
  edge kinds; the neighbour set is also split at the Sparrow limit
  (``neighbour-resolved``: separation >= 2 x the wider peak's sigma, where the
  sum of the two peaks has a dip between them; ``neighbour-unresolved``: one
  blob).

For each method and set it prints the median, 75th and 95th percentile of
the radial error (px), the median of error / (1.1774 x CRLB) (1.1774 x
the per-axis CRLB sigma is the median radial error of an ideal unbiased
estimator), the failure fraction (no finite centre, or off by more than
1.5 px), the calibration of the reported errors (std of error / row_err
and col_err, fraction inside the 1-sigma ellipse, ideal 0.393), patches per
second on ONE core and the speed relative to the pseudo-Voigt fit measured in
the same run.  It writes ``localize.csv`` and ``localize_vs_snr.png`` (median
error vs SNR with the CRLB reference) to ``--out``.  Then, inside the
pipeline (simulated frames -> find_peaks -> locate, patches centred by the
finder), the median radial error per peak kind (``localize_pipeline.csv``).
Before the methods, the blends recognised (``recognise_blends``, a probable
blend) and split (``find_blends``) by the fits' model selection (one
component or two) on every set, the clean sets' round Gaussian and
pseudo-Voigt peaks also apart: detection on the unresolved neighbours, false
alarms on single peaks, and the fraction of the blends that one pseudo-Voigt
fitted without noise leaves a deviance above 2 and 10 (what any test can
see; ``localize_blends.csv``), and the calibration of the two-component
fit's member nearer the truth on the neighbour set (``localize_blends_joint.csv``).
The methods' calibration is also scored on the blends recognised and on those
not (``blends-recognised``, ``blends-not-recognised``).
First, the speed of each method through ``locate()`` as a user calls it, on
the same ~600 candidate peaks of one frame (``localize_locate_speed.csv``):
the speed ratios to quote.

Run::

    python bench/localize.py --out bench/results/localize
    python bench/localize.py --n 300 --out /tmp/quick           # quick look
    python bench/localize.py --only-locate-speed                 # the locate() speed table only
    python bench/localize.py --only-blends --locate-peaks 0      # the blend detection table only
    python bench/localize.py --published-weights fc16_8_4_2-sz11.pth
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, also for NumPy/BLAS
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SNR_BINS = {"clean-low-snr": (0.0, 40.0), "clean-medium-snr": (40.0, 100.0), "clean-high-snr": (100.0, np.inf)}
OTHER_SETS = ("elongated", "broad", "neighbour", "edge")
FAIL_PX = 1.5


def make_sets(n: int, seed: int) -> dict:
    """The benchmark's patch sets (PatchSet per name)."""
    from braggflow.simulate.patches import simulate_patches

    sets = {}
    clean = simulate_patches(3 * n, kind="isotropic", seed=seed)
    snr = clean.params["snr"].to_numpy()
    for name, (lo, hi) in SNR_BINS.items():
        sets[name] = clean[(snr >= lo) & (snr < hi)]
    for i, kind in enumerate(OTHER_SETS, 1):
        sets[kind] = simulate_patches(n, kind=kind, seed=seed + 100 * i)
    return sets


def neighbour_subsets(ps, recognised=None) -> dict:
    """The neighbour set split at the Sparrow limit: name -> boolean selection.

    The sum of two Gaussian peaks has a dip between them only when their
    separation exceeds 2 sigma (here of the wider peak): ``neighbour-resolved``
    pairs show two maxima, ``neighbour-unresolved`` ones a single blob (the
    blend set).  With ``recognised`` ((N,) bool, :func:`braggflow.locate.deblend.recognise_blends`)
    the blend set is also split into ``blends-recognised`` and ``blends-not-recognised``.
    """
    p = ps.params
    sep = np.hypot(p["neighbour_row"] - ps.row, p["neighbour_col"] - ps.col).to_numpy()
    resolved = sep >= 2 * np.maximum(p["sigma_row"], p["neighbour_sigma"]).to_numpy()
    out = {"neighbour-resolved": resolved, "neighbour-unresolved": ~resolved}
    if recognised is not None:
        out.update({"blends-recognised": ~resolved & recognised, "blends-not-recognised": ~resolved & ~recognised})
    return out


def single_peak_kinds(sets: dict) -> dict:
    """The clean sets' round Gaussian and pseudo-Voigt peaks apart: name -> PatchSet (the other single-peak
    kinds have sets of their own)."""
    from braggflow.simulate.patches import PatchSet

    clean = [sets[k] for k in SNR_BINS if k in sets]
    out = {}
    if clean:
        eta = np.concatenate([c.params["eta"].to_numpy() for c in clean])
        both = PatchSet(np.concatenate([c.data for c in clean]), np.concatenate([c.mask for c in clean]),
                        np.concatenate([c.row for c in clean]), np.concatenate([c.col for c in clean]),
                        pd.concat([c.params for c in clean], ignore_index=True))
        out["single round Gaussian"] = both[np.flatnonzero(eta == 0)]
        out["single pseudo-Voigt"] = both[np.flatnonzero(eta > 0)]
    return out


def blend_detection_table(sets: dict, seed: int | None = None) -> pd.DataFrame:
    """Blends recognised and split by the fits' model selection on every set.

    Columns: ``recognised`` (:func:`braggflow.locate.deblend.recognise_blends`: deviance drop of two
    components over one above ``RECOGNITION_THRESHOLD``, every patch tested), ``split`` (``find_blends``, the
    split decision, with and without the screen), and for the blend set (the neighbour set's unresolved pairs)
    the fraction whose noiseless patch (same seed, ``noise=False``) one pseudo-Voigt leaves a deviance above 2
    and above 10 (the test's non-centrality: what any test against one elliptical winged peak can see), and
    the Neyman-Pearson bound: the mean over the blends of ``Phi(sqrt(lam) - z_0.99)``, the detection of a
    test that knows each blend and its nearest single pseudo-Voigt exactly, at 1 % false alarms, when
    ``seed`` (the benchmark's) is given.  On the blend set the fractions are detections, on single peaks false
    alarms.
    """
    from braggflow.locate.deblend import RECOGNITION_THRESHOLD, find_blends, recognise_blends

    rows = []
    named = dict(sets)
    named.update(single_peak_kinds(sets))
    if "neighbour" in sets:
        for sub_name, sel in neighbour_subsets(sets["neighbour"]).items():
            named[sub_name] = sets["neighbour"][np.flatnonzero(sel)]
    for name, ps in named.items():
        row = {"set": name, "patches": len(ps)}
        t0 = time.process_time()
        probable, drop = recognise_blends(ps.data, ps.mask)
        row[f"recognised (drop > {RECOGNITION_THRESHOLD:g})"] = float(probable.mean())
        row["ms/patch (recognised)"] = 1e3 * (time.process_time() - t0) / max(len(ps), 1)
        for screen in (False, True):
            t0 = time.process_time()
            test = find_blends(ps.data, ps.mask, screen=screen)
            key = "screened" if screen else "full test"
            row[f"split ({key})"] = float(test.blended.mean())
            row[f"ms/patch ({key})"] = 1e3 * (time.process_time() - t0) / max(len(ps), 1)
        rows.append(row)
    table = pd.DataFrame(rows)
    if seed is not None and "neighbour" in sets:
        table = table.assign(**{"non-centrality > 2": np.nan, "non-centrality > 10": np.nan,
                                "bound at 1 % (Neyman-Pearson)": np.nan})
        lam = blend_noncentrality(len(sets["neighbour"]), seed + 100 * (OTHER_SETS.index("neighbour") + 1))
        sel = neighbour_subsets(sets["neighbour"])["neighbour-unresolved"]
        at = table["set"] == "neighbour-unresolved"
        table.loc[at, "non-centrality > 2"] = float(np.mean(lam[sel] > 2))
        table.loc[at, "non-centrality > 10"] = float(np.mean(lam[sel] > 10))
        # the most any test can detect at 1 % false alarms against each blend's nearest single pseudo-Voigt
        # (simple against simple, the log-likelihood ratio ~ N(+-lam/2, lam)): Phi(sqrt(lam) - z_0.99)
        from scipy.stats import norm

        bound = norm.cdf(np.sqrt(np.maximum(np.nan_to_num(lam[sel], nan=0.0), 0.0)) - norm.ppf(0.99))
        table.loc[at, "bound at 1 % (Neyman-Pearson)"] = float(bound.mean())
    return table


def joint_fit_calibration(ps) -> pd.DataFrame:
    """Calibration of the two-component fit's member on the neighbour set ``ps`` and its subsets.

    Every patch is fitted with two Gaussians of one shape (``find_blends``, screen off); the member nearer the
    true centre is scored (error, errors from the joint fit's inverse Fisher information) on the neighbour
    set, its Sparrow subsets and the blends recognised and not (``recognise_blends``): what handling a blend
    as two peaks gives its errors.
    """
    from braggflow.locate.deblend import RECOGNITION_THRESHOLD, find_blends

    test = find_blends(ps.data, ps.mask, threshold=np.inf, screen=False)
    recognised = np.nan_to_num(test.drop, nan=-np.inf) > RECOGNITION_THRESHOLD
    p, cov = test.pair.params, test.pair.cov
    idx = np.arange(len(p))
    nearer = np.where(np.hypot(p[:, 0] - ps.row, p[:, 1] - ps.col) <= np.hypot(p[:, 2] - ps.row, p[:, 3] - ps.col),
                      0, 1)
    res = {"row": p[idx, 2 * nearer], "col": p[idx, 2 * nearer + 1],
           "row_err": np.sqrt(cov[idx, 2 * nearer, 2 * nearer]),
           "col_err": np.sqrt(cov[idx, 2 * nearer + 1, 2 * nearer + 1])}
    return pd.DataFrame(set_rows("joint fit (two Gaussians)", {"neighbour": ps}, {"neighbour": res}, recognised))


def blend_noncentrality(n: int, seed: int) -> np.ndarray:
    """(n,) deviance of one pseudo-Voigt fitted to the noiseless patches of the neighbour set (``seed``): the
    non-centrality of the likelihood-ratio test of one peak against two, NaN where the fit failed."""
    from braggflow.locate.deblend import find_blends
    from braggflow.simulate.patches import simulate_patches

    ps = simulate_patches(n, kind="neighbour", seed=seed, noise=False)
    return find_blends(ps.data, ps.mask, threshold=np.inf, screen=False).single.deviance


def classical_methods() -> dict:
    from braggflow.locate import centroid_patches, fit_gaussian_patches, fit_pvoigt_patches

    def wrap(fn):
        def run(data, mask):
            r = fn(data, mask)
            return {"row": r.row, "col": r.col, "row_err": r.row_err, "col_err": r.col_err}

        return run

    def scipy(fn):
        return wrap(lambda data, mask: fn(data, mask, engine="scipy"))

    return {"com": wrap(centroid_patches), "gauss": wrap(fit_gaussian_patches), "pvoigt": wrap(fit_pvoigt_patches),
            "gauss-scipy": scipy(fit_gaussian_patches), "pvoigt-scipy": scipy(fit_pvoigt_patches)}


#: What ``locate_speed_table`` runs through ``locate()``: name -> (method, fit_engine).
LOCATE_RUNS = {"com": ("com", "batch"), "nn": ("nn", "batch"), "gauss": ("gauss", "batch"),
               "gauss-scipy": ("gauss", "scipy"), "pvoigt": ("pvoigt", "batch"), "pvoigt-scipy": ("pvoigt", "scipy")}


def locate_speed_table(n_peaks: int, seed: int, repeats: int = 3) -> pd.DataFrame:
    """Peaks per second of each method through ``locate()`` as a user calls it, on one simulated frame.

    One 2048 x 2048 frame of the mixed population (``simulate_series``, ``n_peaks``
    peaks), found by ``find_peaks``; every method locates the same candidate
    peaks (with the finder's labels and regions), timed as the best of
    ``repeats`` calls (one for the per-patch scipy fits).  The median radial
    error is against the matched truth.  Ratios are to the scipy pseudo-Voigt
    fit and to the batched one, measured in the same run.
    """
    from braggflow.find import find_peaks
    from braggflow.locate import locate
    from braggflow.simulate.frames import match_peaks, simulate_series

    series = simulate_series(1, n_peaks=n_peaks, seed=seed)
    frame = series.frames[0].astype(np.float32)
    found = find_peaks(frame, mask=series.mask)
    truth = series.truth[series.truth["frame"] == 0]
    rows = []
    for name, (method, engine) in LOCATE_RUNS.items():
        best = np.inf
        for _ in range(1 if engine == "scipy" else repeats):
            t0 = time.perf_counter()
            out = locate(frame, found.table, method=method, mask=series.mask, labels=found.labels,
                         regions=found.regions, fit_engine=engine)
            best = min(best, time.perf_counter() - t0)
        m = match_peaks(out, truth)
        rows.append({"method": name, "peaks": len(out), "peaks_per_s": len(out) / best,
                     "median_err_px": float(np.nanmedian(m["distance"])),
                     "matched": int(np.isfinite(m["distance"]).sum())})
    table = pd.DataFrame(rows)
    speed = table.set_index("method")["peaks_per_s"]
    table["vs_pvoigt_scipy"] = table["peaks_per_s"] / speed["pvoigt-scipy"]
    table["vs_pvoigt_batch"] = table["peaks_per_s"] / speed["pvoigt"]
    return table


def network_method(model, backend: str = "auto"):
    from braggflow.nn.inference import predict_patches

    def run(data, mask):
        return predict_patches(data, mask=mask, model=model, batch_size=4096, backend=backend)

    return run


def network_speeds(model, data, mask, *, min_patches: int = 200_000, repeats: int = 3) -> dict:
    """Patches/s of a network with each inference backend, measured interleaved (median of repeats).

    The patches of all sets are repeated to at least ``min_patches``; the
    time includes the normalisation of the patches and the calibration of
    the errors (the whole :func:`predict_patches` call).
    """
    from braggflow.nn.inference import _onnx_available

    reps = max(1, int(np.ceil(min_patches / len(data))))
    big_d = np.concatenate([data] * reps)
    big_m = np.concatenate([mask] * reps)
    backends = ["torch"] + (["onnx"] if _onnx_available() else [])
    runs = {b: network_method(model, b) for b in backends}
    for run in runs.values():
        run(big_d[:4096], big_m[:4096])  # warm-up (model load, ONNX export, allocations)
    rates = {b: [] for b in backends}
    for _ in range(repeats):
        for b, run in runs.items():
            start = time.perf_counter()
            run(big_d, big_m)
            rates[b].append(len(big_d) / (time.perf_counter() - start))
    return {b: float(np.median(r)) for b, r in rates.items()}


def score(ps, res) -> dict:
    """Accuracy and calibration figures of one method on one set."""
    row, col = np.asarray(res["row"], float), np.asarray(res["col"], float)
    er, ec = row - ps.row, col - ps.col
    radial = np.hypot(er, ec)
    radial = np.where(np.isfinite(radial), radial, np.inf)
    p = ps.params
    ref = 1.1774 * np.sqrt(0.5 * (p["crlb_row"].to_numpy() ** 2 + p["crlb_col"].to_numpy() ** 2))
    fail = radial > FAIL_PX
    out = {
        "n": len(ps),
        "median_px": float(np.median(radial)),
        "p75_px": float(np.percentile(radial, 75)),
        "p95_px": float(np.percentile(radial, 95)),
        "median_ratio_crlb": float(np.median(radial / ref)),
        "failure_fraction": float(fail.mean()),
    }
    sr = np.asarray(res.get("row_err", np.full(len(ps), np.nan)), float)
    sc = np.asarray(res.get("col_err", np.full(len(ps), np.nan)), float)
    ok = ~fail & np.isfinite(sr) & np.isfinite(sc) & (sr > 0) & (sc > 0)
    if ok.sum() > 10:
        zr, zc = er[ok] / sr[ok], ec[ok] / sc[ok]
        out.update(z_std_row=float(np.std(zr)), z_std_col=float(np.std(zc)),
                   in_ellipse=float(np.mean(zr**2 + zc**2 <= 1)))
    else:
        out.update(z_std_row=np.nan, z_std_col=np.nan, in_ellipse=np.nan)
    return out


def plot_vs_snr(clean, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snr = clean.params["snr"].to_numpy()
    ref = 1.1774 * np.sqrt(0.5 * (clean.params["crlb_row"].to_numpy() ** 2 + clean.params["crlb_col"].to_numpy() ** 2))
    edges = np.geomspace(max(snr.min(), 1.0), snr.max() * 1.0001, 9)
    centres = np.sqrt(edges[:-1] * edges[1:])
    idx = np.clip(np.searchsorted(edges, snr, side="right") - 1, 0, len(centres) - 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    counts = np.bincount(idx, minlength=len(centres))
    keep = counts >= 10  # bins with fewer patches are left out

    def medians(values):
        return [np.median(values[idx == i]) for i in np.flatnonzero(keep)]

    ax.plot(centres[keep], medians(ref), "k-", lw=2, label="1.1774 x CRLB (ideal median)")
    for name, res in results.items():
        radial = np.hypot(np.asarray(res["row"]) - clean.row, np.asarray(res["col"]) - clean.col)
        radial = np.where(np.isfinite(radial), radial, np.inf)
        ax.plot(centres[keep], medians(radial), "o-", ms=4, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SNR (intensity / sqrt(intensity + 4 pi sigma^2 background))")
    ax.set_ylabel("median radial error (px)")
    ax.set_title("clean isolated peaks: error vs SNR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pipeline_table(methods: dict, n_frames: int, seed: int) -> pd.DataFrame:
    """Accuracy inside the pipeline: simulated frames -> find_peaks -> locate, matched to the truth.

    Here the patches are cut by the finder around each peak's highest pixel
    (the true centre can be 1-2 px off for broad and elongated peaks), and
    peaks of several kinds (Gaussian, pseudo-Voigt, elongated, broad,
    close neighbours, edge) share the frames.
    """
    from braggflow.find import find_peaks
    from braggflow.locate import locate
    from braggflow.simulate.frames import match_peaks, simulate_series

    series = simulate_series(n_frames, shape=(512, 512), n_peaks=150, seed=seed, gap=False, n_hot=0, n_dead=0)
    frames = [series.frames[i].astype(np.float32) for i in range(n_frames)]
    tables = [find_peaks(f).table for f in frames]
    rows = []
    for name, (method, model) in methods.items():
        dist, kinds, seconds = [], [], 0.0
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            found = locate(frame, tables[i], method=method, model=model)
            seconds += time.perf_counter() - start
            truth = series.truth[series.truth.frame == i].reset_index(drop=True)
            m = match_peaks(found.assign(frame=i), truth)
            m = m[np.isfinite(m["distance"])]
            dist.append(m["distance"].to_numpy())
            kinds.append(truth["kind"].to_numpy()[m["truth_index"].to_numpy()])
        d, k = np.concatenate(dist), np.concatenate(kinds)
        row = {"method": name, "matched": len(d), "median_px": np.median(d), "p95_px": np.percentile(d, 95),
               "locate_seconds": seconds}
        row.update({f"median_px_{kind}": np.median(d[k == kind]) for kind in np.unique(k)})
        rows.append(row)
    return pd.DataFrame(rows)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="patches per set (the clean set has 3n, split by SNR)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=Path("bench/results/localize"))
    parser.add_argument("--published-weights", type=Path, default=None, help="published BraggNN .pth to include")
    parser.add_argument("--models", nargs="*", default=None, help="shipped model names or files (default: all shipped)")
    parser.add_argument("--skip-fits", action="store_true", help="leave out the (slow) Gaussian and pseudo-Voigt fits")
    parser.add_argument("--locate-peaks", type=int, default=600,
                        help="peaks of the frame on which locate() is timed per method (0: skip)")
    parser.add_argument("--only-locate-speed", action="store_true", help="run only the locate() speed table")
    parser.add_argument("--only-blends", action="store_true",
                        help="run only the blend detection table (with --locate-peaks 0 to skip the speed table)")
    parser.add_argument("--pipeline-frames", type=int, default=4,
                        help="simulated 512 x 512 frames (150 peaks each) for the in-pipeline comparison (0: skip)")
    return parser.parse_args(argv)


def collect_methods(args) -> tuple[dict, dict, list]:
    """The methods to compare: name -> localizer, name -> whether it is a network, and the network model names.

    With ``--published-weights`` the published weights are converted (and
    calibrated) to a temporary file, recorded as ``args.published_weights_file``.
    """
    from braggflow.nn.files import list_models
    from braggflow.training.files import convert_weights

    methods = classical_methods()
    if args.skip_fits:
        methods = {"com": methods["com"]}
    is_network = {}
    if args.published_weights is not None:
        tmp = Path(tempfile.mkdtemp()) / "braggnn-published.pt"
        convert_weights(args.published_weights, tmp, calibrate=True, n_calibration=10000, seed=args.seed + 7)
        args.published_weights_file = tmp
        methods["braggnn-published"] = network_method(str(tmp))
        is_network["braggnn-published"] = True
    names = args.models if args.models is not None else [m["name"] for m in list_models()]
    for name in names:
        methods[name] = network_method(name)
        is_network[name] = True
    return methods, is_network, names


def method_speed(args, method: str, run_seconds: float, is_network: bool, all_d, all_m) -> float:
    """Patches per second of one method on one core (networks: the faster backend), printed."""
    if is_network:
        model = str(args.published_weights_file) if method == "braggnn-published" else method
        speeds = network_speeds(model, all_d, all_m)
        best = max(speeds, key=speeds.get)
        print(f"{method}: " + ", ".join(f"{v:.0f} patches/s with backend={b!r}" for b, v in speeds.items())
              + f" on one core; the table uses the faster, {best!r}")
        return speeds[best]
    speed = len(all_d) / run_seconds
    print(f"{method}: {speed:.0f} patches/s on one core")
    return speed


def set_rows(method: str, sets: dict, per_set: dict, recognised=None) -> list[dict]:
    """Score rows of one method: one per set, and the neighbour set's Sparrow subsets (with ``recognised``,
    the neighbour set's probable blends, also the blend set's recognised and not recognised pairs apart)."""
    rows = []
    for set_name, ps in sets.items():
        rows.append({"method": method, "set": set_name, **score(ps, per_set[set_name])})
        if set_name == "neighbour":
            for sub_name, sel in neighbour_subsets(ps, recognised).items():
                sub = {k: np.asarray(v)[sel] for k, v in per_set[set_name].items()}
                rows.append({"method": method, "set": sub_name, **score(ps[np.flatnonzero(sel)], sub)})
    return rows


def run_methods(args, methods: dict, is_network: dict, sets: dict) -> tuple[list, dict, dict]:
    """Every method on every set: score rows, clean-set centres per method, and speed per method.

    The calibration on the blend set (the neighbour set's unresolved pairs) is also scored apart for the pairs
    :func:`braggflow.locate.deblend.recognise_blends` recognises (they go to the joint fit) and the others
    (whose one-peak errors stand).
    """
    from braggflow.locate.deblend import recognise_blends

    rows, clean_results = [], {}
    recognised = recognise_blends(sets["neighbour"].data, sets["neighbour"].mask)[0] if "neighbour" in sets else None
    all_d = np.concatenate([s.data for s in sets.values()])
    all_m = np.concatenate([s.mask for s in sets.values()])
    speed = {}
    for method, run in methods.items():
        seconds = 0.0
        per_set = {}
        for set_name, ps in sets.items():
            start = time.perf_counter()
            per_set[set_name] = run(ps.data, ps.mask)
            seconds += time.perf_counter() - start
        speed[method] = method_speed(args, method, seconds, bool(is_network.get(method)), all_d, all_m)
        rows.extend(set_rows(method, sets, per_set, recognised))
        clean_keys = list(SNR_BINS)
        clean_results[method] = {
            k: np.concatenate([np.asarray(per_set[s][k], float) for s in clean_keys]) for k in ("row", "col")
        }
    return rows, clean_results, speed


def clean_patches(sets: dict):
    """The clean isolated peaks of all SNR bins as one PatchSet."""
    from braggflow.simulate.patches import PatchSet

    clean_sets = [sets[k] for k in SNR_BINS]
    return PatchSet(
        np.concatenate([s.data for s in clean_sets]), np.concatenate([s.mask for s in clean_sets]),
        np.concatenate([s.row for s in clean_sets]), np.concatenate([s.col for s in clean_sets]),
        pd.concat([s.params for s in clean_sets], ignore_index=True),
    )


def run_pipeline_comparison(args, methods: dict, names: list) -> None:
    """The in-pipeline comparison (``localize_pipeline.csv``), printed."""
    pipe_methods = {m: (m, None) for m in ("com", "gauss", "pvoigt") if m in methods}
    pipe_methods.update({name: ("braggnn", name) for name in names})
    pipe = pipeline_table(pipe_methods, args.pipeline_frames, args.seed)
    pipe.to_csv(args.out / "localize_pipeline.csv", index=False, float_format="%.5g")
    print("in the pipeline (simulated frames, finder-centred patches), radial error vs the truth:")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pipe.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)

    import torch

    torch.set_num_threads(1)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.locate_peaks > 0:
        speeds = locate_speed_table(args.locate_peaks, args.seed)
        speeds.to_csv(args.out / "localize_locate_speed.csv", index=False, float_format="%.5g")
        print("through locate() on one frame (same candidate peaks, one core):")
        print(speeds.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if args.only_locate_speed:
            return speeds
    sets = make_sets(args.n, args.seed)
    print(f"simulated {sum(len(s) for s in sets.values())} patches in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    blends = blend_detection_table(sets, seed=args.seed)
    blends.to_csv(args.out / "localize_blends.csv", index=False, float_format="%.5g")
    print("blends recognised and split by model selection (one component or two; detection on neighbour-unresolved, "
          "false alarms on single peaks):")
    print(blends.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if "neighbour" in sets:
        joint = joint_fit_calibration(sets["neighbour"])
        joint.to_csv(args.out / "localize_blends_joint.csv", index=False, float_format="%.5g")
        print("the two-component fit's member nearer the truth on the neighbour set (its errors' calibration):")
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(joint.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.only_blends:
        return blends

    methods, is_network, names = collect_methods(args)
    rows, clean_results, speed = run_methods(args, methods, is_network, sets)

    table = pd.DataFrame(rows)
    table["patches_per_s"] = table["method"].map(speed)
    for ref in ("pvoigt", "pvoigt-scipy"):
        if ref in speed:
            table[f"speed_vs_{ref}"] = table["patches_per_s"] / speed[ref]
    table.to_csv(args.out / "localize.csv", index=False, float_format="%.5g")

    plot_vs_snr(clean_patches(sets), clean_results, args.out / "localize_vs_snr.png")

    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.pipeline_frames > 0:
        run_pipeline_comparison(args, methods, names)
    print(f"wrote {args.out / 'localize.csv'} and {args.out / 'localize_vs_snr.png'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return table


if __name__ == "__main__":
    main()
