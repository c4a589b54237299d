"""Compiled Levenberg-Marquardt of :func:`braggflow.profiles.fitting.fit_profiles`: one patch at a time, in numba.

The same models, objective, damping, bounds and stopping rule as the NumPy
iteration of :mod:`braggflow.profiles.fitting` (which stays the reference and
the path without numba), written as loops over one patch's pixels: no
(N, M, P) work arrays, and a patch that needs many iterations costs only its
own.  The model of each pixel and its derivatives are computed in one pass
with the Fisher information, the gradient and the deviance.

numba is optional: :data:`AVAILABLE` says whether it imported; the functions
are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np

try:  # pragma: no cover - the import itself
    from numba import njit
except ImportError:  # pragma: no cover - without numba the NumPy iteration runs
    njit = None

__all__ = ["AVAILABLE", "MODEL_IDS", "lm_fit", "information_at", "gauss_amplitudes", "held_covariance", "wing_scores",
           "residual_bumps"]

#: Whether the compiled iteration can run (numba imported).
AVAILABLE = njit is not None
#: Model numbers of the kernel.
MODEL_IDS = {"gauss": 0, "gauss2": 1, "rgauss": 2, "pvmoffat": 3, "pvoigt": 4, "moffat": 5}

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _jit(fn):
    return njit(cache=True, fastmath=False, nogil=True)(fn) if AVAILABLE else fn


@_jit
def _axis(size, centre, sigma, frac, d_mu, d_sigma):
    """Pixel fractions of a 1D Gaussian over ``size`` unit pixels and their derivatives by centre and sigma."""
    e = -0.5 - centre
    t = e / sigma
    cdf0 = 0.5 * (1.0 + math.erf(t * _INV_SQRT2))
    pdf0 = math.exp(-0.5 * t * t) * _INV_SQRT_2PI
    for i in range(size):
        t1 = (i + 0.5 - centre) / sigma
        cdf1 = 0.5 * (1.0 + math.erf(t1 * _INV_SQRT2))
        pdf1 = math.exp(-0.5 * t1 * t1) * _INV_SQRT_2PI
        frac[i] = cdf1 - cdf0
        d_mu[i] = -(pdf1 - pdf0) / sigma
        d_sigma[i] = -(pdf1 * t1 - pdf0 * t) / sigma
        t, cdf0, pdf0 = t1, cdf1, pdf1


@_jit
def _shape(mid, u2, eta, t, norm_g, norm_l, norm_m, k2):
    """One sample of a rotated profile at ``u2 = d^T Q d``: value, d value / d u2, d value / d shape (eta or t)
    and d value / d t (pseudo-Voigt-Moffat)."""
    d5 = 0.0
    d6 = 0.0
    if mid == 2:
        v = math.exp(-0.5 * u2) * norm_g
        dv = -0.5 * v
    elif mid == 3:
        g = math.exp(-0.5 * u2) * norm_g
        v1 = 1.0 + u2 / k2
        if t == 0.5:  # the wing exponents the wing score tries, without a logarithm
            mm = norm_m / (v1 * v1)
        elif t == 2.0 / 3.0:
            mm = norm_m / (v1 * math.sqrt(v1))
        else:
            mm = norm_m * math.exp(-math.log(v1) / t)
        v = (1.0 - eta) * g + eta * mm
        dv = -0.5 * (1.0 - eta) * g - eta * mm / (t * k2 * v1)
        d5 = mm - g
        if eta != 0.0:
            d6 = eta * mm * (-1.0 / (1.0 - t) - 1.0 / t + math.log(v1) / (t * t))
    elif mid == 4:
        g = math.exp(-0.5 * u2) * norm_g
        qq = 1.0 + u2 / k2
        lor = norm_l / (qq * math.sqrt(qq))
        v = (1.0 - eta) * g + eta * lor
        dv = -0.5 * (1.0 - eta) * g - 1.5 / k2 * eta * lor / qq
        d5 = lor - g
    else:
        x = 1.0 + 0.5 * t * u2
        lx = math.log(x)
        v = (1.0 - t) * norm_g * math.exp(-lx / t)
        dv = -0.5 * v / x
        d5 = v * (-1.0 / (1.0 - t) + lx / (t * t) - 0.5 * u2 / (t * x))
    return v, dv, d5, d6


@_jit
def _rotated(mid, p, size, k, k2, mu, jac):
    """Rotated profiles (rgauss, pvmoffat, pvoigt, moffat), ``k`` x ``k`` sub-pixels a pixel: mu (M,) and jac
    (M, P) of one patch (photons)."""
    row, col, a, b, c = p[0], p[1], p[2], p[3], p[4]
    npar = p.shape[0]
    nd = npar - 2
    inten, bg = p[npar - 2], p[npar - 1]
    det = a * c - b * b
    sdet = math.sqrt(det)
    eta = p[5] if (mid == 3 or mid == 4) else 0.0
    t = p[6] if mid == 3 else (p[5] if mid == 5 else 0.5)
    norm_g = sdet / (2.0 * math.pi)
    norm_l = sdet / (2.0 * math.pi * k2)
    norm_m = sdet * (1.0 - t) / (math.pi * k2 * t) if mid == 3 else 0.0
    inv_kk = 1.0 / (k * k)
    half_det = 0.5 / det
    offset = np.empty(k)  # the sub-pixel centres' offsets, (s + 0.5) / k
    for sa in range(k):
        offset[sa] = (sa + 0.5) / k
    m = 0
    for r in range(size):
        for cc in range(size):
            value = 0.0
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = 0.0
            for sa in range(k):
                dr = r + offset[sa] - 0.5 - row
                for sb in range(k):
                    dc = cc + offset[sb] - 0.5 - col
                    u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
                    v, dv, d5, d6 = _shape(mid, u2, eta, t, norm_g, norm_l, norm_m, k2)
                    value += v
                    s0 += dv * (a * dr + b * dc)
                    s1 += dv * (b * dr + c * dc)
                    s2 += dv * dr * dr
                    s3 += dv * dr * dc
                    s4 += dv * dc * dc
                    s5 += d5
                    s6 += d6
            hod = value * half_det  # the sum of 0.5 v / det over the samples
            scale = inten * inv_kk
            value *= inv_kk
            mu[m] = inten * value + bg
            jac[m, 0] = -2.0 * s0 * scale
            jac[m, 1] = -2.0 * s1 * scale
            jac[m, 2] = (hod * c + s2) * scale
            jac[m, 3] = (-2.0 * hod * b + 2.0 * s3) * scale
            jac[m, 4] = (hod * a + s4) * scale
            if nd > 5:
                jac[m, 5] = s5 * scale
            if nd > 6:
                jac[m, 6] = s6 * scale
            jac[m, nd] = value
            jac[m, nd + 1] = 1.0
            m += 1


@_jit
def _rgauss_centres(p, size, mu, jac):
    """:func:`_rotated` of the rotated Gaussian at the pixel centres (one sample a pixel): the same operations in
    the same order, those of the sample loop that do not change a value left out (the offset ``(0 + 0.5) / 1 -
    0.5`` is 0 exactly; the sums start at 0.0, kept so that a -0.0 becomes 0.0 as there), so the same values to
    the last bit at half the cost."""
    row, col, a, b, c = p[0], p[1], p[2], p[3], p[4]
    inten, bg = p[5], p[6]
    det = a * c - b * b
    norm_g = math.sqrt(det) / (2.0 * math.pi)
    half_det = 0.5 / det
    m = 0
    for r in range(size):
        dr = r - row
        for cc in range(size):
            dc = cc - col
            u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
            value = math.exp(-0.5 * u2) * norm_g
            dv = -0.5 * value
            value = 0.0 + value
            s0 = 0.0 + dv * (a * dr + b * dc)
            s1 = 0.0 + dv * (b * dr + c * dc)
            s2 = 0.0 + dv * dr * dr
            s3 = 0.0 + dv * dr * dc
            s4 = 0.0 + dv * dc * dc
            hod = value * half_det
            mu[m] = inten * value + bg
            jac[m, 0] = -2.0 * s0 * inten
            jac[m, 1] = -2.0 * s1 * inten
            jac[m, 2] = (hod * c + s2) * inten
            jac[m, 3] = (-2.0 * hod * b + 2.0 * s3) * inten
            jac[m, 4] = (hod * a + s4) * inten
            jac[m, 5] = value
            jac[m, 6] = 1.0
            m += 1


@_jit
def _pvoigt_samples(p, size, k, k2, mu, jac):
    """:func:`_rotated` of the rotated pseudo-Voigt: the same operations in the same order (the pseudo-Voigt's
    branch of :func:`_shape` written in the sample loop, without the sums that are 0 for it), the same values."""
    row, col, a, b, c = p[0], p[1], p[2], p[3], p[4]
    eta, inten, bg = p[5], p[6], p[7]
    det = a * c - b * b
    sdet = math.sqrt(det)
    norm_g = sdet / (2.0 * math.pi)
    norm_l = sdet / (2.0 * math.pi * k2)
    inv_kk = 1.0 / (k * k)
    half_det = 0.5 / det
    offset = np.empty(k)  # the sub-pixel centres' offsets, (s + 0.5) / k
    for sa in range(k):
        offset[sa] = (sa + 0.5) / k
    m = 0
    for r in range(size):
        for cc in range(size):
            value = 0.0
            s0 = s1 = s2 = s3 = s4 = s5 = 0.0
            for sa in range(k):
                dr = r + offset[sa] - 0.5 - row
                for sb in range(k):
                    dc = cc + offset[sb] - 0.5 - col
                    u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
                    g = math.exp(-0.5 * u2) * norm_g
                    qq = 1.0 + u2 / k2
                    lor = norm_l / (qq * math.sqrt(qq))
                    v = (1.0 - eta) * g + eta * lor
                    dv = -0.5 * (1.0 - eta) * g - 1.5 / k2 * eta * lor / qq
                    value += v
                    s0 += dv * (a * dr + b * dc)
                    s1 += dv * (b * dr + c * dc)
                    s2 += dv * dr * dr
                    s3 += dv * dr * dc
                    s4 += dv * dc * dc
                    s5 += lor - g
            hod = value * half_det  # the sum of 0.5 v / det over the samples
            scale = inten * inv_kk
            value *= inv_kk
            mu[m] = inten * value + bg
            jac[m, 0] = -2.0 * s0 * scale
            jac[m, 1] = -2.0 * s1 * scale
            jac[m, 2] = (hod * c + s2) * scale
            jac[m, 3] = (-2.0 * hod * b + 2.0 * s3) * scale
            jac[m, 4] = (hod * a + s4) * scale
            jac[m, 5] = s5 * scale
            jac[m, 6] = value
            jac[m, 7] = 1.0
            m += 1


@_jit
def _pvmoffat_samples(p, size, k, k2, mu, jac):
    """:func:`_rotated` of the rotated pseudo-Voigt-Moffat: the same operations in the same order (the
    pseudo-Voigt-Moffat's branch of :func:`_shape` written in the sample loop), the same values."""
    row, col, a, b, c = p[0], p[1], p[2], p[3], p[4]
    eta, t, inten, bg = p[5], p[6], p[7], p[8]
    det = a * c - b * b
    sdet = math.sqrt(det)
    norm_g = sdet / (2.0 * math.pi)
    norm_m = sdet * (1.0 - t) / (math.pi * k2 * t)
    inv_kk = 1.0 / (k * k)
    half_det = 0.5 / det
    offset = np.empty(k)  # the sub-pixel centres' offsets, (s + 0.5) / k
    for sa in range(k):
        offset[sa] = (sa + 0.5) / k
    m = 0
    for r in range(size):
        for cc in range(size):
            value = 0.0
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = 0.0
            for sa in range(k):
                dr = r + offset[sa] - 0.5 - row
                for sb in range(k):
                    dc = cc + offset[sb] - 0.5 - col
                    u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
                    g = math.exp(-0.5 * u2) * norm_g
                    v1 = 1.0 + u2 / k2
                    if t == 0.5:  # the wing exponents the wing score tries, without a logarithm
                        mm = norm_m / (v1 * v1)
                    elif t == 2.0 / 3.0:
                        mm = norm_m / (v1 * math.sqrt(v1))
                    else:
                        mm = norm_m * math.exp(-math.log(v1) / t)
                    v = (1.0 - eta) * g + eta * mm
                    dv = -0.5 * (1.0 - eta) * g - eta * mm / (t * k2 * v1)
                    d6 = 0.0
                    if eta != 0.0:
                        d6 = eta * mm * (-1.0 / (1.0 - t) - 1.0 / t + math.log(v1) / (t * t))
                    value += v
                    s0 += dv * (a * dr + b * dc)
                    s1 += dv * (b * dr + c * dc)
                    s2 += dv * dr * dr
                    s3 += dv * dr * dc
                    s4 += dv * dc * dc
                    s5 += mm - g
                    s6 += d6
            hod = value * half_det  # the sum of 0.5 v / det over the samples
            scale = inten * inv_kk
            value *= inv_kk
            mu[m] = inten * value + bg
            jac[m, 0] = -2.0 * s0 * scale
            jac[m, 1] = -2.0 * s1 * scale
            jac[m, 2] = (hod * c + s2) * scale
            jac[m, 3] = (-2.0 * hod * b + 2.0 * s3) * scale
            jac[m, 4] = (hod * a + s4) * scale
            jac[m, 5] = s5 * scale
            jac[m, 6] = s6 * scale
            jac[m, 7] = value
            jac[m, 8] = 1.0
            m += 1


@_jit
def _evaluate(mid, p, size, k, k2, mu, jac, w1, w2, w3, w4, w5, w6):
    """Expected photons (M,) and derivatives (M, P) of one patch; ``w*`` are (size,) work arrays."""
    if mid == 0:
        _axis(size, p[0], p[2], w1, w2, w3)
        _axis(size, p[1], p[3], w4, w5, w6)
        inten, bg = p[4], p[5]
        m = 0
        for r in range(size):
            for c in range(size):
                prof = w1[r] * w4[c]
                mu[m] = inten * prof + bg
                jac[m, 0] = inten * w2[r] * w4[c]
                jac[m, 1] = inten * w1[r] * w5[c]
                jac[m, 2] = inten * w3[r] * w4[c]
                jac[m, 3] = inten * w1[r] * w6[c]
                jac[m, 4] = prof
                jac[m, 5] = 1.0
                m += 1
    elif mid == 1:
        i1, i2, bg = p[6], p[7], p[8]
        m = 0
        _axis(size, p[0], p[4], w1, w2, w3)
        _axis(size, p[1], p[5], w4, w5, w6)
        for r in range(size):
            for c in range(size):
                prof = w1[r] * w4[c]
                mu[m] = i1 * prof + bg
                jac[m, 0] = i1 * w2[r] * w4[c]
                jac[m, 1] = i1 * w1[r] * w5[c]
                jac[m, 4] = i1 * w3[r] * w4[c]
                jac[m, 5] = i1 * w1[r] * w6[c]
                jac[m, 6] = prof
                jac[m, 8] = 1.0
                m += 1
        _axis(size, p[2], p[4], w1, w2, w3)
        _axis(size, p[3], p[5], w4, w5, w6)
        m = 0
        for r in range(size):
            for c in range(size):
                prof = w1[r] * w4[c]
                mu[m] += i2 * prof
                jac[m, 2] = i2 * w2[r] * w4[c]
                jac[m, 3] = i2 * w1[r] * w5[c]
                jac[m, 4] += i2 * w3[r] * w4[c]
                jac[m, 5] += i2 * w1[r] * w6[c]
                jac[m, 7] = prof
                m += 1
    elif mid == 2 and k == 1:
        _rgauss_centres(p, size, mu, jac)
    elif mid == 4:
        _pvoigt_samples(p, size, k, k2, mu, jac)
    elif mid == 3:
        _pvmoffat_samples(p, size, k, k2, mu, jac)
    else:
        _rotated(mid, p, size, k, k2, mu, jac)
    for m in range(mu.shape[0]):
        if mu[m] < 1e-9:
            mu[m] = 1e-9


@_jit
def _deviance(y, good, mu, prior_b, prior_w, bg):
    dev = 0.0
    for m in range(y.shape[0]):
        if good[m]:
            term = mu[m] - y[m]
            if y[m] > 0:
                term += y[m] * math.log(y[m] / mu[m])
            dev += term
    return 2.0 * dev + prior_w * (bg - prior_b) ** 2


@_jit
def _valid(mid, p, size, lo, hi, sigma_min):
    npar = p.shape[0]
    for q in range(npar):
        if not math.isfinite(p[q]):
            return False
    npos = 4 if mid == 1 else 2
    for q in range(npos):
        if not (p[q] > -1.5 and p[q] < size + 0.5):
            return False
    if mid == 0:
        return p[2] >= sigma_min and p[3] >= sigma_min and p[4] > 0 and p[5] >= 0
    if mid == 1:
        return p[4] >= sigma_min and p[5] >= sigma_min and p[6] > 0 and p[7] > 0 and p[8] >= 0
    a, b, c = p[2], p[3], p[4]
    cap = 1.0 / (sigma_min * sigma_min)
    if not (a > 0 and c > 0 and a * c - b * b > 0 and a < cap and c < cap and p[npar - 2] > 0 and p[npar - 1] >= 0):
        return False
    for q in range(5, npar - 2):
        if p[q] < lo[q] or p[q] > hi[q]:
            return False
    return True


def _information_source(npar: int) -> str:
    """Source of :func:`_information_loop` for ``npar`` parameters with its loops over the parameters written out.

    Every sum of the information and the gradient is a local variable (numba keeps them in registers, where the
    loop's sums go through memory: ~40 % less time for 7 parameters): the same products added in the same
    order, so the same values to the last bit.
    """
    sums = [f"f{i}_{j}" for i in range(npar) for j in range(i + 1)] + [f"g{i}" for i in range(npar)]
    lines = [f"def _information{npar}(y, good, mu, jac, prior_w, fisher, grad):",
             "    " + " = ".join(sums) + " = 0.0",
             "    for m in range(y.shape[0]):",
             "        if not good[m]:",
             "            continue",
             "        w = 1.0 / mu[m]",
             "        g = 1.0 - y[m] * w"]
    for i in range(npar):
        lines += [f"        j{i} = jac[m, {i}]", f"        g{i} += g * j{i}", f"        w{i} = w * j{i}"]
        lines += [f"        f{i}_{j} += w{i} * j{j}" for j in range(i + 1)]
    for i in range(npar):
        lines.append(f"    grad[{i}] = g{i}")
        lines += [f"    fisher[{i}, {j}] = fisher[{j}, {i}] = f{i}_{j}" for j in range(i + 1)]
    lines.append(f"    fisher[{npar - 1}, {npar - 1}] += prior_w")
    return "\n".join(lines) + "\n"


def _unrolled_information(npar: int):
    """:func:`_information_loop` of ``npar`` parameters compiled from :func:`_information_source` (this file is
    its source file, so that numba caches it with the others)."""
    namespace: dict = {}
    # globals with this module's name: the function's __module__ is this module, which numba's disk cache
    # imports again when it loads the kernel into a caller compiled in a later process (None fails there)
    exec(compile(_information_source(npar), __file__, "exec"), {"__name__": __name__}, namespace)
    return _jit(namespace[f"_information{npar}"])


@_jit
def _information_loop(y, good, mu, jac, prior_w, fisher, grad):
    """Expected Fisher information (P, P) and gradient of the deviance / 2 (P,) of one patch."""
    npar = fisher.shape[0]
    for i in range(npar):
        grad[i] = 0.0
        for j in range(npar):
            fisher[i, j] = 0.0
    for m in range(y.shape[0]):
        if not good[m]:
            continue
        w = 1.0 / mu[m]
        g = 1.0 - y[m] * w
        for i in range(npar):
            ji = jac[m, i]
            grad[i] += g * ji
            wji = w * ji
            for j in range(i + 1):
                fisher[i, j] += wji * jac[m, j]
    for i in range(npar):
        for j in range(i):
            fisher[j, i] = fisher[i, j]
    fisher[npar - 1, npar - 1] += prior_w


#: The information of the models' parameter counts (6 to 9), each sum in a register.
_information6, _information7, _information8, _information9 = (_unrolled_information(p) for p in (6, 7, 8, 9))


@_jit
def _information(y, good, mu, jac, prior_w, fisher, grad):
    """Expected Fisher information (P, P) and gradient of the deviance / 2 (P,) of one patch (the values of
    :func:`_information_loop`, by its unrolled form for 6 to 9 parameters)."""
    npar = fisher.shape[0]
    if npar == 7:
        _information7(y, good, mu, jac, prior_w, fisher, grad)
    elif npar == 9:
        _information9(y, good, mu, jac, prior_w, fisher, grad)
    elif npar == 6:
        _information6(y, good, mu, jac, prior_w, fisher, grad)
    elif npar == 8:
        _information8(y, good, mu, jac, prior_w, fisher, grad)
    else:
        _information_loop(y, good, mu, jac, prior_w, fisher, grad)


@_jit
def _damped_step(fisher, grad, lam, pinned, step, a, rhs, scale):
    """``-(F + lam diag F)^-1 grad`` (Jacobi-scaled, pinned parameters held) by Cholesky; False if not positive."""
    npar = fisher.shape[0]
    for i in range(npar):
        di = fisher[i, i] if not pinned[i] else 1.0
        scale[i] = math.sqrt(di) if di > 0 else 1.0
    for i in range(npar):
        for j in range(npar):
            if pinned[i] or pinned[j]:
                a[i, j] = 1.0 if i == j else 0.0
            else:
                a[i, j] = fisher[i, j] / (scale[i] * scale[j])
        di = fisher[i, i] if not pinned[i] else 1.0
        a[i, i] += (lam if di > 0 else 0.0) + 1e-12
        rhs[i] = 0.0 if pinned[i] else -grad[i] / scale[i]
    if not _cholesky(a):
        return False
    for i in range(npar):
        v = rhs[i]
        for q in range(i):
            v -= a[i, q] * rhs[q]
        rhs[i] = v / a[i, i]
    for i in range(npar - 1, -1, -1):
        v = rhs[i]
        for q in range(i + 1, npar):
            v -= a[q, i] * rhs[q]
        rhs[i] = v / a[i, i]
    for i in range(npar):
        step[i] = rhs[i] / scale[i]
    return True


@_jit
def _step(mid, p, fisher, grad, lam, hold_i, lo, hi, size, sigma_min, work, trial):
    """A damped step from ``p`` into ``trial`` (projected onto the bounds, held parameters kept): 0 when it
    cannot be computed (not positive definite, not finite), 1 when the trial is not a valid parameter set, 2 when
    it may be evaluated; and the quadratic model's decrease of the deviance, ``-grad . step``."""
    npar = p.shape[0]
    pinned, step, a, rhs, scale = work
    for q in range(npar):
        pinned[q] = hold_i[q] or (p[q] <= lo[q] and grad[q] > 0) or (p[q] >= hi[q] and grad[q] < 0)
    if not _damped_step(fisher, grad, lam, pinned > 0, step, a, rhs, scale):
        return 0, 0.0
    pred = 0.0
    for q in range(npar):
        if not math.isfinite(step[q]):
            return 0, 0.0
        if not pinned[q] > 0:
            pred -= grad[q] * step[q]
        trial[q] = p[q] if hold_i[q] else min(max(p[q] + step[q], lo[q]), hi[q])
    return (2 if _valid(mid, trial, size, lo, hi, sigma_min) else 1), pred


@_jit
def lm_fit(mid, y, good, start, hold, lo, hi, prior_b, prior_w, size, k, k2, max_iter, tol, sigma_min):
    """Levenberg-Marquardt (Fisher scoring) of every patch, one after the other.

    Parameters
    ----------
    mid : int
        Model number (:data:`MODEL_IDS`).
    y : (N, M) float64
        Photons (non-negative).
    good : (N, M) bool
        Pixels used.
    start : (N, P) float64
        Starting parameters (photons).
    hold : (N, P) bool
        Parameters kept at their start.
    lo, hi : (P,) float64
        Bounds the steps are projected onto.
    prior_b, prior_w : (N,) float64
        Background prior's level and weight (0: none).
    size, k : int
        Patch side and sub-pixels per axis (rotated models).
    k2 : float
        The squared Lorentzian width per sigma of the wing models.
    max_iter : int
    tol : float
    sigma_min : float

    Returns
    -------
    params : (N, P), fisher : (N, P, P), dev : (N,), iters : (N,) int64, conv : (N,) bool, alive : (N,) bool,
    npix : (N,) int64
        NaN parameters and infinite deviance where a start was not valid; ``npix`` the good pixels.
    """
    n, npix = y.shape
    npar = start.shape[1]
    params = np.full((n, npar), np.nan)
    fisher_out = np.zeros((n, npar, npar))
    dev_out = np.full(n, np.inf)
    iters = np.zeros(n, dtype=np.int64)
    conv = np.zeros(n, dtype=np.bool_)
    alive, npix_out = np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.int64)
    mu, t_mu = np.empty(npix), np.empty(npix)
    jac, t_jac = np.zeros((npix, npar)), np.zeros((npix, npar))
    fisher = np.empty((npar, npar))
    grad = np.empty(npar)
    trial = np.empty(npar)
    p = np.empty(npar)
    work = (np.zeros(npar), np.empty(npar), np.empty((npar, npar)), np.empty(npar), np.empty(npar))
    w = np.empty((6, size))
    lam_start = 1e-3
    for i in range(n):
        yi, gi = y[i], good[i]
        for q in range(npar):
            p[q] = start[i, q] if hold[i, q] else min(max(start[i, q], lo[q]), hi[q])
        npix_out[i] = gi.sum()
        if not (_valid(mid, p, size, lo, hi, sigma_min) and npix_out[i] > npar):
            continue
        alive[i] = True
        _evaluate(mid, p, size, k, k2, mu, jac, w[0], w[1], w[2], w[3], w[4], w[5])
        dev = _deviance(yi, gi, mu, prior_b[i], prior_w[i], p[npar - 1])
        lam = lam_start
        current = False  # whether fisher is the information at p
        for _ in range(max_iter):
            iters[i] += 1
            if not current:  # after a rejected step p, and so the information and gradient, are unchanged
                _information(yi, gi, mu, jac, prior_w[i], fisher, grad)
                grad[npar - 1] += prior_w[i] * (p[npar - 1] - prior_b[i])
                current = True
            new_dev = np.inf
            code, pred = _step(mid, p, fisher, grad, lam, hold[i], lo, hi, size, sigma_min, work, trial)
            if code > 0 and lam <= lam_start and pred < tol:  # at the minimum: the step would gain < tol
                conv[i] = True
                break
            if code == 2:
                _evaluate(mid, trial, size, k, k2, t_mu, t_jac, w[0], w[1], w[2], w[3], w[4], w[5])
                new_dev = _deviance(yi, gi, t_mu, prior_b[i], prior_w[i], trial[npar - 1])
            if new_dev <= dev:
                done = dev - new_dev < tol
                p[:] = trial
                mu, t_mu = t_mu, mu
                jac, t_jac = t_jac, jac
                dev = new_dev
                lam = max(lam / 5.0, 1e-9)
                current = False
            else:
                lam *= 10.0
                done = lam > 1e10  # no step lowers the deviance: at a minimum
            if done:
                conv[i] = True
                break
        if not current:
            _information(yi, gi, mu, jac, prior_w[i], fisher, grad)
        params[i] = p
        fisher_out[i] = fisher
        dev_out[i] = dev
    return params, fisher_out, dev_out, iters, conv, alive, npix_out


