"""Training the localizer networks (``braggflow train``): the public names in one place.

- :class:`TrainConfig`: the options of a run (:mod:`braggflow.training.config`);
- :class:`LabelledPatches`, :func:`simulated_training_patches`,
  :func:`recentre_on_maximum`, :func:`patches_from_frames`: training sets
  (:mod:`braggflow.training.sets`);
- :func:`train_model`, :class:`TrainResult`: the training run
  (:mod:`braggflow.training.loop`; batches and losses in
  :mod:`braggflow.training.tensors`).
"""

from __future__ import annotations

from braggflow.training.config import TrainConfig
from braggflow.training.loop import TrainResult, train_model
from braggflow.training.sets import (
    LabelledPatches,
    patches_from_frames,
    recentre_on_maximum,
    simulated_training_patches,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "LabelledPatches",
    "patches_from_frames",
    "recentre_on_maximum",
    "simulated_training_patches",
    "train_model",
]
