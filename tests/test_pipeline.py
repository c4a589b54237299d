"""The per-frame pipeline, the runner, the results file, resume and crash safety."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from braggflow.errors import BraggflowError, ConfigError, InputFileError
from braggflow.io.results import ResultsWriter, read_group, read_peaks, read_process, read_status, write_group
from braggflow.pipeline import parse_frame_range, process_frame, run
from braggflow.pipeline.config import Config, apply_overrides, config_from_dict, default_config_yaml, read_config
from braggflow.simulate.frames import match_peaks, simulate_series, write_nexus


@pytest.fixture(scope="module")
def small_series():
    return simulate_series(6, shape=(256, 256), n_peaks=12, seed=3)


@pytest.fixture(scope="module")
def series_file(tmp_path_factory, small_series):
    path = tmp_path_factory.mktemp("sim") / "frames.h5"
    write_nexus(path, small_series)
    return path


def test_process_frame_recovers_simulated_peaks(small_series):
    config = Config()
    tables = [process_frame(f, config=config, frame_index=i) for i, f in enumerate(small_series.frames)]
    import pandas as pd

    table = pd.concat(tables, ignore_index=True)
    m = match_peaks(table, small_series.truth)
    findable = ~small_series.truth["masked"].to_numpy()
    assert (m["found_index"].to_numpy()[findable] >= 0).mean() >= 0.9
    assert m["distance"].median() < 0.15
    assert (table["intensity"] > 0).all() and table["method"].astype(str).eq("com").all()


def test_run_writes_nexus_results_with_provenance(series_file, small_series, tmp_path):
    out = tmp_path / "res.h5"
    table = run(str(series_file), config=Config(), output=out)
    assert read_status(out) == "complete"
    again = read_peaks(out)
    assert len(again) == len(table) and set(again["frame"]) == set(range(6))
    np.testing.assert_allclose(again["row"], table["row"])
    assert str(again["method"].dtype) == "category"
    proc = read_process(out)
    assert proc["program"] == "braggflow" and proc["inputs"][0]["sha256"] and proc["inputs"][0]["size"] > 0
    assert read_config(out) == Config()
    assert not (tmp_path / "res.h5.journal").exists()
    import h5py

    with h5py.File(out) as h5:
        assert h5["entry"].attrs["NX_class"] == "NXentry"
        assert h5["entry/peaks"].attrs["NX_class"] == "NXdata"
        assert h5["entry/peaks/row"].attrs["units"] == "pixel"
    import pandas as pd

    write_group(out, "extra", tables={"t": pd.DataFrame({"a": [1, 2]})}, attrs={"note": "x", "d": {"k": 1}})
    tables, attrs = read_group(out, "extra")
    assert tables["t"]["a"].tolist() == [1, 2] and attrs["note"] == "x"
    assert read_status(out) == "complete" and len(read_peaks(out)) == len(table)


def test_frame_range_and_resume_do_not_duplicate(series_file, tmp_path):
    out = tmp_path / "res.h5"
    full = run(str(series_file), output=tmp_path / "full.h5")
    part = run(str(series_file), output=out, frames_range=parse_frame_range("0:3", 6))
    # complete for the frames asked; --resume goes on with the rest of the series
    assert set(part["frame"]) <= {0, 1, 2} and read_status(out) == "complete"
    resumed = run(str(series_file), output=out, resume=True)
    assert read_status(out) == "complete"
    assert len(resumed) == len(full)
    assert resumed.groupby("frame").size().to_dict() == full.groupby("frame").size().to_dict()
    with pytest.raises(InputFileError, match="already complete"):
        run(str(series_file), output=out, resume=True)
    with pytest.raises(InputFileError, match="different configuration"):
        run(str(series_file), output=tmp_path / "p2.h5", frames_range=range(2))
        run(str(series_file), output=tmp_path / "p2.h5", resume=True, config=Config(find={"threshold_sigma": 7}))


def test_bad_frame_keeps_finished_frames(tmp_path):
    frames = np.random.default_rng(0).poisson(5, size=(4, 64, 64)).astype(np.float32)
    frames[2] = np.nan
    out = tmp_path / "r.h5"
    with pytest.raises(BraggflowError, match="frame 2.*NaN"):
        run(frames, output=out)
    assert read_status(out) == "incomplete"
    from braggflow.io.results import read_frames_done

    assert read_frames_done(out) == {0, 1}


def test_kill_9_mid_run_then_resume(tmp_path):
    sim = simulate_series(40, shape=(256, 256), n_peaks=10, seed=5)
    src = tmp_path / "frames.h5"
    write_nexus(src, sim)
    out = tmp_path / "res.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    code = (
        "import time, braggflow.pipeline as p\n"
        "orig = p.process_frame\n"
        "def slow(*a, **k):\n    time.sleep(0.1)\n    return orig(*a, **k)\n"
        "p.process_frame = slow\n"
        f"p.run({str(src)!r}, output={str(out)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    journal = tmp_path / "res.h5.journal"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(journal.glob("batch_*.npz"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_status(out) == "running"  # never marked complete
    partial = read_peaks(out)  # readable, with the journaled frames
    assert len(partial) > 0 and partial["frame"].max() < 39
    resumed = run(str(src), output=out, resume=True)
    full = run(str(src))
    assert read_status(out) == "complete"
    assert resumed.groupby("frame").size().to_dict() == full.groupby("frame").size().to_dict()


def test_config_defaults_roundtrip_and_overrides():
    import yaml

    text = default_config_yaml()
    assert "threshold_sigma: 5.0  #" in text
    assert config_from_dict(yaml.safe_load(text)) == Config()
    c = apply_overrides(Config(), ["find.threshold_sigma=7", "locate.method=gauss"])
    assert c.find.threshold_sigma == 7 and c.locate.method == "gauss"
    with pytest.raises(ConfigError, match="unknown config key 'find.nope'"):
        apply_overrides(Config(), ["find.nope=1"])
    with pytest.raises(ConfigError, match="locate.method"):
        apply_overrides(Config(), {"locate.method": "magic"})
    with pytest.raises(ConfigError, match="--frames"):
        parse_frame_range("5", 10)


def test_resultswriter_empty_frames_count_as_done(tmp_path):
    from braggflow.schema import empty_peak_table

    w = ResultsWriter(tmp_path / "r.h5")
    w.add(0, empty_peak_table())
    w.close(complete=False)
    w2 = ResultsWriter(tmp_path / "r.h5", resume=True)
    assert w2.done_frames == {0}


def test_streak_longer_than_the_patch_gets_its_region_centroid(rng):
    """A streak (sigma 6 x 1 px, rotated) is centred on its whole region, a compact peak by the patch method."""
    from braggflow.profiles.render import peak_profile

    rows = np.arange(128)
    lam = 20.0 + 30000 * peak_profile(rows, rows, row=40.3, col=60.7, sigma_row=6.0, sigma_col=1.0, angle=0.4)
    lam += 5000 * peak_profile(rows, rows, row=95.2, col=30.4, sigma_row=1.2, sigma_col=1.2)
    frame = rng.poisson(lam).astype(np.float32)
    errors = {}
    for extended in ("region", "patch"):
        table = process_frame(frame, config=Config(locate={"method": "com", "extended": extended}))
        assert len(table) == 2
        streak = table.iloc[np.argmin(np.hypot(table["row"] - 40.3, table["col"] - 60.7))]
        compact = table.iloc[np.argmin(np.hypot(table["row"] - 95.2, table["col"] - 30.4))]
        errors[extended] = np.hypot(streak["row"] - 40.3, streak["col"] - 60.7)
        assert compact["method"] == "com"
        assert streak["method"] == ("region" if extended == "region" else "com")
    # the streak's brightest pixel and an 11 x 11 patch around it miss its wings; the region does not
    assert errors["region"] < 0.1
    assert errors["patch"] > 2 * errors["region"]
    # integration follows the region beyond its default 17 x 17 window: the whole streak is summed
    assert abs(streak["intensity"] - 30000) < 4 * streak["intensity_err"]
    assert abs(compact["intensity"] - 5000) < 4 * compact["intensity_err"]


def test_write_group_keeps_missing_values_of_text_columns(tmp_path):
    """Text columns with missing entries (None / NaN / NA) round-trip as missing, not as the text 'nan'."""
    import pandas as pd

    path = tmp_path / "r.h5"
    writer = ResultsWriter(path, config=Config(), sources=[])
    writer.close(complete=True)
    table = pd.DataFrame({"name": ["a", None, "c"], "other": pd.array(["x", pd.NA, "z"], dtype="string"),
                          "value": [1.0, 2.0, 3.0]})
    write_group(path, "extra", tables={"t": table}, attrs={"k": 1})
    tables, attrs = read_group(path, "extra")
    back = tables["t"]
    assert back["name"].tolist()[0] == "a" and pd.isna(back["name"].tolist()[1]) and back["name"].tolist()[2] == "c"
    assert pd.isna(back["other"].tolist()[1]) and back["other"].tolist()[2] == "z"
    assert back["value"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("method", ["com", "nn"])
def test_saturated_peak_is_fitted_without_its_clipped_core(rng, method):
    """A peak clipped at the uint16 maximum: com and the network hand it to a Gaussian fit that leaves the
    clipped pixels out."""
    from braggflow.profiles.render import peak_profile
    from braggflow.schema import Flag

    rows = np.arange(96)
    lam = 20 + 3e6 * peak_profile(rows, rows, row=50.3, col=40.8, sigma_row=1.5, sigma_col=1.5)
    frame = np.minimum(rng.poisson(lam), 65535).astype(np.uint16)
    assert (frame == 65535).sum() > 10
    errors = {}
    for policy in ("fit", "method"):
        peak = process_frame(frame, config=Config(locate={"method": method, "saturated": policy})).iloc[0]
        assert int(peak["flags"]) & Flag.SATURATED
        assert peak["method"] == ("gauss" if policy == "fit" else method)
        errors[policy] = np.hypot(peak["row"] - 50.3, peak["col"] - 40.8)
    assert errors["fit"] < 0.02 and errors["method"] > 5 * errors["fit"]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python quick start runs as written (on a small simulated sim.h5)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "open_frames" in b)
    write_nexus(tmp_path / "sim.h5", simulate_series(2, shape=(256, 256), n_peaks=10, seed=5))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert len(namespace["located"]) == len(namespace["found"]) > 0
    assert set(namespace["results"]["frame"]) == {0, 1}
    assert (tmp_path / "results.h5").exists()


def test_dask_workers_give_the_serial_results(small_series, tmp_path):
    """run(..., workers=2) on a Dask LocalCluster writes the same peaks as the serial run, each frame once."""
    serial = run(small_series.frames, config=Config(), output=tmp_path / "serial.h5")
    parallel = run(small_series.frames, config=Config(), output=tmp_path / "dask.h5", workers=2)
    key = ["frame", "row", "col"]
    serial = serial.sort_values(key, ignore_index=True)
    parallel = parallel.sort_values(key, ignore_index=True)
    assert len(parallel) == len(serial) > 0
    np.testing.assert_allclose(parallel[["row", "col", "intensity"]].to_numpy(),
                               serial[["row", "col", "intensity"]].to_numpy())
    assert read_status(tmp_path / "dask.h5") == "complete"


def test_bad_values_name_themselves(tmp_path):
    """A binary config file, npt below 1 and negative workers are refused with a message naming them."""
    from braggflow.errors import ConfigError
    from braggflow.geometry import Geometry, azimuthal_profile, remap
    from braggflow.pipeline import run
    from braggflow.pipeline.config import load_config

    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\x80\x81\x00\xff" * 40)
    with pytest.raises(ConfigError, match="config.yaml: not a text file"):
        load_config(binary)
    from braggflow.geometry import GeometryConfig

    geometry = Geometry.from_config(GeometryConfig(distance_mm=100.0, pixel_size_mm=0.1, wavelength_A=1.0,
                                                   beam_center_row=32.0, beam_center_col=32.0))
    frame = np.ones((64, 64))
    with pytest.raises(ConfigError, match="npt"):
        azimuthal_profile(frame, geometry, npt=0)
    with pytest.raises(ConfigError, match="npt"):
        remap(frame, geometry, to="polar", npt=(0, 10))
    with pytest.raises(ConfigError, match="workers"):
        run(np.zeros((2, 8, 8)), workers=-1)


@pytest.mark.parametrize("override, key", [
    ("find.max_peaks=-1", "find.max_peaks"),
    ("integrate.radius=-3", "integrate.radius"),
    ("integrate.radius=0", "integrate.radius"),
    ("correct.saturation=-1", "correct.saturation"),
    ("find.threshold=-5", "find.threshold"),
    ("find.tile=100000", "find.tile"),
    ("integrate.background_width=.inf", "integrate.background_width"),
    ("locate.patch_size=10", "locate.patch_size"),
    ("find.threshold_sigma=[1", "find.threshold_sigma"),
])
def test_senseless_values_are_refused_naming_the_key(override, key):
    from braggflow.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(Config(), [override])


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    from braggflow.errors import ConfigError
    from braggflow.pipeline.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("find:\n  threshold_sigma: 5\n  threshold_sigma: 7\n")
    with pytest.raises(ConfigError, match="threshold_sigma' is given twice"):
        load_config(path)


def test_a_frame_range_that_selects_nothing_is_refused():
    from braggflow.errors import ConfigError
    from braggflow.pipeline import parse_frame_range

    assert parse_frame_range("2:5", 20) == range(2, 5)
    for text in ("100:200", "10:2"):
        with pytest.raises(ConfigError, match="selects no frame of a series of 20"):
            parse_frame_range(text, 20)


def test_a_frame_range_takes_a_step():
    from braggflow.errors import ConfigError
    from braggflow.pipeline import parse_frame_range

    assert list(parse_frame_range("::5", 20)) == [0, 5, 10, 15]
    assert list(parse_frame_range("3:12:4", 20)) == [3, 7, 11]
    assert list(parse_frame_range("-6::2", 20)) == [14, 16, 18]
    for text, message in (("0:10:0", "STEP must be a positive"), ("10:0:-1", "STEP must be a positive"),
                          ("0:10:x", "must be integers"), ("0:1:2:3", "expected START:STOP")):
        with pytest.raises(ConfigError, match=message):
            parse_frame_range(text, 20)


def test_local_workers_are_bounded_by_the_cores():
    import os

    from braggflow.errors import ConfigError
    from braggflow.pipeline import check_workers

    check_workers(0)
    check_workers(os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="this machine's cores"):
        check_workers((os.cpu_count() or 1) + 1)
    with pytest.raises(ConfigError, match="--workers -1"):
        check_workers(-1)
