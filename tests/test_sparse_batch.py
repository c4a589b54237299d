"""The batch finder on stored pixels (:mod:`braggflow.find.sparse_batch`), the block path over ImageD11 sparse scans
(:mod:`braggflow.pipeline.sparse_run`) and the writer's bulk journal batches (``ResultsWriter.add_frames``).

The frames are simulated as a detector thresholded upstream records them:
dark-subtracted normal noise of sigma 2, a few Gaussian spots (and a pair
of touching ones), a zinger now and then and a hot pixel, rounded and kept
where they reach the storage threshold 6.  The batch finder must make the
decisions of :func:`braggflow.find.find_peaks` on every frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_io_sparse import write_sparse

from braggflow.errors import BraggflowError
from braggflow.find import find_peaks
from braggflow.find.noise import fit_threshold_noise, isolated_pixel_values
from braggflow.find.options import FindConfig
from braggflow.find.sparse_batch import MOMENTS_METHOD, find_peaks_in_pixels
from braggflow.io.results import ResultsWriter, read_frames, read_peaks, read_status
from braggflow.io.sparse import SparseSeries
from braggflow.pipeline import analyse_frame, measure_series, prepare
from braggflow.pipeline.config import Config
from braggflow.pipeline.sparse_run import correct_pixels, run_sparse, sparse_path_applies
from braggflow.schema import Flag

SIGMA, THRESHOLD = 2.0, 6.0


def thresholded_frames(rng, n=30, shape=(64, 80), *, threshold=THRESHOLD, hot=(10, 11)):
    """(n, H, W) float32 frames thresholded at ``threshold``: noise, spots (some on the edges), zingers, a hot pixel."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    frames = rng.normal(0, SIGMA, (n, h, w))
    for i in range(n):
        for _ in range(rng.integers(0, 5)):
            r, c = rng.uniform(-1, h), rng.uniform(-1, w)
            s = rng.uniform(0.7, 1.8)
            flux = np.exp(rng.uniform(np.log(30), np.log(3000)))
            frames[i] += flux / (2 * np.pi * s * s) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
        if i % 5 == 0:
            frames[i, rng.integers(h), rng.integers(w)] += 500  # a zinger
        if i % 7 == 0:  # two touching spots
            r, c = rng.uniform(5, h - 5), rng.uniform(5, w - 5)
            for dr, dc, flux in ((0, 0, 800), (2.5, 1.5, 400)):
                frames[i] += flux / (2 * np.pi) * np.exp(-((yy - r - dr) ** 2 + (xx - c - dc) ** 2) / 2)
    if hot is not None:
        frames[:, hot[0], hot[1]] += 300
    frames = np.round(frames)
    frames[frames < threshold] = 0
    return frames.astype(np.float32)


def series_noise(frames, mask=None):
    """The noise model measure_series fits: isolated pixels of the first 20 frames."""
    return fit_threshold_noise(np.concatenate([isolated_pixel_values(f, mask) for f in frames[:20]]))


def batch(frames, *, mask=None, **kwargs):
    """find_peaks_in_pixels on all the stored pixels of ``frames``."""
    fi, r, c = np.nonzero(frames)
    return find_peaks_in_pixels(fi, r, c, frames[fi, r, c], shape=frames.shape[1:], mask=mask,
                                frames=np.arange(len(frames)), **kwargs)


def assert_same_as_find_peaks(frames, found, *, config, threshold_noise=None, mask=None, masks=None):
    """Every frame not left dense: the peaks (highest pixel, npix, score), zingers and noise of find_peaks."""
    n_compared = 0
    for i, frame in enumerate(frames):
        if found.dense[i]:
            continue
        m = masks[i] if masks is not None else mask
        expected = find_peaks(frame, mask=m, config=config, threshold_noise=threshold_noise)
        here = found.columns["frame"] == i
        got = np.c_[found.peak_row[here], found.peak_col[here], found.columns["npix"][here],
                    found.columns["score"][here]]
        want = expected.table[["row", "col", "npix", "score"]].to_numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"frame {i}")
        assert found.zingers[i] == expected.zingers, i
        assert found.n_peaks[i] == len(expected.table), i
        assert found.noise[i] == pytest.approx(np.median(expected.background.noise)), i
        n_compared += 1
    return n_compared


