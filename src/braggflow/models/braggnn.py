"""Deprecated: moved to :mod:`braggflow.nn.architectures`; this name goes in the next version."""

import warnings

from braggflow.nn.architectures import *  # noqa: F401,F403
from braggflow.nn.architectures import __all__  # noqa: F401

warnings.warn("braggflow.models.braggnn moved to braggflow.nn.architectures", DeprecationWarning, stacklevel=2)
