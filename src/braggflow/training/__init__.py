"""Building localizer networks: training sets, training loops, error-calibration fitting, model files.

Public API (needs torch)::

    from braggflow.training import TrainConfig, train_model
    result = train_model(TrainConfig(simulated=20000), out="my-model.pt")

Inference of the models built here is :mod:`braggflow.nn`'s.
"""

from __future__ import annotations

import lazy_loader

# the names, and the modules that define them, are listed once: in the type stub __init__.pyi
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
