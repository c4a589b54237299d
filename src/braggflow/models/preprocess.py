"""Deprecated: moved to :mod:`braggflow.nn.preprocess`; this name goes in the next version."""

import warnings

from braggflow.nn.preprocess import *  # noqa: F401,F403
from braggflow.nn.preprocess import __all__  # noqa: F401

warnings.warn("braggflow.models.preprocess moved to braggflow.nn.preprocess", DeprecationWarning, stacklevel=2)
