"""Learned detection of grazing-incidence features: detect, train-detector."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from braggflow.cli.common import (
    JSON_HELP,
    BeamCol,
    BeamRow,
    Distance,
    Energy,
    IncidenceAngle,
    PixelSize,
    Poni,
    Wavelength,
    console,
    friendly_errors,
    print_table,
    write_json,
)
from braggflow.cli.phases import _geometry, _read_frame

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""


def _print_features(features, limit: int = 40) -> None:
    columns = ["kind", "score", "q", "chi", "q_width", "chi_width", "q_xy", "q_z", "row", "col"]
    rows = [[r.kind, f"{r.score:.2f}", f"{r.q:.4f}", f"{r.chi:.1f}", f"{r.q_width:.4f}", f"{r.chi_width:.1f}",
             f"{r.q_xy:.3f}", f"{r.q_z:.3f}", f"{r.row:.1f}", f"{r.col:.1f}"]
            for r in features.head(limit).itertuples()]
    print_table(f"{len(features)} features", columns, rows, optional=("row", "col", "q_width", "chi_width"),
                right=tuple(columns[1:]))
    if len(features) > limit:
        console.print(f"(first {limit} of {len(features)} by score; all of them with --out FILE)")


@commands.command("detect")
@friendly_errors
def detect_command(
    frame: Path = typer.Argument(..., help="detector frame (any format braggflow reads; its first frame)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the feature table (.csv, .parquet or .json)"),
    cif: list[str] = typer.Option([], "--cif", help="candidate phase CIF: identify phases from the features"),
    phase: list[str] = typer.Option([], "--phase", help="candidate phase YAML: identify phases from the features"),
    model: str | None = typer.Option(None, "--model", help="shipped detector name or detector file (.pt)"),
    threshold: float | None = typer.Option(None, "--threshold", help="smallest score kept, all classes (0-1)"),
    json_file: Path | None = typer.Option(None, "--json", help="write the phase ranking as JSON (with --cif/--phase)"),
    incidence_angle: IncidenceAngle = None,
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
) -> None:
    """Find rings, arcs and spots of a grazing-incidence frame with the learned detector.

    The frame is remapped to (q, chi), contrast-corrected and passed through the detector network; the table holds
    one row per feature (kind, score, q, chi, box extents, q_xy, q_z, detector row/col). With --cif/--phase the
    features go to phase identification (spot matching on their q values).
    """
    from braggflow.errors import ConfigError
    from braggflow.nn.detector import detect_frame, load_detector

    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"--threshold {threshold}: a score in (0, 1) is needed")
    if not frame.exists():
        raise FileNotFoundError(f"{frame}: no such file")
    geometry = _geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence_angle, None)
    if geometry is None:
        raise ConfigError(f"{frame}: detection needs the geometry: give --poni FILE or --distance, --beam-row, "
                          "--beam-col, --pixel-size and --wavelength (or --energy)")
    detector = load_detector(model)
    thresholds = {c: threshold for c in ("ring", "arc", "spot")} if threshold is not None else None
    features = detect_frame(_read_frame(str(frame)), geometry, detector, thresholds=thresholds)
    _print_features(features)
    if features.attrs.get("frame_class"):
        probs = ", ".join(f"{k} {features.attrs[k]:.2f}" for k in ("p_empty", "p_spots", "p_arcs", "p_rings"))
        console.print(f"frame class: {features.attrs['frame_class']} ({probs})")
    if out is not None:
        if out.suffix.lower() == ".parquet":
            features.to_parquet(out)
        elif out.suffix.lower() == ".json":
            write_json(features.to_dict(orient="records"), out)
        else:
            features.to_csv(out, index=False)
        console.print(f"features written to {out}")
    if cif or phase:
        from braggflow.cli.phases import _print
        from braggflow.phases.workflow import identify_table, load_phases

        result, _ = identify_table(features, load_phases(list(cif) + list(phase)), geometry=geometry, mode="spots")
        _print({0: result})
        if json_file is not None:
            json_file.write_text(json.dumps({"0": result.to_json()}, indent=1, default=str))


@commands.command("train-detector")
@friendly_errors
def train_detector_command(
    out: Path = typer.Option(..., "--out", "-o", help="detector file (.pt) to write"),
    n_train: int = typer.Option(1600, "--n-train", help="simulated training frames"),
    n_val: int = typer.Option(100, "--n-val", help="simulated validation frames"),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="frames per step (default 16; with --labels: 4)"),
    lr: float | None = typer.Option(None, "--lr", help="peak learning rate (default 3e-3; with --labels: 3e-4)"),
    width: int = typer.Option(8, "--width", help="network width (channels of the first stage)"),
    seed: int = typer.Option(0, "--seed", help="seed of the weights and batch order"),
    sim_seed: int = typer.Option(1, "--sim-seed", help="seed of the simulated frames (validation: +1)"),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="stop after the epoch passing this time"),
    onnx: Path | None = typer.Option(None, "--onnx", help="also export the network to this ONNX file"),
    init: str | None = typer.Option(
        None, "--init", help="shipped detector name or detector file (.pt) to start from (fine-tuning)"),
    class_balanced: bool = typer.Option(
        False, "--class-balanced", help="normalise the heat-map loss per class (else over all classes)",
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="label file (docs/detector.md): fine-tune on the labelled --frames instead of "
                               "simulated frames"),
    frames: list[Path] = typer.Option([], "--frames", help="labelled frame file (repeat for more; with --labels)"),
    patience: int = typer.Option(3, "--patience", help="with --labels: stop after this many epochs without a lower "
                                                       "validation loss"),
    mask: Path | None = typer.Option(None, "--mask", help="with --labels: mask file of the frames (nonzero = bad)"),
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
) -> None:
    """Train the grazing-incidence detector on simulated polar frames (the defaults give the shipped model), or
    fine-tune it on a user's labelled frames (--labels FILE --frames FRAME ... --init MODEL and the geometry)."""
    from braggflow.training.detector import DetectorTrainConfig, export_detector_onnx, train_detector

    if labels is not None:
        net = _fine_tune_on_labels(labels, frames, out, init=init, epochs=epochs,
                                   batch_size=4 if batch_size is None else batch_size,
                                   lr=3e-4 if lr is None else lr, patience=patience, seed=seed, threads=threads,
                                   max_seconds=max_seconds, mask=mask,
                                   geometry=_geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy,
                                                      None, None))
        if onnx is not None:
            export_detector_onnx(net, onnx)
            console.print(f"ONNX export written to {onnx}")
        return
    lr, batch_size = 3e-3 if lr is None else lr, 16 if batch_size is None else batch_size
    config = DetectorTrainConfig(n_train=n_train, n_val=n_val, epochs=epochs, batch_size=batch_size, lr=lr,
                                 width=width, seed=seed, sim_seed=sim_seed, threads=threads, max_seconds=max_seconds,
                                 class_balanced=class_balanced, init=init)
    net, metrics = train_detector(config, out, log=lambda line: console.print(line))
    val = metrics["val"]["all"]
    console.print(f"wrote {out}: best epoch {metrics['best_epoch']}, validation precision {val['precision']:.3f}, "
                  f"recall {val['recall']:.3f}, F1 {val['f1']:.3f}")
    if onnx is not None:
        export_detector_onnx(net, onnx)
        console.print(f"ONNX export written to {onnx}")


