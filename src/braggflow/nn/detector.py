"""A learned detector of grazing-incidence features (rings, arcs, spots) in polar (q, chi) images.

The frame is remapped to a polar image of 256 x 256 bins (rows: pyFAI's chi over
(-180, 180) deg, columns: q over the detector's range, through
:func:`braggflow.geometry.remap.remap`), contrast-corrected as gixi does (a
logarithmic scale, then CLAHE), and a small fully convolutional network
(:func:`build_network`, about 0.1 M parameters) returns, at half the input
resolution, a heat map per class (``ring``, ``arc``, ``spot``), the box half-sizes
and the sub-bin offsets of the feature centres (the CenterNet recipe: Zhou, Wang
and Krähenbühl, "Objects as points", arXiv:1904.07850 (2019)).  Arcs and spots
are the local maxima of their heat maps; rings are the maxima of the ring heat
map averaged along chi (a ring spans its whole column).  Each feature's q centre
is then refined on the polar image (the vertex of a parabola through the
maximum of its chi-averaged profile).

The approach follows gixi (Starostin, Pithan et al., npj Comput. Mater. 8, 101
(2022)): polar remapping, log/CLAHE contrast, a network trained only on simulated
frames (:mod:`braggflow.simulate.gixd`).  Its Faster R-CNN is replaced here by a
CenterNet-style network small enough to train in minutes on two CPU cores.

Inference runs with ONNX Runtime (no torch needed) or with torch.  The shipped
model is listed under ``"detectors"`` in ``braggflow/nn/weights/MANIFEST``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError, InputFileError
from braggflow.nn.files import MANIFEST_PATH, WEIGHTS_DIR, file_sha256, read_manifest, torch_missing_message

__all__ = ["CLASSES", "FRAME_CLASSES", "INPUT_SHAPE", "STRIDE", "FEATURE_COLUMNS", "GixdDetector", "contrast_image",
           "build_network", "list_detectors", "load_detector", "decode", "refine_q", "detect_polar",
           "polar_image", "detect_frame", "frame_class", "frame_probabilities", "match_detections",
           "detection_scores", "DEFAULT_DETECTOR", "DECODING"]

CLASSES = ("ring", "arc", "spot")
"""Feature classes, in the order of the network's heat-map channels."""
FRAME_CLASSES = ("empty", "spots", "arcs", "rings")
"""Frame classes, in the order of the network's frame-class outputs (independent probabilities: a frame can hold
rings and spots; ``empty``: no labelled feature, only background and diffuse scattering)."""
INPUT_SHAPE = (256, 256)
"""Polar image the network takes: (chi bins, q bins)."""
STRIDE = 2
"""Output (heat map) pixels per input bin."""
DEFAULT_DETECTOR = "gixd-centernet-sim"
FORMAT = "braggflow-detector"
FEATURE_COLUMNS = ("kind", "score", "q", "q_err", "chi", "q_lo", "q_hi", "chi_lo", "chi_hi", "q_width",
                   "chi_width", "intensity")
DECODING = {"nms_size": 3, "ring_gap": 1.0, "merge_rings": False, "min_half_bins": 0.5}
"""Options of :func:`decode` a loaded detector uses (:attr:`GixdDetector.decoding`), chosen on simulated
validation frames (docs/detector.md, "Decoding")."""


