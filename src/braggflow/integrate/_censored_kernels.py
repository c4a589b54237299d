"""Compiled censored-likelihood Gaussian fits of :mod:`braggflow.integrate.censored`: one window at a time.

:func:`fit_windows` runs the damped scoring iteration of every window and
returns the parameters, the expected information at the end and whether the
fit still moved.
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
def _axis(offsets, centre, width, f, df, dw):  # pragma: no cover - compiled
    """One axis of the pixel-integrated Gaussian: values, derivatives by the centre and by log width."""
    inv = 1.0 / width
    c = 1.0 / math.sqrt(2.0 * math.pi)
    for k in range(offsets.size):
        lo = (offsets[k] - 0.5 - centre) * inv
        hi = (offsets[k] + 0.5 - centre) * inv
        plo = math.exp(-0.5 * lo * lo) * c
        phi = math.exp(-0.5 * hi * hi) * c
        f[k] = _ndtr(hi) - _ndtr(lo)
        df[k] = -(phi - plo) * inv
        dw[k] = -(phi * hi - plo * lo)


@njit(cache=True, nogil=True)
def window_terms(p, offsets, values, used, background, threshold, variance, gain, grad, info, want_info,
                 work):  # pragma: no cover - compiled
    """One window's negative censored log-likelihood; its gradient into ``grad`` (4,), the metric into ``info``.

    ``p``: log I, row and col of the centre (from the window's centre pixel),
    log width. ``values`` (m, m) as stored (0: below ``threshold``), ``used``
    (m, m) the pixels the fit uses. ``info`` (4, 4) gets ``J^T W J`` with
    ``W`` each pixel's expected information about its mean (a censored
    normal of fixed width) when ``want_info``. ``work`` (6, m) scratch.
    """
    m = offsets.size
    intensity = math.exp(p[0])
    width = math.exp(p[3])
    f_r, df_r, dw_r = work[0], work[1], work[2]
    f_c, df_c, dw_c = work[3], work[4], work[5]
    _axis(offsets, p[1], width, f_r, df_r, dw_r)
    _axis(offsets, p[2], width, f_c, df_c, dw_c)
    for a in range(4):
        grad[a] = 0.0
        for b in range(4):
            info[a, b] = 0.0
    nll = 0.0
    cut = threshold - 0.5
    d = np.empty(4)
    for i in range(m):
        for j in range(m):
            if not used[i, j]:
                continue
            g = f_r[i] * f_c[j]
            signal = intensity * g
            mu = background + signal
            var = variance + gain * signal
            s = math.sqrt(var)
            d[0] = signal
            d[1] = intensity * df_r[i] * f_c[j]
            d[2] = intensity * f_r[i] * df_c[j]
            d[3] = intensity * (dw_r[i] * f_c[j] + f_r[i] * dw_c[j])
            y = values[i, j]
            z = (cut - mu) / s
            stored = y > 0.0
            if want_info or not stored:
                log_cdf, mills = _log_ndtr_and_mills(z)
            if stored:
                r = y - mu
                nll += 0.5 * r * r / var + 0.5 * math.log(var)
                dll = r / var + 0.5 * gain * (r * r / (var * var) - 1.0 / var)
            else:
                nll -= log_cdf
                dll = mills * (-1.0 / s - 0.5 * gain * (cut - mu) / (var * s))
            for a in range(4):
                grad[a] -= d[a] * dll
            if want_info:
                pdf = math.exp(-0.5 * z * z - _LOG_SQRT_2PI)
                weight = (pdf * mills + z * pdf + 1.0 - math.exp(log_cdf)) / var
                for a in range(4):
                    for b in range(a + 1):
                        info[a, b] += d[a] * d[b] * weight
    if want_info:
        for a in range(4):
            for b in range(a):
                info[b, a] = info[a, b]
    return nll


@njit(cache=True, nogil=True)
def _solve4(a, b, x):  # pragma: no cover - compiled
    """x = a^-1 b for a (4, 4) by Gaussian elimination with partial pivoting (``a`` overwritten); False if singular."""
    rhs = b.copy()
    for col in range(4):
        pivot = col
        for r in range(col + 1, 4):
            if abs(a[r, col]) > abs(a[pivot, col]):
                pivot = r
        if not abs(a[pivot, col]) > 0.0:
            return False
        if pivot != col:
            for c in range(4):
                a[col, c], a[pivot, c] = a[pivot, c], a[col, c]
            rhs[col], rhs[pivot] = rhs[pivot], rhs[col]
        for r in range(col + 1, 4):
            factor = a[r, col] / a[col, col]
            for c in range(col, 4):
                a[r, c] -= factor * a[col, c]
            rhs[r] -= factor * rhs[col]
    for r in range(3, -1, -1):
        total = rhs[r]
        for c in range(r + 1, 4):
            total -= a[r, c] * x[c]
        x[r] = total / a[r, r]
    return True


@njit(cache=True, nogil=True)
def _bounded(p, start, log_growth, move, log_width_low, log_width_high):  # pragma: no cover - compiled
    p[0] = min(max(p[0], 0.0), start[0] + log_growth)
    for k in (1, 2):
        p[k] = min(max(p[k], start[k] - move), start[k] + move)
    p[3] = min(max(p[3], log_width_low), log_width_high)


@njit(cache=True, nogil=True)
def _at_bound(p, start, log_growth, move, log_width_low, log_width_high):  # pragma: no cover - compiled
    if p[0] <= 0.0 or p[0] >= start[0] + log_growth or p[3] <= log_width_low or p[3] >= log_width_high:
        return True
    return abs(p[1] - start[1]) >= move or abs(p[2] - start[2]) >= move


@njit(cache=True, nogil=True)
def _iterate(p, start, offsets, values, used, background, threshold, variance, gain, max_iterations, log_growth,
             move, log_width_low, log_width_high, work):  # pragma: no cover - compiled
    """Damped scoring steps on one window from ``p`` (changed in place); True if it still moved at the end."""
    grad, grad2, step, neg, trial = np.empty(4), np.empty(4), np.zeros(4), np.empty(4), np.empty(4)
    info, lhs, scratch = np.empty((4, 4)), np.empty((4, 4)), np.empty((4, 4))
    damping = 1e-3
    held = 0  # accepted steps in a row that ended at a bound
    for _ in range(max_iterations):
        f = window_terms(p, offsets, values, used, background, threshold, variance, gain, grad, info, True, work)
        finite = True
        for a in range(4):
            grad[a] = grad[a] if math.isfinite(grad[a]) else 0.0
            neg[a] = -grad[a]
            for b in range(4):
                lhs[a, b] = info[a, b]
                finite &= math.isfinite(info[a, b])
            lhs[a, a] += damping * max(info[a, a], 1e-12)
        if not finite:
            lhs[:, :] = np.eye(4)
        f_trial = np.inf
        if _solve4(lhs, neg, step):
            for a in range(4):
                trial[a] = p[a] + step[a]
            _bounded(trial, start, log_growth, move, log_width_low, log_width_high)
            f_trial = window_terms(trial, offsets, values, used, background, threshold, variance, gain, grad2,
                                   scratch, False, work)
        if math.isfinite(f_trial) and f_trial <= f:
            p[:] = trial
            damping = max(damping / 5.0, 1e-7)
            held = held + 1 if _at_bound(p, start, log_growth, move, log_width_low, log_width_high) else 0
            if f - f_trial < 1e-6 or held >= 3:
                return False  # converged, or held at a bound (no optimum inside: the caller tells by the bounds)
        else:
            damping *= 10.0
            if damping > 1e6:
                return False
    return True


@njit(cache=True, nogil=True)
def fit_windows(values, used, background, start, offsets, threshold, variance, gain, max_iterations, log_growth,
                move, log_width_low, log_width_high):  # pragma: no cover - compiled
    """Damped scoring fits of every window; the parameters, their expected information and the still moving.

    Parameters
    ----------
    values, used : (N, m, m) ndarray of float64, bool
        Windows as stored and the pixels each fit uses.
    background : (N,) ndarray of float64
        Held background of each window, counts/px.
    start : (N, 4) ndarray of float64
        Starting log I, centre row and col (from the window's centre pixel), log width.
    offsets : (m,) ndarray of float64
        Pixel offsets of a window side.
    threshold, variance, gain : float
        Storage threshold (counts), background noise variance (counts^2), counts per photon.
    max_iterations : int
    log_growth, move, log_width_low, log_width_high : float
        Bounds: log I at most ``start + log_growth`` (and at least 0), the
        centre within ``move`` px of its start, log width within the two.

    Returns
    -------
    p : (N, 4) ndarray of float64
    information : (N, 4, 4) ndarray of float64
        Expected (Fisher) information at ``p``, the metric of the steps.
    moving : (N,) ndarray of bool
        The fit had not stopped after ``max_iterations`` steps.
    nll : (N,) ndarray of float64
        Negative log-likelihood at ``p``.
    """
    n, m = values.shape[0], offsets.size
    p_out = np.empty((n, 4))
    hess = np.empty((n, 4, 4))
    moving = np.zeros(n, dtype=np.bool_)
    nll_out = np.empty(n)
    grad = np.empty(4)
    work = np.empty((6, m))
    p = np.empty(4)
    for k in range(n):
        for a in range(4):
            p[a] = start[k, a]
        _bounded(p, start[k], log_growth, move, log_width_low, log_width_high)
        moving[k] = _iterate(p, start[k], offsets, values[k], used[k], background[k], threshold, variance, gain,
                             max_iterations, log_growth, move, log_width_low, log_width_high, work)
        p_out[k] = p
        nll_out[k] = window_terms(p, offsets, values[k], used[k], background[k], threshold, variance, gain, grad,
                                  hess[k], True, work)
    return p_out, hess, moving, nll_out
