"""The patch methods of the locate stage: centre of mass, Poisson fits, a localizer network."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.locate.centroid import LocateResult, centroid_patches
from braggflow.locate.patches import Patches, check_patch_inputs, patches_at
from braggflow.schema import Flag

__all__ = ["METHODS", "LOCATED_COLUMNS", "locate_patches", "locate_at", "locate_cut", "located_columns",
           "locate_peaks_in_patches", "method_column"]

METHODS = ("com", "gauss", "pvoigt", "nn")


def _check_method(method, stacklevel: int = 3) -> str:
    """``method`` checked, a deprecated name made its own (warned at the caller ``stacklevel`` frames up)."""
    if method == "braggnn":
        warnings.warn("method 'braggnn' is deprecated: it runs the default localizer network, which is not BraggNN; "
                      "use 'nn' (same default model)", DeprecationWarning, stacklevel=stacklevel)
        return "nn"
    if method not in METHODS:
        raise BraggflowError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def locate_patches(data, mask=None, *, method: str = "com", gain: float = 1.0, model=None, backend: str = "auto",
                   device: str = "cpu", batch_size: int = 1024, fit_engine: str = "batch",
                   background=None) -> LocateResult:
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
    fit_engine : {"batch", "scipy"}
        "gauss" and "pvoigt": every patch in one vectorised fit, or one
        :func:`scipy.optimize.least_squares` per patch (the reference).
    background : (N,) array_like of float, optional
        Each patch's border median over the pixels not in ``mask`` when known (:attr:`Patches.background`): the
        centre of mass ("com") and the moments that start the fits ("gauss", "pvoigt") do not take it again.

    Returns
    -------
    result : LocateResult
        Patch coordinates.

    Raises
    ------
    BraggflowError
        If ``method`` or ``fit_engine`` is unknown.
    """
    method = _check_method(method)
    if fit_engine not in ("batch", "scipy"):
        raise BraggflowError(f"fit_engine must be 'batch' or 'scipy', got {fit_engine!r}")
    if method == "com":
        return centroid_patches(data, mask, gain=gain, background=background)
    if method == "gauss":
        from braggflow.locate.fit import fit_gaussian_patches

        return fit_gaussian_patches(data, mask, gain=gain, engine=fit_engine, background=background)
    if method == "pvoigt":
        from braggflow.locate.fit import fit_pvoigt_patches

        return fit_pvoigt_patches(data, mask, gain=gain, engine=fit_engine, background=background)
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


#: The columns a patch method fills (besides ``method`` and ``flags``).
LOCATED_COLUMNS = ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col")


def locate_at(frame, rows, cols, method, *, mask, labels, patch_size, gain, saturation, model=None, backend="auto",
              device="cpu", batch_size=1024, relabel=None, fit_engine="batch") -> dict[str, np.ndarray]:
    """Cut the patches around (``rows``, ``cols``) and locate them by ``method``, in frame coordinates.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    rows, cols : (N,) ndarray of float
        Finite patch centres, px.
    method : {"com", "gauss", "pvoigt", "nn"}
    mask, labels, patch_size, gain, saturation, model, backend, device, batch_size
        See :func:`braggflow.locate.locate`.
    relabel : (L,) ndarray of int, optional
        Maps the values of ``labels`` to the labels used (peak k is label k + 1);
        see :func:`~braggflow.locate.patches.patches_at`.
    fit_engine : {"batch", "scipy"}
        See :func:`locate_patches`.

    Returns
    -------
    columns : dict of (N,) ndarray
        :data:`LOCATED_COLUMNS` (px) and ``flags`` (uint32): the patches' flags,
        with FIT_FAILED where the method failed.
    """
    return locate_cut(frame, rows, cols, method, mask=mask, labels=labels, patch_size=patch_size, gain=gain,
                      saturation=saturation, model=model, backend=backend, device=device, batch_size=batch_size,
                      relabel=relabel, fit_engine=fit_engine)[0]


def locate_cut(frame, rows, cols, method, *, mask, labels, patch_size, gain, saturation, model=None, backend="auto",
               device="cpu", batch_size=1024, relabel=None,
               fit_engine="batch") -> tuple[dict[str, np.ndarray], Patches]:
    """:func:`locate_at`, also handing back the patches it cut (their ``own`` pixels serve the hand-overs).

    Parameters are those of :func:`locate_at`.

    Returns
    -------
    columns : dict of (N,) ndarray
        As :func:`locate_at` returns them.
    patches : Patches
        The patches located (:func:`~braggflow.locate.patches.patches_at`).
    """
    patches = patches_at(frame, rows, cols, size=patch_size, mask=mask, labels=labels, relabel=relabel,
                         saturation=saturation)
    fit_mask = patches.mask
    if saturation is not None and method in ("gauss", "pvoigt"):
        fit_mask = fit_mask | (patches.data >= saturation)
    # the patches' border median is the one over the pixels they removed: it serves where those are the pixels left out
    background = patches.background if fit_mask is patches.mask else None
    res = locate_patches(patches.data, fit_mask, method=method, gain=gain, model=model, backend=backend,
                         device=device, batch_size=batch_size, fit_engine=fit_engine, background=background)
    flags = patches.flags.copy()
    flags[np.asarray(res.failed, dtype=bool)] |= np.uint32(Flag.FIT_FAILED)
    return dict(located_columns(res, patches.origin), flags=flags), patches


def located_columns(res: LocateResult, origin: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`LOCATED_COLUMNS` of patches located by one method, in frame coordinates.

    Parameters
    ----------
    res : LocateResult
        Results in patch coordinates, (N,) each.
    origin : (N, 2) ndarray of int
        Frame (row, col) of each patch's pixel [0, 0].

    Returns
    -------
    columns : dict of (N,) ndarray
        ``row``, ``col`` (frame px) and the errors, covariance and widths (px) as ``res`` gives them.
    """
    origin = np.asarray(origin, dtype=float)
    return dict(row=res.row + origin[:, 0], col=res.col + origin[:, 1], row_err=res.row_err, col_err=res.col_err,
                rc_cov=res.rc_cov, sigma_row=res.sigma_row, sigma_col=res.sigma_col)


def method_column(codes: np.ndarray, categories) -> pd.Categorical:
    """The ``method`` column from integer ``codes`` into ``categories``."""
    return pd.Categorical.from_codes(codes, dtype=_method_dtype(tuple(categories)))


@functools.lru_cache(maxsize=8)
def _method_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """The categorical dtype of the ``method`` column (building one costs ~0.3 ms)."""
    return pd.CategoricalDtype(list(categories))


def locate_peaks_in_patches(frame, out, method, *, mask, labels, patch_size, gain, saturation, model, backend, device,
                            batch_size) -> pd.DataFrame:
    """Cut the patches of the peaks of ``out`` (a conformed copy, modified) and locate them by ``method``."""
    frame, rows, cols, size = check_patch_inputs(frame, out, size=patch_size, mask=mask, labels=labels)
    located = locate_at(frame, rows, cols, method, mask=mask, labels=labels, patch_size=size, gain=gain,
                        saturation=saturation, model=model, backend=backend, device=device, batch_size=batch_size)
    for name in LOCATED_COLUMNS:
        out[name] = located[name]
    out["method"] = method_column(np.full(len(out), METHODS.index(method), dtype=np.int8), METHODS)
    out["flags"] = out["flags"].to_numpy(dtype=np.uint32) | located["flags"]
    return out
