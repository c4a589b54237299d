"""The locate stage: sub-pixel centres for a table of found peaks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.locate.centroid import LocateResult, centroid_patches
from braggflow.locate.handover import centre_extended_peaks, fit_saturated_peaks
from braggflow.locate.patches import extract_patches
from braggflow.schema import Flag, conform
from braggflow.windows import cut_windows

__all__ = ["METHODS", "locate", "locate_patches"]

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


def locate(
    frame: np.ndarray,
    table: pd.DataFrame,
    *,
    method: str = "com",
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    regions=None,
    saturated: np.ndarray | None = None,
    saturated_peaks: str = "fit",
    extended_peaks: str = "region",
    patch_size: int = 11,
    gain: float = 1.0,
    saturation: float | None = None,
    model=None,
    backend: str = "auto",
    device: str = "cpu",
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Sub-pixel centres of the peaks of ``table`` in ``frame``.

    Patches are cut around each peak (:func:`extract_patches`) and located by
    one method:

    ``"com"``
        Background-subtracted centre of mass of the central peak region, errors
        from Poisson noise through ``gain``, widths from second moments.
    ``"gauss"``
        Poisson maximum-likelihood fit of a pixel-integrated axis-aligned 2D
        Gaussian plus constant background (:func:`fit_gaussian_patches`).
    ``"pvoigt"``
        The same with the pseudo-Voigt of :mod:`braggflow.profiles.render`
        (:func:`fit_pvoigt_patches`).
    ``"nn"``
        A localizer network (``model``; default the shipped
        ``locnet-sim-sym4``, a multilayer perceptron) through
        :func:`braggflow.nn.inference.predict_patches`.  ``"braggnn"`` is a
        deprecated name of ``"nn"``.

    With the finder's ``labels`` two kinds of peak are then handed on
    (:mod:`braggflow.locate.handover`), and the ``method`` column says so:

    - peaks with ``saturated`` pixels in their own region, when the method is
      not a fit and ``saturated_peaks="fit"``: a Gaussian fit without those
      pixels (``"gauss"``); the fits always leave them out;
    - peaks whose patch holds less than
      :data:`~braggflow.locate.handover.EXTENDED_PATCH_FRACTION` of their
      region's signal, given ``regions`` and ``extended_peaks="region"``: the
      centroid of the whole region (``"region"``).

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected detector frame, counts.
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` of each peak's highest pixel (px).
    method : {"com", "gauss", "pvoigt", "nn"}
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    labels : (H, W) ndarray of int, optional
        The finder's label image (label k is table row k - 1).
    regions : braggflow.find.Regions, optional
        The finder's regions (rows of ``table``), for extended peaks.
    saturated : (H, W) ndarray of bool, optional
        Saturated pixels (:func:`braggflow.correct.saturated_pixels`).
    saturated_peaks : {"fit", "method"}
        Peaks with saturated pixels: a Gaussian fit without them, or ``method``.
    extended_peaks : {"region", "patch"}
        Peaks larger than the patch: the whole region's centroid, or ``method``.
    patch_size : int
        Patch side, odd, px.
    gain : float
        Detector gain, counts (ADU) per photon.
    saturation : float, optional
        Saturation level, counts: patches holding such pixels are flagged
        SATURATED and the fits leave those pixels out.
    model, backend, device, batch_size
        ``"nn"``: the network (name, path or loaded model; None: the default
        shipped model), inference engine (``"auto"``, ``"onnx"``, ``"torch"``),
        torch device and inference batch size.

    Returns
    -------
    table : pandas.DataFrame
        A copy of ``table`` (conformed to the schema) with ``row``, ``col``,
        ``row_err``, ``col_err``, ``rc_cov``, ``sigma_row``, ``sigma_col``
        (frame px), ``method`` and ``flags`` (OR-ed with EDGE, MASKED_NEIGHBOUR,
        OVERLAPPING, SATURATED, BAD_BACKGROUND, FIT_FAILED) filled.  Failed
        peaks have NaN positions and FIT_FAILED.

    Raises
    ------
    BraggflowError
        If ``method`` is unknown, ``patch_size`` is not odd, or the inputs have
        inconsistent shapes.

    References
    ----------
    Mortensen et al., Nat. Methods 7, 377 (2010) (localization precision);
    Liu et al., IUCrJ 9, 104 (2022) (BraggNN, the ``braggnn-sim`` model).
    """
    method = _check_method(method)
    out = conform(table.copy())
    if len(out) == 0:
        out["method"] = pd.Categorical([], categories=list(METHODS))
        return out
    fits = method in ("gauss", "pvoigt")
    # saturated pixels do not measure the profile: fits leave them out (integration keeps them)
    fit_mask = mask if saturated is None else (saturated if mask is None else mask | saturated)
    brightest = out[["row", "col"]].to_numpy().astype(np.intp)
    located = _locate_patches_of(frame, out, method, mask=fit_mask if fits else mask, labels=labels,
                                 patch_size=patch_size, gain=gain, saturation=saturation, model=model,
                                 backend=backend, device=device, batch_size=batch_size)
    refit = saturated is not None and not fits and saturated_peaks == "fit"
    extend = regions is not None and extended_peaks == "region"
    if labels is None or not (refit or extend):
        return located
    half = patch_size // 2  # each peak's own pixels in its patch, for both hand-overs
    own = cut_windows(labels, brightest[:, 0], brightest[:, 1], half, 0) == np.arange(1, len(out) + 1)[:, None, None]
    if refit:
        located = fit_saturated_peaks(located, frame, saturated, fit_mask, labels, brightest, own, gain)
    if extend:
        located = centre_extended_peaks(located, regions, frame, brightest, own, labels, mask, gain)
    return located


def _locate_patches_of(frame, out, method, *, mask, labels, patch_size, gain, saturation, model, backend, device,
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
