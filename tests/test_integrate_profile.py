"""Profile-fitted intensities (integrate method="profile") against simulated peaks of known flux."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError
from braggflow.find import find_peaks
from braggflow.integrate import integrate
from braggflow.integrate.options import IntegrateConfig
from braggflow.locate import locate
from braggflow.profiles.render import moffat_profile, peak_profile
from braggflow.schema import Flag
from braggflow.simulate.frames import match_peaks

SPACING = 40
BACKGROUND = 50.0


def _isolated_frame(kind: str, seed: int, shape: int = 440):
    """Peaks of one kind on a grid (SPACING px apart), flux 2,000-50,000 photons, sigma 0.8-1.8 px, on a
    flat background; Poisson counts.  Returns the frame and the truth (row, col, intensity)."""
    rng = np.random.default_rng(seed)
    expected = np.full((shape, shape), BACKGROUND)
    truth = []
    half = 15
    for r in range(SPACING, shape - SPACING + 1, SPACING):
        for c in range(SPACING, shape - SPACING + 1, SPACING):
            r0, c0 = r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)
            sigma = rng.uniform(0.8, 1.8)
            flux = np.exp(rng.uniform(np.log(2000.0), np.log(50000.0)))
            grid_r, grid_c = np.arange(r - half, r + half + 1), np.arange(c - half, c + half + 1)
            if kind == "moffat":
                prof = moffat_profile(grid_r, grid_c, row=r0, col=c0, sigma_row=sigma, sigma_col=sigma, beta=2.5)
            elif kind == "pvoigt":
                prof = peak_profile(grid_r, grid_c, row=r0, col=c0, sigma_row=sigma, sigma_col=sigma,
                                    eta=rng.uniform(0.3, 0.8))
            else:
                prof = peak_profile(grid_r, grid_c, row=r0, col=c0, sigma_row=sigma, sigma_col=sigma)
            expected[r - half:r + half + 1, c - half:c + half + 1] += flux * prof
            truth.append((r0, c0, flux))
    frame = rng.poisson(expected).astype(np.float32)
    return frame, pd.DataFrame(truth, columns=["row", "col", "intensity"]).assign(frame=0)


def _measure(kind: str, seed: int):
    frame, truth = _isolated_frame(kind, seed)
    found = find_peaks(frame)
    table = locate(frame, found.table, labels=found.labels, regions=found.regions)
    out = {}
    for method in ("sum", "profile"):
        res = integrate(frame, table, labels=found.labels, regions=found.regions, method=method)
        m = match_peaks(res, truth)
        inten = res["intensity"].to_numpy()[m.found_index]
        err = res["intensity_err"].to_numpy()[m.found_index]
        true = truth["intensity"].to_numpy()[m.truth_index]
        out[method] = (inten / true, (inten - true) / err, res["flags"].to_numpy()[m.found_index])
    return out


def test_profile_intensity_of_moffat_peaks_within_3_percent():
    """Moffat peaks (beta 2.5, r^-5 wings): summation loses the wings, the profile's integral does not."""
    out = _measure("moffat", seed=41)
    ratio, pull, flags = out["profile"]
    assert len(ratio) >= 90
    assert 0.97 < np.median(ratio) < 1.03
    assert np.median(out["sum"][0]) < 0.95  # the sum misses the wings
    assert 0.8 < np.std(pull) < 1.3
    assert not (flags & Flag.SUMMED).any()


def test_profile_intensity_of_gaussian_peaks():
    """Unbiased on Gaussians, errors at their scatter, and no less precise than the sum (no wing is fitted
    where the data show none)."""
    out = _measure("gaussian", seed=42)
    ratio_p, pull_p, _ = out["profile"]
    assert abs(np.median(ratio_p) - 1.0) < 0.015
    assert 0.8 < np.std(pull_p) < 1.25
    assert np.std(ratio_p) <= np.std(out["sum"][0])


def test_profile_intensity_of_pseudo_voigt_peaks():
    """Pseudo-Voigt peaks (eta 0.3-0.8, r^-3 wings): the sum loses a quarter, the profile's integral is within
    3 % and its errors mean what they say, the faint peaks' included (they take the strong peaks' wing)."""
    out = _measure("pvoigt", seed=43)
    ratio, pull, flags = out["profile"]
    assert len(ratio) >= 90
    assert np.median(out["sum"][0]) < 0.85
    assert 0.97 < np.median(ratio) < 1.03
    assert 0.8 < np.std(pull) < 1.25
    assert not (flags & Flag.SUMMED).any()


