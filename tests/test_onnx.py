"""Tests of the ONNX form of the localizer networks: shipped files, checksums, inference without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError, InputFileError
from braggflow.nn import files
from braggflow.nn.files import file_sha256, list_models, load_model
from braggflow.nn.inference import predict_patches
from braggflow.simulate.patches import simulate_patches

# torch made unimportable as if it were not installed.  (A None entry in sys.modules blocks the import too, but
# SciPy's array-API helpers then fail on sys.modules["torch"].Tensor, which an uninstalled torch never causes.)
BLOCK_TORCH = """\
import importlib.abc
import sys


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which torch cannot be imported."""
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCK_TORCH + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)


def test_manifest_lists_an_onnx_file_and_its_checksum_for_every_shipped_model():
    rows = list_models()
    assert {"locnet-sim-sym4", "locnet-sim", "braggnn-sim"} <= {r["name"] for r in rows}
    for r in rows:
        onnx = r["onnx"]
        path = files.WEIGHTS_DIR / onnx["file"]
        assert path.suffix == ".onnx" and path.is_file(), r["name"]
        assert file_sha256(path) == onnx["sha256"], r["name"]
        assert onnx["size_bytes"] == path.stat().st_size
        inf = r["inference"]
        assert inf["size"] == 11
        assert inf["input"] == {"locnet": "robust", "braggnn": "minmax"}[r["arch"]]
        assert inf["symmetries"] == r["arch_kwargs"].get("symmetries", 1)
        assert r["calibration"]["kind"] == {"locnet": "scale", "braggnn": "table"}[r["arch"]]
    default = next(r for r in rows if r["default"])
    assert default["name"] == "locnet-sim-sym4" and default["inference"]["symmetries"] == 4


def test_shipped_model_loads_from_onnx_with_the_manifest_description():
    model = load_model("braggnn-sim")
    assert model.network is None and model.onnx_path.name == "braggnn-sim.onnx"
    assert model.path.name == "braggnn-sim.pt"  # its PyTorch file, for backend="torch"
    entry = next(r for r in list_models() if r["name"] == "braggnn-sim")
    assert model.calibration == entry["calibration"] and model.n_params == entry["params"]
    assert model.size == 11 and not model.predicts_error


def test_onnx_and_torch_agree_on_simulated_patches():
    pytest.importorskip("torch")
    ps = simulate_patches(2000, seed=1)
    for name in ("locnet-sim-sym4", "locnet-sim", "braggnn-sim"):
        a = predict_patches(ps.data, mask=ps.mask, model=name)  # default: the shipped .onnx
        b = predict_patches(ps.data, mask=ps.mask, model=name, backend="torch")
        assert set(a) == set(b)
        for key in ("row", "col"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-5, err_msg=f"{name} {key}")
        for key in ("row_err", "col_err"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")
        torch_model = load_model(name, backend="torch")
        assert torch_model.network is not None
        assert torch_model.n_params == load_model(name).n_params


def test_symmetry_average_is_inside_the_shipped_graph():
    """locnet-sim-sym4 has the weights of locnet-sim: the ONNX outputs differ only by the 4-view average,
    which makes a 180-degree turn of the patch negate the offsets exactly (up to rounding)."""
    ps = simulate_patches(300, kind="mixed", seed=7)
    sym = predict_patches(ps.data, mask=ps.mask, model="locnet-sim-sym4")
    single = predict_patches(ps.data, mask=ps.mask, model="locnet-sim")
    assert np.max(np.abs(sym["row"] - single["row"])) > 1e-3
    turned = predict_patches(np.ascontiguousarray(ps.data[:, ::-1, ::-1]),
                             mask=np.ascontiguousarray(ps.mask[:, ::-1, ::-1]), model="locnet-sim-sym4")
    np.testing.assert_allclose(turned["row"] - 5, -(sym["row"] - 5), atol=1e-5)
    np.testing.assert_allclose(turned["col_err"], sym["col_err"], rtol=1e-4)


def _copy_weights(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(files.WEIGHTS_DIR, weights)
    monkeypatch.setattr(files, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(files, "MANIFEST_PATH", weights / "MANIFEST")
    return weights


def test_corrupted_onnx_file_is_rejected_by_its_checksum(tmp_path, monkeypatch):
    weights = _copy_weights(tmp_path, monkeypatch)
    onnx = weights / "locnet-sim.onnx"
    raw = bytearray(onnx.read_bytes())
    for pos in (len(raw) // 2, len(raw) // 2 + 7):  # inside the weights
        raw[pos] ^= 0x5A
    onnx.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match=r"locnet-sim\.onnx.*corrupt.*SHA-256.*does not match"):
        load_model("locnet-sim")
    with pytest.raises(InputFileError, match=r"locnet-sim\.onnx.*SHA-256"):
        load_model(onnx)  # a shipped file given by its path is checked too
    with pytest.raises(InputFileError, match=r"locnet-sim\.onnx.*SHA-256"):
        predict_patches(np.zeros((2, 11, 11)), model="locnet-sim")
    (weights / "braggnn-sim.onnx").unlink()
    with pytest.raises(InputFileError, match=r"braggnn-sim\.onnx.*missing"):
        load_model("braggnn-sim")


def test_manifest_description_that_does_not_fit_the_graph_is_rejected(tmp_path, monkeypatch):
    weights = _copy_weights(tmp_path, monkeypatch)
    manifest = json.loads((weights / "MANIFEST").read_text())
    manifest["models"]["locnet-sim"]["inference"]["input"] = "minmax"
    (weights / "MANIFEST").write_text(json.dumps(manifest))
    with pytest.raises(InputFileError, match=r"MANIFEST.*locnet-sim.*inference\.input"):
        load_model("locnet-sim")


def test_process_frame_without_torch_gives_the_same_table(tmp_path):
    import braggflow
    from braggflow.simulate.frames import simulate_series

    sim = simulate_series(1, shape=(256, 256), n_peaks=25, seed=3)
    np.save(tmp_path / "frame.npy", sim.frames[0])
    config = braggflow.Config(locate={"method": "nn"})
    expected = braggflow.process_frame(sim.frames[0], config=config)
    result = _run_without_torch(f"""
        import numpy as np
        import braggflow
        frame = np.load({str(tmp_path / 'frame.npy')!r})
        table = braggflow.process_frame(frame, config=braggflow.Config(locate={{"method": "nn"}}))
        table.to_pickle({str(tmp_path / 'table.pkl')!r})
        assert "torch" not in sys.modules
        print("ok", len(table))
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_pickle(tmp_path / "table.pkl")
    assert len(table) == len(expected) > 10
    assert (table["method"] == expected["method"]).all()
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-6)
    assert np.isfinite(table["row_err"]).all()


