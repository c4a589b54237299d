"""Options of a training run (:class:`TrainConfig`), checked when they are set."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from braggflow.errors import ConfigError

__all__ = ["TrainConfig"]

# When several options are invalid, the first of this order is named ("frames" stands for the check that some
# training data is given).  Options not listed come after.
_REPORT_ORDER = ("arch", "size", "simulated", "extra_kinds", "frames", "labels", "warmup_epochs", "epochs",
                 "batch_size", "threads", "recentre", "val_fraction", "lr", "gain")
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


class TrainConfig(BaseModel):
    """Options of :func:`~braggflow.training.loop.train_model` (all stored in the model file).

    The options are checked when the config is made: an invalid one raises
    :class:`~braggflow.errors.ConfigError` naming it (:meth:`validate` checks
    them again after attributes were changed).

    Attributes
    ----------
    arch : {"locnet", "braggnn"}
        Architecture.
    arch_kwargs : dict
        Extra constructor arguments (e.g. ``{"hidden": [256, 128]}``).
    size : int
        Patch side, px (odd; >= 3, >= 7 for ``braggnn``).
    simulated : int
        Number of simulated training patches (0: none).
    kind : str
        Simulated patch kind (``"mixed"`` covers every kind).
    extra_kinds : dict of str -> int
        Additional simulated patches of given kinds (e.g.
        ``{"elongated": 200000}``), to weight hard cases more.
    sim_options : dict
        Extra arguments of the simulator (e.g. ``{"sigma": [0.5, 4.0]}``).
    recentre : float
        Fraction of simulated patches cut around their brightest pixel, as
        the peak finder does (see :func:`~braggflow.training.sets.recentre_on_maximum`).
    sim_seed : int
        Seed of the simulation.
    frames : list of str
        Frame files or folders to take labelled patches from (may be empty).
    labels : {"pvoigt", "gauss"}
        Fit used to label patches from frames.
    max_frames : int or None
        Use at most this many frames per source.
    gain : float
        ADU per photon of the frames.
    epochs : int
        Maximum epochs.
    batch_size : int
    lr : float
        Peak learning rate (AdamW, cosine decay after a linear warm-up).
    weight_decay : float
    val_fraction : float
        Fraction held out for validation.
    patience : int
        Stop after this many epochs without a better validation loss.
    warmup_epochs : int
        ``locnet``: epochs of squared-error loss before the likelihood.
    width_weight : float
        ``locnet``: weight of the log-width loss.
    seed : int
        Seed of the split, the initialisation and the batches.
    threads : int
        torch CPU threads.
    init : str or Path or None
        Start from the weights of this model (a shipped name or a model
        file; fine-tuning) instead of a random initialisation; its
        architecture and ``arch_kwargs`` are used and ``arch`` must match.

    Raises
    ------
    ConfigError
        Naming the first invalid option (unknown names included).
    """

    model_config = ConfigDict(extra="forbid")

    arch: str = "locnet"
    arch_kwargs: dict = Field(default_factory=dict)
    size: int = 11
    simulated: int = Field(200_000, ge=0)
    kind: str = "mixed"
    extra_kinds: dict = Field(default_factory=dict)
    sim_options: dict = Field(default_factory=lambda: {"sigma": [0.5, 4.0]})
    recentre: float = Field(0.5, ge=0, le=1, title="recentre (a fraction)")
    sim_seed: int = 1
    frames: list = Field(default_factory=list, validate_default=True)
    labels: Literal["pvoigt", "gauss"] = "pvoigt"
    max_frames: int | None = None
    gain: float = Field(1.0, gt=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = 1e-5
    val_fraction: float = Field(0.1, gt=0, lt=1)
    patience: int = 8
    warmup_epochs: int = Field(2, ge=0)
    width_weight: float = 0.1
    seed: int = 0
    threads: int = Field(2, ge=1)
    init: str | Path | None = None

    def __init__(self, **options):
        try:
            super().__init__(**options)
        except ValidationError as exc:
            raise ConfigError(_first_problem(exc)) from None

    def validate(self) -> TrainConfig:
        """Check the options again (after attributes were changed); returns self.

        Returns
        -------
        config : TrainConfig
            This config, unchanged.

        Raises
        ------
        ConfigError
            Naming the first invalid option.
        """
        type(self)(**dict(self))
        return self

    @field_validator("arch")
    @classmethod
    def _known_architecture(cls, arch: str) -> str:
        from braggflow.nn.architectures import ARCHITECTURES

        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        return arch

    @field_validator("size")
    @classmethod
    def _odd_patch_side(cls, size: int, info: ValidationInfo) -> int:
        minimum = 7 if info.data.get("arch") == "braggnn" else 3
        if size < minimum or size % 2 == 0:
            raise ValueError(f"size (patch side) must be odd and >= {minimum}, got {size}")
        return size

    @field_validator("extra_kinds")
    @classmethod
    def _known_kinds(cls, extra_kinds: dict) -> dict:
        from braggflow.simulate.patches import KINDS

        for kind, count in extra_kinds.items():
            if kind not in KINDS or int(count) < 0:
                raise ValueError(f"extra_kinds: expected kind=count with kind in {', '.join(KINDS)} and count >= 0, "
                                 f"got {kind}={count}")
        return extra_kinds

    @field_validator("frames")
    @classmethod
    def _some_training_data(cls, frames: list, info: ValidationInfo) -> list:
        if "simulated" not in info.data or "extra_kinds" not in info.data:
            return frames  # invalid themselves: reported first
        extra = info.data["extra_kinds"].values()
        if info.data["simulated"] == 0 and not frames and not any(int(c) > 0 for c in extra):
            raise ValueError("no training data: give simulated > 0 (--simulated N) and/or frames (--frames FILE)")
        return frames


def _first_problem(exc: ValidationError) -> str:
    """The message of the first problem of ``exc`` in the report order, in words.

    Parameters
    ----------
    exc : pydantic.ValidationError
        From validating a :class:`TrainConfig`.

    Returns
    -------
    message : str
        E.g. ``"epochs must be >= 1, got 0"``.
    """
    errors = exc.errors()
    names = [str(e["loc"][0]) if e["loc"] else "" for e in errors]
    rank = [_REPORT_ORDER.index(n) if n in _REPORT_ORDER else len(_REPORT_ORDER) for n in names]
    k = rank.index(min(rank))
    error, name = errors[k], names[k]
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "literal_error":
        return f"{name} must be {error['ctx']['expected']}, got {error['input']!r}"
    if error["type"] in _BOUND_ERRORS:
        field = TrainConfig.model_fields[name]
        return f"{field.title or name} must be {_limits(field.metadata)}, got {error['input']}"
    return f"{name}: {error['msg']}"


def _limits(metadata: list) -> str:
    """The bounds of a field in words: ``">= 1"``, ``"> 0"``, ``"in [0, 1]"``, ``"in (0, 1)"``."""
    bounds = {a: getattr(m, a) for m in metadata for a in _SYMBOLS if hasattr(m, a)}
    lower = next((a for a in ("ge", "gt") if a in bounds), None)
    upper = next((a for a in ("le", "lt") if a in bounds), None)
    if lower and upper:
        return f"in {'[' if lower == 'ge' else '('}{bounds[lower]}, {bounds[upper]}{']' if upper == 'le' else ')'}"
    limit = lower or upper
    return f"{_SYMBOLS[limit]} {bounds[limit]}"
