"""Benchmark of profile fitting: intensities of four peak kinds, deblending of close pairs, and the cost per frame.

One run, on one core:

* ``intensities``: isolated peaks of known flux (a grid 40 px apart on a
  1024 x 1024 frame, flux 2,000-50,000 photons log-uniform, sigma 0.8-1.8 px,
  background 50 photons/px, Poisson noise) of four kinds: round Gaussian,
  pseudo-Voigt (eta 0.3-0.8), Moffat (beta 2.5) and elongated rotated
  Gaussian (one axis 2-3 x the other, any angle).  Found, located (centre of
  mass) and integrated by summation and by profile fitting
  (``integrate(method=...)``); for each kind and method the median of
  intensity / truth, the std of (I - I_true) / intensity_err (and half the
  16-84 % range of it, robust to outliers), the std of intensity / truth,
  the fraction flagged SUMMED and the integration's CPU time (after a warm-up call).
* ``calibrate``: the deviance drop (one component minus two) of simulated
  single peaks (round Gaussian, pseudo-Voigt, elongated; seeds 9100-9102,
  apart from every benchmark's), whose 99.5th percentile sets
  ``braggflow.locate.deblend.DEBLEND_THRESHOLD``, and the fraction split at
  the threshold in use.
* ``recognise``: the deviance drop of simulated single peaks of the
  localization benchmark's population (``simulate_patches`` defaults: flux
  500-50,000, background 1-200 photons/px, sigma 0.5-3 px; round Gaussian
  and pseudo-Voigt of seed 9200, elongated 9300, broad 9400, edge 9600,
  apart from every benchmark's): its 99th percentile per kind, whose largest
  over round, pseudo-Voigt and elongated sets
  ``braggflow.locate.deblend.RECOGNITION_THRESHOLD``, and the fraction
  recognised as probable blends at the threshold in use (false alarms).
* ``screen``: the deblending screen (:func:`braggflow.locate.deblend.screen_statistics`)
  against the full test of every peak, on the close-pair frames below, the 24
  pinned benchmark frames and the calibration's single peaks: of the peaks the
  full test splits, the fraction the screen sends on (its recall), the peaks
  sent, false splits, and deblend's CPU time per peak both ways.
* ``pairs``: pairs of round Gaussian peaks 2, 3, 4, 5 and 6 px apart (the
  pinned frames' population: sigma 0.8-2.0 px, flux 2,000-50,000 each,
  background 50), on a grid 40 px apart, seeds 7000+: recall (true peaks
  matched within 1.5 px, one to one) and median error of the default
  ``locate`` (centre of mass) and with ``deblend=True``, the fraction of
  found peaks flagged BLENDED, and single peaks of the same population split
  (false alarms).
* ``pinned``: the 24 pinned benchmark frames (``benchmark_series``, as
  ``bench/pipeline.py`` scores them: matched one to one within 1.5 px):
  recall (all, pair members), precision and median error of ``locate`` with
  the centre of mass (the default) and the batched Gaussian fit, each without
  and with ``deblend=True``.
* ``frames``: the pinned benchmark frames (``benchmark_series``, as
  ``bench/pipeline.py``): ``process_frame`` with the default configuration
  after the first frame, and the extra cost of profile integration measured
  on the same frames (its integrate call against the summation's), as
  frames per second with profile integration off and on.

Run::

    python bench/deblend.py                       # everything (~10 min on one core)
    python bench/deblend.py --parts intensities   # one part
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

KINDS = ("gaussian", "pvoigt", "moffat", "elongated")
SEPARATIONS = (2.0, 3.0, 4.0, 5.0, 6.0)
SPACING = 40
BACKGROUND = 50.0


def grid_frame(kind: str, seed: int, *, shape: int = 1024, sigma=(0.8, 1.8), flux=(2000.0, 50000.0),
               separation: float | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """A frame of peaks (or pairs ``separation`` px apart) of one kind on a grid, and its truth."""
    from braggflow.profiles.render import moffat_profile, peak_profile

    rng = np.random.default_rng(seed)
    expected = np.full((shape, shape), BACKGROUND)
    truth = []
    half = 15
    for r in range(SPACING, shape - SPACING + 1, SPACING):
        for c in range(SPACING, shape - SPACING + 1, SPACING):
            centres = [(r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5))]
            if separation is not None:
                a = rng.uniform(0, np.pi)
                r0, c0 = centres[0]
                d = 0.5 * separation
                centres = [(r0 - d * np.cos(a), c0 - d * np.sin(a)), (r0 + d * np.cos(a), c0 + d * np.sin(a))]
            for r0, c0 in centres:
                s = rng.uniform(*sigma)
                f = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1])))
                gr, gc = np.arange(r - half, r + half + 1), np.arange(c - half, c + half + 1)
                if kind == "moffat":
                    p = moffat_profile(gr, gc, row=r0, col=c0, sigma_row=s, sigma_col=s, beta=2.5)
                elif kind == "pvoigt":
                    p = peak_profile(gr, gc, row=r0, col=c0, sigma_row=s, sigma_col=s, eta=rng.uniform(0.3, 0.8))
                elif kind == "elongated":
                    p = peak_profile(gr, gc, row=r0, col=c0, sigma_row=s * rng.uniform(2.0, 3.0), sigma_col=s,
                                     angle=rng.uniform(0, np.pi))
                else:
                    p = peak_profile(gr, gc, row=r0, col=c0, sigma_row=s, sigma_col=s)
                expected[r - half:r + half + 1, c - half:c + half + 1] += f * p
                truth.append((r0, c0, f))
    frame = rng.poisson(expected).astype(np.float32)
    return frame, pd.DataFrame(truth, columns=["row", "col", "intensity"]).assign(frame=0)


def intensities(seed: int = 100) -> pd.DataFrame:
    """The intensity table (see the module docstring)."""
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate
    from braggflow.locate import locate
    from braggflow.schema import Flag
    from braggflow.simulate.frames import match_peaks

    rows = []
    warm, _ = grid_frame("gaussian", seed, shape=128)  # compiled fits loaded before anything is timed
    found = find_peaks(warm)
    integrate(warm, locate(warm, found.table, labels=found.labels), labels=found.labels, method="profile")
    for i, kind in enumerate(KINDS):
        frame, truth = grid_frame(kind, seed + i)
        found = find_peaks(frame)
        table = locate(frame, found.table, labels=found.labels, regions=found.regions)
        for method in ("sum", "profile"):
            t0 = time.process_time()
            res = integrate(frame, table, labels=found.labels, regions=found.regions, method=method)
            seconds = time.process_time() - t0
            m = match_peaks(res, truth).dropna(subset=["found_index"])
            fi, ti = m["found_index"].to_numpy(int), m["truth_index"].to_numpy(int)
            inten = res["intensity"].to_numpy()[fi]
            err = res["intensity_err"].to_numpy()[fi]
            true = truth["intensity"].to_numpy()[ti]
            z = (inten - true) / err
            summed = (res["flags"].to_numpy()[fi] & Flag.SUMMED) != 0
            rows.append({"kind": kind, "method": method, "peaks": len(fi), "median_ratio": np.nanmedian(inten / true),
                         "std_ratio": np.nanstd(inten / true), "std_z": np.nanstd(z),
                         "z_16_84_half": np.diff(np.nanpercentile(z, [16, 84]))[0] / 2,
                         "summed": summed.mean(), "ms_per_peak": 1e3 * seconds / len(res)})
    return pd.DataFrame(rows)


def calibrate(n: int = 700) -> pd.DataFrame:
    """Deviance drops of simulated single peaks (the threshold's calibration)."""
    from braggflow.locate.deblend import DEBLEND_THRESHOLD, find_blends
    from braggflow.simulate.patches import simulate_patches

    rows, drops, screened = [], [], []
    cases = (("round Gaussian", "isotropic", {"pvoigt_fraction": 0.0}),
             ("pseudo-Voigt", "isotropic", {"pvoigt_fraction": 1.0}), ("elongated", "elongated", {}))
    for i, (name, kind, kw) in enumerate(cases):
        ps = simulate_patches(n, kind=kind, seed=9100 + i, intensity=(500.0, 50000.0), background=(5.0, 100.0),
                              **kw)
        res = find_blends(ps.data, ps.mask, threshold=np.inf, screen=False)  # every patch tested
        drops.append(res.drop)
        rows.append({"single peaks": name, "n": n, "p99": np.nanpercentile(res.drop, 99),
                     "p99.5": np.nanpercentile(res.drop, 99.5),
                     "split_at_threshold": np.nanmean(res.drop > DEBLEND_THRESHOLD),
                     "split_with_screen": find_blends(ps.data, ps.mask).blended.mean()})
        screened.append(rows[-1]["split_with_screen"])
    all_drops = np.concatenate(drops)
    rows.append({"single peaks": "all", "n": len(all_drops), "p99": np.nanpercentile(all_drops, 99),
                 "p99.5": np.nanpercentile(all_drops, 99.5),
                 "split_at_threshold": np.nanmean(all_drops > DEBLEND_THRESHOLD),
                 "split_with_screen": float(np.mean(screened))})
    print(f"threshold in use: {DEBLEND_THRESHOLD}")
    return pd.DataFrame(rows)


def recognise(n: int = 1000) -> pd.DataFrame:
    """False alarms of the blend recognition on single peaks, per kind (see the module docstring)."""
    from braggflow.locate.deblend import RECOGNITION_THRESHOLD, recognise_blends
    from braggflow.simulate.patches import simulate_patches

    iso = simulate_patches(3 * n, kind="isotropic", seed=9200)
    eta = iso.params["eta"].to_numpy()
    cases = {"round Gaussian": iso[np.flatnonzero(eta == 0)], "pseudo-Voigt": iso[np.flatnonzero(eta > 0)]}
    for kind, seed in (("elongated", 9300), ("broad", 9400), ("edge", 9600)):
        cases[kind] = simulate_patches(n, kind=kind, seed=seed)
    rows = []
    for name, ps in cases.items():
        probable, drop = recognise_blends(ps.data, ps.mask)
        drop = np.nan_to_num(drop, nan=-np.inf)
        rows.append({"single peaks": name, "n": len(ps), "p99": np.percentile(drop, 99),
                     "p99.5": np.percentile(drop, 99.5), "recognised": probable.mean()})
    print(f"recognition threshold in use: {RECOGNITION_THRESHOLD}")
    return pd.DataFrame(rows)


def pairs(seed: int = 7000) -> pd.DataFrame:
    """Recall and accuracy on close pairs, with and without deblending (see the module docstring)."""
    from braggflow.find import find_peaks
    from braggflow.locate import locate
    from braggflow.schema import Flag
    from braggflow.simulate.frames import match_peaks

    rows = []
    for i, sep in enumerate((None, *SEPARATIONS)):
        frame, truth = grid_frame("gaussian", seed + i, sigma=(0.8, 2.0), separation=sep)
        found = find_peaks(frame)
        for deblend in (False, True):
            t0 = time.process_time()
            out = locate(frame, found.table, labels=found.labels, regions=found.regions, deblend=deblend)
            seconds = time.process_time() - t0
            m = match_peaks(out, truth)
            dist = m["distance"].to_numpy(dtype=float)
            blended = (out["flags"].to_numpy() & Flag.BLENDED) != 0
            rows.append({"separation_px": "single" if sep is None else sep, "deblend": deblend,
                         "true": len(truth), "found": len(out), "recall": np.isfinite(dist).sum() / len(truth),
                         "median_err_px": np.nanmedian(dist), "blended_frac": blended.mean(),
                         "ms_per_peak": 1e3 * seconds / len(found.table)})
    return pd.DataFrame(rows)


def screen(n_frames: int = 24) -> pd.DataFrame:
    """The deblending screen against the full test (every peak tested): of the peaks the full test splits,
    the fraction the screen sends on (its recall), the fraction of all peaks sent (its cost), and the single
    peaks split with the screen (false alarms); on the close-pair frames, the pinned frames and the simulated
    single peaks of the threshold's calibration (seeds 9100-9102)."""
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.locate import locate
    from braggflow.locate.deblend import deblend, find_blends
    from braggflow.pipeline import Config, prepare
    from braggflow.schema import Flag
    from braggflow.simulate.frames import benchmark_series
    from braggflow.simulate.patches import simulate_patches

    rows = []

    def compare(frame, table, labels, regions, mask=None):
        """BLENDED rows of the located table deblended with every peak tested and with the screen; seconds."""
        located = locate(frame, table, method="gauss", mask=mask, labels=labels, regions=regions)
        split, seconds = {}, {}
        for screened in (False, True):
            t0 = time.process_time()
            out = deblend(frame, located, mask=mask, labels=labels, screen=screened)
            seconds[screened] = time.process_time() - t0
            split[screened] = (out["flags"].to_numpy()[:len(located)] & Flag.BLENDED) != 0
        return split, seconds, len(located)

    acc = {}

    def add(name, split, seconds, n):
        a = acc.setdefault(name, {"peaks": 0, "split_full": 0, "split_both": 0, "split_screen_only": 0,
                                  "s_full": 0.0, "s_screen": 0.0})
        a["peaks"] += n
        a["split_full"] += int(split[False].sum())
        a["split_both"] += int((split[False] & split[True]).sum())
        a["split_screen_only"] += int((split[True] & ~split[False]).sum())
        a["s_full"] += seconds[False]
        a["s_screen"] += seconds[True]

    for i, sep in enumerate((None, *SEPARATIONS)):
        frame, _ = grid_frame("gaussian", 7000 + i, sigma=(0.8, 2.0), separation=sep)
        found = find_peaks(frame)
        split, seconds, n = compare(frame, found.table, found.labels, found.regions)
        add("single peaks (frame)" if sep is None else f"pairs {sep:g} px", split, seconds, n)
    series = benchmark_series(n_frames)
    config = Config()
    ctx = prepare(config, shape=series.frames.shape[1:], dtype=series.frames.dtype)
    for i in range(n_frames):
        frame, mask = correct_frame(series.frames[i], mask=ctx.mask, config=config.correct)
        found = find_peaks(frame, mask=mask, config=config.find)
        split, seconds, n = compare(frame, found.table, found.labels, found.regions, mask)
        add(f"pinned frames ({n_frames})", split, seconds, n)
    for name, a in acc.items():
        rows.append({"set": name, "peaks": a["peaks"], "split (full test)": a["split_full"],
                     "screen recall": a["split_both"] / max(a["split_full"], 1),
                     "split by the screened only": a["split_screen_only"],
                     "ms/peak full": 1e3 * a["s_full"] / a["peaks"],
                     "ms/peak screened": 1e3 * a["s_screen"] / a["peaks"]})
    cases = (("round Gaussian", "isotropic", {"pvoigt_fraction": 0.0}),
             ("pseudo-Voigt", "isotropic", {"pvoigt_fraction": 1.0}), ("elongated", "elongated", {}))
    for i, (name, kind, kw) in enumerate(cases):
        ps = simulate_patches(700, kind=kind, seed=9100 + i, intensity=(500.0, 50000.0), background=(5.0, 100.0),
                              **kw)
        full = find_blends(ps.data, ps.mask, screen=False)
        scr = find_blends(ps.data, ps.mask)
        rows.append({"set": f"single {name} patches", "peaks": len(ps.data),
                     "split (full test)": int(full.blended.sum()),
                     "screen recall": (scr.screened & full.blended).sum() / max(full.blended.sum(), 1),
                     "split by the screened only": int((scr.blended & ~full.blended).sum()),
                     "sent": scr.screened.mean(), "split (screened)": scr.blended.mean()})
    return pd.DataFrame(rows)


def frames(n_frames: int = 12) -> pd.DataFrame:
    """Frames per second of the default run with summation and with profile integration (see the docstring)."""
    from braggflow.integrate import integrate
    from braggflow.pipeline import Config, prepare, process_frame
    from braggflow.simulate.frames import benchmark_series

    series = benchmark_series(n_frames)
    config = Config()
    ctx = prepare(config, shape=series.frames.shape[1:], dtype=series.frames.dtype)
    process_frame(series.frames[0], config=config, context=ctx, frame_index=0)  # imports, model load
    t0 = time.perf_counter()
    for i in range(1, n_frames):
        process_frame(series.frames[i], config=config, context=ctx, frame_index=i)
    per_frame = (time.perf_counter() - t0) / (n_frames - 1)
    # the integrate stage alone, by summation and by profile, on the same located peaks (as bench/pipeline.py's
    # stage breakdown calls the stages)
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.locate import locate

    extra = []
    for i in range(1, n_frames):
        frame, mask = correct_frame(series.frames[i], mask=ctx.mask, config=config.correct)
        found = find_peaks(frame, mask=mask, config=config.find)
        table = locate(frame, found.table, method=config.locate.method, mask=mask, labels=found.labels,
                       regions=found.regions)
        times = {}
        for method in ("sum", "profile"):
            t1 = time.perf_counter()
            integrate(frame, table, mask=mask, labels=found.labels, regions=found.regions, method=method)
            times[method] = time.perf_counter() - t1
        extra.append(times["profile"] - times["sum"])
    with_profile = per_frame + float(np.mean(extra))
    return pd.DataFrame([{"integration": "sum (default)", "s_per_frame": per_frame, "frames_per_s": 1 / per_frame},
                         {"integration": "profile", "s_per_frame": with_profile, "frames_per_s": 1 / with_profile}])


def pinned(n_frames: int = 24) -> pd.DataFrame:
    """Recall, precision and median error on the pinned benchmark frames: com (the default) and the batched
    Gaussian fit, each without and with deblend=True.

    The frames of ``bench/pipeline.py`` (``benchmark_series``), corrected and
    found as the default run does; a true peak is found when matched one to
    one within 1.5 px (``match_peaks``), as ``bench/pipeline.py`` scores it.
    """
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.locate import locate
    from braggflow.pipeline import Config, prepare
    from braggflow.simulate.frames import benchmark_series, match_peaks

    series = benchmark_series(n_frames)
    config = Config()
    ctx = prepare(config, shape=series.frames.shape[1:], dtype=series.frames.dtype)
    rows = []
    for method, deblend in (("com", False), ("com", True), ("gauss", False), ("gauss", True)):
        tables, seconds = [], 0.0
        for i in range(n_frames):
            frame, mask = correct_frame(series.frames[i], mask=ctx.mask, config=config.correct)
            found = find_peaks(frame, mask=mask, config=config.find)
            t0 = time.process_time()
            out = locate(frame, found.table, method=method, mask=mask, labels=found.labels, regions=found.regions,
                         deblend=deblend)
            seconds += time.process_time() - t0
            tables.append(out.assign(frame=i))
        found_all = pd.concat(tables, ignore_index=True)
        m = match_peaks(found_all, series.truth, max_distance=1.5)
        hit = m["found_index"].to_numpy() >= 0
        in_pair = series.truth.loc[m["truth_index"], "partner"].to_numpy() >= 0
        rows.append({"method": method, "deblend": deblend, "recall": hit.mean(), "recall_pairs": hit[in_pair].mean(),
                     "precision": hit.sum() / len(found_all), "median_err_px": float(np.nanmedian(m["distance"])),
                     "found": len(found_all), "locate_ms_per_frame": 1e3 * seconds / n_frames})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = ["intensities", "calibrate", "recognise", "screen", "pairs", "pinned", "frames"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--frames", type=int, default=12, help="pinned frames for the per-frame cost")
    args = parser.parse_args(argv)
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if "intensities" in args.parts:
            print("intensities of isolated peaks (median ratio to truth; std of (I - I_true) / intensity_err):")
            print(intensities().to_string(**fmt))
        if "calibrate" in args.parts:
            print("deblending threshold: deviance drop of single peaks (one component minus two):")
            print(calibrate().to_string(**fmt))
        if "recognise" in args.parts:
            print("blend recognition: deviance drop of single peaks (one component minus two), false alarms:")
            print(recognise().to_string(**fmt))
        if "screen" in args.parts:
            print("deblending screen against the full test (CPU time of deblend on located peaks):")
            print(screen().to_string(**fmt))
        if "pairs" in args.parts:
            print("close pairs (round Gaussians), default locate and with deblend=True:")
            print(pairs().to_string(**fmt))
        if "pinned" in args.parts:
            print("pinned benchmark frames (24): recall, precision, median error, without and with deblend=True:")
            print(pinned().to_string(**fmt))
        if "frames" in args.parts:
            print(f"pinned benchmark frames ({args.frames}), default run after the first frame:")
            print(frames(args.frames).to_string(**fmt))


if __name__ == "__main__":
    main()
