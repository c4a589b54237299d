"""Peaks a patch method cannot locate: saturated cores and regions larger than the patch.

:func:`braggflow.locate.locate` hands them on after its patch method ran:

- a peak with saturated pixels in its own region gets a Poisson Gaussian fit
  that leaves those pixels out (:func:`fit_saturated_peaks`; method ``"gauss"``);
- a peak whose patch holds too little of its region's signal (a streak, a large
  spot) gets the intensity-weighted centroid of its whole region
  (:func:`centre_extended_peaks`; method ``"region"``).

``brightest`` is the (N, 2) integer brightest pixel of each peak (the patch
centres) and ``own`` the (N, s, s) pixels of each peak's own label in its patch
around it; row k of the table is label k + 1 of the finder's label image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.find.regions import region_centroids
from braggflow.locate.methods import locate_peaks_in_patches
from braggflow.schema import conform
from braggflow.windows import cut_windows

__all__ = ["EXTENDED_PATCH_FRACTION", "replace_rows", "fit_saturated_peaks", "centre_extended_peaks"]

#: A peak whose patch holds less than this fraction of its region's signal is "extended".
EXTENDED_PATCH_FRACTION = 0.9


def replace_rows(table: pd.DataFrame, rows: np.ndarray, values: dict[str, np.ndarray], method: str) -> pd.DataFrame:
    """A copy of ``table`` with ``values`` written into the given rows (positions) and their ``method`` set."""
    table = table.copy()
    for name, new in values.items():
        column = table[name].to_numpy(copy=True)
        column[rows] = new
        table[name] = column
    methods = table["method"].astype("category")
    if method not in methods.cat.categories:
        methods = methods.cat.add_categories([method])
    methods.iloc[rows] = method
    table["method"] = methods
    return table


def fit_saturated_peaks(table: pd.DataFrame, frame: np.ndarray, saturated: np.ndarray, fit_mask: np.ndarray,
                         labels: np.ndarray, brightest: np.ndarray, own: np.ndarray, gain: float) -> pd.DataFrame:
    """Re-locate peaks whose region holds a saturated pixel by a Gaussian fit that leaves those pixels out.

    The centre of mass of a clipped core is biased and the networks were not
    trained on clipped cores (on a 3e6-photon peak with 16 saturated pixels: com
    0.24 px, the default network 1.2 px off, the fit 0.001 px).  Such rows get method ``"gauss"``.
    ``brightest`` is the (N, 2) brightest pixel of each peak, ``own`` the (N, s, s)
    pixels of each peak's own label in its patch around ``brightest``.
    """
    size = own.shape[-1]
    hit = np.flatnonzero(
        (cut_windows(saturated, brightest[:, 0], brightest[:, 1], size // 2, False) & own).any(axis=(1, 2))
    )
    if not hit.size:
        return table
    # labels of the subset: its peaks 1..m, every other peak one shared label (still removed from the patches)
    lut = np.full(len(table) + 1, len(table) + 1, dtype=np.int32)
    lut[0] = 0
    lut[hit + 1] = np.arange(1, hit.size + 1, dtype=np.int32)
    subset = table.iloc[hit].copy()
    subset["row"], subset["col"] = brightest[hit, 0].astype(float), brightest[hit, 1].astype(float)
    fitted = locate_peaks_in_patches(frame, conform(subset), "gauss", mask=fit_mask, labels=lut[labels],
                                     patch_size=size, gain=gain, saturation=None, model=None, backend="auto",
                                     device="cpu", batch_size=1024)
    names = ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col", "flags")
    return replace_rows(table, hit, {name: fitted[name].to_numpy() for name in names}, "gauss")


def centre_extended_peaks(table: pd.DataFrame, regions, frame: np.ndarray, brightest: np.ndarray, own: np.ndarray,
                           labels: np.ndarray, mask: np.ndarray | None, gain: float) -> pd.DataFrame:
    """Give peaks that their patch cannot hold the centroid of their whole region.

    A patch-based localizer sees only the part of a streak or large spot that
    falls in the patch centred on the brightest pixel, and returns a centre
    pulled towards it; the region's intensity-weighted centroid
    (:func:`braggflow.find.region_centroids`) covers the whole peak.  A peak
    is extended when its patch holds less than :data:`EXTENDED_PATCH_FRACTION`
    of its region's signal: the faint wings of a compact peak, or a close
    neighbour left in its region, do not make it so.  Such rows get method
    ``"region"``.

    ``brightest`` is the (N, 2) integer brightest pixel of each peak (the patch
    centres), ``own`` the (N, s, s) pixels of each peak's own label in its
    patch; row k of ``table`` is label k + 1 of ``labels``.
    """
    counts = cut_windows(frame, brightest[:, 0], brightest[:, 1], own.shape[-1] // 2, 0).astype(np.float64)
    background = table["background"].to_numpy()  # the finder's tile level
    inside = np.where(own, counts - background[:, None, None], 0.0).sum(axis=(1, 2))
    extended = np.flatnonzero(inside < EXTENDED_PATCH_FRACTION * regions.signal)
    if not extended.size:
        return table
    centroids = region_centroids(frame, labels, regions, extended, mask=mask, gain=gain)
    found = np.isfinite(centroids["row"])  # a region with no net signal keeps the patch method's centre
    if not found.any():
        return table
    return replace_rows(table, extended[found], {name: v[found] for name, v in centroids.items()}, "region")
