"""Batched profile fits (braggflow.profiles.fitting, braggflow.locate.batchfit) against simulated truth,
the per-patch scipy reference fit, and Monte Carlo scatter."""

import numpy as np
import pytest

from braggflow.locate.batchfit import fit_patches_batched
from braggflow.locate.fit import fit_patches
from braggflow.profiles.fitting import PARAMETERS, evaluate, fit_profiles, start_parameters
from braggflow.profiles.render import moffat_profile, peak_profile
from braggflow.simulate.patches import simulate_patches


def _radial(res, ps):
    return np.hypot(res.row - ps.row, res.col - ps.col)


def test_batch_gauss_equals_scipy_reference():
    ps = simulate_patches(150, kind="isotropic", seed=31)
    ref = fit_patches(ps.data, ps.mask, profile="gauss")
    new = fit_patches_batched(ps.data, ps.mask, profile="gauss")
    both = ~ref.failed & ~new.failed
    assert both.mean() > 0.98
    # the same likelihood maximum: positions agree far inside their errors
    diff = np.hypot(ref.row - new.row, ref.col - new.col)[both] / ref.row_err[both]
    assert np.median(diff) < 0.02
    assert np.allclose(new.row_err[both], ref.row_err[both], rtol=0.02)
    assert np.nanmedian(_radial(new, ps)) <= 1.01 * np.nanmedian(_radial(ref, ps))


@pytest.mark.parametrize("model", ["gauss", "pvoigt"])
def test_fisher_errors_match_monte_carlo(model):
    """The reported errors (inverse Fisher information) equal the scatter of repeated fits of one peak."""
    rng = np.random.default_rng(5)
    n, size = 400, 11
    grid = np.arange(size)
    if model == "gauss":
        prof = peak_profile(grid, grid, row=5.2, col=4.9, sigma_row=1.1, sigma_col=1.4)
    else:  # an elongated rotated pseudo-Voigt
        prof = peak_profile(grid, grid, row=5.2, col=4.9, sigma_row=2.0, sigma_col=1.0, angle=0.6, eta=0.4)
    mu = 4000.0 * prof + 20.0
    data = rng.poisson(mu, size=(n, size, size)).astype(float)
    res = fit_patches_batched(data, None, profile=model)
    assert not res.failed.any()
    for est, err, true in ((res.row, res.row_err, 5.2), (res.col, res.col_err, 4.9)):
        assert abs(np.mean(est) - true) < 3 * np.std(est) / np.sqrt(n)  # unbiased
        assert 0.88 < np.std(est) / np.median(err) < 1.12
    fit = fit_profiles(data, np.ones_like(data, bool),
                       start_parameters(model, res.row, res.col, res.sigma_row, res.sigma_col, res.intensity,
                                        res.background), model=model)
    inten, inten_err = fit.column("intensity"), fit.error("intensity")
    assert 0.85 < np.std(inten) / np.median(inten_err) < 1.15


def test_rotated_pvoigt_on_elongated_peaks():
    ps = simulate_patches(200, kind="elongated", seed=32)
    ref = fit_patches(ps.data, ps.mask, profile="pvoigt")
    new = fit_patches_batched(ps.data, ps.mask, profile="pvoigt")
    assert new.failed.mean() < 0.02
    assert np.nanmedian(_radial(new, ps)) <= 1.06 * np.nanmedian(_radial(ref, ps))  # median of 200: +-4 %
    pull = np.concatenate([(new.row - ps.row) / new.row_err, (new.col - ps.col) / new.col_err])
    assert 0.85 < np.nanstd(pull) < 1.15


def test_moffat_model_recovers_beta_and_flux():
    rng = np.random.default_rng(6)
    size, n = 21, 60
    grid = np.arange(size)
    prof = moffat_profile(grid, grid, row=10.3, col=9.8, sigma_row=1.5, sigma_col=1.1, beta=2.5, angle=0.4)
    data = rng.poisson(30000.0 * prof + 10.0, size=(n, size, size)).astype(float)
    start = start_parameters("moffat", np.full(n, 10.0), np.full(n, 10.0), 1.0, 1.0, data.sum(axis=(1, 2)), 10.0)
    fit = fit_profiles(data, np.ones_like(data, bool), start, model="moffat")
    assert fit.ok.all()
    assert abs(np.median(1.0 / fit.column("t")) - 2.5) < 0.15
    assert abs(np.median(fit.column("intensity")) / 30000.0 - 1.0) < 0.01


