"""The command line at 80 columns: tables keep every key value whole, --json everywhere a table is printed,
library chatter off the terminal, lines unwrapped on a pipe, flags without types, 'did you mean' for config keys."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.cli.common import _PlainWhenPiped, print_table

runner = CliRunner()
PHASES = Path(__file__).parent / "data" / "phases"
GIXD_GEOMETRY = ["--distance", "809", "--beam-row", "1825.5", "--beam-col", "545", "--pixel-size", "0.2",
                 "--wavelength", "0.6888", "--incidence-angle", "0.5"]
ELLIPSIS = "…"


def _console(width: int) -> tuple[_PlainWhenPiped, io.StringIO]:
    out = io.StringIO()
    return _PlainWhenPiped(file=out, width=width, highlight=False), out


ROWS = [["locnet-sim-sym4-with-a-long-name", "locnet", "130054", "88efde6f", "a=5.9126±0.0069\nb=4.6856±0.0084"],
        ["braggnn-sim", "braggnn", "45394", "dbe83054", "a=7.9948±0.0176"]]
COLUMNS = ["name", "arch", "params", "sha256", "cell (Å)"]


@pytest.mark.parametrize("width, form", [(200, "table"), (64, "narrow"), (40, "records")])
def test_print_table_keeps_every_value_whole_at_any_width(width, form):
    """Whole table, fewer columns (named under it) or records: the values printed are never shortened."""
    console, out = _console(width)
    assert print_table("models", COLUMNS, ROWS, optional=("params", "arch"), target=console) == form
    text = out.getvalue()
    assert ELLIPSIS not in text
    kept = COLUMNS if form != "narrow" else [c for c in COLUMNS if c not in ("params", "arch")]
    for row in ROWS:
        for name, value in zip(COLUMNS, row):
            for part in value.split("\n"):
                assert part in text or name not in kept, (name, part, text)
    if form == "narrow":
        assert "not shown: params, arch" in text
    if form != "records":
        assert max(len(line) for line in text.splitlines()) <= width


def test_plain_lines_on_a_pipe():
    """A long line printed to a file or pipe stays one line (no wrapping mid-sentence)."""
    console, out = _console(80)
    line = "13 frames processed, " + "a long summary " * 12 + "after the first frame"
    console.print(line)
    assert out.getvalue() == line + "\n"


def test_models_at_80_columns_and_as_json():
    from braggflow.nn.files import list_models

    rows = list_models()
    result = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert ELLIPSIS not in result.output
    for row in rows:
        assert row["name"] in result.output and row["sha256"][:8] in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    result = runner.invoke(app, ["models", "--json", "-"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [r["name"] for r in listed] == [r["name"] for r in rows]
    assert all(len(r["sha256"]) == 64 for r in listed)


def test_detectors_json():
    from braggflow.nn.detector import list_detectors

    result = runner.invoke(app, ["detectors", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)] == [r["name"] for r in list_detectors()]


def test_flags_show_no_type_in_help():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert re.search(r"--resume\s+continue", result.output)


@pytest.mark.parametrize("misspelt, suggested", [("find.min_snrr", "find.min_snr"), ("fnd.min_snr", "find.min_snr"),
                                                 ("find.threshhold_sigma", "find.threshold_sigma")])
def test_misspelt_config_key_gets_a_suggestion(misspelt, suggested, tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "x.h5"), "-o", str(tmp_path / "r.h5"), "--set",
                                 f"{misspelt}=3"])
    assert result.exit_code == 2
    assert f"did you mean '{suggested}'" in result.output
    section, key = misspelt.split(".")
    (tmp_path / "c.yaml").write_text(f"{section}:\n  {key}: 3\n")
    result = runner.invoke(app, ["config", "-c", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "did you mean" in result.output and (suggested in result.output or section != "find")


def test_link_min_length_drops_short_tracks():
    """Tracks on fewer frames than min_length lose their peaks' track_id (-1); the others are numbered 0, 1, ..."""
    from braggflow.link import link
    from braggflow.schema import new_peak_table

    # track A on frames 0-4, track B on frames 1-2, track C on frame 3 only, far apart
    frame = [0, 1, 2, 3, 4, 1, 2, 3]
    row = [10.0, 10.2, 10.4, 10.6, 10.8, 50.0, 50.1, 90.0]
    col = [10.0] * 5 + [50.0, 50.2, 90.0]
    table = new_peak_table(len(frame), frame=np.array(frame), row=np.array(row), col=np.array(col))
    every = link(table, search_range=2.0)["track_id"].to_numpy()
    assert len(set(every)) == 3
    kept = link(table, search_range=2.0, min_length=3)["track_id"].to_numpy()
    assert (kept[:5] == 0).all() and (kept[5:] == -1).all()
    kept = link(table, search_range=2.0, min_length=2)["track_id"].to_numpy()
    assert sorted(set(kept[:7])) == [0, 1] and kept[7] == -1
    with pytest.raises(Exception, match="min_length"):
        link(table, min_length=0)


def test_best_epoch_text_says_why_a_warm_up_epoch_is_not_best():
    from braggflow.cli.models import best_epoch_text
    from braggflow.training.train import TrainConfig

    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.1}, {"epoch": 3, "val_loss": -1.2},
               {"epoch": 4, "val_loss": -1.5}, {"epoch": 5, "val_loss": -1.4}]
    text = best_epoch_text(history, {"best_epoch": 4}, TrainConfig(warmup_epochs=2))
    assert text.startswith("best epoch 4 (lowest validation loss -1.5000 of epochs 3-5")
    assert "epochs 1-2 warm up" in text


