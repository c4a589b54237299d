"""The learned and classical finders on the hand-labelled frames of the Pilatus GIWAXS series.

Usage::

    python3 bench/detect_pilatus.py            # coverage table of both finders (the shipped detector)
    python3 bench/detect_pilatus.py --picture tests/data/giwaxs_labels/giwaxs_gixsgui_labels.png
    python3 bench/detect_pilatus.py --fine-tune [--epochs 5]   # leave-one-out fine-tuning on the labels

The frames are three of ``../shared/data/giwaxs_gixsgui`` (a Pilatus 1M-F scan of
the incidence angle); their features were labelled by hand on the frames
remapped to (q, chi), in ``tests/data/giwaxs_labels/giwaxs_gixsgui_labels.csv``
(the file's comments give the geometry, estimated from the frames themselves,
and what was left unlabelled).  ``--picture`` draws the labels on the remapped
frames.

Both finders run through ``braggflow run``'s per-frame pipeline
(:func:`braggflow.pipeline.process_frame`: ``find.method`` components, the
default, and learned) with the module gaps masked, on the same frames in the
same run, and are scored with the coverage measure of ``bench/detect.py``
(:func:`coverage_counts`): a labelled feature is found when a detection's
(``q``, ``eta``) lies inside its extent (q range widened by 0.02 1/Å either
side, its chi range); a detection is inside when it lies in some labelled
feature's extent.

``--fine-tune``: for each labelled frame, the shipped detector is fine-tuned
(:func:`braggflow.training.labels.fine_tune_detector`, lr 3e-4, batch 2, score
thresholds chosen again on the training labels) on the other two frames' labels
and scored on the held-out frame (``detect_frame``
with the torch backend, before and after), with the training loss on the
held-out frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "giwaxs_gixsgui"
LABELS = ROOT / "tests" / "data" / "giwaxs_labels" / "giwaxs_gixsgui_labels.csv"
FRAMES = ("giwaxs1_s087_000.tif", "giwaxs1_s087_008.tif", "giwaxs1_s087_016.tif")
GEOMETRY = dict(distance_mm=203.3, beam_center_row=996.3, beam_center_col=880.7, pixel_size_mm=0.172,
                energy_keV=10.6)
"""Estimated from the frames (the label file's comments say how); the incidence angle is each frame's."""
PILATUS_1M = dict(shape=(1043, 981), module=(195, 487), gap=(17, 7))


def incidence_angle(name: str) -> float:
    """Incidence angle of ``giwaxs1_s087_NNN.tif``: 0.8052 + 0.1 x NNN deg (the data README)."""
    return 0.8052 + 0.1 * int(Path(name).stem.rsplit("_", 1)[1])


def geometry(name: str):
    """The series' geometry with the incidence angle of frame ``name``."""
    from braggflow.geometry import Geometry

    return Geometry.from_config({**GEOMETRY, "incidence_angle_deg": incidence_angle(name)})


def gap_mask() -> np.ndarray:
    """Module gaps of a Pilatus 1M (5 x 2 modules of 195 x 487 px, gaps of 17 rows and 7 columns): True = gap."""
    rows, cols = PILATUS_1M["shape"]
    (mr, mc), (gr, gc) = PILATUS_1M["module"], PILATUS_1M["gap"]
    mask = np.zeros((rows, cols), bool)
    for k in range(1, rows // (mr + gr) + 1):
        mask[k * (mr + gr) - gr:k * (mr + gr)] = True
    for k in range(1, cols // (mc + gc) + 1):
        mask[:, k * (mc + gc) - gc:k * (mc + gc)] = True
    return mask


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``name`` (counts) and its bad pixels (module gaps, and pixels marked -2)."""
    import fabio

    frame = fabio.open(str(DATA / name)).data.astype(np.float64)
    return frame, gap_mask() | (frame < 0)


def draw_labels(output: Path) -> Path:
    """The labelled frames remapped to (q, chi) (log contrast) with the labels' boxes: one panel per frame."""
    import matplotlib
    from matplotlib.patches import Rectangle

    from braggflow.nn.detector import contrast_image, polar_image
    from braggflow.training.labels import read_labels
    from braggflow.viz import style

    colours = {"ring": "#00e5ff", "arc": "#ffb000", "spot": "#7cfc00"}
    fig = style.figure((13.0, 4.2), 80)
    axes = fig.subplots(1, len(FRAMES), sharey=True)
    for ax, name in zip(axes, FRAMES):
        frame, mask = load(name)
        image, q, chi = polar_image(frame, geometry(name), mask=mask)
        rows = chi < 5
        shown = np.where(np.isfinite(image), contrast_image(image)[0], np.nan)[rows]
        cmap = matplotlib.colormaps["magma"].with_extremes(bad="white")
        dq, dchi = q[1] - q[0], chi[1] - chi[0]
        im = ax.imshow(shown, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest",
                       extent=(q[0] - dq / 2, q[-1] + dq / 2, chi[rows][0] - dchi / 2, chi[rows][-1] + dchi / 2))
        for r in read_labels(LABELS, frame=name).itertuples():
            ax.add_patch(Rectangle((r.q_lo, r.chi_lo), r.q_hi - r.q_lo, r.chi_hi - r.chi_lo, fill=False,
                                   ec=colours[r.kind], lw=1.2))
        ax.set_title(f"{name}, α = {incidence_angle(name):.2f}°", fontsize=9)
        ax.set_xlabel(style.axis_label("q", "1/Å"))
    axes[0].set_ylabel(style.axis_label("χ", "deg"))
    from matplotlib.lines import Line2D

    axes[-1].legend(handles=[Line2D([], [], color=c, label=k) for k, c in colours.items()], loc="lower right",
                    fontsize=8, framealpha=0.7)
    fig.colorbar(im, ax=axes, label="log contrast (0-1)", shrink=0.9)
    fig.suptitle("hand labels of the Pilatus GIWAXS series (boxes: centre ± 2σ)", fontsize=10)
    fig.savefig(output, dpi=fig.dpi)
    return output


def finder_tables(name: str) -> dict:
    """Peak tables of frame ``name`` from the classical and the learned finder (``braggflow run``'s per-frame
    pipeline, module gaps masked); each with its ``seconds``."""
    import time

    from braggflow.pipeline import prepare, process_frame
    from braggflow.pipeline.config import Config

    frame, mask = load(name)
    geo = {**GEOMETRY, "incidence_angle_deg": incidence_angle(name)}
    finders = {"classical (components)": {}, "learned": {"method": "learned"}}
    out = {}
    for finder, find in finders.items():
        config = Config(geometry=geo, find=find) if find else Config(geometry=geo)
        context = prepare(config, shape=frame.shape, mask=mask)
        start = time.perf_counter()
        table = process_frame(frame.astype(np.float32), config=config, context=context)
        out[finder] = (table, time.perf_counter() - start)
    return out


def coverage_table() -> dict:
    """Coverage sums of each finder over the labelled frames: (labels found, labels, detections inside, detections).

    Returns
    -------
    sums : dict
        Finder name -> dict with ``found``, ``n_true``, ``inside``, ``n_pred``
        (int), ``seconds`` (list, per frame) and ``found_by_kind`` ({kind: (found, n)}).
    """

    from braggflow.training.labels import coverage_counts, read_labels

    sums = {}
    for name in FRAMES:
        truth = read_labels(LABELS, frame=name)
        for finder, (table, seconds) in finder_tables(name).items():
            s = sums.setdefault(finder, dict(found=0, n_true=0, inside=0, n_pred=0, seconds=[], found_by_kind={}))
            found, n_true, inside, n_pred = coverage_counts(table, truth)
            s["found"] += found
            s["n_true"] += n_true
            s["inside"] += inside
            s["n_pred"] += n_pred
            s["seconds"].append(seconds)
            for kind in ("ring", "arc", "spot"):
                part = truth[truth["kind"] == kind]
                f, n = coverage_counts(table, part)[:2] if len(part) else (0, 0)
                a, b = s["found_by_kind"].get(kind, (0, 0))
                s["found_by_kind"][kind] = (a + f, b + n)
    return sums


def print_coverage(sums: dict) -> None:
    """The coverage table as Markdown."""
    n = sums[next(iter(sums))]["n_true"]
    print(f"\n## hand-labelled Pilatus GIWAXS frames ({len(FRAMES)} frames, {n} labelled features); found = a "
          "detection within the feature's extent (q range + 0.02 1/Å either side, its chi range)")
    print("| finder | detections | inside a labelled feature | precision | labels found | recall | coverage F1 | "
          "rings found | spots found | median time per frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in sums.items():
        p = s["inside"] / s["n_pred"] if s["n_pred"] else float("nan")
        r = s["found"] / s["n_true"] if s["n_true"] else float("nan")
        f1 = 2 * p * r / (p + r) if p + r > 0 else float("nan")
        kinds = s["found_by_kind"]
        print(f"| {name} | {s['n_pred']} | {s['inside']} | {p:.3f} | {s['found']} of {s['n_true']} | {r:.3f} | "
              f"**{f1:.3f}** | {kinds['ring'][0]} of {kinds['ring'][1]} | {kinds['spot'][0]} of {kinds['spot'][1]} | "
              f"{np.median(s['seconds']):.2f} s |")


def fine_tune_leave_one_out(epochs: int) -> None:
    """Fine-tune on two labelled frames, score on the third; each frame held out once."""

    import torch

    from braggflow.nn.detector import detect_frame, load_detector
    from braggflow.training.labels import (
        coverage_counts,
        detector_loss,
        fine_tune_detector,
        labelled_frame,
        read_labels,
    )

    torch.set_num_threads(1)
    labelled = {}
    for name in FRAMES:
        frame, mask = load(name)
        labelled[name] = labelled_frame(frame, geometry(name), read_labels(LABELS, frame=name), mask=mask, name=name)
    print(f"\n## leave-one-out fine-tuning on the hand labels ({epochs} epochs at most, lr 3e-4, batch 2, patience 3)")
    print("| held-out frame | shipped: labels found | shipped: detections inside | fine-tuned: labels found | "
          "fine-tuned: detections inside | loss on the held-out frame, shipped -> fine-tuned | thresholds chosen "
          "(ring, arc, spot) |")
    print("|---|---|---|---|---|---|---|")
    for held in FRAMES:
        torch.manual_seed(0)
        shipped = load_detector(backend="torch")
        torch.manual_seed(0)
        start = load_detector(backend="torch")
        tuned, _ = fine_tune_detector(start, [labelled[n] for n in FRAMES if n != held], epochs=epochs, lr=3e-4,
                                      batch_size=2, patience=3, log=lambda line: None)
        frame, mask = load(held)
        truth = labelled[held].truth
        cells = []
        for det in (shipped, tuned):
            found, n_true, inside, n_pred = coverage_counts(detect_frame(frame, geometry(held), det, mask=mask), truth)
            cells += [f"{found} of {n_true}", f"{inside} of {n_pred}"]
        losses = [detector_loss(d, [labelled[held]]) for d in (shipped, tuned)]
        th = tuned.thresholds
        print(f"| {held} | {' | '.join(cells)} | {losses[0]:.3f} -> {losses[1]:.3f} | {th['ring']}, {th['arc']}, "
              f"{th['spot']} |")


def main() -> None:
    """Draw the labels picture, or print the coverage table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picture", type=Path, default=None, help="draw the labels on the frames to this PNG")
    parser.add_argument("--fine-tune", action="store_true", help="leave-one-out fine-tuning on the labels")
    parser.add_argument("--epochs", type=int, default=5, help="with --fine-tune: most epochs")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"(skipped: {DATA} is absent)")
        return
    if args.picture is not None:
        print(f"labels drawn to {draw_labels(args.picture)}")
        return
    if args.fine_tune:
        fine_tune_leave_one_out(args.epochs)
        return
    print_coverage(coverage_table())


if __name__ == "__main__":
    main()
