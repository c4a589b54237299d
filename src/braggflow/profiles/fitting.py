"""Batched Poisson maximum-likelihood fits of peak profiles to many patches at once.

One Levenberg-Marquardt iteration updates every patch still moving: the
model and its Jacobian are evaluated for the whole stack as (N, M, P) arrays,
the normal equations are the expected Fisher information of the Poisson
likelihood, and each patch keeps its own damping.  Nothing loops over
patches in Python, so a thousand patches cost about as much as a few.

Models (photons per pixel, ``mu = I * P(pixel) + B``, ``P`` of unit integral
over the plane):

``"gauss"``
    Axis-aligned 2D Gaussian, pixel-integrated exactly (products of erf
    differences); parameters ``row, col, sigma_row, sigma_col, I, B``.
``"pvoigt"``
    Rotated elliptical pseudo-Voigt ``(1 - eta) G + eta L`` of
    :mod:`braggflow.profiles.render` (``L`` the 2D Cauchy of equal FWHM, whose
    wings fall as r^-3); parameters ``row, col, q_rr, q_rc, q_cc, eta, I, B``.
``"moffat"``
    Rotated elliptical Moffat profile written so that its core matches the
    Gaussian of the same precision matrix,
    ``(1 - t) sqrt(det Q) / (2 pi) (1 + t u^2 / 2)^(-1 / t)`` with
    ``u^2 = d^T Q d`` and ``t = 1 / beta`` (``t -> 0`` is the Gaussian,
    ``t = 0.4`` the Moffat of beta 2.5, wings r^-2beta); parameters
    ``row, col, q_rr, q_rc, q_cc, t, I, B``.
``"pvmoffat"``
    Rotated elliptical pseudo-Voigt-Moffat ``(1 - eta) G + eta M``: the
    Gaussian core ``G`` of precision ``Q`` and the Moffat wing
    ``M = sqrt(det Q) (beta - 1) / (pi k^2) (1 + u^2 / k^2)^(-beta)`` with
    ``k`` the pseudo-Voigt's ``LORENTZ_GAMMA_PER_SIGMA`` and free exponent
    ``beta = 1 / t`` from 1.5 to 10 (``beta = 1.5`` is the pseudo-Voigt
    exactly, ``eta = 1`` a Moffat profile, ``eta = 0`` a Gaussian);
    parameters ``row, col, q_rr, q_rc, q_cc, eta, t, I, B`` (the profile of
    :mod:`braggflow.integrate.profile`).
``"rgauss"``
    Rotated elliptical Gaussian of precision matrix ``Q`` (the
    pseudo-Voigt-Moffat with ``eta = 0``, at the cost of a Gaussian);
    parameters ``row, col, q_rr, q_rc, q_cc, I, B``.
``"gauss2"``
    Two axis-aligned Gaussians of one shape (a blend): ``row1, col1, row2,
    col2, sigma_row, sigma_col, I1, I2, B``.

The rotated models are evaluated at the centres of ``supersample`` x
``supersample`` sub-pixels with the precision matrix of the profile
convolved with the sub-pixel (``Sigma + 1 / (12 k^2)``): the pixel
integral of a smooth profile to second order.  The fitted ``Q`` is that
effective precision; :func:`widths` gives the profile's own covariance.

Objective: the Poisson deviance ``2 sum (mu - y + y ln(y / mu))``, whose
minimum is the maximum-likelihood estimate (unbiased and at the Cramér-Rao
bound for bright peaks; Mortensen et al. 2010, Laurence & Chromy 2010).  The
step solves ``(F + lambda diag F) delta = -grad`` with ``F = J^T diag(1/mu) J``
the expected Fisher information (Fisher scoring, damped as Levenberg 1944,
Marquardt 1963).  The covariance of the estimate is ``F^-1`` at the solution,
the Cramér-Rao bound of the fitted model, not scaled by the reduced chi^2;
a wing fraction on its limit (a Gaussian's ``eta = 0``) is held there, as
known, and so is the wing exponent of a profile without a wing or on a
limit of its range (beta 1.5 or 10: the estimate cannot scatter past it).

References
----------
Mortensen, Churchman, Spudich & Flyvbjerg, Nat. Methods 7, 377 (2010).
Laurence & Chromy, Nat. Methods 7, 338 (2010).
Moffat, Astron. Astrophys. 3, 455 (1969) (the Moffat profile).
Marquardt, J. Soc. Ind. Appl. Math. 11, 431 (1963).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from braggflow.profiles import _kernels
from braggflow.profiles.render import LORENTZ_GAMMA_PER_SIGMA

__all__ = ["MODELS", "ENGINES", "BatchFit", "fit_profiles", "fit_amplitudes", "evaluate", "information", "widths",
           "start_parameters", "wing_scores", "residual_bumps", "PARAMETERS"]

#: Parameter names of each model, in order.
PARAMETERS = {
    "gauss": ("row", "col", "sigma_row", "sigma_col", "intensity", "background"),
    "pvoigt": ("row", "col", "q_rr", "q_rc", "q_cc", "eta", "intensity", "background"),
    "moffat": ("row", "col", "q_rr", "q_rc", "q_cc", "t", "intensity", "background"),
    "pvmoffat": ("row", "col", "q_rr", "q_rc", "q_cc", "eta", "t", "intensity", "background"),
    "rgauss": ("row", "col", "q_rr", "q_rc", "q_cc", "intensity", "background"),
    "gauss2": ("row1", "col1", "row2", "col2", "sigma_row", "sigma_col", "intensity1", "intensity2", "background"),
}
MODELS = tuple(PARAMETERS)
ROTATED = ("pvoigt", "moffat", "pvmoffat", "rgauss")

_NDERIV = {"pvoigt": 6, "moffat": 6, "pvmoffat": 7, "rgauss": 5}  # profile derivatives of the rotated models
_MU_FLOOR = 1e-9  # photons
_LAM_START = 1e-3  # the damping a fit starts with
_SIGMA_MIN = 0.2  # px
_T_RANGE = (0.01, 0.8)  # Moffat 1 / beta: beta from 1.25 to 100
_T_RANGE_PVM = (0.1, 2.0 / 3.0)  # the pseudo-Voigt-Moffat's wing exponent 1 / beta: beta from 1.5 (Lorentzian) to 10
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
#: Columns in photons (intensities and background) of each model's parameters.
_PHOTONS = {model: [i for i, name in enumerate(names) if name.startswith(("intensity", "background"))]
            for model, names in PARAMETERS.items()}
_K2 = LORENTZ_GAMMA_PER_SIGMA ** 2


@dataclass
class BatchFit:
    """Result of :func:`fit_profiles` for N patches.

    Attributes
    ----------
    model : str
        One of :data:`MODELS`.
    params : (N, P) ndarray
        Parameters (photons for intensities and background; patch px).
    cov : (N, P, P) ndarray
        Inverse expected Fisher information at ``params`` (photons, px).
    deviance : (N,) ndarray
        Poisson deviance at the solution (chi^2-like, about the number of
        pixels minus P for a model that describes the data).
    npix : (N,) ndarray of int
        Pixels used.
    iterations : (N,) ndarray of int
        Levenberg-Marquardt iterations taken.
    ok : (N,) ndarray of bool
        Finite parameters with positive variances.
    converged : (N,) ndarray of bool
        The deviance stopped falling before ``max_iter`` (the others are the
        last iterate, usually close: a flat direction such as a pseudo-Voigt's
        eta on a faint peak).
    """

    model: str
    params: np.ndarray
    cov: np.ndarray
    deviance: np.ndarray
    npix: np.ndarray
    iterations: np.ndarray
    ok: np.ndarray
    converged: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    def column(self, name: str) -> np.ndarray:
        """The parameter ``name`` of every patch, (N,)."""
        return self.params[:, PARAMETERS[self.model].index(name)]

    def error(self, name: str) -> np.ndarray:
        """The 1-sigma error of parameter ``name`` (square root of its variance), (N,)."""
        k = PARAMETERS[self.model].index(name)
        return np.sqrt(np.maximum(self.cov[:, k, k], 0.0))


# ---------------------------------------------------------------------------------------------------------------
# models: expected photons (N, M) and derivatives (N, M, P) on flattened pixel grids


def _gauss_1d(edges, mu, sigma):
    """Pixel fractions of 1D Gaussians and their derivatives: edges (E,), mu, sigma (N,) -> (N, E-1) x 3."""
    t = (edges[None, :] - mu[:, None]) / sigma[:, None]
    cdf = ndtr(t)
    pdf = np.exp(-0.5 * t * t) * _INV_SQRT_2PI
    frac = np.diff(cdf, axis=1)
    d_mu = -np.diff(pdf, axis=1) / sigma[:, None]
    d_sigma = -np.diff(pdf * t, axis=1) / sigma[:, None]
    return frac, d_mu, d_sigma


def _gauss_axis(size, row, col, sr, sc, jac):
    """Axis-aligned pixel-integrated Gaussians: profile (N, s*s) and derivatives (N, s*s, 4) by row, col, sr, sc."""
    edges = np.arange(size + 1, dtype=float) - 0.5
    fr, dfr, dsr = _gauss_1d(edges, row, sr)
    fc, dfc, dsc = _gauss_1d(edges, col, sc)
    n = len(row)
    prof = (fr[:, :, None] * fc[:, None, :]).reshape(n, size * size)
    if not jac:
        return prof, None
    d = np.empty((n, size, size, 4))
    d[..., 0] = dfr[:, :, None] * fc[:, None, :]
    d[..., 1] = fr[:, :, None] * dfc[:, None, :]
    d[..., 2] = dsr[:, :, None] * fc[:, None, :]
    d[..., 3] = fr[:, :, None] * dsc[:, None, :]
    return prof, d.reshape(n, -1, 4)


@dataclass(frozen=True)
class _Grid:
    """Sub-pixel sample offsets of an (s, s) patch: (s*s*k*k,) row and col, pooled k*k at a time per pixel."""

    size: int
    k: int
    dr: np.ndarray
    dc: np.ndarray

    @classmethod
    def make(cls, size: int, k: int) -> _Grid:
        off = (np.arange(k) + 0.5) / k - 0.5
        r = np.arange(size, dtype=float)
        rr = (r[:, None, None, None] + off[None, None, :, None]) + 0.0 * off[None, None, None, :]
        cc = (r[None, :, None, None] + off[None, None, None, :]) + 0.0 * off[None, None, :, None]
        rr = np.broadcast_to(rr, (size, size, k, k)).reshape(-1)
        cc = np.broadcast_to(cc, (size, size, k, k)).reshape(-1)
        return cls(size, k, rr, cc)

    def pool(self, v: np.ndarray) -> np.ndarray:
        """Mean over each pixel's k*k samples: (N, s*s*k*k, ...) -> (N, s*s, ...)."""
        if self.k == 1:
            return v
        n = v.shape[0]
        return v.reshape(n, self.size * self.size, self.k * self.k, *v.shape[2:]).mean(axis=2)


