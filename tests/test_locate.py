"""Localization: patches, centre of mass, fits, the locate stage."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError
from braggflow.locate import (
    centroid_patches,
    extract_patches,
    fit_gaussian_patches,
    fit_pvoigt_patches,
    locate,
)
from braggflow.profiles.render import peak_profile
from braggflow.schema import Flag, empty_peak_table, new_peak_table
from braggflow.simulate.patches import simulate_patches

MEDIAN_RADIAL_PER_SIGMA = 1.1774  # median radial error / per-axis sigma, isotropic 2D normal


def _score(res, ps):
    ok = ~res.failed
    radial = np.hypot(res.row - ps.row, res.col - ps.col)[ok]
    ref = MEDIAN_RADIAL_PER_SIGMA * np.median(np.hypot(ps.params.crlb_row, ps.params.crlb_col)[ok] / np.sqrt(2))
    pulls = np.r_[(res.row - ps.row)[ok] / res.row_err[ok], (res.col - ps.col)[ok] / res.col_err[ok]]
    return np.median(radial) / ref, np.std(pulls), ok.mean()


@pytest.fixture(scope="module")
def gaussian_patches():
    # clean isolated Gaussian peaks at fixed brightness, so the CRLB reference is sharp
    return simulate_patches(250, kind="isotropic", seed=21, intensity=3000.0, background=10.0, sigma=1.2,
                            pvoigt_fraction=0.0)


def test_gaussian_fit_reaches_the_crlb(gaussian_patches):
    ps = gaussian_patches
    ratio, pull, ok = _score(fit_gaussian_patches(ps.data, ps.mask), ps)
    assert ok == 1.0
    assert 0.85 < ratio < 1.3
    assert 0.85 < pull < 1.15


def test_pvoigt_fit_on_lorentzian_peaks():
    ps = simulate_patches(150, kind="isotropic", seed=22, intensity=5000.0, background=10.0, sigma=1.0, eta=(0.8, 0.8),
                          pvoigt_fraction=1.0)
    ratio, pull, ok = _score(fit_pvoigt_patches(ps.data, ps.mask), ps)
    assert ok > 0.98
    assert ratio < 1.3
    assert 0.85 < pull < 1.15
    res = fit_pvoigt_patches(ps.data[:40], ps.mask[:40])
    assert np.median(res.sigma_row) == pytest.approx(1.0, rel=0.1)


def test_centroid_recovers_centres_with_honest_errors(gaussian_patches):
    ps = gaussian_patches
    res = centroid_patches(ps.data, ps.mask)
    ratio, pull, ok = _score(res, ps)
    assert ok == 1.0
    assert ratio < 2.0  # centre of mass is less precise than the fit, but not by much on clean peaks
    assert 0.7 < pull < 1.4
    assert np.median(res.sigma_row) == pytest.approx(1.2, rel=0.15)


def test_fits_handle_masked_and_edge_patches():
    ps = simulate_patches(60, kind="edge", seed=23, intensity=(2000, 20000), background=(1, 20))
    ratio, pull, ok = _score(fit_gaussian_patches(ps.data, ps.mask), ps)
    assert ok > 0.95 and ratio < 1.4 and 0.7 < pull < 1.4


def test_fit_failure_gives_nan_not_an_exception():
    data = np.zeros((3, 11, 11), np.float32)
    data[1] = 5.0  # flat: no peak
    data[2, 5, 5] = 100.0
    mask = np.zeros(data.shape, bool)
    mask[2] = True  # nothing usable
    for fit in (fit_gaussian_patches, fit_pvoigt_patches, centroid_patches):
        res = fit(data, mask)
        assert res.failed[0] and res.failed[2]
        assert np.isnan(res.row[0]) and np.isnan(res.col[2])


def test_extract_patches_origin_edge_and_mask():
    frame = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    mask = np.zeros(frame.shape, bool)
    mask[20, 31] = True
    table = new_peak_table(3, row=[20.0, 0.4, 39.0], col=[30.2, 2.0, 49.0])
    p = extract_patches(frame, table, size=5, mask=mask)
    np.testing.assert_array_equal(p.origin, [[18, 28], [-2, 0], [37, 47]])
    np.testing.assert_array_equal(p.data[0][~p.mask[0]], frame[18:23, 28:33][~p.mask[0]])
    assert p.mask[0, 2, 3] and p.mask[0].sum() == 1
    assert p.flags[0] == Flag.MASKED_NEIGHBOUR
    assert p.flags[1] & Flag.EDGE and p.flags[2] & Flag.EDGE
    assert p.mask[1, :2].all() and not p.mask[1, 2:].any()  # two rows above the detector
    assert p.mask[2, 3:].all() and p.mask[2, :, 3:].all()
    assert np.isfinite(p.data).all()
    np.testing.assert_allclose(p.data[2][p.mask[2]], p.background[2])
    with pytest.raises(BraggflowError, match="size"):
        extract_patches(frame, table, size=4)


def test_extract_patches_of_an_empty_table():
    frame = np.ones((30, 30), dtype=np.float32)
    for labels in (None, np.zeros(frame.shape, dtype=np.int32)):
        p = extract_patches(frame, new_peak_table(0), size=7, labels=labels)
        assert len(p) == 0 and p.data.shape == (0, 7, 7) and p.mask.shape == (0, 7, 7)
        assert p.origin.shape == (0, 2) and p.flags.shape == (0,) and p.background.shape == (0,)


def _two_peak_frame(rng, separation=4.0):
    rows, cols = np.arange(32), np.arange(32)
    truth = [(15.3, 14.8), (15.6, 14.8 + separation)]
    frame = np.full((32, 32), 5.0)
    for r, c in truth:
        frame += 4000 * peak_profile(rows, cols, row=r, col=c, sigma_row=1.0, sigma_col=1.0)
    return rng.poisson(frame).astype(np.float32), truth


def test_overlapping_peak_removed_with_labels(rng):
    frame, truth = _two_peak_frame(rng)
    labels = np.zeros(frame.shape, np.int32)
    labels[12:19, 12:17] = 1
    labels[12:19, 17:23] = 2
    table = new_peak_table(2, row=[15, 16], col=[15, 19])
    p = extract_patches(frame, table, size=11, labels=labels)
    assert np.all(p.flags & Flag.OVERLAPPING)
    np.testing.assert_array_equal(p.mask[0], (labels[10:21, 10:21] == 2))
    out = locate(frame, table, method="gauss", labels=labels)
    assert np.hypot(out.row[0] - truth[0][0], out.col[0] - truth[0][1]) < 0.15


def test_overlapping_peak_removed_without_labels(rng):
    frame, truth = _two_peak_frame(rng, separation=5.0)
    table = new_peak_table(1, row=[15], col=[15])
    p = extract_patches(frame, table, size=11)
    assert p.flags[0] & Flag.OVERLAPPING
    assert p.mask[0, 5, 10] and not p.mask[0, 5, 5]  # the neighbour's maximum is removed, ours kept
    isolated = extract_patches(rng.poisson(np.full((32, 32), 5.0)).astype(np.float32), table, size=11)
    assert isolated.flags[0] == 0  # noise alone is not a peak


def _peaks_frame(rng, shape, truth, *, intensity, background, sigma_row, sigma_col):
    """A Poisson frame (photons) with peaks of one shape at the (row, col) of ``truth``."""
    expected = np.full(shape, float(background))
    for r, c in truth:
        expected += intensity * peak_profile(np.arange(shape[0]), np.arange(shape[1]), row=r, col=c,
                                             sigma_row=sigma_row, sigma_col=sigma_col)
    return rng.poisson(expected).astype(np.float32)


def test_locate_on_a_frame_in_frame_coordinates(rng):
    truth = np.array([[10.3, 12.6], [30.8, 40.1], [50.2, 70.7], [1.2, 40.4]])
    frame = _peaks_frame(rng, (64, 80), truth, intensity=8000, background=8.0, sigma_row=1.1, sigma_col=1.4)
    table = new_peak_table(4, frame=3, row=np.rint(truth[:, 0]), col=np.rint(truth[:, 1]), peak_value=1.0)
    table["flags"] = np.uint32(Flag.LOW_SNR)
    for method in ("com", "gauss", "pvoigt"):
        out = locate(frame, table, method=method, saturation=1e9)
        assert len(out) == 4 and list(out.method.astype(str)) == [method] * 4
        interior = slice(0, 3)
        err = np.hypot(out.row - truth[:, 0], out.col - truth[:, 1])[interior]
        assert np.all(err < 0.1), (method, err)
        assert np.all(out["flags"] & int(Flag.LOW_SNR))  # existing flags are kept
        assert out["flags"][3] & Flag.EDGE and not out["flags"][0] & Flag.EDGE
        assert (out.frame == 3).all() and (out.peak_value == 1.0).all()
        if method != "com":
            np.testing.assert_allclose(out.sigma_row[interior], 1.1, rtol=0.1)
            np.testing.assert_allclose(out.sigma_col[interior], 1.4, rtol=0.1)
    assert table.row.tolist() == np.rint(truth[:, 0]).tolist()  # the input is not modified


def test_locate_flags_failures_and_saturation():
    frame = np.zeros((30, 30), np.float32)
    frame[20:23, 20:23] = 500.0
    table = new_peak_table(2, row=[5, 21], col=[5, 21])
    out = locate(frame, table, method="gauss", saturation=400.0)
    assert out["flags"][0] & Flag.FIT_FAILED and np.isnan(out.row[0])
    assert out["flags"][1] & Flag.SATURATED


def test_unknown_method_and_empty_table():
    frame = np.zeros((10, 10), np.float32)
    with pytest.raises(BraggflowError, match="method.*'com'.*'nn'"):
        locate(frame, new_peak_table(1, row=5, col=5), method="bogus")
    out = locate(frame, empty_peak_table(), method="gauss")
    assert len(out) == 0
    assert out.dtypes["row"] == np.float64 and out.dtypes["flags"] == np.uint32
    assert isinstance(out.dtypes["method"], pd.CategoricalDtype)


def _fake_inference(monkeypatch, row: float, col: float, row_err: float, col_err: float) -> dict:
    """Replace the network inference by one that returns fixed patch coordinates; returns its last call's arguments."""
    calls = {}

    def predict_patches(data, *, mask=None, model=None, device="cpu", batch_size=1024, gain=1.0, backend="auto"):
        calls.update(shape=data.shape, model=model, device=device, batch_size=batch_size, gain=gain, backend=backend)
        n = len(data)
        return {"row": np.full(n, row), "col": np.full(n, col), "row_err": np.full(n, row_err),
                "col_err": np.full(n, col_err)}

    fake = types.ModuleType("braggflow.nn.inference")
    fake.predict_patches = predict_patches
    monkeypatch.setitem(sys.modules, "braggflow.nn.inference", fake)
    return calls


