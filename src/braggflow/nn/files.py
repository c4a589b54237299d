"""braggflow model files: format, checksums, the shipped-model manifest, loading.

A model exists in two forms:

PyTorch model file (``.pt``)
    A ``torch.save`` of a plain dict (loaded with ``weights_only=True``, so it
    cannot run code)::

        {"format": "braggflow-model", "version": 1,
         "arch": "braggnn" | "locnet", "arch_kwargs": {...},
         "state_dict": {...}, "train_config": {...}, "metrics": {...},
         "calibration": {...} | None, "payload_sha256": "..."}

    ``payload_sha256`` is a SHA-256 over the tensors and metadata, checked on
    every load, so a damaged file is caught even when it still unpickles.
    Training, fine-tuning, GPUs and ``backend="torch"`` use it (torch needed:
    ``pip install -e ".[train]"``).
ONNX file (``.onnx``)
    The same network exported by ``tools/export_onnx.py`` (symmetry averaging
    included in the graph), run by ONNX Runtime on the CPU without torch.  Its
    model metadata (key ``"braggflow"``) holds, as JSON, what inference needs
    besides the graph: :func:`model_description`.

Shipped models live in ``braggflow/nn/weights/`` and are listed in its
``MANIFEST`` (JSON).  Each entry records the ``.pt`` file and its SHA-256,
the ``.onnx`` file and its SHA-256 (``"onnx"``), and the description of
the model (``arch``, ``arch_kwargs``, ``params``, ``inference``,
``calibration``, ``train_config``, ``metrics``), so that a shipped model
loads by name without torch.  Both checksums are checked on load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braggflow import checksum
from braggflow.errors import BraggflowError, InputFileError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ONNX_FORMAT",
    "ONNX_METADATA_KEY",
    "WEIGHTS_DIR",
    "BACKENDS",
    "ARCH_IO",
    "Localizer",
    "file_sha256",
    "read_manifest",
    "write_manifest",
    "list_models",
    "default_model_name",
    "model_description",
    "load_model",
    "torch_missing_message",
]

FORMAT = "braggflow-model"
FORMAT_VERSION = 1
ONNX_FORMAT = "braggflow-onnx"
ONNX_FORMAT_VERSION = 1
ONNX_METADATA_KEY = "braggflow"
ONNX_INPUT = "x"
ONNX_OUTPUT = "y"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_PATH = WEIGHTS_DIR / "MANIFEST"
BACKENDS = ("auto", "torch", "onnx")

# What inference needs to know of each architecture without building it:
# the constructor argument giving the patch side, the input features
# (braggflow.nn.preprocess), the meaning of the outputs, and whether the
# network predicts its own errors.
ARCH_IO: dict[str, dict] = {
    "braggnn": {"size_key": "imgsz", "input": "minmax", "output": "colrow-over-size", "predicts_error": False},
    "locnet": {"size_key": "size", "input": "robust", "output": "offset-logvar", "predicts_error": True},
}
_CALIBRATION_KINDS = ("table", "scale")


def torch_missing_message(what: str) -> str:
    """The error text for an operation that needs torch when it is not installed.

    Parameters
    ----------
    what : str
        What needs torch, e.g. ``"model.pt: loading a PyTorch model file"``.

    Returns
    -------
    message : str
    """
    return (f"{what} needs torch, which is not installed; install it with "
            f"'pip install torch==2.13.0 && pip install -e \".[train]\"' (or pip install 'braggflow[train]'). "
            f"Shipped models run without torch on the CPU (backend 'auto' or 'onnx')")


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
    network : torch.nn.Module or None
        In eval mode, on ``device``; None for a model loaded from its ONNX
        file only (run by ONNX Runtime).
    size : int
        Patch side the network takes, px.
    train_config : dict
    metrics : dict
        Validation figures recorded at training time.
    calibration : dict or None
        Error calibration (see :mod:`braggflow.nn.calibration`).
    path : Path or None
        The PyTorch model file (for a user's ``.onnx`` file: that file).
    sha256 : str or None
        SHA-256 of ``path``.
    device : str
    onnx_path : Path or None
        The ONNX file of the network, when there is one.
    onnx_sha256 : str or None
        Its expected SHA-256 (None: not checked).
    params : int or None
        Number of parameters when ``network`` is None.
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
    onnx_path: Path | None = None
    onnx_sha256: str | None = None
    params: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        if self.network is not None:
            return int(sum(p.numel() for p in self.network.parameters()))
        return int(self.params or 0)

    @property
    def predicts_error(self) -> bool:
        """True when the network predicts its own uncertainty."""
        if self.network is not None:
            return bool(getattr(self.network, "predicts_error", False))
        return bool(ARCH_IO[self.arch]["predicts_error"])

    @property
    def input_kind(self) -> str:
        """``"minmax"`` or ``"robust"``: the input features (:mod:`braggflow.nn.preprocess`)."""
        return ARCH_IO[self.arch]["input"]

    @property
    def output_kind(self) -> str:
        """``"colrow-over-size"`` (BraggNN) or ``"offset-logvar"`` (locnet): the meaning of the outputs."""
        return ARCH_IO[self.arch]["output"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes.

    Raises
    ------
    InputFileError
        If the file cannot be read.
    """
    try:
        return checksum.file_sha256(path)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read model file ({exc.strerror or exc})") from None