# -- the batch finder against find_peaks ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    FindConfig(),
    FindConfig(max_peaks=2),
    FindConfig(min_snr=2.0, single_pixel_sigma=3.0),
    FindConfig(threshold=7.5),
    FindConfig(zingers=False, min_size=2),
    FindConfig(split_sigma=1.0, min_separation=1.0),
], ids=["default", "max_peaks", "low_snr", "threshold", "no_zingers", "eager_split"])
@pytest.mark.parametrize("model", ["series", "per_frame"])
def test_batch_finder_gives_the_peaks_of_find_peaks_frame_by_frame(rng, config, model):
    frames = thresholded_frames(rng)
    noise = series_noise(frames) if model == "series" else None
    found = batch(frames, config=config, threshold_noise=noise)
    assert not found.dense.any()
    assert assert_same_as_find_peaks(frames, found, config=config, threshold_noise=noise) == len(frames)
    assert len(found) > len(frames)  # spots in most frames
    if config.zingers:
        assert found.zingers.sum() >= len(frames)  # the unmasked hot pixel in every frame, and the zingers


def test_batch_finder_fits_the_noise_of_each_frame_without_a_series_model(rng):
    # a low storage threshold: every frame has enough isolated pixels for its own fit, as in find_peaks
    frames = thresholded_frames(rng, n=8, threshold=3.0)
    found = batch(frames, config=FindConfig(), threshold_noise=None)
    assert assert_same_as_find_peaks(frames, found, config=FindConfig()) == len(frames)
    assert np.ptp(found.noise) > 0  # one fit a frame
    given = batch(frames, config=FindConfig(noise=2.5))
    assert np.all(given.noise == 2.5)
    assert_same_as_find_peaks(frames, given, config=FindConfig(noise=2.5))


def test_batch_finder_masks_bad_pixels_and_keeps_the_last_of_a_pixel_given_twice(rng):
    frames = thresholded_frames(rng, n=12)
    mask = np.zeros(frames.shape[1:], bool)
    mask[:, 0] = True
    mask[30, 5:60] = True
    fi, r, c = np.nonzero(frames)
    values = frames[fi, r, c].astype(np.float64)
    # NaN marks a bad pixel of one frame: find_peaks sees it as 0 and masked there
    bad = np.flatnonzero(values > 40)[::3]
    values[bad] = np.nan
    masks = np.repeat(mask[None], len(frames), axis=0)
    masks[fi[bad], r[bad], c[bad]] = True
    dense = frames.copy()
    dense[fi[bad], r[bad], c[bad]] = 0
    # a pixel given twice: the last value counts (the first is a decoy)
    fi, r, c = np.r_[fi, fi[0]], np.r_[r, r[0]], np.r_[c, c[0]]
    values = np.r_[values, values[0]]
    values[0] = 1e6
    found = find_peaks_in_pixels(fi, r, c, values, shape=frames.shape[1:], threshold_noise=series_noise(frames, mask),
                                 mask=mask, frames=np.arange(len(frames)))
    n = assert_same_as_find_peaks(dense, found, config=FindConfig(), threshold_noise=series_noise(frames, mask),
                                  masks=masks)
    assert n == len(frames)


def test_batch_finder_never_joins_pixels_across_frames_or_edges():
    frames = np.zeros((3, 20, 30), np.float32)
    frames[0, 19, 10:13] = 60  # last row of frame 0 ...
    frames[1, 0, 10:13] = 60  # ... above the first row of frame 1 in the flat index
    frames[1, 5, 29] = frames[1, 6, 0] = 80  # last column of a row, first column of the next
    frames[2, 10, 10] = 7  # noise at the threshold
    noise = fit_threshold_noise(np.full(60, 7.0) + np.arange(60) % 3)
    found = batch(frames, threshold_noise=noise, config=FindConfig(zingers=False, min_snr=0, single_pixel_sigma=1))
    assert found.columns["npix"].tolist() == [3, 3, 1, 1, 1]
    assert found.n_peaks.tolist() == [1, 3, 1]
    assert_same_as_find_peaks(frames, found, config=FindConfig(zingers=False, min_snr=0, single_pixel_sigma=1),
                              threshold_noise=noise)


