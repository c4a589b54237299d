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


def test_spot_templates_are_pixel_integrated_gaussians():
    from scipy.special import ndtr

    from braggflow.find.spot_shape import WINDOW, spot_templates

    s = 0.7
    templates, squares = spot_templates(s)
    assert np.allclose(squares, templates**2)
    # column 40: the round spot of width min_sigma centred on the window's centre pixel (grid of 9 x 9 centres)
    spot = templates[:, 40].reshape(WINDOW, WINDOW)
    centre = 2 * ndtr(0.5 / s) - 1
    side = ndtr(1.5 / s) - ndtr(0.5 / s)
    assert spot[3, 3] == pytest.approx(centre**2, rel=5e-3)
    assert spot[3, 4] == pytest.approx(centre * side, rel=5e-3)
    assert spot[2, 3] == pytest.approx(spot[3, 4], rel=1e-9)
    assert spot.sum() == pytest.approx(1.0, abs=1e-4)


def _spots_and_chains(seed, n=50, background=20.0):
    """A 400 x 400 frame with n faint round spots and n chain-shaped zingers in cells 40 px apart, and their places."""
    from scipy.special import ndtr

    rng = np.random.default_rng(seed)
    cells = [(40 * i + 20, 40 * j + 20) for i in range(10) for j in range(10)]
    rng.shuffle(cells)
    expected = np.full((400, 400), background)
    edges = np.arange(-10.5, 11.5)
    spots = []
    for r0, c0 in cells[:n]:
        sigma, flux = rng.uniform(0.7, 1.5), np.exp(rng.uniform(np.log(80), np.log(400)))
        dr, dc = rng.uniform(-0.5, 0.5, 2)
        share = np.outer(np.diff(ndtr((edges - dr) / sigma)), np.diff(ndtr((edges - dc) / sigma)))
        expected[r0 - 10 : r0 + 11, c0 - 10 : c0 + 11] += flux * share
        spots.append((r0 + dr, c0 + dc))
    frame = rng.poisson(expected).astype(np.float32)
    # tracks of 3-4 pixels (I, L, S, a line of 3, an L of 3) at 6-12 x the noise, each pixel 0.6-1 x the event's level
    shapes = [[(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 0), (1, 0), (2, 0), (2, 1)], [(0, 1), (0, 2), (1, 0), (1, 1)],
              [(0, 0), (1, 0), (2, 0)], [(0, 0), (0, 1), (1, 1)]]
    chains = []
    for k, (r0, c0) in enumerate(cells[n : 2 * n]):
        pix = np.array(shapes[k % len(shapes)])
        if rng.random() < 0.5:
            pix = pix[:, ::-1]
        level = np.exp(rng.uniform(np.log(6), np.log(12))) * np.sqrt(background)
        frame[r0 + pix[:, 0], c0 + pix[:, 1]] += np.rint(level * rng.uniform(0.6, 1.0, len(pix)))
        chains.append((r0 + pix[:, 0].mean(), c0 + pix[:, 1].mean()))
    return frame, np.array(spots), np.array(chains)


def _with_a_peak(table, places, within=2.0):
    d = np.hypot(table["row"].to_numpy()[None] - places[:, :1], table["col"].to_numpy()[None] - places[:, 1:])
    return int((d <= within).any(axis=1).sum())


def test_shape_test_drops_chain_zingers_and_keeps_faint_spots(monkeypatch):
    from braggflow.find import spot_shape

    spots_found, chains_kept, chains_kept_by_ring = [0, 0], 0, 0
    for seed in range(3):
        frame, spots, chains = _spots_and_chains(seed)
        on = find_peaks(frame).table
        off = find_peaks(frame, config=FindConfig(zingers=False)).table
        with monkeypatch.context() as m:
            m.setattr(spot_shape, "SHAPE_CHI2", None)  # the ring test alone
            ring_only = find_peaks(frame).table
        spots_found[0] += _with_a_peak(on, spots)
        spots_found[1] += _with_a_peak(off, spots)
        chains_kept += _with_a_peak(on, chains)
        chains_kept_by_ring += _with_a_peak(ring_only, chains)
        assert _with_a_peak(off, chains) >= 40  # the finder sees the tracks
    print(f"faint spots found {spots_found[0]} (zinger tests off: {spots_found[1]}); of 150 tracks {chains_kept} leave "
          f"a peak ({chains_kept_by_ring} with the ring test alone)")
    assert spots_found[0] == spots_found[1]  # no faint spot taken for a zinger
    assert chains_kept <= 6
    assert chains_kept <= chains_kept_by_ring / 3


def test_an_l_shaped_track_is_a_zinger_by_its_shape(monkeypatch):
    # a zinger of the simulated artefacts (4 pixels at 6-10 x the noise on 20 counts/px, an L) whose ring alone
    # cannot tell it from a faint spot's
    from braggflow.find import spot_shape

    frame = np.random.default_rng(3).poisson(20.0, (128, 128)).astype(np.float32)
    frame[60:67, 40:46] = [[25, 18, 18, 15, 18, 18],
                           [25, 28, 20, 20, 18, 21],
                           [22, 23, 66, 51, 22, 20],
                           [18, 20, 19, 64, 29, 23],
                           [17, 19, 16, 56, 24, 19],
                           [24, 24, 25, 24, 23, 22],
                           [19, 23, 27, 24, 25, 22]]

    def near(found):
        return bool((np.hypot(found.table["row"] - 63, found.table["col"] - 43) < 3).any())

    found = find_peaks(frame)
    assert not near(found)
    assert found.zingers >= 1
    monkeypatch.setattr(spot_shape, "SHAPE_CHI2", None)
    assert near(find_peaks(frame))  # the ring test alone keeps it


def test_the_shape_test_is_prepared_with_the_types_it_runs_with():
    """prepare_shape_test loads the template search that shape_statistic then calls, and changes no answer."""
    from braggflow.find import spot_shape
    from braggflow.find._kernels import best_spot_fits_until

    spot_shape.prepare_shape_test(0.83)
    signatures = list(best_spot_fits_until.signatures)
    # a one-pixel zinger and a blurred spot on a flat background of 10 counts
    frame = np.full((32, 32), 10.0, dtype=np.float32)
    frame[8, 8] += 400.0
    rr, cc = np.mgrid[0:32, 0:32]
    frame += (400.0 * np.exp(-((rr - 20) ** 2 + (cc - 20) ** 2) / (2 * 1.2**2))).astype(np.float32)
    event_flat = np.array([8 * 32 + 8, 20 * 32 + 20])
    d = spot_shape.shape_statistic((32, 32), frame.ravel().__getitem__, None, np.array([0, 1]), event_flat,
                                   lambda r, c: np.full(np.shape(r), 10.0), lambda r, c: np.full(np.shape(r), 3.0),
                                   n_events=2, min_sigma=0.83, decided_at=spot_shape.SHAPE_CHI2)
    assert list(best_spot_fits_until.signatures) == signatures  # nothing compiled or loaded in the frame's test
    assert d[0] > spot_shape.SHAPE_CHI2 >= d[1]  # the zinger, then the spot
