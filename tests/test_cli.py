"""Command line: one readable error line and a non-zero exit for bad input."""

import subprocess
import sys

import numpy as np
import pytest

from braggflow.io.results import read_peaks, read_status


def braggflow(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from braggflow.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sim.h5"
    r = braggflow("simulate", path, "--frames", 3, "--shape", 128, 160, "--peaks", 6, "--seed", 1)
    assert r.returncode == 0, r.stderr
    return path


def test_simulate_and_run_with_csv_parquet(sim_file, tmp_path):
    out = tmp_path / "r.h5"
    r = braggflow("run", sim_file, "-o", out, "--csv", tmp_path / "p.csv", "--parquet", tmp_path / "p.parquet",
                  "--set", "find.threshold_sigma=6", "--method", "gauss")
    assert r.returncode == 0, r.stderr
    assert read_status(out) == "complete"
    table = read_peaks(out)
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "p.csv")) == len(table) == len(pd.read_parquet(tmp_path / "p.parquet"))
    assert (table["method"].astype(str) == "gauss").all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "{missing}", "-o", "{out}"], "no such file"),
        (["run", "{sim}::/entry/nope", "-o", "{out}"], "no dataset '/entry/nope'"),
        (["run", "{sim}", "-o", "{out}", "--method", "magic"], "locate.method"),
        (["run", "{sim}", "-o", "{out}", "--mask", "{badmask}"], "mask"),
        (["run", "{sim}", "-o", "{out}", "--frames", "abc"], "--frames"),
        (["run", "{sim}", "-o", "{out}", "--set", "find.nope=3"], "unknown config key"),
    ],
)
def test_bad_input_one_line_nonzero_exit(sim_file, tmp_path, args, message):
    np.save(tmp_path / "badmask.npy", np.zeros((5, 5)))
    fmt = dict(missing=tmp_path / "none.h5", out=tmp_path / "o.h5", sim=sim_file, badmask=tmp_path / "badmask.npy")
    r = braggflow(*[a.format(**fmt) for a in args])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    out = tmp_path / "o.h5"
    assert not out.exists() or read_status(out) != "complete"


def test_debug_shows_traceback(tmp_path):
    r = braggflow("--debug", "run", tmp_path / "none.h5", "-o", tmp_path / "o.h5")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_config_default_prints_every_key():
    r = braggflow("config", "--default")
    assert r.returncode == 0
    from braggflow.pipeline.config import Config

    for section in ("correct", "find", "locate", "integrate"):
        for key in type(getattr(Config(), section)).model_fields:
            assert f"  {key}: " in r.stdout, key



def test_config_default_redirected_to_a_file_is_the_default_config(tmp_path):
    """`braggflow config --default > my.yaml` gives valid YAML (no line wrapping) that loads as the defaults."""
    from braggflow.pipeline.config import Config, load_config

    r = braggflow("config", "--default")
    path = tmp_path / "my.yaml"
    path.write_text(r.stdout)
    assert load_config(path) == Config()


COMMANDS = ["azimuthal", "config", "convert-weights", "demo", "detect", "detectors", "identify", "link", "models",
            "plot", "remap", "run", "simulate", "train", "train-detector", "watch"]


def test_importing_the_app_gives_every_command_and_no_heavy_import():
    """`from braggflow.cli import app` is complete on its own, and starting the CLI imports no stage library."""
    code = ("import sys, typer.main; from braggflow.cli import app; "
            "print(' '.join(sorted(typer.main.get_command(app).commands))); "
            "print(' '.join(sorted(typer.main.get_command(app).commands['plot'].commands))); "
            "print(' '.join(m for m in ('torch', 'pandas', 'pyFAI', 'dask') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    commands, plots, heavy = (r.stdout.splitlines() + [""] * 3)[:3]
    assert set(COMMANDS) <= set(commands.split())  # every command of this list (others may join)
    assert plots.split() == ["animate", "frame", "series", "tracks"]
    assert heavy == ""


def test_app_module_holds_the_complete_app():
    from typer.testing import CliRunner

    from braggflow.cli.app import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in result.output, name


def test_method_braggnn_warns_once_and_runs_nn(sim_file, tmp_path):
    """--method braggnn is a deprecated name of nn: one 'warning:' line, and the peaks of --method nn."""
    import pandas as pd

    old = braggflow("run", sim_file, "-o", tmp_path / "old.h5", "--method", "braggnn")
    new = braggflow("run", sim_file, "-o", tmp_path / "new.h5", "--method", "nn")
    assert old.returncode == 0 and new.returncode == 0, old.stderr + new.stderr
    warnings = [line for line in old.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'nn'" in warnings[0] and "deprecated" in warnings[0], old.stderr
    assert "DeprecationWarning" not in old.stderr  # one line, not Python's two-line warning
    assert not [line for line in new.stderr.splitlines() if line.startswith("warning:")], new.stderr
    a, b = read_peaks(tmp_path / "old.h5"), read_peaks(tmp_path / "new.h5")
    assert len(a) > 0 and (a["method"].astype(str) == "nn").all()
    pd.testing.assert_frame_equal(a, b)


def test_backend_option_sets_locate_backend(sim_file, tmp_path):
    from typer.testing import CliRunner

    from braggflow.cli import app
    from braggflow.pipeline.config import read_config

    out = tmp_path / "r.h5"
    result = CliRunner().invoke(app, ["run", str(sim_file), "-o", str(out), "--method", "com", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert read_config(out).locate.backend == "torch"


def test_demo_default_method_is_nn_when_a_network_is_shipped(monkeypatch):
    from braggflow.cli.core import _default_demo_method
    from braggflow.nn.files import list_models

    assert _default_demo_method() == ("nn" if any(row["default"] for row in list_models()) else "com")
    monkeypatch.setattr("braggflow.nn.files.list_models", lambda: [])
    assert _default_demo_method() == "com"


def test_help_and_models_never_call_the_default_network_braggnn_or_a_cnn():
    from typer.testing import CliRunner

    from braggflow.cli import app

    runner = CliRunner()
    for command in ("run", "watch", "demo"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        text = " ".join(result.output.split())
        assert "or nn (a network: see --model; 'braggnn' is a deprecated name of nn)" in text, command
        assert "network for --method nn: shipped name (braggflow models) or model file" in text, command
        assert "--backend" in text, command
        assert "BraggNN" not in text and "CNN" not in text, command
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "--method nn" in result.output
    assert "BraggNN" not in result.output and "CNN" not in result.output


def test_only_braggflow_deprecation_warnings_are_shown_once(capsys):
    import warnings

    from braggflow.cli.common import user_warnings
    from braggflow.locate.options import LocateConfig

    with user_warnings():
        assert LocateConfig(method="braggnn").method == "nn"
        LocateConfig(method="braggnn")
        warnings.warn("raised outside braggflow", DeprecationWarning, stacklevel=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: locate.method 'braggnn' is deprecated"), lines
