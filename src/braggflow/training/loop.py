"""Training the localizer networks (``braggflow train``): the training run, step by step.

Training data come from the patch simulator, from a user's own frames
labelled by pseudo-Voigt fits of isolated peaks, or both
(:mod:`braggflow.training.sets`).  The patches are normalised once; every
batch is augmented by a random symmetry of the square (flips and
transposition, which the physics does not care about).  A random part is held
out for validation; the model with the best validation loss is kept
(checkpointed to the output file as it improves) and training stops early
when it has not improved for ``patience`` epochs.  Finally the errors are
calibrated on the validation patches (:mod:`braggflow.training.calibration`).

The losses are those of :mod:`braggflow.training.tensors`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braggflow.errors import ConfigError
from braggflow.training.config import TrainConfig
from braggflow.training.sets import LabelledPatches, patches_from_frames, simulated_training_patches
from braggflow.training.tensors import (
    augment,
    forward,
    loss,
    network_inputs,
    predicted_centres,
    training_targets,
)

__all__ = ["TrainResult", "train_model"]

_VAL_BATCH = 4096  # validation patches per forward pass
_MIN_PATCHES = 20


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    path : Path
        The model file written.
    sha256 : str
    metrics : dict
        Validation figures of the kept model.
    history : list of dict
        Per epoch: ``epoch, train_loss, val_loss, val_median_px, lr, seconds``.
    """

    path: Path
    sha256: str
    metrics: dict
    history: list


def train_model(
    config: TrainConfig | None = None,
    *,
    out: str | Path = "braggflow-model.pt",
    patches: LabelledPatches | None = None,
    progress: bool = True,
    console=None,
) -> TrainResult:
    """Train a localizer network and write it as a braggflow model file.

    Parameters
    ----------
    config : TrainConfig, optional
        Options; defaults train ``locnet`` on 200,000 simulated patches.
    out : str or Path
        Model file to write (rewritten whenever the validation loss improves,
        so an interrupted run leaves its best model).
    patches : LabelledPatches, optional
        Training patches to use instead of (or before) simulating /
        reading frames; when given, ``config.simulated`` and
        ``config.frames`` are not used.
    progress : bool
        Show a rich progress bar (epoch, loss, validation error in px).
    console : rich.console.Console, optional

    Returns
    -------
    result : TrainResult

    Raises
    ------
    ConfigError
        For invalid options.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022) (BraggNN and its training recipe);
    Nix and Weigend, "Estimating the mean and variance of the target
    probability distribution", ICNN (1994) (Gaussian likelihood loss).
    """
    import torch

    config = (config or TrainConfig()).validate()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t_start = time.perf_counter()
    if patches is None:
        patches = _collect_patches(config, progress=progress, console=console)
    train, val = _split(patches, config)
    network, arch_kwargs = _build_network(config)
    output = _ModelFile(Path(out), config.arch, arch_kwargs, config.size, _train_config(config, train, val))
    trainer = _Trainer(network, train, val, config, _Bar(_progress_bar(progress, console)))
    checkpoint = _Checkpoint(output, patience=config.patience)
    history = _fit(trainer, checkpoint, config)
    localizer = output.localizer(network, checkpoint.state)
    calibration, errors = _calibrate(localizer, val)
    metrics = {
        "best_epoch": int(checkpoint.epoch),
        "epochs_run": len(history),
        "train_seconds": round(time.perf_counter() - t_start, 1),
        **_validation_metrics(val, *errors),
    }
    sha = output.write(network, metrics, calibration=calibration)
    return TrainResult(path=output.path, sha256=sha, metrics=metrics, history=history)


# --------------------------------------------------------------------------- data


def _collect_patches(config: TrainConfig, *, progress: bool, console) -> LabelledPatches:
    """The training patches the config asks for: from frames, simulated, then the extra kinds."""
    parts = []
    if config.frames:
        parts.append(
            patches_from_frames(config.frames, size=config.size, labels=config.labels, gain=config.gain,
                                max_frames=config.max_frames)
        )
    if console is not None and progress and (config.simulated or config.extra_kinds):
        extra = "".join(f" + {n} {k}" for k, n in config.extra_kinds.items())
        console.print(f"simulating {config.simulated} {config.kind}{extra} training patches ...")
    if config.simulated:
        parts.append(simulated_training_patches(config.simulated, size=config.size, kind=config.kind,
                                                seed=config.sim_seed, gain=config.gain, recentre=config.recentre,
                                                sim_options=config.sim_options))
    for i, (kind, count) in enumerate(sorted(config.extra_kinds.items()), 1):
        if int(count) > 0:
            parts.append(simulated_training_patches(int(count), size=config.size, kind=kind,
                                                    seed=config.sim_seed + 7919 * i, gain=config.gain,
                                                    recentre=config.recentre, sim_options=config.sim_options))
    return LabelledPatches.join(parts)


