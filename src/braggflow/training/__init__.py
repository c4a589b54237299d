"""Building localizer networks: training sets, training loops, error-calibration fitting, model files.

Public API (needs torch)::

    from braggflow.training import TrainConfig, train_model
    result = train_model(TrainConfig(n_simulated=20000), out="my-model.pt")

Inference of the models built here is :mod:`braggflow.nn`'s.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "train": ["train_model", "TrainConfig"],
        "files": ["save_model", "convert_weights", "ship_model"],
    },
)