def test_nn_branch_maps_patch_to_frame_coordinates(monkeypatch):
    calls = _fake_inference(monkeypatch, 5.25, 4.5, 0.1, 0.2)
    frame = np.ones((40, 40), np.float32)
    out = locate(frame, new_peak_table(2, row=[10, 30], col=[12, 20]), method="nn", model="m", batch_size=7,
                 gain=2.0)
    np.testing.assert_allclose(out.row, [10.25, 30.25])
    np.testing.assert_allclose(out.col, [11.5, 19.5])
    np.testing.assert_allclose(out.col_err, 0.2)
    assert calls == dict(shape=(2, 11, 11), model="m", device="cpu", batch_size=7, gain=2.0, backend="auto")


def test_locate_nn_errors_follow_the_gain(rng):
    """The gain reaches the network through locate: the same photons recorded at gain 4 give the
    same centres and errors as at gain 1, and the same counts read at gain 4 (4x fewer photons)
    give errors about sqrt(4) = 2 times larger."""
    pytest.importorskip("torch")
    truth = np.array([[10.3, 12.6], [24.8, 30.1], [36.2, 14.7], [30.4, 38.4]])
    photons = _peaks_frame(rng, (48, 48), truth, intensity=3000, background=4.0, sigma_row=1.2, sigma_col=1.2)
    table = new_peak_table(len(truth), row=np.rint(truth[:, 0]), col=np.rint(truth[:, 1]))
    one = locate(photons, table, method="nn", gain=1.0)
    four = locate(4 * photons, table, method="nn", gain=4.0)
    np.testing.assert_allclose(four.row, one.row, atol=1e-4)
    np.testing.assert_allclose(four.row_err, one.row_err, rtol=1e-3)
    np.testing.assert_allclose(four.col_err, one.col_err, rtol=1e-3)
    fewer = locate(photons, table, method="nn", gain=4.0)
    ratio = np.concatenate([fewer.row_err / one.row_err, fewer.col_err / one.col_err])
    assert np.all((ratio > 1.6) & (ratio < 2.5)), ratio
    assert np.all(np.hypot(one.row - truth[:, 0], one.col - truth[:, 1]) < 0.1)


