"""The locate stage: sub-pixel centres for a table of found peaks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.locate.handover import centre_extended_peaks, fit_saturated_peaks
from braggflow.locate.methods import METHODS, _check_method, locate_cut, locate_patches, located_columns, method_column
from braggflow.locate.patches import check_patch_arrays
from braggflow.schema import Flag, cast_columns, conform, conformed_columns, table_from_columns
from braggflow.windows import cut_windows

__all__ = ["METHODS", "locate", "locate_columns", "locate_patches"]


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
    fit_engine: str = "batch",
    deblend: bool = False,
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
        The same with the rotated elliptical pseudo-Voigt of
        :mod:`braggflow.profiles.render` (:func:`fit_pvoigt_patches`).

    The fits run on all patches at once (``fit_engine="batch"``, see
    :mod:`braggflow.locate.batchfit`) or one patch at a time with
    :func:`scipy.optimize.least_squares` (``"scipy"``, the reference).
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
    fit_engine : {"batch", "scipy"}
        How the fits run (above).
    deblend : bool
        Then try every located peak's patch with one and with two components
        (:func:`braggflow.locate.deblend.deblend`): a blend's row holds one
        member and a new row at the end of the table the other, both flagged
        ``BLENDED`` with positions, errors and intensities from the joint fit.

    Returns
    -------
    table : pandas.DataFrame
        A copy of ``table`` (conformed to the schema) with ``row``, ``col``,
        ``row_err``, ``col_err``, ``rc_cov``, ``sigma_row``, ``sigma_col``
        (frame px), ``method`` and ``flags`` (OR-ed with EDGE, MASKED_NEIGHBOUR,
        OVERLAPPING, SATURATED, BAD_BACKGROUND, FIT_FAILED) filled.  A peak
        whose fit or network failed keeps FIT_FAILED and takes the centre of
        mass of its patch (method ``com``): every peak the finder found keeps a
        position; NaN only where the centroid fails too (no usable pixel).

    Raises
    ------
    BraggflowError
        If ``method``, ``saturated_peaks``, ``extended_peaks`` or ``fit_engine`` is unknown,
        ``patch_size`` is not odd, or the inputs have inconsistent shapes.

    References
    ----------
    Mortensen et al., Nat. Methods 7, 377 (2010) (localization precision);
    Liu et al., IUCrJ 9, 104 (2022) (BraggNN, the ``braggnn-sim`` model).
    """
    method = _check_options(method, saturated_peaks, extended_peaks)
    n = len(table)
    if n == 0:
        out = conform(table)
        out["method"] = pd.Categorical([], categories=list(METHODS))
        return out
    columns, n = _locate_columns(frame, conformed_columns(table), n, method=method, mask=mask, labels=labels,
                                 regions=regions, saturated=saturated, saturated_peaks=saturated_peaks,
                                 extended_peaks=extended_peaks, patch_size=patch_size, gain=gain,
                                 saturation=saturation, model=model, backend=backend, device=device,
                                 batch_size=batch_size, fit_engine=fit_engine, deblend=deblend)
    return table_from_columns(columns, n)


def locate_columns(
    frame: np.ndarray,
    columns: dict,
    n: int,
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
    fit_engine: str = "batch",
    deblend: bool = False,
) -> tuple[dict, int]:
    """:func:`locate` on the columns of a peak table, giving columns: no table is built.

    The per-frame pipeline hands the finder's columns through locate and
    integrate (:func:`braggflow.integrate.integrate_columns`) and builds the
    frame's table once.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected detector frame, counts.
    columns : dict of str to array
        The columns of a conformed peak table (:func:`braggflow.schema.conformed_columns`): every schema column in
        order, then any extra columns, each of length ``n``; read, never written into.
    n : int
        Number of peaks (rows).
    method, mask, labels, regions, saturated, saturated_peaks, extended_peaks
        As :func:`locate`.
    patch_size, gain, saturation, model, backend, device, batch_size, fit_engine, deblend
        As :func:`locate`.

    Returns
    -------
    columns : dict of str to array
        The columns of the table :func:`locate` returns, cast to the schema's dtypes
        (:func:`braggflow.schema.cast_columns`); unchanged columns are the arrays given.
    n : int
        Number of rows (more than given where ``deblend`` split blends).

    Raises
    ------
    BraggflowError
        As :func:`locate`.
    """
    method = _check_options(method, saturated_peaks, extended_peaks)
    if n == 0:
        columns = dict(columns)
        columns["method"] = pd.Categorical([], categories=list(METHODS))
        return cast_columns(columns, 0), 0
    columns, n = _locate_columns(frame, columns, n, method=method, mask=mask, labels=labels, regions=regions,
                                 saturated=saturated, saturated_peaks=saturated_peaks, extended_peaks=extended_peaks,
                                 patch_size=patch_size, gain=gain, saturation=saturation, model=model,
                                 backend=backend, device=device, batch_size=batch_size, fit_engine=fit_engine,
                                 deblend=deblend)
    return cast_columns(columns, n), n


