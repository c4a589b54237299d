"""Simulated detector artefacts (zingers, hot pixels, powder ring) and their truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from braggflow.errors import BraggflowError
from braggflow.simulate.artefacts import ArtefactSeries, add_artefacts, add_hot_pixels, add_ring, add_zingers
from braggflow.simulate.frames import simulate_series

N_FRAMES = 8


@pytest.fixture(scope="module")
def base():
    return simulate_series(N_FRAMES, shape=(256, 256), n_peaks=10, seed=1, n_hot=0, n_dead=0)


@pytest.fixture(scope="module")
def series(base):
    return add_artefacts(base, zingers=50, hot=20, ring=True, seed=2)


def _diff(series, base):
    return series.frames.astype(np.int64) - base.frames.astype(np.int64)


def test_input_series_is_not_changed(base, series):
    again = simulate_series(N_FRAMES, shape=(256, 256), n_peaks=10, seed=1, n_hot=0, n_dead=0)
    assert np.array_equal(base.frames, again.frames)
    assert isinstance(series, ArtefactSeries) and series.truth.equals(base.truth)
    assert (series.frames[:, series.mask] == 0).all()


def test_zinger_events_are_small_connected_and_strong(series):
    z = series.zingers
    assert (z.groupby("frame")["event"].nunique() == 50).all() and set(z["frame"]) == set(range(N_FRAMES))
    sizes = z.groupby("event").size()
    assert sizes.between(1, 4).all() and set(sizes) == {1, 2, 3, 4}
    assert (z.groupby("event")["frame"].nunique() == 1).all()
    for _, ev in z.groupby("event"):
        img = np.zeros((8, 8), dtype=bool)
        img[ev["row"] - ev["row"].min() + 2, ev["col"] - ev["col"].min() + 2] = True
        assert ndimage.label(img)[1] == 1  # 4-connected
    assert z["strength"].between(5, 100).all() and z["strength"].max() > 50
    noise = np.sqrt(series.background[z["row"], z["col"]])
    assert np.allclose(z["excess"] / noise, z["strength"])
    assert not series.mask[z["row"], z["col"]].any() and not series.ring_map[z["row"], z["col"]].any()
    assert not z.duplicated(["frame", "row", "col"]).any()


def test_zingers_differ_between_frames(series):
    z = series.zingers
    places = [set(zip(g["row"], g["col"])) for _, g in z.groupby("frame")]
    for i in range(len(places)):
        for j in range(i + 1, len(places)):
            assert len(places[i] & places[j]) <= 2


def test_zinger_excess_is_in_the_frames(base):
    s = add_zingers(base, 30, seed=5)
    d = _diff(s, base)
    z = s.zingers
    assert np.array_equal(d[z["frame"], z["row"], z["col"]], z["excess"])
    d[z["frame"], z["row"], z["col"]] = 0
    assert not d.any()


def test_hot_pixels_are_fixed_and_high(series, base):
    hot = series.hot_pixels
    assert len(hot) == 20 and not hot.duplicated(["row", "col"]).any()
    assert set(hot["kind"]) == {"saturated", "moderate", "flickering"}
    assert not series.mask[hot["row"], hot["col"]].any() and not series.ring_map[hot["row"], hot["col"]].any()
    values = series.frames[:, hot["row"], hot["col"]].T.astype(np.float64)  # (K, N)
    bg = series.background[hot["row"], hot["col"]].astype(np.float64)[:, None]
    noise = np.sqrt(bg)
    lit = series.hot_lit
    assert lit.shape == (20, N_FRAMES) and np.array_equal(lit.sum(axis=1), hot["lit_frames"])
    sat = (hot["kind"] == "saturated").to_numpy()
    assert (values[sat] == np.iinfo(np.uint32).max).all() and lit[sat].all()
    moderate = (hot["kind"] == "moderate").to_numpy()
    assert lit[moderate].all() and (values[moderate] > bg[moderate] + 5 * noise[moderate]).all()
    flicker = (hot["kind"] == "flickering").to_numpy()
    n_lit = lit[flicker].sum(axis=1)
    assert ((n_lit > N_FRAMES // 2) & (n_lit < N_FRAMES)).all()
    assert (values[flicker][lit[flicker]] > (bg + 5 * noise)[flicker].repeat(N_FRAMES, 1)[lit[flicker]]).all()
    # unlit frames of a flickering pixel read what the series read there (plus any ring or zinger: none there)
    off = ~lit[flicker]
    assert np.array_equal(values[flicker][off], base.frames[:, hot["row"], hot["col"]].T[flicker][off])
    # one set of coordinates for the whole series, each pixel above background in every frame where it is lit
    assert (values[lit] > (bg + 5 * noise).repeat(N_FRAMES, 1)[lit]).all()


def test_ring_lights_the_same_pixels_in_every_frame(series, base):
    ring = series.ring_map
    assert ring.shape == (256, 256) and ring.sum() > 500 and not (ring & series.mask).any()
    d = _diff(series, base)
    z = series.zingers
    d[z["frame"], z["row"], z["col"]] = 0
    d[:, series.hot_pixels["row"], series.hot_pixels["col"]] = 0
    for f in range(N_FRAMES):
        assert np.array_equal(d[f] != 0, ring)
    # well above background, Poisson: mean added ~ intensity, variance ~ mean
    added = d[:, ring].astype(np.float64)
    mean = series.ring["intensity"]
    assert mean > 5 * np.sqrt(series.background.mean())
    assert abs(added.mean() / mean - 1) < 0.05
    # ring pixels lie within width / 2 of the circle
    r, c = np.nonzero(ring)
    (cr, cc), radius, width = series.ring["centre"], series.ring["radius"], series.ring["width"]
    assert np.all(np.abs(np.hypot(r - cr, c - cc) - radius) <= width / 2)


def test_composing_keeps_earlier_truth(base):
    s = add_hot_pixels(base, 4, seed=1)
    s = add_zingers(s, 5, seed=2)
    s = add_zingers(s, 5, seed=3)
    assert len(s.hot_pixels) == 4 and s.hot_lit.shape == (4, N_FRAMES)
    assert s.zingers["event"].nunique() == 2 * 5 * N_FRAMES
    assert not s.ring_map.any() and s.ring == {}
    s2 = add_hot_pixels(s, 3, seed=4)
    assert len(s2.hot_pixels) == 7 and not s2.hot_pixels.duplicated(["row", "col"]).any()
    assert add_artefacts(base, zingers=0, hot=0, ring=False).zingers.empty


def test_same_seed_same_artefacts(base):
    a, b = add_artefacts(base, seed=9), add_artefacts(base, seed=9)
    assert np.array_equal(a.frames, b.frames) and a.zingers.equals(b.zingers)


@pytest.mark.parametrize("call, words", [
    (lambda s: add_zingers(s, -1), ["n"]),
    (lambda s: add_zingers(s, 5, strength=(0.5, 10)), ["strength"]),
    (lambda s: add_zingers(s, 5, max_size=12), ["max_size"]),
    (lambda s: add_hot_pixels(s, 10**6), ["n", "free pixels"]),
    (lambda s: add_hot_pixels(s, 3, saturation=-5), ["saturation"]),
    (lambda s: add_ring(s, width=0), ["width"]),
    (lambda s: add_ring(s, radius=2, width=3), ["radius"]),
    (lambda s: add_ring(s, intensity=np.nan), ["intensity"]),
    (lambda s: add_ring(s, centre=(5000, 5000), radius=10), ["ring", "misses"]),
    (lambda s: add_ring(add_ring(s)), ["already has a powder ring"]),
    (lambda s: add_artefacts(s, hot=-2), ["hot"]),
    (lambda s: add_zingers(s.frames), ["SimulatedSeries"]),
])
def test_bad_values_name_the_parameter(base, call, words):
    with pytest.raises(BraggflowError) as err:
        call(base)
    assert all(w in str(err.value) for w in words), str(err.value)
