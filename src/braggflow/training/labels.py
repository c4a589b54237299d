"""Label files of grazing-incidence features, and fine-tuning the detector on a user's labelled frames.

A label file is a CSV table with a header, one row per feature (lines that start
with ``#`` are comments):

========== ======== ==========================================================
column     unit     meaning
========== ======== ==========================================================
kind                ``ring``, ``arc`` or ``spot``
q          1/Å      centre, ``|q|`` (with ``chi``) ...
chi        deg      ... pyFAI's azimuth (-90: from the beam towards row 0)
row, col   px       ... or the centre on the detector (pixel centres on
                    integers; q and chi then come from a geometry)
q_width    1/Å      full radial extent of the feature
chi_width  deg      full azimuthal extent; empty for a ring: its whole seen
                    range
frame               optional: the frame the feature is on (its file name),
                    for a file that labels several frames
visible             optional (default true): false marks a feature too weak
                    to count (neither to be found nor a false detection)
note                optional free text
========== ======== ==========================================================

:func:`read_labels` returns the features as a truth table (``q``, ``chi``,
``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``, ``kind``, ``visible``): the columns
:func:`braggflow.nn.detector.match_detections`, the coverage measure of
``bench/detect.py`` and :func:`braggflow.training.detector.detector_targets`
take.  :func:`labels_from_truth` and :func:`write_labels` write a simulated
frame's truth as a label file.

:func:`fine_tune_detector` trains a detector (``braggflow train-detector
--labels FILE --frames FRAME ... --init MODEL``) on labelled frames: the
CenterNet targets and loss of :mod:`braggflow.training.detector`, AdamW at a
constant learning rate with the batch-normalisation statistics of the
simulated training kept, the loss on held-back frames (or on the training
frames when none are held back) checked after every epoch, the best weights
written as a checkpoint when they improve, and early stopping after
``patience`` epochs without improvement.  On a handful of labels the heat maps
fall overall as the loss falls, below the initial model's score thresholds, so
the thresholds are then chosen again per class for the best coverage F1 on the
labelled frames (:func:`tune_label_thresholds`; ``bench/detect_pilatus.py
--fine-tune`` shows the case of three labelled Pilatus frames).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError, InputFileError

__all__ = ["KINDS", "LABEL_COLUMNS", "COVERAGE_SLACK", "LabelledFrame", "read_labels", "write_labels",
           "labels_from_truth", "labelled_frame", "coverage_counts", "tune_label_thresholds", "detector_loss",
           "fine_tune_detector"]

KINDS = ("ring", "arc", "spot")
"""Feature kinds a label may have."""
LABEL_COLUMNS = ("frame", "kind", "q", "chi", "row", "col", "q_width", "chi_width", "visible", "note")
"""Columns a label file may have (header names; any order)."""
COVERAGE_SLACK = 0.02
"""1/Å by which a feature's q range is widened when a detection is tested against it (``bench/detect.py``'s)."""
THRESHOLD_GRID = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
"""Score thresholds :func:`tune_label_thresholds` tries, per class."""
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _number(text: str, where: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputFileError(f"{where}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise InputFileError(f"{where}: {text!r} is not a finite number")
    if positive and not value > 0:
        raise InputFileError(f"{where}: {text!r} must be > 0")
    return value


def _table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, values) of each data row of a label file; comments and blank lines left out."""
    if not path.is_file():
        raise InputFileError(f"{path}: label file not found")
    numbered = [(i + 1, line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise InputFileError(f"{path}: no header line (expected columns such as kind,q,chi,q_width,chi_width)")
    rows = list(csv.reader(io.StringIO("\n".join(line for _, line in numbered))))
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in LABEL_COLUMNS]
    if unknown:
        raise InputFileError(f"{path}, line {numbered[0][0]}: unknown column(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(LABEL_COLUMNS)})")
    for needed in ("kind", "q_width"):
        if needed not in header:
            raise InputFileError(f"{path}: column {needed!r} is missing")
    if not ({"q", "chi"} <= set(header) or {"row", "col"} <= set(header)):
        raise InputFileError(f"{path}: the centre needs columns q and chi, or row and col")
    return header, [(n, values) for (n, _), values in zip(numbered[1:], rows[1:])]


def _centre(cell: dict, where: str, geometry) -> tuple[float, float]:
    """(q, chi) of a label row: its q, chi, or its row, col through the geometry."""
    if cell.get("q", "") != "":
        return _number(cell["q"], f"{where}, column q", positive=True), _number(cell.get("chi", ""),
                                                                                 f"{where}, column chi")
    if cell.get("row", "") != "":
        if geometry is None:
            raise ConfigError(f"{where}: the centre is given as row, col: a geometry is needed to turn it into q, chi")
        r = _number(cell["row"], f"{where}, column row")
        c = _number(cell.get("col", ""), f"{where}, column col")
        tth, eta = geometry.pixel_to_angles(np.array([r]), np.array([c]))
        return float(geometry.two_theta_to_q(tth)[0]), float(eta[0])
    raise InputFileError(f"{where}: no centre (q and chi, or row and col, are empty)")


def _label(cell: dict, where: str, geometry) -> dict:
    """One label row as a truth row (q, chi, extent, kind, visible)."""
    kind = cell["kind"].lower()
    if kind not in KINDS:
        raise InputFileError(f"{where}, column kind: {cell['kind']!r} is not one of {', '.join(KINDS)}")
    q, chi = _centre(cell, where, geometry)
    if not -180.0 <= chi <= 180.0:
        raise InputFileError(f"{where}, column chi: {chi} is outside -180 to 180 deg")
    q_width = _number(cell["q_width"], f"{where}, column q_width", positive=True)
    if cell.get("chi_width", "") == "":
        if kind != "ring":
            raise InputFileError(f"{where}, column chi_width: empty, but only a ring may leave it empty")
        chi_lo, chi_hi = -180.0, 180.0
    else:
        chi_width = _number(cell["chi_width"], f"{where}, column chi_width", positive=True)
        if chi_width > 360:
            raise InputFileError(f"{where}, column chi_width: {chi_width} is more than 360 deg")
        chi_lo, chi_hi = max(chi - chi_width / 2, -180.0), min(chi + chi_width / 2, 180.0)
    flag = cell.get("visible", "").lower() or "true"
    if flag not in _TRUE | _FALSE:
        raise InputFileError(f"{where}, column visible: {cell['visible']!r} is not true or false")
    return dict(frame=Path(cell.get("frame", "")).name, kind=kind, q=q, chi=chi, q_lo=q - q_width / 2,
                q_hi=q + q_width / 2, chi_lo=chi_lo, chi_hi=chi_hi, q_width=q_width, chi_width=chi_hi - chi_lo,
                visible=flag in _TRUE)


def read_labels(path: str | Path, *, geometry=None, frame: str | None = None) -> pd.DataFrame:
    """Read a label file (format: the module docstring).

    Parameters
    ----------
    path : str or Path
        CSV file with a header.
    geometry : braggflow.geometry.Geometry, optional
        Needed for rows that give the centre as ``row``, ``col`` instead of ``q``, ``chi``.
    frame : str, optional
        Keep only the rows whose ``frame`` is this name (compared with the file
        name of ``frame``: ``a/b.tif`` and ``b.tif`` are the same frame).

    Returns
    -------
    labels : pandas.DataFrame
        One row per feature: ``frame`` (str, empty when the file has no frame
        column), ``kind``, ``q``, ``chi`` (1/Å, deg), ``q_lo``, ``q_hi``,
        ``chi_lo``, ``chi_hi`` (extent), ``q_width``, ``chi_width``, ``visible``
        (bool), ``line`` (the row's line number in the file).  A ring labelled
        without ``chi_width`` spans chi -180 to 180 (its seen range when the
        detector's valid bins are applied).

    Raises
    ------
    InputFileError
        If the file is missing or not a table with a header, a required column
        is missing, or a value is not valid; the message names the file, the
        line and the column.
    ConfigError
        If a row gives its centre as ``row``, ``col`` and no geometry is given.
    """
    path = Path(path)
    header, rows = _table(path)
    records = []
    for line_no, values in rows:
        where = f"{path}, line {line_no}"
        if len(values) != len(header):
            raise InputFileError(f"{where}: {len(values)} values for {len(header)} columns")
        records.append({**_label({h: v.strip() for h, v in zip(header, values)}, where, geometry), "line": line_no})
    columns = ["frame", "kind", "q", "chi", "q_lo", "q_hi", "chi_lo", "chi_hi", "q_width", "chi_width", "visible",
               "line"]
    labels = pd.DataFrame(records, columns=columns)
    labels["visible"] = labels["visible"].astype(bool)
    if frame is not None:
        labels = labels[labels["frame"] == Path(frame).name].reset_index(drop=True)
    return labels


def labels_from_truth(truth: pd.DataFrame, *, frame: str = "") -> pd.DataFrame:
    """A simulated frame's truth as label rows.

    Parameters
    ----------
    truth : pandas.DataFrame
        :attr:`braggflow.simulate.gixd.GixdFrame.truth` (``q``, ``chi``,
        ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``, ``kind``, ``visible``).
    frame : str, optional
        Name written in the ``frame`` column.

    Returns
    -------
    labels : pandas.DataFrame
        Columns ``frame``, ``kind``, ``q``, ``chi`` (the middle of the chi
        extent, so that the extent round-trips), ``q_width``, ``chi_width``,
        ``visible``, ready for :func:`write_labels`.  Features with an empty
        extent (no seen chi range: never visible) are left out.
    """
    truth = truth[(truth["q_hi"] > truth["q_lo"]) & (truth["chi_hi"] > truth["chi_lo"])]
    chi_lo, chi_hi = truth["chi_lo"].to_numpy(float), truth["chi_hi"].to_numpy(float)
    q_lo, q_hi = truth["q_lo"].to_numpy(float), truth["q_hi"].to_numpy(float)
    return pd.DataFrame(dict(frame=frame, kind=truth["kind"].astype(str).to_numpy(), q=0.5 * (q_lo + q_hi),
                             chi=0.5 * (chi_lo + chi_hi), q_width=q_hi - q_lo, chi_width=chi_hi - chi_lo,
                             visible=truth["visible"].to_numpy(dtype=bool)))


def write_labels(labels: pd.DataFrame, path: str | Path, *, comment: str | None = None) -> Path:
    """Write label rows as a label file (CSV with a header; q, chi, widths to 1e-6).

    Parameters
    ----------
    labels : pandas.DataFrame
        Columns among :data:`LABEL_COLUMNS` (at least ``kind``, ``q``, ``chi``,
        ``q_width``, ``chi_width``).
    path : str or Path
    comment : str, optional
        Written first, each line prefixed with ``# `` (e.g. the geometry used).

    Returns
    -------
    path : Path

    Raises
    ------
    ConfigError
        If a needed column is missing.
    """
    path = Path(path)
    missing = [c for c in ("kind", "q", "chi", "q_width", "chi_width") if c not in labels.columns]
    if missing:
        raise ConfigError(f"labels lack column(s) {', '.join(missing)}")
    columns = [c for c in LABEL_COLUMNS if c in labels.columns]
    out = labels[columns].copy()
    for c in ("q", "chi", "row", "col", "q_width", "chi_width"):
        if c in out.columns:
            out[c] = out[c].astype(float).round(6)
    if "visible" in out.columns:
        out["visible"] = np.where(out["visible"].to_numpy(dtype=bool), "true", "false")
    head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    path.write_text(head + out.to_csv(index=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- fine-tuning
@dataclass
class LabelledFrame:
    """A polar image with its labelled features.

    Attributes
    ----------
    image : (256, 256) ndarray
        Polar image (rows chi, columns q; NaN where not seen).
    q, chi : ndarray
        Bin centres, 1/Å and deg.
    truth : pandas.DataFrame
        Labels as :func:`read_labels` returns them.
    name : str
    """

    image: np.ndarray
    q: np.ndarray
    chi: np.ndarray
    truth: pd.DataFrame
    name: str = ""


def labelled_frame(frame: np.ndarray, geometry, labels: pd.DataFrame, *, mask: np.ndarray | None = None,
                   name: str = "") -> LabelledFrame:
    """A detector frame remapped to the detector's polar image, with its labels.

    Parameters
    ----------
    frame : (H, W) ndarray
        Detector frame, counts.
    geometry : braggflow.geometry.Geometry
    labels : pandas.DataFrame
        From :func:`read_labels` (this frame's rows).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel (e.g. module gaps).
    name : str, optional

    Returns
    -------
    LabelledFrame
    """
    from braggflow.nn.detector import polar_image

    image, q, chi = polar_image(np.asarray(frame, dtype=np.float64), geometry, mask=mask)
    return LabelledFrame(image=image, q=np.asarray(q), chi=np.asarray(chi), truth=labels, name=name)


def _arrays(frames: Sequence[LabelledFrame]) -> dict:
    """Input planes and CenterNet targets of labelled frames (as ``training.detector`` builds them)."""
    from braggflow.nn.detector import INPUT_SHAPE, contrast_image
    from braggflow.simulate.gixd import PolarGrid
    from braggflow.training.detector import detector_targets, frame_class_targets

    planes, heat, reg, regm, ign = [], [], [], [], []
    for fr in frames:
        if fr.image.shape != INPUT_SHAPE:
            raise ConfigError(f"{fr.name or 'labelled frame'}: polar image of shape {fr.image.shape}, the detector "
                              f"takes {INPUT_SHAPE}")
        planes.append(contrast_image(fr.image))
        t = detector_targets(fr.truth, PolarGrid(q=fr.q, chi=fr.chi), np.isfinite(fr.image))
        heat.append(t[0])
        reg.append(t[1])
        regm.append(t[2])
        ign.append(t[3])
    return dict(planes=np.stack(planes), heat=np.stack(heat), reg=np.stack(reg), reg_mask=np.stack(regm),
                ignore=np.stack(ign), labels=np.stack([frame_class_targets(fr.truth) for fr in frames]))


def _batch_loss(torch, net, arrays: dict, idx) -> object:
    """The training loss of :mod:`braggflow.training.detector` (heat maps normalised per class) on frames ``idx``."""
    from braggflow.training.detector import DetectorTrainConfig, _loss

    t = {k: torch.from_numpy(v[idx]) for k, v in arrays.items()}
    return _loss(torch, net(t["planes"].float()), t["heat"].float(), t["reg"].float(), t["reg_mask"], t["ignore"],
                 t["labels"].float(), DetectorTrainConfig(class_balanced=True))


def _mean_loss(torch, net, arrays: dict) -> float:
    """Mean loss per frame, network in eval mode (back to fine-tuning mode after, when it was training)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        total = sum(float(_batch_loss(torch, net, arrays, np.array([i]))) for i in range(len(arrays["planes"])))
    if was_training:
        _tuning_mode(net)
    return total / len(arrays["planes"])


def _tuning_mode(net) -> None:
    """Train mode with the batch-normalisation layers frozen (their running statistics from the simulated training
    kept: a few real frames in small batches would move them away from what the later layers learned)."""
    import torch

    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def coverage_counts(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[int, int, int, int]:
    """Coverage counts of one frame (the measure of ``bench/detect.py``).

    A labelled feature is found when a detection's centre (``q``, and ``eta``
    or ``chi``) lies inside its extent, its q range widened by
    :data:`COVERAGE_SLACK` either side; a detection is inside when it lies in
    some visible feature's extent; a detection inside only features marked
    not visible counts neither way.

    Parameters
    ----------
    pred : pandas.DataFrame
        Detections: ``q`` (1/Å) and ``eta`` or ``chi`` (deg).
    truth : pandas.DataFrame
        Labels as :func:`read_labels` returns them.

    Returns
    -------
    found, n_true, inside, n_pred : int
        Visible labels found, visible labels, detections inside one, detections counted.
    """
    vis = truth[truth["visible"].to_numpy(dtype=bool)]
    weak = truth[~truth["visible"].to_numpy(dtype=bool)]
    q = pred["q"].to_numpy(dtype=float)
    chi = pred["eta" if "eta" in pred.columns else "chi"].to_numpy(dtype=float)

    def inside(t):
        if not len(t) or not len(q):
            return np.zeros((len(q), len(t)), dtype=bool)
        return ((q[:, None] >= t["q_lo"].to_numpy()[None] - COVERAGE_SLACK)
                & (q[:, None] <= t["q_hi"].to_numpy()[None] + COVERAGE_SLACK)
                & (chi[:, None] >= t["chi_lo"].to_numpy()[None]) & (chi[:, None] <= t["chi_hi"].to_numpy()[None]))

    on_vis, on_weak = inside(vis), inside(weak)
    counted = on_vis.any(1) | ~on_weak.any(1)
    return int(on_vis.any(0).sum()), len(vis), int(on_vis.any(1).sum()), int(counted.sum())


def tune_label_thresholds(detector, frames: Sequence[LabelledFrame], *, grid: Sequence[float] = THRESHOLD_GRID,
                          start: dict | None = None) -> tuple[dict, float]:
    """Per-class score thresholds with the best coverage F1 on labelled frames.

    Each class's threshold is chosen in turn from ``grid`` with the others
    held (two rounds over the classes; ties go to the higher threshold).  The
    detections are the network's decoded boxes (:func:`braggflow.nn.detector.decode`).

    Parameters
    ----------
    detector : GixdDetector
    frames : sequence of LabelledFrame
    grid : sequence of float
    start : dict, optional
        Thresholds to start from; default: the detector's.

    Returns
    -------
    thresholds : dict
        Per class (``ring``, ``arc``, ``spot``).
    f1 : float
        Coverage F1 over the frames at those thresholds.
    """
    from braggflow.nn.detector import CLASSES, contrast_image, decode

    outs = [detector.raw(contrast_image(fr.image)[None])[0] for fr in frames]

    def f1(thresholds: dict) -> float:
        total = np.zeros(4)
        for out, fr in zip(outs, frames):
            total += coverage_counts(decode(out, np.isfinite(fr.image), fr.q, fr.chi, thresholds), fr.truth)
        p = total[2] / total[3] if total[3] else 0.0
        r = total[0] / total[1] if total[1] else 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    thresholds = dict(start or detector.thresholds)
    for _ in range(2):
        for cls in CLASSES:
            thresholds[cls] = float(max(grid, key=lambda t: (f1({**thresholds, cls: t}), t)))
    return thresholds, f1(thresholds)


def detector_loss(detector, frames: Sequence[LabelledFrame]) -> float:
    """The training loss of a detector on labelled frames (mean over frames; lower is better).

    The loss is :mod:`braggflow.training.detector`'s: the penalty-reduced focal
    loss on the heat maps (normalised per class) plus the L1 losses of the box
    sizes and centre offsets, against the CenterNet targets of the labels, plus
    the frame-class cross-entropy (the classes the labels imply).

    Parameters
    ----------
    detector : GixdDetector or torch.nn.Module
        A detector with a torch network (:func:`braggflow.nn.detector.load_detector`
        with ``backend="torch"``), or the network itself.
    frames : sequence of LabelledFrame

    Returns
    -------
    loss : float

    Raises
    ------
    ConfigError
        If the detector has no torch network or no frame is given.
    """
    import torch

    net = getattr(detector, "network", detector)
    if net is None:
        raise ConfigError("detector_loss needs a detector with a torch network (load_detector(..., backend='torch'))")
    if not len(frames):
        raise ConfigError("detector_loss needs at least one labelled frame")
    return _mean_loss(torch, net, _arrays(frames))


def _check_options(frames, *, lr: float, **counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"fine-tuning: {name} must be >= 1, got {value}")
    if not lr > 0:
        raise ConfigError(f"fine-tuning: lr must be > 0, got {lr}")
    if not len(frames):
        raise ConfigError("fine-tuning needs at least one labelled frame")


def fine_tune_detector(init, frames: Sequence[LabelledFrame], out: str | Path | None = None, *,
                       val_frames: Sequence[LabelledFrame] | None = None, epochs: int = 20, lr: float = 3e-4,
                       batch_size: int = 4, patience: int = 3, seed: int = 0, threads: int = 1,
                       max_seconds: float | None = None, retune: bool = True,
                       log: Callable[[str], None] = print) -> tuple[object, dict]:
    """Fine-tune a detector on labelled frames, with checkpoints and early stopping.

    Parameters
    ----------
    init : str or Path or GixdDetector
        Shipped detector name or detector file (``.pt``) to start from, or a loaded detector.
    frames : sequence of LabelledFrame
        Training frames (:func:`labelled_frame`, or simulated polar frames).
    out : str or Path, optional
        Detector file (``.pt``) written with the best weights each time they improve.
    val_frames : sequence of LabelledFrame, optional
        Frames whose loss picks the best epoch and stops training; default: the training frames.
    epochs : int
        Most passes over the training frames.
    lr : float
        Learning rate (AdamW, weight decay 1e-4, constant).
    batch_size : int
    patience : int
        Stop after this many epochs without a lower validation loss.
    seed : int
        Seed of the batch order.
    threads : int
        torch CPU threads.
    max_seconds : float, optional
        Stop after the epoch during which this much time has passed.
    retune : bool
        After training, choose the score thresholds per class for the best
        coverage F1 on the validation frames (:func:`tune_label_thresholds`);
        else keep the initial model's.
    log : callable
        Receives one line per epoch (training and validation loss).

    Returns
    -------
    detector : GixdDetector
        With the best weights (torch backend, eval mode).
    metrics : dict
        ``initial_val_loss``, ``best_val_loss``, ``best_epoch``, ``epochs_run``,
        ``train_seconds``, ``history`` (one dict per epoch), and with
        ``retune`` the ``thresholds`` and their ``coverage_f1``.

    Raises
    ------
    ConfigError
        For options out of range or no training frame.
    """
    import torch

    from braggflow.nn.detector import GixdDetector, load_detector
    from braggflow.training.detector import DetectorTrainConfig, save_detector

    _check_options(frames, epochs=epochs, batch_size=batch_size, patience=patience, threads=threads, lr=lr)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    detector = init if isinstance(init, GixdDetector) else load_detector(init, backend="torch")
    if detector.network is None:
        detector = load_detector(detector.path if detector.path is not None and detector.path.suffix == ".pt"
                                 else detector.name, backend="torch")
    net = detector.network
    train = _arrays(frames)
    val = _arrays(val_frames) if val_frames else train
    n = len(frames)
    config = DetectorTrainConfig(n_train=n, n_val=len(val["planes"]), epochs=epochs, batch_size=batch_size, lr=lr,
                                 width=detector.width, seed=seed, threads=threads, max_seconds=max_seconds,
                                 class_balanced=True, init=str(detector.path or detector.name))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = np.random.default_rng(seed)
    best = initial = _mean_loss(torch, net, val)
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best_epoch, history, waited, epoch = 0, [], 0, 0
    log(f"fine-tuning {detector.name} on {n} labelled frame(s): validation loss {initial:.4f} before")
    start = time.perf_counter()
    _tuning_mode(net)
    for epoch in range(1, epochs + 1):
        order = gen.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss = _batch_loss(torch, net, train, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        current = _mean_loss(torch, net, val)
        history.append(dict(epoch=epoch, loss=total / n, val_loss=current))
        log(f"epoch {epoch}/{epochs}: loss {total / n:.4f}, validation loss {current:.4f} "
            f"({time.perf_counter() - start:.0f} s)")
        if current < best:
            best, best_epoch, waited = current, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if out is not None:
                save_detector(net, out, config=config, metrics=dict(best_epoch=epoch, val_loss=current),
                              thresholds=detector.thresholds)
        else:
            waited += 1
            if waited >= patience:
                log(f"no lower validation loss for {patience} epochs: stopping")
                break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    net.load_state_dict(best_state)
    net.eval()
    metrics = dict(initial_val_loss=initial, best_val_loss=best, best_epoch=best_epoch, epochs_run=epoch,
                   train_seconds=round(time.perf_counter() - start, 1), history=history)
    if retune:
        detector.thresholds, metrics["coverage_f1"] = tune_label_thresholds(detector, val_frames or frames)
        metrics["thresholds"] = dict(detector.thresholds)
        log(f"score thresholds {detector.thresholds}: coverage F1 {metrics['coverage_f1']:.3f} on the labelled frames")
    if out is not None:
        save_detector(net, out, config=config, metrics={k: v for k, v in metrics.items() if k != "history"},
                      thresholds=detector.thresholds)
        detector.path = Path(out)
    return detector, metrics
