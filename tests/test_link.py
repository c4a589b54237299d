"""Linking time series and merging rotation spots, on simulated peak tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError
from braggflow.link import link, merge_rotation_spots, omega_ranges_from_table, track_summary
from braggflow.schema import new_peak_table


def drifting_series(rng, *, n_peaks=40, n_frames=30, noise=0.05, size=512):
    """Peaks on a grid (>= 20 px apart) drifting with known per-peak velocities."""
    side = int(np.ceil(np.sqrt(n_peaks)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n_peaks]
    start = 40 + grid * 60 + rng.uniform(-5, 5, grid.shape)
    velocity = rng.uniform(-0.8, 0.8, (n_peaks, 2))  # px/frame
    frames, truth, rows, cols, d = [], [], [], [], []
    d0 = rng.uniform(1.5, 3.0, n_peaks)
    for t in range(n_frames):
        perm = rng.permutation(n_peaks)  # row order within a frame must not matter
        pos = start + velocity * t + rng.normal(0, noise, (n_peaks, 2))
        frames.append(np.full(n_peaks, t))
        truth.append(perm)
        rows.append(pos[perm, 0])
        cols.append(pos[perm, 1])
        d.append(d0[perm] * (1 + 2e-4 * t))  # 0.02 % strain per frame
    table = new_peak_table(
        n_peaks * n_frames,
        frame=np.concatenate(frames),
        row=np.concatenate(rows),
        col=np.concatenate(cols),
        intensity=rng.uniform(100, 1000, n_peaks * n_frames),
        d=np.concatenate(d),
    )
    return table, np.concatenate(truth), velocity


def test_link_drifting_series_keeps_ids_and_recovers_drift(rng):
    table, truth, velocity = drifting_series(rng)
    linked = link(table, search_range=3.0)
    assert len(linked) == len(table) and (linked.index == table.index).all()
    assert (linked["track_id"] >= 0).all()
    # one track per true peak and one true peak per track, over all 30 frames
    pairs = pd.DataFrame({"truth": truth, "track": linked["track_id"]}).drop_duplicates()
    assert len(pairs) == 40
    assert pairs["truth"].is_unique and pairs["track"].is_unique
    summary = track_summary(linked)
    assert len(summary) == 40
    assert (summary["first_frame"] == 0).all() and (summary["last_frame"] == 29).all()
    assert (summary["n_frames"] == 30).all()
    by_track = summary.set_index("track_id")
    true_v = velocity[pairs.set_index("track")["truth"].reindex(by_track.index).to_numpy()]
    assert np.abs(by_track["drift_row"].to_numpy() - true_v[:, 0]).max() < 0.01
    assert np.abs(by_track["drift_col"].to_numpy() - true_v[:, 1]).max() < 0.01
    np.testing.assert_allclose(by_track["drift"], np.hypot(true_v[:, 0], true_v[:, 1]), atol=0.01)
    # d grows by 2e-4 per frame: (1 + 2e-4 * 29) - 1
    np.testing.assert_allclose(summary["d_rel_change"], 2e-4 * 29, rtol=1e-9)


def test_link_memory_bridges_a_missing_frame(rng):
    table, truth, _ = drifting_series(rng, n_peaks=4, n_frames=10)
    gone = (table["frame"] == 5) & (truth == 0)
    table = table[~gone]
    truth = truth[~gone.to_numpy()]
    without = link(table, search_range=3.0, memory=0)
    with_memory = link(table, search_range=3.0, memory=1)
    assert without.loc[truth == 0, "track_id"].nunique() == 2
    assert with_memory.loc[truth == 0, "track_id"].nunique() == 1
    assert with_memory["track_id"].nunique() == 4


def test_link_leaves_nan_positions_unlinked_and_checks_options():
    table = new_peak_table(3, frame=[0, 1, 1], row=[10.0, 10.2, np.nan], col=[5.0, 5.1, 7.0])
    linked = link(table, search_range=1.0)
    assert linked["track_id"].tolist() == [0, 0, -1]
    summary = track_summary(linked)
    assert len(summary) == 1 and np.isnan(summary.loc[0, "d_rel_change"])
    with pytest.raises(BraggflowError, match="search_range"):
        link(table, search_range=0)
    with pytest.raises(BraggflowError, match="memory"):
        link(table, search_range=1.0, memory=-1)
    with pytest.raises(ValueError, match="row"):
        link(table.drop(columns="row"))
    assert len(track_summary(link(table.iloc[:0]))) == 0


def simulate_rotation(rng, omega_ranges, spots):
    """Peaks of spots whose intensity is a Gaussian in omega, integrated over each frame.

    ``spots``: list of (row, col, omega0, sigma_omega, d_row/d_omega); positions
    move linearly with omega.  Peaks with < 1 % of a spot's intensity are dropped.
    """
    from scipy.special import ndtr

    rows = []
    for row0, col0, om0, sig, slope in spots:
        lo, hi = omega_ranges.min(axis=1), omega_ranges.max(axis=1)
        frac = ndtr((hi - om0) / sig) - ndtr((lo - om0) / sig)
        for f in np.flatnonzero(frac > 0.01):
            centre = omega_ranges[f].mean()
            rows.append((f, row0 + slope * (centre - om0) + rng.normal(0, 0.02), col0, 1e4 * frac[f]))
    f, r, c, i = map(np.array, zip(*rows))
    return new_peak_table(len(f), frame=f, row=r, col=c, intensity=i)


def test_merge_rotation_spots_spanning_one_to_four_frames(rng):
    omega = np.stack([np.arange(-20.0, 20.0), np.arange(-19.0, 21.0)], axis=1)  # 40 frames of 1 deg
    # sigma_omega 0.15 -> 1 frame; larger sigmas spread a spot over 2, 3 and 4 frames
    spots = [
        (100.0, 100.0, -14.5, 0.15, 0.0),
        (200.0, 300.0, -5.0, 0.3, 0.5),
        (400.0, 50.0, 3.5, 0.55, -0.5),
        (300.0, 420.0, 12.0, 0.75, 0.3),
    ]
    table = simulate_rotation(rng, omega, spots)
    merged, linked = merge_rotation_spots(table, omega, search_range=2.0, return_table=True)
    assert len(merged) == 4
    assert sorted(merged["n_peaks"]) == [1, 2, 3, 4]
    assert (linked["track_id"] >= 0).all()
    for _, s in merged.iterrows():
        peaks = linked[linked["track_id"] == s["spot_id"]]
        w = peaks["intensity"].to_numpy()
        np.testing.assert_allclose(s["row"], np.average(peaks["row"], weights=w))
        np.testing.assert_allclose(s["omega"], np.average(omega[peaks["frame"]].mean(axis=1), weights=w))
        np.testing.assert_allclose(s["intensity"], w.sum())
        assert s["first_frame"] == peaks["frame"].min() and s["last_frame"] == peaks["frame"].max()
    # against the simulated truth: the binned centroid is close to the Gaussian's centre
    truth = pd.DataFrame(spots, columns=["row", "col", "omega", "sigma", "slope"]).sort_values("omega")
    got = merged.sort_values("omega")
    np.testing.assert_allclose(got["omega"], truth["omega"], atol=0.15)
    np.testing.assert_allclose(got["row"], truth["row"], atol=0.1)
    np.testing.assert_allclose(got["col"], truth["col"], atol=1e-9)
    assert list(merged.columns[:8]) == ["spot_id", "row", "col", "omega", "intensity", "intensity_err",
                                        "first_frame", "last_frame"]
    assert merged["intensity_err"].isna().all()  # the table has no intensity_err


def test_merge_rotation_spot_error_is_the_quadrature_sum():
    """A spot's error is sqrt(sum err_i^2) of its frames' peaks; a peak without an intensity adds nothing, one
    with an intensity but no error makes the spot's error unknown."""
    omega = np.stack([np.arange(0.0, 10.0), np.arange(1.0, 11.0)], axis=1)
    table = new_peak_table(
        9,
        frame=[1, 2, 3, 5, 6, 7, 8, 8, 9],
        row=[100.0, 100.1, 100.0, 300.0, 300.1, 300.0, 500.0, 50.0, 500.1],
        col=[100.0, 100.0, 100.1, 300.0, 300.0, 300.1, 500.0, 50.0, 500.0],
        intensity=[100.0, 400.0, 50.0, 200.0, np.nan, 300.0, 80.0, 60.0, 90.0],
    )
    table["intensity_err"] = [3.0, 4.0, 12.0, 5.0, 7.0, 6.0, 2.0, np.nan, np.nan]
    spots = merge_rotation_spots(table, omega, search_range=2.0)
    assert sorted(spots["first_frame"]) == [1, 5, 8, 8]
    by_row = spots.sort_values("row")
    a, b = by_row.iloc[1], by_row.iloc[2]  # rows near 100 and 300
    assert a["intensity"] == pytest.approx(550.0) and a["intensity_err"] == pytest.approx(13.0)  # sqrt(9+16+144)
    assert b["intensity"] == pytest.approx(500.0)
    assert b["intensity_err"] == pytest.approx(np.sqrt(25.0 + 36.0))  # the NaN-intensity peak left out
    c = by_row.iloc[3]  # row 500: frame 9's peak has no error
    assert c["intensity"] == pytest.approx(170.0) and np.isnan(c["intensity_err"])
    single = by_row.iloc[0]  # row 50: one peak, no error
    assert single["n_peaks"] == 1 and np.isnan(single["intensity_err"])