def _split(patches: LabelledPatches, config: TrainConfig) -> tuple[LabelledPatches, LabelledPatches]:
    """(training, validation) patches: ``config.val_fraction`` of them (at least 10) held out at random.

    Raises
    ------
    ConfigError
        If the patches are not ``config.size`` px or fewer than 20.
    """
    if patches.data.shape[1] != config.size:
        raise ConfigError(f"training patches are {patches.data.shape[1]} px but size is {config.size}")
    n = len(patches)
    if n < _MIN_PATCHES:
        raise ConfigError(f"too few training patches ({n}); need at least {_MIN_PATCHES}")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_val = max(10, int(round(config.val_fraction * n)))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    return patches.subset(train_idx), patches.subset(val_idx)


def _train_config(config: TrainConfig, train: LabelledPatches, val: LabelledPatches) -> dict:
    """The options stored in the model file, with the numbers of training and validation patches."""
    return {**config.model_dump(), "n_train": int(len(train)), "n_val": int(len(val))}


@dataclass
class _Tensors:
    """Network inputs and targets of a set of patches, as torch tensors."""

    planes: object  # (N, C, s, s) torch.Tensor
    scalars: object  # (N, k) torch.Tensor
    targets: object  # (N, 4) torch.Tensor

    @classmethod
    def of(cls, arch: str, patches: LabelledPatches) -> _Tensors:
        import torch

        planes, scalars = (torch.from_numpy(a) for a in network_inputs(arch, patches))
        return cls(planes, scalars, torch.from_numpy(training_targets(patches)))

    def __len__(self) -> int:
        return len(self.planes)


# --------------------------------------------------------------------------- network


def _build_network(config: TrainConfig):
    """The network to train, in training mode, and its constructor arguments.

    From the weights of ``config.init`` when given, else initialised at
    random: ``braggnn`` as published, ``locnet`` with a small last layer.

    Raises
    ------
    ConfigError
        If the ``init`` model is of another architecture or patch size.
    """
    from braggflow.nn.architectures import build_network

    if config.init is not None:
        network, arch_kwargs = _network_from_init(config)
    else:
        arch_kwargs = _arch_kwargs(config)
        network = build_network(config.arch, **arch_kwargs)
        if config.arch == "braggnn":
            _initialise_braggnn(network)
        else:
            _initialise_locnet(network)
    network.train()
    return network, arch_kwargs


def _arch_kwargs(config: TrainConfig) -> dict:
    """Constructor arguments of the architecture for ``config.size`` px patches."""
    from braggflow.nn.preprocess import N_SCALARS

    if config.arch == "braggnn":
        return {"imgsz": config.size, **config.arch_kwargs}
    return {"size": config.size, "n_scalars": N_SCALARS, **config.arch_kwargs}


def _network_from_init(config: TrainConfig):
    """A copy of the network of ``config.init`` (fine-tuning) and its constructor arguments."""
    from braggflow.nn.architectures import build_network
    from braggflow.nn.files import load_model

    start = load_model(config.init, backend="torch")
    if start.arch != config.arch or start.size != config.size:
        raise ConfigError(f"init model {config.init!r} is a {start.arch} for {start.size} px patches, "
                          f"but arch={config.arch!r} and size={config.size}")
    arch_kwargs = dict(start.arch_kwargs)
    network = build_network(config.arch, **arch_kwargs)
    network.load_state_dict(start.network.state_dict())
    return network, arch_kwargs


def _initialise_braggnn(network) -> None:
    """The published initialisation: Xavier-uniform weights, zero biases."""
    import torch

    for m in network.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)


def _initialise_locnet(network) -> None:
    """A small last layer: centre near the central pixel, sigma ~0.14 px, widths ~1.5 px."""
    import torch

    last = network.layers[-1]
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()
        last.bias[2:4] = -4.0  # initial sigma ~0.14 px
        if last.bias.numel() >= 6:
            last.bias[4:6] = 0.4  # initial width ~1.5 px


@dataclass
class _ModelFile:
    """The model file a run writes, and what every version of it records."""

    path: Path
    arch: str
    arch_kwargs: dict
    size: int
    train_config: dict

    def write(self, network, metrics: dict, *, calibration: dict | None = None) -> str:
        """Write ``network`` with its metrics (and calibration); returns the file's SHA-256."""
        from braggflow.training.files import save_model

        return save_model(self.path, network, arch=self.arch, arch_kwargs=self.arch_kwargs,
                          train_config=self.train_config, metrics=metrics, calibration=calibration)

    def localizer(self, network, state: dict):
        """``network`` with the weights ``state``, frozen, in evaluation mode, as a Localizer."""
        from braggflow.nn.files import Localizer

        network.load_state_dict(state)
        network.eval()
        for p in network.parameters():
            p.requires_grad_(False)
        return Localizer(name=self.path.stem, arch=self.arch, arch_kwargs=self.arch_kwargs, network=network,
                         size=self.size)


