"""Benchmark of the learned grazing-incidence detector, with the classical finder on the same frame in the same run.

Usage::

    python3 bench/detect.py [--n-sim 100] [--model NAME_OR_FILE] [--no-real]

1. Held-out simulated frames (:func:`braggflow.simulate.gixd.simulate_gixd_set`,
   seed 9001, 16 detector setups of their own; training uses seeds 1 and 2):
   precision, recall and F1 of the boxes per class (a detection matches a true
   feature of its class when their IoU is >= 0.3 or its centre lies in the true
   box, one to one; detections on features too weak to be labelled are not
   counted), and the time per polar image.  Then the one-to-one metrics of
   :mod:`braggflow.training.metrics` on the same frames: Hungarian matching on
   (q, chi) within ``max(q_width / 2, 0.01)`` 1/Å and ``max(chi_width / 2, 2)``
   deg of the true feature (a ring: the gap between chi ranges), precision,
   recall, F1 and false positives per frame at the model's score thresholds,
   average precision (all-point interpolation) over the heat-map score from
   detections down to 0.05, and recall by visibility (tertiles of the true
   features' integrated SNR) and kind.
2. The real MAPbBr3 GIWAXS frame (``../shared/data/gixd_mapbbr3``; geometry of its
   README): the 12 powder lines its own I(q) shows above 8 sigma (cubic
   MAPbBr3: 100, 110, 200, 210, 211, 220, 221/300, 222, 320, 321, 322/410, 420;
   a line's position is the I(q) maximum, or 2 pi sqrt(N) / a with ``a`` fitted
   to the others when I(q) has none there).  A feature is on a line when its q
   is within 0.03 1/Å of it; a feature on no allowed line of the cubic cell
   (any N = h^2 + k^2 + l^2) is false.  The learned detector (end to end: remap,
   contrast, network, decoding) and the classical finder (``braggflow run``'s
   per-frame pipeline with the same geometry) are timed on the same frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

# coverage of one frame: a true feature is found when a detection (its q, eta) lies inside its extent
# widened by COVERAGE_SLACK (0.02 1/Å) in q; the same measure scores hand labels
from braggflow.training.labels import COVERAGE_SLACK, coverage_counts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gixd_mapbbr3"
FRAME = "S123_MABr_A2_00865-00000.tif"
GEOMETRY = dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0, pixel_size_mm=0.2,
                wavelength_A=0.6888, incidence_angle_deg=0.5)
LINES = {"100": 1, "110": 2, "200": 4, "210": 5, "211": 6, "220": 8, "221/300": 9, "222": 12, "320": 13,
         "321": 14, "322/410": 17, "420": 20}
TOLERANCE = 0.03  # 1/Å
SIM_SEED = 9001
VAL_SEED = 22  # the shipped model's validation frames (stage 3 of its training; its training frames: seed 21)
VAL_SETUPS = 48


def simulated(n: int, detector) -> None:
    """Precision/recall per class on held-out simulated frames, and the time per polar image."""
    from braggflow.nn.detector import FRAME_CLASSES, detect_polar, detection_scores
    from braggflow.simulate.gixd import simulate_gixd_set
    from braggflow.training.detector import frame_class_targets

    frames = simulate_gixd_set(n, SIM_SEED, n_setups=16)
    pairs, seconds, probs, labels, low = [], [], [], [], []
    for fr in frames:
        start = time.perf_counter()
        pred = detect_polar(fr.image, fr.grid.q, fr.grid.chi, detector)
        seconds.append(time.perf_counter() - start)
        pairs.append((pred, fr.truth))
        low.append((detect_polar(fr.image, fr.grid.q, fr.grid.chi, detector,
                                 thresholds={c: AP_FLOOR for c in detector.thresholds}), fr.truth))
        probs.append([pred.attrs.get(f"p_{c}", np.nan) for c in FRAME_CLASSES])
        labels.append(frame_class_targets(fr.truth))
    scores = detection_scores(pairs)
    n_true = sum(int(t["visible"].sum()) for _, t in pairs)
    print(f"\n## held-out simulated frames: {n} frames (seed {SIM_SEED}), {n_true} labelled features")
    print("| class | true | found | false | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|")
    for cls, r in scores.iterrows():
        print(f"| {cls} | {int(r.tp + r.fn)} | {int(r.tp)} | {int(r.fp)} | {r.precision:.3f} | {r.recall:.3f} "
              f"| {r.f1:.3f} |")
    print(f"time per 256 x 256 polar image (contrast + network + decoding): {1000 * np.median(seconds):.0f} ms median")
    probs, labels = np.array(probs, dtype=float), np.array(labels) > 0.5
    if np.isfinite(probs).all():
        print("\nframe classes (independent: a frame can hold several kinds; predicted = probability >= 0.5)")
        print("| class | frames with it | predicted | right | precision | recall | accuracy |")
        print("|---|---|---|---|---|---|---|")
        for k, c in enumerate(FRAME_CLASSES):
            have, said = labels[:, k], probs[:, k] >= 0.5
            tp = int(np.sum(have & said))
            print(f"| {c} | {int(have.sum())} | {int(said.sum())} | {tp} | {tp / max(said.sum(), 1):.3f} | "
                  f"{tp / max(have.sum(), 1):.3f} | {np.mean(have == said):.3f} |")
        from braggflow.pipeline.learned import SKIP_EMPTY_DEFAULT

        has = np.array([bool(t["visible"].any()) if len(t) else False for _, t in pairs])
        skip = probs[:, 0] >= SKIP_EMPTY_DEFAULT
        print(f"frames.skip_empty {SKIP_EMPTY_DEFAULT} (watch --skip-empty) skips {int(np.sum(skip & has))} of "
              f"{int(has.sum())} frames with a labelled feature and {int(np.sum(skip & ~has))} of {int((~has).sum())} "
              "without")
    else:
        print("(the model has no frame-class head)")
    one_to_one(pairs, low, detector.thresholds)


AP_FLOOR = 0.05  # smallest heat-map score of the detections behind the precision-recall curve


def one_to_one(pairs: list, low: list, thresholds: dict) -> None:
    """The one-to-one metrics of :mod:`braggflow.training.metrics` on the held-out simulated frames.

    ``pairs`` holds the detections at the model's score thresholds, ``low`` those of
    the same frames down to :data:`AP_FLOOR` (for average precision), each with the
    frame's truth.
    """
    from braggflow.training.metrics import CHI_TOL_MIN, Q_TOL_MIN, detection_metrics, recall_by, visibility_classes

    same = detection_metrics(low, threshold=thresholds)
    anyk = detection_metrics(low, threshold=thresholds, same_kind=False)
    greedy = detection_metrics(pairs, method="greedy")
    n_frames = len(pairs)
    print(f"\n## one-to-one metrics on the same {n_frames} frames: Hungarian matching on (q, chi); a match "
          f"needs |dq| <= max(q_width / 2, {Q_TOL_MIN}) 1/Å and dchi <= max(chi_width / 2, {CHI_TOL_MIN}) deg "
          "(a ring: the gap between chi ranges), the same kind unless said; AP: all-point interpolated area "
          f"under the precision-recall curve over the heat-map score, detections down to {AP_FLOOR}")
    shown = ", ".join(f"{k} {v}" for k, v in thresholds.items())
    n_kept = sum(int(np.sum(p["score"].to_numpy() >= p["kind"].map(thresholds).to_numpy())) for p, _ in low)
    n_low, n_shipped = sum(len(p) for p, _ in low), sum(len(p) for p, _ in pairs)
    print(f"precision, recall, F1 at the model's score thresholds ({shown}; {n_kept} detections, "
          f"{n_shipped} from the detector at those thresholds), AP from {n_low}")
    print("| class | true | matched | false | precision | recall | F1 | false per frame | AP |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [*((c, same.loc[c]) for c in same.index), ("all, any kind", anyk.loc["all"])]
    for name, r in rows:
        print(f"| {name} | {int(r.true)} | {int(r.tp)} | {int(r.fp)} | {r.precision:.3f} | {r.recall:.3f} | "
              f"{r.f1:.3f} | {r.fp_per_frame:.2f} | {r.ap:.3f} |")
    classes = [c for c in same.index if c != "all"]
    print("kind not required to agree, recall by true kind: "
          + ", ".join(f"{c} {anyk.loc[c, 'recall']:.3f}" for c in classes))
    print(f"mean AP over the classes: {np.nanmean(same.loc[classes, 'ap']):.3f}; greedy matching instead "
          f"(by decreasing score, each detection the nearest free feature): {int(greedy.loc['all', 'tp'])} matched, "
          f"F1 {greedy.loc['all', 'f1']:.3f} (Hungarian {int(same.loc['all', 'tp'])}, {same.loc['all', 'f1']:.3f})")
    snr = np.concatenate([t.loc[t["visible"].to_numpy(dtype=bool), "snr"].to_numpy(dtype=float) for _, t in pairs])
    _, edges = visibility_classes(snr)
    tagged = [(p, t.assign(visibility=visibility_classes(t["snr"].to_numpy(dtype=float), edges)[0],
                           vis_kind=lambda d: d["visibility"] + "/" + d["kind"])) for p, t in pairs]
    by_vis = recall_by(tagged, "visibility")
    by_both = recall_by(tagged, "vis_kind")
    print(f"\nrecall by visibility (tertiles of the visible true features' integrated SNR, the truth's ``snr``: "
          f"weak < {edges[0]:.1f} <= medium < {edges[1]:.1f} <= strong) and kind, at the model's thresholds")
    print("| visibility | SNR | true | found | recall | ring | arc | spot |")
    print("|---|---|---|---|---|---|---|---|")
    bounds = {"weak": f"8-{edges[0]:.0f}", "medium": f"{edges[0]:.0f}-{edges[1]:.0f}", "strong": f">= {edges[1]:.0f}"}
    for v in ("strong", "medium", "weak"):
        r = by_vis.loc[v]
        cells = []
        for c in classes:
            key = f"{v}/{c}"
            cells.append(f"{by_both.loc[key, 'recall']:.2f} ({int(by_both.loc[key, 'true'])})" if key in by_both.index
                         else "-")
        print(f"| {v} | {bounds[v]} | {int(r.true)} | {int(r.found)} | {r.recall:.3f} | {' | '.join(cells)} |")


def line_positions(frame: np.ndarray, geometry) -> tuple[dict, float]:
    """The 12 lines' q (the frame's I(q) maxima within 0.04 1/Å of the cubic prediction) and the fitted a."""
    from braggflow.phases.workflow import observed_rings

    rings, _ = observed_rings(frame, geometry, min_snr=8.0)
    a0 = 5.93
    found, estimates = {}, []
    for name, n in LINES.items():
        q0 = 2 * np.pi * np.sqrt(n) / a0
        near = rings[np.abs(rings["q"] - q0) < 0.04]
        if len(near):
            found[name] = float(near["q"].iloc[np.argmin(np.abs(near["q"] - q0))])
            estimates.append(2 * np.pi * np.sqrt(n) / found[name])
    a = float(np.median(estimates))
    return {name: found.get(name, 2 * np.pi * np.sqrt(n) / a) for name, n in LINES.items()}, a


def line_figures(q: np.ndarray, lines: dict, a: float) -> dict:
    """Lines covered, features on no allowed line, and the median distance to the nearest line."""
    q = q[np.isfinite(q)]
    allowed_n = np.array(sorted({h * h + k * k + m * m for h in range(8) for k in range(8) for m in range(8)} - {0}))
    allowed = 2 * np.pi * np.sqrt(allowed_n) / a
    covered = [name for name, ql in lines.items() if np.any(np.abs(q - ql) <= TOLERANCE)]
    dist = np.min(np.abs(q[:, None] - allowed[None]), axis=1) if len(q) else np.zeros(0)
    return dict(n=len(q), covered=covered, false=int(np.sum(dist > TOLERANCE)),
                median_dq=float(np.median(dist)) if len(q) else float("nan"))


def classical(frame: np.ndarray) -> tuple:
    """The classical per-frame pipeline (find, locate, integrate, geometry) and its time."""
    from braggflow.geometry import GeometryConfig
    from braggflow.pipeline import process_frame
    from braggflow.pipeline.config import Config

    config = Config(geometry=GeometryConfig(**GEOMETRY))
    start = time.perf_counter()
    table = process_frame(frame, config=config)
    return table, time.perf_counter() - start


def real(detector) -> None:
    """Lines covered and false features on the MAPbBr3 frame, learned and classical, with their times."""
    import fabio

    from braggflow.geometry import Geometry
    from braggflow.nn.detector import detect_frame

    path = DATA / FRAME
    if not path.is_file():
        print(f"\n(real frame skipped: {path} is absent)")
        return
    frame = fabio.open(str(path)).data.astype(np.float64)
    geometry = Geometry.from_config(GEOMETRY)
    lines, a = line_positions(frame, geometry)
    detect_frame(frame, geometry, detector)  # first call: builds pyFAI's integrator for the frame shape
    times = []
    for _ in range(3):
        start = time.perf_counter()
        learned = detect_frame(frame, geometry, detector)
        times.append(time.perf_counter() - start)
    table, t_classical = classical(frame)
    rows = [("learned detector", learned["q"].to_numpy(), float(np.median(times))),
            ("classical finder", table["q"].to_numpy(), t_classical)]
    print(f"\n## real MAPbBr3 GIWAXS frame (2048 x 2048): 12 lines, a = {a:.4f} Å from its I(q), tolerance "
          f"{TOLERANCE} 1/Å")
    print("| finder | features | lines covered (of 12) | on no allowed line | on allowed lines | median abs(dq) to "
          "nearest allowed line | time per frame |")
    print("|---|---|---|---|---|---|---|")
    for name, q, t in rows:
        f = line_figures(q, lines, a)
        share = 1 - f["false"] / f["n"] if f["n"] else float("nan")
        print(f"| {name} | {f['n']} | {len(f['covered'])} | {f['false']} | {100 * share:.0f} % | "
              f"{f['median_dq']:.4f} | {t:.2f} s |")
        print(f"|   lines: {', '.join(f['covered'])} | | | | | | |")
    kinds = learned["kind"].value_counts().to_dict()
    print(f"learned features by kind: {kinds}")


def coverage(n: int, detector=None, *, validation: bool = False) -> None:
    """Coverage precision, recall and F1 of the classical and the learned finder on held-out simulated frames.

    Each simulated polar frame is drawn on its detector
    (:func:`braggflow.simulate.gixd.detector_image`) and goes through
    ``braggflow run``'s per-frame pipeline (:func:`braggflow.pipeline.process_frame`)
    with ``find.method`` components (the default) and learned, on the same frame
    in the same run.  ``detector`` (a loaded model) replaces the shipped one in
    the learned finder.  With ``validation`` the frames are the validation
    frames (seed :data:`VAL_SEED`, :data:`VAL_SETUPS` setups, as
    :func:`braggflow.simulate.gixd.simulate_gixd_set` draws them), on which
    the decoding is tuned, instead of the held-out ones.
    """
    from braggflow.pipeline import learned, prepare, process_frame
    from braggflow.pipeline.config import Config
    from braggflow.simulate.gixd import detector_image, random_setups, simulate_gixd_frame

    seed = VAL_SEED if validation else SIM_SEED
    setups = random_setups(min(VAL_SETUPS, n), VAL_SEED) if validation else random_setups(16, SIM_SEED)
    finders = {"classical (components)": Config(), "learned": Config(find={"method": "learned"})}
    sums = {k: np.zeros(4, dtype=int) for k in finders}
    seconds = {k: [] for k in finders}
    contexts = {}
    for i in range(n):
        k_setup = i % len(setups)
        setup = setups[k_setup]
        frame = simulate_gixd_frame(np.random.default_rng([VAL_SEED, i, 1] if validation else [SIM_SEED, 1, i]), setup)
        image, mask = detector_image(frame, setup.shape)
        for name, config in finders.items():
            key = (name, k_setup)
            if key not in contexts:
                contexts[key] = prepare(config, shape=setup.shape, mask=mask)  # pixels of bins the setup does not see
                contexts[key].geometry = setup.geometry
                if detector is not None and name == "learned":
                    contexts[key].learned = learned.LearnedFinder(
                        learned.PolarLookup.build(setup.geometry, setup.shape, mask), learned.QxyQz(setup.geometry),
                        setup.geometry.replace(incidence_angle_deg=None), detector)
            start = time.perf_counter()
            table = process_frame(image.astype(np.float32), config=config, context=contexts[key])
            seconds[name].append(time.perf_counter() - start)
            sums[name] += coverage_counts(table, frame.truth)
    print(f"\n## coverage on {'validation' if validation else 'held-out'} simulated frames: {n} frames (seed {seed}), "
          f"{sums['learned'][1]} visible "
          f"true features; found = a detection within the feature's extent (radial half-width + {COVERAGE_SLACK} "
          "1/Å, its chi range)")
    print("| finder | detections | inside a true feature | precision | true found | recall | coverage F1 | "
          "median time per frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (found, n_true, good, n_pred) in sums.items():
        p = good / n_pred if n_pred else float("nan")
        r = found / n_true if n_true else float("nan")
        f1 = 2 * p * r / (p + r) if p + r > 0 else float("nan")
        print(f"| {name} | {n_pred} | {good} | {p:.3f} | {found} of {n_true} | {r:.3f} | **{f1:.3f}** | "
              f"{np.median(seconds[name]):.2f} s |")


def skip_threshold(n: int, detector) -> None:
    """p_empty of simulated validation frames: what ``frames.skip_empty`` P skips, with and without features.

    Frames of :func:`braggflow.simulate.gixd.simulate_gixd_set` (seed :data:`VAL_SEED`,
    :data:`VAL_SETUPS` setups: the shipped model's validation frames, never its
    training frames, nor the held-out seed), their polar images as simulated;
    a frame has features when one of its labelled features is visible.
    """
    from braggflow.nn.detector import detect_polar
    from braggflow.simulate.gixd import random_setups, simulate_gixd_frame

    setups = random_setups(VAL_SETUPS, VAL_SEED)
    p_empty, has, n_det = [], [], []
    for i in range(n):
        fr = simulate_gixd_frame(np.random.default_rng([VAL_SEED, i, 1]), setups[i % len(setups)])
        found = detect_polar(fr.image, fr.grid.q, fr.grid.chi, detector)
        p_empty.append(found.attrs["p_empty"])
        has.append(bool(fr.truth["visible"].any()) if len(fr.truth) else False)
        n_det.append(len(found))
    p_empty, has, n_det = np.array(p_empty), np.array(has), np.array(n_det)
    print(f"\n## frames.skip_empty on {n} validation frames (seed {VAL_SEED}): {int(has.sum())} with features, "
          f"{int((~has).sum())} without")
    print("| P | frames with features skipped | their detections lost | frames without skipped | their false "
          "detections dropped |")
    print("|---|---|---|---|---|")
    for level in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9):
        skip = p_empty >= level
        print(f"| {level:g} | {int(np.sum(skip & has))} ({100 * np.mean(skip[has]):.1f} %) | "
              f"{int(n_det[skip & has].sum())} | {int(np.sum(skip & ~has))} ({100 * np.mean(skip[~has]):.1f} %) | "
              f"{int(n_det[skip & ~has].sum())} of {int(n_det[~has].sum())} |")
    low = np.sort(p_empty[has])[::-1]
    k = int(np.floor(0.01 * has.sum()))  # at most this many frames with features may be skipped
    print(f"smallest P skipping <= 1 % of the frames with features: just above {low[k]:.3f}")


DECODING_SETTINGS = {
    "shipped": {},
    "nms 5 x 5": {"nms_size": 5},
    "nms 7 x 7": {"nms_size": 7},
    "rings >= 3 px apart": {"ring_gap": 3},
    "ring segments merged": {"merge_rings": True},
    "boxes >= 1 bin": {"min_half_bins": 1.0},
    "ring threshold 0.2": {"thresholds": {"ring": 0.2}},
    "ring threshold 0.35": {"thresholds": {"ring": 0.35}},
    "arc threshold 0.15": {"thresholds": {"arc": 0.15}},
    "arc threshold 0.2": {"thresholds": {"arc": 0.2}},
    "arc threshold 0.3": {"thresholds": {"arc": 0.3}},
    "spot threshold 0.2": {"thresholds": {"spot": 0.2}},
    "spot threshold 0.3": {"thresholds": {"spot": 0.3}},
    "arc hysteresis 0.15": {"low": {"arc": 0.15}},
    "arc and spot hysteresis 0.15": {"low": {"arc": 0.15, "spot": 0.15}},
}
"""Decoding options compared by :func:`decoding` (keyword options of :func:`braggflow.nn.detector.decode`; thresholds
replace the model's for the classes named)."""


def decoding(n: int, detector) -> None:
    """Coverage and one-to-one figures of each of :data:`DECODING_SETTINGS` on validation frames.

    The validation frames (seed :data:`VAL_SEED`, :data:`VAL_SETUPS` setups) are
    drawn on their detectors and rebinned as ``find.method: learned`` does
    (:class:`braggflow.pipeline.learned.PolarLookup`); the network runs once per
    frame, and each setting decodes its outputs (:func:`~braggflow.nn.detector.decode`,
    :func:`~braggflow.nn.detector.refine_q`; spots are not relocated on the
    detector as the pipeline does).  One-to-one figures are those of every
    detection the setting returns (no score cut).
    """
    from braggflow.nn.detector import contrast_image, decode, refine_q
    from braggflow.pipeline.learned import PolarLookup
    from braggflow.simulate.gixd import detector_image, random_setups, simulate_gixd_frame
    from braggflow.training.metrics import detection_metrics

    setups = random_setups(min(VAL_SETUPS, n), VAL_SEED)
    lookups, frames = {}, []
    for i in range(n):
        k = i % len(setups)
        fr = simulate_gixd_frame(np.random.default_rng([VAL_SEED, i, 1]), setups[k])
        image, mask = detector_image(fr, setups[k].shape)
        if k not in lookups:
            lookups[k] = PolarLookup.build(setups[k].geometry, setups[k].shape, mask)
        polar = lookups[k].rebin(image.astype(np.float32))[0]
        out = detector.raw(contrast_image(polar)[None])[0]
        frames.append((out, polar, lookups[k], fr.truth))
    print(f"\n## decoding on {n} validation frames (seed {VAL_SEED}): coverage and one-to-one (every detection)")
    print("| decoding | detections | coverage precision | coverage recall | coverage F1 | one-to-one precision | "
          "recall | F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, options in DECODING_SETTINGS.items():
        options = dict(options)
        thresholds = {**detector.thresholds, **options.pop("thresholds", {})}
        sums, pairs = np.zeros(4, dtype=int), []
        for out, polar, lookup, truth in frames:
            found = decode(out, np.isfinite(polar), lookup.q, lookup.chi, thresholds=thresholds,
                           **{**detector.decoding, **options})
            if len(found):
                found = refine_q(found, polar, lookup.q, lookup.chi)
            sums += coverage_counts(found, truth)
            pairs.append((found, truth))
        hit, n_true, good, n_pred = sums
        p, r = good / max(n_pred, 1), hit / max(n_true, 1)
        m = detection_metrics(pairs).loc["all"]
        print(f"| {name} | {n_pred} | {p:.3f} | {r:.3f} | {2 * p * r / max(p + r, 1e-12):.3f} | "
              f"{m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} |")


def speed(n_frames: int) -> None:
    """``braggflow run`` on the MAPbBr3 frame repeated ``n_frames`` times, learned and classical finders."""
    import os
    import subprocess
    import sys
    import tempfile

    from braggflow.io.results import read_frames

    path = DATA / FRAME
    if not path.is_file():
        print(f"\n(speed skipped: {path} is absent)")
        return
    g = GEOMETRY
    geo = ["--distance", str(g["distance_mm"]), "--beam-row", str(g["beam_center_row"]), "--beam-col",
           str(g["beam_center_col"]), "--pixel-size", str(g["pixel_size_mm"]), "--wavelength", str(g["wavelength_A"]),
           "--incidence-angle", str(g["incidence_angle_deg"])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"\n## braggflow run on the MAPbBr3 frame repeated {n_frames} times (OMP_NUM_THREADS="
          f"{env['OMP_NUM_THREADS']})")
    print("| finder | wall time of the command | frames/s (command) | median time per frame (frames table) | "
          "frames/s (per frame) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for i in range(n_frames):
            (folder / f"frame_{i:03d}.tif").symlink_to(path)
        for finder in ("learned", "components"):
            out = Path(tmp) / f"{finder}.h5"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "braggflow", "run", str(folder), "-o", str(out), "--finder", finder,
                            *geo], check=True, env=env, capture_output=True)
            wall = time.perf_counter() - start
            per = float(np.median(read_frames(out)["time"].to_numpy()[1:]))  # the first frame builds the lookups
            print(f"| {finder} | {wall:.1f} s | {n_frames / wall:.2f} | {per:.3f} s | {1 / per:.2f} |")


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    import torch

    from braggflow.nn.detector import load_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sim", type=int, default=100)
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--n-coverage", type=int, default=32, help="simulated frames for the coverage table (0: none)")
    parser.add_argument("--n-speed", type=int, default=10,
                        help="repeats of the real frame for the speed table (0: none)")
    parser.add_argument("--only", choices=["all", "coverage", "speed", "skip", "decoding"], default="all")
    parser.add_argument("--n-decoding", type=int, default=64, help="validation frames for --only decoding")
    parser.add_argument("--n-skip", type=int, default=400, help="validation frames for --only skip")
    parser.add_argument("--validation", action="store_true",
                        help="--only coverage on the validation frames (seed 22) instead of the held-out ones")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only == "coverage":
        coverage(args.n_coverage, load_detector(args.model) if args.model else None, validation=args.validation)
        return
    if args.only == "speed":
        speed(args.n_speed)
        return
    if args.only == "skip":
        skip_threshold(args.n_skip, load_detector(args.model))
        return
    if args.only == "decoding":
        decoding(args.n_decoding, load_detector(args.model))
        return
    detector = load_detector(args.model)
    print(f"detector {detector.name} ({detector.path.name if detector.path else ''}), "
          f"backend {'onnxruntime' if detector.session is not None else 'torch'}")
    if args.n_sim:
        simulated(args.n_sim, detector)
    if args.n_coverage:
        coverage(args.n_coverage, detector if args.model else None)
    if not args.no_real:
        real(detector)
        if args.n_speed:
            speed(args.n_speed)


if __name__ == "__main__":
    main()