def test_merge_rotation_does_not_merge_across_an_omega_jump(rng):
    # like the HEXRD Zr series: frames 0-49 cover -115..-65, frames 50-99 cover 65..115
    starts = np.r_[np.arange(-115.0, -65.0), np.arange(65.0, 115.0)]
    omega = np.stack([starts, starts + 1], axis=1)
    # spot A: frames 48, 49 (touching); spot B at the same pixel on frame 50 (not touching 49)
    table = new_peak_table(
        3, frame=[48, 49, 50], row=[500.0, 500.2, 500.1], col=[700.0, 700.1, 700.0], intensity=[100.0, 300.0, 50.0]
    )
    spots = merge_rotation_spots(table, omega, search_range=2.0)
    assert len(spots) == 2
    a, b = spots.sort_values("omega").itertuples()
    assert (a.first_frame, a.last_frame, a.n_peaks) == (48, 49, 2)
    assert a.omega == pytest.approx((-66.5 * 100 + -65.5 * 300) / 400)
    assert (b.first_frame, b.last_frame) == (50, 50) and b.omega == pytest.approx(65.5)


def test_merge_rotation_follows_omega_not_frame_index(rng):
    # frames written in shuffled order: neighbours in omega are far apart in index
    perm = rng.permutation(20)
    starts = np.arange(0.0, 20.0)[perm]
    omega = np.stack([starts + 1, starts], axis=1)  # decreasing start/stop pairs are fine too
    f_a = int(np.flatnonzero(starts == 7)[0])
    f_b = int(np.flatnonzero(starts == 8)[0])
    table = new_peak_table(2, frame=[f_a, f_b], row=[50.0, 50.5], col=[60.0, 60.0], intensity=[1.0, 3.0])
    spots = merge_rotation_spots(table, omega, search_range=2.0)
    assert len(spots) == 1
    assert spots.loc[0, "omega"] == pytest.approx(7.5 * 0.25 + 8.5 * 0.75)
    assert (spots.loc[0, "first_frame"], spots.loc[0, "last_frame"]) == (f_a, f_b)


