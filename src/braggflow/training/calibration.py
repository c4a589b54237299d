"""Fitting the error calibration of the localizer networks on simulated or validation patches.

The two kinds of calibration and how inference applies them are described in
:mod:`braggflow.nn.calibration`: an error table in bins of SNR and width for
networks that predict no error (the published BraggNN), and a scale per axis
for networks that predict a log-variance (``locnet``; temperature scaling,
Kuleshov et al., ICML 2018).
"""

from __future__ import annotations

import numpy as np

from braggflow._stats import MAD_TO_SIGMA
from braggflow.nn.calibration import apply_error_scale, apply_error_table
from braggflow.nn.preprocess import patch_snr_width

__all__ = [
    "fit_error_table",
    "fit_error_scale",
    "calibration_figures",
    "calibrate_predictions",
    "calibrate_localizer",
]

_CHI2_2D_1SIGMA = 1.0 - np.exp(-0.5)  # 0.3935: mass of a 2D normal inside its 1-sigma ellipse


def _robust_sigma(err: np.ndarray) -> float:
    err = err[np.isfinite(err)]
    if len(err) == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(err)))


def fit_error_table(
    err_row: np.ndarray,
    err_col: np.ndarray,
    snr: np.ndarray,
    width: np.ndarray,
    *,
    n_snr: int = 10,
    n_width: int = 4,
) -> dict:
    """Tabulate the 1-sigma error per axis in bins of SNR and width.

    Parameters
    ----------
    err_row, err_col : (N,) ndarray of float
        Signed position errors (predicted - true), px.
    snr, width : (N,) ndarray of float
        Per-patch SNR and width estimates.
    n_snr, n_width : int
        Number of (quantile) bins along each axis.

    Returns
    -------
    calibration : dict
        ``kind="table"``, ``log_snr_edges`` (n_snr + 1), ``width_edges``
        (n_width + 1), ``row_err`` and ``col_err`` as nested lists
        (n_snr x n_width) of robust sigmas (1.4826 MAD about zero), px.
    """
    ok = np.isfinite(err_row) & np.isfinite(err_col) & np.isfinite(snr) & np.isfinite(width)
    log_snr = np.log10(np.maximum(snr[ok], 0.1))
    width = width[ok]
    er, ec = err_row[ok], err_col[ok]
    s_edges = np.unique(np.quantile(log_snr, np.linspace(0, 1, n_snr + 1)))
    w_edges = np.unique(np.quantile(width, np.linspace(0, 1, n_width + 1)))
    si = np.clip(np.searchsorted(s_edges, log_snr, side="right") - 1, 0, len(s_edges) - 2)
    wi = np.clip(np.searchsorted(w_edges, width, side="right") - 1, 0, len(w_edges) - 2)
    tr = np.full((len(s_edges) - 1, len(w_edges) - 1), np.nan)
    tc = np.full_like(tr, np.nan)
    for i in range(tr.shape[0]):
        for j in range(tr.shape[1]):
            sel = (si == i) & (wi == j)
            if sel.sum() >= 20:
                tr[i, j] = _robust_sigma(er[sel])
                tc[i, j] = _robust_sigma(ec[sel])
    # empty bins: the value of the same SNR bin at other widths, else the global one
    for t, e in ((tr, er), (tc, ec)):
        for i in range(t.shape[0]):
            row = t[i]
            if np.isnan(row).all():
                sel = si == i
                row[:] = _robust_sigma(e[sel]) if sel.sum() >= 5 else _robust_sigma(e)
            else:
                row[np.isnan(row)] = np.nanmean(row)
    return {
        "kind": "table",
        "log_snr_edges": s_edges.tolist(),
        "width_edges": w_edges.tolist(),
        "row_err": tr.tolist(),
        "col_err": tc.tolist(),
    }


def _scale_cost(zr: np.ndarray, zc: np.ndarray, k: float) -> float:
    """How far sigma * k is from calibrated, in units of the project's tolerances."""
    return max(
        abs(np.std(zr) / k - 1) / 0.1,
        abs(np.std(zc) / k - 1) / 0.1,
        abs(np.mean(zr**2 + zc**2 <= k * k) - _CHI2_2D_1SIGMA) / 0.05,
    )


def _fit_common_scale(zr: np.ndarray, zc: np.ndarray, subsets: list[np.ndarray]) -> tuple[float, float]:
    """Per-axis std normalisation, then the common factor k that is best for every subset."""
    a, b = float(np.std(zr)), float(np.std(zc))
    zr, zc = zr / a, zc / b
    best_k, best_cost = 1.0, np.inf
    for k in np.linspace(0.7, 1.4, 141):
        cost = max(_scale_cost(zr[s], zc[s], k) for s in [np.ones(len(zr), bool), *subsets])
        if cost < best_cost - 1e-12:
            best_k, best_cost = float(k), cost
    return a * best_k, b * best_k