def test_batch_finder_leaves_unthresholded_frames_and_half_stored_tiles_to_find_peaks(rng):
    frames = thresholded_frames(rng, n=6, shape=(130, 140))
    frames[2, 0:40, 0:40] = 50  # a large region, under half of a 64 px tile's samples: decided here
    frames[3, 70:130, 0:60] = 40  # over half of a tile: the dense finder's background is not 0 there
    frames[4] = np.where(frames[4] == 0, 7, frames[4])  # every pixel stored: not thresholded
    found = batch(frames, config=FindConfig(), threshold_noise=None)
    assert np.flatnonzero(found.dense).tolist() == [3, 4]
    assert not np.isin(found.columns["frame"], [3, 4]).any() and found.n_peaks[[3, 4]].tolist() == [0, 0]
    assert assert_same_as_find_peaks(frames, found, config=FindConfig()) == 4
    assert batch(frames, config=FindConfig(sparse="no")).dense.all()
    assert batch(frames, config=FindConfig(sparse="yes")).dense.tolist() == [False, False, False, True, True, False]


def test_batch_finder_region_moments_intensity_and_flags():
    frames = np.zeros((2, 32, 32), np.float32)
    yy, xx = np.mgrid[:32, :32]
    spot = 2000 / (2 * np.pi * 1.2**2) * np.exp(-((yy - 12.3) ** 2 + (xx - 20.6) ** 2) / (2 * 1.2**2))
    frames[1] = np.where(spot >= 6, np.round(spot), 0)
    fi, r, c = np.nonzero(frames)
    v = frames[fi, r, c]
    saturated = v == v.max()
    noise = fit_threshold_noise(6 + np.arange(60) % 4)
    found = find_peaks_in_pixels(fi, r, c, v, shape=(32, 32), threshold_noise=noise, gain=1.0, saturated=saturated,
                                 frames=[0, 1])
    assert len(found) == 1 and found.n_peaks.tolist() == [0, 1] and found.saturated.tolist() == [0, 1]
    col = {k: float(a[0]) for k, a in found.columns.items()}
    assert col["row"] == pytest.approx((v * r).sum() / v.sum()) and col["col"] == pytest.approx((v * c).sum() / v.sum())
    assert abs(col["row"] - 12.3) < 0.05 and abs(col["col"] - 20.6) < 0.05
    assert col["intensity"] == pytest.approx(v.sum()) and col["npix"] == v.size
    var = max(noise.sigma, 1.0) ** 2 + v
    assert col["intensity_err"] == pytest.approx(np.sqrt(var.sum()))
    assert col["row_err"] == pytest.approx(np.sqrt((var * (r - col["row"]) ** 2).sum()) / v.sum())
    assert col["sigma_row"] == pytest.approx(np.sqrt((v * (r - col["row"]) ** 2).sum() / v.sum()))
    assert col["snr"] == col["score"] and col["background"] == 0 and col["peak_value"] == v.max()
    assert int(col["flags"]) == Flag.SATURATED
    table = found.peak_table()
    assert table["method"].tolist() == [MOMENTS_METHOD] and table["frame"].tolist() == [1]
    assert (found.peak_row[0], found.peak_col[0]) == (12, 21)


def test_batch_finder_errors():
    one = ([0], [1], [1], [9.0])
    with pytest.raises(BraggflowError, match="components"):
        find_peaks_in_pixels(*one, shape=(4, 4), config=FindConfig(method="persistence"))
    with pytest.raises(BraggflowError, match="differ in length"):
        find_peaks_in_pixels([0, 0], [1], [1], [9.0], shape=(4, 4))
    with pytest.raises(BraggflowError, match="outside the frame"):
        find_peaks_in_pixels([0], [4], [1], [9.0], shape=(4, 4))
    with pytest.raises(BraggflowError, match="not one of frames"):
        find_peaks_in_pixels(*one, shape=(4, 4), frames=[1, 2])
    with pytest.raises(BraggflowError, match="mask has shape"):
        find_peaks_in_pixels(*one, shape=(4, 4), mask=np.zeros((3, 4), bool))
    empty = find_peaks_in_pixels([], [], [], [], shape=(4, 4), frames=[3, 4])
    assert len(empty) == 0 and empty.n_peaks.tolist() == [0, 0] and len(empty.peak_table()) == 0


# -- the block path of the pipeline ---------------------------------------------------------------------------------


@pytest.fixture
def scan(tmp_path, rng):
    """An ImageD11 sparse scan of 45 thresholded frames (uint16, one saturated pixel) and its frames."""
    frames = thresholded_frames(rng, n=45).astype(np.uint16)
    frames[7, 4:7, 4:7] = 100
    frames[7, 5, 5] = np.iinfo(np.uint16).max  # a saturated spot
    path = write_sparse(tmp_path / "scan.h5", frames, omega=0.5 + 0.25 * np.arange(len(frames)))
    return SparseSeries(str(path)), frames


