"""Writing braggflow model files: saving trained networks, converting published weights, shipping models.

The file format and its checks are those of :mod:`braggflow.nn.files`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from braggflow.errors import InputFileError
from braggflow.nn.files import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_PATH,
    WEIGHTS_DIR,
    Localizer,
    _payload_sha256,
    file_sha256,
    load_model,
    read_manifest,
)

__all__ = ["save_model", "convert_weights", "ship_model"]


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
        Architecture name (a key of :data:`braggflow.nn.architectures.ARCHITECTURES`).
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

    from braggflow.nn.architectures import BraggNN, published_shapes

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
    dense_w = sorted(
        (int(k.split(".")[1]), v)
        for k, v in state.items()
        if k.startswith("dense_layers.") and k.endswith(".weight")
    )
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
    network = BraggNN(imgsz, fcsz, published_order=True).eval()
    network.load_state_dict(state, strict=True)
    arch_kwargs = {"imgsz": imgsz, "fcsz": list(fcsz), "published_order": True}
    calibration = None
    metrics: dict = {}
    if calibrate:
        from braggflow.training.calibration import calibrate_localizer

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

    model = load_model(path, backend="torch")
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
    from braggflow.nn.export import ship_onnx  # the ONNX file and the description that loads without torch

    return ship_onnx(name)
