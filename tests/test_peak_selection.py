"""find.max_size and find.d_min / find.d_max: the peaks kept after finding, as dials.find_spots' limits."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.errors import ConfigError
from braggflow.io.results import read_peaks
from braggflow.pipeline.config import FindOptions, apply_overrides, load_config
from braggflow.pipeline.selection import check_selection, select_peaks
from braggflow.schema import new_peak_table
from braggflow.simulate.frames import simulate_series, write_nexus

runner = CliRunner()
GEOMETRY = ["--distance", "100", "--beam-row", "128", "--beam-col", "128", "--pixel-size", "0.1",
            "--wavelength", "0.7"]


def test_select_peaks_against_known_rows():
    table = new_peak_table(5, npix=np.array([3, 10, 40, 200, 8]), d=np.array([0.8, 1.2, 2.0, 3.5, np.nan]))
    assert select_peaks(table, FindOptions()) is table
    assert list(select_peaks(table, FindOptions(max_size=40))["npix"]) == [3, 10, 40, 8]
    kept = select_peaks(table, FindOptions(d_min=1.0, d_max=3.0))
    assert list(kept["d"]) == [1.2, 2.0]  # NaN d: not known to be inside the shell
    with pytest.raises(ValueError, match="d_min"):
        FindOptions(d_min=3.0, d_max=2.0)
    with pytest.raises(ConfigError, match="geometry"):
        check_selection(FindOptions(d_min=1.0), geometry_known=False)
    check_selection(FindOptions(max_size=5), geometry_known=False)


def test_keys_are_config_keys():
    config = apply_overrides(load_config(None), ["find.max_size=50", "find.d_min=1.5"])
    assert config.find.max_size == 50 and config.find.d_min == 1.5


def test_run_applies_the_limits(tmp_path):
    """A simulated 256x256 frame: with --d-min/--d-max and --max-size every peak kept is inside, fewer are kept."""
    write_nexus(tmp_path / "sim.h5", simulate_series(1, shape=(256, 256), n_peaks=60, seed=3))
    base = ["run", str(tmp_path / "sim.h5"), "--method", "com", *GEOMETRY]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "all.h5")])
    assert result.exit_code == 0, result.output
    every = read_peaks(tmp_path / "all.h5")
    d_lo, d_hi = np.percentile(every["d"], [25, 75])
    size = int(np.median(every["npix"]))
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "cut.h5"), "--d-min", f"{d_lo}", "--d-max", f"{d_hi}",
                                 "--max-size", str(size)])
    assert result.exit_code == 0, result.output
    cut = read_peaks(tmp_path / "cut.h5")
    assert 0 < len(cut) < len(every)
    assert (cut["d"] >= d_lo).all() and (cut["d"] <= d_hi).all() and (cut["npix"] <= size).all()
    inside = every[(every["d"] >= d_lo) & (every["d"] <= d_hi) & (every["npix"] <= size)]
    assert len(cut) == len(inside)


def test_resolution_limits_without_geometry_are_an_error(tmp_path):
    write_nexus(tmp_path / "sim.h5", simulate_series(1, shape=(128, 128), n_peaks=10, seed=3))
    result = runner.invoke(app, ["run", str(tmp_path / "sim.h5"), "-o", str(tmp_path / "r.h5"), "--method", "com",
                                 "--d-min", "1.0"])
    assert result.exit_code == 2
    assert "find.d_min" in result.output and "geometry" in result.output