def _rotated(grid: _Grid, p: np.ndarray, kind: str, jac: bool):
    """Rotated pseudo-Voigt, Moffat or pseudo-Voigt-Moffat profiles: (N, s*s) and derivatives (N, s*s, 6 or 7) by
    row, col, q_rr, q_rc, q_cc, and eta (pseudo-Voigt), t (Moffat) or eta and t (pseudo-Voigt-Moffat)."""
    row, col, a, b, c = (p[:, i : i + 1] for i in range(5))
    shape = p[:, 5:6]
    dr = grid.dr[None, :] - row
    dc = grid.dc[None, :] - col
    det = a * c - b * b
    sdet = np.sqrt(det)
    u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
    if kind == "rgauss":
        value = np.exp(-0.5 * u2) * (sdet / (2.0 * np.pi))
        if not jac:
            return grid.pool(value), None
        dval_du2 = -0.5 * value
        d_shape = None
    elif kind == "pvmoffat":
        eta, t = shape, p[:, 6:7]
        g = np.exp(-0.5 * u2) * (sdet / (2.0 * np.pi))
        v1 = 1.0 + u2 / _K2
        lv = np.log(v1)
        m = (sdet * (1.0 - t) / (np.pi * _K2 * t)) * np.exp(-lv / t)
        value = (1.0 - eta) * g + eta * m
        if not jac:
            return grid.pool(value), None
        dval_du2 = -0.5 * (1.0 - eta) * g - eta * m / (t * _K2 * v1)
        d_shape = m - g
        d_t = eta * m * (-1.0 / (1.0 - t) - 1.0 / t + lv / (t * t))
    elif kind == "pvoigt":
        g = np.exp(-0.5 * u2) * (sdet / (2.0 * np.pi))
        q = 1.0 + u2 / _K2
        lor = (sdet / (2.0 * np.pi * _K2)) / (q * np.sqrt(q))
        value = (1.0 - shape) * g + shape * lor
        if not jac:
            return grid.pool(value), None
        dval_du2 = -0.5 * (1.0 - shape) * g - 1.5 / _K2 * shape * lor / q  # d value / d u^2
        d_shape = lor - g
    else:  # moffat
        t = shape
        x = 1.0 + 0.5 * t * u2
        lx = np.log(x)
        value = (1.0 - t) * (sdet / (2.0 * np.pi)) * np.exp(-lx / t)
        if not jac:
            return grid.pool(value), None
        dval_du2 = -0.5 * value / x
        d_shape = value * (-1.0 / (1.0 - t) + lx / (t * t) - 0.5 * u2 / (t * x))
    n = len(p)
    d = np.empty((n, dr.shape[1], _NDERIV[kind]))
    if kind == "pvmoffat":
        d[..., 6] = d_t
    d[..., 0] = -2.0 * dval_du2 * (a * dr + b * dc)
    d[..., 1] = -2.0 * dval_du2 * (b * dr + c * dc)
    half_over_det = 0.5 * value / det
    d[..., 2] = half_over_det * c + dval_du2 * dr * dr
    d[..., 3] = -2.0 * half_over_det * b + dval_du2 * 2.0 * dr * dc
    d[..., 4] = half_over_det * a + dval_du2 * dc * dc
    if d_shape is not None:
        d[..., 5] = d_shape
    return grid.pool(value), grid.pool(d)


