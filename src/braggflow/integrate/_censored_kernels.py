"""Compiled censored-likelihood Gaussian fits of :mod:`braggflow.integrate.censored`: one window at a time.

:func:`fit_windows` runs the damped scoring iteration of every window and
returns the parameters, the expected information at the end and whether the
fit still moved. A window's model is ``K`` elliptical Gaussians of one shape
over a held background; its parameters are, for each component, log
intensity, row and col of the centre (from the window's centre pixel), then
the shape (log sigma_row, log sigma_col, atanh of the correlation):
``3 K + 3`` in all (``K`` is 1 for a peak).
Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["fit_windows", "window_terms"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_TAIL = -20.0  # below this, log Phi and phi / Phi by their asymptotic series (erfc underflows near -38)


@njit(cache=True, nogil=True)
def _ndtr(x):  # pragma: no cover - compiled
    return 0.5 * math.erfc(-x * _SQRT_HALF)


@njit(cache=True, nogil=True)
def _log_ndtr_and_mills(z):  # pragma: no cover - compiled
    """log Phi(z) and phi(z) / Phi(z), accurate far into the lower tail."""
    if z > _TAIL:
        log_cdf = math.log(_ndtr(z))
        return log_cdf, math.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_cdf)
    q = 1.0 / (z * z)
    series = 1.0 - q + 3.0 * q * q - 15.0 * q * q * q  # Phi(z) = phi(z) / (-z) x series
    return -0.5 * z * z - math.log(-z) - _LOG_SQRT_2PI + math.log(series), -z / series


@njit(cache=True, nogil=True)
def _shape(p, npar, box):  # pragma: no cover - compiled
    """Covariance (with the pixel's box variance), its inverse and the derivatives of the covariance by the shape.

    The shape parameters are the last three of ``p``: log sigma_row, log
    sigma_col, atanh of the correlation.  Returns the inverse ``(a, b, c)``
    (``[[a, b], [b, c]]``), ``log det`` and ``dsig`` (3, 3): each parameter's
    derivative of ``(S_rr, S_rc, S_cc)``.
    """
    s_r, s_c = math.exp(p[npar - 3]), math.exp(p[npar - 2])
    rho = math.tanh(p[npar - 1])
    cov_rr, cov_cc, cov_rc = s_r * s_r + box, s_c * s_c + box, rho * s_r * s_c
    det = cov_rr * cov_cc - cov_rc * cov_rc
    dsig = np.empty((3, 3))
    dsig[0, 0], dsig[0, 1], dsig[0, 2] = 2.0 * s_r * s_r, cov_rc, 0.0
    dsig[1, 0], dsig[1, 1], dsig[1, 2] = 0.0, cov_rc, 2.0 * s_c * s_c
    dsig[2, 0], dsig[2, 1], dsig[2, 2] = 0.0, (1.0 - rho * rho) * s_r * s_c, 0.0
    return cov_cc / det, -cov_rc / det, cov_rr / det, math.log(det), dsig


@njit(cache=True, nogil=True)
def _signal_at(p, n_comp, row, col, inv_a, inv_b, inv_c, norm, dsig, d):  # pragma: no cover - compiled
    """The components' signal at pixel (``row``, ``col``) of the window; its derivatives by ``p`` into ``d``."""
    npar = p.size
    signal = 0.0
    for t in range(3):
        d[npar - 3 + t] = 0.0
    for k in range(n_comp):
        x, y = row - p[3 * k + 1], col - p[3 * k + 2]
        u_r, u_c = inv_a * x + inv_b * y, inv_b * x + inv_c * y  # inverse covariance times (x, y)
        part = math.exp(p[3 * k] - 0.5 * (x * u_r + y * u_c)) * norm
        signal += part
        d[3 * k] = part
        d[3 * k + 1] = part * u_r
        d[3 * k + 2] = part * u_c
        for t in range(3):  # d g / d shape = g (u^T dS u - tr(S^-1 dS)) / 2
            quad = u_r * u_r * dsig[t, 0] + 2.0 * u_r * u_c * dsig[t, 1] + u_c * u_c * dsig[t, 2]
            trace = inv_a * dsig[t, 0] + 2.0 * inv_b * dsig[t, 1] + inv_c * dsig[t, 2]
            d[npar - 3 + t] += 0.5 * part * (quad - trace)
    return signal


@njit(cache=True, nogil=True)
def window_terms(p, offsets, values, used, background, threshold, variance, gain, grad, info, want_info,
                 work):  # pragma: no cover - compiled
    """One window's negative censored log-likelihood; its gradient into ``grad``, the metric into ``info``.

    ``p`` (3 K + 3,): each component's log I, row, col (from the window's
    centre pixel), then the shared shape: log sigma_row, log sigma_col and
    atanh of the correlation of an elliptical Gaussian, sampled at the pixel
    centres with the pixel's box variance (1/12 px^2) added to its
    covariance.  ``values`` (m, m) as stored (0: below ``threshold``),
    ``used`` (m, m) the pixels the fit uses. ``info`` (3 K + 3, 3 K + 3)
    gets ``J^T W J`` with ``W`` each pixel's expected information about its
    mean (a censored normal of fixed width) when ``want_info``. ``work``
    (3 K + 3,) scratch.
    """
    npar = p.size
    n_comp = (npar - 3) // 3
    m = offsets.size
    inv_a, inv_b, inv_c, log_det, dsig = _shape(p, npar, 1.0 / 12.0)
    norm = math.exp(-0.5 * log_det) / (2.0 * math.pi)
    grad[:] = 0.0
    info[:, :] = 0.0
    nll = 0.0
    cut = threshold - 0.5
    d = work
    for i in range(m):
        for j in range(m):
            if not used[i, j]:
                continue
            signal = _signal_at(p, n_comp, offsets[i], offsets[j], inv_a, inv_b, inv_c, norm, dsig, d)
            mu = background + signal
            var = variance + gain * signal
            s = math.sqrt(var)
            stored_value = values[i, j]
            z = (cut - mu) / s
            stored = stored_value > 0.0
            if want_info or not stored:
                log_cdf, mills = _log_ndtr_and_mills(z)
            if stored:
                r = stored_value - mu
                nll += 0.5 * r * r / var + 0.5 * math.log(var)
                dll = r / var + 0.5 * gain * (r * r / (var * var) - 1.0 / var)
            else:
                nll -= log_cdf
                dll = mills * (-1.0 / s - 0.5 * gain * (cut - mu) / (var * s))
            for a in range(npar):
                grad[a] -= d[a] * dll
            if want_info:
                pdf = math.exp(-0.5 * z * z - _LOG_SQRT_2PI)
                weight = (pdf * mills + z * pdf + 1.0 - math.exp(log_cdf)) / var
                for a in range(npar):
                    for b in range(a + 1):
                        info[a, b] += d[a] * d[b] * weight
    if want_info:
        for a in range(npar):
            for b in range(a):
                info[b, a] = info[a, b]
    return nll


@njit(cache=True, nogil=True)
def _solve(a, b, x):  # pragma: no cover - compiled
    """x = a^-1 b by Gaussian elimination with partial pivoting (``a`` overwritten); False if singular."""
    n = b.size
    rhs = b.copy()
    for col in range(n):
        pivot = col
        for r in range(col + 1, n):
            if abs(a[r, col]) > abs(a[pivot, col]):
                pivot = r
        if not abs(a[pivot, col]) > 0.0:
            return False
        if pivot != col:
            for c in range(n):
                a[col, c], a[pivot, c] = a[pivot, c], a[col, c]
            rhs[col], rhs[pivot] = rhs[pivot], rhs[col]
        for r in range(col + 1, n):
            factor = a[r, col] / a[col, col]
            for c in range(col, n):
                a[r, c] -= factor * a[col, c]
            rhs[r] -= factor * rhs[col]
    for r in range(n - 1, -1, -1):
        total = rhs[r]
        for c in range(r + 1, n):
            total -= a[r, c] * x[c]
        x[r] = total / a[r, r]
    return True


@njit(cache=True, nogil=True)
def _bounded(p, start, bounds):  # pragma: no cover - compiled
    """``p`` held in the box of ``bounds`` (see :func:`fit_windows`)."""
    log_growth, move, log_width_low, log_width_high, max_atanh = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4]
    npar = p.size
    for k in range((npar - 3) // 3):
        p[3 * k] = min(max(p[3 * k], 0.0), start[3 * k] + log_growth)
        for a in (3 * k + 1, 3 * k + 2):
            p[a] = min(max(p[a], start[a] - move), start[a] + move)
    for a in (npar - 3, npar - 2):
        p[a] = min(max(p[a], log_width_low), log_width_high)
    p[npar - 1] = min(max(p[npar - 1], -max_atanh), max_atanh)


@njit(cache=True, nogil=True)
def _at_bound(p, start, bounds):  # pragma: no cover - compiled
    """True when a parameter of ``p`` sits on its bound (see :func:`fit_windows`)."""
    log_growth, move, log_width_low, log_width_high, max_atanh = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4]
    npar = p.size
    for a in (npar - 3, npar - 2):
        if p[a] <= log_width_low or p[a] >= log_width_high:
            return True
    if abs(p[npar - 1]) >= max_atanh:
        return True
    for k in range((npar - 3) // 3):
        if p[3 * k] <= 0.0 or p[3 * k] >= start[3 * k] + log_growth:
            return True
        if abs(p[3 * k + 1] - start[3 * k + 1]) >= move or abs(p[3 * k + 2] - start[3 * k + 2]) >= move:
            return True
    return False


@njit(cache=True, nogil=True)
def _iterate(p, start, offsets, values, used, background, threshold, variance, gain, max_iterations, bounds,
             work):  # pragma: no cover - compiled
    """Damped scoring steps on one window from ``p`` (changed in place); True if it still moved at the end."""
    npar = p.size
    grad, grad2, step, neg, trial = np.empty(npar), np.empty(npar), np.zeros(npar), np.empty(npar), np.empty(npar)
    info, lhs, scratch = np.empty((npar, npar)), np.empty((npar, npar)), np.empty((npar, npar))
    damping = 1e-3
    held = 0  # accepted steps in a row that ended at a bound
    for _ in range(max_iterations):
        f = window_terms(p, offsets, values, used, background, threshold, variance, gain, grad, info, np.bool_(True),
                         work)
        finite = True
        for a in range(npar):
            grad[a] = grad[a] if math.isfinite(grad[a]) else 0.0
            neg[a] = -grad[a]
            for b in range(npar):
                lhs[a, b] = info[a, b]
                finite &= math.isfinite(info[a, b])
            lhs[a, a] += damping * max(info[a, a], 1e-12)
        if not finite:
            lhs[:, :] = np.eye(npar)
        f_trial = np.inf
        if _solve(lhs, neg, step):
            for a in range(npar):
                trial[a] = p[a] + step[a]
            _bounded(trial, start, bounds)
            f_trial = window_terms(trial, offsets, values, used, background, threshold, variance, gain, grad2,
                                   scratch, np.bool_(False), work)
        if math.isfinite(f_trial) and f_trial <= f:
            p[:] = trial
            damping = max(damping / 5.0, 1e-7)
            held = held + 1 if _at_bound(p, start, bounds) else 0
            if f - f_trial < 1e-6 or held >= 3:
                return False  # converged, or held at a bound (no optimum inside: the caller tells by the bounds)
        else:
            damping *= 10.0
            if damping > 1e6:
                return False
    return True


@njit(cache=True, nogil=True)
def fit_windows(values, used, background, start, offsets, threshold, variance, gain, max_iterations,
                bounds):  # pragma: no cover - compiled
    """Damped scoring fits of every window; the parameters, their expected information, the still moving and held.

    Parameters
    ----------
    values, used : (N, m, m) ndarray of float64, bool
        Windows as stored and the pixels each fit uses.
    background : (N,) ndarray of float64
        Held background of each window, counts/px.
    start : (N, 3 K + 3) ndarray of float64
        Starting parameters: each component's log I, centre row and col (from
        the window's centre pixel), then log sigma_row, log sigma_col and
        atanh of the correlation.
    offsets : (m,) ndarray of float64
        Pixel offsets of a window side.
    threshold, variance, gain : float
        Storage threshold (counts), background noise variance (counts^2), counts per photon.
    max_iterations : int
    bounds : (5,) ndarray of float64
        log_growth, move, log_width_low, log_width_high, max_atanh: each log I
        at most ``start + log_growth`` (and at least 0), each centre within
        ``move`` px of its start, each log sigma within the next two, the
        correlation's atanh within +-``max_atanh``.

    Returns
    -------
    p : (N, 3 K + 3) ndarray of float64
    information : (N, 3 K + 3, 3 K + 3) ndarray of float64
        Expected (Fisher) information at ``p``, the metric of the steps.
    moving : (N,) ndarray of bool
        The fit had not stopped after ``max_iterations`` steps.
    held : (N,) ndarray of bool
        A parameter ended on its bound (:func:`_at_bound`).
    nll : (N,) ndarray of float64
        Negative log-likelihood at ``p``.
    """
    n, npar = values.shape[0], start.shape[1]
    p_out = np.empty((n, npar))
    information = np.empty((n, npar, npar))
    moving = np.zeros(n, dtype=np.bool_)
    held = np.zeros(n, dtype=np.bool_)
    nll_out = np.empty(n)
    grad = np.empty(npar)
    work = np.empty(npar)
    p = np.empty(npar)
    for k in range(n):
        p[:] = start[k]
        _bounded(p, start[k], bounds)
        moving[k] = _iterate(p, start[k], offsets, values[k], used[k], background[k], threshold, variance, gain,
                             max_iterations, bounds, work)
        p_out[k] = p
        held[k] = _at_bound(p, start[k], bounds)
        nll_out[k] = window_terms(p, offsets, values[k], used[k], background[k], threshold, variance, gain, grad,
                                  information[k], np.bool_(True), work)
    return p_out, information, moving, held, nll_out
