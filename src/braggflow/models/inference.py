"""Deprecated: moved to :mod:`braggflow.nn.inference`; this name goes in the next version."""

import warnings

from braggflow.nn.inference import *  # noqa: F401,F403
from braggflow.nn.inference import __all__  # noqa: F401

warnings.warn("braggflow.models.inference moved to braggflow.nn.inference", DeprecationWarning, stacklevel=2)
