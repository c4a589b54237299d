"""Fast batched inference of the localizer networks on patches.

:func:`predict_patches` is what ``locate(..., method="nn")`` calls: it
normalises the patches (NumPy, vectorised), runs the network in batches
(ONNX Runtime on the CPU for shipped models, no torch needed; torch under
``torch.inference_mode`` on request, on a GPU, or for a user's ``.pt``
file) and maps the outputs back to patch coordinates with calibrated
1-sigma errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.nn.files import BACKENDS, torch_missing_message

__all__ = ["BACKENDS", "predict_patches", "raw_predict", "resolve_model"]


def resolve_model(model=None, *, device: str = "cpu", backend: str = "auto"):
    """A :class:`~braggflow.nn.files.Localizer` from a name, path, or model, ready for ``backend``.

    Parameters
    ----------
    model : None, str, Path or Localizer
        None: the default shipped model; str/Path: shipped name or model file
        (``.pt`` or ``.onnx``).
    device : str
        ``"cpu"`` or a torch device.
    backend : {"auto", "torch", "onnx"}
        See :func:`predict_patches`; a Localizer loaded from its ONNX file is
        reloaded from its PyTorch file for "torch" or a GPU device.

    Returns
    -------
    model : Localizer

    Raises
    ------
    BraggflowError
        For an unknown backend or model type, or a model that cannot run on
        ``backend``/``device`` (see :func:`~braggflow.nn.files.load_model`).
    """
    from braggflow.nn.files import Localizer, load_model

    if backend not in BACKENDS:
        raise BraggflowError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(model, Localizer):
        needs_torch = backend == "torch" or str(device) != "cpu"
        if model.network is None and needs_torch:
            return load_model(model.path, device=device, backend=backend)
        if model.network is not None and str(model.device) != str(device):
            return load_model(model.path, device=device, backend=backend) if model.path is not None else model
        return model
    if model is None or isinstance(model, (str, Path)):
        return load_model(model, device=device, backend=backend)
    raise BraggflowError(f"model must be a shipped model name, a model file or a Localizer, got {type(model).__name__}")


def _crop(data: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    s = data.shape[1]
    if s == size:
        return data, mask, 0
    if s < size:
        raise BraggflowError(f"patches are {s} x {s} px but the model needs {size} x {size}; extract larger patches "
                             f"(locate.patch_size)")
    o = (s - size) // 2
    return data[:, o : o + size, o : o + size], mask[:, o : o + size, o : o + size], o


_FEATURE_CHUNK = 65536


def _onnx_available() -> bool:
    """True when ONNX Runtime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _export_available() -> bool:
    """True when a torch network can be exported to ONNX at run time (torch and onnx installed)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx"))
    except (ImportError, ValueError):
        return False


def _onnx_threads() -> int:
    """Intra-op threads of ONNX Runtime: torch's setting when torch is loaded, else OMP_NUM_THREADS, else 0 (auto)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _onnx_bytes(localizer) -> bytes:
    """The serialised ONNX model: the model's checked ``.onnx`` file, else the torch network exported once."""
    key = ("onnx-bytes",)
    if key not in localizer._cache:
        if localizer.onnx_path is not None:
            from braggflow.nn.files import _read_checked

            localizer._cache[key] = _read_checked(str(localizer.onnx_path), localizer.onnx_sha256)[0]
        else:
            from braggflow.nn.export import onnx_model_bytes

            localizer._cache[key] = onnx_model_bytes(localizer)
    return localizer._cache[key]


def _onnx_session(localizer):
    """An ONNX Runtime session of the network (one per model and thread count)."""
    from braggflow.nn.files import onnx_session

    key = ("onnx", _onnx_threads())
    if key not in localizer._cache:
        where = str(localizer.onnx_path or localizer.path or localizer.name)
        localizer._cache[key] = onnx_session(_onnx_bytes(localizer), key[1], where)
    return localizer._cache[key]


