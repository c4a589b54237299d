"""Dense stills on a Pilatus 6M: geometry, gap mask, spots and background."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from braggflow.errors import BraggflowError
from braggflow.simulate.dense import (
    PILATUS6M_SHAPE,
    pilatus6m_gap_mask,
    simulate_dense_frame,
    simulate_dense_series,
)


@pytest.fixture(scope="module")
def dense():
    return simulate_dense_frame(seed=3)


def test_pilatus6m_geometry_and_gap_mask():
    mask = pilatus6m_gap_mask()
    assert PILATUS6M_SHAPE == (2527, 2463) == mask.shape
    # 12 x 5 modules of 195 x 487 px; everything else is gap
    assert mask.sum() == 2527 * 2463 - 12 * 5 * 195 * 487 == 526101
    full_rows = np.flatnonzero(mask.all(axis=1))
    full_cols = np.flatnonzero(mask.all(axis=0))
    assert len(full_rows) == 11 * 17 and len(full_cols) == 4 * 7
    assert list(full_rows[::17]) == [195 + k * (195 + 17) for k in range(11)]
    assert list(full_cols[::7]) == [487 + k * (487 + 7) for k in range(4)]
    assert not mask[:195, :487].any() and not mask[-195:, -487:].any()


def test_gap_mask_matches_pyfai_pilatus6m():
    import pyFAI.detectors

    assert np.array_equal(pilatus6m_gap_mask(), pyFAI.detectors.Pilatus6M().calc_mask().astype(bool))


def test_dense_frame_spots_and_gaps(dense):
    assert dense.frames.shape == (1, 2527, 2463) and dense.frames.dtype == np.uint32
    assert np.array_equal(dense.mask, pilatus6m_gap_mask())
    assert (dense.frames[0][dense.mask] == 0).all()
    t = dense.truth
    assert len(t) == 1000 and set(t["kind"]) == {"gaussian"} and t["peak_id"].is_unique
    assert t["sigma_row"].between(0.7, 1.5).all() and (t["sigma_row"] == t["sigma_col"]).all()
    assert t["intensity"].between(50, 5000).all()
    lo, hi = np.log(50), np.log(5000)
    assert stats.kstest(np.log(t["intensity"]), stats.uniform(lo, hi - lo).cdf).pvalue > 0.01
    assert t["row"].between(-0.5, 2526.5).all() and t["col"].between(-0.5, 2462.5).all()
    ri, ci = np.rint(t["row"]).astype(int).clip(0, 2526), np.rint(t["col"]).astype(int).clip(0, 2462)
    assert np.array_equal(t["masked"].to_numpy(), dense.mask[ri, ci])
    # centres uniform over the detector: the masked fraction is the gap fraction (526101 / 6224001 = 8.5 %)
    assert stats.binomtest(int(t["masked"].sum()), 1000, 526101 / (2527 * 2463)).pvalue > 0.001


def test_background_is_smooth_and_poisson(dense):
    bg = dense.background
    assert bg.min() == pytest.approx(1.0) and bg.max() == pytest.approx(5.0)
    assert np.abs(np.diff(bg, axis=0)).max() < 0.05 and np.abs(np.diff(bg, axis=1)).max() < 0.05
    far = ~dense.mask
    for r, c in np.rint(dense.truth[["row", "col"]].to_numpy()).astype(int):
        far[max(r - 10, 0) : r + 11, max(c - 10, 0) : c + 11] = False
    values = dense.frames[0][far].astype(np.float64)
    expected = bg[far].astype(np.float64)
    # Poisson: mean equals the expected background, and (value - mean)^2 averages to the mean
    assert abs(values.mean() / expected.mean() - 1) < 0.005
    assert abs(((values - expected) ** 2).mean() / expected.mean() - 1) < 0.01


def test_spot_flux_is_in_the_frame(dense):
    # the counts above background in a window around an isolated, unmasked spot are its flux
    t = dense.truth
    frame = dense.frames[0].astype(np.float64) - dense.background
    pos = t[["row", "col"]].to_numpy()
    d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    ok = (d.min(axis=1) > 30) & ~t["masked"].to_numpy()
    ok &= (t["row"].between(20, 2506) & t["col"].between(20, 2442)).to_numpy()
    ratios = []
    for _, p in t[ok].iterrows():
        r, c = int(round(p["row"])), int(round(p["col"]))
        win = np.s_[r - 8 : r + 9, c - 8 : c + 9]
        if dense.mask[win].any():
            continue
        ratios.append(frame[win].sum() / p["intensity"])
    assert len(ratios) > 300 and abs(np.median(ratios) - 1) < 0.02


def test_series_frames_have_their_own_spots():
    s = simulate_dense_series(2, 20, seed=1)
    t0, t1 = (s.truth[s.truth["frame"] == f] for f in (0, 1))
    assert len(t0) == len(t1) == 20 and not np.isin(t0["row"], t1["row"]).any()
    assert s.truth["peak_id"].tolist() == list(range(40))
    assert not np.array_equal(s.frames[0], s.frames[1])


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_frames=0), ["n_frames"]),
    (dict(n_spots=-1), ["n_spots"]),
    (dict(sigma=(1.5, 0.7)), ["sigma"]),
    (dict(flux=(0, 10)), ["flux"]),
    (dict(background=(-1, 5)), ["background"]),
    (dict(background=(1, np.inf)), ["background"]),
])
def test_bad_values_name_the_parameter(kwargs, words):
    with pytest.raises(BraggflowError) as err:
        simulate_dense_series(**kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)