def test_profile_keeps_the_sum_and_flags_a_peak_it_cannot_describe():
    """A flat-topped square of 9 x 9 px is no peak profile: its sum is kept and flagged SUMMED."""
    rng = np.random.default_rng(3)
    frame = np.full((120, 120), BACKGROUND)
    frame[40:49, 40:49] += 400.0
    yy, xx = np.indices(frame.shape)
    frame += 20000.0 * np.exp(-((yy - 80.2) ** 2 + (xx - 80.4) ** 2) / (2 * 1.2**2)) / (2 * np.pi * 1.2**2)
    frame = rng.poisson(frame).astype(np.float32)
    found = find_peaks(frame)
    table = locate(frame, found.table, labels=found.labels, regions=found.regions)
    res = integrate(frame, table, labels=found.labels, regions=found.regions, method="profile")
    square = np.hypot(res["row"] - 44, res["col"] - 44).to_numpy() < 3
    spot = np.hypot(res["row"] - 80.2, res["col"] - 80.4).to_numpy() < 1
    assert square.sum() == 1 and spot.sum() == 1
    assert res["flags"].to_numpy()[square][0] & Flag.SUMMED
    summed = integrate(frame, table, labels=found.labels, regions=found.regions, method="sum")
    assert res["intensity"].to_numpy()[square][0] == summed["intensity"].to_numpy()[square][0]
    assert not res["flags"].to_numpy()[spot][0] & Flag.SUMMED
    assert abs(res["intensity"].to_numpy()[spot][0] / 20000.0 - 1.0) < 0.03


def test_integrate_method_is_checked():
    frame = np.zeros((20, 20), dtype=np.float32)
    table = pd.DataFrame({"row": [10.0], "col": [10.0]})
    with pytest.raises(BraggflowError, match="method"):
        integrate(frame, table, radius=3.0, method="fit")
    assert IntegrateConfig().method == "sum"
    assert IntegrateConfig(method="profile").method == "profile"


def test_crowded_strong_peaks_take_the_reference_shape():
    """Gaussian peaks, some with a bright neighbour 5 px away (separate regions): the neighbours' light does not
    give the crowded peaks a wing of their own, they take the isolated strong peaks' shape (no wing) and their
    intensities stay within a few per cent of the truth (the neighbour's wings, not fitted, add a little)."""
    from braggflow.integrate.profile import profile_intensities

    rng = np.random.default_rng(41)
    shape = 240
    expected = np.full((shape, shape), BACKGROUND)
    truth = []
    grid = np.arange(shape)
    for k, (r, c) in enumerate([(r, c) for r in range(30, shape - 20, 40) for c in range(30, shape - 20, 40)]):
        peaks = [(r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5), 20000.0)]
        if k % 3 == 0:  # a neighbour 5 px away
            peaks.append((peaks[0][0] + 3.0, peaks[0][1] + 4.0, 30000.0))
        for r0, c0, flux in peaks:
            expected += flux * peak_profile(grid, grid, row=r0, col=c0, sigma_row=1.2, sigma_col=1.2)
            truth.append((r0, c0, flux))
    frame = rng.poisson(expected).astype(np.float32)
    truth = pd.DataFrame(truth, columns=["row", "col", "intensity"]).assign(frame=0)
    found = find_peaks(frame)
    table = locate(frame, found.table, method="gauss", labels=found.labels, regions=found.regions)
    m = match_peaks(table, truth)
    assert len(m) == len(truth)  # every peak found, the pairs' members in regions of their own
    n = len(table)
    res = profile_intensities(frame, table["row"].to_numpy(), table["col"].to_numpy(), ids=np.arange(1, n + 1),
                              sigma_row=table["sigma_row"].to_numpy(), sigma_col=table["sigma_col"].to_numpy(),
                              summed=np.full(n, 20000.0), background=np.full(n, BACKGROUND), labels=found.labels)
    fi, ti = m["found_index"].to_numpy(int), m["truth_index"].to_numpy(int)
    crowded = np.zeros(n, dtype=bool)
    d = np.hypot(truth["row"].to_numpy()[:, None] - truth["row"].to_numpy()[None],
                 truth["col"].to_numpy()[:, None] - truth["col"].to_numpy()[None])
    np.fill_diagonal(d, np.inf)
    crowded[fi] = d.min(axis=1)[ti] < 6
    assert crowded.sum() >= 8
    assert not res["strong"][crowded].any()
    assert np.all(res["eta"][crowded] == 0)  # the reference: no wing
    ratio = (res["intensity"][fi] / truth["intensity"].to_numpy()[ti])[crowded[fi]]
    described = np.isfinite(ratio)  # the others (a poor fit: the neighbour's light) keep the sum, flagged SUMMED
    assert described.mean() >= 0.5
    assert np.all(np.abs(ratio[described] - 1) < 0.06)


def test_median_of_the_reference_shape_is_numpys():
    """The reference shape's median is NumPy's, to the last bit and the sign of zero, for odd and even counts,
    ties, zeros of both signs and NaN."""
    from braggflow.integrate.profile import _median

    rng = np.random.default_rng(4)
    cases = [np.array([-0.0]), np.array([-0.0, -0.0]), np.array([0.0, -0.0, 1.0]), np.array([1.0, np.nan, 2.0]),
             np.array([0.3, 0.3, 0.3, 0.3])]
    cases += [rng.choice([0.0, -0.0, 0.25, 0.5], size=n) for n in range(1, 9)]
    cases += [rng.normal(size=n) * 10.0 ** rng.uniform(-8, 8) for n in range(1, 80)]
    for values in cases:
        expected = np.median(values)
        got = _median(values)
        assert (np.isnan(expected) and np.isnan(got)) or (got == expected and np.signbit(got) == np.signbit(expected))
    assert _median(np.array([3.0, 1.0, 2.0])) == 2.0 and _median(np.array([4.0, 1.0, 2.0, 3.0])) == 2.5