def _check_options(method: str, saturated_peaks: str, extended_peaks: str) -> str:
    """The method (a deprecated name made its own) after checking the hand-over options.

    Raises
    ------
    BraggflowError
        If ``method``, ``saturated_peaks`` or ``extended_peaks`` is unknown.
    """
    method = _check_method(method, stacklevel=4)
    for name, value, allowed in (("saturated_peaks", saturated_peaks, ("fit", "method")),
                                 ("extended_peaks", extended_peaks, ("region", "patch"))):
        if value not in allowed:
            raise BraggflowError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return method


def _locate_columns(frame, given: dict, n: int, *, method, mask, labels, regions, saturated, saturated_peaks,
                    extended_peaks, patch_size, gain, saturation, model, backend, device, batch_size, fit_engine,
                    deblend) -> tuple[dict, int]:
    """The located columns of ``given`` (n >= 1 rows, read only: the result is built from new arrays where
    changed), with the options checked: :func:`locate_columns`, without the cast."""
    fits = method in ("gauss", "pvoigt")
    # saturated pixels do not measure the profile: fits leave them out (integration keeps them)
    fit_mask = mask if saturated is None else (saturated if mask is None else mask | saturated)
    frame, rows, cols, patch_size = check_patch_arrays(frame, given["row"], given["col"], size=patch_size, mask=mask,
                                                       labels=labels)
    brightest = np.stack([rows, cols], axis=1).astype(np.intp)
    columns, patches = locate_cut(frame, rows, cols, method, mask=fit_mask if fits else mask, labels=labels,
                                  patch_size=patch_size, gain=gain, saturation=saturation, model=model,
                                  backend=backend, device=device, batch_size=batch_size, fit_engine=fit_engine)
    located_flags = columns.pop("flags")
    flags = given["flags"] | located_flags
    categories = list(METHODS)
    codes = np.full(n, categories.index(method), dtype=np.int8)
    if method != "com":
        failed = np.flatnonzero(located_flags & np.uint32(Flag.FIT_FAILED))
        if failed.size:  # the centroid of the same patch: the peak stays in the table with a position
            _replace(columns, codes, failed, _patch_centroids(patches, failed, gain), categories.index("com"))
    refit = saturated is not None and not fits and saturated_peaks == "fit"
    extend = regions is not None and extended_peaks == "region"
    if labels is not None and (refit or extend):
        half = patch_size // 2  # each peak's own pixels in its patch, for both hand-overs
        if np.array_equal(patches.origin + half, brightest):  # the patches were cut around the same pixels
            own, counts = patches.own, patches.counts
        else:  # a centre off the pixel grid: its patch is centred on the nearest pixel, the hand-overs' on the floor
            ids = np.arange(1, n + 1)[:, None, None]
            own, counts = cut_windows(labels, brightest[:, 0], brightest[:, 1], half, 0) == ids, None
        if refit:
            hit, fitted = fit_saturated_peaks(frame, saturated, fit_mask, labels, brightest, own, gain)
            if hit.size:
                flags[hit] |= fitted.pop("flags")
                _replace(columns, codes, hit, fitted, categories.index("gauss"))
        if extend:
            background = given["background"]  # the finder's tile level
            index, centroids = centre_extended_peaks(regions, frame, background, brightest, own, labels, mask, gain,
                                                     counts=counts)
            if index.size:
                categories.append("region")
                _replace(columns, codes, index, centroids, categories.index("region"))
    columns.update(method=method_column(codes, categories), flags=flags)
    columns = {name: columns.get(name, values) for name, values in given.items()}
    if deblend:
        from braggflow.locate.deblend import deblend_columns

        # the located patches serve deblending where they were cut with its mask (the fits')
        columns, n = deblend_columns(frame, columns, n, mask=fit_mask, labels=labels, patch_size=patch_size,
                                     gain=gain, patches=patches if fits or saturated is None else None)
    return columns, n


def _patch_centroids(patches, rows: np.ndarray, gain: float) -> dict[str, np.ndarray]:
    """The centre of mass of the patches ``rows`` (:func:`~braggflow.locate.centroid.centroid_patches`), as the
    located columns in frame px."""
    background = None if patches.background is None else patches.background[rows]
    res = locate_patches(patches.data[rows], patches.mask[rows], method="com", gain=gain, background=background)
    return located_columns(res, patches.origin[rows])


def _replace(columns: dict[str, np.ndarray], codes: np.ndarray, rows: np.ndarray, values: dict[str, np.ndarray],
             code: int) -> None:
    """Write ``values`` into ``rows`` of ``columns`` (in place) and set their method ``code``."""
    for name, new in values.items():
        columns[name] = columns[name].copy()
        columns[name][rows] = new
    codes[rows] = code