@_jit
def information_at(mid, y, good, params, prior_w, size, k, k2):
    """Expected Fisher information (N, P, P) and gradient of the deviance / 2 (N, P) at ``params`` (photons; the
    background prior's weight added to the information, not its term to the gradient); zero where a row of
    ``params`` is not finite."""
    n, npix = y.shape
    npar = params.shape[1]
    fisher_out = np.zeros((n, npar, npar))
    grad_out = np.zeros((n, npar))
    mu = np.empty(npix)
    jac = np.zeros((npix, npar))
    w = np.empty((6, size))
    for i in range(n):
        finite = True
        for q in range(npar):
            if not math.isfinite(params[i, q]):
                finite = False
        if not finite:
            continue
        _evaluate(mid, params[i], size, k, k2, mu, jac, w[0], w[1], w[2], w[3], w[4], w[5])
        _information(y[i], good[i], mu, jac, prior_w[i], fisher_out[i], grad_out[i])
    return fisher_out, grad_out


@_jit
def gauss_amplitudes(y, good, shape, size, iterations):
    """Poisson fits of the intensity and background of axis-aligned Gaussians of known centre and widths.

    Fisher scoring of the two linear parameters of ``mu = I P + B`` (``P``
    the pixel-integrated Gaussian of unit integral), each step shortened so
    that no expected count falls below a tenth of its value, ``I`` and ``B``
    kept >= 0.

    Parameters
    ----------
    y : (N, M) float64
        Photons (non-negative), M = size * size.
    good : (N, M) bool
        Pixels used.
    shape : (N, 6) float64
        ``row, col, sigma_row, sigma_col`` (patch px) and the starting ``I, B`` (photons).
    size : int
        Patch side.
    iterations : int
        Scoring steps.

    Returns
    -------
    intensity, background, deviance : (N,) float64
        Photons; the Poisson deviance at the result.
    """
    n, npix = y.shape
    inten_out = np.empty(n)
    bg_out = np.empty(n)
    dev_out = np.empty(n)
    prof = np.empty(npix)
    expected = np.empty(npix)
    w = np.empty((6, size))
    for i in range(n):
        _axis(size, shape[i, 0], shape[i, 2], w[0], w[1], w[2])
        _axis(size, shape[i, 1], shape[i, 3], w[3], w[4], w[5])
        for r in range(size):
            for c in range(size):
                prof[r * size + c] = w[0, r] * w[3, c]
        inten = max(shape[i, 4], 1e-3)
        bg = max(shape[i, 5], 0.0)
        for _ in range(iterations):
            g_i = g_b = f_ii = f_ib = f_bb = 0.0
            for m in range(npix):
                if not good[i, m]:
                    continue
                mu = max(inten * prof[m] + bg, 1e-9)
                expected[m] = mu  # the step's length below reads it
                wm = 1.0 / mu
                res = wm * (y[i, m] - mu)
                g_i += res * prof[m]
                g_b += res
                f_ii += wm * prof[m] * prof[m]
                f_ib += wm * prof[m]
                f_bb += wm
            det = max(f_ii * f_bb - f_ib * f_ib, 1e-300)
            d_i = (f_bb * g_i - f_ib * g_b) / det
            d_b = (f_ii * g_b - f_ib * g_i) / det
            frac = 1.0
            for m in range(npix):
                if good[i, m]:
                    d_mu = d_i * prof[m] + d_b
                    if d_mu < 0 and -0.9 * expected[m] / d_mu < frac:
                        frac = -0.9 * expected[m] / d_mu
            inten = max(inten + frac * d_i, 1e-9)
            bg = max(bg + frac * d_b, 0.0)
        dev = 0.0
        for m in range(npix):
            if good[i, m]:
                mu = max(inten * prof[m] + bg, 1e-9)
                term = mu - y[i, m]
                if y[i, m] > 0:
                    term += y[i, m] * math.log(y[i, m] / mu)
                dev += term
        inten_out[i], bg_out[i], dev_out[i] = inten, bg, 2.0 * dev
    return inten_out, bg_out, dev_out