def fit_error_scale(
    err_row: np.ndarray,
    err_col: np.ndarray,
    sig_row: np.ndarray,
    sig_col: np.ndarray,
    *,
    masked: np.ndarray | None = None,
    groups: dict | None = None,
    min_group: int = 100,
    n_bins: int = 1,
) -> dict:
    """Per-axis factors that make the predicted sigmas calibrated.

    Patches with and without masked pixels get their own factors (the mask is
    known at inference).  For each class, each axis is first scaled so that
    ``std(error / sigma) = 1``; then one common factor ``k`` (0.7 to 1.4) is
    chosen that best meets both calibration criteria of the project at once,
    in the whole class and in every group given, minimising the largest
    ``max(|std_row - 1| / 0.1, |std_col - 1| / 0.1, |in_ellipse - 0.393| / 0.05)``.
    With Gaussian errors and exact sigmas ``k = 1``; noisy sigmas (a
    sharper-than-Gaussian core) pull it below 1.

    With ``n_bins > 1`` the factors are fitted separately in ``n_bins``
    quantile bins of the predicted sigma itself (``sqrt(sig_row *
    sig_col)``) and interpolated in log sigma between the bins' medians: a
    recalibration of the predicted sigma as a function of its own value
    (Kuleshov et al. 2018), which corrects a network that is over-confident
    for small and under-confident for large predicted errors.

    Parameters
    ----------
    err_row, err_col : (N,) ndarray of float
        Signed errors, px.
    sig_row, sig_col : (N,) ndarray of float
        Predicted 1-sigma errors before scaling, px.
    masked : (N,) ndarray of bool, optional
        Patches with at least one masked pixel.
    groups : dict of str -> (N,) ndarray of bool, optional
        Subsets (e.g. kinds of simulated peaks) that must each be calibrated.
    min_group : int
        Smaller classes or groups are ignored (a class falls back to the
        factors of all patches).
    n_bins : int
        Bins of the predicted sigma per class (1: one factor per axis).

    Returns
    -------
    calibration : dict
        ``{"kind": "scale", "row_scale", "col_scale", "masked_row_scale",
        "masked_col_scale"}`` (px / px); with ``n_bins > 1`` also
        ``"bins": {"": {...}, "masked_": {...}}`` with per-class
        ``log_sigma`` (bin medians of the natural log of the raw sigma) and
        ``row_scale``, ``col_scale`` lists.

    References
    ----------
    Kuleshov, Fenner and Ermon, "Accurate uncertainties for deep learning
    using calibrated regression", ICML (2018).
    """
    sig_row = np.asarray(sig_row, float)
    sig_col = np.asarray(sig_col, float)
    zr = np.asarray(err_row, float) / sig_row
    zc = np.asarray(err_col, float) / sig_col
    ok = np.isfinite(zr) & np.isfinite(zc)
    masked = np.zeros(len(zr), bool) if masked is None else np.asarray(masked, bool)
    groups = groups or {}

    def fit(sel):
        subsets = [g[sel] for g in groups.values() if np.sum(g & sel) >= min_group]
        return _fit_common_scale(zr[sel], zc[sel], subsets)

    pooled = fit(ok)
    out = {"kind": "scale"}
    log_sigma = 0.5 * np.log(np.maximum(sig_row * sig_col, 1e-30))
    bins = {}
    for prefix, cls in (("", ~masked), ("masked_", masked)):
        sel = ok & cls
        a, b = fit(sel) if sel.sum() >= min_group else pooled
        out[prefix + "row_scale"], out[prefix + "col_scale"] = a, b
        if n_bins > 1 and sel.sum() >= n_bins * min_group:
            edges = np.quantile(log_sigma[sel], np.linspace(0, 1, n_bins + 1))
            index = np.clip(np.searchsorted(edges, log_sigma, side="right") - 1, 0, n_bins - 1)
            centres, rows, cols = [], [], []
            for i in range(n_bins):
                in_bin = sel & (index == i)
                ra, rb = fit(in_bin)
                centres.append(float(np.median(log_sigma[in_bin])))
                rows.append(ra)
                cols.append(rb)
            bins[prefix] = {"log_sigma": centres, "row_scale": rows, "col_scale": cols}
    if bins:
        out["bins"] = bins
    return out


def kind_groups(kinds: np.ndarray | None) -> dict:
    """Calibration groups from simulated patch kinds.

    Every kind but ``"neighbour"`` is a group that must be calibrated on its
    own (neighbour patches count in the whole set only: when the network
    takes the wrong one of two close peaks its error is not Gaussian, and
    requiring that group to be calibrated would inflate every other peak's
    error).
    """
    if kinds is None:
        return {}
    return {str(k): kinds == k for k in np.unique(kinds) if k != "neighbour"}


