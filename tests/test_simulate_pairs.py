"""simulate_series: the demo's default series is pinned; Gaussian populations with close pairs; benchmark frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.errors import BraggflowError
from braggflow.io.results import read_table
from braggflow.simulate.frames import benchmark_series, simulate_series

runner = CliRunner()

# SHA-256 of simulate_series(3, seed=0) (frames, mask, background, truth): the demo's frames and the figures
# published from them (README, docs/benchmarks.md) depend on the default series staying exactly as it is
DEFAULT_SERIES_SHA256 = "8881c87004ed02eea9426dc9e300aaa10194c0def5faacb86bb6c6ff93426328"
# SHA-256 of benchmark_series(1): frame 0 of the pinned benchmark frames (bench/pipeline.py)
BENCHMARK_FRAME0_SHA256 = "44a1ffd61c6ba9b11a4a742c958720d25203fd2ef2e4ca7f3d70aaca0c01f3e8"


def digest(series) -> str:
    """SHA-256 over the frames, mask, background and every truth column (name, dtype, values)."""
    h = hashlib.sha256()
    for a in (series.frames, series.mask, series.background):
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    for name in series.truth.columns:
        col = series.truth[name]
        h.update(name.encode())
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            h.update("\0".join(map(str, col)).encode())
        else:
            v = col.to_numpy()
            h.update(str(v.dtype).encode() + v.tobytes())
    return h.hexdigest()


def pair_distances(t: pd.DataFrame) -> np.ndarray:
    """Distance between the members of each close pair of one frame's truth, px."""
    members = t[t["partner"] >= 0].set_index("peak_id")
    other = members.loc[members["partner"].to_numpy()]
    return np.hypot(members["row"].to_numpy() - other["row"].to_numpy(),
                    members["col"].to_numpy() - other["col"].to_numpy())


def test_default_series_is_unchanged():
    assert digest(simulate_series(3, seed=0)) == DEFAULT_SERIES_SHA256


@pytest.fixture(scope="module")
def gaussian():
    return simulate_series(2, shape=(1024, 1024), n_peaks=600, seed=4, profile="gaussian", sigma=(0.8, 2.0),
                           flux=(2000, 50000), pairs=0.3, pair_sep=(3, 6), variation=0.0)


def test_gaussian_population_kinds_and_ranges(gaussian):
    t = gaussian.truth[gaussian.truth["frame"] == 0]
    assert len(t) == 600 and set(t["kind"]) == {"gaussian"}
    assert (t["eta"] == 0).all() and (t["angle"] == 0).all() and (t["sigma_row"] == t["sigma_col"]).all()
    assert t["sigma_row"].between(0.8, 2.0).all() and t["sigma_row"].max() - t["sigma_row"].min() > 1.0
    assert t["intensity"].between(2000, 50000).all()
    # log-uniform: log(flux) uniform on [log 2000, log 50000]
    lo, hi = np.log(2000), np.log(50000)
    assert stats.kstest(np.log(t["intensity"]), stats.uniform(lo, hi - lo).cdf).pvalue > 0.01
    assert stats.kstest(t["intensity"], stats.uniform(2000, 48000).cdf).pvalue < 1e-6  # and not uniform
    assert t["row"].between(12, 1012).all() and t["col"].between(12, 1012).all()


def test_pair_fraction_and_separations(gaussian):
    for _, t in gaussian.truth.groupby("frame"):
        members = t[t["partner"] >= 0]
        assert len(members) == 180  # 30 % of 600
        by_id = t.set_index("peak_id")
        assert (by_id.loc[members["partner"], "partner"].to_numpy() == members["peak_id"].to_numpy()).all()
        d = pair_distances(t)
        assert d.min() >= 3 and d.max() <= 6 and d.max() - d.min() > 2


def test_intensity_variation_and_drift():
    s = simulate_series(3, shape=(128, 128), n_peaks=10, seed=2, profile="gaussian", pairs=0.4,
                        drift=(0.5, 0.0), variation=0.2)
    t = s.truth.set_index(["frame", "peak_id"]).sort_index()
    assert np.allclose(t.loc[1, "row"] - t.loc[0, "row"], 0.5)
    ratio = (t.loc[1, "intensity"] / t.loc[0, "intensity"]).to_numpy()
    assert np.all((ratio > 0.8 / 1.2 - 1e-9) & (ratio < 1.2 / 0.8 + 1e-9)) and np.ptp(ratio) > 0.01


def test_pair_count_rounds_to_whole_pairs():
    s = simulate_series(1, shape=(128, 128), n_peaks=9, seed=1, profile="gaussian", pairs=0.5)
    assert len(s.truth) == 9 and (s.truth["partner"] >= 0).sum() == 2 * round(0.5 * 9 / 2)
    s = simulate_series(1, shape=(128, 128), n_peaks=9, seed=1, profile="gaussian")
    assert (s.truth["partner"] == -1).all()