def _resolve_backend(backend: str, localizer) -> str:
    if backend not in BACKENDS:
        raise BraggflowError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    cpu = localizer.device == "cpu"
    if localizer.network is None:
        if backend == "torch" or not cpu:
            raise BraggflowError(f"{localizer.path}: model loaded from its ONNX file runs with ONNX Runtime on the CPU "
                                 f"only; load its PyTorch file for backend 'torch' or a GPU")
        return "onnx"
    has_onnx = localizer.onnx_path is not None or ("onnx-bytes",) in localizer._cache
    if backend == "auto":
        return "onnx" if cpu and _onnx_available() and (has_onnx or _export_available()) else "torch"
    if backend == "onnx" and not cpu:
        raise BraggflowError(f"backend 'onnx' runs on the CPU only, not on device {localizer.device!r}")
    if backend == "onnx" and not _onnx_available():
        raise BraggflowError("backend 'onnx' needs onnxruntime (pip install onnxruntime)")
    if backend == "onnx" and not has_onnx and not _export_available():
        raise BraggflowError(f"{localizer.path}: backend 'onnx' on a PyTorch model file exports it to ONNX at run "
                             f"time, which needs the onnx package (pip install -e \".[train]\"); or export it once "
                             f"with tools/export_onnx.py and give the .onnx file")
    return backend


def _run_network(localizer, x: np.ndarray, batch_size: int, backend: str = "torch") -> np.ndarray:
    n = len(x)
    if backend == "onnx" and ("onnx-failed",) in localizer._cache:
        backend = "torch"
    if backend == "onnx":
        try:
            session = _onnx_session(localizer)
        except Exception:  # a run-time export problem must not stop a run: fall back to torch
            if localizer.network is None or localizer.onnx_path is not None:
                raise
            localizer._cache[("onnx-failed",)] = True
            backend = "torch"
    if backend == "onnx":
        from braggflow.nn.files import ONNX_INPUT

        parts = [session.run(None, {ONNX_INPUT: x[i : i + batch_size]})[0] for i in range(0, n, batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)
    try:
        import torch
    except ImportError:
        raise BraggflowError(torch_missing_message("backend 'torch'")) from None

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
                backend: str | None = None) -> dict:
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
    backend : {"torch", "onnx"} or None
        How to run the network (see :func:`predict_patches`); None: torch
        when the model has a torch network, else ONNX Runtime.

    Returns
    -------
    out : dict of (N,) ndarray of float64
        ``row, col`` (px, patch coordinates); for networks with an error
        output also ``row_err, col_err`` (unscaled, px) and, with width
        outputs, ``sigma_row, sigma_col`` (px).
    """
    from braggflow.nn.preprocess import minmax_normalise, robust_features

    if backend is None:
        backend = "torch" if localizer.network is not None else "onnx"
    data, mask, offset = _crop(data, mask, localizer.size)
    size = localizer.size
    minmax = localizer.input_kind == "minmax"

    def features(d, m):
        return minmax_normalise(d, m) if minmax else robust_features(d, m, gain=gain)

    # normalise in chunks so memory stays bounded for millions of patches
    chunk = max(int(batch_size), _FEATURE_CHUNK)
    parts = [_run_network(localizer, features(data[i : i + chunk], mask[i : i + chunk]), batch_size, backend)
             for i in range(0, len(data), chunk)]
    out = np.concatenate(parts).astype(np.float64)
    if localizer.output_kind == "colrow-over-size":
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
        None: the best shipped model; else a shipped name or a model file
        (a PyTorch ``.pt`` file, or a ``.onnx`` file written by
        ``tools/export_onnx.py``).
    device : str
        "cpu", or a torch device such as "cuda" (torch backend).
    batch_size : int
        Patches per network call.
    gain : float
        Detector gain, ADU per photon (photon levels drive the errors).
    backend : {"auto", "torch", "onnx"}
        "auto": ONNX Runtime on the CPU (shipped models run from their
        ``.onnx`` files, torch is not imported; a user's ``.pt`` file is
        exported to ONNX once when torch and onnx are installed, else run
        with torch), torch on a GPU ``device``; "onnx": ONNX Runtime (CPU
        only); "torch": batched torch under ``inference_mode`` (needs torch,
        ``pip install -e ".[train]"``).  ONNX Runtime is about 10-15 %
        faster on one core; positions agree to 1e-5 px.

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
        model, a bad ``batch_size``/``gain``/``backend``, or a backend that
        needs torch when it is not installed.
    InputFileError
        For a missing or damaged model file (checksum mismatch).

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
    localizer = resolve_model(model, device=device, backend=backend)
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
        result["row_err"], result["col_err"] = apply_error_scale(calibration, result["row_err"], result["col_err"],
                                                                 masked)
    elif calibration.get("kind") == "table":
        cdata, cmask, _ = _crop(data, mask, localizer.size)
        snr, width = patch_snr_width(cdata, cmask, gain=gain)
        result["row_err"], result["col_err"] = apply_error_table(calibration, snr, width)
    else:
        result["row_err"] = np.full(n, np.nan)
        result["col_err"] = np.full(n, np.nan)
    return result
