"""Tests of braggflow.training.train: short training runs, configs, labelled patches from frames."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braggflow.errors import ConfigError  # noqa: E402
from braggflow.nn.files import load_model  # noqa: E402
from braggflow.nn.inference import predict_patches  # noqa: E402
from braggflow.simulate.patches import simulate_patches  # noqa: E402
from braggflow.training.train import (  # noqa: E402
    TrainConfig,
    patches_from_frames,
    simulated_training_patches,
    train_model,
)


@pytest.fixture(scope="module")
def small_set():
    return simulated_training_patches(4000, kind="isotropic", seed=5, chunk=4000)


def test_short_training_lowers_the_validation_error(tmp_path, small_set):
    config = TrainConfig(arch="locnet", arch_kwargs={"hidden": [64]}, epochs=6, batch_size=128, lr=3e-3,
                         patience=10, warmup_epochs=1, threads=1, seed=0)
    result = train_model(config, out=tmp_path / "tiny.pt", patches=small_set, progress=False)
    val = [h["val_median_px"] for h in result.history]
    assert len(val) == 6
    assert val[-1] < 0.6 * val[0]
    # better than the trivial answer (the central pixel) on fresh patches
    ps = simulate_patches(1000, kind="isotropic", seed=99)
    res = predict_patches(ps.data, mask=ps.mask, model=result.path)
    trained = np.median(np.hypot(res["row"] - ps.row, res["col"] - ps.col))
    trivial = np.median(np.hypot(5 - ps.row, 5 - ps.col))
    assert trained < 0.5 * trivial
    assert np.isfinite(res["row_err"]).all() and (res["row_err"] > 0).all()
    model = load_model(result.path)
    assert model.train_config["epochs"] == 6 and model.train_config["n_train"] == 3600
    assert model.calibration["kind"] == "scale"
    assert result.metrics["val_patches"] == 400
    # fine-tuning starts from the trained weights (and their architecture), not from scratch
    tuned = train_model(TrainConfig(init=str(result.path), epochs=1, batch_size=128, lr=3e-4, warmup_epochs=0,
                                    threads=1, seed=1), out=tmp_path / "tuned.pt", patches=small_set, progress=False)
    assert tuned.history[0]["val_median_px"] < 0.7 * val[0]
    assert load_model(tuned.path).arch_kwargs["hidden"] == [64]
    with pytest.raises(ConfigError, match="init model"):
        train_model(TrainConfig(arch="braggnn", init=str(result.path), epochs=1, threads=1), out=tmp_path / "x.pt",
                    patches=small_set, progress=False)


def test_braggnn_trains_with_the_published_loss_and_gets_an_error_table(tmp_path, small_set):
    config = TrainConfig(arch="braggnn", arch_kwargs={"fcsz": [16, 8, 4, 2]}, epochs=2, batch_size=256,
                         lr=1e-3, threads=1)
    result = train_model(config, out=tmp_path / "bnn.pt", patches=small_set.subset(np.arange(2000)), progress=False)
    assert result.history[-1]["val_median_px"] < result.history[0]["val_median_px"] * 1.2
    model = load_model(result.path)
    assert model.arch == "braggnn" and model.calibration["kind"] == "table"
    ps = simulate_patches(50, seed=4)
    res = predict_patches(ps.data, mask=ps.mask, model=model)
    assert (res["row_err"] > 0).all() and np.isfinite(res["col_err"]).all()


def test_augmentation_keeps_labels_consistent_with_patches():
    """A flipped / transposed patch must carry the flipped / transposed label (and swapped widths)."""
    from braggflow.training.tensors import augment

    n, c = 256, 5
    planes = torch.zeros(n, 2, 11, 11)
    planes[:, 0, c + 1, c + 3] = 1.0  # a single bright pixel at offset (1, 3)
    planes[:, 1, c + 1, c + 3] = 2.0  # the second plane moves with the first
    targets = torch.tensor([[1.0, 3.0, 0.0, 0.5]]).repeat(n, 1)
    aug, t = augment(planes, targets, torch.Generator().manual_seed(0))
    for i in range(n):
        r, cc = np.argwhere(aug[i, 0].numpy() == 1.0)[0]
        assert (r - c, cc - c) == (t[i, 0].item(), t[i, 1].item())
        assert aug[i, 1, r, cc] == 2.0
        transposed = abs(t[i, 0].item()) == 3.0
        assert (t[i, 2].item(), t[i, 3].item()) == ((0.5, 0.0) if transposed else (0.0, 0.5))
    seen = {(t[i, 0].item(), t[i, 1].item()) for i in range(n)}
    assert len(seen) == 8  # all symmetries of the square occur


def test_config_validation():
    with pytest.raises(ConfigError, match="arch"):
        TrainConfig(arch="resnet").validate()
    with pytest.raises(ConfigError, match="no training data"):
        TrainConfig(simulated=0).validate()
    with pytest.raises(ConfigError, match="size"):
        TrainConfig(size=10).validate()
    with pytest.raises(ConfigError, match="labels"):
        TrainConfig(labels="voigt").validate()
    with pytest.raises(ConfigError, match=r"^recentre \(a fraction\) must be in \[0, 1\], got 1.5$"):
        TrainConfig(recentre=1.5)
    with pytest.raises(ConfigError, match=r"^val_fraction must be in \(0, 1\), got 1$"):
        TrainConfig(val_fraction=1)
    with pytest.raises(ConfigError, match="^lr must be > 0, got nan$"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"^size \(patch side\) must be odd and >= 7, got 5$"):
        TrainConfig(arch="braggnn", size=5)
    # several problems: the first in the order arch, size, simulated, extra_kinds, data, labels, ... is named
    with pytest.raises(ConfigError, match="^no training data"):
        TrainConfig(simulated=0, labels="x", gain=0)
    config = TrainConfig()
    config.epochs = 0
    with pytest.raises(ConfigError, match="^epochs must be >= 1, got 0$"):
        config.validate()


def test_labelled_patches_from_frames_follow_the_truth():
    """The published recipe: isolated peaks of simulated frames, labelled by pseudo-Voigt fits."""
    from braggflow.simulate.frames import simulate_series

    series = simulate_series(2, shape=(192, 192), n_peaks=30, seed=7, gap=False, n_hot=0, n_dead=0)
    lp = patches_from_frames(series.frames, size=11, labels="pvoigt")
    assert len(lp) >= 15
    assert lp.data.shape[1:] == (11, 11)
    assert np.isnan(lp.crlb_row).all()
    # labels in frame coordinates lie on true peak centres of the same frame
    errors = []
    for k in range(len(lp)):
        t = series.truth[series.truth.frame == lp.frame[k]]
        r, c = lp.origin[k, 0] + lp.row[k], lp.origin[k, 1] + lp.col[k]
        errors.append(np.min(np.hypot(t.row - r, t.col - c)))
    assert np.median(errors) < 0.1
    assert np.percentile(errors, 90) < 0.3
    assert np.isfinite(lp.sigma_row).all() and (lp.sigma_row > 0.3).all()


def test_simulated_edge_training_patches_are_cut_by_the_edge():
    """Training patches are simulated larger (17 px) and cut to 11 px: the detector edge must lie inside
    the final patch (2-5 px from its centre), not anywhere in the larger one."""
    lp = simulated_training_patches(400, kind="edge", seed=3, recentre=0.5, chunk=400)
    assert lp.mask.any(axis=(1, 2)).mean() > 0.9  # the re-centred half may move up to 2 px away from the edge
    # an edge anywhere in the 17 px patch (2-8 px from its centre) misses the final patch ~40 % of the time
    anywhere = simulated_training_patches(400, kind="edge", seed=3, recentre=0.5, chunk=400,
                                          sim_options={"edge_distance": (2, 8)})
    assert anywhere.mask.any(axis=(1, 2)).mean() < 0.7


def test_recentred_patches_are_cut_around_the_brightest_pixel():
    """Like the finder: the brightest unmasked pixel near the peak sits at the centre, the label moves along."""
    from braggflow.training.train import recentre_on_maximum

    ps = simulate_patches(300, size=17, kind="isotropic", seed=8, noise=False, intensity=(5e4, 5e4),
                          background=(1, 1), sigma=(0.6, 1.2), eta=(0, 0))
    lp = recentre_on_maximum(ps, size=11)
    assert lp.data.shape == (300, 11, 11)
    flat = lp.data.reshape(300, -1)
    assert (flat.argmax(axis=1) == 60).all()  # noiseless: the pixel holding the centre is the maximum
    np.testing.assert_array_less(np.abs(lp.row - 5), 0.5 + 1e-9)
    # the label is the true centre in the new patch: the centroid agrees
    rr, cc = np.indices((11, 11))
    net = lp.data - 1.0
    com_r = (net * rr).sum((1, 2)) / net.sum((1, 2))
    com_c = (net * cc).sum((1, 2)) / net.sum((1, 2))
    np.testing.assert_allclose(com_r, lp.row, atol=0.02)
    np.testing.assert_allclose(com_c, lp.col, atol=0.02)
    # with noise, broad peaks' brightest pixel wanders further than the simulator's +-0.5 px
    noisy = recentre_on_maximum(simulate_patches(1000, size=17, kind="broad", seed=9), size=11)
    off = np.maximum(np.abs(noisy.row - 5), np.abs(noisy.col - 5))
    assert np.mean(off > 0.5) > 0.3 and off.max() <= 2.5 + 1e-9


def test_fine_tuning_starts_from_a_shipped_model_by_name(tmp_path, small_set):
    """--init with a shipped name loads its torch network (shipped models otherwise run through ONNX Runtime)."""
    tuned = train_model(TrainConfig(init="locnet-sim", epochs=1, batch_size=256, lr=1e-4, warmup_epochs=0,
                                    threads=1, seed=2), out=tmp_path / "tuned.pt",
                        patches=small_set.subset(np.arange(2000)), progress=False)
    shipped = load_model("locnet-sim", backend="torch")
    assert load_model(tuned.path).arch_kwargs == shipped.arch_kwargs
    assert tuned.history[0]["val_median_px"] < 0.2  # a trained start, not a random one
