"""The patch simulator: ground truth, profiles, noise, masks, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from braggflow.errors import BraggflowError
from braggflow.locate import patch_background
from braggflow.profiles.render import peak_profile
from braggflow.simulate.patches import KINDS, simulate_patches


def test_noiseless_centroid_and_sum_are_the_truth():
    # sigma >= 0.8 px: the centroid of pixel-integrated counts is unbiased up to exp(-2 pi^2 sigma^2) (pixel locking)
    ps = simulate_patches(200, size=31, kind="isotropic", seed=1, sigma=(0.8, 2.0), background=(1.0, 5.0), noise=False)
    signal = ps.data.astype(float) - ps.params["background"].to_numpy()[:, None, None]
    total = signal.sum(axis=(1, 2))
    assert np.all(total <= ps.params["intensity"] * (1 + 1e-4))  # Lorentzian tails leave the patch
    idx = np.arange(31)
    gauss = ps.params["eta"].to_numpy() == 0
    np.testing.assert_allclose(total[gauss], ps.params["intensity"][gauss], rtol=1e-4)
    row = (signal.sum(axis=2) * idx).sum(axis=1) / total
    col = (signal.sum(axis=1) * idx).sum(axis=1) / total
    np.testing.assert_allclose(row[gauss], ps.row[gauss], atol=1e-3)
    np.testing.assert_allclose(col[gauss], ps.col[gauss], atol=1e-3)
    # the truth is within +-0.5 px of the centre pixel
    assert np.all(np.abs(ps.row - 15) <= 0.5) and np.all(np.abs(ps.col - 15) <= 0.5)


def test_mean_of_noisy_patches_is_the_expectation():
    kw = dict(size=11, kind="isotropic", seed=3, intensity=4000.0, background=20.0, sigma=1.3, eta=0.0)
    noisy = simulate_patches(2000, **kw)
    clean = simulate_patches(2000, noise=False, **kw)
    np.testing.assert_allclose(noisy.row, clean.row)  # same truth for the same seed
    mean_resid = (noisy.data - clean.data).mean(axis=0)
    assert np.abs(mean_resid).max() < 5 * np.sqrt(clean.data.max() / 2000)


@pytest.mark.parametrize("kind", ["isotropic", "elongated"])
def test_profiles_match_peak_profile(kind):
    ps = simulate_patches(6, kind=kind, seed=4, noise=False, background=(1.0, 1.0))
    p = ps.params
    for i in range(len(ps)):
        ref = peak_profile(np.arange(11), np.arange(11), row=ps.row[i], col=ps.col[i], sigma_row=p.sigma_row[i],
                           sigma_col=p.sigma_col[i], angle=p.angle[i], eta=p.eta[i], supersample=25)
        got = (ps.data[i] - 1.0) / p.intensity[i]
        np.testing.assert_allclose(got, ref, atol=3e-4)


def test_poisson_noise_through_gain():
    gain = 4.0
    ps = simulate_patches(400, kind="isotropic", seed=5, intensity=500.0, background=50.0, gain=gain)
    corner = ps.data[:, 0, 0].astype(float)  # far from the peak: background only
    np.testing.assert_allclose(np.mod(corner, gain), 0.0)  # gain x integer photons
    assert corner.var() / corner.mean() == pytest.approx(gain, rel=0.2)
    rn = simulate_patches(400, kind="isotropic", seed=5, intensity=500.0, background=50.0, gain=gain, read_noise=10.0)
    assert rn.data[:, 0, 0].var() == pytest.approx(gain * 50 + 100, rel=0.2)


def test_reproducible_with_seed():
    a = simulate_patches(50, kind="mixed", seed=11)
    b = simulate_patches(50, kind="mixed", seed=11)
    c = simulate_patches(50, kind="mixed", seed=12)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.params.equals(b.params)
    assert not np.array_equal(a.data, c.data)


def test_edge_kind_masks_beyond_a_straight_edge():
    ps = simulate_patches(200, kind="edge", seed=6)
    assert ps.mask.any(axis=(1, 2)).all()
    assert not ps.mask[:, 5, 5].any()  # the centre pixel is on the detector
    for m in ps.mask:
        rows_full = m.all(axis=1)
        cols_full = m.all(axis=0)
        # every masked pixel lies in fully masked rows or fully masked columns at one side
        assert (m == rows_full[:, None]).all() or (m == cols_full[None, :]).all()
    bg = patch_background(ps.data, ps.mask)
    filled = np.where(ps.mask, ps.data, np.nan)
    np.testing.assert_allclose(np.nanmax(filled, axis=(1, 2)), bg, rtol=1e-6)
    assert np.all(np.abs(ps.row - 5) <= 1) and np.all(np.abs(ps.col - 5) <= 1)


def test_edge_distance_sets_where_the_edge_cuts():
    big = simulate_patches(300, size=17, kind="edge", seed=6, edge_distance=(2, 5))
    # the first masked row/column is 2..5 px from the centre pixel (8, 8): the central 11 x 11 is always cut
    assert big.mask[:, 3:14, 3:14].any(axis=(1, 2)).all()
    depth = np.maximum(big.mask.all(axis=2).sum(axis=1), big.mask.all(axis=1).sum(axis=1))
    assert set(np.unique(17 - 8 - depth)) == {2, 3, 4, 5}
    with pytest.raises(BraggflowError, match="edge_distance"):
        simulate_patches(2, kind="edge", edge_distance=(2, 6))


def test_patch_background_border_median_and_fallbacks():
    rng = np.random.default_rng(3)
    data = rng.poisson(20.0, (3, 7, 7)).astype(np.float32)
    data[:, 3, 3] = 1000.0  # a peak
    border = np.ones((7, 7), bool)
    border[1:-1, 1:-1] = False
    bg = patch_background(data)
    np.testing.assert_allclose(bg, [np.median(d[border]) for d in data])
    assert bg.dtype == np.float64
    mask = np.zeros(data.shape, bool)
    mask[0, :, :4] = True  # half the border masked: median of the rest
    mask[1] = border  # no usable border pixel: lower quartile of the usable pixels, not pulled up by the peak
    mask[2] = True  # nothing usable
    data[0, 0, 6] = np.nan  # non-finite pixels are unusable too
    bg = patch_background(data, mask)
    usable = border & ~mask[0] & np.isfinite(data[0])
    assert usable.sum() == 10
    np.testing.assert_allclose(bg[0], np.median(data[0][usable]))
    inner = np.sort(data[1][~border])
    assert bg[1] == inner[len(inner) // 4] and bg[1] < 100
    assert bg[2] == 0.0


def test_masked_kind_and_mixed():
    ps = simulate_patches(300, kind="masked", seed=7, mask_fraction=(0.05, 0.1))
    frac = ps.mask.mean()
    assert 0.05 <= frac <= 0.1
    mixed = simulate_patches(600, kind="mixed", seed=8)
    assert set(mixed.params["kind"].unique()) == set(KINDS)
    assert mixed.data.dtype == np.float32 and mixed.data.shape == (600, 11, 11)
    el = mixed.params[mixed.params["kind"] == "elongated"]
    ratio = el.sigma_row / el.sigma_col
    assert ratio.max() > 2.5 and ratio.max() <= 4.0 + 1e-9
    br = mixed.params[mixed.params["kind"] == "broad"]
    assert br.sigma_row.between(2.0, 4.0).all()
    assert np.isfinite(mixed.params[["crlb_row", "crlb_col", "snr"]].to_numpy()).all()


def test_neighbour_truth_is_nearest_the_centre():
    ps = simulate_patches(300, kind="neighbour", seed=9, noise=False, background=(1.0, 1.0))
    # the brightest pixel beyond 1.5 px from the truth belongs to the neighbour: the truth is nearer the centre
    rr, cc = np.indices((11, 11))
    d_truth = np.hypot(ps.row - 5, ps.col - 5)
    assert d_truth.max() <= np.sqrt(2) + 1e-9
    far = np.hypot(rr[None] - ps.row[:, None, None], cc[None] - ps.col[:, None, None]) > 2.5
    assert (np.where(far, ps.data, 0) > 1.5).any(axis=(1, 2)).mean() > 0.5  # neighbours are visible


def test_neighbour_params_describe_the_second_peak():
    ps = simulate_patches(50, kind="neighbour", seed=4, noise=False, pvoigt_fraction=0.0, slope=0.0)
    p = ps.params
    d = np.hypot(p["neighbour_row"] - ps.row, p["neighbour_col"] - ps.col)
    assert np.all((d >= 2.0 - 1e-9) & (d <= 6.0 + 1e-9))
    # the truth is the peak nearer the centre pixel
    assert np.all(np.hypot(ps.row - 5, ps.col - 5) <= np.hypot(p["neighbour_row"] - 5, p["neighbour_col"] - 5))
    idx = np.arange(11)
    for i in range(len(ps)):
        model = p["background"][i] + sum(
            inten * peak_profile(idx, idx, row=r, col=c, sigma_row=s, sigma_col=s)
            for inten, r, c, s in ((p["intensity"][i], ps.row[i], ps.col[i], p["sigma_row"][i]),
                                   (p["neighbour_intensity"][i], p["neighbour_row"][i], p["neighbour_col"][i],
                                    p["neighbour_sigma"][i])))
        np.testing.assert_allclose(ps.data[i], model, rtol=1e-4, atol=1e-3)
    other = simulate_patches(20, kind="isotropic", seed=4).params
    assert other[["neighbour_row", "neighbour_col", "neighbour_intensity", "neighbour_sigma"]].isna().all().all()


def test_saturation_and_slope():
    ps = simulate_patches(100, kind="isotropic", seed=10, intensity=1e5, sigma=0.6, saturation=3000.0)
    assert ps.data.max() <= 3000.0
    assert ps.params["saturated"].any()
    flat = simulate_patches(100, kind="isotropic", seed=10, noise=False, intensity=1.0)
    sloped = simulate_patches(100, kind="isotropic", seed=10, noise=False, intensity=1.0, slope=0.05)
    assert np.ptp(flat.data[:, 0, :], axis=1).max() < 1e-3 * flat.params.background.max()
    assert (np.ptp(sloped.data[:, 0, :] / sloped.params.background.to_numpy()[:, None], axis=1) > 0.05).any()


@pytest.mark.parametrize("bad", [dict(kind="blob"), dict(size=10), dict(intensity=(10, 1)), dict(eta=(0, 2))])
def test_invalid_arguments(bad):
    with pytest.raises(BraggflowError):
        simulate_patches(5, **bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16, np.int64, bool])
@pytest.mark.parametrize("half", [0, 2, 5, 40])
def test_cut_windows_equals_slices_of_the_padded_frame(dtype, half):
    """Windows inside, across the edges and wholly outside the frame: the slices of the frame padded with ``fill``."""
    from braggflow.windows import cut_windows

    rng = np.random.default_rng(half)
    frame = (rng.random((50, 60)) * 100).astype(dtype)
    rows, cols = rng.integers(-50, 100, 400), rng.integers(-50, 110, 400)
    fill = dtype(1) if dtype is not bool else True
    pad = half + 60
    padded = np.pad(frame, pad, constant_values=fill)
    side = 2 * half + 1
    expected = np.stack([padded[r + pad - half:r + pad - half + side, c + pad - half:c + pad - half + side]
                         for r, c in zip(rows, cols)])
    for array in (frame, frame.astype(frame.dtype.newbyteorder()), np.asfortranarray(frame)):
        out = cut_windows(array, rows, cols, half, fill)
        assert out.dtype == array.dtype and out.shape == (400, side, side)
        np.testing.assert_array_equal(out, expected)
