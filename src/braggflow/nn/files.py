"""braggflow model files: format, checksums, the shipped-model manifest.

A braggflow model file is a ``torch.save`` of a plain dict (loaded with
``weights_only=True``, so it cannot run code)::

    {"format": "braggflow-model", "version": 1,
     "arch": "braggnn" | "locnet", "arch_kwargs": {...},
     "state_dict": {...}, "train_config": {...}, "metrics": {...},
     "calibration": {...} | None, "payload_sha256": "..."}

``payload_sha256`` is a SHA-256 over the tensors and metadata, checked on
every load, so a damaged file is caught even when it still unpickles.
Shipped models live in ``braggflow/nn/weights/`` and are listed in its
``MANIFEST`` (JSON) with the SHA-256 of the whole file, checked too.
"""

from __future__ import annotations

import functools
import hashlib
import json
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
    "load_model",
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
        Error calibration (see :mod:`braggflow.training.calibration`).
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

    from braggflow.nn.architectures import build_network

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


