"""Localizer networks at inference time: architectures, shipped weights, error calibration, inference.

Public API::

    from braggflow.nn import predict_patches, load_model, list_models
    result = predict_patches(patches, mask=mask)          # default shipped model
    result["row"], result["col"], result["row_err"], result["col_err"]

Architectures (:mod:`braggflow.nn.architectures`): ``braggnn``, the published
BraggNN convolutional network (Liu et al., IUCrJ 9, 104 (2022)), state_dict
compatible with its published weights; ``locnet``, braggflow's multilayer
perceptron with a calibrated per-axis uncertainty.  :mod:`braggflow.nn.detector`:
the learned detector of rings, arcs and spots in grazing-incidence frames
(``detect_frame``, ``load_detector``).  This package never imports
:mod:`braggflow.training`, which builds the models.
"""

from __future__ import annotations

import lazy_loader

# the names, and the modules that define them, are listed once: in the type stub __init__.pyi
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
