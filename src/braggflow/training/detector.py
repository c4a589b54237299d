"""Training the grazing-incidence feature detector (``braggflow train-detector``) on simulated polar frames.

Frames come from :func:`braggflow.simulate.gixd.simulate_gixd_set` (their seeds
fixed by the configuration); the network is :func:`braggflow.nn.detector.build_network`.
Targets follow CenterNet (Zhou, Wang and Krähenbühl, arXiv:1904.07850 (2019)):
per class a heat map of Gaussians centred on the feature centres at half the
input resolution (a ring: a Gaussian in q down its whole column of seen
bins), trained with the penalty-reduced focal loss; the log half-sizes and the
sub-pixel offsets of the centres, trained with an L1 loss at the centre pixels.
The boxes of features too weak to be labelled are left out of the heat-map
loss.  The frame-class head (:data:`braggflow.nn.detector.FRAME_CLASSES`) is
trained with a binary cross-entropy per class against the frame's labelled
features: ``empty`` when it has none, ``spots``, ``arcs``, ``rings`` when it has at
least one labelled feature of that kind (independent labels: a frame can hold
several kinds).  The weights with the best validation F1 (all classes,
:func:`braggflow.nn.detector.detection_scores`) are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from braggflow.errors import ConfigError
from braggflow.nn.detector import (
    CLASSES,
    FORMAT,
    FRAME_CLASSES,
    STRIDE,
    build_network,
    contrast_image,
    decode,
    detection_scores,
)
from braggflow.simulate.gixd import simulate_gixd_set

__all__ = ["DetectorTrainConfig", "detector_targets", "frame_class_targets", "train_detector", "save_detector",
           "export_detector_onnx", "ship_detector", "tune_thresholds", "tune_frame_thresholds"]


@dataclass
class DetectorTrainConfig:
    """Options of a detector training run (all seeds fixed: the run is reproducible on one machine).

    Attributes
    ----------
    n_train, n_val : int
        Simulated training and validation frames.
    n_setups : int
        Random detector setups the training frames are spread over.
    sim_seed : int
        Seed of the training frames; validation frames use ``sim_seed + 1``.
    seed : int
        Seed of the weights and the batch order.
    epochs : int
    batch_size : int
    lr : float
        Peak learning rate (AdamW, one-cycle cosine schedule).
    width : int
        Network width.
    threads : int
        torch CPU threads.
    min_snr : float
        Visibility threshold of the labels.
    max_seconds : float or None
        Stop after the epoch during which this much training time has passed.
    stop_epoch : int or None
        Stop after this epoch (the learning-rate schedule still spans ``epochs``).
    class_balanced : bool
        Normalise the heat-map loss of each class by its own number of centre
        pixels (else by all classes' together, where the many pixels of the
        rings' columns outweigh the spots and arcs).
    init : str or None
        Detector file (``.pt``) whose weights training starts from (fine-tuning).
    spot_weight : float
        Weight of the spot class's heat-map loss (the other classes weigh 1).
    frame_weight : float
        Weight of the frame-class loss (binary cross-entropy, mean over the four classes).
    """

    n_train: int = 1600
    n_val: int = 100
    n_setups: int = 48
    sim_seed: int = 1
    seed: int = 0
    epochs: int = 5
    batch_size: int = 16
    lr: float = 3e-3
    width: int = 8
    threads: int = 1
    min_snr: float = 8.0
    max_seconds: float | None = None
    stop_epoch: int | None = None
    class_balanced: bool = False
    init: str | None = None
    spot_weight: float = 1.0
    frame_weight: float = 1.0

    def check(self) -> None:
        """Raise ConfigError for values out of range."""
        for name in ("n_train", "n_val", "n_setups", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train-detector: {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"train-detector: lr must be > 0, got {self.lr}")


def _gauss(n: int, centre: int, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)


def detector_targets(truth, grid, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet training targets of one simulated frame.

    Parameters
    ----------
    truth : pandas.DataFrame
        :attr:`braggflow.simulate.gixd.GixdFrame.truth`.
    grid : PolarGrid
    valid : (n_chi, n_q) ndarray of bool
        Seen bins.

    Returns
    -------
    heat : (3, h, w) ndarray of float32
        Heat-map targets (ring, arc, spot), h, w = n_chi / 2, n_q / 2.
    reg : (4, h, w) ndarray of float32
        log half-width in q, log half-height in chi (input bins), offset in q, in chi (output pixels).
    reg_mask : (2, h, w) ndarray of bool
        Where the q (plane 0) and chi (plane 1) regression targets apply.
    ignore : (h, w) ndarray of bool
        Boxes of features too weak to be labelled (left out of the heat-map loss).
    """
    from skimage.measure import block_reduce

    h, w = valid.shape[0] // STRIDE, valid.shape[1] // STRIDE
    valid_out = block_reduce(valid, (STRIDE, STRIDE), np.mean) > 0.25
    heat = np.zeros((3, h, w), np.float32)
    reg = np.zeros((4, h, w), np.float32)
    reg_mask = np.zeros((2, h, w), bool)
    ignore = np.zeros((h, w), bool)
    dq, dchi = grid.dq, grid.dchi
    for f in truth.itertuples():
        x_out = ((f.q - grid.q[0]) / dq - 0.5 * (STRIDE - 1)) / STRIDE
        hw_in = max((f.q_hi - f.q_lo) / 2 / dq, 0.5)
        y_lo = int(np.floor(((f.chi_lo - grid.chi[0]) / dchi) / STRIDE))
        y_hi = int(np.ceil(((f.chi_hi - grid.chi[0]) / dchi) / STRIDE))
        jc = int(round(x_out))
        if not 0 <= jc < w:
            continue
        if not f.visible:
            x_lo, x_hi = max(0, int(x_out - hw_in / STRIDE) - 1), min(w, int(x_out + hw_in / STRIDE) + 2)
            ignore[max(0, y_lo):max(0, y_hi) + 1, x_lo:x_hi] = True
            continue
        sx = max(0.6, hw_in / STRIDE / 2)
        if f.kind == "ring":
            rows = np.zeros(h, bool)
            rows[max(0, y_lo):max(0, y_hi) + 1] = True
            rows &= valid_out[:, jc]
            heat[0] = np.maximum(heat[0], rows[:, None] * _gauss(w, jc, sx)[None, :])
            reg[0, rows, jc] = np.log(hw_in)
            reg[2, rows, jc] = x_out - jc
            reg_mask[0, rows, jc] = True
            continue
        y_out = ((f.chi - grid.chi[0]) / dchi - 0.5 * (STRIDE - 1)) / STRIDE
        ic = int(np.clip(round(y_out), 0, h - 1))
        hh_in = max((f.chi_hi - f.chi_lo) / 2 / dchi, 0.5)
        sy = float(np.clip(hh_in / STRIDE / 2, 0.6, 8.0))
        c = CLASSES.index(f.kind)
        heat[c] = np.maximum(heat[c], _gauss(h, ic, sy)[:, None] * _gauss(w, jc, sx)[None, :])
        reg[:, ic, jc] = (np.log(hw_in), np.log(hh_in), x_out - jc, y_out - ic)
        reg_mask[:, ic, jc] = True
    return heat, reg, reg_mask, ignore


def frame_class_targets(truth) -> np.ndarray:
    """Frame-class labels of one simulated frame (:data:`braggflow.nn.detector.FRAME_CLASSES`).

    Parameters
    ----------
    truth : pandas.DataFrame
        :attr:`braggflow.simulate.gixd.GixdFrame.truth` (``kind``, ``visible``).

    Returns
    -------
    labels : (4,) ndarray of float32
        1 or 0 for ``empty`` (no visible feature), ``spots``, ``arcs``, ``rings``
        (at least one visible feature of that kind).
    """
    kinds = set(truth.loc[truth["visible"].to_numpy(dtype=bool), "kind"]) if len(truth) else set()
    return np.array([not kinds, "spot" in kinds, "arc" in kinds, "ring" in kinds], dtype=np.float32)


def _dataset(n: int, seed: int, config: DetectorTrainConfig, log: Callable[[str], None]) -> dict:
    """Simulated frames as compact arrays: input planes (uint8), targets (float16), frames (for validation)."""
    start = time.perf_counter()
    frames = simulate_gixd_set(n, seed, n_setups=config.n_setups, min_snr=config.min_snr)
    planes, heat, reg, regm, ign = [], [], [], [], []
    labels = np.stack([frame_class_targets(fr.truth) for fr in frames]) if frames else np.zeros((0, 4), np.float32)
    for fr in frames:
        p = contrast_image(fr.image)
        planes.append(np.round(p * 255).astype(np.uint8))
        t = detector_targets(fr.truth, fr.grid, np.isfinite(fr.image))
        heat.append(t[0].astype(np.float16))
        reg.append(t[1].astype(np.float16))
        regm.append(t[2])
        ign.append(t[3])
    log(f"simulated {n} frames (seed {seed}) in {time.perf_counter() - start:.0f} s")
    return dict(planes=np.stack(planes), heat=np.stack(heat), reg=np.stack(reg), reg_mask=np.stack(regm),
                ignore=np.stack(ign), labels=labels, frames=frames)


def _loss(torch, outputs, heat, reg, reg_mask, ignore, labels, config: DetectorTrainConfig):
    """Focal loss on the heat maps plus L1 on sizes (weight 0.2) and offsets at the centre pixels, plus the
    frame-class cross-entropy."""
    out, frame_logits = outputs
    p = torch.sigmoid(out[:, :3]).clamp(1e-4, 1 - 1e-4)
    pos = heat >= 0.999
    keep = ~(ignore[:, None] & (heat < 0.1))
    dims = (0, 2, 3) if config.class_balanced else (0, 1, 2, 3)
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum(dims)
    neg_loss = (torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (~pos) * keep).sum(dims)
    n_pos = pos.sum(dims).clamp(min=1)
    per_class = -(pos_loss + neg_loss) / n_pos
    if config.class_balanced:
        per_class = per_class * torch.tensor([1.0, 1.0, config.spot_weight])
    focal = per_class.sum()
    frame = torch.nn.functional.binary_cross_entropy_with_logits(frame_logits, labels)
    mq, mc = reg_mask[:, 0], reg_mask[:, 1]
    l1 = torch.abs(out[:, 3:] - reg)
    nq, nc = mq.sum().clamp(min=1), mc.sum().clamp(min=1)
    size = (l1[:, 0] * mq).sum() / nq + (l1[:, 1] * mc).sum() / nc
    offset = (l1[:, 2] * mq).sum() / nq + (l1[:, 3] * mc).sum() / nc
    return focal + 0.2 * size + offset + config.frame_weight * frame


def _validate(net, data: dict, thresholds: dict) -> dict:
    """Detection scores of the network on the validation frames."""
    import torch

    net.eval()
    pairs, right = [], []
    with torch.no_grad():
        for i in range(0, len(data["planes"]), 16):
            x = torch.from_numpy(data["planes"][i:i + 16].astype(np.float32) / 255.0)
            out, frame_logits = (t.numpy() for t in net(x))
            out[:, :3] = 1 / (1 + np.exp(-out[:, :3]))
            right.append((frame_logits > 0) == (data["labels"][i:i + 16] > 0.5))
            for k, o in enumerate(out):
                fr = data["frames"][i + k]
                pred = decode(o, np.isfinite(fr.image), fr.grid.q, fr.grid.chi, thresholds)
                pairs.append((pred, fr.truth))
    net.train()
    scores = detection_scores(pairs).to_dict(orient="index")
    accuracy = np.concatenate(right).mean(0) if right else np.full(len(FRAME_CLASSES), np.nan)
    scores["frame_class_accuracy"] = {c: float(a) for c, a in zip(FRAME_CLASSES, accuracy)}
    return scores


def train_detector(config: DetectorTrainConfig | None = None, out: str | Path | None = None, *,
                   log: Callable[[str], None] = print) -> tuple[object, dict]:
    """Train the detector network on simulated frames.

    Parameters
    ----------
    config : DetectorTrainConfig, optional
    out : str or Path, optional
        Detector file (``.pt``) to write, with the best weights (checkpointed as they improve).
    log : callable
        Receives one line of progress per epoch (loss, validation precision, recall, F1).

    Returns
    -------
    network : torch.nn.Module
        With the best weights, in eval mode.
    metrics : dict
        ``best_epoch``, ``epochs_run``, ``train_seconds``, ``val`` (scores per class
        at the best epoch), ``history``.

    Raises
    ------
    ConfigError
        For options out of range.
    ImportError
        Without torch.
    """
    import torch

    config = config or DetectorTrainConfig()
    config.check()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train = _dataset(config.n_train, config.sim_seed, config, log)
    val = _dataset(config.n_val, config.sim_seed + 1, config, log)
    net = build_network(config.width)
    if config.init is not None:
        from braggflow.nn.detector import load_detector

        start_from = load_detector(config.init, backend="torch")
        if start_from.width != config.width:
            raise ConfigError(f"train-detector: {config.init} has width {start_from.width}, not {config.width}")
        net.load_state_dict(start_from.network.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * int(np.ceil(config.n_train / config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    gen = np.random.default_rng(config.seed)
    thresholds = {c: 0.3 for c in CLASSES}
    best, best_state, history, metrics = -1.0, None, [], {}
    start = time.perf_counter()
    tensors = {k: torch.from_numpy(train[k]) for k in ("planes", "heat", "reg", "reg_mask", "ignore", "labels")}
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        order = gen.permutation(config.n_train)
        total = 0.0
        for i in range(0, config.n_train, config.batch_size):
            idx = torch.from_numpy(order[i:i + config.batch_size])
            x = tensors["planes"][idx].float() / 255.0
            loss = _loss(torch, net(x), tensors["heat"][idx].float(), tensors["reg"][idx].float(),
                         tensors["reg_mask"][idx], tensors["ignore"][idx], tensors["labels"][idx], config)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        scores = _validate(net, val, thresholds)
        f1 = scores["all"]["f1"] if np.isfinite(scores["all"]["f1"]) else 0.0
        history.append(dict(epoch=epoch, loss=total / config.n_train,
                            **{f"val_{k}": v for k, v in scores["all"].items()}))
        per_class = ", ".join(f"{c} {scores[c]['f1']:.3f}" for c in CLASSES)
        accuracy = ", ".join(f"{c} {a:.2f}" for c, a in scores["frame_class_accuracy"].items())
        log(f"epoch {epoch}/{config.epochs}: loss {total / config.n_train:.4f}, validation precision "
            f"{scores['all']['precision']:.3f} recall {scores['all']['recall']:.3f} F1 {f1:.3f} ({per_class}); "
            f"frame classes right: {accuracy} ({time.perf_counter() - start:.0f} s)")
        if best_state is None or f1 > best:
            best, best_state = f1, {k: v.detach().clone() for k, v in net.state_dict().items()}
            metrics = dict(best_epoch=epoch, val=scores)
            if out is not None:
                save_detector(net, out, config=config, metrics=metrics, thresholds=thresholds)
        if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
            break
        if config.stop_epoch is not None and epoch >= config.stop_epoch:
            break
    net.load_state_dict(best_state)
    net.eval()
    metrics.update(epochs_run=epoch, train_seconds=round(time.perf_counter() - start, 1), history=history)
    if out is not None:
        save_detector(net, out, config=config, metrics=metrics, thresholds=thresholds)
    return net, metrics


def tune_thresholds(detector, frames, *, grid=(0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)) -> tuple[dict, dict]:
    """Per-class score thresholds that maximise F1 on simulated frames.

    Parameters
    ----------
    detector : braggflow.nn.detector.GixdDetector
    frames : list of GixdFrame
        Frames not used in training (their truth is used).
    grid : sequence of float
        Thresholds tried, each class on its own.

    Returns
    -------
    thresholds : dict
        Best threshold per class.
    f1 : dict
        F1 per class at that threshold.
    """
    outs = [detector.raw(contrast_image(fr.image)[None])[0] for fr in frames]
    best_t, best_f1 = {}, {}
    for cls in CLASSES:
        for t in grid:
            pairs = [(decode(o, np.isfinite(fr.image), fr.grid.q, fr.grid.chi, {cls: t}), fr.truth)
                     for o, fr in zip(outs, frames)]
            f1 = detection_scores(pairs).loc[cls, "f1"]
            if np.isfinite(f1) and f1 > best_f1.get(cls, -1.0):
                best_t[cls], best_f1[cls] = float(t), float(f1)
        best_t.setdefault(cls, 0.3)
    return best_t, best_f1


def tune_frame_thresholds(detector, frames, *, grid=(0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)) -> tuple[dict, dict]:
    """Frame thresholds per feature class (:func:`braggflow.nn.detector.frame_probabilities`) that make the
    frame classes right most often on simulated frames.

    Every combination of the grid's values for ring, arc and spot is tried; the
    score is the mean, over the four frame classes, of the share of frames whose
    class is right (probability >= 0.5 against :func:`frame_class_targets`).

    Parameters
    ----------
    detector : braggflow.nn.detector.GixdDetector
    frames : list of GixdFrame
        Frames not used in training (their truth is used).
    grid : sequence of float
        Thresholds tried for each class.

    Returns
    -------
    thresholds : dict
        Best frame threshold per feature class (``ring``, ``arc``, ``spot``).
    accuracy : dict
        Share of frames right per frame class at those thresholds.
    """
    import itertools

    from braggflow.nn.detector import frame_probabilities

    outs = [(detector.raw(contrast_image(fr.image)[None])[0], np.isfinite(fr.image)) for fr in frames]
    labels = np.array([frame_class_targets(fr.truth) for fr in frames]) > 0.5
    best, best_acc = None, None
    for t_ring, t_arc, t_spot in itertools.product(grid, grid, grid):
        t = {"ring": t_ring, "arc": t_arc, "spot": t_spot}
        probs = np.array([frame_probabilities(o, v, t) for o, v in outs])
        acc = ((probs >= 0.5) == labels).mean(0)
        if best_acc is None or acc.mean() > best_acc.mean():
            best, best_acc = t, acc
    return {k: float(v) for k, v in best.items()}, {c: float(a) for c, a in zip(FRAME_CLASSES, best_acc)}


def save_detector(network, path: str | Path, *, config: DetectorTrainConfig, metrics: dict,
                  thresholds: dict) -> Path:
    """Write a detector file (``torch.save`` of a plain dict; loads with ``weights_only=True``).

    Parameters
    ----------
    network : torch.nn.Module
    path : str or Path
    config : DetectorTrainConfig
    metrics : dict
    thresholds : dict
        Smallest score per class used at inference.

    Returns
    -------
    path : Path
    """
    import torch

    path = Path(path)
    payload = {"format": FORMAT, "version": 2, "width": int(config.width), "thresholds": dict(thresholds),
               "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
               "train_config": json.loads(json.dumps(asdict(config))),
               "metrics": json.loads(json.dumps(metrics, default=float))}
    torch.save(payload, path)
    return path


def export_detector_onnx(network, path: str | Path) -> Path:
    """Export the network to ONNX (opset 20, TorchScript exporter; input ``x``, outputs ``y`` (feature maps) and
    ``frame_logits``, batch dynamic).

    Parameters
    ----------
    network : torch.nn.Module
    path : str or Path

    Returns
    -------
    path : Path
    """
    import warnings

    import torch

    from braggflow.nn.detector import INPUT_SHAPE

    path = Path(path)
    network.eval()
    example = torch.zeros((1, 3, *INPUT_SHAPE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (example,), str(path), input_names=["x"], output_names=["y", "frame_logits"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}, "frame_logits": {0: "n"}}, opset_version=20,
                          dynamo=False)
    return path


def ship_detector(pt_file: str | Path, name: str, *, onnx_file: str | Path | None = None,
                  thresholds: dict | None = None, frame_thresholds: dict | None = None) -> dict:
    """Copy a detector file (and its ONNX export) into the shipped weights and list it in the MANIFEST.

    Parameters
    ----------
    pt_file : str or Path
        Detector file written by :func:`train_detector`.
    name : str
        Shipped name.
    onnx_file : str or Path, optional
        Its ONNX export; default: exported here.
    thresholds : dict, optional
        Score thresholds per class to ship (e.g. from :func:`tune_thresholds`);
        default: those of the file.
    frame_thresholds : dict, optional
        Frame thresholds per class (e.g. from :func:`tune_frame_thresholds`);
        default: none (the score thresholds serve).

    Returns
    -------
    entry : dict
        The MANIFEST entry (under ``"detectors"``).
    """
    import shutil

    import torch

    from braggflow.nn.files import WEIGHTS_DIR, file_sha256, read_manifest, write_manifest

    payload = torch.load(pt_file, map_location="cpu", weights_only=True)
    pt_dest, onnx_dest = WEIGHTS_DIR / f"{name}.pt", WEIGHTS_DIR / f"{name}.onnx"
    shutil.copyfile(pt_file, pt_dest)
    if onnx_file is None:
        net = build_network(int(payload["width"]))
        net.load_state_dict(payload["state_dict"])
        export_detector_onnx(net, onnx_dest)
    else:
        shutil.copyfile(onnx_file, onnx_dest)
    n_params = int(sum(v.numel() for k, v in payload["state_dict"].items() if "running" not in k
                       and "num_batches" not in k))
    entry = {"pt": {"file": pt_dest.name, "sha256": file_sha256(pt_dest), "size_bytes": pt_dest.stat().st_size},
             "onnx": {"file": onnx_dest.name, "sha256": file_sha256(onnx_dest),
                      "size_bytes": onnx_dest.stat().st_size, "opset": 20},
             "arch": "gixd-centernet", "width": int(payload["width"]), "params": n_params,
             "thresholds": dict(thresholds or payload["thresholds"]), "train_config": payload["train_config"],
             **({"frame_thresholds": dict(frame_thresholds)} if frame_thresholds else {}),
             "metrics": {k: v for k, v in payload["metrics"].items() if k != "history"}}
    manifest = read_manifest()
    manifest.setdefault("detectors", {})[name] = entry
    write_manifest(manifest)
    return entry