def test_mixed_population_with_pairs():
    s = simulate_series(1, shape=(512, 512), n_peaks=200, seed=5, pairs=0.4, pair_sep=(3, 5), gap=False)
    t = s.truth
    assert len(t) == 200
    neighbours = t[t["kind"] == "neighbour"]
    assert len(neighbours) == 80 and (neighbours["partner"] >= 0).all()
    assert (t.loc[t["kind"] != "neighbour", "partner"] == -1).all()
    assert {"gaussian", "pvoigt", "elongated", "broad", "edge"} <= set(t["kind"])
    d = pair_distances(t)
    assert d.min() >= 3 and d.max() <= 5


@pytest.fixture(scope="module")
def bench1():
    return benchmark_series(1)


def test_benchmark_frames_are_pinned(bench1):
    s = bench1
    assert digest(s) == BENCHMARK_FRAME0_SHA256
    t = s.truth
    assert s.frames.shape == (1, 2048, 2048) and len(t) == 100 and set(t["kind"]) == {"gaussian"}
    assert (t["partner"] >= 0).sum() == 30 and not s.mask.any()
    d = pair_distances(t)
    assert d.min() >= 3 and d.max() <= 6
    assert t["intensity"].between(2000, 50000).all() and t["sigma_row"].between(0.8, 2.0).all()
    # flat Poisson background of 50 photons/px away from the spots: mean and variance 50
    far = np.ones((2048, 2048), dtype=bool)
    for r, c in np.rint(t[["row", "col"]].to_numpy()).astype(int):
        far[max(r - 15, 0) : r + 16, max(c - 15, 0) : c + 16] = False
    values = s.frames[0][far].astype(np.float64)
    assert abs(values.mean() - 50) < 0.05 and abs(values.var() / 50 - 1) < 0.01
    assert (s.background == 50).all()


@pytest.mark.parametrize("kwargs, words", [
    (dict(profile="lorentz"), ["profile", "lorentz"]),
    (dict(sigma=(2.0, 1.0)), ["sigma"]),
    (dict(sigma=(0.0, 1.0)), ["sigma"]),
    (dict(flux=(1.0,)), ["flux"]),
    (dict(flux=(1.0, np.inf)), ["flux"]),
    (dict(pairs=1.5), ["pairs"]),
    (dict(pairs=-0.1), ["pairs"]),
    (dict(pair_sep=(5, 3)), ["pair_sep"]),
    (dict(pair_sep=(3, 40), profile="gaussian"), ["pair_sep"]),
    (dict(variation=2.0), ["variation"]),
    (dict(n_hot=-1), ["n_hot"]),
])
def test_bad_values_name_the_parameter(kwargs, words):
    with pytest.raises(BraggflowError) as err:
        simulate_series(1, shape=(64, 64), n_peaks=4, **kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_cli_writes_gaussian_pairs(tmp_path):
    out = tmp_path / "pairs.h5"
    result = runner.invoke(app, ["simulate", str(out), "--frames", "2", "--shape", "128", "128", "--peaks", "20",
                                 "--profile", "gaussian", "--pairs", "0.3", "--pair-sep", "3", "6", "--sigma", "0.8",
                                 "2.0", "--flux", "2000", "50000", "--background", "50", "--flat-background",
                                 "--no-defects"])
    assert result.exit_code == 0, result.output
    truth = read_table(out, "/entry/truth")
    t = truth[truth["frame"] == 0]
    assert len(t) == 20 and (t["partner"] >= 0).sum() == 6 and set(t["kind"]) == {"gaussian"}
    assert t["intensity"].between(1600, 60000).all()  # +-20 % frame-to-frame variation around 2000-50000


def test_cli_benchmark_writes_the_pinned_frames(tmp_path, bench1):
    import h5py

    out = tmp_path / "bench.h5"
    result = runner.invoke(app, ["simulate", str(out), "--benchmark", "--frames", "1"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as h5:
        frame = h5["/entry/data/data"][0]
    assert np.array_equal(frame, bench1.frames[0])


@pytest.mark.parametrize("args, words", [
    (["--pairs", "1.5"], ["--pairs"]),
    (["--pair-sep", "6", "3"], ["--pair-sep"]),
    (["--sigma", "0", "1"], ["--sigma"]),
    (["--flux", "10", "inf"], ["--flux"]),
    (["--profile", "lorentz"], ["--profile"]),
    (["--background", "-1"], ["--background"]),
    (["--frames", "0"], ["--frames"]),
    (["--shape", "32", "32"], ["--shape"]),
    (["--benchmark", "--pairs", "0.3", "--sigma", "1", "2"], ["--benchmark", "--pairs", "--sigma"]),
])
def test_cli_bad_values_name_the_option(tmp_path, args, words):
    result = runner.invoke(app, ["simulate", str(tmp_path / "x.h5"), *args])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error:") and "\n" not in line and all(w in line for w in words), line
    assert not (tmp_path / "x.h5").exists()