def test_remove_other_peaks_on_simulated_neighbours():
    from braggflow.locate import remove_other_peaks

    kw = dict(intensity=10000.0, background=10.0, sigma=0.8, neighbour_distance=5.0, neighbour_ratio=(0.3, 1.0))
    ps = simulate_patches(120, kind="neighbour", seed=31, **kw)
    data, mask, overlapping = remove_other_peaks(ps.data, ps.mask)
    assert overlapping.mean() > 0.9
    rr, cc = np.indices((11, 11))
    near_truth = np.hypot(rr - ps.row[:, None, None], cc - ps.col[:, None, None]) < 1.5
    assert not (mask & near_truth).any()  # our own peak is never removed
    raw = np.hypot(*(np.subtract(a, b) for a, b in zip(_rc(fit_gaussian_patches(ps.data, ps.mask)), (ps.row, ps.col))))
    clean = np.hypot(*(np.subtract(a, b) for a, b in zip(_rc(fit_gaussian_patches(data, mask)), (ps.row, ps.col))))
    assert np.nanmedian(clean) < 0.5 * np.nanmedian(raw)
    iso = simulate_patches(300, kind="isotropic", seed=32)
    assert remove_other_peaks(iso.data, iso.mask)[2].mean() < 0.02  # isolated peaks are left alone