@pytest.mark.parametrize("model", ["gauss", "pvoigt", "moffat", "pvmoffat", "gauss2"])
def test_model_jacobians_match_finite_differences(model):
    rng = np.random.default_rng(7)
    base = {"gauss": [5.1, 4.8, 1.2, 0.9, 1000.0, 5.0],
            "pvoigt": [5.1, 4.8, 0.8, 0.2, 0.6, 0.4, 1000.0, 5.0],
            "moffat": [5.1, 4.8, 0.8, 0.2, 0.6, 0.35, 1000.0, 5.0],
            "pvmoffat": [5.1, 4.8, 0.8, 0.2, 0.6, 0.4, 0.5, 1000.0, 5.0],
            "gauss2": [4.1, 4.8, 6.2, 5.5, 1.1, 0.9, 800.0, 500.0, 5.0]}[model]
    p = np.array([base]) * (1 + 0.01 * rng.standard_normal((1, len(base))))
    mu, jac = evaluate(model, p, 11)
    for k in range(len(PARAMETERS[model])):
        h = 1e-6 * max(abs(p[0, k]), 1.0)
        up, down = p.copy(), p.copy()
        up[0, k] += h
        down[0, k] -= h
        num = (evaluate(model, up, 11, jac=False)[0] - evaluate(model, down, 11, jac=False)[0]) / (2 * h)
        assert np.allclose(jac[..., k], num, rtol=1e-4, atol=1e-6 * np.abs(mu).max()), PARAMETERS[model][k]


