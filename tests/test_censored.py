"""Intensities on frames thresholded upstream: the censored-likelihood Gaussian fit against simulated truth."""

import numpy as np
import pytest

from braggflow.find import find_peaks
from braggflow.integrate import integrate
from braggflow.integrate.censored import censored_gaussian_fits
from braggflow.locate import locate
from braggflow.pipeline import analyse_frame
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.schema import Flag
from braggflow.simulate.thresholded import simulate_thresholded_frame

THRESHOLD, NOISE, WIDTH = 6, 2.0, 1.2


def thresholded_spots(seed: int, *, side: int = 6, flux=(150.0, 600.0), width: float = WIDTH):
    """Round Gaussian spots on noise of 2 counts stored from 6 counts, and their truth (row, col, flux)."""
    sim = simulate_thresholded_frame(seed, side=side, flux=flux, width=width, threshold=THRESHOLD, noise=NOISE)
    return sim.frame, sim.truth


def _matched(table, truth):
    """Index of the table's peak within 2 px of each true spot (-1: none)."""
    d = np.hypot(table["row"].to_numpy()[None, :] - truth[:, :1], table["col"].to_numpy()[None, :] - truth[:, 1:2])
    return np.where(d.min(axis=1) < 2, d.argmin(axis=1), -1)


def test_weak_thresholded_spots_keep_their_whole_intensity_and_honest_errors():
    ratio_fit, ratio_sum, z = [], [], []
    for seed in range(4):
        frame, truth = thresholded_spots(seed)
        found = find_peaks(frame)
        assert found.threshold_noise is not None  # the finder takes it for thresholded
        table = integrate(frame, locate(frame, found.table, labels=found.labels, regions=found.regions),
                          labels=found.labels, regions=found.regions)
        k = _matched(table, truth)
        assert (k >= 0).mean() > 0.9
        hit, flux = k[k >= 0], truth[k >= 0, 2]
        fits = censored_gaussian_fits(frame, table["row"].to_numpy()[hit], table["col"].to_numpy()[hit],
                                      threshold=found.threshold_noise.threshold, sigma=found.threshold_noise.sigma,
                                      labels=found.labels)
        assert fits["converged"].all()
        for axis in ("sigma_row", "sigma_col"):
            assert np.median(np.abs(fits[axis] - WIDTH)) < 0.15
        assert np.median(np.abs(fits["correlation"])) < 0.1
        ratio_fit += list(fits["intensity"] / flux)
        ratio_sum += list(table["intensity"].to_numpy()[hit] / flux)
        z += list((fits["intensity"] - flux) / fits["intensity_err"])
    # summation over the stored pixels loses the wings below the threshold; the censored fit does not
    assert np.median(ratio_sum) < 0.92
    assert 0.97 < np.median(ratio_fit) < 1.03
    assert 0.8 < np.std(z) < 1.3


def test_the_fit_is_exact_without_noise_on_an_elongated_spot_far_above_the_threshold():
    # noiseless: the stored values are the model itself (an elliptical Gaussian at the pixel centres, its covariance
    # widened by the pixel's box variance of 1/12 px^2), the zeros lie far below the threshold
    rr, cc = np.mgrid[:31, :31].astype(float)
    s_r, s_c, rho = 2.2, 1.1, -0.6
    cov = np.array([[s_r**2, rho * s_r * s_c], [rho * s_r * s_c, s_c**2]]) + np.eye(2) / 12
    x = np.stack([rr - 15.3, cc - 14.8])
    q = np.einsum("iab,ij,jab->ab", x, np.linalg.inv(cov), x)
    frame = 1e6 * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    frame = np.where(frame >= THRESHOLD, frame, 0.0)
    fits = censored_gaussian_fits(frame, np.array([15.0]), np.array([15.0]), threshold=THRESHOLD, sigma=0.05,
                                  gain=0.0)
    assert fits["converged"][0]
    assert fits["intensity"][0] == pytest.approx(1e6, rel=1e-4)
    assert fits["row"][0] == pytest.approx(15.3, abs=1e-4) and fits["col"][0] == pytest.approx(14.8, abs=1e-4)
    assert fits["sigma_row"][0] == pytest.approx(s_r, abs=1e-4) and fits["sigma_col"][0] == pytest.approx(s_c, abs=1e-4)
    assert fits["correlation"][0] == pytest.approx(rho, abs=1e-4)


def test_profile_integration_on_a_thresholded_frame_is_the_censored_fit():
    frame, truth = thresholded_spots(11)
    config = apply_overrides(Config(), ["integrate.method=profile"])
    result = analyse_frame(frame, config=config)
    plain = analyse_frame(frame, config=Config())
    assert result.row["thresholded"]
    k, k_sum = _matched(result.table, truth), _matched(plain.table, truth)
    assert (k >= 0).all() and (k_sum >= 0).all()
    ratio = result.table["intensity"].to_numpy()[k] / truth[:, 2]
    ratio_sum = plain.table["intensity"].to_numpy()[k_sum] / truth[:, 2]
    assert np.median(ratio_sum) < 0.92 and 0.96 < np.median(ratio) < 1.04
    assert not (result.table["flags"].to_numpy() & Flag.SUMMED).any()
    # the positions are the located ones
    np.testing.assert_array_equal(result.table["row"].to_numpy(), plain.table["row"].to_numpy())