def evaluate(model: str, params: np.ndarray, size: int, *, supersample: int = 2, jac: bool = True,
             _grid: _Grid | None = None):
    """Expected photons of ``model`` on (s, s) patches, and their derivatives.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    params : (N, P) ndarray
        Parameters in the order of :data:`PARAMETERS`.
    size : int
        Patch side s, px; pixel centres at 0 .. s-1.
    supersample : int
        Sub-pixels per axis for the rotated models.
    jac : bool
        Also return the derivatives.

    Returns
    -------
    mu : (N, s*s) ndarray
        Expected photons per pixel (row-major).
    jac : (N, s*s, P) ndarray or None
        d mu / d params.
    """
    n = len(params)
    if model == "gauss":
        prof, d = _gauss_axis(size, params[:, 0], params[:, 1], params[:, 2], params[:, 3], jac)
        inten, bg = params[:, 4:5], params[:, 5:6]
        mu = inten * prof + bg
        if not jac:
            return mu, None
        out = np.empty((n, size * size, 6))
        out[..., :4] = inten[:, :, None] * d
        out[..., 4] = prof
        out[..., 5] = 1.0
        return mu, out
    if model == "gauss2":
        p1, d1 = _gauss_axis(size, params[:, 0], params[:, 1], params[:, 4], params[:, 5], jac)
        p2, d2 = _gauss_axis(size, params[:, 2], params[:, 3], params[:, 4], params[:, 5], jac)
        i1, i2, bg = params[:, 6:7], params[:, 7:8], params[:, 8:9]
        mu = i1 * p1 + i2 * p2 + bg
        if not jac:
            return mu, None
        out = np.empty((n, size * size, 9))
        out[..., 0:2] = i1[:, :, None] * d1[..., 0:2]
        out[..., 2:4] = i2[:, :, None] * d2[..., 0:2]
        out[..., 4:6] = i1[:, :, None] * d1[..., 2:4] + i2[:, :, None] * d2[..., 2:4]
        out[..., 6] = p1
        out[..., 7] = p2
        out[..., 8] = 1.0
        return mu, out
    if model not in ROTATED:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    grid = _grid if _grid is not None else _Grid.make(size, supersample)
    prof, d = _rotated(grid, params, model, jac)
    k = _NDERIV[model]
    inten, bg = params[:, k : k + 1], params[:, k + 1 : k + 2]
    mu = inten * prof + bg
    if not jac:
        return mu, None
    out = np.empty((n, size * size, k + 2))
    out[..., :k] = inten[:, :, None] * d
    out[..., k] = prof
    out[..., k + 1] = 1.0
    return mu, out