def run_blocks(series, path, indices=None, *, config=None, block_frames=16, **kwargs):
    """What pipeline.run does on a sparse scan: prepare, measure_series, a writer, run_sparse, close."""
    config = config or Config()
    context = measure_series(series, config, prepare(config, shape=series.shape, dtype=series.dtype))
    with ResultsWriter(path, config=config, sources=series.sources, **kwargs) as writer:
        indices = [i for i in (indices if indices is not None else range(len(series))) if i not in writer.done_frames]
        run_sparse(series, indices, config=config, context=context, writer=writer, block_frames=block_frames)
    return context


def test_run_sparse_writes_the_frames_table_and_peaks_of_the_per_frame_pipeline(scan, tmp_path):
    series, frames = scan
    config = Config()
    context = run_blocks(series, tmp_path / "out.h5", config=config)
    assert sparse_path_applies(series, config, context) and np.count_nonzero(context.hot_pixels) == 1
    table, rows = read_peaks(tmp_path / "out.h5"), read_frames(tmp_path / "out.h5")
    assert read_status(tmp_path / "out.h5") == "complete"
    assert rows["frame"].tolist() == list(range(len(frames))) and (rows["time"] > 0).all()
    assert set(table["method"]) == {MOMENTS_METHOD} and len(table) == rows["n_peaks"].sum() > len(frames)
    for i in range(len(frames)):
        expected = analyse_frame(series[i], config=config, context=context, frame_index=i,
                                 omega=series.omega_centre(i))
        row = rows.iloc[i]
        for key in ("n_peaks", "background", "noise", "saturated", "zingers", "hot_pixels", "omega"):
            assert row[key] == pytest.approx(expected.row[key]), (i, key)
        here = table[table["frame"] == i]
        assert (here["omega"] == series.omega_centre(i)).all()
        if len(here):  # the region moments and the patch centre of mass of the same peaks
            d = np.hypot(here["row"].to_numpy()[:, None] - expected.table["row"].to_numpy(),
                         here["col"].to_numpy()[:, None] - expected.table["col"].to_numpy())
            assert d.min(axis=1).max() < 0.5, i
    assert rows["saturated"].tolist()[7] == 1 and table.loc[table["frame"] == 7, "flags"].gt(0).any()


def test_run_sparse_on_frames_apart_and_resumed(scan, tmp_path):
    series, frames = scan
    out = tmp_path / "out.h5"
    config = Config()
    context = measure_series(series, config, prepare(config, shape=series.shape, dtype=series.dtype))
    writer = ResultsWriter(out, config=config, sources=series.sources)
    calls = []
    run_sparse(series, [0, 1, 2, 9, 10, 30], config=config, context=context, writer=writer, block_frames=2,
               progress=lambda done, total, peaks: calls.append((done, total)))
    assert calls == [(2, 6), (3, 6), (5, 6), (6, 6)]  # blocks 0:2, 2:3, 9:11, 30:31
    writer.close(complete=False)
    assert read_frames(out)["frame"].tolist() == [0, 1, 2, 9, 10, 30]
    run_blocks(series, out, config=config, resume=True)
    whole = tmp_path / "whole.h5"
    run_blocks(series, whole, config=config, block_frames=1000)
    pd.testing.assert_frame_equal(read_peaks(out), read_peaks(whole))
    pd.testing.assert_frame_equal(read_frames(out).drop(columns="time"), read_frames(whole).drop(columns="time"))


def test_run_sparse_returns_the_tables_without_a_writer(scan):
    series, _ = scan
    config = Config()
    context = measure_series(series, config, prepare(config, shape=series.shape, dtype=series.dtype))
    tables = run_sparse(series, range(10), config=config, context=context, block_frames=4)
    assert len(tables) == 3  # blocks 0:4, 4:8, 8:10
    assert all(set(t["frame"]) <= set(range(4 * k, 4 * k + 4)) for k, t in enumerate(tables))
    assert pd.concat(tables)["frame"].nunique() >= 5


def test_sparse_path_applies_with_the_default_locate_and_integrate_and_per_pixel_corrections(scan, tmp_path):
    from braggflow.io.series import ArraySeries

    series, frames = scan
    context = prepare(Config(), shape=series.shape, dtype=series.dtype)
    assert sparse_path_applies(series, Config(), context)
    for changed in ({"locate": {"method": "gauss"}}, {"integrate": {"radius": 3.0}}, {"correct": {"dark": "d.tif"}},
                    {"correct": {"binning": 2}}, {"find": {"method": "persistence"}}, {"find": {"sparse": "no"}}):
        assert not sparse_path_applies(series, Config.model_validate(changed), context), changed
    assert sparse_path_applies(series, Config.model_validate({"correct": {"minval": 8}}), context)
    assert not sparse_path_applies(ArraySeries(frames), Config(), context)
    import dataclasses

    # prepare refuses a mask of every pixel; the guard holds for a context built otherwise
    full = dataclasses.replace(context, mask=np.ones(series.shape, bool))
    assert not sparse_path_applies(series, Config(), full)


