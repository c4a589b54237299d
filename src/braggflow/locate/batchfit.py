"""Batched profile fits of peak patches: every patch in one vectorised Levenberg-Marquardt.

The locate methods ``"gauss"`` and ``"pvoigt"`` run here
(:func:`fit_patches_batched`); the engine and its models are
:mod:`braggflow.profiles.fitting`.  The per-patch fits of
:mod:`braggflow.locate.fit` (:func:`scipy.optimize.least_squares`, one patch
at a time) give the same estimates and are kept as the reference
(``engine="scipy"``).

``"gauss"`` fits the axis-aligned pixel-integrated Gaussian (6 parameters);
``"pvoigt"`` the rotated elliptical pseudo-Voigt (8 parameters: centre, the
precision matrix of the core, eta, intensity, background), so elongated
rotated peaks are described by the model.  ``"moffat"`` fits the rotated
elliptical Moffat profile with free beta.  Errors are the inverse expected
Fisher information at the solution.
"""

from __future__ import annotations

import numpy as np

from braggflow.locate.centroid import LocateResult, as_patch_arrays, centroid_patches
from braggflow.profiles._arrays import nan_to_num, starting_widths
from braggflow.profiles.fitting import fit_profiles, start_parameters, widths

__all__ = ["fit_patches_batched", "BATCH_PROFILES"]

#: Profiles :func:`fit_patches_batched` fits.
BATCH_PROFILES = ("gauss", "pvoigt", "moffat")


def fit_patches_batched(data, mask=None, *, gain: float = 1.0, profile: str = "gauss",
                        supersample: int = 2, background=None) -> LocateResult:
    """Poisson maximum-likelihood fit of a peak profile to every patch at once.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts.
    mask : (N, s, s) array_like of bool, optional
        True = pixel left out of the fit.
    gain : float
        Counts (ADU) per photon.
    profile : {"gauss", "pvoigt", "moffat"}
        Axis-aligned Gaussian, rotated elliptical pseudo-Voigt or rotated
        elliptical Moffat (see :mod:`braggflow.profiles.fitting`).
    supersample : int
        Sub-pixels per axis for the rotated profiles.
    background : (N,) array_like of float, optional
        Each patch's border median over the pixels not in ``mask`` when already known, counts/px
        (:attr:`~braggflow.locate.patches.Patches.background`): the moments that start the fit do not take it
        again.

    Returns
    -------
    result : LocateResult
        Patch coordinates (centre pixel at (s // 2, s // 2)); ``intensity`` (the
        integral of the fitted profile over the plane) and ``background`` in
        counts; ``sigma_row``, ``sigma_col`` the core's widths along rows and
        columns.  Failed fits (no start, no convergence, centre off the patch)
        have NaN positions and ``failed`` True.

    Raises
    ------
    ValueError
        If ``profile`` is unknown.

    References
    ----------
    Mortensen et al., Nat. Methods 7, 377 (2010); Laurence & Chromy, Nat.
    Methods 7, 338 (2010).
    """
    if profile not in BATCH_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(BATCH_PROFILES)}, got {profile!r}")
    data, mask = as_patch_arrays(data, mask)
    n, s = data.shape[0], data.shape[-1]
    result = LocateResult.empty(n)
    if n == 0:
        return result
    fit, _ = fit_with_start(data, mask, gain=gain, profile=profile, supersample=supersample, background=background)
    return result_from_fit(fit, s, supersample=supersample)


def fit_with_start(data, mask, *, gain, profile, supersample=2, background=None):
    """Start from the patches' moments (:func:`centroid_patches`) and fit a profile to every patch at once.

    Parameters
    ----------
    data : (N, s, s) ndarray
        Patches, counts.
    mask : (N, s, s) ndarray of bool
        True = pixel left out (of the moments and of the fit).
    gain : float
        ADU per photon.
    profile : str
        Model of :func:`braggflow.profiles.fitting.fit_profiles` (``"gauss"``, ``"pvoigt"``, ...).
    supersample : int
        Sub-pixel samples per axis of the fitted model.
    background : (N,) array_like of float, optional
        Each patch's border median over the pixels not in ``mask`` when already known, counts/px (passed to
        :func:`centroid_patches`, which otherwise takes it).

    Returns
    -------
    fit : braggflow.profiles.fitting.BatchFit
        The Poisson maximum-likelihood fit (patch coordinates, px; counts).
    start : LocateResult
        The moments it started from (NaN where a patch had none; the fit then starts at the patch centre).
    """
    s = data.shape[-1]
    h = s // 2
    start = centroid_patches(data, mask, gain=gain, background=background)
    bg0 = np.maximum(nan_to_num(start.background, nan=0.0), 0.0)
    inten0 = np.array(start.intensity, dtype=float)
    unknown = np.flatnonzero(~np.isfinite(inten0))
    if unknown.size:  # the patch's sum above the background
        y, m = np.where(mask[unknown], 0.0, data[unknown]), mask[unknown]
        inten0[unknown] = (y - bg0[unknown, None, None] * ~m).sum(axis=(1, 2))
    r0 = np.where(np.isfinite(start.row), start.row, h)
    c0 = np.where(np.isfinite(start.col), start.col, h)
    sr0 = starting_widths(start.sigma_row, 0.3, s / 2)
    sc0 = starting_widths(start.sigma_col, 0.3, s / 2)
    p0 = start_parameters(profile, r0, c0, sr0, sc0, inten0, bg0, supersample=supersample)
    fit = fit_profiles(data, ~mask, p0, model=profile, gain=gain, supersample=supersample)
    return fit, start


def result_from_fit(fit, size: int, *, supersample: int = 2) -> LocateResult:
    """A :class:`LocateResult` (patch coordinates, counts) from a single-peak :class:`BatchFit`.

    Parameters
    ----------
    fit : braggflow.profiles.fitting.BatchFit
        Fit of N patches with one peak each.
    size : int
        Patch side, px: a centre outside the patch marks the fit failed.
    supersample : int
        Sub-pixel samples per axis the fit used (for the widths).

    Returns
    -------
    result : LocateResult
        (N,) centres, errors (Fisher information), widths, intensity and background; ``failed`` where the fit did
        not converge, left the patch, or gave no positive intensity (those rows stay NaN).
    """
    n = len(fit)
    result = LocateResult.empty(n)
    row, col = fit.column("row"), fit.column("col")
    inside = (row > -0.5) & (row < size - 0.5) & (col > -0.5) & (col < size - 0.5)
    ok = fit.ok & inside & (fit.column("intensity") > 0)
    sr, sc, _ = widths(fit, supersample)
    result.row[ok], result.col[ok] = row[ok], col[ok]
    result.row_err[ok], result.col_err[ok] = fit.error("row")[ok], fit.error("col")[ok]
    result.rc_cov[:] = np.where(ok, fit.cov[:, 0, 1], np.nan)
    result.sigma_row[ok], result.sigma_col[ok] = sr[ok], sc[ok]
    result.intensity[ok] = fit.column("intensity")[ok]
    result.background[ok] = fit.column("background")[ok]
    result.failed[:] = ~ok
    return result
