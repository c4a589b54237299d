"""Intensities on frames thresholded upstream: summation against the censored Gaussian fit.

Frames: :func:`braggflow.simulate.thresholded.simulate_thresholded_frame`
(36 round spots a frame on a grid 64 px apart, whole counts of gain 1, normal
background noise of 2 counts, only the pixels at or above 6 counts stored),
for several spot widths, flux ranges and profiles (round Gaussian, Moffat,
elongated Gaussian). Each frame goes through
the default pipeline (``braggflow.pipeline.analyse_frame``) twice, as a user
runs it: ``integrate.method: sum`` (the default) and ``profile`` (on these
frames the censored fit of :mod:`braggflow.integrate.censored`). Found peaks
are matched to the true spots within 2 px; printed per set:

* median intensity / true flux for each method, over all matched peaks (what
  a user gets: the peaks the fit could not describe keep their sums, flagged
  ``SUMMED``);
* the share of matched peaks the fit kept (not ``SUMMED``), and over those
  the median intensity / true flux and the std of ``(I - I_true) /
  intensity_err`` (1 for honest errors; the same std for the sums);
* the CPU time of a frame with each method (``time.process_time``, after one
  untimed frame).

    OMP_NUM_THREADS=1 python bench/thresholded.py [--frames 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SETS = [  # (profile, width px, flux range photons, aspect)
    ("gauss", 1.2, (150, 600)),
    ("gauss", 1.2, (600, 1500)),
    ("gauss", 1.2, (1500, 5000)),
    ("gauss", 0.8, (100, 400)),
    ("gauss", 1.7, (100, 300)),
    ("gauss", 1.7, (300, 1000)),
    ("gauss", 2.2, (150, 600)),
    ("moffat", 1.2, (150, 600)),
    ("moffat", 1.2, (1500, 5000)),
    ("gauss", 1.0, (150, 600), 2.5),
    ("gauss", 1.0, (600, 5000), 2.5),
]


def run_set(profile: str, width: float, flux: tuple[float, float], frames: int, aspect: float = 1.0) -> dict:
    """Both methods on ``frames`` simulated frames of one set; the figures of the table row."""
    from braggflow.pipeline import analyse_frame
    from braggflow.pipeline.config import Config, apply_overrides
    from braggflow.schema import Flag
    from braggflow.simulate.thresholded import simulate_thresholded_frame

    configs = {"sum": Config(), "profile": apply_overrides(Config(), ["integrate.method=profile"])}
    ratio = {k: [] for k in configs}
    z = {k: [] for k in configs}
    cpu = dict.fromkeys(configs, 0.0)
    fit_ratio, fit_z, kept = [], [], []
    warm = simulate_thresholded_frame(999, side=2, flux=flux, width=width, profile=profile, aspect=aspect).frame
    for config in configs.values():
        analyse_frame(warm, config=config)
    for seed in range(frames):
        sim = simulate_thresholded_frame(1000 + seed, flux=flux, width=width, profile=profile, aspect=aspect)
        for name, config in configs.items():
            start = time.process_time()
            table = analyse_frame(sim.frame, config=config).table
            cpu[name] += time.process_time() - start
            d = np.hypot(table["row"].to_numpy()[None, :] - sim.truth[:, :1],
                         table["col"].to_numpy()[None, :] - sim.truth[:, 1:2])
            hit = d.min(axis=1) < 2
            k = d.argmin(axis=1)[hit]
            true_flux = sim.truth[hit, 2]
            intensity, err = table["intensity"].to_numpy()[k], table["intensity_err"].to_numpy()[k]
            ratio[name] += list(intensity / true_flux)
            z[name] += list((intensity - true_flux) / err)
            if name == "profile":
                fitted = (table["flags"].to_numpy()[k] & Flag.SUMMED) == 0
                kept += list(fitted)
                fit_ratio += list(intensity[fitted] / true_flux[fitted])
                fit_z += list(((intensity - true_flux) / err)[fitted])
    return {"ratio": {k: float(np.median(v)) for k, v in ratio.items()},
            "std_z_sum": float(np.nanstd(z["sum"])), "std_z_fit": float(np.nanstd(fit_z)),
            "fit_ratio": float(np.median(fit_ratio)), "kept": float(np.mean(kept)), "found": len(kept) / (36 * frames),
            "ms": {k: 1e3 * v / frames for k, v in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6, help="frames per set (36 spots each)")
    args = parser.parse_args()
    print(f"thresholded frames: 36 spots each, {args.frames} frames a set, noise 2 counts, stored from 6 counts; "
          "1 core")
    print("| spots | sigma px | flux photons | found | I/true: sum | profile | fitted | I/true of the fitted | "
          "std z: sum | fitted | CPU ms/frame: sum | profile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for profile, width, flux, *aspect in SETS:
        r = run_set(profile, width, flux, args.frames, *aspect)
        kind = f"{profile} {aspect[0]} x 1, any angle" if aspect else profile
        print(f"| {kind} | {width} | {flux[0]:,}-{flux[1]:,} | {r['found']:.2f} | {r['ratio']['sum']:.3f} | "
              f"{r['ratio']['profile']:.3f} | {r['kept']:.2f} | {r['fit_ratio']:.3f} | {r['std_z_sum']:.2f} | "
              f"{r['std_z_fit']:.2f} | {r['ms']['sum']:.0f} | {r['ms']['profile']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
