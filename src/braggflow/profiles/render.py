"""Pixel-integrated peak profiles: the ground-truth shapes of every simulation.

Profiles are normalised to unit integral over the infinite plane, so a peak of
integrated intensity ``N`` photons puts ``N * profile`` expected counts in each
pixel.  Pixel centres sit on integer (row, col); a pixel covers
``[r - 0.5, r + 0.5) x [c - 0.5, c + 0.5)``.

Shapes
------
Gaussian
    ``G(x, y) = exp(-u^2 / 2) / (2 pi sx sy)`` with ``u^2 = x'^2/sx^2 + y'^2/sy^2``
    in axes rotated by ``angle``.
Pseudo-Voigt
    ``(1 - eta) G + eta L``; ``L`` is the normalisable 2D Cauchy (Lorentzian)
    ``L = (1 + v^2)^(-3/2) / (2 pi gx gy)`` with ``v^2 = x'^2/gx^2 + y'^2/gy^2``
    and ``g = LORENTZ_GAMMA_PER_SIGMA * s`` so that G and L have the same FWHM.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["LORENTZ_GAMMA_PER_SIGMA", "peak_profile", "moffat_profile"]

# 2D Cauchy half maximum at v^2 = 2^(2/3) - 1; Gaussian at u^2 = 2 ln 2.
LORENTZ_GAMMA_PER_SIGMA = float(np.sqrt(2 * np.log(2)) / np.sqrt(2 ** (2 / 3) - 1))


def _erf_integral(centres: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """Fraction of a 1D Gaussian inside each unit pixel centred on ``centres``."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((centres + 0.5 - mu) / s) - erf((centres - 0.5 - mu) / s))


def _subpixel_axes(rows: np.ndarray, cols: np.ndarray, row: float, col: float, angle: float,
                   n: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the centre of n x n sub-pixel samples of every pixel, in the peak's axes rotated by ``angle``.

    Returns two (H n, W n) arrays; :func:`_pixel_means` averages a profile evaluated on them back to pixels.
    """
    offsets = (np.arange(n) + 0.5) / n - 0.5
    rr = (np.asarray(rows, dtype=float)[:, None] + offsets[None, :]).reshape(-1) - row
    cc = (np.asarray(cols, dtype=float)[:, None] + offsets[None, :]).reshape(-1) - col
    dr, dc = np.meshgrid(rr, cc, indexing="ij")
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * dr + sa * dc, -sa * dr + ca * dc


def _pixel_means(value: np.ndarray, h: int, w: int, n: int) -> np.ndarray:
    """The (H, W) pixel means of a profile sampled on :func:`_subpixel_axes`' (H n, W n) grid."""
    return value.reshape(h, n, w, n).mean(axis=(1, 3))


def peak_profile(
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    row: float,
    col: float,
    sigma_row: float,
    sigma_col: float,
    angle: float = 0.0,
    eta: float = 0.0,
    supersample: int = 7,
) -> np.ndarray:
    """Pixel-integrated, unit-integral peak profile on a grid of pixels.

    Parameters
    ----------
    rows : (H,) ndarray of int
        Row indices (pixel centres) of the grid.
    cols : (W,) ndarray of int
        Column indices of the grid.
    row, col : float
        Peak centre, px.
    sigma_row, sigma_col : float
        Gaussian sigma along the peak's own axes, px (> 0).  With ``angle = 0``
        these are the widths along rows and columns.
    angle : float
        Rotation of the peak's first axis from the row axis, radians.
    eta : float
        Lorentzian fraction of the pseudo-Voigt, 0 (Gaussian) to 1.
    supersample : int
        Sub-pixel samples per axis when no closed form applies (rotated or
        Lorentzian peaks).

    Returns
    -------
    profile : (H, W) ndarray of float64
        Fraction of the peak's integrated intensity in each pixel.

    Raises
    ------
    ValueError
        If a width is not positive or ``eta`` is outside [0, 1].
    """
    if not (sigma_row > 0 and sigma_col > 0):
        raise ValueError(f"sigma_row and sigma_col must be > 0, got {sigma_row}, {sigma_col}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta (Lorentzian fraction) must be in [0, 1], got {eta}")
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    if angle == 0.0 and eta == 0.0:
        return np.outer(_erf_integral(rows, row, sigma_row), _erf_integral(cols, col, sigma_col))
    n = int(supersample)
    x, y = _subpixel_axes(rows, cols, row, col, angle, n)
    u2 = (x / sigma_row) ** 2 + (y / sigma_col) ** 2
    value = (1.0 - eta) * np.exp(-0.5 * u2) / (2 * np.pi * sigma_row * sigma_col)
    if eta > 0:
        g_r = LORENTZ_GAMMA_PER_SIGMA * sigma_row
        g_c = LORENTZ_GAMMA_PER_SIGMA * sigma_col
        v2 = (x / g_r) ** 2 + (y / g_c) ** 2
        value = value + eta * (1.0 + v2) ** -1.5 / (2 * np.pi * g_r * g_c)
    return _pixel_means(value, len(rows), len(cols), n)


def moffat_profile(
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    row: float,
    col: float,
    sigma_row: float,
    sigma_col: float,
    beta: float,
    angle: float = 0.0,
    supersample: int = 7,
) -> np.ndarray:
    """Pixel-integrated, unit-integral elliptical Moffat profile on a grid of pixels.

    ``M = (beta - 1) / (2 pi beta sx sy) (1 + u^2 / (2 beta))^(-beta)`` with
    ``u^2 = x'^2/sx^2 + y'^2/sy^2`` in axes rotated by ``angle``: the core
    matches the Gaussian of sigmas ``sx``, ``sy`` (``beta -> inf`` is that
    Gaussian) and the wings fall as ``r^(-2 beta)``, like a detector's
    point-spread function (Moffat 1969; the usual ``alpha`` is
    ``sigma sqrt(2 beta)``).  Integrated over each pixel by ``supersample``
    x ``supersample`` sub-pixels.

    Parameters
    ----------
    rows, cols : (H,), (W,) ndarray of int
        Pixel centres of the grid.
    row, col : float
        Peak centre, px.
    sigma_row, sigma_col : float
        Core widths along the peak's own axes, px (> 0).
    beta : float
        Moffat exponent, > 1 (finite integral).
    angle : float
        Rotation of the first axis from the row axis, radians.
    supersample : int
        Sub-pixel samples per axis.

    Returns
    -------
    profile : (H, W) ndarray of float64
        Fraction of the peak's integrated intensity in each pixel.

    Raises
    ------
    ValueError
        If a width is not positive or ``beta <= 1``.

    References
    ----------
    Moffat, Astron. Astrophys. 3, 455 (1969).
    """
    if not (sigma_row > 0 and sigma_col > 0):
        raise ValueError(f"sigma_row and sigma_col must be > 0, got {sigma_row}, {sigma_col}")
    if not beta > 1:
        raise ValueError(f"beta must be > 1 (a finite integral), got {beta}")
    n = int(supersample)
    x, y = _subpixel_axes(rows, cols, row, col, angle, n)
    u2 = (x / sigma_row) ** 2 + (y / sigma_col) ** 2
    value = (beta - 1.0) / (2 * np.pi * beta * sigma_row * sigma_col) * (1.0 + u2 / (2.0 * beta)) ** -beta
    return _pixel_means(value, len(rows), len(cols), n)