# --------------------------------------------------------------------------- epochs


@dataclass(frozen=True)
class _Schedule:
    """Batches per epoch and the learning rate of each step: linear warm-up, then cosine decay to 2 %."""

    lr: float
    steps_per_epoch: int
    total_steps: int
    warm_steps: int

    @classmethod
    def of(cls, config: TrainConfig, n_train: int) -> _Schedule:
        steps_per_epoch = max(1, n_train // config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        return cls(config.lr, steps_per_epoch, total_steps, min(steps_per_epoch, total_steps // 10 + 1))

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        if step < self.warm_steps:
            return self.lr * (step + 1) / self.warm_steps
        frac = (step - self.warm_steps) / max(1, self.total_steps - self.warm_steps)
        return self.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


class _Bar:
    """The rich progress bar of a run (``progress`` None: nothing shown)."""

    def __init__(self, progress):
        self.progress = progress
        self.task = None

    @contextlib.contextmanager
    def running(self, total_steps: int):
        """Shown while the block runs."""
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("training", total=total_steps, loss=float("nan"), val=float("nan"),
                                               epoch=0)
        try:
            yield self
        finally:
            if self.progress is not None:
                self.progress.stop()

    def batch(self, b: int, n_batches: int, step: int, running: float, epoch: int) -> None:
        """After batch ``b`` of an epoch (every 20th and the last are shown); ``running``: summed loss."""
        if self.progress is not None and (b % 20 == 0 or b == n_batches - 1):
            self.progress.update(self.task, completed=step, loss=running / (b + 1), epoch=epoch)

    def epoch_done(self, record: dict) -> None:
        """After an epoch: its validation error, and a line with its figures."""
        if self.progress is None:
            return
        self.progress.update(self.task, val=record["val_median_px"])
        self.progress.console.print(
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val median {record['val_median_px']:.4f} px ({record['seconds']:.0f} s)"
        )


class _Trainer:
    """The state of a run between epochs: network, optimizer, schedule, random batches."""

    def __init__(self, network, train: LabelledPatches, val: LabelledPatches, config: TrainConfig, bar: _Bar):
        import torch

        self.network = network
        self.config = config
        self.bar = bar
        self.train_set = _Tensors.of(config.arch, train)
        self.val_set = _Tensors.of(config.arch, val)
        self.schedule = _Schedule.of(config, len(train))
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    def epoch(self, epoch: int) -> dict:
        """Train one epoch and validate; returns its record (see :attr:`TrainResult.history`)."""
        t0 = time.perf_counter()
        train_loss = self.train_epoch(epoch)
        val_loss, val_median = self.validate()
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_median_px": val_median,
            "lr": self.schedule.lr_at(self.step - 1),
            "seconds": time.perf_counter() - t0,
        }

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training patches in random batches; returns the mean loss."""
        import torch

        config, data = self.config, self.train_set
        likelihood = epoch > config.warmup_epochs
        self.network.train()
        perm = torch.randperm(len(data), generator=self.generator)
        running = 0.0
        for b in range(self.schedule.steps_per_epoch):
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            planes, targets = augment(data.planes[idx], data.targets[idx], self.generator)
            for g in self.optimizer.param_groups:
                g["lr"] = self.schedule.lr_at(self.step)
            output = forward(self.network, config.arch, planes, data.scalars[idx])
            value = loss(config.arch, output, targets, config.size, likelihood=likelihood,
                         width_weight=config.width_weight)
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 10.0)
            self.optimizer.step()
            running += float(value.detach())
            self.step += 1
            self.bar.batch(b, self.schedule.steps_per_epoch, self.step, running, epoch)
        return running / self.schedule.steps_per_epoch

    def validate(self) -> tuple[float, float]:
        """(likelihood loss, median centre error in px) on the validation patches."""
        import torch

        config, data = self.config, self.val_set
        self.network.eval()
        with torch.inference_mode():
            outs = [
                forward(self.network, config.arch, data.planes[i : i + _VAL_BATCH], data.scalars[i : i + _VAL_BATCH])
                for i in range(0, len(data), _VAL_BATCH)
            ]
            out = torch.cat(outs)
            val_loss = float(loss(config.arch, out, data.targets, config.size, likelihood=True,
                                  width_weight=config.width_weight))
        d = predicted_centres(config.arch, out, config.size) - data.targets[:, :2].numpy()
        return val_loss, float(np.median(np.hypot(d[:, 0], d[:, 1])))


@dataclass
class _Checkpoint:
    """The best network so far (written to the model file at each improvement) and early stopping."""

    output: _ModelFile
    patience: int
    score: float = math.inf
    epoch: int | None = None
    state: dict | None = None
    stale: int = 0

    def update(self, network, record: dict, *, counts: bool) -> bool:
        """Keep ``network`` if its epoch is the best so far; True when training should stop.

        Parameters
        ----------
        network : torch.nn.Module
        record : dict
            The epoch's record (``epoch``, ``val_loss``, ``val_median_px``).
        counts : bool
            Whether the epoch's validation loss competes with later ones and
            counts towards the patience (the likelihood is trained on); an
            epoch that does not is kept only until one that does.
        """
        score = record["val_loss"] if counts else math.inf
        if score < self.score or self.state is None:
            self.score, self.epoch = score, record["epoch"]
            self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            self.stale = 0
            self.output.write(network, {"epoch": record["epoch"], "val_median_px": record["val_median_px"],
                                        "val_loss": record["val_loss"]})
            return False
        if counts:
            self.stale += 1
        return counts and self.stale >= self.patience


def _fit(trainer: _Trainer, checkpoint: _Checkpoint, config: TrainConfig) -> list[dict]:
    """Train epoch after epoch until ``config.epochs`` or early stopping; returns the epochs' records."""
    history = []
    with trainer.bar.running(trainer.schedule.total_steps):
        for epoch in range(1, config.epochs + 1):
            record = trainer.epoch(epoch)
            history.append(record)
            trainer.bar.epoch_done(record)
            # checkpoint on the likelihood once it is trained on (warm-up epochs compete among themselves)
            counts = epoch > config.warmup_epochs or config.arch == "braggnn"
            if checkpoint.update(trainer.network, record, counts=counts):
                break
    return history