def test_without_torch_shipped_models_run_and_torch_needs_give_clear_errors(tmp_path):
    shutil.copyfile(files.WEIGHTS_DIR / "locnet-sim.pt", tmp_path / "mine.pt")
    result = _run_without_torch(f"""
        import numpy as np
        from braggflow.errors import BraggflowError
        from braggflow.nn.inference import predict_patches
        from braggflow.simulate.patches import simulate_patches
        ps = simulate_patches(100, seed=2)
        for name in ("locnet-sim-sym4", "locnet-sim", "braggnn-sim"):
            res = predict_patches(ps.data, mask=ps.mask, model=name)
            assert np.isfinite(res["row"]).all() and np.isfinite(res["row_err"]).all(), name
        for kwargs in ({{"backend": "torch"}}, {{"device": "cuda"}}, {{"model": {str(tmp_path / 'mine.pt')!r}}}):
            try:
                predict_patches(ps.data, **kwargs)
            except BraggflowError as exc:
                assert "needs torch" in str(exc) and ".[train]" in str(exc), str(exc)
            else:
                raise AssertionError(f"no error for {{kwargs}}")
        print("ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_onnx_model_file_cannot_run_with_torch_or_on_a_gpu(tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(files.WEIGHTS_DIR / "locnet-sim.onnx", bare)
    model = load_model(bare)  # a copy outside the weights folder: described by its own metadata
    assert model.arch == "locnet" and model.calibration["kind"] == "scale"
    with pytest.raises(BraggflowError, match=r"bare\.onnx.*CPU only"):
        load_model(bare, backend="torch")
    with pytest.raises(BraggflowError, match=r"bare\.onnx.*CPU only"):
        predict_patches(np.zeros((2, 11, 11)), model=bare, device="cuda")
    with pytest.raises(BraggflowError, match="backend"):
        load_model("locnet-sim", backend="tensorrt")


def test_a_users_model_exports_to_a_self_describing_onnx_file(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from braggflow.nn.architectures import LocNet
    from braggflow.nn.export import export_onnx
    from braggflow.training.files import save_model

    torch.manual_seed(0)
    net = LocNet(11, hidden=(16,), symmetries=2)
    calibration = {"kind": "scale", "row_scale": 1.5, "col_scale": 0.5}
    save_model(tmp_path / "mine.pt", net, arch="locnet", arch_kwargs={"size": 11, "hidden": [16], "symmetries": 2},
               calibration=calibration)
    info = export_onnx(tmp_path / "mine.pt", tmp_path / "mine.onnx", check=200)
    assert info["max_abs_diff"] < 1e-5 and info["sha256"] == file_sha256(tmp_path / "mine.onnx")
    model = load_model(tmp_path / "mine.onnx")
    assert model.network is None and model.calibration == calibration and model.arch_kwargs["symmetries"] == 2
    ps = simulate_patches(200, kind="mixed", seed=3)
    a = predict_patches(ps.data, mask=ps.mask, model=tmp_path / "mine.onnx")
    b = predict_patches(ps.data, mask=ps.mask, model=tmp_path / "mine.pt", backend="torch")
    for key in ("row", "col", "row_err", "col_err", "sigma_row"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # an ONNX file without the description is refused with a pointer to the export tool
    import onnx

    proto = onnx.load(tmp_path / "mine.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "plain.onnx")
    with pytest.raises(InputFileError, match=r"plain\.onnx.*export_onnx"):
        load_model(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(InputFileError, match=r"junk\.onnx.*not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx")
