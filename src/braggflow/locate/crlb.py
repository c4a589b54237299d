"""The Cramér-Rao lower bound on the centre of a pixel-integrated peak."""

from __future__ import annotations

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.profiles.axis import broadcast_peaks
from braggflow.profiles.fisher import crlb_from_profile, profile_and_centre_derivatives

__all__ = ["crlb", "crlb_from_profile", "profile_and_centre_derivatives"]


def crlb(
    *,
    intensity,
    background,
    sigma_row,
    sigma_col,
    size: int = 11,
    row=None,
    col=None,
    eta=0.0,
    angle=0.0,
    gain: float = 1.0,
    read_noise: float = 0.0,
    mask=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cramér-Rao lower bound on the centre of a pixel-integrated peak.

    The expected counts of pixel k are ``mu_k = intensity * P_k(row, col) +
    background`` with ``P`` the unit-integral profile of
    :func:`braggflow.profiles.render.peak_profile`.  Counts are Poisson in
    photons (``counts / gain``), plus Gaussian read noise of ``read_noise``
    counts treated as extra variance (``var_k = mu_k / gain + (read_noise /
    gain)^2`` photons^2).  The Fisher information over the parameters (row, col,
    intensity, background) is ``I_ij = sum_k (dmu_k/dtheta_i)(dmu_k/dtheta_j) /
    var_k``; the bound is the square root of the diagonal of ``I^-1``.  The
    widths, shape and angle are taken as known.

    All array arguments broadcast together to (N,).

    Parameters
    ----------
    intensity : array_like
        Integrated intensity, counts (> 0).
    background : array_like
        Background, counts per pixel (>= 0).
    sigma_row, sigma_col : array_like
        Gaussian sigmas along the peak's own axes, px (> 0).
    size : int
        Side of the square patch the estimator sees, px.
    row, col : array_like, optional
        Centre in patch coordinates, px; default: the centre pixel ``size // 2``.
    eta : array_like
        Lorentzian fraction of the pseudo-Voigt, 0 to 1.
    angle : array_like
        Rotation of the peak's first axis from the row axis, radians.
    gain : float
        Counts (ADU) per photon.
    read_noise : float
        Gaussian read noise, counts (ADU) rms.
    mask : (N, s, s) or (s, s) array_like of bool, optional
        Pixels the estimator cannot use (True), e.g. beyond a detector edge.

    Returns
    -------
    crlb_row, crlb_col : (N,) ndarray of float64
        Lower bounds on the 1-sigma error of the centre, px.  Multiply by
        1.1774 (sqrt(2 ln 2)) for the median radial error of an ideal unbiased
        estimator of an isotropic peak.

    Raises
    ------
    BraggflowError
        If a width or intensity is not positive, the background or read noise
        is negative, or ``gain`` is not positive.

    References
    ----------
    Mortensen, Churchman, Spudich & Flyvbjerg, "Optimized localization analysis
    for single-molecule tracking and super-resolution microscopy", Nat. Methods
    7, 377 (2010).
    """
    h = size // 2
    row = h if row is None else row
    col = h if col is None else col
    inten, bg, sr, sc, r0, c0, et, ang = broadcast_peaks(
        intensity, background, sigma_row, sigma_col, row, col, eta, angle
    )
    if not (np.all(inten > 0) and np.all(sr > 0) and np.all(sc > 0)):
        raise BraggflowError("crlb: intensity, sigma_row and sigma_col must be > 0")
    if np.any(bg < 0) or read_noise < 0 or not gain > 0:
        raise BraggflowError("crlb: background and read_noise must be >= 0 and gain > 0")
    if np.any((et < 0) | (et > 1)):
        raise BraggflowError("crlb: eta (Lorentzian fraction) must be in [0, 1]")
    prof, dpos = profile_and_centre_derivatives(int(size), r0, c0, sr, sc, ang, et)
    return crlb_from_profile(prof, dpos, intensity=inten, background=bg, gain=gain, read_noise=read_noise, mask=mask)


