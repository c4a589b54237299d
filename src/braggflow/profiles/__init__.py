"""Peak profiles on pixels: the shapes every simulation and fit uses, and the Fisher information of their centre.

- :mod:`braggflow.profiles.render`: :func:`peak_profile`, unit-integral Gaussian
  and pseudo-Voigt profiles integrated over pixels (any rotation), the ground
  truth of the simulators.
- :mod:`braggflow.profiles.axis`: the same shapes for many peaks at once on a
  square patch, with closed-form pixel integrals and analytic derivatives (the
  fits' Jacobians).
- :mod:`braggflow.profiles.fisher`: the Fisher information of a peak's centre
  (the Cramér-Rao bound's core; Mortensen et al., Nat. Methods 7, 377 (2010)).

A leaf of the package: it imports nothing from braggflow but :mod:`braggflow.errors`.
"""

from braggflow.profiles.render import LORENTZ_GAMMA_PER_SIGMA, peak_profile

__all__ = ["LORENTZ_GAMMA_PER_SIGMA", "peak_profile"]
