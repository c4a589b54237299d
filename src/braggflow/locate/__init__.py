"""Sub-pixel localization of Bragg peaks: patches, centre of mass, fits, CRLB.

Public API
----------
- :class:`Patches`, :func:`extract_patches`: (s, s) patches around found peaks.
- :func:`locate`: the locate stage on a frame and a peak table.
- :class:`LocateResult`, :func:`centroid_patches`, :func:`fit_gaussian_patches`,
  :func:`fit_pvoigt_patches`: per-patch building blocks (patch coordinates).
- :func:`crlb`: the Cramér-Rao lower bound on a peak's centre.
- :func:`fit_patches_batched`: Poisson maximum-likelihood profile fits of all
  patches at once (the engine of the ``gauss`` and ``pvoigt`` methods).
- :func:`deblend`, :func:`find_blends`: one component or two per region
  (the ``BLENDED`` flag).
"""

from braggflow.locate._locate import METHODS, locate, locate_columns, locate_patches
from braggflow.locate.batchfit import fit_patches_batched
from braggflow.locate.centroid import LocateResult, centroid_patches
from braggflow.locate.crlb import crlb
from braggflow.locate.deblend import DEBLEND_THRESHOLD, deblend, find_blends
from braggflow.locate.fit import fit_gaussian_patches, fit_pvoigt_patches
from braggflow.locate.patches import Patches, extract_patches, patch_background, remove_other_peaks

__all__ = [
    "METHODS",
    "Patches",
    "LocateResult",
    "extract_patches",
    "patch_background",
    "remove_other_peaks",
    "locate",
    "locate_columns",
    "locate_patches",
    "centroid_patches",
    "fit_gaussian_patches",
    "fit_pvoigt_patches",
    "crlb",
    "fit_patches_batched",
    "deblend",
    "find_blends",
    "DEBLEND_THRESHOLD",
]