def _payload_sha256(payload: dict) -> str:
    """Checksum of a model dict's content (tensors in key order + JSON metadata)."""
    h = hashlib.sha256()
    keys = ("format", "version", "arch", "arch_kwargs", "train_config", "metrics", "calibration")
    meta = {k: payload.get(k) for k in keys}
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


def write_manifest(manifest: dict) -> None:
    """Write the shipped-model manifest (JSON, indented; replaced atomically).

    Parameters
    ----------
    manifest : dict
        ``{"default": name, "models": {name: entry}}``.
    """
    tmp = MANIFEST_PATH.with_name(MANIFEST_PATH.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, MANIFEST_PATH)


def list_models() -> list[dict]:
    """The shipped models, from the manifest (no torch import).

    Returns
    -------
    models : list of dict
        One dict per model, the manifest entry plus ``name`` and ``default``:
        ``file, arch, arch_kwargs, params, size_bytes, sha256`` (the PyTorch
        file), ``onnx`` (``{"file", "sha256", "size_bytes", "opset", ...}``),
        ``inference``, ``calibration``, ``train_config`` and ``metrics``
        (validation figures).
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


def _arch_size(arch: str, arch_kwargs: dict) -> int:
    return int(arch_kwargs.get(ARCH_IO[arch]["size_key"], 11))


def _n_outputs(arch: str, arch_kwargs: dict) -> int:
    if arch == "braggnn":
        return 2
    return 6 if arch_kwargs.get("width_outputs", True) else 4


def model_description(localizer: Localizer) -> dict:
    """Everything inference needs besides the network itself, as JSON-like values.

    Written into the ``MANIFEST`` entry of a shipped model and into the
    metadata of an exported ``.onnx`` file.

    Parameters
    ----------
    localizer : Localizer

    Returns
    -------
    description : dict
        ``arch, arch_kwargs, params``; ``inference``: ``size`` (patch side,
        px), ``input`` (features: ``"minmax"`` or ``"robust"``, see
        :mod:`braggflow.nn.preprocess`), ``n_scalars``, ``output`` (meaning
        of the outputs), ``n_outputs``, ``predicts_error``, ``symmetries``
        (views averaged inside the network); ``calibration``,
        ``train_config``, ``metrics``.
    """
    arch, kwargs = localizer.arch, dict(localizer.arch_kwargs)
    io = ARCH_IO[arch]
    inference = {
        "size": int(localizer.size),
        "input": io["input"],
        "output": io["output"],
        "n_outputs": _n_outputs(arch, kwargs),
        "predicts_error": bool(io["predicts_error"]),
        "symmetries": int(kwargs.get("symmetries", 1)) if arch == "locnet" else 1,
    }
    if arch == "locnet":
        inference["n_scalars"] = int(kwargs.get("n_scalars", 2))
    return json.loads(json.dumps({
        "arch": arch,
        "arch_kwargs": kwargs,
        "params": localizer.n_params,
        "inference": inference,
        "calibration": localizer.calibration,
        "train_config": localizer.train_config or {},
        "metrics": localizer.metrics or {},
    }))


def _check_description(desc, where: str) -> dict:
    """Validate a model description (:func:`model_description`); ``where`` names its source in errors."""
    from braggflow.nn.preprocess import N_SCALARS

    if not isinstance(desc, dict):
        raise InputFileError(f"{where}: model description is not a JSON object")
    missing = [k for k in ("arch", "arch_kwargs", "inference") if k not in desc]
    if missing:
        raise InputFileError(f"{where}: model description lacks {', '.join(missing)}")
    arch, kwargs, inf = desc["arch"], desc["arch_kwargs"], desc["inference"]
    if arch not in ARCH_IO:
        raise InputFileError(f"{where}: unknown model architecture {arch!r}; expected one of {', '.join(ARCH_IO)}")
    if not isinstance(kwargs, dict) or not isinstance(inf, dict):
        raise InputFileError(f"{where}: arch_kwargs and inference must be JSON objects")
    io = ARCH_IO[arch]
    expected = {"size": _arch_size(arch, kwargs), "input": io["input"], "output": io["output"],
                "n_outputs": _n_outputs(arch, kwargs), "predicts_error": io["predicts_error"]}
    if arch == "locnet":
        expected["n_scalars"] = N_SCALARS
    for key, value in expected.items():
        if inf.get(key) != value:
            raise InputFileError(f"{where}: inference.{key} is {inf.get(key)!r} but a {arch} model with these "
                                 f"arch_kwargs needs {value!r} in this version of braggflow")
    size = expected["size"]
    if size < 3 or size % 2 == 0:
        raise InputFileError(f"{where}: patch size must be odd and >= 3, got {size}")
    calibration = desc.get("calibration")
    if calibration is not None and (not isinstance(calibration, dict)
                                    or calibration.get("kind") not in _CALIBRATION_KINDS):
        raise InputFileError(f"{where}: calibration must be null or an object with kind in {_CALIBRATION_KINDS}")
    return desc


@dataclass
class _Source:
    """Where a model comes from: files, expected checksums, and the description of a shipped or ONNX model."""

    name: str
    path: Path  # the file named (or the shipped .pt)
    sha256: str | None  # expected SHA-256 of path (shipped models)
    onnx_path: Path | None = None
    onnx_sha256: str | None = None
    description: dict | None = None  # from the MANIFEST (shipped models)
    shipped: bool = False


def _resolve(name_or_path) -> _Source:
    """The files of a shipped name or a file path (a shipped file given by its path is still checked)."""
    manifest = read_manifest()
    models = manifest.get("models", {})
    key = str(name_or_path)
    if key not in models:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            known = ", ".join(models) or "none shipped"
            raise InputFileError(f"{name_or_path}: no such model file or shipped model name (shipped: {known})")
        resolved = path.resolve()
        for mname, entry in models.items():
            files = [entry.get("file"), (entry.get("onnx") or {}).get("file")]
            if any(f and resolved == (WEIGHTS_DIR / f).resolve() for f in files):
                key = mname
                break
        else:
            if path.suffix.lower() == ".onnx":
                return _Source(name=path.stem, path=path, sha256=None, onnx_path=path)
            return _Source(name=path.stem, path=path, sha256=None)
    entry = models[key]
    where = f"{MANIFEST_PATH} (model {key!r})"
    if not isinstance(entry, dict) or "file" not in entry:
        raise InputFileError(f"{where}: entry has no 'file'")
    source = _Source(name=key, path=WEIGHTS_DIR / entry["file"], sha256=entry.get("sha256"), shipped=True)
    onnx = entry.get("onnx")
    if onnx:
        if not isinstance(onnx, dict) or "file" not in onnx or "sha256" not in onnx:
            raise InputFileError(f"{where}: 'onnx' must give the file and its sha256")
        source.onnx_path = WEIGHTS_DIR / onnx["file"]
        source.onnx_sha256 = onnx["sha256"]
        source.description = _check_description(entry, where)
    return source


def load_model(name_or_path=None, *, device: str = "cpu", backend: str = "auto") -> Localizer:
    """Load a shipped model by name, or a model file by path.

    A shipped model on the CPU (``backend`` "auto" or "onnx") is loaded from
    its ``.onnx`` file and the MANIFEST, without torch; ``backend="torch"``,
    a GPU ``device`` or a user's ``.pt`` file load the PyTorch file (torch
    needed).  A ``.onnx`` file written by ``tools/export_onnx.py`` loads
    without torch (CPU only).  Loading is cached per (file, modification
    time, device).

    Parameters
    ----------
    name_or_path : str or Path or None
        A name from :func:`list_models`, or a model file (``.pt`` or
        ``.onnx``); None: the default (best benchmarked) shipped model.
    device : str
        ``"cpu"``, or a torch device such as ``"cuda"`` (torch backend).
    backend : {"auto", "torch", "onnx"}
        The engine the model will run on (see
        :func:`braggflow.nn.inference.predict_patches`).

    Returns
    -------
    model : Localizer
        ``network`` is None for a model loaded from its ONNX file.

    Raises
    ------
    InputFileError
        If the file is missing, is not a braggflow model file (a published
        ``.pth`` state_dict must be converted first with
        ``braggflow convert-weights``), or its SHA-256 does not match the
        manifest or its own recorded checksum.
    BraggflowError
        For an unknown ``backend``, ``backend="onnx"`` on a GPU device, an
        ONNX file asked to run with torch or on a GPU, or a PyTorch file when
        torch is not installed.
    """
    if backend not in BACKENDS:
        raise BraggflowError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = str(device)
    if backend == "onnx" and device != "cpu":
        raise BraggflowError(f"backend 'onnx' runs on the CPU only, not on device {device!r}")
    if name_or_path is None:
        name_or_path = default_model_name()
    source = _resolve(name_or_path)
    onnx_wanted = device == "cpu" and backend != "torch"
    if source.onnx_path is not None and not source.shipped and not onnx_wanted:
        raise BraggflowError(f"{source.path}: an ONNX model runs with ONNX Runtime on the CPU only (backend 'auto' "
                             f"or 'onnx', device 'cpu'), not with backend {backend!r} on device {device!r}; "
                             f"give the PyTorch model file for that")
    if source.onnx_path is not None and onnx_wanted:
        path = source.onnx_path
        if not path.is_file():
            raise InputFileError(f"{path}: shipped ONNX file is missing (reinstall braggflow)")
        stat = path.stat()
        desc = json.dumps(source.description) if source.description is not None else None
        pt = (str(source.path), source.sha256) if source.shipped else (None, None)  # for backend="torch" later
        return _load_onnx_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, source.name,
                                 source.onnx_sha256, desc, *pt)
    path = source.path
    if not path.is_file():
        raise InputFileError(f"{path}: model file is missing (reinstall braggflow or retrain the model)")
    if source.shipped and source.onnx_path is None and not _torch_installed():
        raise BraggflowError(torch_missing_message(
            f"shipped model {source.name!r} has no ONNX file in {MANIFEST_PATH} (export it with "
            f"tools/export_onnx.py); loading its PyTorch file"))
    stat = path.stat()
    onnx = (str(source.onnx_path), source.onnx_sha256) if source.onnx_path is not None else (None, None)
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, source.name, source.sha256, device,
                        *onnx)


def _torch_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # sys.modules["torch"] = None blocks it
        return False


def _read_checked(path: str, expected: str | None) -> tuple[bytes, str]:
    """The bytes of a model file and their SHA-256, checked against ``expected`` when given."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise InputFileError(
            f"{path}: model file is corrupt or modified: SHA-256 {digest[:16]}... does not match "
            f"the manifest's {expected[:16]}... (reinstall braggflow, or re-export it with tools/export_onnx.py)"
        )
    return data, digest


