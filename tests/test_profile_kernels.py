"""The compiled kernels' specialised forms give the values of their general loops, bit for bit."""

import numpy as np
import pytest

from braggflow.profiles import _kernels
from braggflow.profiles.fitting import MODELS, PARAMETERS


def _rotated_gaussian_params(rng, n, size):
    """Rotated Gaussians within 0.5 px of the window's centre: precision from widths 0.5-1.2 px at any angle, I
    and B in photons."""
    params = np.empty((n, 7))
    for i in range(n):
        s1, s2 = rng.uniform(0.5, 1.2, 2)
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        q = rot @ np.diag([1 / s1**2, 1 / s2**2]) @ rot.T
        centre = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2)
        params[i] = [*centre, q[0, 0], q[0, 1], q[1, 1], rng.uniform(50, 5e4), rng.uniform(0, 100)]
    return params


@pytest.mark.parametrize("size", [7, 15])
def test_rotated_gaussian_at_pixel_centres_is_the_sample_loop(size):
    """One sample a pixel, the rotated Gaussian's expected counts and derivatives equal the general loop's."""
    rng = np.random.default_rng(3)
    npix = size * size
    for p in _rotated_gaussian_params(rng, 40, size):
        mu, jac = np.empty(npix), np.zeros((npix, 7))
        mu_ref, jac_ref = np.empty(npix), np.zeros((npix, 7))
        _kernels._rgauss_centres(p, size, mu, jac)
        _kernels._rotated(_kernels.MODEL_IDS["rgauss"], p, size, 1, 1.0, mu_ref, jac_ref)
        assert np.array_equal(mu, mu_ref)
        assert np.array_equal(jac, jac_ref)
        assert np.isclose(mu.sum() - p[6] * npix, p[5], rtol=0.02)  # the peak inside the window (2.5 sigma or more)


@pytest.mark.parametrize("npar", sorted({len(PARAMETERS[m]) for m in MODELS}))
def test_unrolled_information_is_the_loop(npar):
    """The information and gradient of every model's parameter count equal the loop's, masked pixels and the
    background prior included; the information is J^T diag(1 / mu) J."""
    rng = np.random.default_rng(npar)
    npix = 121
    for prior_w in (0.0, 0.25):
        y = rng.poisson(20.0, npix).astype(float)
        good = rng.random(npix) > 0.2
        mu = rng.uniform(0.5, 60.0, npix)
        jac = rng.normal(size=(npix, npar))
        fisher, grad = np.empty((npar, npar)), np.empty(npar)
        fisher_ref, grad_ref = np.empty((npar, npar)), np.empty(npar)
        _kernels._information(y, good, mu, jac, prior_w, fisher, grad)
        _kernels._information_loop(y, good, mu, jac, prior_w, fisher_ref, grad_ref)
        assert np.array_equal(fisher, fisher_ref)
        assert np.array_equal(grad, grad_ref)
        expected = (jac[good] / mu[good, None]).T @ jac[good]
        expected[-1, -1] += prior_w
        np.testing.assert_allclose(fisher, expected, rtol=1e-10)
        np.testing.assert_allclose(grad, jac[good].T @ (1.0 - y[good] / mu[good]), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("k", [1, 2])
def test_pseudo_voigt_samples_are_the_general_loop(k):
    """The pseudo-Voigt's own sample loop gives the general loop's expected counts and derivatives, sub-pixels or
    not, from a Gaussian (eta 0) to a Lorentzian (eta 1)."""
    rng = np.random.default_rng(10 + k)
    size, npix = 11, 121
    k2 = 2.0 * np.log(2.0)
    for p in _rotated_gaussian_params(rng, 30, size):
        p = np.insert(p, 5, rng.choice([0.0, rng.uniform(0, 1), 1.0]))
        mu, jac = np.empty(npix), np.zeros((npix, 8))
        mu_ref, jac_ref = np.empty(npix), np.zeros((npix, 8))
        _kernels._pvoigt_samples(p, size, k, k2, mu, jac)
        _kernels._rotated(_kernels.MODEL_IDS["pvoigt"], p, size, k, k2, mu_ref, jac_ref)
        assert np.array_equal(mu, mu_ref)
        assert np.array_equal(jac, jac_ref)
        assert np.all(mu >= p[7]) and np.all(jac[:, 6] >= 0) and mu.max() > p[7] + 0.01 * p[6]  # a peak over B


def test_wing_score_of_each_exponent_does_not_depend_on_the_others():
    """The wing score at two exponents is, to the last bit, the score at those exponents among three; Gaussian
    peaks score around 0."""
    rng = np.random.default_rng(5)
    size, n = 15, 40
    params = np.zeros((n, 9))
    params[:, [0, 1, 2, 3, 4, 5, 6]] = np.column_stack([_rotated_gaussian_params(rng, n, size)[:, :5],
                                                         np.zeros(n), np.full(n, 0.5)])
    params[:, 7], params[:, 8] = rng.uniform(500, 5000, n), rng.uniform(5, 50, n)
    mu = np.empty((n, size * size))
    for i in range(n):
        rg = np.r_[params[i, :5], params[i, 7:]]
        _kernels._rotated(_kernels.MODEL_IDS["rgauss"], rg, size, 1, 1.0, mu[i], np.zeros((size * size, 7)))
    y = rng.poisson(mu).astype(float)
    good = rng.random(y.shape) > 0.05
    k2 = 2.0 * np.log(2.0)
    two = np.array([0.5, 2.0 / 3.0])
    z2, finite2 = _kernels.wing_scores(y, good, params, np.zeros(n), size, 1, k2, two)
    z3, finite3 = _kernels.wing_scores(y, good, params, np.zeros(n), size, 1, k2, np.r_[two, 0.4])
    assert np.array_equal(z2, z3[:, :2]) and np.array_equal(finite2, finite3)
    assert finite2.all() and np.abs(np.median(z2, axis=0)).max() < 1.0  # no wing: centred on 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_to_num_is_numpys(dtype):
    """The fitting stages' ``nan_to_num`` gives ``np.nan_to_num``'s values, dtype and signs: NaN replaced (by any
    value, +-inf included, which then stay), +-inf made the dtype's extremes, the input left alone."""
    from braggflow.profiles._arrays import nan_to_num

    rng = np.random.default_rng(11)
    for trial in range(300):
        x = rng.normal(size=(int(rng.integers(0, 30)), 3)).astype(dtype)
        for value, frac in ((np.nan, 0.2), (np.inf, 0.1), (-np.inf, 0.1), (-0.0, 0.1)):
            if trial % 4 or value is np.nan:
                x[rng.random(x.shape) < frac] = value
        given = x.copy()
        for nan in (0.0, 1.0, -np.inf, np.inf):
            ours, numpys = nan_to_num(x, nan=nan), np.nan_to_num(x, nan=nan)
            assert ours.dtype == numpys.dtype
            assert np.array_equal(ours, numpys) and np.array_equal(np.signbit(ours), np.signbit(numpys))
            assert ours is not x
        assert np.array_equal(x, given, equal_nan=True)
    for scalar in (np.nan, np.inf, 2.5, np.float32(np.nan)):
        ours, numpys = nan_to_num(scalar, nan=-1.0), np.nan_to_num(scalar, nan=-1.0)
        assert ours == numpys and type(ours) is type(numpys)