@_jit
def _cholesky(a):
    """Lower Cholesky factor of the symmetric (P, P) ``a``, in place (its lower triangle); False if not positive
    definite."""
    npar = a.shape[0]
    for j in range(npar):
        s = a[j, j]
        for q in range(j):
            s -= a[j, q] * a[j, q]
        if not s > 0:
            return False
        s = math.sqrt(s)
        a[j, j] = s
        for r in range(j + 1, npar):
            v = a[r, j]
            for q in range(j):
                v -= a[r, q] * a[j, q]
            a[r, j] = v / s
    return True


@_jit
def _held_parameters(mid, p, hold_i, t_lo, t_hi, fixed):
    """``fixed`` (P,) := the held parameters of one fit (see :func:`held_covariance`)."""
    for q in range(p.shape[0]):
        fixed[q] = hold_i[q]
    if mid == 3 or mid == 4:
        fixed[5] = fixed[5] or p[5] <= 0.0
    if mid == 3:
        fixed[6] = fixed[6] or p[5] < 1e-3 or p[6] <= t_lo or p[6] >= t_hi


@_jit
def _scaled_free_block(fisher_i, fixed, scale, a):
    """``a`` := the Jacobi-scaled information with held rows and columns those of the identity, ``scale`` its
    scale; returns whether it is finite and its squared Frobenius norm."""
    npar = a.shape[0]
    for q in range(npar):
        d = fisher_i[q, q] if not fixed[q] else 1.0
        scale[q] = math.sqrt(d) if d > 0 else 1.0
    finite = True
    norm = 0.0
    for q in range(npar):
        for r in range(npar):
            if fixed[q] or fixed[r]:
                v = 1.0 if q == r else 0.0
            else:
                v = fisher_i[q, r] / (scale[q] * scale[r])
            finite = finite and math.isfinite(v)
            a[q, r] = v
            norm += v * v
    return finite, norm


