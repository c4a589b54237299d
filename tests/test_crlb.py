"""The Cramér-Rao bound: closed forms, invariances, and the two profile code paths."""

from __future__ import annotations

import numpy as np
import pytest

from braggflow.errors import BraggflowError
from braggflow.locate import crlb


@pytest.mark.parametrize("sigma", [2.0, 2.5, 3.0])
def test_no_background_large_patch_matches_closed_form(sigma):
    # Mortensen et al. 2010: without background the bound is sqrt(sigma^2 + a^2/12) / sqrt(N)
    n_photons = 10_000.0
    r, c = crlb(intensity=n_photons, background=0.0, sigma_row=sigma, sigma_col=sigma, size=41)
    expected = np.sqrt(sigma**2 + 1 / 12) / np.sqrt(n_photons)
    np.testing.assert_allclose(r, expected, rtol=0.02)
    np.testing.assert_allclose(c, expected, rtol=0.02)


def test_anisotropic_widths_give_per_axis_bounds():
    r, c = crlb(intensity=4e4, background=0.0, sigma_row=2.0, sigma_col=3.0, size=41)
    np.testing.assert_allclose(r, np.sqrt(4 + 1 / 12) / 200, rtol=0.02)
    np.testing.assert_allclose(c, np.sqrt(9 + 1 / 12) / 200, rtol=0.02)


def test_vectorised_over_peaks_and_background_costs_precision():
    bg = np.array([0.0, 10.0, 100.0, 1000.0])
    r, c = crlb(intensity=2000.0, background=bg, sigma_row=1.2, sigma_col=1.2)
    assert r.shape == (4,)
    assert np.all(np.diff(r) > 0)
    np.testing.assert_allclose(r, c, rtol=1e-9)


def test_gain_and_read_noise():
    # the same photons expressed in counts at gain 4 give the same bound
    r1, _ = crlb(intensity=3000.0, background=20.0, sigma_row=1.0, sigma_col=1.0)
    r4, _ = crlb(intensity=12000.0, background=80.0, sigma_row=1.0, sigma_col=1.0, gain=4.0)
    np.testing.assert_allclose(r1, r4, rtol=1e-9)
    rn, _ = crlb(intensity=3000.0, background=20.0, sigma_row=1.0, sigma_col=1.0, read_noise=5.0)
    assert rn[0] > r1[0]


def test_rotated_supersampled_path_agrees_with_closed_form():
    # angle 1e-4 goes through the supersampled code, angle 0 through erf / Cauchy-CDF closed forms
    kw = dict(intensity=[1e3, 5e4], background=[5.0, 50.0], sigma_row=[0.8, 2.0], sigma_col=[1.5, 1.0], eta=[0.0, 0.7],
              row=[5.3, 4.8], col=[4.9, 5.2])
    exact = crlb(angle=0.0, **kw)
    sampled = crlb(angle=1e-4, **kw)
    np.testing.assert_allclose(sampled, exact, rtol=0.01)
    # a quarter turn swaps the axes
    swapped = crlb(angle=np.pi / 2, **{**kw, "sigma_row": kw["sigma_col"], "sigma_col": kw["sigma_row"]})
    np.testing.assert_allclose(swapped, exact, rtol=1e-9)


def test_masked_pixels_raise_the_bound():
    mask = np.zeros((11, 11), bool)
    mask[:, 7:] = True
    free = crlb(intensity=5000.0, background=10.0, sigma_row=1.5, sigma_col=1.5)
    cut = crlb(intensity=5000.0, background=10.0, sigma_row=1.5, sigma_col=1.5, mask=mask)
    assert cut[1][0] > free[1][0] * 1.1  # columns lose the most
    assert cut[0][0] >= free[0][0]


@pytest.mark.parametrize("bad", [dict(intensity=0.0), dict(sigma_row=-1.0), dict(background=-1.0), dict(eta=1.5)])
def test_invalid_input(bad):
    kw = dict(intensity=100.0, background=1.0, sigma_row=1.0, sigma_col=1.0) | bad
    with pytest.raises(BraggflowError):
        crlb(**kw)
