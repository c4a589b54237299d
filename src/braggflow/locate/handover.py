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

from braggflow.find.regions import region_centroids
from braggflow.locate.methods import LOCATED_COLUMNS, locate_at
from braggflow.windows import cut_windows

__all__ = ["EXTENDED_PATCH_FRACTION", "fit_saturated_peaks", "centre_extended_peaks"]

#: A peak whose patch holds less than this fraction of its region's signal is "extended".
EXTENDED_PATCH_FRACTION = 0.9


def fit_saturated_peaks(frame: np.ndarray, saturated: np.ndarray, fit_mask: np.ndarray, labels: np.ndarray,
                        brightest: np.ndarray, own: np.ndarray,
                        gain: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Re-locate peaks whose region holds a saturated pixel by a Gaussian fit that leaves those pixels out.

    The centre of mass of a clipped core is biased and the networks were not
    trained on clipped cores (on a 3e6-photon peak with 16 saturated pixels: com
    0.24 px, the default network 1.2 px off, the fit 0.001 px).  Such rows get method ``"gauss"``.
    ``brightest`` is the (N, 2) brightest pixel of each peak, ``own`` the (N, s, s)
    pixels of each peak's own label in its patch around ``brightest``.

    Returns
    -------
    rows : (M,) ndarray of int
        Table rows (positions) to replace.
    columns : dict of (M,) ndarray
        Their new :data:`~braggflow.locate.methods.LOCATED_COLUMNS` and the
        ``flags`` (uint32) of their fits' patches, to be OR-ed in.
    """
    size = own.shape[-1]
    hit = np.flatnonzero(
        (cut_windows(saturated, brightest[:, 0], brightest[:, 1], size // 2, False) & own).any(axis=(1, 2))
    )
    if not hit.size:
        return hit, {}
    # labels of the subset: its peaks 1..m, every other peak one shared label (still removed from the patches)
    lut = np.full(len(own) + 1, len(own) + 1, dtype=np.int32)
    lut[0] = 0
    lut[hit + 1] = np.arange(1, hit.size + 1, dtype=np.int32)
    return hit, locate_at(frame, brightest[hit, 0].astype(float), brightest[hit, 1].astype(float), "gauss",
                          mask=fit_mask, labels=labels, relabel=lut, patch_size=size, gain=gain, saturation=None)


def centre_extended_peaks(regions, frame: np.ndarray, background: np.ndarray, brightest: np.ndarray,
                          own: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
                          gain: float, counts: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The centroids of their whole regions for the peaks that their patch cannot hold.

    A patch-based localizer sees only the part of a streak or large spot that
    falls in the patch centred on the brightest pixel, and returns a centre
    pulled towards it; the region's intensity-weighted centroid
    (:func:`braggflow.find.region_centroids`) covers the whole peak.  A peak
    is extended when its patch holds less than :data:`EXTENDED_PATCH_FRACTION`
    of its region's signal: the faint wings of a compact peak, or a close
    neighbour left in its region, do not make it so.  Such rows get method
    ``"region"``.

    ``background`` is the (N,) finder's background level of each peak
    (counts/px), ``brightest`` the (N, 2) integer brightest pixel of each peak
    (the patch centres), ``own`` the (N, s, s) pixels of each peak's own label
    in its patch; row k of the table is label k + 1 of ``labels``; ``counts``, optional, the (N, s, s) frame
    pixels of those patches as cut (0 outside the frame; :attr:`~braggflow.locate.patches.Patches.counts`), which
    are otherwise cut again.

    Returns
    -------
    rows : (M,) ndarray of int
        Table rows (positions) to replace: the extended peaks whose region has
        a net signal (the others keep the patch method's centre).
    columns : dict of (M,) ndarray
        Their new :data:`~braggflow.locate.methods.LOCATED_COLUMNS`.
    """
    if counts is None:
        counts = cut_windows(frame, brightest[:, 0], brightest[:, 1], own.shape[-1] // 2, 0)
    counts = counts.astype(np.float64)
    inside = np.where(own, counts - background[:, None, None], 0.0).sum(axis=(1, 2))
    extended = np.flatnonzero(inside < EXTENDED_PATCH_FRACTION * regions.signal)
    if not extended.size:
        return extended, {}
    centroids = region_centroids(frame, labels, regions, extended, mask=mask, gain=gain)
    found = np.isfinite(centroids["row"])
    return extended[found], {name: centroids[name][found] for name in LOCATED_COLUMNS}