@_jit
def _inverse_from_cholesky(a, fixed, scale, inv, cov_i):
    """``cov_i`` := the inverse of the matrix whose Cholesky factor is ``a``, unscaled by ``scale``, held rows
    and columns zero; returns the squared Frobenius norm of the scaled inverse."""
    npar = a.shape[0]
    for j in range(npar):  # L^-1, lower
        for r in range(npar):
            inv[r, j] = 0.0
        inv[j, j] = 1.0 / a[j, j]
        for r in range(j + 1, npar):
            v = 0.0
            for q in range(j, r):
                v -= a[r, q] * inv[q, j]
            inv[r, j] = v / a[r, r]
    norm = 0.0
    for q in range(npar):  # (L^-1)^T L^-1
        for r in range(q + 1):
            v = 0.0
            for m in range(q, npar):
                v += inv[m, q] * inv[m, r]
            out = 0.0 if (fixed[q] or fixed[r]) else v / (scale[q] * scale[r])
            cov_i[q, r] = out
            cov_i[r, q] = out
            norm += v * v if q == r else 2.0 * v * v
    return norm


@_jit
def held_covariance(mid, fisher, params, hold, alive, t_lo, t_hi):
    """Inverse Fisher information of N fits with their held parameters known (zero rows and columns).

    Held: the parameters of ``hold`` and, as :func:`braggflow.profiles.fitting._held` says, a pseudo-Voigt's or
    pseudo-Voigt-Moffat's eta on its limit 0, and the pseudo-Voigt-Moffat's exponent ``t`` without a wing
    (eta < 1e-3) or on a limit of its range (``t_lo``, ``t_hi``).  The free block is Jacobi-scaled and inverted
    by Cholesky; NaN where it is not positive definite, not finite, or its condition number (estimated by the
    Frobenius norms of the scaled matrix and its inverse, an upper bound) reaches 1e13.

    Parameters
    ----------
    mid : int
        Model number (:data:`MODEL_IDS`).
    fisher : (N, P, P) float64
    params : (N, P) float64
    hold : (N, P) bool
    alive : (N,) bool
        The fits to invert (the others stay NaN).
    t_lo, t_hi : float
        The pseudo-Voigt-Moffat's range of ``t``.

    Returns
    -------
    cov : (N, P, P) float64
    ok : (N,) bool
        Alive, finite parameters, and a positive variance of every parameter not held (the fit's ``ok`` of
        :class:`braggflow.profiles.fitting.BatchFit`).
    """
    n, npar = params.shape
    cov = np.full((n, npar, npar), np.nan)
    ok = np.zeros(n, dtype=np.bool_)
    fixed = np.zeros(npar, dtype=np.bool_)
    a = np.empty((npar, npar))
    inv = np.empty((npar, npar))
    scale = np.empty(npar)
    for i in range(n):
        if not alive[i]:
            continue
        _held_parameters(mid, params[i], hold[i], t_lo, t_hi, fixed)
        finite, norm = _scaled_free_block(fisher[i], fixed, scale, a)
        if not (finite and _cholesky(a)):
            continue
        norm_inv = _inverse_from_cholesky(a, fixed, scale, inv, cov[i])
        if not math.sqrt(norm) * math.sqrt(norm_inv) < 1e13:
            cov[i, :, :] = np.nan
            continue
        usable = True
        for q in range(npar):
            usable = usable and math.isfinite(params[i, q]) and (cov[i, q, q] > 0 or fixed[q])
        ok[i] = usable
    return cov, ok