def test_correct_pixels_flags_minval_and_saturation():
    from braggflow.correct.options import CorrectConfig

    values = np.array([5, 65535, 7, 2, 9], np.uint16)
    out, sat = correct_pixels(values, CorrectConfig(minval=6), saturation=65535.0)
    assert out.dtype == np.float32 and out.tolist()[2:] == [7, 0, 9] and out[0] == 0 and sat.tolist()[1]
    f = np.array([np.nan, -1.0, 8.0, np.inf], np.float32)
    out, sat = correct_pixels(f, CorrectConfig(), saturation=float("inf"))
    assert np.isnan(out[[0, 1, 3]]).all() and out[2] == 8 and not sat.any()


def test_braggflow_run_on_a_sparse_scan_writes_peaks_and_the_frames_table(scan, tmp_path):
    from braggflow.cli import main

    series, frames = scan
    out = tmp_path / "run.h5"
    try:
        main(["run", series.path, "-o", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    table, rows = read_peaks(out), read_frames(out)
    assert rows["frame"].tolist() == list(range(len(frames))) and len(table) == rows["n_peaks"].sum() > 0
    assert set(table["method"]) == {"moments"}  # the block-by-block path ran
    np.testing.assert_allclose(table.groupby("frame")["omega"].first(),
                               [series.omega_centre(i) for i in sorted(set(table["frame"]))])


# -- the writer's bulk batches --------------------------------------------------------------------------------------


def peaks_of(frames_with_peaks):
    from braggflow.schema import new_peak_table

    f = np.asarray(frames_with_peaks)
    return new_peak_table(f.size, frame=f, row=np.arange(f.size, dtype=float), col=1.0, score=5.0)


def test_add_frames_journals_one_batch_frames_file_first_and_survives_a_crash(tmp_path):
    out = tmp_path / "r.h5"
    writer = ResultsWriter(out, flush_frames=1000, flush_seconds=1e9, snapshot_seconds=1e9)
    writer.add(0, peaks_of([0]).iloc[:0], {"n_peaks": 0})  # buffered by add: journaled before the bulk batch
    writer.add_frames([1, 2, 3], peaks_of([1, 1, 3]), {"n_peaks": [2, 0, 1], "noise": [2.0, 2.0, 2.1]})
    journal = sorted(p.name for p in writer.journal.iterdir() if p.suffix == ".npz")
    assert journal == ["batch_00000000.npz", "batch_00000001.npz"]  # the frames-table rows inside each batch
    with np.load(writer.journal / "batch_00000001.npz") as npz:
        assert npz["frames_done"].tolist() == [1, 2, 3] and npz["fv:n_peaks"].tolist() == [2, 0, 1]
    assert writer.done_frames == {0, 1, 2, 3} and writer.frames_added == 4
    # no close: the journal holds the frames
    assert read_peaks(out)["frame"].tolist() == [1, 1, 3]
    assert read_frames(out)["n_peaks"].tolist() == [0, 2, 0, 1]
    writer.close()
    rows = read_frames(out)
    assert rows["frame"].tolist() == [0, 1, 2, 3] and rows["noise"].tolist()[1:] == [2.0, 2.0, 2.1]


def test_add_frames_errors(tmp_path):
    with ResultsWriter(tmp_path / "r.h5") as writer:
        with pytest.raises(ValueError, match="twice"):
            writer.add_frames([1, 1], peaks_of([]))
        with pytest.raises(ValueError, match="not one of frame_indices"):
            writer.add_frames([1, 2], peaks_of([3]))
        with pytest.raises(ValueError, match="rows for"):
            writer.add_frames([1, 2], peaks_of([1]), {"n_peaks": [1]})
        with pytest.raises(ValueError, match="not frame_indices"):
            writer.add_frames([1, 2], peaks_of([1]), {"frame": [1, 5], "n_peaks": [1, 0]})
        writer.add_frames([], peaks_of([]))
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_frames([4], peaks_of([]))
