"""The patch methods of the locate stage: centre of mass, Poisson fits, a localizer network."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.locate.centroid import LocateResult, centroid_patches
from braggflow.locate.patches import extract_patches
from braggflow.schema import Flag

__all__ = ["METHODS", "locate_patches", "locate_peaks_in_patches"]

METHODS = ("com", "gauss", "pvoigt", "nn")


def _check_method(method) -> str:
    if method == "braggnn":
        warnings.warn("method 'braggnn' is deprecated: it runs the default localizer network, which is not BraggNN; "
                      "use 'nn' (same default model)", DeprecationWarning, stacklevel=3)
        return "nn"
    if method not in METHODS:
        raise BraggflowError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def locate_patches(data, mask=None, *, method: str = "com", gain: float = 1.0, model=None, backend: str = "auto",
                   device: str = "cpu", batch_size: int = 1024) -> LocateResult:
    """Run one localization method on patches.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts.
    mask : (N, s, s) array_like of bool, optional
        True = unusable pixel.
    method : {"com", "gauss", "pvoigt", "nn"}
        See :func:`locate`.
    gain : float
        Counts (ADU) per photon.
    model, backend, device, batch_size
        Passed to :func:`braggflow.nn.inference.predict_patches` for "nn".

    Returns
    -------
    result : LocateResult
        Patch coordinates.

    Raises
    ------
    BraggflowError
        If ``method`` is unknown.
    """
    method = _check_method(method)
    if method == "com":
        return centroid_patches(data, mask, gain=gain)
    if method == "gauss":
        from braggflow.locate.fit import fit_gaussian_patches

        return fit_gaussian_patches(data, mask, gain=gain)
    if method == "pvoigt":
        from braggflow.locate.fit import fit_pvoigt_patches

        return fit_pvoigt_patches(data, mask, gain=gain)
    from braggflow.nn.inference import predict_patches

    data = np.asarray(data, dtype=np.float32)
    n = len(data)
    out = predict_patches(data, mask=mask, model=model, device=device, batch_size=batch_size, gain=gain,
                          backend=backend)
    row = np.asarray(out["row"], dtype=float)
    col = np.asarray(out["col"], dtype=float)
    failed = ~(np.isfinite(row) & np.isfinite(col))
    nan = np.full(n, np.nan)
    return LocateResult(
        row=row,
        col=col,
        row_err=np.asarray(out.get("row_err", nan), dtype=float),
        col_err=np.asarray(out.get("col_err", nan), dtype=float),
        rc_cov=np.zeros(n),
        sigma_row=np.asarray(out.get("sigma_row", nan), dtype=float),
        sigma_col=np.asarray(out.get("sigma_col", nan), dtype=float),
        failed=failed,
        intensity=nan.copy(),
        background=nan.copy(),
    )


def locate_peaks_in_patches(frame, out, method, *, mask, labels, patch_size, gain, saturation, model, backend, device,
                       batch_size) -> pd.DataFrame:
    """Cut the patches of the peaks of ``out`` (a conformed copy, modified) and locate them by ``method``."""
    patches = extract_patches(frame, out, size=patch_size, mask=mask, labels=labels, saturation=saturation)
    fit_mask = patches.mask
    if saturation is not None and method in ("gauss", "pvoigt"):
        fit_mask = fit_mask | (patches.data >= saturation)
    res = locate_patches(patches.data, fit_mask, method=method, gain=gain, model=model, backend=backend,
                         device=device, batch_size=batch_size)
    origin = patches.origin.astype(float)
    out["row"] = res.row + origin[:, 0]
    out["col"] = res.col + origin[:, 1]
    out["row_err"] = res.row_err
    out["col_err"] = res.col_err
    out["rc_cov"] = res.rc_cov
    out["sigma_row"] = res.sigma_row
    out["sigma_col"] = res.sigma_col
    out["method"] = pd.Categorical([method] * len(out), categories=list(METHODS))
    flags = out["flags"].to_numpy(dtype=np.uint32) | patches.flags
    flags[np.asarray(res.failed, dtype=bool)] |= np.uint32(Flag.FIT_FAILED)
    out["flags"] = flags.astype(np.uint32)
    return out