def _progress_bar(enabled: bool, console):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TextColumn("val median {task.fields[val]:.4f} px"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


# --------------------------------------------------------------------------- calibration


def _calibrate(localizer, val: LabelledPatches) -> tuple[dict, tuple]:
    """Fit the error calibration of the kept network on the validation patches.

    Returns
    -------
    calibration : dict
    errors : tuple of 4 (N,) ndarrays of float64
        Signed errors along rows and columns and the calibrated 1-sigma
        errors along rows and columns, px.
    """
    from braggflow.nn.inference import raw_predict
    from braggflow.nn.preprocess import check_patches
    from braggflow.training.calibration import calibrate_predictions

    vdata, vmask = check_patches(val.data, val.mask)
    raw = raw_predict(localizer, vdata, vmask, gain=val.gain)
    er, ec = raw["row"] - val.row, raw["col"] - val.col
    calibration, sr, sc = calibrate_predictions(raw, val.row, val.col, vdata, vmask,
                                                predicts_error=localizer.predicts_error, gain=val.gain, kinds=val.kind)
    return calibration, (er, ec, sr, sc)


def _validation_metrics(val: LabelledPatches, er: np.ndarray, ec: np.ndarray, sr: np.ndarray,
                        sc: np.ndarray) -> dict:
    """Validation figures of the kept model: errors in px, against the CRLB, calibration, and per patch kind."""
    from braggflow.training.calibration import calibration_figures

    radial = np.hypot(er, ec)
    metrics = {
        "val_patches": int(len(val)),
        "val_median_px": float(np.median(radial)),
        "val_p95_px": float(np.percentile(radial, 95)),
        **{f"val_{k}": v for k, v in calibration_figures(er, ec, sr, sc).items()},
    }
    ref = 1.1774 * np.sqrt(0.5 * (val.crlb_row**2 + val.crlb_col**2))
    if np.isfinite(ref).any():
        ok = np.isfinite(ref) & (ref > 0)
        metrics["val_median_ratio_crlb"] = float(np.median(radial[ok] / ref[ok]))
    if val.kind is not None:
        metrics["val_by_kind"] = _figures_by_kind(val.kind, er, ec, sr, sc, ref)
    return metrics


def _figures_by_kind(kinds: np.ndarray, er: np.ndarray, ec: np.ndarray, sr: np.ndarray, sc: np.ndarray,
                     ref: np.ndarray) -> dict:
    """Per simulated patch kind: count, median error (px and / CRLB reference ``ref``), error calibration."""
    from braggflow.training.calibration import calibration_figures

    radial = np.hypot(er, ec)
    by_kind = {}
    for kind in np.unique(kinds):
        k = kinds == kind
        fig = calibration_figures(er[k], ec[k], sr[k], sc[k])
        by_kind[str(kind)] = {
            "n": int(k.sum()),
            "median_px": float(np.median(radial[k])),
            "median_ratio_crlb": float(np.median(radial[k] / ref[k])),
            "z_std_row": fig["z_std_row"],
            "z_std_col": fig["z_std_col"],
            "in_ellipse": fig["in_ellipse"],
        }
    return by_kind
