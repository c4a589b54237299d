"""Deblending: one region tried with one and with two peak components, the data choose.

Each peak's patch (other peaks' pixels removed, as for every localizer) is
fitted twice by Poisson maximum likelihood, all patches at once
(:mod:`braggflow.profiles.fitting`):

- one component: the rotated elliptical pseudo-Voigt (8 parameters), which
  describes round, elongated and Lorentzian-winged single peaks;
- two components: two pixel-integrated Gaussians of one shape (9
  parameters: two centres, sigma_row, sigma_col, two intensities,
  background), started from the patch's second moments (two centres
  ``+-sqrt(lambda_max - lambda_min)`` along the major axis).

The region is a blend when the two-component fit lowers the Poisson deviance
by more than :data:`DEBLEND_THRESHOLD` (a likelihood-ratio test; the two
models are not nested, so the threshold is calibrated on simulated single
peaks rather than taken from a chi^2 table: ``bench/deblend.py
--calibrate``), both components lie in the patch, at least 1 px apart, with
positive intensities, and the new member is not within 2.5 px of another peak of
the table (a neighbour the finder already separated leaves its wings in the
patch: they are not a second peak).  Both members then get their own centre, errors (inverse
Fisher information of the joint fit), intensity and error, and the flag
``BLENDED``; the second member is a new row of the table.

References
----------
Stetson, PASP 99, 191 (1987) (DAOPHOT: grouping and simultaneous fits);
Mortensen et al., Nat. Methods 7, 377 (2010).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.locate.batchfit import fit_with_start
from braggflow.locate.centroid import as_patch_arrays
from braggflow.locate.patches import check_patch_inputs, patches_at
from braggflow.profiles.fitting import BatchFit, fit_profiles
from braggflow.schema import Flag, conform

__all__ = ["DEBLEND_THRESHOLD", "BlendTest", "find_blends", "deblend"]

#: Deviance drop (one component minus two) above which a region is split: the 99.5th percentile over single
#: round Gaussian, pseudo-Voigt and elongated rotated peaks (2,000 simulated, seeds 9100-9102, flux 500-50,000
#: photons, background 5-100 photons/px), so that <= 1 % of single peaks are split.  ``bench/deblend.py
#: --calibrate`` measures it.
DEBLEND_THRESHOLD = 12.0
_MIN_SEPARATION = 1.0  # px
_NEIGHBOUR_DISTANCE = 2.5  # px: a second member this close to another peak of the table is that peak


class BlendTest:
    """The one- and two-component fits of N patches and the decision.

    Attributes
    ----------
    single, pair : BatchFit
        The fits (patch coordinates; intensities in counts).
    drop : (N,) ndarray
        Deviance of ``single`` minus that of ``pair`` (NaN where a fit failed).
    blended : (N,) ndarray of bool
        The patches split into two peaks.
    """

    def __init__(self, single: BatchFit, pair: BatchFit, drop: np.ndarray, blended: np.ndarray):
        self.single, self.pair, self.drop, self.blended = single, pair, drop, blended


def _pair_start(data, mask, single: BatchFit) -> np.ndarray:
    """Two-Gaussian starts from the background-subtracted second moments of each patch, (N, 9)."""
    s = data.shape[-1]
    bg = np.nan_to_num(single.column("background"), nan=0.0)
    inten = np.nan_to_num(single.column("intensity"), nan=0.0)
    w = np.where(mask, 0.0, np.maximum(data - bg[:, None, None], 0.0))
    total = np.maximum(w.sum(axis=(1, 2)), 1e-9)
    rr, cc = np.indices((s, s), dtype=float)
    r0 = (w * rr).sum(axis=(1, 2)) / total
    c0 = (w * cc).sum(axis=(1, 2)) / total
    vrr = (w * (rr - r0[:, None, None]) ** 2).sum(axis=(1, 2)) / total
    vcc = (w * (cc - c0[:, None, None]) ** 2).sum(axis=(1, 2)) / total
    vrc = (w * (rr - r0[:, None, None]) * (cc - c0[:, None, None])).sum(axis=(1, 2)) / total
    half_diff = np.sqrt(0.25 * (vrr - vcc) ** 2 + vrc**2)
    lam_max = 0.5 * (vrr + vcc) + half_diff
    lam_min = np.maximum(0.5 * (vrr + vcc) - half_diff, 0.09)
    theta = 0.5 * np.arctan2(2.0 * vrc, vrr - vcc)  # major axis from the row axis
    d = np.clip(np.sqrt(np.maximum(lam_max - lam_min, 0.0)), 0.75, s / 3)
    dr, dc = d * np.cos(theta), d * np.sin(theta)
    sig = np.sqrt(lam_min)
    half = np.where(inten > 0, inten, total) / 2
    return np.stack([r0 - dr, c0 - dc, r0 + dr, c0 + dc, sig, sig, half, half, np.maximum(bg, 0.0)], axis=1)


def find_blends(data, mask=None, *, gain: float = 1.0, threshold: float = DEBLEND_THRESHOLD) -> BlendTest:
    """Fit one and two components to each patch and decide which patches hold a blend.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts, the peak near the centre.
    mask : (N, s, s) array_like of bool, optional
        True = pixel left out.
    gain : float
        Counts (ADU) per photon.
    threshold : float
        Deviance drop above which a patch is a blend.

    Returns
    -------
    test : BlendTest
    """
    data, mask = as_patch_arrays(data, mask)
    s = data.shape[-1]
    single, _ = fit_with_start(data, mask, gain=gain, profile="pvoigt")
    pair = fit_profiles(data, ~mask, _pair_start(data, mask, single), model="gauss2", gain=gain)
    drop = np.where(single.ok & pair.ok, single.deviance - pair.deviance, np.nan)
    p = pair.params
    inside = np.all((p[:, :4] > -0.5) & (p[:, :4] < s - 0.5), axis=1)
    apart = np.hypot(p[:, 0] - p[:, 2], p[:, 1] - p[:, 3]) >= _MIN_SEPARATION
    blended = (drop > threshold) & inside & apart & (p[:, 6] > 0) & (p[:, 7] > 0)
    return BlendTest(single, pair, drop, np.asarray(blended, dtype=bool))


def deblend(frame: np.ndarray, table: pd.DataFrame, *, mask: np.ndarray | None = None,
            labels: np.ndarray | None = None, patch_size: int = 11, gain: float = 1.0,
            threshold: float = DEBLEND_THRESHOLD) -> pd.DataFrame:
    """Split the peaks of ``table`` whose patch holds two peaks into two rows.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` (px; a located or brightest-pixel
        centre).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    labels : (H, W) ndarray of int, optional
        The finder's label image (label k is table row k - 1): other peaks'
        pixels are removed from each patch.
    patch_size : int
        Patch side, odd, px.
    gain : float
        Counts (ADU) per photon.
    threshold : float
        Deviance drop above which a region is split (:data:`DEBLEND_THRESHOLD`).

    Returns
    -------
    table : pandas.DataFrame
        A conformed copy.  Each blend's row holds the member nearer the old
        centre, and a new row (appended at the end, in the order of the
        blends) the other: ``row``, ``col``, ``row_err``, ``col_err``,
        ``rc_cov``, ``sigma_row``, ``sigma_col`` (px), ``intensity``,
        ``intensity_err``, ``background`` (counts) from the joint fit, and
        the flag ``BLENDED``.  Other rows are unchanged.  The appended rows
        have no region in ``labels``.

    Raises
    ------
    BraggflowError
        If the inputs are inconsistent (see :func:`braggflow.locate.extract_patches`).
    """
    out = conform(table.copy())
    if len(out) == 0:
        return out
    placed = np.flatnonzero(np.isfinite(out["row"].to_numpy(dtype=float))
                            & np.isfinite(out["col"].to_numpy(dtype=float)))
    frame, rows, cols, size = check_patch_inputs(frame, out.iloc[placed], size=patch_size, mask=mask,
                                                 labels=labels)
    relabel = None
    if labels is not None and placed.size < len(out):  # label k + 1 is row k of the whole table
        relabel = np.zeros(len(out) + 1, dtype=np.int32)
        relabel[1:] = len(out) + 1
        relabel[placed + 1] = np.arange(1, placed.size + 1, dtype=np.int32)
    patches = patches_at(frame, rows, cols, size=size, mask=mask, labels=labels, relabel=relabel)
    test = find_blends(patches.data, patches.mask, gain=gain, threshold=threshold)
    local = np.flatnonzero(test.blended)
    if local.size == 0:
        return out
    hit = placed[local]
    p, cov = test.pair.params[local], test.pair.cov[local]
    origin = patches.origin[local].astype(float)
    centre = np.stack([rows[local], cols[local]], axis=1) - origin
    d1 = np.hypot(p[:, 0] - centre[:, 0], p[:, 1] - centre[:, 1])
    d2 = np.hypot(p[:, 2] - centre[:, 0], p[:, 3] - centre[:, 1])
    first = np.where(d1 <= d2, 0, 1)
    members = []
    take = np.arange(hit.size)
    # a second member next to another peak of the table is that peak's remainder (its region removed from the
    # patch, its wings not), not a blend
    second = np.where(first == 0, 1, 0)
    new_pos = np.stack([p[take, 2 * second], p[take, 2 * second + 1]], axis=1) + origin
    others = np.stack([out["row"].to_numpy(dtype=float), out["col"].to_numpy(dtype=float)], axis=1)
    finite = np.flatnonzero(np.all(np.isfinite(others), axis=1))
    if finite.size > 1:
        from scipy.spatial import cKDTree

        tree = cKDTree(others[finite])
        dist, nearest = tree.query(new_pos, k=2)
        # the nearest peak other than the blend's own row
        own = finite[nearest[:, 0]] == hit
        d_other = np.where(own, dist[:, 1], dist[:, 0])
        keep = ~(d_other < _NEIGHBOUR_DISTANCE)
        hit, local, p, cov, origin, first, take = (hit[keep], local[keep], p[keep], cov[keep], origin[keep],
                                                   first[keep], np.arange(int(keep.sum())))
        if hit.size == 0:
            return out
    for k in (0, 1):
        m = np.where(first == 0, k, 1 - k)  # member index: 0 keeps the row, 1 the new row
        r_i, c_i, i_i = 2 * m, 2 * m + 1, 6 + m
        members.append(dict(
            row=p[take, r_i] + origin[:, 0], col=p[take, c_i] + origin[:, 1],
            row_err=np.sqrt(cov[take, r_i, r_i]), col_err=np.sqrt(cov[take, c_i, c_i]), rc_cov=cov[take, r_i, c_i],
            sigma_row=p[:, 4], sigma_col=p[:, 5], intensity=p[take, i_i], intensity_err=np.sqrt(cov[take, i_i, i_i]),
            background=p[:, 8]))
    out = out.reset_index(drop=True)
    members[0]["snr"] = members[0]["intensity"] / members[0]["intensity_err"]
    members[1]["snr"] = members[1]["intensity"] / members[1]["intensity_err"]
    for name, values in members[0].items():
        column = out[name].to_numpy(dtype=float).copy()
        column[hit] = values
        out[name] = column
    flags = out["flags"].to_numpy(dtype=np.uint32).copy()
    flags[hit] |= np.uint32(Flag.BLENDED)
    out["flags"] = flags
    extra = out.iloc[hit].copy()
    for name, values in members[1].items():
        extra[name] = np.asarray(values, dtype=float)
    return conform(pd.concat([out, extra], ignore_index=True))
