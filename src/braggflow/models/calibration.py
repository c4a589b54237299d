"""Deprecated: moved to :mod:`braggflow.training.calibration`; this name goes in the next version."""

import warnings

from braggflow.training.calibration import *  # noqa: F401,F403
from braggflow.training.calibration import __all__  # noqa: F401

warnings.warn("braggflow.models.calibration moved to braggflow.training.calibration", DeprecationWarning, stacklevel=2)

from braggflow.nn.calibration import apply_error_scale, apply_error_table  # noqa: E402,F401