def calibration_figures(err_row, err_col, sig_row, sig_col) -> dict:
    """How well predicted errors describe the real ones.

    Parameters
    ----------
    err_row, err_col : (N,) ndarray of float
        Signed errors, px.
    sig_row, sig_col : (N,) ndarray of float
        Predicted 1-sigma errors, px.

    Returns
    -------
    figures : dict
        ``z_std_row``, ``z_std_col``: std of error / sigma per axis (1 when
        calibrated); ``in_ellipse``: fraction with
        ``(er/sr)^2 + (ec/sc)^2 <= 1`` (0.393 for a 2D normal);
        ``in_ellipse_expected``: 0.393.
    """
    zr = np.asarray(err_row) / np.asarray(sig_row)
    zc = np.asarray(err_col) / np.asarray(sig_col)
    ok = np.isfinite(zr) & np.isfinite(zc)
    zr, zc = zr[ok], zc[ok]
    return {
        "z_std_row": float(np.std(zr)),
        "z_std_col": float(np.std(zc)),
        "in_ellipse": float(np.mean(zr**2 + zc**2 <= 1.0)),
        "in_ellipse_expected": float(_CHI2_2D_1SIGMA),
        "n": int(ok.sum()),
    }


def calibrate_predictions(
    raw: dict,
    row: np.ndarray,
    col: np.ndarray,
    data: np.ndarray,
    mask: np.ndarray,
    *,
    predicts_error: bool,
    gain: float = 1.0,
    kinds: np.ndarray | None = None,
    n_bins: int = 1,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit the error calibration of a network from its raw predictions.

    Parameters
    ----------
    raw : dict
        From :func:`braggflow.nn.inference.raw_predict`.
    row, col : (N,) ndarray of float
        True (or reference) centres, px.
    data, mask : (N, s, s) ndarray
        The patches, checked.
    predicts_error : bool
        True: fit a ``"scale"`` calibration of the predicted sigmas; False:
        a ``"table"`` of errors vs SNR and width.
    gain : float
        ADU per photon.
    kinds : (N,) ndarray of str, optional
        Simulated patch kinds (see :func:`kind_groups`).
    n_bins : int
        Bins of the predicted sigma (see :func:`fit_error_scale`).

    Returns
    -------
    calibration : dict
    row_err, col_err : (N,) ndarray of float64
        The calibrated errors of these patches, px.
    """
    er = raw["row"] - np.asarray(row)
    ec = raw["col"] - np.asarray(col)
    if predicts_error:
        masked = mask.reshape(len(mask), -1).any(axis=1)
        calibration = fit_error_scale(er, ec, raw["row_err"], raw["col_err"], masked=masked,
                                      groups=kind_groups(kinds), n_bins=n_bins)
        sr, sc = apply_error_scale(calibration, raw["row_err"], raw["col_err"], masked)
    else:
        snr, width = patch_snr_width(data, mask, gain=gain)
        calibration = fit_error_table(er, ec, snr, width)
        sr, sc = apply_error_table(calibration, snr, width)
    return calibration, sr, sc


def calibrate_localizer(localizer, *, n: int = 40000, seed: int = 0, patches=None,
                        n_bins: int = 1) -> tuple[dict, dict]:
    """Measure a localizer's errors on simulated patches and calibrate them.

    Parameters
    ----------
    localizer : braggflow.nn.files.Localizer
    n : int
        Number of simulated patches (ignored when ``patches`` is given): all
        kinds, peak sigma 0.5-4 px, half of them cut around their brightest
        pixel like the finder's patches
        (:func:`braggflow.training.sets.simulated_training_patches`).
    seed : int
        Simulation seed.
    patches : LabelledPatches, optional
        Use these patches instead of simulating.
    n_bins : int
        Bins of the predicted sigma for a ``"scale"`` calibration
        (:func:`fit_error_scale`).

    Returns
    -------
    calibration : dict
        A ``"table"`` calibration for networks without an error output, a
        ``"scale"`` one otherwise.
    metrics : dict
        Median radial error (px) and the calibration figures after
        calibration, on these patches.
    """
    from braggflow.nn.inference import raw_predict
    from braggflow.nn.preprocess import check_patches

    if patches is None:
        from braggflow.training.sets import simulated_training_patches

        patches = simulated_training_patches(n, size=localizer.size, kind="mixed", seed=seed, recentre=0.5,
                                             sim_options={"sigma": (0.5, 4.0)})
    data, mask = check_patches(patches.data, patches.mask)
    raw = raw_predict(localizer, data, mask, gain=patches.gain)
    er = raw["row"] - np.asarray(patches.row)
    ec = raw["col"] - np.asarray(patches.col)
    metrics = {"calibration_patches": int(len(data)), "calibration_median_px": float(np.nanmedian(np.hypot(er, ec)))}
    calibration, sr, sc = calibrate_predictions(raw, patches.row, patches.col, data, mask,
                                                predicts_error=localizer.predicts_error, gain=patches.gain,
                                                kinds=patches.kind, n_bins=n_bins)
    metrics.update({f"calibration_{k}": v for k, v in calibration_figures(er, ec, sr, sc).items()})
    return calibration, metrics
