"""Fast batched inference of the localizer networks on patches.

:func:`predict_patches` is what ``locate(..., method="braggnn")`` calls: it
normalises the patches (NumPy, vectorised), runs the network in batches under
``torch.inference_mode`` and maps the outputs back to patch coordinates with
calibrated 1-sigma errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braggflow.errors import BraggflowError

__all__ = ["BACKENDS", "predict_patches", "raw_predict", "resolve_model"]


def resolve_model(model=None, *, device: str = "cpu"):
    """A :class:`~braggflow.nn.files.Localizer` from a name, path, or model.

    Parameters
    ----------
    model : None, str, Path or Localizer
        None: the default shipped model; str/Path: shipped name or model file.
    device : str
        torch device.

    Returns
    -------
    model : Localizer
    """
    from braggflow.nn.files import Localizer, load_model

    if isinstance(model, Localizer):
        if str(model.device) != str(device):
            return load_model(model.path, device=device) if model.path is not None else model
        return model
    if model is None or isinstance(model, (str, Path)):
        return load_model(model, device=device)
    raise BraggflowError(f"model must be a shipped model name, a model file or a Localizer, got {type(model).__name__}")


def _crop(data: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    s = data.shape[1]
    if s == size:
        return data, mask, 0
    if s < size:
        raise BraggflowError(f"patches are {s} x {s} px but the model needs {size} x {size}; extract larger patches (locate.patch_size)")
    o = (s - size) // 2
    return data[:, o : o + size, o : o + size], mask[:, o : o + size, o : o + size], o


BACKENDS = ("auto", "torch", "onnx")
_FEATURE_CHUNK = 65536


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_session(localizer, example: np.ndarray):
    """An ONNX Runtime session of the network (exported once per model and thread count)."""
    import io
    import warnings

    import onnxruntime as ort
    import torch

    threads = torch.get_num_threads()
    key = ("onnx", threads)
    if key not in localizer._cache:
        buffer = io.BytesIO()
        net = localizer.network.cpu() if localizer.device == "cpu" else localizer.network
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.from_numpy(example),), buffer, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        localizer._cache[key] = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return localizer._cache[key]


def _resolve_backend(backend: str, localizer) -> str:
    if backend not in BACKENDS:
        raise BraggflowError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "onnx" if localizer.device == "cpu" and _onnx_available() else "torch"
    if backend == "onnx" and localizer.device != "cpu":
        raise BraggflowError(f"backend 'onnx' runs on the CPU only, not on device {localizer.device!r}")
    if backend == "onnx" and not _onnx_available():
        raise BraggflowError("backend 'onnx' needs onnxruntime and onnx (pip install 'braggflow[onnx]')")
    return backend


def _run_network(localizer, x: np.ndarray, batch_size: int, backend: str = "torch") -> np.ndarray:
    n = len(x)
    if backend == "onnx" and ("onnx-failed",) in localizer._cache:
        backend = "torch"
    if backend == "onnx":
        try:
            session = _onnx_session(localizer, x[:2])
        except Exception:  # an export problem must not stop a run: fall back to torch
            localizer._cache[("onnx-failed",)] = True
            backend = "torch"
    if backend == "onnx":
        parts = [session.run(None, {"x": x[i : i + batch_size]})[0] for i in range(0, n, batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)
    import torch

    net = localizer.network
    device = localizer.device
    out = None
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            y = net(torch.from_numpy(x[start : start + batch_size]).to(device)).float().cpu().numpy()
            if out is None:
                out = np.empty((n, y.shape[1]), np.float32)
            out[start : start + len(y)] = y
    return out


def raw_predict(localizer, data: np.ndarray, mask: np.ndarray, *, gain: float = 1.0, batch_size: int = 1024,
                backend: str = "torch") -> dict:
    """Network outputs in patch coordinates, before error calibration.

    Parameters
    ----------
    localizer : Localizer
    data : (N, s, s) ndarray of float32
        Checked patches (:func:`braggflow.nn.preprocess.check_patches`),
        ``s >= localizer.size`` (larger patches are cropped to the centre).
    mask : (N, s, s) ndarray of bool
    gain : float
        ADU per photon.
    batch_size : int
    backend : {"torch", "onnx"}
        How to run the network (see :func:`predict_patches`).

    Returns
    -------
    out : dict of (N,) ndarray of float64
        ``row, col`` (px, patch coordinates); for networks with an error
        output also ``row_err, col_err`` (unscaled, px) and, with width
        outputs, ``sigma_row, sigma_col`` (px).
    """
    from braggflow.nn.preprocess import minmax_normalise, robust_features

    data, mask, offset = _crop(data, mask, localizer.size)
    size = localizer.size

    def features(d, m):
        return minmax_normalise(d, m) if localizer.arch == "braggnn" else robust_features(d, m, gain=gain)

    # normalise in chunks so memory stays bounded for millions of patches
    chunk = max(int(batch_size), _FEATURE_CHUNK)
    parts = [_run_network(localizer, features(data[i : i + chunk], mask[i : i + chunk]), batch_size, backend)
             for i in range(0, len(data), chunk)]
    out = np.concatenate(parts).astype(np.float64)
    if localizer.arch == "braggnn":
        return {"row": out[:, 1] * size + offset, "col": out[:, 0] * size + offset}
    c = size // 2 + offset
    result = {
        "row": c + out[:, 0],
        "col": c + out[:, 1],
        "row_err": np.exp(0.5 * np.clip(out[:, 2], -30, 10)),
        "col_err": np.exp(0.5 * np.clip(out[:, 3], -30, 10)),
    }
    if out.shape[1] >= 6:
        result["sigma_row"] = np.exp(np.clip(out[:, 4], -5, 5))
        result["sigma_col"] = np.exp(np.clip(out[:, 5], -5, 5))
    return result


def predict_patches(
    data,
    *,
    mask=None,
    model=None,
    device: str = "cpu",
    batch_size: int = 1024,
    gain: float = 1.0,
    backend: str = "auto",
) -> dict:
    """Sub-pixel peak centres of patches with a localizer network.

    Parameters
    ----------
    data : (N, s, s) array_like of float
        Patches in detector counts, peak near the central pixel
        ``(s // 2, s // 2)``; ``s`` odd and at least the model's patch size
        (larger patches are cropped to their centre).  N may be 0.
    mask : (N, s, s) array_like of bool, optional
        True = unusable pixel (outside the detector, masked, another peak).
        Non-finite pixels are masked too.
    model : None, str, Path or Localizer
        None: the best shipped model; else a shipped name or a model file.
    device : str
        torch device ("cpu", "cuda").
    batch_size : int
        Patches per network call.
    gain : float
        Detector gain, ADU per photon (photon levels drive the errors).
    backend : {"auto", "torch", "onnx"}
        "torch": batched torch under ``inference_mode``; "onnx": the network
        exported once to ONNX Runtime (CPU; the optional extra ``onnx``),
        about 10-15 % faster on one core here; "auto": ONNX Runtime on the
        CPU when installed, else torch.  Positions agree to 1e-5 px.

    Returns
    -------
    result : dict of (N,) ndarray of float64
        ``row, col``: centre in patch coordinates (px, pixel centres on
        integers, (0, 0) the first pixel); ``row_err, col_err``: calibrated
        1-sigma errors (px; NaN for a network with no calibration); and,
        for models that predict them, ``sigma_row, sigma_col`` (px).

    Raises
    ------
    BraggflowError
        For patches of the wrong shape, a mask of another shape, an unknown
        model, or a bad ``batch_size``/``gain``.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022) (BraggNN).
    """
    from braggflow.nn.calibration import apply_error_scale, apply_error_table
    from braggflow.nn.preprocess import check_patches, patch_snr_width

    if int(batch_size) < 1:
        raise BraggflowError(f"batch_size must be >= 1, got {batch_size}")
    if not gain > 0:
        raise BraggflowError(f"gain (ADU per photon) must be > 0, got {gain}")
    data, mask = check_patches(data, mask)
    localizer = resolve_model(model, device=device)
    backend = _resolve_backend(backend, localizer)
    n = len(data)
    if n == 0:
        keys = ["row", "col", "row_err", "col_err"] + (["sigma_row", "sigma_col"] if localizer.arch == "locnet" else [])
        return {k: np.zeros(0, np.float64) for k in keys}
    result = raw_predict(localizer, data, mask, gain=gain, batch_size=int(batch_size), backend=backend)
    calibration = localizer.calibration or {}
    if localizer.predicts_error:
        cdata, cmask, _ = _crop(data, mask, localizer.size)
        masked = cmask.reshape(n, -1).any(axis=1)
        result["row_err"], result["col_err"] = apply_error_scale(calibration, result["row_err"], result["col_err"], masked)
    elif calibration.get("kind") == "table":
        cdata, cmask, _ = _crop(data, mask, localizer.size)
        snr, width = patch_snr_width(cdata, cmask, gain=gain)
        result["row_err"], result["col_err"] = apply_error_table(calibration, snr, width)
    else:
        result["row_err"] = np.full(n, np.nan)
        result["col_err"] = np.full(n, np.nan)
    return result
