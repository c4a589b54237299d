"""Model commands: train, models, convert-weights."""

from __future__ import annotations

from pathlib import Path

import typer

from braggflow.cli.common import JSON_HELP, console, err_console, friendly_errors, print_table, write_json

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""


def _int_tuple(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace("_", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        from braggflow.errors import ConfigError

        raise ConfigError(f"{name} must be comma-separated positive integers (e.g. 128,128), got {text!r}")
    return values


@commands.command("train")
@friendly_errors
def train_command(
    simulated: int = typer.Option(200_000, "--simulated", help="simulated training patches (0: none)"),
    frames: list[Path] | None = typer.Option(
        None, "--frames", help="frame file or folder to take labelled patches from (repeat for several)"
    ),
    labels: str = typer.Option("pvoigt", "--labels", help="fit that labels patches from frames: pvoigt or gauss"),
    max_frames: int | None = typer.Option(None, "--max-frames", help="use at most this many frames per source"),
    arch: str = typer.Option(
        "locnet", "--arch",
        help="architecture: locnet (braggflow's MLP, with uncertainty) or braggnn (the published BraggNN CNN)"),
    hidden: str | None = typer.Option(None, "--hidden", help="locnet hidden layer widths, e.g. 256,128"),
    fcsz: str | None = typer.Option(None, "--fcsz", help="braggnn dense layer widths, e.g. 16,8,4,2"),
    size: int = typer.Option(11, "--size", help="patch side, px (odd)"),
    kind: str = typer.Option("mixed", "--kind", help="simulated patch kind (mixed: all kinds)"),
    extra_kind: list[str] | None = typer.Option(
        None, "--extra-kind", help="extra simulated patches of one kind, KIND=N (repeat), e.g. elongated=200000"
    ),
    sim_sigma: str = typer.Option("0.5,4", "--sim-sigma", help="simulated peak sigma range LO,HI, px"),
    recentre: float = typer.Option(
        0.5, "--recentre", help="fraction of simulated patches cut around their brightest pixel, as the finder does"
    ),
    epochs: int = typer.Option(30, "--epochs", help="maximum epochs"),
    batch_size: int = typer.Option(1024, "--batch-size"),
    lr: float = typer.Option(3e-3, "--lr", help="peak learning rate"),
    patience: int = typer.Option(8, "--patience", help="early stopping: epochs without a better validation loss"),
    val_fraction: float = typer.Option(0.1, "--val-fraction"),
    gain: float = typer.Option(1.0, "--gain", help="detector gain, ADU per photon"),
    seed: int = typer.Option(0, "--seed"),
    sim_seed: int = typer.Option(1, "--sim-seed", help="seed of the simulated patches"),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
    init: str | None = typer.Option(None, "--init",
                                       help="start from this model's weights (shipped name or file): fine-tuning"),
    warmup_epochs: int = typer.Option(
        2, "--warmup-epochs", help="locnet: epochs of squared-error loss before the likelihood (0 to fine-tune)"
    ),
    out: Path = typer.Option(Path("braggflow-model.pt"), "--out", "-o", help="model file to write"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a localizer on simulated patches and/or your own frames (labels from pseudo-Voigt fits)."""
    from braggflow.training.train import TrainConfig, train_model

    extra = {}
    for item in extra_kind or []:
        name, _, count = item.partition("=")
        try:
            extra[name.strip()] = int(count)
        except ValueError:
            from braggflow.errors import ConfigError

            raise ConfigError(f"--extra-kind expects KIND=N (e.g. elongated=200000), got {item!r}") from None
    sim_options = {}
    if sim_sigma:
        try:
            lo, hi = (float(v) for v in sim_sigma.split(","))
        except ValueError:
            from braggflow.errors import ConfigError

            raise ConfigError(f"--sim-sigma expects LO,HI in px (e.g. 0.5,4), got {sim_sigma!r}") from None
        sim_options["sigma"] = [lo, hi]
    arch_kwargs = {}
    if hidden is not None:
        arch_kwargs["hidden"] = _int_tuple(hidden, "--hidden")
    if fcsz is not None:
        arch_kwargs["fcsz"] = _int_tuple(fcsz, "--fcsz")
    config = TrainConfig(
        arch=arch, arch_kwargs=arch_kwargs, size=size, simulated=simulated, kind=kind, extra_kinds=extra,
        sim_options=sim_options, recentre=recentre, sim_seed=sim_seed,
        frames=[str(f) for f in (frames or [])], labels=labels, max_frames=max_frames, gain=gain, epochs=epochs,
        batch_size=batch_size, lr=lr, patience=patience, val_fraction=val_fraction, seed=seed, threads=threads,
        init=init, warmup_epochs=warmup_epochs,
    )
    result = train_model(config, out=out, progress=not quiet, console=err_console)
    m = result.metrics
    console.print(f"wrote {result.path} (sha256 {result.sha256[:16]}...)")
    if frames:
        from braggflow.nn.files import load_model

        stored = load_model(result.path).train_config
        total = int(stored.get("n_train", 0)) + int(stored.get("n_val", 0))
        real = total - simulated - sum(int(n) for n in extra.values() if int(n) > 0)
        console.print(f"patches from --frames: {real} of {total} ({labels} fits, "
                      f"{len(frames)} source{'s' if len(frames) != 1 else ''}); the rest simulated")
    line = (f"validation ({m['val_patches']} patches): median {m['val_median_px']:.4f} px, "
            f"p95 {m['val_p95_px']:.4f} px")
    if "val_median_ratio_crlb" in m:
        line += f", median / (1.1774 CRLB) {m['val_median_ratio_crlb']:.2f}"
    console.print(line)
    console.print(
        f"errors: std(err/sigma) row {m['val_z_std_row']:.2f} col {m['val_z_std_col']:.2f}, "
        f"inside 1-sigma ellipse {m['val_in_ellipse']:.3f} (ideal 0.393); "
        f"{best_epoch_text(result.history, m, config)}, "
        f"{m['train_seconds']:.0f} s"
    )


def best_epoch_text(history: list[dict], metrics: dict, config) -> str:
    """Which epoch's weights were kept, and why when a warm-up epoch had a lower validation loss.

    Warm-up epochs (``config.warmup_epochs``, locnet) train on the squared
    error, so their validation loss is not the likelihood of the later epochs
    and does not compete with it; the kept epoch is the one with the lowest
    likelihood validation loss.

    Parameters
    ----------
    history : list of dict
        Per-epoch records (``epoch``, ``val_loss``).
    metrics : dict
        The run's metrics (``best_epoch``).
    config : braggflow.training.train.TrainConfig

    Returns
    -------
    text : str
    """
    best = metrics["best_epoch"]
    warm = int(getattr(config, "warmup_epochs", 0) or 0) if getattr(config, "arch", "locnet") == "locnet" else 0
    counted = [r for r in history if r["epoch"] > warm] or history
    text = f"best epoch {best} (lowest validation loss"
    if best is not None and counted:
        low = min(counted, key=lambda r: r["val_loss"])
        text += f" {low['val_loss']:.4f}"
    if warm and len(history) > warm:
        text += f" of epochs {warm + 1}-{len(history)}; epochs 1-{warm} warm up on the squared error)"
    else:
        text += ")"
    return text


@commands.command("models")
@friendly_errors
def models_command(
    json_file: Path | None = typer.Option(None, "--json", help=JSON_HELP + "; full SHA-256 and every metric"),
) -> None:
    """List the shipped localizer models.

    Columns: parameters, file size, the start of the SHA-256, the validation
    median radial error (px) and its ratio to the ideal 1.1774 x CRLB, and the
    calibration of the reported errors: std of error / sigma (1 is ideal) and
    the fraction inside the 1-sigma ellipse (0.393 is ideal).  A terminal
    narrower than the table gets fewer columns or one record per model; no
    name or checksum is shortened.
    """
    from braggflow.nn.files import list_models

    rows = list_models()
    if json_file is not None:
        write_json(rows, json_file)
        if str(json_file) == "-":
            return
    if not rows:
        console.print("no shipped models")
        return
    columns = ["name", "arch", "params", "KiB", "sha256", "med px", "/ref", "z std", "in 1σ"]
    cells = []
    for r in rows:
        m = r.get("metrics", {})
        # calibration figures after the final calibration when recorded, else the training validation ones
        pre = "calibration_" if "calibration_z_std_row" in m else "val_"
        zs = f"{(m[pre + 'z_std_row'] + m[pre + 'z_std_col']) / 2:.2f}" if pre + "z_std_row" in m else "-"
        cells.append([
            ("* " if r.get("default") else "") + r["name"],
            r["arch"],
            str(r["params"]),
            f"{r['size_bytes'] / 1024:.0f}",
            r["sha256"][:8],
            f"{m['val_median_px']:.4f}" if "val_median_px" in m else "-",
            f"{m['val_median_ratio_crlb']:.2f}" if "val_median_ratio_crlb" in m else "-",
            zs,
            f"{m[pre + 'in_ellipse']:.3f}" if pre + "in_ellipse" in m else "-",
        ])
    print_table("shipped localizer models", columns, cells, optional=("KiB", "/ref", "params", "z std", "in 1σ"),
                right=("params", "KiB", "med px", "/ref", "z std", "in 1σ"),
                caption="* default (used by --method nn without --model)")


@commands.command("convert-weights")
@friendly_errors
def convert_weights_command(
    weights: Path = typer.Argument(..., help="published BraggNN weights (.pth state_dict)"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="braggflow model file to write (default: WEIGHTS with .pt)",
    ),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate", help="calibrate row_err/col_err on simulated patches",
    ),
    calibration_patches: int = typer.Option(
        20000, "--calibration-patches", help="simulated patches for the calibration",
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Turn a published BraggNN .pth into a braggflow model file (use with run --method nn --model FILE)."""
    from braggflow.nn.files import load_model
    from braggflow.training.files import convert_weights

    path = convert_weights(weights, out, calibrate=calibrate, n_calibration=calibration_patches, seed=seed)
    model = load_model(path)
    console.print(
        f"wrote {path}: braggnn imgsz={model.arch_kwargs['imgsz']} fcsz={tuple(model.arch_kwargs['fcsz'])}, "
        f"{model.n_params} parameters, sha256 {model.sha256[:16]}..."
    )
    if "calibration_median_px" in model.metrics:
        console.print(f"calibration on {model.metrics['calibration_patches']} simulated patches: "
                      f"median radial error {model.metrics['calibration_median_px']:.4f} px")
