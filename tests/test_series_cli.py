"""The series commands end to end: run -> link -> plot, link --omega, watch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import braggflow.cli.core  # noqa: F401  (registers run)
import braggflow.cli.series  # noqa: F401  (registers link, watch, plot)
from braggflow.cli.app import app
from braggflow.errors import InputFileError
from braggflow.io.results import read_group, read_peaks, read_table
from braggflow.profiles.render import peak_profile
from braggflow.simulate.frames import simulate_series, write_nexus

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """A run over 6 simulated 128 x 128 frames whose peaks drift by (0.05, -0.03) px/frame."""
    folder = tmp_path_factory.mktemp("drift")
    sim = simulate_series(6, shape=(128, 128), n_peaks=8, seed=3, n_hot=0, n_dead=0)
    write_nexus(folder / "sim.h5", sim, compression="gzip")
    invoke("run", folder / "sim.h5", "-o", folder / "results.h5")
    return folder, sim


def test_link_command_writes_track_ids_and_summary(drifting, tmp_path):
    folder, sim = drifting
    results = tmp_path / "results.h5"
    results.write_bytes((folder / "results.h5").read_bytes())
    out = invoke("link", results, "--search-range", 2, "--csv", tmp_path / "tracks.csv")
    assert "tracks" in out
    peaks = read_peaks(results)
    assert (peaks["track_id"] >= 0).all()
    tables, attrs = read_group(results, "link")
    tracks = tables["tracks"]
    assert attrs["mode"] == "time" and attrs["search_range_px"] == 2.0
    assert len(tracks) == peaks["track_id"].nunique()
    full = tracks[tracks["n_frames"] == 6]
    assert len(full) >= 5
    # the simulated drift is (0.05, -0.03) px/frame for every peak
    assert abs(full["drift_row"].median() - 0.05) < 0.03 and abs(full["drift_col"].median() + 0.03) < 0.03
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "tracks.csv"), tracks, check_dtype=False)


def test_read_table_gives_the_simulated_truth(drifting, tmp_path):
    folder, sim = drifting
    truth = read_table(folder / "sim.h5", "/entry/truth")
    assert list(truth.columns) == list(sim.truth.columns)
    pd.testing.assert_frame_equal(truth, sim.truth, check_dtype=False, check_categorical=False)
    with pytest.raises(InputFileError, match="no table group '/entry/nothing'"):
        read_table(folder / "sim.h5", "/entry/nothing")
    with pytest.raises(InputFileError, match="no such"):
        read_table(tmp_path / "missing.h5", "/entry/truth")


def test_plot_commands_write_images_of_the_expected_size(drifting, tmp_path):
    folder, _ = drifting
    results = tmp_path / "results.h5"
    results.write_bytes((folder / "results.h5").read_bytes())
    invoke("plot", "frame", results, "--frame", 2, "-o", tmp_path / "f.png", "--dpi", 50)
    invoke("plot", "frame", results, "--frame", 2, "-o", tmp_path / "r.png", "--dpi", 50, "--region", "10:70,20:90",
           "--reference", folder / "sim.h5")
    invoke("plot", "animate", results, "-o", tmp_path / "a.gif", "--dpi", 30, "--step", 2)
    invoke("plot", "series", results, "--reference", folder / "sim.h5", "-o", tmp_path / "s.png", "--dpi", 40,
           "--csv", tmp_path / "s.csv")
    bad = runner.invoke(app, ["plot", "tracks", str(results), "-o", str(tmp_path / "t.png")])
    assert bad.exit_code != 0 and "braggflow link" in bad.output
    invoke("link", results)
    invoke("plot", "tracks", results, "-o", tmp_path / "t.png", "--dpi", 50)
    sizes = {name: Image.open(tmp_path / name) for name in ("f.png", "a.gif", "t.png", "s.png")}
    assert sizes["f.png"].size == (350, 300) and sizes["t.png"].size == (350, 300)
    assert sizes["a.gif"].size == (180, 180) and sizes["a.gif"].n_frames == 3
    assert sizes["s.png"].size == (280, 280)
    stats = pd.read_csv(tmp_path / "s.csv")
    assert len(stats) == 6 and (stats["recall"] > 0.6).all() and (stats["median_error"] < 0.5).all()


def write_frame_cache(path, frames, omega):
    """A HEXRD frame-cache .npz (sparse frames) with omega ranges."""
    arrays = {"shape": np.array(frames.shape[1:]), "nframes": np.array(len(frames)),
              "dtype": np.array(str(frames.dtype)), "omega": omega}
    for i, frame in enumerate(frames):
        rows, cols = np.nonzero(frame)
        arrays.update({f"{i}_row": rows, f"{i}_col": cols, f"{i}_data": frame[rows, cols]})
    np.savez(path, **arrays)


def test_link_omega_merges_spots_from_a_frame_cache(tmp_path):
    # 10 frames: -10..-5 deg, then a jump to 5..9 deg; spot A on frames 1-3, spot B on frames 4 and 5 (across the jump)
    starts = np.r_[np.arange(-10.0, -5.0), np.arange(5.0, 10.0)]
    omega = np.stack([starts, starts + 1], axis=1)
    idx = np.arange(96)
    frames = np.zeros((10, 96, 96))
    for f, weight in zip((1, 2, 3), (0.25, 0.5, 0.25)):
        frames[f] += 4000 * weight * peak_profile(idx, idx, row=30.3, col=40.6, sigma_row=1.2, sigma_col=1.2)
    for f in (4, 5):
        frames[f] += 3000 * peak_profile(idx, idx, row=70.0, col=20.0, sigma_row=1.2, sigma_col=1.2)
    frames = np.where(frames >= 6, np.round(frames), 0).astype(np.uint16)  # thresholded like HEXRD's caches
    write_frame_cache(tmp_path / "fc.npz", frames, omega)
    results = tmp_path / "results.h5"
    invoke("run", tmp_path / "fc.npz", "-o", results)
    invoke("link", results, "--omega", "--csv", tmp_path / "spots.csv")
    spots = pd.read_csv(tmp_path / "spots.csv")
    assert list(spots.columns[:8]) == ["spot_id", "row", "col", "omega", "intensity", "intensity_err", "first_frame",
                                      "last_frame"]
    assert len(spots) == 3
    a = spots[spots["first_frame"] == 1].iloc[0]
    assert a["last_frame"] == 3 and a["omega"] == pytest.approx(-7.5, abs=0.05)
    assert a["row"] == pytest.approx(30.3, abs=0.1) and a["col"] == pytest.approx(40.6, abs=0.1)
    assert set(spots["first_frame"]) == {1, 4, 5}  # frames 4 (-6..-5) and 5 (5..6) do not touch
    peaks = read_peaks(results)
    assert sorted(peaks.groupby("track_id").size()) == [1, 1, 3]
    stored = read_group(results, "link")[0]["spots"]
    assert len(stored) == 3
    # the same from the omega column alone (frames not at hand)
    invoke("link", results, "--omega", "--omega-step", 1.0, "--csv", tmp_path / "spots2.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "spots2.csv"), spots)


def test_watch_command_on_a_filled_folder(drifting, tmp_path):
    from fabio.tifimage import TifImage

    _, sim = drifting
    folder = tmp_path / "detector"
    folder.mkdir()
    for i, frame in enumerate(sim.frames[:3]):
        TifImage(data=frame.astype(np.int32)).write(str(folder / f"img_{i:04d}.tif"))
    out = invoke("watch", folder, "-o", tmp_path / "live.h5", "--idle-timeout", 0.5, "--poll", 0.05)
    assert "3 frames" in out and "stopped: idle" in out and "latency median" in out
    assert sorted(read_peaks(tmp_path / "live.h5")["frame"].unique()) == [0, 1, 2]
    again = invoke("watch", folder, "-o", tmp_path / "live.h5", "--idle-timeout", 0.3, "--poll", 0.05)
    assert "no new frames" in again
