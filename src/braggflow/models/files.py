"""braggflow model files: format, checksums, the shipped-model manifest.

A braggflow model file is a ``torch.save`` of a plain dict (loaded with
``weights_only=True``, so it cannot run code)::

    {"format": "braggflow-model", "version": 1,
     "arch": "braggnn" | "locnet", "arch_kwargs": {...},
     "state_dict": {...}, "train_config": {...}, "metrics": {...},
     "calibration": {...} | None, "payload_sha256": "..."}

``payload_sha256`` is a SHA-256 over the tensors and metadata, checked on
every load, so a damaged file is caught even when it still unpickles.
Shipped models live in ``braggflow/models/weights/`` and are listed in its
``MANIFEST`` (JSON) with the SHA-256 of the whole file, checked too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braggflow.errors import BraggflowError, InputFileError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_DIR",
    "Localizer",
    "file_sha256",
    "read_manifest",
    "list_models",
    "default_model_name",
    "save_model",
    "load_model",
    "convert_weights",
    "ship_model",
]

FORMAT = "braggflow-model"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_PATH = WEIGHTS_DIR / "MANIFEST"


@dataclass
class Localizer:
    """A loaded localizer network with everything needed to use it.

    Attributes
    ----------
    name : str
        Shipped name, or the file stem.
    arch : str
        ``"braggnn"`` or ``"locnet"``.
    arch_kwargs : dict
        Constructor arguments of the architecture.
    network : torch.nn.Module
        In eval mode, on ``device``.
    size : int
        Patch side the network takes, px.
    train_config : dict
    metrics : dict
        Validation figures recorded at training time.
    calibration : dict or None
        Error calibration (see :mod:`braggflow.models.calibration`).
    path : Path or None
    sha256 : str or None
        SHA-256 of the file.
    device : str
    """

    name: str
    arch: str
    arch_kwargs: dict
    network: Any
    size: int
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    calibration: dict | None = None
    path: Path | None = None
    sha256: str | None = None
    device: str = "cpu"
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return int(sum(p.numel() for p in self.network.parameters()))

    @property
    def predicts_error(self) -> bool:
        """True when the network predicts its own uncertainty."""
        return bool(getattr(self.network, "predicts_error", False))


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes.

    Raises
    ------
    InputFileError
        If the file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    return h.hexdigest()


def _payload_sha256(payload: dict) -> str:
    """Checksum of a model dict's content (tensors in key order + JSON metadata)."""
    h = hashlib.sha256()
    meta = {k: payload.get(k) for k in ("format", "version", "arch", "arch_kwargs", "train_config", "metrics", "calibration")}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for key in sorted(payload["state_dict"]):
        t = payload["state_dict"][key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def read_manifest() -> dict:
    """The shipped-model manifest (``{"default": name, "models": {name: entry}}``).

    Returns an empty manifest when none has been written.

    Raises
    ------
    InputFileError
        If the MANIFEST exists but is not valid JSON.
    """
    if not MANIFEST_PATH.is_file():
        return {"default": None, "models": {}}
    try:
        return json.loads(MANIFEST_PATH.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{MANIFEST_PATH}: unreadable model manifest ({exc})") from None


def list_models() -> list[dict]:
    """The shipped models, from the manifest (no torch import).

    Returns
    -------
    models : list of dict
        One dict per model: ``name, arch, file, params, size_bytes, sha256,
        default`` and ``metrics`` (validation figures).
    """
    manifest = read_manifest()
    rows = []
    for name, entry in manifest.get("models", {}).items():
        rows.append({"name": name, **entry, "default": name == manifest.get("default")})
    return rows


def default_model_name() -> str:
    """Name of the default (best benchmarked) shipped model.

    Raises
    ------
    BraggflowError
        If no model is shipped.
    """
    manifest = read_manifest()
    name = manifest.get("default")
    if not name:
        raise BraggflowError(f"no shipped model: {MANIFEST_PATH} lists none; give a model file with --model FILE")
    return name


def save_model(
    path: str | Path,
    network,
    *,
    arch: str,
    arch_kwargs: dict,
    train_config: dict | None = None,
    metrics: dict | None = None,
    calibration: dict | None = None,
) -> str:
    """Write a braggflow model file.

    Parameters
    ----------
    path : str or Path
        Output file (conventionally ``.pt``).
    network : torch.nn.Module
    arch : str
        Architecture name (a key of :data:`braggflow.models.braggnn.ARCHITECTURES`).
    arch_kwargs : dict
        Constructor arguments (JSON-like values).
    train_config, metrics, calibration : dict, optional
        JSON-like metadata stored with the weights.

    Returns
    -------
    sha256 : str
        SHA-256 of the written file.
    """
    import torch

    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": _jsonable(arch_kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "train_config": _jsonable(train_config or {}),
        "metrics": _jsonable(metrics or {}),
        "calibration": _jsonable(calibration) if calibration is not None else None,
    }
    payload["payload_sha256"] = _payload_sha256(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return file_sha256(path)


def _jsonable(value):
    """Plain JSON-like copy (tuples -> lists, numpy scalars/arrays -> Python)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _resolve(name_or_path) -> tuple[Path, str, str | None]:
    """(path, name, expected sha256 or None) for a shipped name or a file path."""
    manifest = read_manifest()
    models = manifest.get("models", {})
    key = str(name_or_path)
    if key in models:
        entry = models[key]
        return WEIGHTS_DIR / entry["file"], key, entry.get("sha256")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(models) or "none shipped"
        raise InputFileError(f"{name_or_path}: no such model file or shipped model name (shipped: {known})")
    expected = None
    resolved = path.resolve()
    for mname, entry in models.items():  # a shipped file given by path is still checked
        if resolved == (WEIGHTS_DIR / entry["file"]).resolve():
            expected = entry.get("sha256")
            key = mname
            break
    else:
        key = path.stem
    return path, key, expected


def load_model(name_or_path=None, *, device: str = "cpu") -> Localizer:
    """Load a shipped model by name, or a braggflow model file by path.

    Loading is cached per (file, modification time, device).

    Parameters
    ----------
    name_or_path : str or Path or None
        A name from :func:`list_models`, or a model file; None: the default
        (best benchmarked) shipped model.
    device : str
        torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    model : Localizer

    Raises
    ------
    InputFileError
        If the file is missing, is not a braggflow model file (a published
        ``.pth`` state_dict must be converted first with
        ``braggflow convert-weights``), or its SHA-256 does not match the
        manifest or its own recorded checksum.
    """
    if name_or_path is None:
        name_or_path = default_model_name()
    path, name, expected = _resolve(name_or_path)
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, name, expected, str(device))


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, name: str, expected: str | None, device: str) -> Localizer:
    import torch

    from braggflow.models.braggnn import build_network

    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise InputFileError(
            f"{path}: model file is corrupt or modified: SHA-256 {digest[:16]}... does not match "
            f"the manifest's {expected[:16]}... (reinstall braggflow or retrain the model)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise InputFileError(f"{path}: not a readable braggflow model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and any(str(k).startswith("cnn_layers.") for k in payload):
            raise InputFileError(
                f"{path}: this is a bare BraggNN state_dict; convert it first with "
                f"'braggflow convert-weights {path} -o MODEL.pt'"
            )
        raise InputFileError(f"{path}: not a braggflow model file (no '{FORMAT}' format marker)")
    if payload.get("version") != FORMAT_VERSION:
        raise InputFileError(f"{path}: model file format version {payload.get('version')} is not supported (expected {FORMAT_VERSION})")
    try:
        recorded = payload["payload_sha256"]
        actual = _payload_sha256(payload)
    except (KeyError, AttributeError, TypeError) as exc:
        raise InputFileError(f"{path}: incomplete braggflow model file (missing {exc})") from None
    if recorded != actual:
        raise InputFileError(f"{path}: model file is corrupt: its content checksum does not match the one recorded in it")
    network = build_network(payload["arch"], **payload["arch_kwargs"])
    try:
        network.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise InputFileError(f"{path}: weights do not fit architecture {payload['arch']!r}: {exc}") from None
    network = network.to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    size = int(getattr(network, "imgsz", getattr(network, "size", 0)))
    return Localizer(
        name=name,
        arch=payload["arch"],
        arch_kwargs=dict(payload["arch_kwargs"]),
        network=network,
        size=size,
        train_config=payload.get("train_config") or {},
        metrics=payload.get("metrics") or {},
        calibration=payload.get("calibration"),
        path=Path(path),
        sha256=digest,
        device=device,
    )


def convert_weights(
    path: str | Path,
    out: str | Path | None = None,
    *,
    calibrate: bool = True,
    n_calibration: int = 20000,
    seed: int = 0,
) -> Path:
    """Turn a published BraggNN ``.pth`` state_dict into a braggflow model file.

    The patch size and dense-layer widths are read from the tensor shapes.
    With ``calibrate``, the network's position errors are measured on
    simulated patches as a function of SNR and width, and stored as its
    ``row_err``/``col_err`` calibration.

    Parameters
    ----------
    path : str or Path
        Published weights (``torch.save(model.state_dict())``), e.g.
        ``fc16_8_4_2-sz11.pth``.
    out : str or Path, optional
        Output model file; default ``path`` with suffix ``.pt``.
    calibrate : bool
        Measure and store the error calibration (needs the patch simulator).
    n_calibration : int
        Simulated patches used for the calibration.
    seed : int
        Seed of the simulation.

    Returns
    -------
    out : Path

    Raises
    ------
    InputFileError
        If the file is unreadable or its keys/shapes are not those of a
        published BraggNN.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022); github.com/lzhengchun/BraggNN.
    """
    import torch

    from braggflow.models.braggnn import BraggNN, published_shapes

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except Exception as exc:
        raise InputFileError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "cnn_layers.0.weight" not in state:
        raise InputFileError(f"{path}: not a BraggNN state_dict (no 'cnn_layers.0.weight' key)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix
    dense_w = sorted((int(k.split(".")[1]), v) for k, v in state.items() if k.startswith("dense_layers.") and k.endswith(".weight"))
    if len(dense_w) < 2:
        raise InputFileError(f"{path}: BraggNN state_dict has no dense layers")
    fcsz = tuple(int(v.shape[0]) for _, v in dense_w[:-1])
    flat = int(dense_w[0][1].shape[1])
    side = int(round((flat / 8) ** 0.5))
    imgsz = side + 6
    expected = published_shapes(imgsz, fcsz)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise InputFileError(
            f"{path}: keys/shapes differ from a published BraggNN(imgsz={imgsz}, fcsz={fcsz}): "
            f"missing {missing[:4]}, unexpected {extra[:4]}, wrong shape {wrong[:4]}"
        )
    network = BraggNN(imgsz, fcsz).eval()
    network.load_state_dict(state, strict=True)
    arch_kwargs = {"imgsz": imgsz, "fcsz": list(fcsz)}
    calibration = None
    metrics: dict = {}
    if calibrate:
        from braggflow.models.calibration import calibrate_localizer

        loc = Localizer(name=path.stem, arch="braggnn", arch_kwargs=arch_kwargs, network=network, size=imgsz)
        calibration, metrics = calibrate_localizer(loc, n=n_calibration, seed=seed)
    out = Path(out) if out is not None else path.with_suffix(".pt")
    save_model(
        out,
        network,
        arch="braggnn",
        arch_kwargs=arch_kwargs,
        train_config={"source": f"published weights {path.name}", "source_sha256": file_sha256(path)},
        metrics=metrics,
        calibration=calibration,
    )
    return out


def ship_model(path: str | Path, *, name: str, default: bool = False) -> dict:
    """Copy a model file into the package's weights folder and list it in the MANIFEST.

    Parameters
    ----------
    path : str or Path
        A braggflow model file (validated by loading it).
    name : str
        Shipped name (also the file stem in the weights folder).
    default : bool
        Make it the default model (``--method braggnn`` without ``--model``).

    Returns
    -------
    entry : dict
        The manifest entry written.
    """
    import shutil

    model = load_model(path)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    target = WEIGHTS_DIR / f"{name}.pt"
    if Path(path).resolve() != target.resolve():
        shutil.copyfile(path, target)
    entry = {
        "file": target.name,
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "params": model.n_params,
        "size_bytes": target.stat().st_size,
        "sha256": file_sha256(target),
        "metrics": model.metrics,
    }
    manifest = read_manifest()
    manifest.setdefault("models", {})[name] = entry
    if default or not manifest.get("default"):
        manifest["default"] = name
    MANIFEST_PATH.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return entry