def _rc(res):
    return res.row, res.col


def test_centroid_completes_masked_pixels_symmetrically():
    ps = simulate_patches(200, kind="edge", seed=33, intensity=(3000, 30000), background=(1, 20))
    res = centroid_patches(ps.data, ps.mask)
    ratio, _, ok = _score(res, ps)
    assert ok == 1.0
    assert ratio < 2.2  # filling the cut-off side with the background instead biases it to ~3x the CRLB
    plain = centroid_patches(ps.data)  # masked pixels just hold the background: no completion
    assert _score(plain, ps)[0] > 1.3 * ratio
    rr, cc = np.indices((11, 11))
    to_edge_r = np.sign([(rr[m] - 5).mean() if m.all(axis=1).any() else 0.0 for m in ps.mask])
    to_edge_c = np.sign([(cc[m] - 5).mean() if m.all(axis=0).any() else 0.0 for m in ps.mask])

    def pull_to_edge(r):
        return np.median(to_edge_r * (r.row - ps.row) + to_edge_c * (r.col - ps.col))

    assert pull_to_edge(plain) < -0.05  # without completion the centroid is pushed away from the edge
    assert abs(pull_to_edge(res)) < 0.4 * abs(pull_to_edge(plain))  # completion removes most of that bias


def test_evaluate_scores_methods():
    from braggflow.locate.evaluate import evaluate_methods

    table = evaluate_methods(kinds=("isotropic",), methods=("com", "gauss"), n=60, seed=3, intensity=(3000, 3000),
                             background=(10, 10), sigma=(1.2, 1.2), pvoigt_fraction=0.0)
    assert list(table.method) == ["com", "gauss"]
    gauss = table.set_index("method").loc["gauss"]
    assert 0.7 < gauss.ratio < 1.4 and 0.7 < gauss.pull_std < 1.3 and gauss.failed == 0


