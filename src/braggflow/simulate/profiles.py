"""Deprecated: moved to :mod:`braggflow.profiles.render`; this name goes in the next version."""

import warnings

from braggflow.profiles.render import LORENTZ_GAMMA_PER_SIGMA, peak_profile  # noqa: F401

__all__ = ["LORENTZ_GAMMA_PER_SIGMA", "peak_profile"]

warnings.warn("braggflow.simulate.profiles moved to braggflow.profiles.render", DeprecationWarning, stacklevel=2)