def test_merge_rotation_closes_a_full_turn():
    starts = np.arange(0.0, 360.0, 2.0)
    omega = np.stack([starts, starts + 2], axis=1)
    last = len(starts) - 1
    table = new_peak_table(
        3, frame=[last, 0, 10], row=[5.0, 5.0, 5.0], col=[9.0, 9.5, 9.0], intensity=[1.0, 1.0, 1.0]
    )
    spots = merge_rotation_spots(table, omega, search_range=2.0)
    assert len(spots) == 2
    seam = spots[spots["n_peaks"] == 2].iloc[0]
    # centres 359 and 1 deg, equal weights: 0 deg (360 wrapped into [0, 360))
    assert seam["omega"] == pytest.approx(0.0, abs=1e-9) or seam["omega"] == pytest.approx(360.0)
    assert (seam["first_frame"], seam["last_frame"]) == (last, 0)


def test_merge_rotation_checks_omega_ranges():
    table = new_peak_table(1, frame=[3], row=[1.0], col=[1.0], intensity=[1.0])
    with pytest.raises(BraggflowError, match="shape"):
        merge_rotation_spots(table, np.zeros(4))
    with pytest.raises(BraggflowError, match="frame 3"):
        merge_rotation_spots(table, np.stack([np.arange(3.0), np.arange(1.0, 4.0)], 1))
    with pytest.raises(BraggflowError, match="NaN"):
        merge_rotation_spots(table, np.full((4, 2), np.nan))
    # NaN is fine on frames without peaks
    ranges = np.full((4, 2), np.nan)
    ranges[3] = (10.0, 11.0)
    assert merge_rotation_spots(table, ranges)["omega"].tolist() == [10.5]
    empty = merge_rotation_spots(table.iloc[:0], np.stack([np.arange(3.0), np.arange(1.0, 4.0)], 1))
    assert len(empty) == 0 and "spot_id" in empty.columns


