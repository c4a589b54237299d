"""Export of localizer networks to ONNX, for inference without torch.

Needs torch and onnx (``pip install -e ".[train]"``); ``tools/export_onnx.py``
is the command-line front end.  The network is exported in eval mode, so a
``locnet`` with ``symmetries > 1`` carries its test-time average over the
symmetric views inside the graph.  The ONNX file's metadata (key
``"braggflow"``) holds :func:`braggflow.nn.files.model_description`, so an
exported file is self-describing; shipped models also have it in the
``MANIFEST``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.nn.files import (
    MANIFEST_PATH,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    ONNX_INPUT,
    ONNX_METADATA_KEY,
    ONNX_OUTPUT,
    WEIGHTS_DIR,
    Localizer,
    file_sha256,
    load_model,
    model_description,
    onnx_session,
    read_manifest,
    torch_missing_message,
    write_manifest,
)

__all__ = ["onnx_model_bytes", "export_onnx", "check_export", "ship_onnx"]

EXPORTER = "torch.onnx.export (TorchScript)"


def _example_input(localizer: Localizer) -> np.ndarray:
    """Two zero patches in the network's input layout."""
    s = localizer.size
    if localizer.input_kind == "minmax":
        return np.zeros((2, 1, s, s), np.float32)
    return np.zeros((2, 2 * s * s + int(localizer.arch_kwargs.get("n_scalars", 2))), np.float32)


def onnx_model_bytes(localizer: Localizer, *, metadata: dict | None = None) -> bytes:
    """The network of a torch-loaded model as a serialised ONNX model.

    Parameters
    ----------
    localizer : Localizer
        With a torch ``network`` (loaded with ``backend="torch"``).
    metadata : dict, optional
        String keys and values stored in the model's ``metadata_props``.

    Returns
    -------
    model : bytes
        Input ``"x"`` ``(N, ...)`` float32 features, output ``"y"``
        ``(N, n_outputs)`` float32; N dynamic.

    Raises
    ------
    BraggflowError
        If the model has no torch network or torch / onnx are missing.
    """
    import io
    import warnings

    if localizer.network is None:
        raise BraggflowError(f"{localizer.name}: exporting to ONNX needs the model's torch network "
                             f"(load it with backend='torch')")
    try:
        import torch
    except ImportError:
        raise BraggflowError(torch_missing_message("exporting a model to ONNX")) from None
    try:
        import onnx
    except ImportError:
        raise BraggflowError("exporting a model to ONNX needs the onnx package: pip install -e \".[train]\"") from None
    net = localizer.network if localizer.device == "cpu" else copy.deepcopy(localizer.network).cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(_example_input(localizer)),), buffer,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "n"}, ONNX_OUTPUT: {0: "n"}}, dynamo=False)
    if not metadata:
        return buffer.getvalue()
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    return proto.SerializeToString()


def check_export(localizer: Localizer, model_bytes: bytes, *, n: int = 2000, seed: int = 1,
                 atol: float = 1e-4) -> float:
    """Largest difference between the torch network and its ONNX export on simulated patches.

    Parameters
    ----------
    localizer : Localizer
        With a torch network.
    model_bytes : bytes
        The exported model.
    n : int
        Simulated patches (all kinds).
    seed : int
    atol : float
        Largest difference allowed (network output units: px or
        log-variance, or (col, row) / size for BraggNN).

    Returns
    -------
    max_abs_diff : float

    Raises
    ------
    BraggflowError
        If the outputs differ by more than ``atol``.
    """
    import torch

    from braggflow.nn.preprocess import check_patches, minmax_normalise, robust_features
    from braggflow.simulate.patches import simulate_patches

    ps = simulate_patches(n, kind="mixed", seed=seed, size=localizer.size)
    data, mask = check_patches(ps.data, ps.mask)
    x = minmax_normalise(data, mask) if localizer.input_kind == "minmax" else robust_features(data, mask)
    net = localizer.network if localizer.device == "cpu" else copy.deepcopy(localizer.network).cpu()
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    got = onnx_session(model_bytes, 1, localizer.name).run(None, {ONNX_INPUT: x})[0]
    diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if len(x) else 0.0
    if not diff <= atol:
        raise BraggflowError(f"{localizer.name}: ONNX export differs from the torch network by {diff:.3g} (> {atol})")
    return diff


def _onnx_info(model_bytes: bytes) -> dict:
    import onnx
    import torch

    proto = onnx.load_from_string(model_bytes)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ir_version": int(proto.ir_version), "input": ONNX_INPUT, "output": ONNX_OUTPUT,
            "exported_with": f"{EXPORTER}, torch {torch.__version__.split('+')[0]}"}


def export_onnx(model, out: str | Path, *, check: int = 2000) -> dict:
    """Export a model to a self-describing ``.onnx`` file.

    Parameters
    ----------
    model : str, Path or Localizer
        A shipped name, a PyTorch model file, or a torch-loaded Localizer.
    out : str or Path
        The ``.onnx`` file to write.
    check : int
        Simulated patches on which the export is compared with the torch
        network before it is written (0: no check).

    Returns
    -------
    info : dict
        ``file, sha256, size_bytes, opset, ir_version, input, output,
        exported_with, max_abs_diff``.

    Raises
    ------
    BraggflowError
        If torch or onnx are missing, or the export does not reproduce the
        torch network.
    """
    localizer = model if isinstance(model, Localizer) else load_model(model, backend="torch")
    description = model_description(localizer)
    description = {"format": ONNX_FORMAT, "version": ONNX_FORMAT_VERSION, "name": localizer.name,
                   "source_sha256": localizer.sha256, **description}
    data = onnx_model_bytes(localizer, metadata={ONNX_METADATA_KEY: json.dumps(description)})
    diff = check_export(localizer, data, n=check) if check else float("nan")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return {"file": out.name, "sha256": file_sha256(out), "size_bytes": out.stat().st_size, **_onnx_info(data),
            "max_abs_diff": diff}


def ship_onnx(name: str, *, check: int = 2000) -> dict:
    """Export a shipped model to ``weights/NAME.onnx`` and record it in the MANIFEST.

    The model's MANIFEST entry gets ``onnx`` (file, SHA-256, size, opset,
    exporter) and the model description (``arch_kwargs``, ``params``,
    ``inference``, ``calibration``, ``train_config``, ``metrics``) taken from
    its PyTorch file, so it loads by name without torch.

    Parameters
    ----------
    name : str
        A shipped model name (its ``.pt`` file must be in the weights folder).
    check : int
        See :func:`export_onnx`.

    Returns
    -------
    entry : dict
        The updated manifest entry.

    Raises
    ------
    BraggflowError
        If ``name`` is not shipped, or the export fails its check.
    """
    manifest = read_manifest()
    models = manifest.get("models", {})
    if name not in models:
        raise BraggflowError(f"{name!r} is not a shipped model ({MANIFEST_PATH} lists {', '.join(models) or 'none'})")
    entry = models[name]
    localizer = load_model(name, backend="torch")
    info = export_onnx(localizer, WEIGHTS_DIR / f"{name}.onnx", check=check)
    info.pop("max_abs_diff")
    description = model_description(localizer)
    new = {"file": entry["file"], "arch": description["arch"], "arch_kwargs": description["arch_kwargs"],
           "params": description["params"], "size_bytes": localizer.path.stat().st_size, "sha256": localizer.sha256,
           "onnx": info, "inference": description["inference"], "calibration": description["calibration"],
           "train_config": description["train_config"], "metrics": description["metrics"]}
    models[name] = new
    write_manifest(manifest)
    return new
