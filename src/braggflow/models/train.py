"""Deprecated: moved to :mod:`braggflow.training.train`; this name goes in the next version."""

import warnings

from braggflow.training.train import *  # noqa: F401,F403
from braggflow.training.train import __all__  # noqa: F401

warnings.warn("braggflow.models.train moved to braggflow.training.train", DeprecationWarning, stacklevel=2)