@_jit
def _wing_pass(y_i, good_i, p, size, k, k2, exponents, norm_m, f, foe, fee, score, jo, mt):
    """One window's pass of :func:`wing_scores`: ``f`` (7, 7, lower triangle) the rotated Gaussian's
    information, ``foe`` (T, 7), ``fee`` (T,) and ``score`` (T,) those of eta at each exponent."""
    row, col, a, b, c = p[0], p[1], p[2], p[3], p[4]
    inten, bg = p[7], p[8]
    det = a * c - b * b
    norm_g = math.sqrt(det) / (2.0 * math.pi)
    inv_kk = 1.0 / (k * k)
    half_det = 0.5 / det
    nt = exponents.shape[0]
    f[:, :] = 0.0
    foe[:, :] = 0.0
    fee[:] = 0.0
    score[:] = 0.0
    m = -1
    for r in range(size):
        for cc in range(size):
            m += 1
            if not good_i[m]:
                continue
            value = s0 = s1 = s2 = s3 = s4 = 0.0
            mt[:] = 0.0
            for sa in range(k):
                dr = r + (sa + 0.5) / k - 0.5 - row
                for sb in range(k):
                    dc = cc + (sb + 0.5) / k - 0.5 - col
                    u2 = a * dr * dr + 2.0 * b * dr * dc + c * dc * dc
                    g = math.exp(-0.5 * u2) * norm_g
                    value += g
                    s0 += g * (a * dr + b * dc)
                    s1 += g * (b * dr + c * dc)
                    s2 += g * dr * dr
                    s3 += g * dr * dc
                    s4 += g * dc * dc
                    v1 = 1.0 + u2 / k2
                    for q in range(nt):
                        mt[q] += _wing(exponents[q], v1) * norm_m[q]
            hod = value * half_det
            scale = inten * inv_kk
            value *= inv_kk
            mu = max(inten * value + bg, 1e-9)
            jo[0] = s0 * scale  # d value / d u2 = -g / 2
            jo[1] = s1 * scale
            jo[2] = (hod * c - 0.5 * s2) * scale
            jo[3] = (-2.0 * hod * b - s3) * scale
            jo[4] = (hod * a - 0.5 * s4) * scale
            jo[5] = value
            jo[6] = 1.0
            w = 1.0 / mu
            res = y_i[m] * w - 1.0
            for p_ in range(7):
                wj = w * jo[p_]
                for q in range(p_ + 1):
                    f[p_, q] += wj * jo[q]
            for q in range(nt):
                h = inten * (mt[q] * inv_kk - value)
                fee[q] += w * h * h
                score[q] += res * h
                for p_ in range(7):
                    foe[q, p_] += w * h * jo[p_]