def onnx_session(model_bytes: bytes, threads: int, where: str):
    """An ONNX Runtime CPU session of a serialised ONNX model.

    Parameters
    ----------
    model_bytes : bytes
    threads : int
        Intra-op threads; 0 lets ONNX Runtime choose (one per physical core).
    where : str
        Names the model in errors.

    Returns
    -------
    session : onnxruntime.InferenceSession

    Raises
    ------
    InputFileError
        If ONNX Runtime cannot read the model.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BraggflowError("running a model with ONNX Runtime needs onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise InputFileError(f"{where}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def _check_session_io(session, desc: dict, where: str) -> None:
    """The graph takes and gives what the description says (names and fixed sizes)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    inf = desc["inference"]
    s = inf["size"]
    want_in = [s * s * 2 + inf.get("n_scalars", 0)] if inf["input"] == "robust" else [1, s, s]
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].name != ONNX_INPUT or outputs[0].name != ONNX_OUTPUT:
        raise InputFileError(f"{where}: the ONNX graph must have one input {ONNX_INPUT!r} and one output "
                             f"{ONNX_OUTPUT!r}, has {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    got_in, got_out = list(inputs[0].shape[1:]), list(outputs[0].shape[1:])
    if got_in != want_in or got_out != [inf["n_outputs"]]:
        raise InputFileError(f"{where}: the ONNX graph maps (N, {got_in}) -> (N, {got_out}) but the model description "
                             f"needs (N, {want_in}) -> (N, [{inf['n_outputs']}])")


@functools.lru_cache(maxsize=16)
def _load_onnx_cached(path: str, mtime_ns: int, size: int, name: str, expected: str | None,
                      description: str | None, pt_path: str | None, pt_sha256: str | None) -> Localizer:
    data, digest = _read_checked(path, expected)
    session = onnx_session(data, 1, path)
    if description is None:  # a user's .onnx file: the description is in its metadata
        meta = session.get_modelmeta().custom_metadata_map
        if ONNX_METADATA_KEY not in meta:
            raise InputFileError(f"{path}: ONNX file has no braggflow model description (metadata key "
                                 f"{ONNX_METADATA_KEY!r}); export it with tools/export_onnx.py")
        try:
            desc = json.loads(meta[ONNX_METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}: unreadable braggflow model description ({exc})") from None
        if not isinstance(desc, dict) or desc.get("format") != ONNX_FORMAT:
            raise InputFileError(f"{path}: model description is not of format {ONNX_FORMAT!r}")
        if desc.get("version") != ONNX_FORMAT_VERSION:
            raise InputFileError(f"{path}: ONNX model description version {desc.get('version')} is not supported "
                                 f"(expected {ONNX_FORMAT_VERSION})")
        desc = _check_description(desc, path)
    else:
        desc = json.loads(description)
    _check_session_io(session, desc, path)
    loc = Localizer(
        name=name,
        arch=desc["arch"],
        arch_kwargs=dict(desc["arch_kwargs"]),
        network=None,
        size=int(desc["inference"]["size"]),
        train_config=desc.get("train_config") or {},
        metrics=desc.get("metrics") or {},
        calibration=desc.get("calibration"),
        path=Path(pt_path) if pt_path is not None else Path(path),
        sha256=pt_sha256 if pt_path is not None else digest,
        device="cpu",
        onnx_path=Path(path),
        onnx_sha256=digest,
        params=int(desc.get("params") or 0),
    )
    loc._cache[("onnx-bytes",)] = data
    loc._cache[("onnx", 1)] = session
    return loc


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, name: str, expected: str | None, device: str,
                 onnx_path: str | None, onnx_sha256: str | None) -> Localizer:
    try:
        import torch
    except ImportError:
        raise BraggflowError(torch_missing_message(f"{path}: loading a PyTorch model file")) from None

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
        raise InputFileError(f"{path}: model file format version {payload.get('version')} is not supported "
                             f"(expected {FORMAT_VERSION})")
    try:
        recorded = payload["payload_sha256"]
        actual = _payload_sha256(payload)
    except (KeyError, AttributeError, TypeError) as exc:
        raise InputFileError(f"{path}: incomplete braggflow model file (missing {exc})") from None
    if recorded != actual:
        raise InputFileError(f"{path}: model file is corrupt: its content checksum does not match the one "
                             f"recorded in it")
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
        onnx_path=Path(onnx_path) if onnx_path is not None else None,
        onnx_sha256=onnx_sha256,
    )