def test_braggnn_is_a_deprecated_name_of_nn(monkeypatch):
    """method="braggnn" runs the default network as method "nn" does, and says that the name is deprecated."""
    from braggflow.locate.options import LocateConfig

    _fake_inference(monkeypatch, 5.0, 5.0, 0.1, 0.1)
    frame = np.ones((40, 40), np.float32)
    with pytest.warns(DeprecationWarning, match="use 'nn'"):
        out = locate(frame, new_peak_table(1, row=[10], col=[12]), method="braggnn")
    assert list(out["method"]) == ["nn"]
    with pytest.warns(DeprecationWarning, match="use 'nn'"):
        assert LocateConfig(method="braggnn").method == "nn"


def test_unknown_hand_over_policies_are_refused():
    frame = np.zeros((10, 10), np.float32)
    with pytest.raises(BraggflowError, match="saturated_peaks must be one of 'fit', 'method', got 'fitt'"):
        locate(frame, new_peak_table(1, row=5, col=5), saturated_peaks="fitt")
    with pytest.raises(BraggflowError, match="extended_peaks must be one of 'region', 'patch'"):
        locate(frame, new_peak_table(1, row=5, col=5), extended_peaks="streak")


def test_central_component_labels_are_each_patchs_own_components():
    """Labels of all patches at once: per patch, the 8-connected components of a 2D labelling of that patch alone
    (no component spans two patches, even where regions touch the patch edges), numbered apart; the kept one
    holds the centre pixel when it is in the region."""
    from scipy import ndimage

    from braggflow.locate.patches import select_central_component

    rng = np.random.default_rng(11)
    region = rng.random((60, 7, 7)) < 0.45
    region[:, -1, :] = region[:, 0, :] = True  # full first and last rows: stacked patches would touch
    keep, labels, keep_label = select_central_component(region)
    seen = set()
    for k in range(len(region)):
        own, count = ndimage.label(region[k], structure=np.ones((3, 3), dtype=bool))
        ids = np.unique(labels[k][region[k]])
        assert ids.size == count and not seen & set(ids.tolist())  # as many components, labels not shared
        seen |= set(ids.tolist())
        for i in ids:  # each label is exactly one of the patch's own components
            assert np.unique(own[labels[k] == i]).size == 1
        if region[k, 3, 3]:
            assert keep_label[k] == labels[k, 3, 3] and np.array_equal(keep[k], labels[k] == labels[k, 3, 3])
    assert np.array_equal(labels > 0, region)


@pytest.mark.parametrize("with_labels", [True, False])
def test_centroid_with_the_patches_background_is_the_same(with_labels):
    """The patches' own background (their masked pixels hold it) given to the centroid: every result column is
    the same as the centroid's own border median; a background of another length is refused."""
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.simulate.frames import simulate_series

    sim = simulate_series(1, n_peaks=80, seed=4, shape=(256, 256))
    frame, mask = correct_frame(sim.frames[0])
    found = find_peaks(frame, mask=mask)
    patches = extract_patches(frame, found.table, mask=mask, labels=found.labels if with_labels else None)
    assert len(patches) > 20 and patches.mask.any()
    own = centroid_patches(patches.data, patches.mask, gain=1.5)
    given = centroid_patches(patches.data, patches.mask, gain=1.5, background=patches.background)
    for name in ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col", "failed", "intensity",
                 "background"):
        np.testing.assert_array_equal(getattr(given, name), getattr(own, name), err_msg=name)
    with pytest.raises(BraggflowError, match="background"):
        centroid_patches(patches.data, patches.mask, background=patches.background[:-1])