# ---------------------------------------------------------------- input
def contrast_image(image: np.ndarray) -> np.ndarray:
    """The network's input planes from a polar image: log contrast, its CLAHE, the valid mask.

    Parameters
    ----------
    image : (n_chi, n_q) ndarray of float
        Polar image (counts per pixel or any linear scale); NaN where the
        detector sees nothing.

    Returns
    -------
    planes : (3, n_chi, n_q) ndarray of float32
        ``log(1 + (I - p1) / (median - p1))`` scaled to [0, 1] by its value at
        the 99.9th percentile; the same after contrast-limited adaptive histogram
        equalisation (scikit-image, kernel 1/8 of the image); 1 where the
        image is finite.  0 where the image is NaN.

    Raises
    ------
    ConfigError
        If the image is not 2-D or has fewer than 64 finite bins.
    """
    from skimage.exposure import equalize_adapthist

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ConfigError(f"polar image must be 2-D (chi, q), got shape {image.shape}")
    valid = np.isfinite(image)
    if valid.sum() < 64:
        raise ConfigError(f"polar image has {int(valid.sum())} finite bins: at least 64 are needed")
    x = image[valid]
    lo, med, hi = np.percentile(x, [1.0, 50.0, 99.9])
    scale = max(med - lo, 1e-3 * (hi - lo), 1e-12)
    v = np.log1p(np.clip(np.where(valid, image, lo) - lo, 0, None) / scale)
    top = np.log1p(max(hi - lo, 1e-12) / scale)
    v = np.clip(v / top, 0.0, 1.0) * valid
    kernel = (max(8, image.shape[0] // 8), max(8, image.shape[1] // 8))
    eq = equalize_adapthist(v, kernel_size=kernel, clip_limit=0.01) * valid
    return np.stack([v, eq, valid]).astype(np.float32)


# ---------------------------------------------------------------- network
@functools.cache
def _network_class():
    """The torch module class (torch imported on first use only)."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    def conv(cin, cout, stride=1, dil=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dil, dilation=dil, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def column_mean(feat, mask, factor: int):
        m = F.avg_pool2d(mask, factor)  # the valid-bin fraction at the features' resolution
        return (feat * m).sum(2, keepdim=True) / (m.sum(2, keepdim=True) + 1e-3)

    class GixdNet(nn.Module):
        """Encoder-decoder with chi-averaged context; outputs (N, 7, H/2, W/2): 3 heat logits, 2 log half-sizes,
        2 offsets; and (N, 4) frame-class logits (empty, spots, arcs, rings) from the deepest features pooled over
        the seen bins (mean and maximum)."""

        def __init__(self, width: int = 8, in_ch: int = 3, n_classes: int = 3):
            super().__init__()
            c1, c2, c3, c4 = width, 3 * width, 4 * width, 6 * width
            self.stem = nn.Sequential(conv(in_ch, c1, 2), conv(c1, c1))
            self.e2 = nn.Sequential(conv(c1, c2, 2), conv(c2, c2))
            self.e3 = nn.Sequential(conv(c2, c3, 2), conv(c3, c3, dil=2))
            self.e4 = nn.Sequential(conv(c3, c4, 2), conv(c4, c4, dil=2))
            self.context = nn.Sequential(nn.Conv2d(2 * c4, c4, 1), nn.ReLU(inplace=True))
            self.d3 = conv(c4 + c3, c3)
            self.d2 = conv(c3 + c2, 2 * c1)
            self.d1 = conv(3 * c1, c1)
            self.head = nn.Sequential(nn.Conv2d(2 * c1, c1, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(c1, n_classes + 4, 1))
            self.frame_head = nn.Linear(2 * c4, len(FRAME_CLASSES))
            self.n_classes = n_classes
            with torch.no_grad():
                self.head[-1].bias[:n_classes] = -2.19  # heat-map prior 0.1 (CenterNet)

        def forward(self, x):
            mask = x[:, 2:3]
            s1 = self.stem(x)
            s2 = self.e2(s1)
            s3 = self.e3(s2)
            s4 = self.e4(s3)
            ctx = torch.cat([column_mean(s4, mask, 16).expand_as(s4),
                             column_mean(s4.transpose(2, 3), mask.transpose(2, 3), 16).transpose(2, 3).expand_as(s4)],
                            1)
            s4 = s4 + self.context(ctx)
            m4 = F.avg_pool2d(mask, 16)
            pooled = torch.cat([(s4 * m4).sum((2, 3)) / (m4.sum((2, 3)) + 1e-3),
                                (s4 * m4 - (1 - m4) * 1e3).amax((2, 3))], 1)
            frame_logits = self.frame_head(pooled)
            u = self.d3(torch.cat([F.interpolate(s4, scale_factor=2.0, mode="nearest"), s3], 1))
            u = self.d2(torch.cat([F.interpolate(u, scale_factor=2.0, mode="nearest"), s2], 1))
            u = self.d1(torch.cat([F.interpolate(u, scale_factor=2.0, mode="nearest"), s1], 1))
            u = torch.cat([u, column_mean(u, mask, 2).expand_as(u)], 1)
            return self.head(u), frame_logits

    return GixdNet


def build_network(width: int = 8):
    """The detector network (torch module; needs torch).

    Parameters
    ----------
    width : int
        Channels of the first stage (later stages: 3, 4 and 6 times it).

    Returns
    -------
    network : torch.nn.Module
        Input (N, 3, 256, 256) from :func:`contrast_image`; outputs a tuple:
        (N, 7, 128, 128) heat-map logits of ring, arc, spot, log half-widths in
        q and chi (input bins), centre offsets in q and chi (output pixels); and
        (N, 4) frame-class logits (:data:`FRAME_CLASSES`, one sigmoid each).

    Raises
    ------
    ConfigError
        If ``width`` is below 4.
    ImportError
        If torch is not installed.
    """
    if width < 4:
        raise ConfigError(f"detector width must be >= 4, got {width}")
    try:
        cls = _network_class()
    except ImportError:
        raise ImportError(torch_missing_message("building the detector network")) from None
    return cls(width=width)


# ---------------------------------------------------------------- model files
@dataclass
class GixdDetector:
    """A loaded detector model.

    Attributes
    ----------
    name : str
    width : int
        Network width (:func:`build_network`).
    network : torch.nn.Module or None
        For the torch backend.
    session : onnxruntime.InferenceSession or None
        For the ONNX backend.
    thresholds : dict
        Smallest score kept per class (``ring``, ``arc``, ``spot``).
    frame_thresholds : dict or None
        Heat-map maximum per class at which a frame is said to hold that class
        (:func:`frame_probabilities`); None: ``thresholds``.
    train_config, metrics : dict
    path : Path or None
    frame_head : bool
        Whether the model's frame-class head was trained (files of format version 1 have none).
    decoding : dict
        Keyword options of :func:`decode` (default :data:`DECODING`).
    """

    name: str
    width: int
    network: Any = None
    session: Any = None
    thresholds: dict = field(default_factory=lambda: {"ring": 0.3, "arc": 0.3, "spot": 0.3})
    frame_thresholds: dict | None = None
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    frame_head: bool = True
    decoding: dict = field(default_factory=lambda: dict(DECODING))

    def run(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for input planes: feature maps and frame-class probabilities.

        Parameters
        ----------
        planes : (N, 3, 256, 256) ndarray of float32

        Returns
        -------
        out : (N, 7, 128, 128) ndarray of float32
            Heat maps (after the sigmoid), log half-sizes, offsets.
        frame_probs : (N, 4) ndarray of float
            The frame-class head's probability of each of :data:`FRAME_CLASSES`
            (independent sigmoids); NaN for a model without the head.  The
            frame classes braggflow reports come from the heat maps
            (:func:`frame_probabilities`), which are right more often on
            simulated frames.
        """
        planes = np.ascontiguousarray(planes, dtype=np.float32)
        if self.session is not None:
            res = self.session.run(None, {"x": planes})
        else:
            import torch

            with torch.no_grad():
                res = self.network(torch.from_numpy(planes))
            res = [r.numpy() for r in (res if isinstance(res, tuple) else (res,))]
        out = res[0].copy()
        out[:, :3] = 1.0 / (1.0 + np.exp(-out[:, :3]))
        if len(res) > 1 and self.frame_head:
            probs = 1.0 / (1.0 + np.exp(-np.asarray(res[1], dtype=np.float64)))
        else:
            probs = np.full((len(out), len(FRAME_CLASSES)), np.nan)
        return out, probs

    def raw(self, planes: np.ndarray) -> np.ndarray:
        """Feature maps for input planes (:meth:`run` without the frame classes).

        Parameters
        ----------
        planes : (N, 3, 256, 256) ndarray of float32

        Returns
        -------
        out : (N, 7, 128, 128) ndarray of float32
            Heat maps (after the sigmoid), log half-sizes, offsets.
        """
        return self.run(planes)[0]


def list_detectors() -> list[dict]:
    """The shipped detector models (the ``"detectors"`` section of the weights MANIFEST).

    Returns
    -------
    detectors : list of dict
        The manifest entry of each, plus ``name``.
    """
    return [{"name": k, **v} for k, v in read_manifest().get("detectors", {}).items()]


def _read_pt(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise ImportError(torch_missing_message(f"{path}: loading a PyTorch detector file")) from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InputFileError(f"{path}: not a readable detector file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputFileError(f"{path}: not a braggflow detector file (format {FORMAT!r} expected)")
    return payload


def load_detector(model: str | Path | None = None, *, backend: str = "auto") -> GixdDetector:
    """Load a shipped detector by name, or a detector file (``.pt`` written by training).

    Parameters
    ----------
    model : str or Path, optional
        Shipped name (default: ``gixd-centernet-sim``) or a ``.pt`` file.
    backend : {"auto", "onnx", "torch"}
        "auto": ONNX Runtime for a shipped model, torch for a ``.pt`` file.

    Returns
    -------
    detector : GixdDetector

    Raises
    ------
    InputFileError
        If the name is not shipped, a file is missing or damaged, or a checksum differs.
    ConfigError
        For an unknown backend.
    """
    if backend not in ("auto", "onnx", "torch"):
        raise ConfigError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")
    entries = {e["name"]: e for e in list_detectors()}
    name = str(model) if model is not None else DEFAULT_DETECTOR
    if name in entries:
        return _load_shipped(entries[name], backend)
    path = Path(name)
    if not path.is_file():
        raise InputFileError(f"{name}: neither a shipped detector ({', '.join(entries) or 'none'}) nor a file")
    payload = _read_pt(path)
    det = GixdDetector(name=path.stem, width=int(payload["width"]), thresholds=dict(payload["thresholds"]),
                       frame_thresholds=dict(payload["frame_thresholds"]) if "frame_thresholds" in payload else None,
                       train_config=payload.get("train_config", {}), metrics=payload.get("metrics", {}), path=path)
    det.network, det.frame_head = _network_from(payload, path)
    return det


def _network_from(payload: dict, path: Path):
    """The torch network of a detector file's payload, and whether its frame-class head was trained."""
    net = build_network(int(payload["width"]))
    state = payload["state_dict"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("frame_head.") for k in missing):
        raise InputFileError(f"{path}: weights do not fit the detector network (missing {list(missing)[:3]}, "
                             f"unexpected {list(unexpected)[:3]})")
    net.eval()
    return net, not missing


def _load_shipped(entry: dict, backend: str) -> GixdDetector:
    det = GixdDetector(name=entry["name"], width=int(entry["width"]), thresholds=dict(entry["thresholds"]),
                       frame_thresholds=dict(entry["frame_thresholds"]) if "frame_thresholds" in entry else None,
                       train_config=entry.get("train_config", {}), metrics=entry.get("metrics", {}))
    use_onnx = backend in ("auto", "onnx")
    key = "onnx" if use_onnx else "pt"
    path = WEIGHTS_DIR / entry[key]["file"]
    if not path.is_file():
        raise InputFileError(f"{path}: shipped detector file missing (listed in {MANIFEST_PATH})")
    if file_sha256(path) != entry[key]["sha256"]:
        raise InputFileError(f"{path}: SHA-256 differs from {MANIFEST_PATH}; the file is damaged")
    det.path = path
    if use_onnx:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        opts.intra_op_num_threads = int(threads) if threads.isdigit() and int(threads) > 0 else 2
        det.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    else:
        det.network, det.frame_head = _network_from(_read_pt(path), path)
    if use_onnx:
        det.frame_head = len(det.session.get_outputs()) > 1
    return det


def frame_probabilities(out: np.ndarray, valid: np.ndarray, thresholds: dict | None = None) -> np.ndarray:
    """Frame-class probabilities from the feature heat maps of one image.

    For each feature class, the largest heat-map value over the seen bins (for
    rings: of the ring map averaged down each column, as :func:`decode` finds
    rings), mapped by ``p = m ** (ln 0.5 / ln t)`` so that the class's frame
    threshold ``t`` gives 0.5: a frame has spots (``p_spots >= 0.5``) when its
    strongest spot reaches ``t``.  ``p_empty = 1 - max(p_spots, p_arcs, p_rings)``.

    Parameters
    ----------
    out : (7, h, w) ndarray
        :meth:`GixdDetector.raw` for one image.
    valid : (n_chi, n_q) ndarray of bool
        Finite bins of the polar image.
    thresholds : dict, optional
        Frame threshold per feature class (default 0.3 each): a model's
        ``frame_thresholds`` (tuned for the frame classes), else its score thresholds.

    Returns
    -------
    probs : (4,) ndarray
        Probabilities of :data:`FRAME_CLASSES` (empty, spots, arcs, rings).
    """
    from skimage.measure import block_reduce

    thresholds = {**{c: 0.3 for c in CLASSES}, **(thresholds or {})}
    valid_out = block_reduce(valid, (STRIDE, STRIDE), np.mean) > 0.25
    if not valid_out.any():
        return np.array([1.0, 0.0, 0.0, 0.0])
    rows = valid_out.sum(0)
    ring_profile = np.where(rows > 0, (out[0] * valid_out).sum(0) / np.maximum(rows, 1), 0.0)
    peak = {"ring": float(ring_profile.max()), "arc": float(out[1][valid_out].max()),
            "spot": float(out[2][valid_out].max())}
    p = {}
    for c, m in peak.items():
        t = float(np.clip(thresholds[c], 1e-3, 1 - 1e-3))
        p[c] = float(np.clip(m, 0.0, 1.0) ** (np.log(0.5) / np.log(t)))
    return np.array([1.0 - max(p.values()), p["spot"], p["arc"], p["ring"]])


def frame_class(probs) -> tuple[str | None, dict[str, float]]:
    """The most probable frame class and the probability of each.

    Parameters
    ----------
    probs : (4,) array_like
        Probabilities of :data:`FRAME_CLASSES` (:meth:`GixdDetector.run`; independent
        sigmoids, so they need not sum to 1).

    Returns
    -------
    label : str or None
        The class of the highest probability (``empty``, ``spots``, ``arcs``,
        ``rings``); None when the probabilities are NaN (a model without the
        frame-class head).
    probabilities : dict
        ``p_empty``, ``p_spots``, ``p_arcs``, ``p_rings``.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(len(FRAME_CLASSES))
    values = {f"p_{c}": float(v) for c, v in zip(FRAME_CLASSES, p)}
    if not np.all(np.isfinite(p)):
        return None, values
    return FRAME_CLASSES[int(np.argmax(p))], values


# ---------------------------------------------------------------- decoding
def _to_input(x_out: np.ndarray) -> np.ndarray:
    """Output-pixel coordinate to input-bin coordinate (bin centres on integers)."""
    return STRIDE * np.asarray(x_out, dtype=np.float64) + 0.5 * (STRIDE - 1)


def _ring_candidates(out: np.ndarray, valid_out: np.ndarray, threshold: float) -> list[dict]:
    heat = out[0]
    rows = valid_out.sum(0)
    prof = np.where(rows > 0, (heat * valid_out).sum(0) / np.maximum(rows, 1), 0.0)
    found = []
    for j in range(len(prof)):
        if prof[j] < threshold or prof[j] < prof[max(0, j - 1)] or prof[j] < prof[min(len(prof) - 1, j + 1)]:
            continue
        if j > 0 and prof[j] == prof[j - 1]:
            continue
        on = valid_out[:, j] & (heat[:, j] > 0.5 * prof[j])
        if not on.any():
            on = valid_out[:, j]
        found.append(dict(kind="ring", score=float(prof[j]), x=j + float(np.median(out[5, on, j])), y=None,
                          hw=float(np.exp(np.median(out[3, on, j]))), hh=None, column=j))
    return found


def _peak_candidates(out: np.ndarray, channel: int, threshold: float, top_k: int = 300, nms_size: int = 3,
                     low: float | None = None) -> list[dict]:
    from scipy.ndimage import find_objects, label, maximum_filter

    heat = out[channel]
    peaks = (heat == maximum_filter(heat, size=nms_size, mode="constant")) & (heat >= threshold)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-heat[ys, xs])[:top_k]
    ys, xs = ys[order], xs[order]
    if low is not None and low < threshold:  # hysteresis: one maximum per region above ``low`` holding no peak
        labels, _ = label(heat >= low, structure=np.ones((3, 3), dtype=bool))
        held = set(labels[ys, xs].tolist())
        extra_y, extra_x = [], []
        for k, box in enumerate(find_objects(labels), start=1):
            if box is None or k in held:
                continue
            region = np.where(labels[box] == k, heat[box], -1.0)
            dy, dx = np.unravel_index(int(np.argmax(region)), region.shape)
            extra_y.append(box[0].start + int(dy))
            extra_x.append(box[1].start + int(dx))
        ys, xs = np.r_[ys, np.asarray(extra_y, dtype=ys.dtype)], np.r_[xs, np.asarray(extra_x, dtype=xs.dtype)]
    return [dict(kind=CLASSES[channel], score=float(heat[y, x]), x=x + float(out[5, y, x]),
                 y=y + float(out[6, y, x]), hw=float(np.exp(out[3, y, x])), hh=float(np.exp(out[4, y, x])))
            for y, x in zip(ys, xs)]


def _circular_mean(angles_deg: np.ndarray) -> float:
    """Circular mean of angles (deg), in (-180, 180]; the arithmetic mean when they cancel out."""
    a = np.radians(angles_deg)
    s, c = np.sin(a).sum(), np.cos(a).sum()
    if np.hypot(s, c) < 1e-6 * len(a):
        return float(np.mean(angles_deg))
    return float(np.degrees(np.arctan2(s, c)))


def decode(out: np.ndarray, valid: np.ndarray, q: np.ndarray, chi: np.ndarray,
           thresholds: dict | None = None, *, nms_size: int = 3, ring_gap: float = 1.0,
           merge_rings: bool = False, min_half_bins: float = 0.5, low: dict | None = None,
           box_nms: bool = False) -> pd.DataFrame:
    """Features from the network's outputs for one polar image.

    Parameters
    ----------
    out : (7, h, w) ndarray
        :meth:`GixdDetector.raw` for one image (heat maps after the sigmoid).
    valid : (n_chi, n_q) ndarray of bool
        Finite bins of the polar image.
    q, chi : ndarray
        Bin centres of the polar image (1/Å, deg; evenly spaced).
    thresholds : dict, optional
        Smallest score per class; default 0.3 each.
    nms_size : int
        Side of the square (output pixels, odd) in which an arc or spot must be
        the heat map's maximum (non-maximum suppression).
    ring_gap : float
        Smallest distance in q between two rings, output pixels: of two ring
        maxima closer than this the weaker is dropped (1: every maximum of the
        chi-averaged profile is a ring).
    merge_rings : bool
        Merge ring segments into their ring: an arc whose q centre lies in a
        ring's q box is dropped (one feature per ring).
    min_half_bins : float
        Smallest half-size of a box, input bins (in q and in chi).
    low : dict, optional
        Hysteresis for arcs and spots (``arc``, ``spot``: a score below the
        class's threshold): each 8-connected region of the class's heat map at
        or above it that holds no maximum above the threshold gives one more
        feature, at its maximum (weak features, one detection each).
    box_nms : bool
        Box suppression for arcs and spots: taken by decreasing score, a feature
        whose centre lies in the box of a stronger one of its kind is dropped
        (several maxima along one arc give one feature).

    Returns
    -------
    features : pandas.DataFrame
        ``kind``, ``score`` (0-1), ``q``, ``chi`` (centre; 1/Å, deg), ``q_lo``,
        ``q_hi``, ``chi_lo``, ``chi_hi`` (box), sorted by decreasing score.  A
        ring's chi range is the range of valid bins in its column, its ``chi``
        the circular mean of those bins (a point of the ring the detector sees,
        also when the seen arc crosses +-180 deg).
    """
    from skimage.measure import block_reduce

    thresholds = {**{c: 0.3 for c in CLASSES}, **(thresholds or {})}
    valid_out = block_reduce(valid, (STRIDE, STRIDE), np.mean) > 0.25
    cands = _drop_close_rings(_ring_candidates(out, valid_out, thresholds["ring"]), ring_gap)
    for c in (1, 2):
        cands += _peak_candidates(out, c, thresholds[CLASSES[c]], nms_size=nms_size,
                                  low=(low or {}).get(CLASSES[c]))
    dq, dchi = q[1] - q[0], chi[1] - chi[0]
    rows = []
    for c in cands:
        xq = _to_input(c["x"])
        qc = q[0] + xq * dq
        hw = max(c["hw"], min_half_bins) * dq
        if c["kind"] == "ring":
            seen = np.flatnonzero(valid[:, min(valid.shape[1] - 1, max(0, int(round(xq))))])
            lo, hi = (chi[seen[0]] - dchi / 2, chi[seen[-1]] + dchi / 2) if len(seen) else (chi[0], chi[-1])
            cc = _circular_mean(chi[seen]) if len(seen) else 0.5 * (lo + hi)
        else:
            cc = chi[0] + _to_input(c["y"]) * dchi
            hh = max(c["hh"], min_half_bins) * dchi
            lo, hi = max(cc - hh, -180.0), min(cc + hh, 180.0)
            cc = 0.5 * (lo + hi)
        rows.append(dict(kind=c["kind"], score=c["score"], q=qc, chi=cc, q_lo=qc - hw, q_hi=qc + hw,
                         chi_lo=lo, chi_hi=hi))
    cols = ["kind", "score", "q", "chi", "q_lo", "q_hi", "chi_lo", "chi_hi"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "kind" else float) for c in cols})
    table = pd.DataFrame(rows, columns=cols).sort_values("score", ascending=False)
    if merge_rings:
        table = _merge_ring_segments(table)
    if box_nms:
        table = _suppress_inside_boxes(table)
    return table.reset_index(drop=True)


def _suppress_inside_boxes(table: pd.DataFrame) -> pd.DataFrame:
    """Arcs and spots (sorted by decreasing score) without those whose centre lies in a stronger one's box."""
    keep = np.ones(len(table), dtype=bool)
    kind = table["kind"].to_numpy()
    q, chi = table["q"].to_numpy(), table["chi"].to_numpy()
    q_lo, q_hi = table["q_lo"].to_numpy(), table["q_hi"].to_numpy()
    c_lo, c_hi = table["chi_lo"].to_numpy(), table["chi_hi"].to_numpy()
    for k in ("arc", "spot"):
        kept: list[int] = []
        for i in np.flatnonzero(kind == k):
            j = np.asarray(kept, dtype=int)
            if len(j) and np.any((q[i] >= q_lo[j]) & (q[i] <= q_hi[j]) & (chi[i] >= c_lo[j]) & (chi[i] <= c_hi[j])):
                keep[i] = False
            else:
                kept.append(i)
    return table[keep]


def _drop_close_rings(rings: list[dict], gap: float) -> list[dict]:
    """Ring candidates with the weaker of any two closer than ``gap`` output pixels in q dropped (strongest first)."""
    if gap <= 1 or len(rings) < 2:
        return rings
    kept: list[dict] = []
    for r in sorted(rings, key=lambda r: -r["score"]):
        if all(abs(r["x"] - k["x"]) >= gap for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r["x"])


def _merge_ring_segments(table: pd.DataFrame) -> pd.DataFrame:
    """The features without the arcs whose q centre lies in a ring's q box (segments of that ring)."""
    ring = table["kind"].to_numpy() == "ring"
    arc = table["kind"].to_numpy() == "arc"
    if not ring.any() or not arc.any():
        return table
    q = table["q"].to_numpy()
    lo, hi = table.loc[ring, "q_lo"].to_numpy(), table.loc[ring, "q_hi"].to_numpy()
    on_ring = ((q[:, None] >= lo[None]) & (q[:, None] <= hi[None])).any(1)
    return table[~(arc & on_ring)]


def refine_q(features: pd.DataFrame, image: np.ndarray, q: np.ndarray, chi: np.ndarray) -> pd.DataFrame:
    """Refine each feature's q and radial width on the polar image; add ``q_err``, ``q_width``, ``chi_width``,
    ``intensity``.

    For each box, the image is averaged over the box's chi rows (finite bins
    only) in a window of three box half-widths either side in q; a straight line
    through the window's outer quarters is the background.  On that net profile:

    - the q centre is the vertex of the parabola through the highest net bin
      and its neighbours (kept only when it lies within one bin of that bin and
      inside the box);
    - the radial width is that of a Gaussian fitted to the net profile's top:
      a weighted least-squares parabola through the logarithm of the net bins
      above 30 % of the maximum around it (at most three bins either side,
      weights the squared net values; Caruana's algorithm), its variance less
      the bin's own ``dq^2 / 12``.  The box becomes ``q +- 2 sigma`` (at least
      half a bin either side), as the simulator's truth boxes are; the network's
      box is kept when the fit fails (fewer than three bins, or no maximum).

    Parameters
    ----------
    features : pandas.DataFrame
        From :func:`decode`.
    image : (n_chi, n_q) ndarray
        The polar image (NaN where not seen).
    q, chi : ndarray
        Its bin centres.

    Returns
    -------
    features : pandas.DataFrame
        With ``q``, ``q_lo``, ``q_hi`` refined and ``q_err`` (half a bin when
        refined, else a bin; 1/Å), ``q_width``, ``chi_width`` (full box extents;
        1/Å, deg; a Gaussian's FWHM is ``q_width / 1.699`` when the width was
        fitted) and ``intensity`` (net mean counts per bin in the network's box
        times its number of chi bins; the image's units).
    """
    out = features.copy()
    dq = q[1] - q[0]
    n = len(out)
    q_new, q_err, inten = np.array(out["q"], dtype=np.float64), np.full(n, dq), np.full(n, np.nan)
    q_lo, q_hi = np.array(out["q_lo"], dtype=np.float64), np.array(out["q_hi"], dtype=np.float64)
    if n:
        finite = np.isfinite(image)
        filled = np.where(finite, image, 0.0)
        cum = np.vstack([np.zeros((1, image.shape[1])), np.cumsum(filled, 0)])  # row sums of any chi range
        cum_n = np.vstack([np.zeros((1, image.shape[1]), dtype=np.int64), np.cumsum(finite, 0)])
        r0s = np.searchsorted(chi, out["chi_lo"].to_numpy(dtype=np.float64), side="left")
        r1s = np.searchsorted(chi, out["chi_hi"].to_numpy(dtype=np.float64), side="right")
        for k in range(n):
            r0, r1, qc = int(r0s[k]), int(r1s[k]), float(q_new[k])
            half = max(q_hi[k] - qc, dq)
            c0 = int(np.searchsorted(q, qc - 3 * half - dq, side="left"))
            c1 = int(np.searchsorted(q, qc + 3 * half + dq, side="right"))
            if r1 <= r0 or c1 - c0 < 5:
                continue
            n_fin = cum_n[r1, c0:c1] - cum_n[r0, c0:c1]
            if not n_fin.all():
                continue
            prof = (cum[r1, c0:c1] - cum[r0, c0:c1]) / n_fin
            res = _vertex(prof, q[c0:c1], qc, q_lo[k], q_hi[k], dq, r1 - r0)
            q_new[k], q_err[k], inten[k] = res[0], res[1], res[2]
            if np.isfinite(res[3]):
                h = max(2.0 * res[3], 0.5 * dq)
                q_lo[k], q_hi[k] = q_new[k] - h, q_new[k] + h
    out["q"] = q_new
    out["q_lo"], out["q_hi"] = q_lo, q_hi
    out["q_err"] = q_err
    out["q_width"] = out["q_hi"] - out["q_lo"]
    out["chi_width"] = out["chi_hi"] - out["chi_lo"]
    out["intensity"] = inten
    return out


def _gauss_sigma(net: np.ndarray, i: int, dq: float) -> float:
    """Gaussian sigma of the net profile's maximum at bin ``i`` (log-parabola, weighted); NaN when it fails."""
    top = net[i]
    if not top > 0:
        return float("nan")
    lo = i
    while lo > 0 and i - lo < 3 and net[lo - 1] > 0.3 * top:
        lo -= 1
    hi = i
    while hi < len(net) - 1 and hi - i < 3 and net[hi + 1] > 0.3 * top:
        hi += 1
    if hi - lo < 2:
        if lo == hi or not (0 < i < len(net) - 1) or net[i - 1] <= 0 or net[i + 1] <= 0:
            return float("nan")
        lo, hi = i - 1, i + 1  # three bins, the outer ones below 30 % of the top
    x = np.arange(lo, hi + 1) - i
    y = net[lo:hi + 1]
    w = y * y
    a = np.vstack([np.ones_like(x), x, x * x]).T.astype(np.float64)
    coef = np.linalg.lstsq(a * w[:, None] ** 0.5, np.log(y) * w ** 0.5, rcond=None)[0]
    if not coef[2] < 0:
        return float("nan")
    var = -0.5 / coef[2] * dq * dq - dq * dq / 12.0
    return float(np.sqrt(max(var, (0.25 * dq) ** 2)))


def _vertex(prof: np.ndarray, qs: np.ndarray, qc: float, q_lo: float, q_hi: float, dq: float,
            n_rows: int) -> tuple[float, float, float, float]:
    """Refined q, its error, the net area and the Gaussian sigma (NaN when not fitted) of a profile's maximum."""
    n = len(prof)
    edge = max(1, n // 4)
    xs = np.r_[qs[:edge], qs[-edge:]]
    ys = np.r_[prof[:edge], prof[-edge:]]
    xm, ym = xs.mean(), ys.mean()
    slope = np.dot(xs - xm, ys - ym) / np.dot(xs - xm, xs - xm)  # least-squares straight line
    net = prof - (slope * (qs - xm) + ym)
    inner = (qs >= q_lo - dq) & (qs <= q_hi + dq)
    if not inner.any():
        return qc, dq, np.nan, np.nan
    area = float(np.sum(net[inner]) * n_rows)
    # the maximum is looked for near the network's centre (half the box, at least 1.5 bins): a wide box can
    # reach a stronger feature beside it
    near = np.abs(qs - qc) <= max(0.25 * (q_hi - q_lo), 1.5 * dq)
    if not near.any():
        return qc, dq, area, np.nan
    i = int(np.flatnonzero(near)[np.argmax(net[near])])
    sigma = _gauss_sigma(net, i, dq)
    if 0 < i < n - 1:
        a, b, c = net[i - 1], net[i], net[i + 1]
        den = a - 2 * b + c
        if den < 0:
            shift = 0.5 * (a - c) / den
            if abs(shift) <= 1.0:
                qv = qs[i] + shift * dq
                if q_lo - dq <= qv <= q_hi + dq:
                    return float(qv), 0.5 * dq, area, sigma
    return qc, dq, area, np.nan


def detect_polar(image: np.ndarray, q: np.ndarray, chi: np.ndarray, detector: GixdDetector | None = None, *,
                 thresholds: dict | None = None) -> pd.DataFrame:
    """Detect features in one polar image of :data:`INPUT_SHAPE`.

    Parameters
    ----------
    image : (256, 256) ndarray
        Polar image, rows chi and columns q; NaN where not seen.
    q, chi : ndarray
        Bin centres (1/Å, deg).
    detector : GixdDetector, optional
        Default: the shipped model.
    thresholds : dict, optional
        Smallest score per class (default: the model's).

    Returns
    -------
    features : pandas.DataFrame
        Columns :data:`FEATURE_COLUMNS`; ``features.attrs`` holds the frame's
        class (``frame_class``, see :func:`frame_class`) and ``p_empty``,
        ``p_spots``, ``p_arcs``, ``p_rings`` (:func:`frame_probabilities`).

    Raises
    ------
    ConfigError
        If the image does not have the network's shape or the axes do not match it.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != INPUT_SHAPE:
        raise ConfigError(f"polar image must have shape {INPUT_SHAPE} (chi, q) bins, got {image.shape}")
    if len(q) != image.shape[1] or len(chi) != image.shape[0]:
        raise ConfigError(f"axes of {len(chi)} chi and {len(q)} q bins do not match the image {image.shape}")
    detector = detector or load_detector()
    planes = contrast_image(image)
    out = detector.raw(planes[None])[0]
    feats = decode(out, np.isfinite(image), np.asarray(q), np.asarray(chi),
                   thresholds=thresholds or detector.thresholds, **detector.decoding)
    feats = refine_q(feats, image, np.asarray(q), np.asarray(chi))[list(FEATURE_COLUMNS)]
    label, values = frame_class(frame_probabilities(out, np.isfinite(image),
                                                    detector.frame_thresholds or detector.thresholds))
    feats.attrs["frame_class"] = label
    feats.attrs.update(values)
    return feats


def polar_image(frame: np.ndarray, geometry, *, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A detector frame as the detector's polar image (:func:`braggflow.geometry.remap.remap`, 256 x 256 bins).

    Parameters
    ----------
    frame : (H, W) ndarray
    geometry : Geometry
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.

    Returns
    -------
    image : (256, 256) ndarray
        Rows chi over (-180, 180) deg, columns q; NaN where no pixel falls.
    q, chi : ndarray
        Bin centres, 1/Å and deg.
    """
    from braggflow.geometry.remap import remap

    image, chi, q = remap(frame, geometry, to="q", mask=mask, npt=(INPUT_SHAPE[1], INPUT_SHAPE[0]))
    return image, q, chi


def _add_frame_columns(features: pd.DataFrame, geometry) -> pd.DataFrame:
    """Detector row/col of each feature's centre, and two_theta, eta, q_xy, q_z."""
    out = features.copy()
    tth = geometry.q_to_two_theta(out["q"].to_numpy())
    row, col = geometry.angles_to_pixel(tth, out["chi"].to_numpy())
    out["row"], out["col"] = row, col
    out["two_theta"], out["eta"] = tth, out["chi"].to_numpy()
    if geometry.has_incidence and len(out):
        qxy, qz = geometry.pixel_to_qxy_qz(np.nan_to_num(row), np.nan_to_num(col))
        out["q_xy"], out["q_z"] = np.where(np.isfinite(row), qxy, np.nan), np.where(np.isfinite(row), qz, np.nan)
    else:
        out["q_xy"], out["q_z"] = np.nan, np.nan
    return out


def detect_frame(frame: np.ndarray, geometry, detector: GixdDetector | None = None, *,
                 mask: np.ndarray | None = None, thresholds: dict | None = None) -> pd.DataFrame:
    """Detect rings, arcs and spots in a grazing-incidence detector frame.

    Parameters
    ----------
    frame : (H, W) ndarray
        Detector frame (counts; dark-subtracted values may be negative).
    geometry : braggflow.geometry.Geometry
        Detector geometry; q_xy and q_z need an incidence angle.
    detector : GixdDetector, optional
        Default: the shipped model.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    thresholds : dict, optional
        Smallest score per class.

    Returns
    -------
    features : pandas.DataFrame
        One row per feature: :data:`FEATURE_COLUMNS` (``kind``: ring, arc or
        spot; ``score`` 0-1; ``q``, ``q_err``, box ``q_lo..q_hi`` in 1/Å; ``chi``
        and box ``chi_lo..chi_hi`` in deg, pyFAI's azimuth), plus ``row``,
        ``col`` (the centre on the detector, px; NaN when off it), ``two_theta``,
        ``eta`` (deg), ``q_xy``, ``q_z`` (1/Å).  ``features.attrs``: the frame's
        class and its probabilities (:func:`detect_polar`).  The table goes to
        :func:`braggflow.phases.workflow.identify_table` as it is.

    Raises
    ------
    ConfigError
        If the frame is not 2-D, or no geometry is given.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ConfigError(f"frame must be a 2-D detector image, got shape {frame.shape}")
    if geometry is None:
        raise ConfigError("detection needs the detector geometry: give --poni FILE or --distance, --beam-row, "
                          "--beam-col, --pixel-size and --wavelength (or --energy)")
    image, q, chi = polar_image(frame, geometry, mask=mask)
    feats = detect_polar(image, q, chi, detector, thresholds=thresholds)
    attrs = dict(feats.attrs)
    feats = _add_frame_columns(feats, geometry)
    feats.attrs.update(attrs)
    return feats


# ---------------------------------------------------------------- evaluation
def _iou(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """IoU of boxes (q_lo, q_hi, chi_lo, chi_hi), all pairs (len(a), len(b))."""
    def arr(t, c):
        return t[c].to_numpy(dtype=np.float64)

    iq = np.clip(np.minimum(arr(a, "q_hi")[:, None], arr(b, "q_hi")[None]) -
                 np.maximum(arr(a, "q_lo")[:, None], arr(b, "q_lo")[None]), 0, None)
    ic = np.clip(np.minimum(arr(a, "chi_hi")[:, None], arr(b, "chi_hi")[None]) -
                 np.maximum(arr(a, "chi_lo")[:, None], arr(b, "chi_lo")[None]), 0, None)
    inter = iq * ic
    area_a = (arr(a, "q_hi") - arr(a, "q_lo")) * (arr(a, "chi_hi") - arr(a, "chi_lo"))
    area_b = (arr(b, "q_hi") - arr(b, "q_lo")) * (arr(b, "chi_hi") - arr(b, "chi_lo"))
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def _centre_in(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Whether the centre of each box of ``a`` lies in each box of ``b`` (len(a), len(b))."""
    qa, ca = a["q"].to_numpy()[:, None], a["chi"].to_numpy()[:, None]
    return ((qa >= b["q_lo"].to_numpy()[None]) & (qa <= b["q_hi"].to_numpy()[None]) &
            (ca >= b["chi_lo"].to_numpy()[None]) & (ca <= b["chi_hi"].to_numpy()[None]))


def match_detections(pred: pd.DataFrame, truth: pd.DataFrame, *, iou: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of detections to true features of the same class.

    A detection and a true box match when their IoU reaches ``iou`` or the
    detection's centre lies inside the true box; detections are taken by
    decreasing score, each true feature at most once.  Detections that match no
    visible feature but one labelled invisible (``visible`` False, too weak to
    count) are neither true nor false positives; a second detection of a
    feature already matched is a false positive.

    Parameters
    ----------
    pred : pandas.DataFrame
        ``kind``, ``score``, ``q``, ``chi``, ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``.
    truth : pandas.DataFrame
        The same box columns, ``kind`` and ``visible``.
    iou : float

    Returns
    -------
    pred_status : (len(pred),) ndarray of int
        1 true positive, 0 false positive, -1 ignored (on an invisible feature).
    truth_found : (len(truth),) ndarray of bool
    """
    status = np.zeros(len(pred), dtype=int)
    found = np.zeros(len(truth), dtype=bool)
    if not len(pred) or not len(truth):
        return status, found
    ok = (_iou(pred, truth) >= iou) | _centre_in(pred, truth)
    ok &= pred["kind"].to_numpy()[:, None] == truth["kind"].to_numpy()[None]
    visible = truth["visible"].to_numpy(dtype=bool)
    for i in np.argsort(-pred["score"].to_numpy(), kind="stable"):
        cand = np.flatnonzero(ok[i] & visible & ~found)
        if len(cand):
            found[cand[0]] = True
            status[i] = 1
        elif np.any(ok[i] & ~visible):
            status[i] = -1  # on a feature too weak to count
    return status, found


def detection_scores(pairs) -> pd.DataFrame:
    """Precision and recall per class over frames.

    Parameters
    ----------
    pairs : iterable of (pred, truth)
        DataFrames as :func:`match_detections` takes them.

    Returns
    -------
    scores : pandas.DataFrame
        Index: ``ring``, ``arc``, ``spot``, ``all``; columns ``tp``, ``fp``, ``fn``,
        ``precision``, ``recall``, ``f1``.
    """
    counts = {c: [0, 0, 0] for c in (*CLASSES, "all")}
    for pred, truth in pairs:
        status, found = match_detections(pred, truth)
        vis = truth["visible"].to_numpy(dtype=bool) if len(truth) else np.zeros(0, bool)
        for c in CLASSES:
            pk = pred["kind"].to_numpy() == c if len(pred) else np.zeros(0, bool)
            tk = truth["kind"].to_numpy() == c if len(truth) else np.zeros(0, bool)
            counts[c][0] += int(np.sum(status[pk] == 1))
            counts[c][1] += int(np.sum(status[pk] == 0))
            counts[c][2] += int(np.sum(tk & vis & ~found))
    counts["all"] = [sum(counts[c][k] for c in CLASSES) for k in range(3)]
    rows = {}
    for c, (tp, fp, fn) in counts.items():
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        rows[c] = dict(tp=tp, fp=fp, fn=fn, precision=p, recall=r,
                       f1=2 * p * r / (p + r) if p + r > 0 else float("nan"))
    return pd.DataFrame.from_dict(rows, orient="index")


def manifest_entry(name: str) -> dict:
    """The MANIFEST entry of a shipped detector.

    Raises
    ------
    InputFileError
        If no detector of that name is shipped.
    """
    for e in list_detectors():
        if e["name"] == name:
            return json.loads(json.dumps(e))
    raise InputFileError(f"{name}: no shipped detector of that name in {MANIFEST_PATH}")