def _fine_tune_on_labels(labels: Path, frames: list[Path], out: Path, *, init, epochs, batch_size, lr, patience, seed,
                         threads, max_seconds, mask, geometry):
    """``train-detector --labels``: fine-tune a detector on labelled frames; returns the network."""
    from braggflow.cli.phases import _read_mask
    from braggflow.errors import ConfigError, InputFileError
    from braggflow.training.labels import fine_tune_detector, labelled_frame, read_labels

    if not frames:
        raise ConfigError("--labels needs the labelled frames: give --frames FILE (once per frame)")
    if geometry is None:
        raise ConfigError("--labels needs the geometry of the frames: give --poni FILE or --distance, --beam-row, "
                          "--beam-col, --pixel-size and --wavelength (or --energy)")
    table = read_labels(labels, geometry=geometry)
    named = set(table["frame"]) - {""}
    if not named and len(frames) > 1:
        raise InputFileError(f"{labels}: no frame column, so it labels one frame, but {len(frames)} --frames are given")
    unknown = named - {f.name for f in frames}
    if unknown:
        raise InputFileError(f"{labels}: labels frame(s) {', '.join(sorted(unknown))} not given with --frames")
    items = []
    for path in frames:
        if not path.is_file():
            raise InputFileError(f"--frames {path}: no such file")
        image = _read_frame(str(path))
        rows = table[table["frame"] == path.name] if named else table
        bad = _read_mask(mask, image.shape) if mask is not None else None
        items.append(labelled_frame(image, geometry, rows.reset_index(drop=True), mask=bad, name=path.name))
        console.print(f"{path.name}: {len(rows)} labelled features")
    detector, metrics = fine_tune_detector(init, items, out, epochs=epochs, lr=lr, batch_size=batch_size,
                                           patience=patience, seed=seed, threads=threads, max_seconds=max_seconds,
                                           log=lambda line: console.print(line))
    console.print(f"wrote {out}: best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, loss on the "
                  f"labelled frames {metrics['initial_val_loss']:.4f} -> {metrics['best_val_loss']:.4f}")
    return detector.network


@commands.command("detectors")
@friendly_errors
def detectors_command(
    json_file: Path | None = typer.Option(None, "--json", help=JSON_HELP + "; full SHA-256 and every metric"),
) -> None:
    """List the shipped grazing-incidence detector models (the MANIFEST's "detectors" section)."""
    from braggflow.nn.detector import list_detectors

    rows = list_detectors()
    if json_file is not None:
        write_json(rows, json_file)
        if str(json_file) == "-":
            return
    if not rows:
        console.print("no shipped detector")
        return
    columns = ["name", "arch", "params", "KiB", "sha256", "val precision", "val recall", "val F1"]
    cells = []
    for r in rows:
        val = r.get("metrics", {}).get("val", {}).get("all", {})
        cells.append([r["name"], r["arch"], str(r["params"]), f"{r['onnx']['size_bytes'] / 1024:.0f}",
                      r["onnx"]["sha256"][:8], f"{val.get('precision', float('nan')):.3f}",
                      f"{val.get('recall', float('nan')):.3f}", f"{val.get('f1', float('nan')):.3f}"])
    print_table("shipped detector models", columns, cells, optional=("KiB", "params", "arch"),
                right=("params", "KiB", "val precision", "val recall", "val F1"))