@_jit
def _wing(t, v1):
    """``v1 ** (-1 / t)``, the Moffat wing's falloff (exact powers for the exponents the score tries)."""
    if t == 0.5:
        return 1.0 / (v1 * v1)
    if t == 2.0 / 3.0:
        return 1.0 / (v1 * math.sqrt(v1))
    return math.exp(-math.log(v1) / t)


@_jit
def _all_finite(f, foe, fee, score):
    ok = True
    for p_ in range(f.shape[0]):
        for q in range(p_ + 1):
            ok = ok and math.isfinite(f[p_, q])
    for q in range(fee.shape[0]):
        ok = ok and math.isfinite(fee[q]) and math.isfinite(score[q])
        for p_ in range(f.shape[0]):
            ok = ok and math.isfinite(foe[q, p_])
    return ok


@_jit
def wing_scores(y, good, params, prior_w, size, k, k2, exponents):
    """Rao's score statistic for the wing fraction eta at eta = 0 of the pseudo-Voigt-Moffat, at each exponent.

    At ``eta = 0`` the profile is the rotated Gaussian ``G`` of ``params`` and the derivative of the expected
    counts by eta is ``I (M_t - G)`` with ``M_t`` the Moffat wing of exponent ``t``: one pass over the pixels
    gives the Gaussian's Fisher information ``F_oo`` (the background prior's weight included) and, for every
    ``t``, ``F_oe``, ``F_ee`` and the score ``U = sum (y / mu - 1) I (M_t - G)``.  The statistic is
    ``U / sqrt(F_ee - F_eo F_oo^-1 F_oe)`` (the efficient information, the other parameters free).

    Parameters
    ----------
    y : (N, M) float64
        Photons.
    good : (N, M) bool
    params : (N, 9) float64
        Pseudo-Voigt-Moffat parameters (photons; eta and t are ignored), finite.
    prior_w : (N,) float64
        Background prior's weight (photons^-2; 0: none).
    size, k : int
        Window side and sub-pixels per axis.
    k2 : float
        The squared Lorentzian width per sigma.
    exponents : (T,) float64
        The wing exponents ``t = 1 / beta``.

    Returns
    -------
    z : (N, T) float64
        The statistic; +inf where the efficient information is not positive.
    finite : (N,) bool
        Whether the information was finite (the statistic is meaningful).
    """
    n = y.shape[0]
    nt = exponents.shape[0]
    z = np.full((n, nt), np.inf)
    finite = np.zeros(n, dtype=np.bool_)
    f = np.empty((7, 7))
    foe = np.empty((nt, 7))
    fee = np.empty(nt)
    score = np.empty(nt)
    jo = np.empty(7)
    mt = np.empty(nt)
    norm_m = np.empty(nt)
    x = np.empty(7)
    for i in range(n):
        det = params[i, 2] * params[i, 4] - params[i, 3] * params[i, 3]
        if not det > 0:
            continue
        for q in range(nt):
            norm_m[q] = math.sqrt(det) * (1.0 - exponents[q]) / (math.pi * k2 * exponents[q])
        _wing_pass(y[i], good[i], params[i], size, k, k2, exponents, norm_m, f, foe, fee, score, jo, mt)
        f[6, 6] += prior_w[i]
        if not _all_finite(f, foe, fee, score):
            continue
        finite[i] = True
        for p_ in range(7):
            f[p_, p_] += 1e-12
            for q in range(p_ + 1, 7):
                f[p_, q] = f[q, p_]
        if not _cholesky(f):
            continue
        for q in range(nt):  # x = L^-1 F_oe: the quadratic form F_eo F_oo^-1 F_oe is |x|^2
            quad = 0.0
            for j in range(7):
                v = foe[q, j]
                for r in range(j):
                    v -= f[j, r] * x[r]
                x[j] = v / f[j, j]
                quad += x[j] * x[j]
            info = fee[q] - quad
            if info > 0:
                z[i, q] = score[q] / math.sqrt(info)
    return z, finite


