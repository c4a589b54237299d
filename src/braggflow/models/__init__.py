"""The CNN localizers: architectures, shipped weights, training and inference.

Public API (torch is imported only when one of these is first used)::

    from braggflow.models import predict_patches, load_model, list_models
    result = predict_patches(patches, mask=mask)          # best shipped model
    result["row"], result["col"], result["row_err"], result["col_err"]

Architectures (:mod:`braggflow.models.braggnn`): ``braggnn``, the published
BraggNN (Liu et al., IUCrJ 9, 104 (2022)), state_dict compatible with its
published weights; ``locnet``, braggflow's small network with calibrated
per-axis uncertainty.  Training: :func:`braggflow.models.train.train_model`
(``braggflow train``).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "predict_patches": "braggflow.models.inference",
    "load_model": "braggflow.models.files",
    "list_models": "braggflow.models.files",
    "save_model": "braggflow.models.files",
    "convert_weights": "braggflow.models.files",
    "ship_model": "braggflow.models.files",
    "Localizer": "braggflow.models.files",
    "train_model": "braggflow.models.train",
    "TrainConfig": "braggflow.models.train",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'braggflow.models' has no attribute {name!r}")
