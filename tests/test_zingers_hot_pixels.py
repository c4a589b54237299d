"""Zingers and hot pixels on simulated series with known artefacts; the frames table of a run."""

import numpy as np
import pytest

from braggflow.correct.outliers import hot_pixel_map, outlier_pixels
from braggflow.find import FindConfig, find_peaks
from braggflow.find.zingers import least_ring_ratio
from braggflow.pipeline import measure_series, prepare, run
from braggflow.pipeline.config import Config
from braggflow.simulate.artefacts import add_artefacts
from braggflow.simulate.frames import match_peaks, simulate_series

SHAPE = (1024, 1024)
#: 50 zingers a 2048 x 2048 frame, the same density on a quarter of the area
ZINGERS = 12


@pytest.fixture(scope="module")
def series():
    base = simulate_series(8, shape=SHAPE, n_peaks=25, seed=5, n_hot=0, n_dead=0)
    return base, add_artefacts(base, zingers=ZINGERS, hot=20, ring=False, seed=2)


def _precision_recall(table, truth):
    m = match_peaks(table, truth)
    found = m["found_index"][m["found_index"] >= 0]
    return len(set(found)) / max(len(table), 1), float((m["found_index"] >= 0).mean())


def test_least_ring_ratio_closed_form_for_one_pixel():
    # a spot centred on a pixel: ring = (3x3 share) - (centre share), each a product of 1D normal shares
    from scipy.special import ndtr

    s = 0.7
    centre = (2 * ndtr(0.5 / s) - 1) ** 2
    nine = (2 * ndtr(1.5 / s) - 1) ** 2
    assert least_ring_ratio(1, s) == pytest.approx((nine - centre) / centre, rel=1e-3)
    # more pixels in the event leave less outside it; wider spots leave more
    assert least_ring_ratio(4, 0.7) < least_ring_ratio(2, 0.7) < least_ring_ratio(1, 0.7)
    assert least_ring_ratio(4, 1.0) > least_ring_ratio(4, 0.7)


def test_zingers_are_rejected_without_losing_peaks(series):
    base, art = series
    plain = run(base.frames, mask=base.mask)
    with_artefacts = run(art.frames, mask=art.mask)
    p0, r0 = _precision_recall(plain, base.truth)
    p1, r1 = _precision_recall(with_artefacts, art.truth)
    print(f"no artefacts: precision {p0:.4f} recall {r0:.4f}; zingers and hot pixels: precision {p1:.4f} "
          f"recall {r1:.4f} ({len(with_artefacts)} peaks, {len(plain)} without artefacts)")
    assert p1 >= 0.99
    assert r1 >= r0 - 0.002
    off = FindConfig(zingers=False)
    kept = sum(len(find_peaks(f.astype(np.float32), mask=art.mask, config=off)) for f in art.frames[:2])
    dropped = sum(len(find_peaks(f.astype(np.float32), mask=art.mask)) for f in art.frames[:2])
    assert kept - dropped >= 0.8 * 2 * ZINGERS * 0.5  # the test removes most zinger events the finder sees


def test_hot_pixel_map_holds_every_hot_pixel_and_no_ring_pixel():
    base = simulate_series(10, shape=SHAPE, n_peaks=25, seed=6, n_hot=0, n_dead=0)
    art = add_artefacts(base, zingers=ZINGERS, hot=20, ring=True, seed=3)
    hot = hot_pixel_map(art.frames, art.mask)
    hp = art.hot_pixels
    assert hot[hp["row"], hp["col"]].all(), hp[~hot[hp["row"], hp["col"]]]
    assert not (hot & art.ring_map).any()
    assert hot.sum() <= len(hp) + 2  # nearly nothing else: no Bragg peak, no zinger
    # the same Bragg peaks in every frame are not hot: each has neighbours that share its counts
    assert not hot[np.round(base.truth["row"]).astype(int), np.round(base.truth["col"]).astype(int)].any()


def test_outlier_pixels_single_frame_finds_a_hot_pixel_and_not_a_sharp_spot():
    rng = np.random.default_rng(0)
    f = rng.poisson(20.0, (128, 128)).astype(np.float32)
    f[30, 30] += 400  # a lone pixel
    rr, cc = np.mgrid[:128, :128]
    f += (3000 * np.exp(-((rr - 80.0) ** 2 + (cc - 80.0) ** 2) / (2 * 0.6**2)) / (2 * np.pi * 0.36)).astype(np.float32)
    assert outlier_pixels(f).tolist() == [30 * 128 + 30]


def test_hot_pixels_masked_and_counted_in_the_frames_table(series, tmp_path):
    from braggflow.io.results import read_frames

    _, art = series
    out = tmp_path / "r.h5"
    table = run(art.frames, mask=art.mask, output=out)
    frames = read_frames(out)
    assert frames["frame"].tolist() == list(range(len(art.frames)))
    assert (frames["n_peaks"].to_numpy() == table.groupby("frame").size().reindex(frames["frame"]).to_numpy()).all()
    assert (frames["hot_pixels"] >= 20).all()
    assert frames["zingers"].sum() > 0
    # background and noise: the simulated level (20 counts/px +- 50 %) and its Poisson noise
    assert frames["background"].between(12, 30).all()
    assert frames["noise"].between(np.sqrt(10), np.sqrt(40)).all()
    assert (frames["time"] > 0).all()
    hp = art.hot_pixels
    near = np.hypot(table["row"].to_numpy()[:, None] - hp["row"].to_numpy()[None],
                    table["col"].to_numpy()[:, None] - hp["col"].to_numpy()[None]).min(axis=1)
    assert (near > 1).all()  # no peak on a hot pixel


def test_measure_series_fits_the_noise_of_thresholded_frames():
    rng = np.random.default_rng(4)
    frames = np.round(rng.normal(0.0, 2.5, (6, 512, 512)))
    frames = np.where(frames >= 7, frames, 0).astype(np.uint16)
    config = Config()
    ctx = measure_series(frames, config, prepare(config, shape=(512, 512), dtype=np.uint16))
    assert ctx.threshold_noise.sigma == pytest.approx(2.5, rel=0.08)
    assert ctx.threshold_noise.threshold == 7
    assert not ctx.hot_pixels.any()
    assert len(run(frames)) == 0  # thresholded noise is not reported



def test_a_track_split_by_a_pixel_below_threshold_is_one_zinger():
    # a zinger of the simulated artefacts (a straight track of 4 pixels at 5-10 x the noise on a background of
    # 16 counts) whose second pixel, 35, stays below the detection threshold: two regions above it, one event of
    # four pixels with a dark ring
    from braggflow.find import find_peaks

    frame = np.random.default_rng(11).poisson(16.0, (128, 128)).astype(np.float32)
    frame[60:65, 40:48] = [[23, 13, 14, 22, 10, 12, 12, 22],
                           [17, 17, 12, 9, 15, 15, 10, 20],
                           [12, 15, 47, 35, 40, 54, 19, 16],
                           [9, 13, 19, 24, 22, 17, 16, 15],
                           [12, 15, 15, 11, 16, 13, 14, 19]]
    found = find_peaks(frame)
    near = np.hypot(found.table["row"] - 62, found.table["col"] - 43.5) < 3
    assert not near.any()
    assert found.zingers >= 1