def test_rotated_gaussian_is_the_profile_without_a_wing():
    """``rgauss`` is ``pvmoffat`` with eta = 0: the same expected counts, derivatives and fit."""
    rng = np.random.default_rng(5)
    n, size = 30, 21
    p = start_parameters("pvmoffat", rng.uniform(9, 11, n), rng.uniform(9, 11, n), rng.uniform(0.8, 2, n),
                         rng.uniform(0.8, 2, n), rng.uniform(2000, 20000, n), 50.0, supersample=1, shape=0.0)
    p[:, 3] = rng.uniform(-0.1, 0.1, n)  # rotated
    cols = [0, 1, 2, 3, 4, 7, 8]
    mu_p, jac_p = evaluate("pvmoffat", p, size, supersample=1)
    mu_g, jac_g = evaluate("rgauss", p[:, cols], size, supersample=1)
    np.testing.assert_allclose(mu_g, mu_p)
    np.testing.assert_allclose(jac_g, jac_p[..., cols])
    data = rng.poisson(mu_p).reshape(n, size, size).astype(float)
    good = np.ones(data.shape, dtype=bool)
    start = p.copy()
    start[:, 0] += 0.3
    start[:, 7] *= 0.8
    hold = np.zeros(9, dtype=bool)
    hold[[5, 6]] = True
    a = fit_profiles(data, good, start, model="pvmoffat", supersample=1, hold=hold)
    b = fit_profiles(data, good, start[:, cols], model="rgauss", supersample=1)
    np.testing.assert_allclose(b.params, a.params[:, cols], rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(b.error("intensity"), a.error("intensity"), rtol=1e-7)


_START = {"gauss": [5.1, 4.8, 1.2, 0.9, 3000.0, 20.0],
          "pvoigt": [5.1, 4.8, 0.8, 0.1, 0.6, 0.3, 3000.0, 20.0],
          "moffat": [5.1, 4.8, 0.8, 0.1, 0.6, 0.3, 3000.0, 20.0],
          "pvmoffat": [5.1, 4.8, 0.8, 0.1, 0.6, 0.3, 0.5, 3000.0, 20.0],
          "rgauss": [5.1, 4.8, 0.8, 0.1, 0.6, 3000.0, 20.0],
          "gauss2": [4.1, 4.8, 6.2, 5.5, 1.1, 0.9, 2000.0, 1000.0, 20.0]}


@pytest.mark.parametrize("model", sorted(_START))
def test_compiled_iteration_takes_the_numpy_steps(model):
    """The compiled iteration (numba) and the vectorised NumPy one give the same fit: parameters, errors,
    deviance, iterations; with a held parameter and a background prior too."""
    from braggflow.profiles import _kernels

    if not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(11)
    n, size = 40, 11
    truth = np.array([_START[model]]) * (1 + 0.05 * rng.standard_normal((n, len(_START[model]))))
    mu, _ = evaluate(model, truth, size, jac=False)
    data = rng.poisson(mu).reshape(n, size, size).astype(float)
    good = rng.random(data.shape) > 0.05  # a few pixels left out
    start = truth * (1 + 0.03 * rng.standard_normal(truth.shape))
    hold = np.zeros(truth.shape, dtype=bool)
    hold[:5, 2] = True
    prior = (np.full(n, 20.0), np.where(np.arange(n) < 10, 4.0, np.nan))
    fits = [fit_profiles(data, good, start, model=model, gain=2.0, hold=hold, background_prior=prior, engine=e)
            for e in ("numba", "numpy")]
    a, b = fits
    np.testing.assert_array_equal(a.ok, b.ok)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(a.deviance, b.deviance, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-6, atol=1e-12)
    assert a.ok.mean() > 0.9


@pytest.mark.parametrize("model", ["gauss", "pvmoffat"])
def test_information_and_score_by_both_engines(model):
    """``information``: the same Fisher matrix and score compiled and in NumPy, and the score is zero at the
    maximum-likelihood solution."""
    from braggflow.profiles import _kernels
    from braggflow.profiles.fitting import information

    if not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(12)
    n, size = 20, 11
    truth = np.array([_START[model]]) * (1 + 0.05 * rng.standard_normal((n, len(_START[model]))))
    data = rng.poisson(evaluate(model, truth, size, jac=False)[0]).reshape(n, size, size).astype(float)
    good = np.ones(data.shape, dtype=bool)
    res = [information(model, data, good, truth, background_weight=np.full(n, 0.1), engine=e)
           for e in ("numba", "numpy")]
    np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-8, atol=1e-9 * np.abs(res[1][0]).max())
    np.testing.assert_allclose(res[0][1], res[1][1], rtol=1e-9, atol=1e-9)
    fit = fit_profiles(data, good, truth, model=model, tol=1e-9)
    _, score = information(model, data, good, fit.params)
    free = fit.converged & fit.ok
    fisher, _ = information(model, data, good, fit.params)
    cols = [0, 1, -2, -1]  # centre, intensity, background: inside their bounds (a wing's eta, t may sit on one)
    z = score[free][:, cols] / np.sqrt(np.einsum("npp->np", fisher[free]))[:, cols]
    assert free.mean() > 0.9
    assert np.abs(z).max() < 1e-2


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_amplitudes_are_the_fit_with_the_shape_held(engine):
    """fit_amplitudes gives the Poisson maximum of intensity and background that the full iteration reaches with
    the centre and widths held, from a start far off, and its deviance."""
    from braggflow.profiles import _kernels
    from braggflow.profiles.fitting import fit_amplitudes

    if engine == "numba" and not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(23)
    n, size, gain = 200, 11, 2.0
    truth = np.column_stack([5 + rng.uniform(-1, 1, n), 5 + rng.uniform(-1, 1, n), rng.uniform(0.8, 2.0, n),
                             rng.uniform(0.8, 2.0, n), np.exp(rng.uniform(np.log(200), np.log(5e4), n)),
                             rng.uniform(1, 100, n)])
    mu, _ = evaluate("gauss", truth, size, jac=False)
    data = gain * rng.poisson(mu).reshape(n, size, size).astype(float)
    good = rng.random(data.shape) > 0.05
    start = truth.copy()
    start[:, 4:] *= gain * np.array([0.6, 1.5])  # counts, far from the truth
    hold = np.array([True, True, True, True, False, False])
    ref = fit_profiles(data, good, start, model="gauss", gain=gain, hold=hold, tol=1e-9)
    inten, bg, dev = fit_amplitudes(data, good, start, gain=gain, engine=engine)
    np.testing.assert_allclose(inten, ref.column("intensity"), rtol=1e-5)
    np.testing.assert_allclose(bg, ref.column("background"), rtol=1e-4, atol=1e-3 * gain)
    np.testing.assert_allclose(dev, ref.deviance, atol=1e-6)
    # and the truth within the errors of the held fit
    z = (inten - truth[:, 4] * gain) / ref.error("intensity")
    assert abs(np.mean(z)) < 0.25 and 0.8 < np.std(z) < 1.2