def test_demo_writes_the_truth_and_the_command_time(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--frames", "1", "--peaks", "20", "--method", "com",
                                 "--json", str(tmp_path / "report.json")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert {"frame", "row", "col"} <= set(truth.columns) and len(truth) >= 20
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seconds_command"] >= report["seconds_pipeline"] > 0
    assert report["kernels_compiled"] >= 0 and ("compiled" in report) == (report["kernels_compiled"] > 0)
    assert f"whole command {report['seconds_command']:.1f} s" in result.output
    assert "truth.csv" in result.output


@pytest.mark.realdata
def test_identify_at_80_columns_shows_the_refined_cells_whole(shared_data, tmp_path):
    """The MAPbBr3 GIWAXS frame: every refined cell with its error appears whole in an 80-column terminal."""
    folder = shared_data / "gixd_mapbbr3"
    frame = folder / "S123_MABr_A2_00865-00000.tif"
    result = runner.invoke(app, ["identify", str(frame), *GIXD_GEOMETRY, "--distance-err", "1",
                                 str(PHASES / "MAPbBr3.yaml"), str(PHASES / "PbBr2.yaml"),
                                 "--json", str(tmp_path / "id.json")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Rows per strip" not in result.output  # fabio's chatter stays in the debug log
    assert ELLIPSIS not in result.output
    ranked = json.loads((tmp_path / "id.json").read_text())["0"]["ranked"]
    best = ranked[0]
    assert best["phase"] == "MAPbBr3"
    cells = [f"a={best['a']:.4f}±{best['a_err']:.4f}"]
    pb = next(r for r in ranked if r["phase"] == "PbBr2")
    if pb.get("b_err") and np.isfinite(pb["b_err"]):
        cells += [f"{k}={pb[k]:.4f}±{pb[k + '_err']:.4f}" for k in ("a", "b", "c")]
    for cell in cells:
        assert cell in result.output, (cell, result.output)
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.realdata
def test_azimuthal_on_the_tiff_is_quiet_and_takes_pyfai_options(shared_data, tmp_path):
    """No fabio TIFF message and no scipy PeakPropertyWarning on the terminal; the ranges and polarization apply."""
    frame = shared_data / "gixd_mapbbr3" / "S123_MABr_A2_00865-00000.tif"
    out = tmp_path / "iq.csv"
    result = runner.invoke(app, ["azimuthal", str(frame), "-o", str(out), *GIXD_GEOMETRY, "--polarization", "0.99",
                                 "--radial-range", "0.5", "3.0", "--azimuth-range", "-170", "-10"])
    assert result.exit_code == 0, result.output
    assert "Rows per strip" not in result.output and "Warning" not in result.output
    profile = pd.read_csv(out)
    assert profile["q"].min() >= 0.5 and profile["q"].max() <= 3.0
    result = runner.invoke(app, ["azimuthal", str(frame), "-o", str(out), *GIXD_GEOMETRY, "--polarization", "2"])
    assert result.exit_code == 2 and "--polarization" in result.output


def test_train_says_how_many_patches_came_from_the_frames(tmp_path):
    from braggflow.simulate.frames import simulate_series, write_nexus

    write_nexus(tmp_path / "sim.h5", simulate_series(1, shape=(192, 192), n_peaks=40, seed=2))
    result = runner.invoke(app, ["train", "--simulated", "300", "--frames", str(tmp_path / "sim.h5"), "--epochs", "3",
                                 "--batch-size", "64", "--threads", "1", "--quiet", "--hidden", "16",
                                 "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    found = re.search(r"patches from --frames: (\d+) of (\d+)", result.output)
    assert found, result.output
    real, total = map(int, found.groups())
    assert real > 10 and total - real == 300
    assert re.search(r"best epoch \d \(lowest validation loss", result.output)


def test_watch_takes_the_run_options_and_never_prints_nan(tmp_path):
    """watch with --csv and the geometry options: the first progress line says 'first frame', not 'nan frames/s'."""
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(3):
        frame = rng.poisson(5.0, (128, 128)).astype(np.float32)
        frame[40:43, 50:53] += 500.0
        np.save(tmp_path / "in" / f"f{i:03d}.npy", frame[None])
    result = runner.invoke(app, ["watch", str(tmp_path / "in"), "-o", str(tmp_path / "w.h5"), "--idle-timeout", "1",
                                 "--csv", str(tmp_path / "w.csv"), "--method", "com", "--gain", "1",
                                 "--distance", "100", "--beam-row", "64", "--beam-col", "64", "--pixel-size", "0.1",
                                 "--wavelength", "1.0"])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "first frame" in result.output
    peaks = pd.read_csv(tmp_path / "w.csv")
    assert len(peaks) == 3 and np.isfinite(peaks["q"]).all()  # the geometry options reached the pipeline
    import h5py

    with h5py.File(tmp_path / "w.h5") as h5:  # and the results file's instrument, as run records it
        detector = h5["entry/instrument/detector"]
        assert detector.attrs["NX_class"] == "NXdetector"
        assert abs(float(detector["distance"][()]) - 100.0) < 1e-9 and detector["distance"].attrs["units"] == "mm"
        assert h5["entry/process/geometry_source"][()].decode() == "config"
