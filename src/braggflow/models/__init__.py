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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "inference": ["predict_patches"],
        "files": ["load_model", "list_models", "save_model", "convert_weights", "ship_model", "Localizer"],
        "train": ["train_model", "TrainConfig"],
    },
)
