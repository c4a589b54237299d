"""2 x 2 binning (``correct.binning: 2``) in a whole run: series statistics on the detector grid, peaks found."""

import numpy as np

from braggflow.pipeline import measure_series, prepare, run
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.simulate.artefacts import add_artefacts
from braggflow.simulate.frames import match_peaks, simulate_series


def test_a_binned_run_masks_the_hot_pixels_of_the_detector_and_finds_the_peaks(tmp_path):
    from braggflow.io.results import read_frames

    base = simulate_series(8, shape=(256, 256), n_peaks=25, seed=5, n_hot=0, n_dead=0, sigma=(1.6, 2.4),
                           flux=(5000, 20000))
    art = add_artefacts(base, zingers=0, hot=12, ring=False, seed=2)
    config = apply_overrides(Config(), ["correct.binning=2"])
    detector_mask = np.zeros((256, 256), bool)
    detector_mask[:, 128:131] = True  # a module gap: the static mask is on the detector's grid
    context = measure_series(art.frames, config, prepare(config, shape=(256, 256), dtype=art.frames.dtype,
                                                         detector_mask=detector_mask))
    # the hot pixels are found on the detector's own pixels, and only they
    hot = np.argwhere(context.hot_pixels)
    assert context.hot_pixels.shape == (256, 256)
    assert sorted(map(tuple, hot)) == sorted(zip(art.hot_pixels["row"], art.hot_pixels["col"]))
    out = tmp_path / "binned.h5"
    table = run(art.frames, config=config, output=out, mask=detector_mask)
    assert (read_frames(out)["hot_pixels"] == 12).all()
    # positions come back on the detector's grid (raw px): the binned run finds nearly the peaks the unbinned run
    # finds, within a tenth of a pixel
    truth = base.truth[~base.truth["masked"]]
    binned = match_peaks(table, truth, max_distance=1.5)
    plain = match_peaks(run(art.frames, mask=detector_mask), truth, max_distance=1.5)
    found, found_plain = binned["found_index"] >= 0, plain["found_index"] >= 0
    assert found.mean() >= 0.9 * found_plain.mean()
    assert np.median(binned.loc[found, "distance"]) < 0.15