@_jit
def _filtered_max(resid, var, kr, kc, tmp, tmp2):
    """The largest ``(kr resid kc^T) / sqrt(kr^2 var kc^2^T)`` over the patch (``tmp``, ``tmp2`` work arrays)."""
    size = resid.shape[0]
    for a in range(size):  # kr @ resid and kr^2 @ var
        for c in range(size):
            s1 = 0.0
            s2 = 0.0
            for b in range(size):
                k = kr[a, b]
                s1 += k * resid[b, c]
                s2 += k * k * var[b, c]
            tmp[a, c] = s1
            tmp2[a, c] = s2
    best = -np.inf
    for a in range(size):  # ... @ kc^T
        for c in range(size):
            s1 = 0.0
            s2 = 0.0
            for b in range(size):
                k = kc[c, b]
                s1 += tmp[a, b] * k
                s2 += tmp2[a, b] * k * k
            best = max(best, s1 / math.sqrt(max(s2, 1e-12)))
    return best


@_jit
def residual_bumps(y, good, params, size, width_min, width_max):
    """The largest matched-filter significance of each patch's residual from an axis-aligned Gaussian fit.

    ``mu`` is the pixel-integrated Gaussian of ``params`` (floored at 1e-9); the residual ``y - mu`` and the
    variance ``mu`` (0 at pixels not ``good``) are correlated with the separable kernel
    ``exp(-d_r^2 / 2 w_r^2) exp(-d_c^2 / 2 w_c^2)`` (``w`` the fitted sigmas clipped to
    [``width_min``, ``width_max``]) centred on every pixel; the statistic is the residual's correlation over the
    square root of the variance's correlation with the squared kernel (floored at 1e-12), the largest over the
    patch.

    Parameters
    ----------
    y : (N, M) float64
        Photons, M = size * size.
    good : (N, M) bool
    params : (N, 6) float64
        ``row, col, sigma_row, sigma_col`` (patch px), ``I, B`` (photons).
    size : int
    width_min, width_max : float

    Returns
    -------
    bump : (N,) float64
        NaN where a parameter is not finite or a width not positive.
    """
    n = y.shape[0]
    bump = np.full(n, np.nan)
    w = np.empty((6, size))
    resid = np.empty((size, size))
    var = np.empty((size, size))
    kr = np.empty((size, size))
    kc = np.empty((size, size))
    tmp = np.empty((size, size))
    tmp2 = np.empty((size, size))
    er = np.empty(size)
    ec = np.empty(size)
    for i in range(n):
        p = params[i]
        finite = True
        for q in range(6):
            finite = finite and math.isfinite(p[q])
        if not (finite and p[2] > 0 and p[3] > 0):
            continue
        _axis(size, p[0], p[2], w[0], w[1], w[2])
        _axis(size, p[1], p[3], w[3], w[4], w[5])
        m = 0
        for r in range(size):
            for c in range(size):
                mu = max(p[4] * w[0, r] * w[3, c] + p[5], 1e-9)
                if good[i, m]:
                    resid[r, c] = y[i, m] - mu
                    var[r, c] = mu
                else:
                    resid[r, c] = 0.0
                    var[r, c] = 0.0
                m += 1
        wr = min(max(p[2], width_min), width_max)
        wc = min(max(p[3], width_min), width_max)
        for d in range(size):  # the kernels are Toeplitz: one exponential per distance |a - b| (the same value)
            er[d] = math.exp(-0.5 * d * d / (wr * wr))
            ec[d] = math.exp(-0.5 * d * d / (wc * wc))
        for a in range(size):
            for b in range(size):
                kr[a, b] = er[abs(a - b)]
                kc[a, b] = ec[abs(a - b)]
        best = _filtered_max(resid, var, kr, kc, tmp, tmp2)
        bump[i] = best
    return bump