def test_binned_thresholded_frames_keep_their_sums_flagged():
    frame, _ = thresholded_spots(12, side=3)
    config = apply_overrides(Config(), ["integrate.method=profile", "correct.binning=2"])
    table = analyse_frame(frame, config=config).table
    assert len(table) and (table["flags"].to_numpy() & Flag.SUMMED).all()


def test_a_peak_without_a_position_keeps_its_sum():
    frame, _ = thresholded_spots(13, side=2)
    found = find_peaks(frame)
    table = locate(frame, found.table, labels=found.labels, regions=found.regions)
    table.loc[0, "row"] = np.nan
    out = integrate(frame, table, labels=found.labels, regions=found.regions, method="profile",
                    threshold_noise=found.threshold_noise)
    assert np.isnan(out["intensity"].iloc[0])  # no position, no window: as summation leaves it
    assert not (out["flags"].to_numpy()[1:] & Flag.SUMMED).any()


@pytest.mark.parametrize(("threshold", "sigma"), [(0.0, 2.0), (6.0, np.nan), (6.0, -1.0)])
def test_an_invalid_noise_model_is_refused(threshold, sigma):
    with pytest.raises(ValueError, match="threshold and sigma"):
        censored_gaussian_fits(np.zeros((20, 20)), np.array([10.0]), np.array([10.0]), threshold=threshold,
                               sigma=sigma)


@pytest.mark.parametrize("p", [[np.log(300.0), 0.3, -0.2, np.log(1.4), np.log(0.9), 0.4],  # one spot
                               [np.log(200.0), -1.1, 0.4, np.log(150.0), 1.2, -0.3, np.log(1.1), np.log(1.6), -0.3]])
def test_the_compiled_gradient_is_the_likelihoods_derivative(p):
    from braggflow.integrate._censored_kernels import window_terms

    rng = np.random.default_rng(3)
    p = np.array(p)
    npar = p.size
    offsets = np.arange(-7, 8, dtype=float)
    values = np.where(rng.random((15, 15)) < 0.3, rng.integers(6, 40, (15, 15)), 0).astype(float)
    used = rng.random((15, 15)) > 0.1
    work = np.empty(npar)

    def nll(q):
        return window_terms(q, offsets, values, used, 0.5, 6.0, 4.0, 1.0, np.empty(npar), np.empty((npar, npar)),
                            False, work)

    grad, info = np.empty(npar), np.empty((npar, npar))
    window_terms(p, offsets, values, used, 0.5, 6.0, 4.0, 1.0, grad, info, True, work)
    numeric = [(nll(p + e) - nll(p - e)) / 2e-6 for e in np.eye(npar) * 1e-6]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(info).min() > 0  # the scoring metric is positive definite


def test_simulated_pairs_lie_at_their_separation():
    sim = simulate_thresholded_frame(5, side=3, pairs=(2.0, 4.0))
    pair = sim.truth.reshape(-1, 2, 3)
    gaps = np.hypot(*(pair[:, 1, :2] - pair[:, 0, :2]).T)
    assert len(pair) == 9 and ((gaps >= 2.0) & (gaps <= 4.0)).all()


def test_the_censored_tail_terms_match_scipy_far_below_the_threshold():
    from scipy.special import log_ndtr

    from braggflow.integrate._censored_kernels import _log_ndtr_and_mills

    for z in (-60.0, -25.0, -20.5, -19.5, -5.0, 0.0, 3.0, 9.0):
        log_cdf, mills = _log_ndtr_and_mills(z)
        assert log_cdf == pytest.approx(log_ndtr(z), rel=1e-9, abs=1e-12)
        assert mills == pytest.approx(np.exp(-0.5 * z * z - 0.5 * np.log(2 * np.pi) - log_ndtr(z)), rel=1e-8)


def test_a_centre_outside_its_region_keeps_its_sum():
    frame, truth = thresholded_spots(14, side=2)
    found = find_peaks(frame)
    table = locate(frame, found.table, labels=found.labels, regions=found.regions)
    summed = integrate(frame, table, labels=found.labels, regions=found.regions)
    table.loc[0, "row"] += 6.0  # a centroid that fell outside its region (as a ring's does)
    out = integrate(frame, table, labels=found.labels, regions=found.regions, method="profile",
                    threshold_noise=found.threshold_noise)
    moved = integrate(frame, table, labels=found.labels, regions=found.regions)
    assert out["flags"].iloc[0] & Flag.SUMMED and out["intensity"].iloc[0] == moved["intensity"].iloc[0]
    assert not (out["flags"].to_numpy()[1:] & Flag.SUMMED).any()
    assert (out["intensity"].to_numpy()[1:] > summed["intensity"].to_numpy()[1:]).mean() > 0.5
