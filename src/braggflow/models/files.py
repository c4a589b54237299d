"""Deprecated: moved to :mod:`braggflow.nn.files`; this name goes in the next version."""

import warnings

from braggflow.nn.files import *  # noqa: F401,F403
from braggflow.nn.files import __all__  # noqa: F401

warnings.warn("braggflow.models.files moved to braggflow.nn.files", DeprecationWarning, stacklevel=2)

from braggflow.training.files import convert_weights, save_model, ship_model  # noqa: E402,F401
