"""Bad input on the command line: one ``error:`` line naming the file or option, exit code 2, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.simulate.frames import simulate_series, write_nexus

runner = CliRunner()

SI = Path(__file__).parent / "data" / "phases" / "Si.yaml"
GEOMETRY = ["--distance", "100", "--beam-row", "5", "--beam-col", "5", "--pixel-size", "0.1", "--wavelength", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with a small simulated series, a results file made from it, and many broken inputs."""
    d = tmp_path_factory.mktemp("bad-inputs")
    sim = simulate_series(2, shape=(64, 80), n_peaks=4, seed=2)
    write_nexus(d / "sim.h5", sim)
    result = runner.invoke(app, ["run", str(d / "sim.h5"), "-o", str(d / "res.h5"), "--method", "com"])
    assert result.exit_code == 0, result.output

    (d / "empty.h5").write_bytes(b"")
    data = (d / "sim.h5").read_bytes()
    (d / "trunc.h5").write_bytes(data[: len(data) // 3])
    (d / "text.h5").write_text("not an HDF5 file\n")
    with h5py.File(d / "noimg.h5", "w") as h5:
        h5["values"] = np.arange(5)
    (d / "emptydir").mkdir()
    for name in ("mask_bad", "dark_bad", "flat_bad"):
        np.save(d / f"{name}.npy", np.ones((5, 5)))
    (d / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "unknown.yaml").write_text("find:\n  nope: 3\n")
    (d / "notyaml.yaml").write_text("find: [1, 2\n  : : :\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "bad.poni").write_text("Distance: abc\n")
    (d / "bad.cif").write_text("loop_ loop_ ;;\x00")
    (d / "nokey_phase.yaml").write_text("name: X\n")
    (d / "badsg_phase.yaml").write_text("name: X\nspace_group: Q99\ncell: [1, 1, 1, 90, 90, 90]\natoms: []\n")
    (d / "broken.pt").write_bytes(b"\x00" * 10)
    (d / "broken.pth").write_bytes(b"\x00" * 10)
    (d / "text.pt").write_text("hello")
    (d / "nocols.csv").write_text("a,b\n1,2\n")
    (d / "bin.csv").write_bytes(bytes(range(256)))
    np.save(d / "mask_half.npy", np.full((64, 80), 0.5))  # a flat field given as a mask
    np.save(d / "mask_ones.npy", np.ones((64, 80), np.uint8))  # an inverted mask
    np.save(d / "flat_zero.npy", np.zeros((64, 80)))
    (d / "outdir.h5").mkdir()
    (d / "loop.h5").symlink_to(d / "loop.h5")
    from fabio.cbfimage import CbfImage

    CbfImage(data=sim.frames[0].astype(np.int32)).write(str(d / "whole.cbf"))
    cbf = (d / "whole.cbf").read_bytes()
    (d / "trunc.cbf").write_bytes(cbf[: len(cbf) * 6 // 10])
    return d


# (id, arguments, substrings of the error line); {d}: the fixture folder, {t}: a fresh folder for outputs
CASES = [
    # input frames
    ("missing-input", "run {d}/missing.h5 -o {t}/o.h5", ["missing.h5", "no such file"]),
    ("second-input-missing", "run {d}/sim.h5 {d}/missing.h5 -o {t}/o.h5", ["missing.h5"]),
    ("empty-file", "run {d}/empty.h5 -o {t}/o.h5", ["empty.h5", "empty"]),
    ("truncated-hdf5", "run {d}/trunc.h5 -o {t}/o.h5", ["trunc.h5"]),
    ("text-named-h5", "run {d}/text.h5 -o {t}/o.h5", ["text.h5"]),
    ("corrupt-npy-frames", "run {d}/bad.npy -o {t}/o.h5", ["bad.npy"]),
    ("wrong-dataset-option", "run {d}/sim.h5 -o {t}/o.h5 --dataset /entry/nope", ["/entry/nope"]),
    ("wrong-dataset-in-path", "run {d}/sim.h5::/entry/nope -o {t}/o.h5", ["/entry/nope"]),
    ("hdf5-without-image", "run {d}/noimg.h5 -o {t}/o.h5", ["noimg.h5"]),
    ("empty-folder", "run {d}/emptydir -o {t}/o.h5", ["emptydir"]),
    ("glob-matches-nothing", "run {d}/nomatch*.h5 -o {t}/o.h5", ["nomatch*.h5"]),
    ("input-symlink-loop", "run {d}/loop.h5 -o {t}/o.h5", ["loop.h5", "symbolic link loop"]),
    ("truncated-cbf", "run {d}/trunc.cbf -o {t}/o.h5", ["trunc.cbf", "truncated CBF"]),
    # corrections and geometry
    ("mask-wrong-shape", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/mask_bad.npy", ["mask_bad.npy", "shape"]),
    ("dark-wrong-shape", "run {d}/sim.h5 -o {t}/o.h5 --dark {d}/dark_bad.npy", ["dark_bad.npy", "shape"]),
    ("flat-wrong-shape", "run {d}/sim.h5 -o {t}/o.h5 --flat {d}/flat_bad.npy", ["flat_bad.npy", "shape"]),
    ("mask-missing", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/missing_mask.npy", ["missing_mask.npy"]),
    ("mask-corrupt", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/bad.npy", ["bad.npy"]),
    ("mask-symlink-loop", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/loop.h5", ["mask file", "loop.h5", "link loop"]),
    ("mask-of-fractions", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/mask_half.npy",
     ["mask file", "mask_half.npy", "0.5", "whole numbers"]),
    ("mask-masks-everything", "run {d}/sim.h5 -o {t}/o.h5 --mask {d}/mask_ones.npy",
     ["mask file", "mask_ones.npy", "every pixel"]),
    ("flat-all-zero", "run {d}/sim.h5 -o {t}/o.h5 --flat {d}/flat_zero.npy", ["flat", "flat_zero.npy", "positive"]),
    ("poni-missing", "run {d}/sim.h5 -o {t}/o.h5 --poni {d}/missing.poni", ["missing.poni"]),
    ("poni-bad", "run {d}/sim.h5 -o {t}/o.h5 --poni {d}/bad.poni", ["bad.poni"]),
    # options and configuration
    ("set-unknown-key", "run {d}/sim.h5 -o {t}/o.h5 --set find.nope=3", ["find.nope"]),
    ("set-bad-value", "run {d}/sim.h5 -o {t}/o.h5 --set find.threshold_sigma=abc", ["find.threshold_sigma"]),
    ("set-without-value", "run {d}/sim.h5 -o {t}/o.h5 --set nosection", ["--set", "nosection"]),
    ("set-unknown-geometry-key", "run {d}/sim.h5 -o {t}/o.h5 --set geometry.nope=1", ["geometry.nope"]),
    ("set-bad-backend", "run {d}/sim.h5 -o {t}/o.h5 --set locate.backend=nope", ["locate.backend"]),
    ("unknown-method", "run {d}/sim.h5 -o {t}/o.h5 --method magic", ["locate.method"]),
    ("unknown-backend", "run {d}/sim.h5 -o {t}/o.h5 --method nn --backend nope", ["locate.backend"]),
    ("threshold-negative", "run {d}/sim.h5 -o {t}/o.h5 --threshold-sigma -1", ["find.threshold_sigma"]),
    ("gain-zero", "run {d}/sim.h5 -o {t}/o.h5 --gain 0", ["correct.gain"]),
    ("frames-not-a-range", "run {d}/sim.h5 -o {t}/o.h5 --frames abc", ["--frames", "abc"]),
    ("frames-not-integers", "run {d}/sim.h5 -o {t}/o.h5 --frames a:b", ["--frames", "a:b"]),
    ("workers-negative", "run {d}/sim.h5 -o {t}/o.h5 --workers -1", ["--workers"]),
    ("output-not-h5", "run {d}/sim.h5 -o {t}/o.txt", ["o.txt"]),
    ("output-is-a-folder", "run {d}/sim.h5 -o {d}/outdir.h5 --overwrite", ["outdir.h5", "is a folder"]),
    ("output-symlink-loop", "run {d}/sim.h5 -o {d}/loop.h5 --overwrite", ["loop.h5", "symbolic link loop"]),
    ("device-unknown", "run {d}/sim.h5 -o {t}/o.h5 --set locate.device=quantum",
     ["locate.device", "quantum", "cuda:N"]),
    ("config-unknown-key", "run {d}/sim.h5 -o {t}/o.h5 -c {d}/unknown.yaml", ["unknown.yaml", "find.nope"]),
    ("config-not-yaml", "run {d}/sim.h5 -o {t}/o.h5 -c {d}/notyaml.yaml", ["notyaml.yaml", "YAML"]),
    ("config-not-mapping", "run {d}/sim.h5 -o {t}/o.h5 -c {d}/list.yaml", ["list.yaml", "mapping"]),
    ("config-missing", "run {d}/sim.h5 -o {t}/o.h5 -c {d}/missing.yaml", ["missing.yaml"]),
    ("config-command-unknown-key", "config -c {d}/unknown.yaml", ["unknown.yaml", "find.nope"]),
    ("config-command-not-yaml", "config -c {d}/notyaml.yaml", ["notyaml.yaml"]),
    # models
    ("model-missing", "run {d}/sim.h5 -o {t}/o.h5 --method nn --model {d}/missing_model.pt", ["missing_model.pt"]),
    ("model-unknown-name", "run {d}/sim.h5 -o {t}/o.h5 --method nn --model nosuchmodel", ["nosuchmodel"]),
    ("model-broken", "run {d}/sim.h5 -o {t}/o.h5 --method nn --model {d}/broken.pt", ["broken.pt"]),
    ("model-text", "run {d}/sim.h5 -o {t}/o.h5 --method nn --model {d}/text.pt", ["text.pt"]),
    ("convert-weights-broken", "convert-weights {d}/broken.pth -o {t}/w.pt", ["broken.pth"]),
    ("convert-weights-text", "convert-weights {d}/text.pt -o {t}/w.pt", ["text.pt"]),
    ("convert-weights-missing", "convert-weights {d}/missing.pth", ["missing.pth"]),
    ("train-bad-hidden", "train --hidden abc --simulated 10 -o {t}/m.pt", ["--hidden"]),
    ("train-bad-extra-kind", "train --extra-kind foo --simulated 10 -o {t}/m.pt", ["--extra-kind"]),
    ("train-bad-sim-sigma", "train --sim-sigma 1 --simulated 10 -o {t}/m.pt", ["--sim-sigma"]),
    ("train-unknown-arch", "train --arch nope --simulated 10 -o {t}/m.pt", ["arch", "nope"]),
    ("train-even-size", "train --size 4 --simulated 10 -o {t}/m.pt", ["size"]),
    ("train-unknown-labels", "train --labels nope --simulated 10 -o {t}/m.pt", ["labels", "nope"]),
    ("train-frames-missing", "train --frames {d}/missing_dir --simulated 0 -o {t}/m.pt", ["missing_dir"]),
    # phases
    ("identify-bad-cif", "identify {d}/res.h5 --cif {d}/bad.cif", ["bad.cif"]),
    ("identify-missing-cif", "identify {d}/res.h5 --cif {d}/missing.cif", ["missing.cif"]),
    ("identify-missing-phase", "identify {d}/res.h5 --phase {d}/missing_phase.yaml", ["missing_phase.yaml"]),
    ("identify-phase-without-key", "identify {d}/res.h5 --phase {d}/nokey_phase.yaml", ["nokey_phase.yaml"]),
    ("identify-phase-bad-group", "identify {d}/res.h5 --phase {d}/badsg_phase.yaml", ["badsg_phase.yaml", "Q99"]),
    ("identify-no-phase", "identify {d}/res.h5", ["--cif", "--phase"]),
    ("identify-rings-and-spots", "identify {d}/res.h5 --rings --spots --cif {d}/bad.cif", ["--rings", "--spots"]),
    ("identify-frame-without-geometry", "identify {d}/sim.h5 --phase " + str(SI), ["sim.h5", "--poni"]),
    ("identify-pattern-matches-nothing", "identify {d}/res.h5 {d}/nomatch*.cif", ["nomatch*.cif", "no file"]),
    ("identify-folder-without-structures", "identify {d}/res.h5 --cif {d}/emptydir", ["emptydir", "structure"]),
    ("identify-gixd-and-rings", "identify {d}/res.h5 --gixd --rings " + str(SI), ["--gixd", "--rings"]),
    ("identify-p-max-zero", "identify {d}/res.h5 --p-max 0 " + str(SI), ["--p-max"]),
    ("azimuthal-no-geometry", "azimuthal {d}/sim.h5 -o {t}/a.csv", ["--poni"]),
    ("azimuthal-poni-missing", "azimuthal {d}/sim.h5 -o {t}/a.csv --poni {d}/missing.poni", ["missing.poni"]),
    ("azimuthal-unknown-unit", "azimuthal {d}/sim.h5 -o {t}/a.csv --unit nope " + " ".join(GEOMETRY), ["unit", "nope"]),
    ("azimuthal-zero-bins", "azimuthal {d}/sim.h5 -o {t}/a.csv --npt 0 " + " ".join(GEOMETRY), ["--npt"]),
    ("azimuthal-mask-wrong-shape", "azimuthal {d}/sim.h5 -o {t}/a.csv --mask {d}/mask_bad.npy " + " ".join(GEOMETRY),
     ["mask_bad.npy", "shape"]),
    ("remap-bad-output", "remap {d}/sim.h5 -o {t}/a.xyz " + " ".join(GEOMETRY), ["a.xyz"]),
    ("remap-unknown-target", "remap {d}/sim.h5 -o {t}/a.npz --to nope " + " ".join(GEOMETRY), ["--to", "nope"]),
    ("remap-zero-bins", "remap {d}/sim.h5 -o {t}/a.npz --npt 0 " + " ".join(GEOMETRY), ["--npt"]),
    # series
    ("link-not-results", "link {d}/sim.h5", ["sim.h5"]),
    ("link-missing", "link {d}/missing.h5", ["missing.h5"]),
    ("link-not-hdf5", "link {d}/text.h5", ["text.h5"]),
    ("link-omega-with-memory", "link {d}/res.h5 --omega --memory 2", ["--memory", "--omega"]),
    ("link-negative-range", "link {d}/res.h5 --search-range -1", ["search_range"]),
    ("link-omega-source-missing", "link {d}/res.h5 --omega --source {d}/missing.h5", ["missing.h5"]),
    ("plot-missing", "plot frame {d}/missing.h5 -o {t}/f.png", ["missing.h5"]),
    ("plot-not-results", "plot frame {d}/sim.h5 -o {t}/f.png", ["sim.h5"]),
    ("plot-frame-outside", "plot frame {d}/res.h5 --frame 99 -o {t}/f.png", ["--frame", "99"]),
    ("plot-bad-region", "plot frame {d}/res.h5 --region abc -o {t}/f.png", ["--region", "abc"]),
    ("plot-source-missing", "plot frame {d}/res.h5 --source {d}/missing.h5 -o {t}/f.png", ["missing.h5"]),
    ("plot-reference-missing", "plot frame {d}/res.h5 --reference {d}/missing.csv -o {t}/f.png", ["missing.csv"]),
    ("plot-reference-not-hdf5", "plot frame {d}/res.h5 --reference {d}/text.h5 -o {t}/f.png", ["text.h5"]),
    ("plot-reference-no-columns", "plot series {d}/res.h5 --reference {d}/nocols.csv -o {t}/s.png", ["nocols.csv"]),
    ("plot-reference-not-csv", "plot series {d}/res.h5 --reference {d}/bin.csv -o {t}/s.png", ["bin.csv"]),
    ("plot-unknown-size-by", "plot frame {d}/res.h5 --size-by nope -o {t}/f.png", ["size_by", "nope"]),
    ("plot-animate-zero-step", "plot animate {d}/res.h5 --step 0 -o {t}/a.gif", ["--step"]),
    ("plot-animate-bad-frames", "plot animate {d}/res.h5 --frames x -o {t}/a.gif", ["--frames"]),
    ("plot-tracks-unlinked", "plot tracks {d}/res.h5 -o {t}/t.png", ["res.h5", "braggflow link"]),
    ("plot-series-missing", "plot series {d}/missing.h5 -o {t}/s.png", ["missing.h5"]),
    ("watch-missing-folder", "watch {d}/missing_dir -o {t}/w.h5 --idle-timeout 1", ["missing_dir"]),
    ("watch-output-not-h5", "watch {d}/emptydir -o {t}/w.txt", ["w.txt"]),
    ("watch-unknown-method", "watch {d}/emptydir -o {t}/w.h5 --method magic", ["locate.method"]),
    ("watch-workers-negative", "watch {d}/emptydir -o {t}/w.h5 --workers -1", ["--workers"]),
    ("watch-output-is-a-folder", "watch {d}/emptydir -o {d}/outdir.h5", ["outdir.h5", "is a folder"]),
    ("watch-give-up-zero", "watch {d}/emptydir -o {t}/w.h5 --give-up 0", ["--give-up"]),
    ("watch-unknown-device", "watch {d}/emptydir -o {t}/w.h5 --set locate.device=gpu0", ["locate.device", "gpu0"]),
    # simulation
    ("simulate-output-not-h5", "simulate {t}/o.txt --frames 1 --shape 64 64", ["o.txt"]),
    ("simulate-zero-frames", "simulate {t}/o.h5 --frames 0 --shape 64 64", ["frames"]),
    ("simulate-small-shape", "simulate {t}/o.h5 --frames 1 --shape 32 32", ["shape"]),
    ("demo-unknown-method", "demo --method magic --frames 1 --out {t}/demo", ["locate.method"]),
]


def assert_one_error_line(result, expected):
    """Exit code 2, no traceback, and a last stderr line ``error: ...`` holding each of ``expected``."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for text in expected:
        assert text in errors[0], errors[0]


@pytest.mark.parametrize("args, expected", [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_bad_input_gives_one_error_line_and_exit_code_2(files, tmp_path, args, expected):
    argv = [a.format(d=files, t=tmp_path) for a in args.split()]
    assert_one_error_line(runner.invoke(app, argv), expected)


def test_resume_of_a_complete_run_leaves_it_unchanged(files, tmp_path):
    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    before = results.read_bytes()
    result = runner.invoke(app, ["run", str(files / "sim.h5"), "-o", str(results), "--resume"])
    assert_one_error_line(result, ["res.h5", "--resume"])
    assert results.read_bytes() == before


@pytest.mark.parametrize("error", [TypeError("boom"), KeyError("boom"), AttributeError("boom"), RuntimeError("boom")])
def test_a_bug_is_reported_as_internal_error_with_exit_code_1(monkeypatch, error):
    def broken():
        raise error

    monkeypatch.setattr("braggflow.pipeline.config.default_config_yaml", broken)
    result = runner.invoke(app, ["config", "--default"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"internal error: {type(error).__name__}: {error}",
                     "this is a bug in braggflow; rerun with --debug for the traceback and report it"]
    assert not any(line.startswith("error:") for line in lines)


def test_debug_reraises_bugs_and_bad_input(monkeypatch, tmp_path):
    from braggflow.errors import InputFileError

    result = runner.invoke(app, ["--debug", "run", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "o.h5")])
    assert isinstance(result.exception, InputFileError) and "missing.h5" in str(result.exception)
    assert "error:" not in result.output

    def broken():
        raise TypeError("boom")

    monkeypatch.setattr("braggflow.pipeline.config.default_config_yaml", broken)
    result = runner.invoke(app, ["--debug", "config", "--default"])
    assert isinstance(result.exception, TypeError) and "internal error" not in result.output
    result = runner.invoke(app, ["config", "--default"])  # --debug holds for one invocation only
    assert result.exit_code == 1


def test_debug_shows_the_traceback_from_the_console_entry(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from braggflow.cli import main; main()", "--debug", "config",
                        "-c", str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def test_ctrl_c_exits_with_130(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("braggflow.pipeline.config.default_config_yaml", interrupted)
    result = runner.invoke(app, ["config", "--default"])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted"


def test_locate_device_names_are_checked_and_auto_is_chosen_when_a_run_starts():
    from braggflow.errors import ConfigError
    from braggflow.pipeline import resolve_device
    from braggflow.pipeline.config import Config, apply_overrides

    for device in ("cpu", "cuda", "cuda:1", "mps", "auto"):
        assert apply_overrides(Config(), [f"locate.device={device}"]).locate.device == device
    for device in ("quantum", "cuda:", "cuda:x", "CPU", "gpu"):
        with pytest.raises(ConfigError, match="locate.device"):
            apply_overrides(Config(), [f"locate.device={device}"])
    auto = Config(locate={"method": "nn", "device": "auto"})
    chosen = resolve_device(auto).locate.device
    assert chosen in ("cpu", "mps") or chosen == "cuda"
    assert resolve_device(Config(locate={"device": "auto"})).locate.device == "auto"  # no network: not used
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="locate.device cuda: torch sees no CUDA GPU here"):
            resolve_device(Config(locate={"method": "nn", "device": "cuda"}))
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"locate.device cuda:{n}: torch sees {n} CUDA GPU"):
            resolve_device(Config(locate={"method": "nn", "device": f"cuda:{n}"}))


def test_a_failed_check_of_the_static_inputs_leaves_no_output(files, tmp_path):
    out = tmp_path / "o.h5"
    result = runner.invoke(app, ["run", str(files / "sim.h5"), "-o", str(out), "--flat", str(files / "flat_zero.npy")])
    assert_one_error_line(result, ["flat_zero.npy"])
    assert not out.exists() and not (tmp_path / "o.h5.journal").exists()
