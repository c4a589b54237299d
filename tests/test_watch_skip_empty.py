"""Live mode with the learned finder's empty-frame skip (frames.skip_empty, ``watch --skip-empty``) on simulated
grazing-incidence frames of known content: frames the detector calls empty keep their frames-table row without
peaks, frames with features are processed as without the skip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.errors import ConfigError
from braggflow.geometry import Geometry
from braggflow.io.results import read_frames, read_group, read_peaks
from braggflow.nn.detector import list_detectors
from braggflow.pipeline import prepare, process_frame
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.pipeline.learned import SKIP_EMPTY_DEFAULT, learned_peaks, skips_frame
from braggflow.pipeline.watch import watch
from braggflow.simulate.gixd import detector_image, detector_setup, simulate_gixd_frame

GEOMETRY = dict(distance_mm=250.0, beam_center_row=1000.5, beam_center_col=300.0, pixel_size_mm=0.2,
                wavelength_A=1.0, incidence_angle_deg=0.3)
SHAPE = (1024, 1024)
# seed 3: background and artefacts only (no labelled feature), on which the finder reports false features unless
# the frame is skipped; seed 0: background only; seed 34: 20 labelled features (rings, arcs, mostly spots)
EMPTY_WITH_FALSE, EMPTY, FEATURES = 3, 0, 34
SKIP = 0.5  # every frame the detector classes empty (p_empty >= 0.5) is skipped
runner = CliRunner()

pytestmark = [pytest.mark.skipif(not list_detectors(), reason="no shipped detector in the MANIFEST"),
              pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def frames():
    """(seed, truth, image, mask) of the three simulated frames, in the order they are written."""
    setup = detector_setup(Geometry.from_config(GEOMETRY), SHAPE)
    out = []
    for seed in (EMPTY_WITH_FALSE, EMPTY, FEATURES):
        frame = simulate_gixd_frame(seed, setup)
        image, mask = detector_image(frame, SHAPE)
        out.append((seed, frame.truth, image.astype(np.float32), mask))
    assert (frame_mask := out[0][3]).shape == SHAPE and all((m == frame_mask).all() for *_, m in out)
    return out


def _config(skip_empty=None) -> Config:
    return Config.model_validate({"geometry": GEOMETRY, "find": {"method": "learned"},
                                  "frames": {"skip_empty": skip_empty}})


def _write_folder(folder, frames) -> None:
    import tifffile

    folder.mkdir()
    for i, (_, _, image, _) in enumerate(frames):
        tifffile.imwrite(folder / f"frame_{i:04d}.tif", image)


def test_skip_rule():
    assert skips_frame(0.6, 0.5) and skips_frame(0.5, 0.5) and not skips_frame(0.49, 0.5)
    assert not skips_frame(0.99, None) and not skips_frame(float("nan"), 0.5)
    assert 0 < SKIP_EMPTY_DEFAULT <= 1


def test_skip_empty_needs_the_learned_finder():
    with pytest.raises(ConfigError, match="skip_empty needs find.method 'learned'"):
        apply_overrides(Config(), {"frames.skip_empty": 0.5})
    with pytest.raises(ConfigError, match="skip_empty"):
        apply_overrides(_config(), {"frames.skip_empty": 1.5})  # a probability


def test_an_empty_frame_is_skipped_and_a_frame_with_features_is_not(frames):
    counts = {}
    for seed, truth, image, mask in frames:
        rows, tables = [], []
        for skip in (None, SKIP):
            row = {}
            config = _config(skip)
            tables.append(learned_peaks(image, mask=mask, context=prepare(config, shape=SHAPE, mask=mask),
                                        config=config, frame_row=row))
            rows.append(row)
        assert rows[0] == rows[1]  # the frame's class and probabilities are reported either way
        counts[seed] = (len(tables[0]), len(tables[1]), rows[0]["p_empty"])
        has_features = bool(len(truth)) and bool(truth["visible"].any())
        if has_features:  # processed as without the skip
            assert rows[0]["p_empty"] < SKIP and rows[0]["frame_class"] != "empty"
            pd.testing.assert_frame_equal(tables[1], tables[0])
        else:  # skipped: no feature reported
            assert rows[0]["p_empty"] >= SKIP and rows[0]["frame_class"] == "empty" and len(tables[1]) == 0
    assert counts[EMPTY_WITH_FALSE][0] > 0, counts  # without the skip, false features on the empty frame
    assert counts[FEATURES][1] >= 10, counts


def test_watch_skips_the_empty_frames_and_the_frames_table_says_which(tmp_path, frames):
    folder, out = tmp_path / "detector", tmp_path / "live.h5"
    _write_folder(folder, frames)
    mask = frames[0][3]
    config = _config(SKIP)
    result = watch(folder, out, config=config, idle_timeout=1.0, poll_interval=0.02, mask=mask)
    assert result.status == "complete" and result.n_frames == 3
    assert result.frames["skipped"].tolist() == [True, True, False] and result.n_skipped == 2
    table = read_frames(out).sort_values("frame").reset_index(drop=True)
    assert table["frame"].tolist() == [0, 1, 2]
    assert table["frame_class"].astype(str).tolist() == ["empty", "empty", "spots"]
    skipped = (table["p_empty"] >= SKIP).to_numpy()  # the documented meaning of a skipped frame's row
    assert skipped.tolist() == [True, True, False]
    assert (table.loc[skipped, "n_peaks"] == 0).all() and not table.loc[skipped, "hit"].any()
    peaks = read_peaks(out)
    assert set(peaks["frame"].tolist()) == {2}
    # the frame with features: the peaks a run without the skip finds on it
    plain = _config()
    want = process_frame(frames[2][2], config=plain, context=prepare(plain, shape=SHAPE, mask=mask), frame_index=2)
    assert table.loc[2, "n_peaks"] == len(want) == len(peaks) >= 10
    np.testing.assert_allclose(peaks.sort_values(["q", "eta"])[["q", "eta", "intensity"]].to_numpy(),
                               want.sort_values(["q", "eta"])[["q", "eta", "intensity"]].to_numpy())
    stored, _ = read_group(out, "watch")
    assert stored["frames"]["skipped"].astype(bool).tolist() == [True, True, False]


def test_watch_command_skip_empty_counts_the_skipped_frames(tmp_path, frames):
    import tifffile

    folder, out = tmp_path / "detector", tmp_path / "live.h5"
    _write_folder(folder, frames)
    tifffile.imwrite(tmp_path / "mask.tif", frames[0][3].astype(np.uint8))
    g = GEOMETRY
    args = ["watch", str(folder), "-o", str(out), "--idle-timeout", "1", "--poll", "0.02", "--finder", "learned",
            "--mask", str(tmp_path / "mask.tif"), "--distance", str(g["distance_mm"]),
            "--beam-row", str(g["beam_center_row"]), "--beam-col", str(g["beam_center_col"]),
            "--pixel-size", str(g["pixel_size_mm"]), "--wavelength", str(g["wavelength_A"]),
            "--incidence-angle", str(g["incidence_angle_deg"]), "--skip-empty", "--p-empty", str(SKIP)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 of 3 frames skipped as empty" in res.output
    assert read_frames(out)["n_peaks"].tolist()[:2] == [0, 0]
    res = runner.invoke(app, ["watch", str(folder), "-o", str(tmp_path / "other.h5"), "--skip-empty"])
    assert res.exit_code != 0 and "skip_empty needs find.method 'learned'" in res.output