def test_wing_score_is_normal_on_gaussians_and_large_with_a_wing():
    """``wing_scores`` at the rotated Gaussian's fit: about N(0, 1) on rotated Gaussian peaks (Rao's score
    statistic under the null), large on pseudo-Voigt-Moffat peaks with a wing, the same by both engines."""
    from braggflow.profiles import _kernels
    from braggflow.profiles.fitting import wing_scores

    rng = np.random.default_rng(41)
    n, size = 300, 15
    truth = np.array([[7.1, 6.8, 0.8, 0.1, 0.6, 0.0, 0.5, 5000.0, 30.0]]).repeat(n, axis=0)
    truth[:, :2] += rng.uniform(-0.5, 0.5, (n, 2))
    winged = truth.copy()
    winged[:, 5] = 0.4
    scores = []
    for params in (truth, winged):
        mu, _ = evaluate("pvmoffat", params, size, supersample=1, jac=False)
        data = rng.poisson(mu).reshape(n, size, size).astype(float)
        good = np.ones(data.shape, dtype=bool)
        start = np.delete(params, [5, 6], axis=1)
        fit = fit_profiles(data, good, start, model="rgauss", supersample=1, tol=1e-8)
        p = np.insert(fit.params, [5, 5], [0.0, 0.5], axis=1)
        engines = ("numba", "numpy") if _kernels.AVAILABLE else ("numpy",)
        res = [wing_scores(data, good, p, (0.5, 2.0 / 3.0), engine=e) for e in engines]
        for z, finite in res[1:]:
            np.testing.assert_allclose(z, res[0][0], rtol=1e-7)
            np.testing.assert_array_equal(finite, res[0][1])
        assert res[0][1][fit.ok].all()
        scores.append(res[0][0][fit.ok])
    null, wing = scores
    assert abs(np.mean(null[:, 0])) < 0.2 and 0.8 < np.std(null[:, 0]) < 1.25
    assert (wing.max(axis=1) > 2).mean() > 0.9 and np.median(wing.max(axis=1)) > 3.5


def test_residual_bump_of_a_second_peak():
    """``residual_bumps``: the residual of a patch from its own Gaussian has no bump (a few sigma at most); a
    second peak left out of the model shows (the same by both engines)."""
    from braggflow.profiles import _kernels
    from braggflow.profiles.fitting import residual_bumps

    rng = np.random.default_rng(42)
    n, size = 200, 11
    truth = np.column_stack([5 + rng.uniform(-0.5, 0.5, n), 5 + rng.uniform(-0.5, 0.5, n), np.full(n, 1.2),
                             np.full(n, 1.2), np.full(n, 8000.0), np.full(n, 40.0)])
    second = truth.copy()
    second[:, 0] += 3.0
    second[:, 4:] = [2000.0, 0.0]
    mu = evaluate("gauss", truth, size, jac=False)[0]
    extra = evaluate("gauss", second, size, jac=False)[0]
    good = np.ones((n, size * size), dtype=bool)
    good[:, ::17] = False
    bumps = []
    for expected in (mu, mu + extra):
        y = rng.poisson(expected).astype(float)
        engines = ("numba", "numpy") if _kernels.AVAILABLE else ("numpy",)
        res = [residual_bumps(y, good, truth, size, 0.5, size / 4, engine=e) for e in engines]
        for b in res[1:]:
            np.testing.assert_allclose(b, res[0], rtol=1e-9, atol=1e-9)
        bumps.append(res[0])
    assert np.percentile(bumps[0], 99) < 4.5
    assert np.median(bumps[1]) > 8
    bad = truth.copy()
    bad[0, 2] = np.nan
    assert np.isnan(residual_bumps(np.ones((1, size * size)), good[:1], bad[:1], size, 0.5, 3.0))
