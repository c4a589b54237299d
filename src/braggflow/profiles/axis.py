"""Batched pixel-integrated peak profiles and their derivatives.

The shapes are those of :func:`braggflow.profiles.render.peak_profile`
(unit-integral Gaussian, 2D Cauchy "Lorentzian" with the same FWHM, and their
pseudo-Voigt mix), evaluated for many peaks at once on a square patch grid.

For axis-aligned peaks both shapes have closed-form pixel integrals:

* Gaussian: products of differences of the normal CDF (``erf``).
* 2D Cauchy ``(1 + v^2)^(-3/2) / (2 pi gx gy)``: its CDF is the bivariate
  Student-t (1 degree of freedom) CDF
  ``F(x, y) = 1/4 + (atan x + atan y) / (2 pi) + atan(x y / sqrt(1 + x^2 + y^2)) / (2 pi)``
  in scaled coordinates, so a pixel holds the double difference of
  ``H(x, y) = atan(x y / sqrt(1 + x^2 + y^2)) / (2 pi)`` over its corners (the
  separable terms cancel), with ``dH/dx = y / (2 pi (1 + x^2) sqrt(1 + x^2 + y^2))``.

These closed forms give the least-squares fits their analytic Jacobians.  Rotated
peaks are evaluated by sub-pixel supersampling, as ``peak_profile`` does.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from braggflow.profiles.render import LORENTZ_GAMMA_PER_SIGMA

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_INV_2PI = 1.0 / (2.0 * np.pi)


def _as_col(x, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, dtype=float), (n,)).reshape(n, 1)


def gauss_1d(edges: np.ndarray, mu: np.ndarray, sigma: np.ndarray, *, jac: bool = False):
    """Pixel fractions of 1D Gaussians.

    edges : (s + 1,) pixel edges; mu, sigma : (N, 1).  Returns (N, s) fractions
    and, with ``jac``, their derivatives with respect to mu and sigma.
    """
    t = (edges[None, :] - mu) / sigma
    cdf = ndtr(t)
    frac = np.diff(cdf, axis=1)
    if not jac:
        return frac
    pdf = np.exp(-0.5 * t * t) * _INV_SQRT_2PI
    d_mu = -np.diff(pdf, axis=1) / sigma
    d_sigma = -np.diff(pdf * t, axis=1) / sigma
    return frac, d_mu, d_sigma


def _double_diff(f: np.ndarray) -> np.ndarray:
    """(N, s+1, s+1) corner values -> (N, s, s) pixel integrals."""
    return f[:, 1:, 1:] - f[:, 1:, :-1] - f[:, :-1, 1:] + f[:, :-1, :-1]


def cauchy_2d(edges: np.ndarray, row, col, g_row, g_col, *, jac: bool = False):
    """Pixel integrals of axis-aligned unit-integral 2D Cauchy peaks.

    Returns (N, s, s) and, with ``jac``, derivatives with respect to row, col,
    g_row, g_col.
    """
    x = ((edges[None, :] - row) / g_row)[:, :, None]  # (N, s+1, 1)
    y = ((edges[None, :] - col) / g_col)[:, None, :]  # (N, 1, s+1)
    q = np.sqrt(1.0 + x * x + y * y)
    h = np.arctan(x * y / q) * _INV_2PI
    value = _double_diff(h)
    if not jac:
        return value
    hx = y / ((1.0 + x * x) * q) * _INV_2PI
    hy = x / ((1.0 + y * y) * q) * _INV_2PI
    g_row3 = g_row[:, :, None]
    g_col3 = g_col[:, :, None]
    d_row = -_double_diff(hx) / g_row3
    d_col = -_double_diff(hy) / g_col3
    d_grow = -_double_diff(x * hx) / g_row3
    d_gcol = -_double_diff(y * hy) / g_col3
    return value, d_row, d_col, d_grow, d_gcol


def axis_profile(size: int, row, col, sigma_row, sigma_col, eta=0.0, *, jac: bool = False, lorentz: bool | None = None):
    """Axis-aligned pixel-integrated pseudo-Voigt profiles on an (s, s) patch.

    Parameters
    ----------
    size : int
        Patch side s; pixel centres at 0 .. s-1.
    row, col, sigma_row, sigma_col, eta : (N,) array_like or scalar
        Centre (patch px), Gaussian sigmas (px) and Lorentzian fraction.
    jac : bool
        Also return derivatives.
    lorentz : bool, optional
        Evaluate the Lorentzian part (needed for the eta derivative at eta = 0);
        default: when some eta > 0.

    Returns
    -------
    profile : (N, s, s) ndarray
        Unit-integral (over the plane) fraction of each peak in each pixel.
    derivs : (5, N, s, s) ndarray, only with ``jac``
        Derivatives with respect to row, col, sigma_row, sigma_col, eta.
    """
    n = int(np.broadcast(
        np.asarray(row), np.asarray(col), np.asarray(sigma_row), np.asarray(sigma_col), np.asarray(eta)
    ).size)
    row, col, sr, sc, eta = (_as_col(v, n) for v in (row, col, sigma_row, sigma_col, eta))
    edges = np.arange(size + 1, dtype=float) - 0.5
    eta3 = eta[:, :, None]
    gr = gauss_1d(edges, row, sr, jac=jac)
    gc = gauss_1d(edges, col, sc, jac=jac)
    has_l = bool(np.any(eta > 0)) if lorentz is None else bool(lorentz)
    if not jac:
        prof = gr[:, :, None] * gc[:, None, :]
        if has_l:
            lor = cauchy_2d(edges, row, col, LORENTZ_GAMMA_PER_SIGMA * sr, LORENTZ_GAMMA_PER_SIGMA * sc)
            prof = (1.0 - eta3) * prof + eta3 * lor
        return prof
    fr, dfr_mu, dfr_s = gr
    fc, dfc_mu, dfc_s = gc
    g = fr[:, :, None] * fc[:, None, :]
    dg = np.stack(
        [
            dfr_mu[:, :, None] * fc[:, None, :],
            fr[:, :, None] * dfc_mu[:, None, :],
            dfr_s[:, :, None] * fc[:, None, :],
            fr[:, :, None] * dfc_s[:, None, :],
        ]
    )
    if not has_l:
        return g, np.concatenate([dg, np.zeros_like(g)[None]])
    k = LORENTZ_GAMMA_PER_SIGMA
    lor, dl_r, dl_c, dl_gr, dl_gc = cauchy_2d(edges, row, col, k * sr, k * sc, jac=True)
    dl = np.stack([dl_r, dl_c, k * dl_gr, k * dl_gc])
    prof = (1.0 - eta3) * g + eta3 * lor
    derivs = np.concatenate([(1.0 - eta3) * dg + eta3 * dl, (lor - g)[None]])
    return prof, derivs


def supersampled_profile(size: int, row, col, sigma_row, sigma_col, angle=0.0, eta=0.0, *, supersample: int = 7,
                         jac: bool = False, chunk: int = 512):
    """Rotated pseudo-Voigt profiles by sub-pixel supersampling (as ``peak_profile``).

    Returns (N, s, s) unit-integral pixel fractions and, with ``jac``, their
    derivatives with respect to the centre row and col, (2, N, s, s).
    """
    n = int(np.broadcast(*(np.asarray(v) for v in (row, col, sigma_row, sigma_col, angle, eta))).size)
    params = [np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in (row, col, sigma_row, sigma_col, angle, eta)]
    m = int(supersample)
    offsets = (np.arange(m) + 0.5) / m - 0.5
    grid = (np.arange(size, dtype=float)[:, None] + offsets[None, :]).reshape(-1)
    out = np.empty((n, size, size))
    deriv = np.empty((2, n, size, size)) if jac else None
    k = LORENTZ_GAMMA_PER_SIGMA

    def pool(v):
        return v.reshape(-1, size, m, size, m).mean(axis=(2, 4))

    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        r0, c0, sr, sc, ang, et = (p[sl][:, None, None] for p in params)
        dr = grid[None, :, None] - r0
        dc = grid[None, None, :] - c0
        ca, sa = np.cos(ang), np.sin(ang)
        x = ca * dr + sa * dc
        y = -sa * dr + ca * dc
        xs, ys = x / (sr * sr), y / (sc * sc)
        gauss = (1.0 - et) / (2 * np.pi * sr * sc) * np.exp(-0.5 * (x * xs + y * ys))
        value = gauss
        if jac:
            d_row = gauss * (xs * ca - ys * sa)
            d_col = gauss * (xs * sa + ys * ca)
        lor_rows = np.nonzero(et[:, 0, 0] > 0)[0]
        if lor_rows.size:
            xl, yl = x[lor_rows], y[lor_rows]
            srl, scl, cal, sal = sr[lor_rows], sc[lor_rows], ca[lor_rows], sa[lor_rows]
            xls, yls = xl / (k * k * srl * srl), yl / (k * k * scl * scl)
            q = 1.0 + xl * xls + yl * yls
            lor = et[lor_rows] / (2 * np.pi * k * k * srl * scl) / (q * np.sqrt(q))
            value = value.copy()
            value[lor_rows] += lor
            if jac:
                f = 3.0 * lor / q
                d_row[lor_rows] += f * (xls * cal - yls * sal)
                d_col[lor_rows] += f * (xls * sal + yls * cal)
        out[sl] = pool(value)
        if jac:
            deriv[0, sl] = pool(d_row)
            deriv[1, sl] = pool(d_col)
    return (out, deriv) if jac else out


def render_profile(size: int, row, col, sigma_row, sigma_col, angle=0.0, eta=0.0, *,
                   supersample: int = 7) -> np.ndarray:
    """Pixel-integrated profiles of any peaks: closed form when axis-aligned.

    Returns (N, s, s); rotated peaks (``angle != 0``) are supersampled.
    """
    row, col, sr, sc, ang, et = broadcast_peaks(row, col, sigma_row, sigma_col, angle, eta)
    out = np.empty((row.size, size, size))
    rot, sr_a, sc_a = split_rotated(ang, sr, sc)
    ax = ~rot
    if ax.any():
        out[ax] = axis_profile(size, row[ax], col[ax], sr_a[ax], sc_a[ax], et[ax])
    if rot.any():
        out[rot] = supersampled_profile(size, row[rot], col[rot], sr[rot], sc[rot], ang[rot], et[rot],
                                        supersample=supersample)
    return out


def broadcast_peaks(*values) -> list[np.ndarray]:
    """Broadcast peak parameters (scalars or arrays) to 1D float arrays of one length."""
    return np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)) for v in values))


def split_rotated(angle: np.ndarray, sigma_row: np.ndarray, sigma_col: np.ndarray):
    """Which peaks need supersampling, and the axis-aligned widths of the others.

    Angles that are multiples of pi/2 are axis-aligned (an odd multiple swaps the
    widths).  Returns ``rotated`` (N,) bool and the widths along rows and cols.
    """
    rotated = np.abs(np.sin(2 * angle)) > 1e-12
    swap = ~rotated & (np.abs(np.cos(angle)) < 0.5)
    return rotated, np.where(swap, sigma_col, sigma_row), np.where(swap, sigma_row, sigma_col)
