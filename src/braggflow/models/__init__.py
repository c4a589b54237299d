"""Deprecated: the networks moved to :mod:`braggflow.nn` (inference) and :mod:`braggflow.training`.

``braggflow.models.X`` keeps working for one version and warns with a
:class:`DeprecationWarning`.
"""

from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "predict_patches": "braggflow.nn.inference",
    "load_model": "braggflow.nn.files",
    "list_models": "braggflow.nn.files",
    "Localizer": "braggflow.nn.files",
    "save_model": "braggflow.training.files",
    "convert_weights": "braggflow.training.files",
    "ship_model": "braggflow.training.files",
    "train_model": "braggflow.training.train",
    "TrainConfig": "braggflow.training.train",
}

__all__ = sorted(_MOVED)


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'braggflow.models' has no attribute {name!r}")
    warnings.warn(f"braggflow.models.{name} moved to {_MOVED[name]}.{name}; the old name goes in the next version",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
