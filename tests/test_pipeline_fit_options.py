"""The profile-fitting options reach the per-frame pipeline: ``integrate.method`` and ``locate.deblend``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.pipeline import analyse_frame, process_frame
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.profiles.render import moffat_profile
from braggflow.schema import Flag
from braggflow.simulate.frames import match_peaks


def _moffat_frame(seed: int = 3, shape: int = 240, spacing: int = 40):
    """Moffat (beta 2.5) peaks of known flux on a grid, background 50, Poisson counts."""
    rng = np.random.default_rng(seed)
    expected = np.full((shape, shape), 50.0)
    truth = []
    for r in range(spacing, shape - spacing + 1, spacing):
        for c in range(spacing, shape - spacing + 1, spacing):
            r0, c0, sigma = r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5), rng.uniform(0.9, 1.5)
            flux = float(np.exp(rng.uniform(np.log(5000.0), np.log(50000.0))))
            rows, cols = np.arange(r - 15, r + 16), np.arange(c - 15, c + 16)
            expected[r - 15:r + 16, c - 15:c + 16] += flux * moffat_profile(rows, cols, row=r0, col=c0, sigma_row=sigma,
                                                                         sigma_col=sigma, beta=2.5)
            truth.append((r0, c0, flux))
    table = pd.DataFrame(truth, columns=["row", "col", "intensity"]).assign(frame=0)
    return rng.poisson(expected).astype(np.float32), table


def test_integrate_method_profile_recovers_the_wings_that_the_sum_loses():
    frame, truth = _moffat_frame()
    ratios = {}
    for method in ("sum", "profile"):
        config = apply_overrides(Config(), [f"integrate.method={method}"])
        table = process_frame(frame, config=config)
        m = match_peaks(table, truth)
        assert (m["found_index"] >= 0).all()
        ratios[method] = np.median(table["intensity"].to_numpy()[m.found_index] / truth["intensity"].to_numpy())
    assert ratios["sum"] < 0.95  # the r^-5 wings outside the region are lost
    assert abs(ratios["profile"] - 1) < 0.03


def test_locate_deblend_splits_a_close_pair_in_the_pipeline():
    from braggflow.profiles.render import peak_profile

    rng = np.random.default_rng(1)
    expected = np.full((96, 96), 50.0)
    rr = np.arange(96)
    for row, col, flux in ((40.3, 40.6, 20000.0), (41.9, 43.1, 14000.0)):  # 3 px apart, sigma 1.6: one region
        expected += flux * peak_profile(rr, rr, row=row, col=col, sigma_row=1.6, sigma_col=1.6)
    frame = rng.poisson(expected).astype(np.float32)
    plain = process_frame(frame, config=apply_overrides(Config(), ["locate.deblend=false"]))
    split = process_frame(frame, config=apply_overrides(Config(), ["locate.deblend=true"]))
    assert len(plain) == 1 and not (plain["flags"].to_numpy() & Flag.BLENDED).any()
    assert len(split) == 2 and ((split["flags"].to_numpy() & Flag.BLENDED) != 0).all()
    # the two members share the one region: its pixel count and highest pixel, the unsplit peak's
    assert split["npix"].tolist() == [plain["npix"].iloc[0]] * 2
    assert split["peak_value"].tolist() == [plain["peak_value"].iloc[0]] * 2


def _single_spots(seed: int, *, thresholded: bool) -> np.ndarray:
    """Five single round Gaussian spots (sigma 1.2 px, 600 photons) on 256 x 256 px.

    ``thresholded``: on dark-subtracted normal noise (sigma 2 counts) stored only at or above 6 counts, as a frame
    cache stores it; else on a Poisson background of 4 photons/px, every pixel kept.
    """
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:256, :256]
    spots = np.zeros((256, 256))
    for r, c in ((60.3, 60.6), (60.4, 180.2), (180.7, 60.1), (180.2, 180.5), (120.5, 120.5)):
        spots += 600 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.2**2)) / (2 * np.pi * 1.2**2)
    if not thresholded:
        return rng.poisson(spots + 4.0).astype(np.float32)
    counts = np.round(rng.normal(0.0, 2.0, spots.shape)) + rng.poisson(spots)
    return np.where(counts >= 6, counts, 0).astype(np.float32)


def test_a_frame_thresholded_upstream_is_not_deblended():
    from braggflow.find import find_peaks
    from braggflow.locate import locate

    def splits(frame):
        found = find_peaks(frame)
        table = locate(frame, found.table, method="gauss", labels=found.labels, regions=found.regions, deblend=True)
        return int(((table["flags"].to_numpy() & Flag.BLENDED) != 0).sum() // 2), found

    # the Poisson likelihood ratio takes the censored zeros around a thresholded spot for counts: it splits single
    # spots there, and none of the same spots on a kept background
    censored = [splits(_single_spots(seed, thresholded=True)) for seed in range(4)]
    assert all(found.threshold_noise is not None for _, found in censored)
    assert sum(n for n, _ in censored) >= 2
    assert sum(splits(_single_spots(seed, thresholded=False))[0] for seed in range(4)) == 0
    for seed in range(4):  # so the pipeline leaves deblending out there: the table is the one without it
        frame = _single_spots(seed, thresholded=True)
        with_deblend = analyse_frame(frame, config=apply_overrides(Config(), ["locate.deblend=true"]))
        without = process_frame(frame, config=apply_overrides(Config(), ["locate.deblend=false"]))
        assert len(with_deblend.table) == 5 and with_deblend.row["thresholded"]
        pd.testing.assert_frame_equal(with_deblend.table, without)
    kept = analyse_frame(_single_spots(0, thresholded=False), config=apply_overrides(Config(), ["locate.deblend=true"]))
    assert not kept.row["thresholded"]


def test_a_failed_fit_keeps_the_peak_at_its_patch_centroid():
    from braggflow.locate import locate
    from braggflow.schema import new_peak_table

    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:100, :100]
    # the spot lies 6 px from the table's pixel, outside its 11 x 11 patch: the Gaussian fit fails there
    expected = 5000 * np.exp(-((rr - 50.3) ** 2 + (cc - 56.0) ** 2) / (2 * 1.2**2)) / (2 * np.pi * 1.2**2) + 10
    frame = rng.poisson(expected).astype(np.float32)
    table = new_peak_table(1, row=[50.0], col=[50.0])
    fitted, centroid = locate(frame, table, method="gauss"), locate(frame, table, method="com")
    assert fitted["flags"].iloc[0] & Flag.FIT_FAILED and fitted["method"].iloc[0] == "com"
    for name in ("row", "col", "row_err", "col_err", "sigma_row", "sigma_col"):
        assert fitted[name].iloc[0] == centroid[name].iloc[0] and np.isfinite(fitted[name].iloc[0])


def test_fits_on_a_real_giwaxs_frame_report_every_peak_with_a_position(shared_data):
    from braggflow.io.frames import open_frames

    frame = open_frames(str(shared_data / "gixd_mapbbr3" / "S123_MABr_A2_00865-00000.tif")).read(0)
    plain = process_frame(frame)
    for method in ("gauss", "pvoigt"):  # arcs and rings: no spot profile fits many of them
        table = process_frame(frame, config=apply_overrides(Config(), [f"locate.method={method}"]))
        failed = (table["flags"].to_numpy() & Flag.FIT_FAILED) != 0
        assert len(table) == len(plain) and failed.sum() >= 10
        assert table["method"][failed].isin(["com", "region"]).all()  # region: a peak larger than its patch
        assert np.isfinite(table[["row", "col", "intensity"]].to_numpy(float)).all() and (table["npix"] > 0).all()
