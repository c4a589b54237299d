"""Tests of braggflow.models: published-weights compatibility, model files, inference, calibration."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braggflow.errors import BraggflowError, InputFileError  # noqa: E402
from braggflow.nn import files  # noqa: E402
from braggflow.nn.architectures import BraggNN, LocNet, published_shapes  # noqa: E402
from braggflow.nn.files import file_sha256, list_models, load_model  # noqa: E402
from braggflow.nn.inference import predict_patches  # noqa: E402
from braggflow.simulate.patches import simulate_patches  # noqa: E402
from braggflow.training.files import convert_weights, save_model  # noqa: E402

# Keys and shapes of the published file fc16_8_4_2-sz11.pth (github.com/lzhengchun/BraggNN,
# models/), written out by hand: conv 1->64->32->8 (3x3), the non-local block on 64
# channels (1x1 convs to 32), dense 200->16->8->4->2->2.
PUBLISHED_FC16 = {
    "cnn_layers.0.weight": (64, 1, 3, 3), "cnn_layers.0.bias": (64,),
    "cnn_layers.2.weight": (32, 64, 3, 3), "cnn_layers.2.bias": (32,),
    "cnn_layers.4.weight": (8, 32, 3, 3), "cnn_layers.4.bias": (8,),
    "nlb.theta_layer.weight": (32, 64, 1, 1), "nlb.theta_layer.bias": (32,),
    "nlb.phi_layer.weight": (32, 64, 1, 1), "nlb.phi_layer.bias": (32,),
    "nlb.g_layer.weight": (32, 64, 1, 1), "nlb.g_layer.bias": (32,),
    "nlb.out_cnn.weight": (64, 32, 1, 1), "nlb.out_cnn.bias": (64,),
    "dense_layers.0.weight": (16, 200), "dense_layers.0.bias": (16,),
    "dense_layers.2.weight": (8, 16), "dense_layers.2.bias": (8,),
    "dense_layers.4.weight": (4, 8), "dense_layers.4.bias": (4,),
    "dense_layers.6.weight": (2, 4), "dense_layers.6.bias": (2,),
    "dense_layers.8.weight": (2, 2), "dense_layers.8.bias": (2,),
}


def _published_state_dict(shapes: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.2 * torch.randn(*s, generator=g) for k, s in shapes.items()}


def test_published_keys_and_shapes_match_the_reference_file():
    assert published_shapes(11, (16, 8, 4, 2)) == PUBLISHED_FC16
    net = BraggNN(11, (16, 8, 4, 2))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == PUBLISHED_FC16


def test_published_state_dict_converts_loads_and_runs(tmp_path):
    state = _published_state_dict(PUBLISHED_FC16)
    pth = tmp_path / "fc16_8_4_2-sz11.pth"
    torch.save(state, pth)
    out = convert_weights(pth, tmp_path / "published.pt", calibrate=False)
    model = load_model(out)
    assert model.arch == "braggnn"
    assert model.arch_kwargs == {"imgsz": 11, "fcsz": [16, 8, 4, 2], "published_order": True}
    for k, v in state.items():
        assert torch.equal(model.network.state_dict()[k], v), k
    # the (32, 16, 8, 4) variant is recognised from its shapes too
    shapes32 = published_shapes(11, (32, 16, 8, 4))
    assert shapes32["dense_layers.0.weight"] == (32, 200)
    torch.save(_published_state_dict(shapes32, 1), tmp_path / "fc32.pth")
    assert load_model(convert_weights(tmp_path / "fc32.pth", calibrate=False)).arch_kwargs["fcsz"] == [32, 16, 8, 4]
    ps = simulate_patches(20, seed=3)
    res = predict_patches(ps.data, mask=ps.mask, model=out)
    assert res["row"].shape == (20,) and np.isfinite(res["row"]).all()
    assert np.isnan(res["row_err"]).all()  # not calibrated: errors unknown, not invented


def test_non_local_block_is_the_published_computation():
    """NLB: softmax((theta x)^T (theta x)) applied to theta x, 1x1 conv back, plus x (published: theta for all
    three)."""
    torch.manual_seed(0)
    net = BraggNN(11, (16, 8, 4, 2)).eval()
    x = torch.rand(3, 64, 9, 9)
    nlb = net.nlb
    w, b = nlb.theta_layer.weight[:, :, 0, 0], nlb.theta_layer.bias
    t = torch.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]
    t = t.reshape(3, 32, 81)
    att = torch.softmax(torch.einsum("nci,ncj->nij", t, t), dim=-1)
    y = torch.einsum("nij,ncj->nci", att, t).reshape(3, 32, 9, 9)
    out_w, out_b = nlb.out_cnn.weight[:, :, 0, 0], nlb.out_cnn.bias[None, :, None, None]
    expected = x + torch.einsum("oc,nchw->nohw", out_w, y) + out_b
    with torch.no_grad():
        assert torch.allclose(nlb(x), expected, atol=1e-5)


def test_braggnn_output_maps_col_row_over_size_to_patch_coordinates(tmp_path):
    net = BraggNN(11, (16, 8, 4, 2)).eval()
    with torch.no_grad():
        last = net.dense_layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([6.2 / 11, 3.7 / 11]))  # published output: (col, row) / size
    path = tmp_path / "const.pt"
    save_model(path, net, arch="braggnn", arch_kwargs={"imgsz": 11, "fcsz": [16, 8, 4, 2]})
    res = predict_patches(np.random.default_rng(0).poisson(5, (4, 11, 11)), model=path)
    np.testing.assert_allclose(res["row"], 3.7, atol=1e-5)
    np.testing.assert_allclose(res["col"], 6.2, atol=1e-5)
    # larger patches are cropped to their centre: coordinates shift by the crop offset
    res15 = predict_patches(np.random.default_rng(0).poisson(5, (4, 15, 15)), model=path)
    np.testing.assert_allclose(res15["row"], 5.7, atol=1e-5)


@pytest.mark.parametrize("symmetries", [2, 4, 8])
def test_locnet_symmetrised_prediction_is_the_average_of_the_symmetric_views(symmetries):
    """Test-time augmentation: the mean of the centres of the flipped / transposed patches mapped back,
    variance = mean predicted variance + variance of the centres; the result is equivariant."""
    from braggflow.nn.preprocess import check_patches, robust_features

    torch.manual_seed(1)
    single = LocNet(11, (32,)).eval()
    tta = LocNet(11, (32,), symmetries=symmetries).eval()
    tta.load_state_dict(single.state_dict())  # same weights: the symmetries are not parameters
    ps = simulate_patches(64, kind="mixed", seed=5)

    def run(net, data, mask):
        d, m = check_patches(data, mask)
        with torch.no_grad():
            return net(torch.from_numpy(robust_features(d, m))).numpy().astype(float)

    codes = {2: [0, 3], 4: [0, 3, 4, 7], 8: range(8)}[symmetries]
    centres, variances = [], []
    for k in codes:
        d, m = ps.data, ps.mask
        d, m = (d[:, ::-1], m[:, ::-1]) if k & 1 else (d, m)
        d, m = (d[:, :, ::-1], m[:, :, ::-1]) if k & 2 else (d, m)
        d, m = (d.transpose(0, 2, 1), m.transpose(0, 2, 1)) if k & 4 else (d, m)
        out = run(single, np.ascontiguousarray(d), np.ascontiguousarray(m))
        c, v = out[:, :2].copy(), np.exp(out[:, 2:4])
        if k & 4:
            c, v = c[:, ::-1], v[:, ::-1]
        c[:, 0] *= -1 if k & 1 else 1
        c[:, 1] *= -1 if k & 2 else 1
        centres.append(c)
        variances.append(v)
    centres = np.array(centres)
    out = run(tta, ps.data, ps.mask)
    np.testing.assert_allclose(out[:, :2], centres.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.exp(out[:, 2:4]), np.mean(variances, axis=0) + centres.var(axis=0), rtol=1e-4)
    rotated = run(tta, np.ascontiguousarray(ps.data[:, ::-1, ::-1]), np.ascontiguousarray(ps.mask[:, ::-1, ::-1]))
    np.testing.assert_allclose(rotated[:, :2], -out[:, :2], atol=1e-5)  # equivariant under a 180-degree turn
    np.testing.assert_allclose(rotated[:, 2:], out[:, 2:], atol=1e-4)
    with pytest.raises(ValueError, match="symmetries"):
        LocNet(11, (32,), symmetries=3)


def test_sigma_binned_calibration_corrects_a_sigma_dependent_miscalibration():
    """A network 2x over-confident for small and 2x under-confident for large sigmas: one factor cannot
    fix both halves, factors per bin of the predicted sigma do."""
    from braggflow.nn.calibration import apply_error_scale
    from braggflow.training.calibration import calibration_figures, fit_error_scale

    rng = np.random.default_rng(0)
    n = 20000
    predicted = np.exp(rng.uniform(np.log(0.01), np.log(1.0), n))
    true = np.where(predicted < 0.1, 2.0 * predicted, 0.5 * predicted)
    er, ec = rng.normal(0, true), rng.normal(0, true)
    masked = np.zeros(n, bool)
    small = predicted < 0.1
    for n_bins in (1, 8):
        cal = fit_error_scale(er, ec, predicted, predicted, masked=masked, n_bins=n_bins)
        sr, sc = apply_error_scale(cal, predicted, predicted, masked)
        good = []
        for half in (small, ~small):
            f = calibration_figures(er[half], ec[half], sr[half], sc[half])
            good.append(abs(f["z_std_row"] - 1) < 0.1 and abs(f["z_std_col"] - 1) < 0.1
                        and abs(f["in_ellipse"] - 0.393) < 0.05)
        assert all(good) == (n_bins == 8), (n_bins, good)


def test_convert_weights_rejects_a_foreign_state_dict(tmp_path):
    state = _published_state_dict(PUBLISHED_FC16)
    del state["nlb.g_layer.bias"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(InputFileError, match="bad.pth.*missing.*nlb.g_layer.bias"):
        convert_weights(tmp_path / "bad.pth", calibrate=False)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputFileError, match="junk.pth"):
        convert_weights(tmp_path / "junk.pth", calibrate=False)
    torch.save(_published_state_dict(PUBLISHED_FC16), tmp_path / "raw.pth")
    with pytest.raises(InputFileError, match="convert-weights"):
        load_model(tmp_path / "raw.pth")  # a bare state_dict must be converted first


def test_corrupt_model_file_gives_a_clear_error(tmp_path):
    net = LocNet(11, hidden=(8,))
    path = tmp_path / "m.pt"
    save_model(path, net, arch="locnet", arch_kwargs={"size": 11, "hidden": [8]})
    load_model(path)
    raw = bytearray(path.read_bytes())
    # flip a byte inside the stored weights (the zip stores tensors uncompressed)
    blob = net.layers[0].weight.detach().numpy().tobytes()[:32]
    pos = raw.find(blob)
    assert pos > 0
    raw[pos + 5] ^= 0x55
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="bad.pt.*corrupt"):
        load_model(bad)
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputFileError, match="trunc.pt"):
        load_model(tmp_path / "trunc.pt")
    with pytest.raises(InputFileError, match="no-such.pt"):
        load_model(tmp_path / "no-such.pt")


def test_manifest_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    net = LocNet(11, hidden=(8,))
    weights = tmp_path / "weights"
    weights.mkdir()
    path = weights / "tiny.pt"
    save_model(path, net, arch="locnet", arch_kwargs={"size": 11, "hidden": [8]})
    manifest = {"default": "tiny", "models": {"tiny": {"file": "tiny.pt", "arch": "locnet", "params": 1,
                                                       "size_bytes": 1, "sha256": "0" * 64, "metrics": {}}}}
    (weights / "MANIFEST").write_text(json.dumps(manifest))
    monkeypatch.setattr(files, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(files, "MANIFEST_PATH", weights / "MANIFEST")
    with pytest.raises(InputFileError, match=r"tiny\.pt.*SHA-256.*does not match"):
        load_model("tiny")
    manifest["models"]["tiny"]["sha256"] = file_sha256(path)
    (weights / "MANIFEST").write_text(json.dumps(manifest))
    assert load_model("tiny").arch == "locnet"
    assert load_model().name == "tiny"  # the default


def test_shipped_models_match_their_manifest():
    rows = list_models()
    assert rows, "no shipped model"
    assert sum(r["default"] for r in rows) == 1
    for r in rows:
        path = files.WEIGHTS_DIR / r["file"]
        assert file_sha256(path) == r["sha256"]
        assert r["params"] * 4 < 1_000_000  # well under 1 MB of float32 weights
        model = load_model(r["name"], backend="torch")  # the PyTorch file (the default loads the .onnx)
        assert model.n_params == r["params"]
        assert model.calibration is not None
        assert model.calibration == r["calibration"] and model.arch_kwargs == r["arch_kwargs"]


def test_predict_handles_empty_edge_and_masked_patches():
    empty = predict_patches(np.zeros((0, 11, 11), np.float32))
    assert all(len(v) == 0 for v in empty.values())
    assert {"row", "col", "row_err", "col_err"} <= set(empty)
    for kind in ("edge", "masked"):
        ps = simulate_patches(300, kind=kind, seed=11)
        res = predict_patches(ps.data, mask=ps.mask)
        for key in ("row", "col", "row_err", "col_err"):
            assert np.isfinite(res[key]).all(), (kind, key)
        assert (res["row_err"] > 0).all()
        radial = np.hypot(res["row"] - ps.row, res["col"] - ps.col)
        assert np.median(radial) < 0.15, kind
    # a fully masked patch and NaN pixels do not raise
    data = simulate_patches(3, seed=1).data.copy()
    data[0, 2, 2] = np.nan
    mask = np.zeros(data.shape, bool)
    mask[1] = True
    res = predict_patches(data, mask=mask)
    assert np.isfinite(res["row"]).all()


def test_predict_rejects_bad_input():
    with pytest.raises(BraggflowError, match="odd"):
        predict_patches(np.zeros((2, 10, 10)))
    with pytest.raises(BraggflowError, match="mask"):
        predict_patches(np.zeros((2, 11, 11)), mask=np.zeros((2, 9, 9), bool))
    with pytest.raises(BraggflowError, match="9 x 9"):
        predict_patches(np.zeros((2, 9, 9)))
    with pytest.raises(InputFileError, match="nonexistent-model"):
        predict_patches(np.zeros((2, 11, 11)), model="nonexistent-model")


def test_onnx_backend_gives_the_same_centres():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ps = simulate_patches(200, kind="mixed", seed=12)
    for model in (None, "locnet-sim", "braggnn-sim"):  # None: the default (a symmetrised locnet)
        a = predict_patches(ps.data, mask=ps.mask, model=model, backend="torch")
        b = predict_patches(ps.data, mask=ps.mask, model=model, backend="onnx")
        np.testing.assert_allclose(a["row"], b["row"], atol=1e-4)
        np.testing.assert_allclose(a["col"], b["col"], atol=1e-4)
        np.testing.assert_allclose(a["row_err"], b["row_err"], rtol=1e-3)
    with pytest.raises(BraggflowError, match="backend"):
        predict_patches(ps.data, backend="tensorrt")


def test_default_model_is_close_to_the_crlb_on_clean_peaks():
    ps = simulate_patches(2000, kind="isotropic", seed=21)
    res = predict_patches(ps.data, mask=ps.mask)
    radial = np.hypot(res["row"] - ps.row, res["col"] - ps.col)
    ref = 1.1774 * np.hypot(ps.params["crlb_row"], ps.params["crlb_col"]) / np.sqrt(2)
    assert np.median(radial / ref) < 1.3


@pytest.mark.parametrize("kind", ["isotropic", "mixed"])
def test_default_model_uncertainty_is_calibrated(kind):
    """The default model's errors are calibrated: std(error / sigma) within 10 % of 1 per axis, and
    39.3 % +- 5 % of the peaks inside the 1-sigma ellipse."""
    ps = simulate_patches(3000, kind=kind, seed=31)
    res = predict_patches(ps.data, mask=ps.mask)
    zr = (res["row"] - ps.row) / res["row_err"]
    zc = (res["col"] - ps.col) / res["col_err"]
    assert abs(np.std(zr) - 1) < 0.1
    assert abs(np.std(zc) - 1) < 0.1
    assert abs(np.mean(zr**2 + zc**2 <= 1) - 0.393) < 0.05


def test_import_braggflow_does_not_import_torch():
    code = ("import sys, braggflow, braggflow.models, braggflow.nn.preprocess, braggflow.nn.files, "
            "braggflow.nn.inference, braggflow.nn.export, braggflow.cli.models; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_models_and_convert_weights(tmp_path):
    from typer.testing import CliRunner

    import braggflow.cli.models  # noqa: F401  (registers the commands)
    from braggflow.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "locnet" in result.output and "* default" in result.output
    torch.save(_published_state_dict(PUBLISHED_FC16), tmp_path / "pub.pth")
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "pub.pth"), "-o", str(tmp_path / "pub.pt"),
                                 "--no-calibrate"])
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "pub.pt").arch_kwargs["fcsz"] == [16, 8, 4, 2]
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 10)
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "broken.pth")])
    assert result.exit_code == 2
    assert "broken.pth" in result.output