def test_omega_ranges_from_table_rebuilds_the_jump():
    starts = np.r_[np.arange(-115.0, -65.0), np.arange(65.0, 115.0)]
    omega = np.stack([starts, starts + 1], axis=1)
    frames = np.array([0, 1, 48, 49, 50, 51, 99])
    table = new_peak_table(len(frames), frame=frames, row=1.0, col=1.0, omega=omega[frames].mean(axis=1))
    rebuilt = omega_ranges_from_table(table)
    np.testing.assert_allclose(rebuilt[frames], omega[frames])
    assert np.isnan(rebuilt[2]).all() and rebuilt.shape == (100, 2)
    # merging with rebuilt ranges keeps frames 49 and 50 apart (they do not touch)
    spots = merge_rotation_spots(table, rebuilt)
    assert sorted(spots["n_peaks"]) == [1, 2, 2, 2]
    with pytest.raises(BraggflowError, match="no omega"):
        omega_ranges_from_table(new_peak_table(2, frame=[0, 1]))
    with pytest.raises(BraggflowError, match="fewer than two"):
        omega_ranges_from_table(table[table["frame"] == 0])


def test_track_summary_fills_d_from_a_geometry_and_gives_strain():
    # untilted detector, beam at (500, 500), 0.1 mm pixels, 200 mm away, 1 Å: a peak moving
    # outward along a row has 2 theta = atan(r * 0.1 / 200) and d = lambda / (2 sin theta)
    from braggflow.geometry.config import GeometryConfig

    geometry = GeometryConfig(distance_mm=200.0, beam_center_row=500.0, beam_center_col=500.0, pixel_size_mm=0.1,
                              wavelength_A=1.0)
    radius = 300.0 + 0.5 * np.arange(10)  # px from the beam centre
    table = new_peak_table(10, frame=np.arange(10), row=500.0, col=500.0 + radius, row_err=0.01, col_err=0.01)
    linked = link(table, search_range=1.0)
    summary = track_summary(linked, geometry=geometry)
    d = 1.0 / (2 * np.sin(0.5 * np.arctan(radius * 0.1 / 200.0)))
    assert len(summary) == 1
    np.testing.assert_allclose(summary.loc[0, "d_rel_change"], d[-1] / d[0] - 1, rtol=1e-4)
    np.testing.assert_allclose(summary.loc[0, "d"], d.mean(), rtol=1e-5)
    assert summary.loc[0, "drift_col"] == pytest.approx(0.5)


def test_a_rotation_series_without_omega_gets_it_from_start_and_step(tmp_path):
    """TIFF frames record no omega: run --omega-start/--omega-step fills the column, link --omega-step merges."""
    import tifffile
    from typer.testing import CliRunner

    from braggflow.cli.app import app
    from braggflow.io.results import read_peaks
    from braggflow.link import omega_ranges_from_table
    from braggflow.profiles.render import peak_profile

    rows = np.arange(64)
    rng = np.random.default_rng(4)
    for k in range(4):  # one spot seen on frames 1 and 2, rising and falling
        lam = 10 + (3000 if k in (1, 2) else 0) * peak_profile(rows, rows, row=30.3, col=20.6, sigma_row=1.2,
                                                                sigma_col=1.2)
        tifffile.imwrite(tmp_path / f"f_{k}.tif", rng.poisson(lam).astype(np.uint16))
    runner = CliRunner()
    out = tmp_path / "R.h5"
    plain = tmp_path / "plain.h5"
    assert runner.invoke(app, ["run", str(tmp_path / "f_*.tif"), "-o", str(plain)]).exit_code == 0
    linked = runner.invoke(app, ["link", str(plain), "--omega", "--omega-step", "0.5", "--omega-start", "10"])
    assert linked.exit_code == 0 and "merged into 1 spots" in linked.output, linked.output
    result = runner.invoke(app, ["run", str(tmp_path / "f_*.tif"), "-o", str(out), "--omega-start", "10",
                                 "--omega-step", "0.5"])
    assert result.exit_code == 0, result.output
    table = read_peaks(out)
    assert sorted(table["omega"].unique()) == [10.75, 11.25]  # frame centres 10 + (k + 0.5) 0.5 for k = 1, 2
    np.testing.assert_allclose(omega_ranges_from_table(table)[1:3], [[10.5, 11.0], [11.0, 11.5]])
    merged = runner.invoke(app, ["link", str(out), "--omega"])
    assert merged.exit_code == 0 and "merged into 1 spots" in merged.output, merged.output