def widths(fit: BatchFit, supersample: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted profile's own widths: sigma_row, sigma_col (px) and the row-col covariance (px^2).

    For the rotated models the covariance ``Q^-1`` less the sub-pixel box
    (``1 / (12 k^2)``), for the Gaussians the fitted sigmas.  For the Moffat
    and pseudo-Voigt models these are the widths of the Gaussian core.

    Parameters
    ----------
    fit : BatchFit
        A fit of N patches.
    supersample : int
        Sub-pixel samples per axis ``k`` the fit used.

    Returns
    -------
    sigma_row, sigma_col : (N,) ndarray
        Widths along rows and columns, px.
    rc_cov : (N,) ndarray
        Row-column covariance of the profile, px^2 (0 for axis-aligned models).
    """
    p = fit.params
    if fit.model in ("gauss", "gauss2"):
        i = PARAMETERS[fit.model].index("sigma_row")
        return p[:, i], p[:, i + 1], np.zeros(len(p))
    a, b, c = p[:, 2], p[:, 3], p[:, 4]
    det = a * c - b * b
    box = 1.0 / (12.0 * supersample * supersample)
    with np.errstate(invalid="ignore", divide="ignore"):
        srr, scc, src = c / det - box, a / det - box, -b / det
    return np.sqrt(np.maximum(srr, 0.0)), np.sqrt(np.maximum(scc, 0.0)), src


# ---------------------------------------------------------------------------------------------------------------
# the Levenberg-Marquardt iteration


def _deviance(y, mu, good):
    """Poisson deviance of each patch, (N,); ``y`` photons (N, M), ``good`` (N, M) bool."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return 2.0 * np.sum(np.where(good, mu - y + ylog, 0.0), axis=1)


def _valid(model: str, p: np.ndarray, size: int) -> np.ndarray:
    """Parameters a model may take (positive widths and intensities, centres near the patch), (N,) bool."""
    lo, hi = -1.5, size + 0.5
    ok = np.all(np.isfinite(p), axis=1)
    if model == "gauss":
        pos, rest = p[:, :2], [p[:, 2] >= _SIGMA_MIN, p[:, 3] >= _SIGMA_MIN, p[:, 4] > 0, p[:, 5] >= 0]
    elif model == "gauss2":
        pos = p[:, :4]
        rest = [p[:, 4] >= _SIGMA_MIN, p[:, 5] >= _SIGMA_MIN, p[:, 6] > 0, p[:, 7] > 0, p[:, 8] >= 0]
    else:
        a, b, c = p[:, 2], p[:, 3], p[:, 4]
        cap = 1.0 / (_SIGMA_MIN * _SIGMA_MIN)
        pos = p[:, :2]
        rest = [a > 0, c > 0, a * c - b * b > 0, a < cap, c < cap, p[:, -2] > 0, p[:, -1] >= 0]
        blo, bhi = _bounds(model)
        rest.append(np.all((p[:, 5:-2] >= blo[5:-2]) & (p[:, 5:-2] <= bhi[5:-2]), axis=1))
    ok &= np.all((pos > lo) & (pos < hi), axis=1)
    for cond in rest:
        ok &= cond
    return ok


def _bounds(model: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits of the parameters that a step is projected onto (background >= 0, eta, t, sigmas);
    made once per model (:data:`_BOUNDS`), not to be changed."""
    bounds = _BOUNDS.get(model)
    if bounds is None:
        bounds = _BOUNDS[model] = _make_bounds(model)
    return bounds


#: The bounds of each model (:func:`_bounds`), made on first use.
_BOUNDS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _make_bounds(model: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of :func:`_bounds`."""
    npar = len(PARAMETERS[model])
    lo, hi = np.full(npar, -np.inf), np.full(npar, np.inf)
    lo[-1] = 0.0
    if model == "pvoigt":
        lo[5], hi[5] = 0.0, 1.0
    elif model == "moffat":
        lo[5], hi[5] = _T_RANGE
    elif model == "pvmoffat":
        lo[5], hi[5] = 0.0, 1.0
        lo[6], hi[6] = _T_RANGE_PVM
    elif model == "rgauss":
        pass
    else:
        i = PARAMETERS[model].index("sigma_row")
        lo[i : i + 2] = _SIGMA_MIN
    return lo, hi


def _held(model: str, p: np.ndarray) -> np.ndarray:
    """Parameters that the covariance treats as known, (N, P) bool: a Lorentzian or Moffat fraction eta on its
    limit 0 (a Gaussian peak), and then the pseudo-Voigt-Moffat's wing exponent (undefined without a wing; on a
    limit of its range, where its estimate cannot scatter past it)."""
    held = np.zeros(p.shape, dtype=bool)
    if model in ("pvoigt", "pvmoffat"):
        held[:, 5] = p[:, 5] <= 0.0
    if model == "pvmoffat":
        held[:, 6] = (p[:, 5] < 1e-3) | (p[:, 6] <= _T_RANGE_PVM[0]) | (p[:, 6] >= _T_RANGE_PVM[1])
    return held


def _project(model: str, p: np.ndarray) -> np.ndarray:
    """Clip the bounded parameters onto their limits (:func:`_bounds`)."""
    lo, hi = _bounds(model)
    return np.clip(p, lo, hi)


def _pin(model: str, p: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Parameters held at a limit that the descent direction points past, (N, P) bool (left out of the step)."""
    lo, hi = _bounds(model)
    return ((p <= lo) & (grad > 0)) | ((p >= hi) & (grad < 0))


def _solve(fisher, grad, lam):
    """Damped steps ``-(F + lam diag F)^-1 grad`` for stacked systems (Jacobi-scaled); NaN rows where singular."""
    diag = np.einsum("nii->ni", fisher)
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    a = fisher / (scale[:, :, None] * scale[:, None, :])
    idx = np.arange(a.shape[1])
    a[:, idx, idx] += lam[:, None] * np.where(diag > 0, 1.0, 0.0) + 1e-12
    rhs = -grad / scale
    try:
        x = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        x = np.full_like(rhs, np.nan)
        for i in range(len(a)):
            try:
                x[i] = np.linalg.solve(a[i], rhs[i])
            except np.linalg.LinAlgError:
                pass
    return x / scale


def _covariance(fisher):
    """Inverse of stacked information matrices (Jacobi-scaled); NaN where singular."""
    diag = np.einsum("nii->ni", fisher)
    d = np.sqrt(np.where(diag > 0, diag, 1.0))
    scaled = fisher / (d[:, :, None] * d[:, None, :])
    cov = np.full_like(fisher, np.nan)
    good = np.all(np.isfinite(scaled), axis=(1, 2))
    if good.any():
        sub = scaled[good]
        eig = np.abs(np.linalg.eigvalsh(sub))  # symmetric: the singular values
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = eig.max(axis=1) / eig.min(axis=1) < 1e13
        inv = np.full_like(sub, np.nan)
        if ok.any():
            inv[ok] = np.linalg.inv(sub[ok])
        cov[good] = inv
    return cov / (d[:, :, None] * d[:, None, :])


def fit_profiles(data, good, start, *, model: str = "gauss", gain: float = 1.0, supersample: int = 2,
                 max_iter: int = 60, tol: float = 1e-3, hold=None, background_prior=None,
                 engine: str = "auto") -> BatchFit:
    """Fit ``model`` to every patch by Poisson maximum likelihood, all patches at once.

    Parameters
    ----------
    data : (N, s, s) ndarray
        Patches, counts (ADU).
    good : (N, s, s) ndarray of bool
        Pixels to use (False: masked, another peak's, saturated).
    start : (N, P) ndarray
        Starting parameters (see :data:`PARAMETERS`; intensities and
        background in counts, converted to photons with ``gain`` here).
    model : str
        One of :data:`MODELS`.
    gain : float
        Counts (ADU) per photon.
    supersample : int
        Sub-pixels per axis for the rotated models.
    max_iter : int
        Most Levenberg-Marquardt iterations.
    tol : float
        A patch stops when an accepted step lowers its deviance by less than
        ``tol`` (a change of 1 is one standard deviation of one parameter),
        when the next step (damping not raised) is predicted to lower it by
        less than ``tol`` (``-grad . step`` of the quadratic model; the step is
        then not taken), or when no step lowers it (damping above 1e10).
    hold : (N, P) or (P,) array_like of bool, optional
        Parameters kept at their ``start`` values (known, such as a
        background measured elsewhere): not fitted, zero variance.
    background_prior : ((N,), (N,)) array_like, optional
        A measurement of the background (level and variance, counts/px and
        counts^2) that the fit combines with the patch: the deviance gains
        ``(B - level)^2 / variance`` (a Gaussian prior), the Fisher
        information ``1 / variance``, so the background's uncertainty reaches
        the intensity's error.  Patches with a non-finite or non-positive
        variance get no prior.
    engine : {"auto", "numba", "numpy"}
        The compiled iteration, one patch at a time (:mod:`braggflow.profiles._kernels`, needs numba), or the
        NumPy one, all patches at once; ``"auto"``: numba when it imports.  Both take the same steps.

    Returns
    -------
    fit : BatchFit
        Intensities and background in photons; multiply by ``gain`` for counts.

    Raises
    ------
    ValueError
        If ``model`` or ``engine`` is unknown, ``engine="numba"`` without numba, or the shapes disagree.
    """
    if model not in PARAMETERS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    data = np.asarray(data, dtype=float)
    n = data.shape[0]
    npar = len(PARAMETERS[model])
    start = np.array(start, dtype=float, copy=True)
    if start.shape != (n, npar) or np.shape(good) != data.shape:
        raise ValueError(f"start must be (N, {npar}) and good (N, s, s) for data {data.shape}")
    photons = _PHOTONS[model]
    if gain != 1.0:  # x / 1 and x * 1 are x
        start[:, photons] /= gain
    # a writable copy: a read-only (broadcast) array would be another signature of the compiled iteration
    hold = np.zeros((n, npar), dtype=bool) if hold is None else np.broadcast_to(np.asarray(hold, dtype=bool),
                                                                                 (n, npar)).copy()
    if _check_engine(engine) == "numpy" or (engine == "auto" and not _kernels.AVAILABLE):
        prob = _Problem(model, data, good, gain, supersample, hold, background_prior)
        params, iters, conv = prob.iterate(start, max_iter, tol)
        cov = prob.covariance(params)
        dev, npix = prob.dev, prob.good.sum(axis=1)
        diag = np.einsum("nii->ni", cov)
        held = _held(model, np.nan_to_num(params)) | hold
        ok = prob.alive & np.all(np.isfinite(params), axis=1) & np.all((diag > 0) | held, axis=1)
    else:
        params, cov, dev, iters, conv, ok, npix = _fit_compiled(model, data, good, start, gain, supersample, hold,
                                                                background_prior, max_iter, tol)
    if gain != 1.0:
        params[:, photons] *= gain
        cov[:, photons, :] *= gain
        cov[:, :, photons] *= gain
    return BatchFit(model=model, params=params, cov=cov, deviance=dev, npix=npix, iterations=iters, ok=ok,
                    converged=conv)


#: How :func:`fit_profiles` iterates: ``"numba"`` (compiled, one patch at a time, :mod:`._kernels`), ``"numpy"``
#: (all patches at once, vectorised) or ``"auto"`` (numba when it imports).
ENGINES = ("auto", "numba", "numpy")


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if engine == "numba" and not _kernels.AVAILABLE:
        raise ValueError("engine='numba' needs numba (pip install numba)")
    return engine


def _background_weights(background_prior, n: int, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """The background prior as (level, weight) in photons, (N,) each; weight 0 where there is none."""
    if background_prior is None:
        return np.zeros(n), np.zeros(n)
    level, var = (np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in background_prior)
    has = np.isfinite(level) & np.isfinite(var) & (var > 0)
    return np.where(has, level / gain, 0.0), np.where(has, gain * gain / np.where(has, var, 1.0), 0.0)


def _fit_compiled(model, data, good, start, gain, supersample, hold, background_prior, max_iter, tol):
    """The compiled iteration (:func:`._kernels.lm_fit`): params, cov, deviance, iterations, converged, ok,
    npix (photons), as the NumPy iteration gives them."""
    n, s = data.shape[0], data.shape[-1]
    y = np.ascontiguousarray(np.maximum(data.reshape(n, s * s), 0.0))  # a new array
    if gain != 1.0:
        y /= gain
    good = np.ascontiguousarray(np.asarray(good, dtype=bool).reshape(n, s * s))
    prior_b, prior_w = _background_weights(background_prior, n, gain)
    lo, hi = _bounds(model)
    k = supersample if model in ROTATED else 1
    params, fisher, dev, iters, conv, alive, npix = _kernels.lm_fit(
        _kernels.MODEL_IDS[model], y, good, np.ascontiguousarray(start), np.ascontiguousarray(hold), lo, hi,
        prior_b, prior_w, s, int(k), float(_K2), int(max_iter), float(tol), float(_SIGMA_MIN))
    cov, ok = _kernels.held_covariance(_kernels.MODEL_IDS[model], fisher, params, hold, alive, *_T_RANGE_PVM)
    return params, cov, dev, iters, conv, ok, npix


def information(model: str, photons, good, params, *, supersample: int = 2, background_weight=None,
                engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Expected Fisher information of ``model`` at ``params`` and the Poisson score there, for N patches.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    photons : (N, s, s) ndarray
        Patches, photons (counts / gain).
    good : (N, s, s) ndarray of bool
        Pixels used.
    params : (N, P) ndarray
        Parameters, intensities and background in photons.
    supersample : int
        Sub-pixels per axis of the rotated models.
    background_weight : (N,) array_like, optional
        1 / variance of a background prior (photons^-2), added to the background's information.
    engine : {"auto", "numba", "numpy"}
        As :func:`fit_profiles`.

    Returns
    -------
    fisher : (N, P, P) ndarray
        ``J^T diag(1 / mu) J`` over the good pixels (zero for rows of ``params`` that are not finite).
    score : (N, P) ndarray
        ``J^T (y / mu - 1)``: the derivative of the log-likelihood by each parameter.

    Raises
    ------
    ValueError
        If ``model`` or ``engine`` is unknown.
    """
    if model not in PARAMETERS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    n, s = photons.shape[0], photons.shape[-1]
    y = np.ascontiguousarray(np.maximum(np.asarray(photons, dtype=float).reshape(n, s * s), 0.0))
    good = np.ascontiguousarray(np.asarray(good, dtype=bool).reshape(n, s * s))
    weight = np.zeros(n) if background_weight is None else np.broadcast_to(
        np.nan_to_num(np.asarray(background_weight, dtype=float)), (n,)).copy()
    params = np.ascontiguousarray(params, dtype=float)
    if _check_engine(engine) == "numpy" or (engine == "auto" and not _kernels.AVAILABLE):
        finite = np.all(np.isfinite(params), axis=1)
        mu, jac = evaluate(model, np.where(finite[:, None], params, 0.0), s, supersample=supersample)
        mu = np.maximum(mu, _MU_FLOOR)
        w = np.where(good & finite[:, None], 1.0 / mu, 0.0)
        fisher = np.matmul((jac * w[:, :, None]).transpose(0, 2, 1), jac)
        fisher[:, -1, -1] += np.where(finite, weight, 0.0)
        score = np.einsum("nm,nmp->np", w * (y - mu), jac)
        return fisher, score
    k = supersample if model in ROTATED else 1
    fisher, grad = _kernels.information_at(_kernels.MODEL_IDS[model], y, good, params, weight, s, int(k), float(_K2))
    return fisher, -grad


def wing_scores(photons, good, params, exponents, *, supersample: int = 1, background_weight=None,
                engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Rao's score statistic for a wing at a rotated Gaussian's solution, for each wing exponent.

    The pseudo-Voigt-Moffat (``"pvmoffat"``) at ``eta = 0`` is the rotated
    Gaussian of its other parameters; the statistic is the derivative of
    the Poisson log-likelihood by ``eta`` there over its standard deviation,
    the efficient information ``F_ee - F_eo F_oo^-1 F_oe`` (the other
    parameters free, ``t`` held at the exponent): about N(0, 1) for a
    Gaussian peak, large for a peak with a wing (Rao, Proc. Camb. Phil. Soc.
    44, 50, 1948).

    Parameters
    ----------
    photons : (N, s, s) ndarray
        Windows, photons.
    good : (N, s, s) ndarray of bool
        Pixels used.
    params : (N, 9) ndarray
        ``"pvmoffat"`` parameters (intensity and background in photons; eta and t are not used), finite.
    exponents : sequence of float
        Wing exponents ``t = 1 / beta`` tried.
    supersample : int
        Sub-pixels per axis.
    background_weight : (N,) array_like, optional
        1 / variance of a background prior (photons^-2).
    engine : {"auto", "numba", "numpy"}
        As :func:`fit_profiles`.

    Returns
    -------
    z : (N, T) ndarray
        The statistic at each exponent; +inf where the efficient information is not positive.
    finite : (N,) ndarray of bool
        Whether the Fisher information was finite.

    Raises
    ------
    ValueError
        If ``engine`` is unknown or ``params`` is not (N, 9).
    """
    n, s = photons.shape[0], photons.shape[-1]
    params = np.ascontiguousarray(params, dtype=float)
    if params.shape != (n, len(PARAMETERS["pvmoffat"])):
        raise ValueError(f"params must be (N, 9) for {n} windows, got {params.shape}")
    exponents = np.asarray(exponents, dtype=float)
    weight = np.zeros(n) if background_weight is None else np.broadcast_to(
        np.nan_to_num(np.asarray(background_weight, dtype=float)), (n,)).copy()
    if _check_engine(engine) != "numpy" and _kernels.AVAILABLE:
        y = np.ascontiguousarray(np.maximum(np.asarray(photons, dtype=float).reshape(n, s * s), 0.0))
        good = np.ascontiguousarray(np.asarray(good, dtype=bool).reshape(n, s * s))
        return _kernels.wing_scores(y, good, params, weight, s, int(supersample), float(_K2), exponents)
    eta, t_col = PARAMETERS["pvmoffat"].index("eta"), PARAMETERS["pvmoffat"].index("t")
    others = [i for i in range(params.shape[1]) if i not in (eta, t_col)]
    j = others + [eta]
    k = len(others)
    z = np.full((n, exponents.size), np.inf)
    finite = np.ones(n, dtype=bool)
    p = params.copy()
    for q, t in enumerate(exponents):
        p[:, eta], p[:, t_col] = 0.0, t
        fisher, score = information("pvmoffat", photons, good, p, supersample=supersample,
                                    background_weight=weight, engine="numpy")
        fisher = fisher[:, j][:, :, j]
        ok = np.all(np.isfinite(fisher), axis=(1, 2))
        finite &= ok
        info = np.full(n, np.nan)
        if ok.any():
            x = np.linalg.solve(fisher[ok, :k, :k] + 1e-12 * np.eye(k), fisher[ok, :k, k:])
            info[ok] = fisher[ok, k, k] - np.einsum("ni,ni->n", fisher[ok, k, :k], x[:, :, 0])
        z[:, q] = np.where(ok & (info > 0), score[:, eta] / np.sqrt(np.where(info > 0, info, 1.0)), np.inf)
    return z, finite


def residual_bumps(photons, good, params, size: int, width_min: float, width_max: float, *,
                   engine: str = "auto") -> np.ndarray:
    """The largest matched-filter significance of each patch's residual from an axis-aligned Gaussian.

    The residual ``y - mu`` of the pixel-integrated Gaussian ``mu`` of ``params`` (``"gauss"``; floored at
    1e-9) is correlated with the Gaussian of the fitted widths (clipped to [``width_min``, ``width_max``])
    centred on each pixel, over its standard deviation ``sqrt(sum g^2 mu)`` (floored at 1e-12): a second peak
    that the fit left out shows as a bump (about 2-3 for a single peak, the largest of ~100 correlated normal
    deviates).

    Parameters
    ----------
    photons : (N, size * size) ndarray
        Patches, photons (>= 0), rows flattened.
    good : (N, size * size) ndarray of bool
        Pixels used (the others count neither in the residual nor in the variance).
    params : (N, 6) ndarray
        ``row, col, sigma_row, sigma_col`` (patch px), ``I, B`` (photons).
    size : int
        Patch side.
    width_min, width_max : float
        Limits of the kernel's widths, px.
    engine : {"auto", "numba", "numpy"}
        As :func:`fit_profiles`.

    Returns
    -------
    bump : (N,) ndarray
        NaN where ``params`` is not finite or a width not positive.

    Raises
    ------
    ValueError
        If ``engine`` is unknown.
    """
    params = np.ascontiguousarray(params, dtype=float)
    n = len(params)
    if _check_engine(engine) != "numpy" and _kernels.AVAILABLE:
        return _kernels.residual_bumps(np.ascontiguousarray(photons, dtype=float),
                                       np.ascontiguousarray(good, dtype=bool), params, int(size), float(width_min),
                                       float(width_max))
    valid = np.all(np.isfinite(params), axis=1) & (params[:, 2] > 0) & (params[:, 3] > 0)
    p = np.where(valid[:, None], params, [size / 2, size / 2, 1.0, 1.0, 0.0, 0.0])
    mu = np.maximum(evaluate("gauss", p, size, jac=False)[0], _MU_FLOOR).reshape(n, size, size)
    good = np.asarray(good, dtype=bool).reshape(n, size, size)
    resid = np.where(good, np.asarray(photons, dtype=float).reshape(n, size, size) - mu, 0.0)
    var = np.where(good, mu, 0.0)
    idx = np.arange(size, dtype=float)
    dist2 = (idx[:, None] - idx[None, :]) ** 2
    kr = np.exp(-0.5 * dist2[None] / np.clip(p[:, 2], width_min, width_max)[:, None, None] ** 2)
    kc = np.exp(-0.5 * dist2[None] / np.clip(p[:, 3], width_min, width_max)[:, None, None] ** 2)
    num = kr @ resid @ kc.transpose(0, 2, 1)
    den = (kr * kr) @ var @ (kc * kc).transpose(0, 2, 1)
    bump = (num / np.sqrt(np.maximum(den, 1e-12))).reshape(n, -1).max(axis=1)
    return np.where(valid, bump, np.nan)


def fit_amplitudes(data, good, start, *, gain: float = 1.0, iterations: int = 6,
                   engine: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson maximum-likelihood intensity and background of axis-aligned Gaussians of known centre and widths.

    With the shape held, ``mu = I P + B`` is linear in its two parameters:
    Fisher scoring of those (each step shortened so that no expected count
    falls below a tenth of its value; ``I``, ``B`` >= 0) reaches the maximum
    in a few steps from any positive start.  For a peak located by the
    ``"gauss"`` fit of the same patch this is that fit's maximum (a fit of the
    same model with the centre and widths already at their estimates), at a
    fraction of its cost.

    Parameters
    ----------
    data : (N, s, s) ndarray
        Patches, counts.
    good : (N, s, s) ndarray of bool
        Pixels to use.
    start : (N, 6) ndarray
        ``row, col, sigma_row, sigma_col`` (patch px, finite, widths > 0) and the starting intensity and
        background (counts).
    gain : float
        Counts (ADU) per photon.
    iterations : int
        Scoring steps.
    engine : {"auto", "numba", "numpy"}
        As :func:`fit_profiles`.

    Returns
    -------
    intensity, background : (N,) ndarray
        Counts.
    deviance : (N,) ndarray
        Poisson deviance at the result (as :attr:`BatchFit.deviance`).

    Raises
    ------
    ValueError
        If ``engine`` is unknown or the shapes disagree.
    """
    data = np.asarray(data, dtype=float)
    n, s = data.shape[0], data.shape[-1]
    start = np.array(start, dtype=float, copy=True)
    if start.shape != (n, 6) or np.shape(good) != data.shape:
        raise ValueError(f"start must be (N, 6) and good (N, s, s) for data {data.shape}")
    start[:, 4:] /= gain
    y = np.ascontiguousarray(np.maximum(data.reshape(n, s * s), 0.0) / gain)
    good = np.ascontiguousarray(np.asarray(good, dtype=bool).reshape(n, s * s))
    if _check_engine(engine) != "numpy" and _kernels.AVAILABLE:
        inten, bg, dev = _kernels.gauss_amplitudes(y, good, start, s, int(iterations))
        return inten * gain, bg * gain, dev
    prof = evaluate("gauss", np.column_stack([start[:, :4], np.ones(n), np.zeros(n)]), s, jac=False)[0]
    y = np.where(good, y, 0.0)
    inten, bg = np.maximum(start[:, 4], 1e-3), np.maximum(start[:, 5], 0.0)
    for _ in range(iterations):
        mu = np.maximum(inten[:, None] * prof + bg[:, None], _MU_FLOOR)
        w = np.where(good, 1.0 / mu, 0.0)
        r = w * (y - mu)
        g_i, g_b = (r * prof).sum(axis=1), r.sum(axis=1)
        f_ii, f_ib, f_bb = (w * prof * prof).sum(axis=1), (w * prof).sum(axis=1), w.sum(axis=1)
        det = np.maximum(f_ii * f_bb - f_ib * f_ib, 1e-300)
        d_i, d_b = (f_bb * g_i - f_ib * g_b) / det, (f_ii * g_b - f_ib * g_i) / det
        d_mu = d_i[:, None] * prof + d_b[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            limit = np.where(good & (d_mu < 0), -0.9 * mu / d_mu, np.inf)
        frac = np.minimum(1.0, limit.min(axis=1))
        inten, bg = np.maximum(inten + frac * d_i, 1e-9), np.maximum(bg + frac * d_b, 0.0)
    mu = np.maximum(inten[:, None] * prof + bg[:, None], _MU_FLOOR)
    return inten * gain, bg * gain, _deviance(y, mu, good)


def _held_inverse(model, fisher, params, hold):
    """Inverse Fisher information with the held parameters known (zero rows and columns), (K, P, P)."""
    npar = fisher.shape[1]
    fixed = _held(model, params) | hold
    keep = (~fixed).astype(float)
    fisher = fisher * keep[:, :, None] * keep[:, None, :] + np.einsum("np,pq->npq", fixed.astype(float), np.eye(npar))
    return _covariance(fisher) * keep[:, :, None] * keep[:, None, :]


class _Problem:
    """The data, model and state of one batched fit (photons)."""

    def __init__(self, model, data, good, gain, supersample, hold, background_prior):
        n, s = data.shape[0], data.shape[-1]
        self.model, self.size, self.supersample, self.hold = model, s, supersample, hold
        self.npar = len(PARAMETERS[model])
        self.y = np.maximum(data.reshape(n, s * s), 0.0) / gain
        self.good = np.asarray(good, dtype=bool).reshape(n, s * s)
        self.grid = _Grid.make(s, supersample) if model in ROTATED else None
        self.prior_b, self.prior_w = _background_weights(background_prior, n, gain)  # weight: 1 / variance
        self.mu = np.zeros((n, s * s))
        self.jac = np.zeros((n, s * s, self.npar))
        self.dev = np.full(n, np.inf)
        self.alive = np.zeros(n, dtype=bool)

    def deviance(self, sel, mu, p):
        """Poisson deviance plus the background prior's term, (len(sel),)."""
        return _deviance(self.y[sel], mu, self.good[sel]) + self.prior_w[sel] * (p[:, -1] - self.prior_b[sel]) ** 2

    def evaluate(self, p):
        """Expected photons (floored) and Jacobian at ``p``."""
        mu, jac = evaluate(self.model, p, self.size, supersample=self.supersample, jac=True, _grid=self.grid)
        return np.maximum(mu, _MU_FLOOR), jac

    def information(self, sel):
        """Expected Fisher information (len(sel), P, P) at the current estimates, the prior included."""
        jac = self.jac[sel]
        w = np.where(self.good[sel], 1.0 / self.mu[sel], 0.0)
        fisher = np.matmul((jac * w[:, :, None]).transpose(0, 2, 1), jac)
        fisher[:, -1, -1] += self.prior_w[sel]
        return fisher

    def iterate(self, start, max_iter, tol):
        """Levenberg-Marquardt from ``start``; returns parameters, iterations and convergence, (N, P), (N,), (N,)."""
        n, model = len(start), self.model
        p = np.where(self.hold, start, _project(model, start))
        self.alive = _valid(model, p, self.size) & (self.good.sum(axis=1) > self.npar)
        params = np.where(self.alive[:, None], p, np.nan)
        lam = np.full(n, _LAM_START)
        iters = np.zeros(n, dtype=np.int64)
        conv = np.zeros(n, dtype=bool)
        active = np.flatnonzero(self.alive)
        if active.size:
            self.mu[active], self.jac[active] = self.evaluate(params[active])
            self.dev[active] = self.deviance(active, self.mu[active], params[active])
        for _ in range(max_iter):
            if active.size == 0:
                break
            iters[active] += 1
            trial, new_dev, t_mu, t_j, near = self._trial(active, params, lam, tol)
            better = (new_dev <= self.dev[active]) & ~near
            acc = active[better]
            done = near | (better & (self.dev[active] - new_dev < tol))
            params[acc] = trial[better]
            self.mu[acc], self.jac[acc], self.dev[acc] = t_mu[better], t_j[better], new_dev[better]
            lam[acc] = np.maximum(lam[acc] / 5.0, 1e-9)
            lam[active[~better & ~near]] *= 10.0
            stuck = ~better & ~near & (lam[active] > 1e10)  # no step lowers the deviance: at a minimum
            conv[active[done | stuck]] = True
            active = active[~(done | stuck)]
        return params, iters, conv

    def _trial(self, active, params, lam, tol):
        """One damped Fisher-scoring step of the ``active`` patches: trial parameters, deviance, mu, Jacobian, and
        the patches already at their minimum (undamped step predicted to lower the deviance by less than ``tol``:
        not evaluated)."""
        model, npar = self.model, self.npar
        ya, ga, mua, ja = self.y[active], self.good[active], self.mu[active], self.jac[active]
        fisher = self.information(active)
        grad = np.matmul(np.where(ga, 1.0 - ya / mua, 0.0)[:, None, :], ja)[:, 0]
        grad[:, -1] += self.prior_w[active] * (params[active, -1] - self.prior_b[active])
        pinned = _pin(model, params[active], grad) | self.hold[active]
        if pinned.any():  # a parameter at its limit, pushed outwards: held there for this step
            keep = (~pinned).astype(float)
            fisher = fisher * keep[:, :, None] * keep[:, None, :]
            fisher += np.einsum("np,pq->npq", pinned.astype(float), np.eye(npar))
            grad = grad * keep
        step = _solve(fisher, grad, lam[active])
        trial = np.where(self.hold[active], params[active], _project(model, params[active] + step))
        finite = np.all(np.isfinite(step), axis=1)
        # the quadratic model's decrease of the deviance, -grad . step (grad: of the deviance / 2)
        near = finite & (lam[active] <= _LAM_START) & (-np.sum(grad * np.nan_to_num(step), axis=1) < tol)
        ok = _valid(model, trial, self.size) & finite & ~near
        new_dev = np.full(len(active), np.inf)
        t_mu = np.zeros_like(mua)
        t_j = np.zeros_like(ja)
        if ok.any():
            t_mu[ok], t_j[ok] = self.evaluate(trial[ok])
            new_dev[ok] = self.deviance(active[ok], t_mu[ok], trial[ok])
        return trial, new_dev, t_mu, t_j, near

    def covariance(self, params):
        """Inverse Fisher information at ``params`` (held parameters: zero rows and columns), (N, P, P)."""
        n, npar = len(params), self.npar
        cov = np.full((n, npar, npar), np.nan)
        idx = np.flatnonzero(self.alive)
        if idx.size:
            cov[idx] = _held_inverse(self.model, self.information(idx), params[idx], self.hold[idx])
        return cov


def start_parameters(model: str, row, col, sigma_row, sigma_col, intensity, background, *, supersample: int = 2,
                     shape: float | None = None) -> np.ndarray:
    """Starting parameters of ``model`` from moments (centre, widths, intensity, background), (N, P).

    ``shape`` is the starting eta (pseudo-Voigt, default 0.3) or t (Moffat,
    default 0.3).  ``gauss2`` is started by :func:`braggflow.locate.batchfit`'s
    deblending from the two maxima, not here.

    Parameters
    ----------
    model : str
        A model of :func:`fit_profiles` other than ``"gauss2"``.
    row, col : (N,) array_like
        Centres, patch coordinates, px.
    sigma_row, sigma_col : (N,) array_like
        Widths, px (> 0).
    intensity : (N,) array_like
        Integrated counts above background.
    background : (N,) array_like
        Counts per pixel.
    supersample : int
        Sub-pixel samples per axis of the model.
    shape : float, optional
        Starting shape parameter (see above).

    Returns
    -------
    p0 : (N, P) ndarray
        Parameters in the model's order.

    Raises
    ------
    ValueError
        If ``model`` has no start from moments (unknown, or ``"gauss2"``).
    """
    values = [np.asarray(v, dtype=float) for v in (row, col, sigma_row, sigma_col, intensity, background)]
    if any(v.shape != values[0].shape for v in values[1:]):
        values = np.broadcast_arrays(*values)
    row, col, sr, sc, inten, bg = values
    if model == "gauss":
        return _columns(row.shape, (row, col, sr, sc, inten, bg))
    if model not in ROTATED:
        raise ValueError(f"no moment start for model {model!r}")
    box = 1.0 / (12.0 * supersample * supersample)
    a = 1.0 / (sr * sr + box)
    c = 1.0 / (sc * sc + box)
    if model == "rgauss":
        return _columns(row.shape, (row, col, a, 0.0, c, inten, bg))
    shp = 0.3 if shape is None else float(shape)
    extra = (0.5,) if model == "pvmoffat" else ()  # beta = 2
    return _columns(row.shape, (row, col, a, 0.0, c, shp, *extra, inten, bg))


def _columns(shape: tuple[int, ...], values) -> np.ndarray:
    """The arrays (of ``shape``) or numbers ``values`` as the columns of one float array, ``shape + (P,)`` (what
    ``np.stack(..., axis=-1)`` of the broadcast values gives)."""
    out = np.empty(shape + (len(values),))
    for j, v in enumerate(values):
        out[..., j] = v
    return out
