"""Error calibration of the localizer networks.

Every braggflow localizer fills ``row_err``/``col_err``.  Two kinds of
calibration are stored with a model (``Localizer.calibration``):

``{"kind": "table", ...}``
    For networks that predict no error (the published BraggNN): the robust
    1-sigma position error per axis measured on simulated patches, tabulated
    in bins of the patch's SNR and width (both estimated from the patch by
    :func:`braggflow.models.preprocess.patch_snr_width`).
``{"kind": "scale", "row_scale": a, "col_scale": b}``
    For networks that predict a log-variance (``locnet``): a factor per axis
    that makes ``std(error / predicted sigma)`` equal to 1 on validation
    patches (temperature scaling; Kuleshov et al., ICML 2018).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_error_table", "apply_error_table", "fit_error_scale", "calibration_figures", "calibrate_localizer"]

_MAD_TO_SIGMA = 1.4826
_CHI2_2D_1SIGMA = 1.0 - np.exp(-0.5)  # 0.3935: mass of a 2D normal inside its 1-sigma ellipse


def _robust_sigma(err: np.ndarray) -> float:
    err = err[np.isfinite(err)]
    if len(err) == 0:
        return float("nan")
    return float(_MAD_TO_SIGMA * np.median(np.abs(err)))


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


def apply_error_table(calibration: dict, snr: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Look up the 1-sigma errors of patches in a calibration table.

    Parameters
    ----------
    calibration : dict
        From :func:`fit_error_table`.
    snr, width : (N,) ndarray of float

    Returns
    -------
    row_err, col_err : (N,) ndarray of float64, px
        Values outside the table's range take the nearest bin.
    """
    s_edges = np.asarray(calibration["log_snr_edges"])
    w_edges = np.asarray(calibration["width_edges"])
    log_snr = np.log10(np.maximum(np.nan_to_num(snr, nan=0.1), 0.1))
    si = np.clip(np.searchsorted(s_edges, log_snr, side="right") - 1, 0, len(s_edges) - 2)
    wi = np.clip(np.searchsorted(w_edges, np.nan_to_num(width, nan=0.0), side="right") - 1, 0, len(w_edges) - 2)
    return np.asarray(calibration["row_err"])[si, wi], np.asarray(calibration["col_err"])[si, wi]


def fit_error_scale(err_row: np.ndarray, err_col: np.ndarray, sig_row: np.ndarray, sig_col: np.ndarray) -> dict:
    """Per-axis factors that make the predicted sigmas calibrated.

    Parameters
    ----------
    err_row, err_col : (N,) ndarray of float
        Signed errors, px.
    sig_row, sig_col : (N,) ndarray of float
        Predicted 1-sigma errors before scaling, px.

    Returns
    -------
    calibration : dict
        ``{"kind": "scale", "row_scale": a, "col_scale": b}`` with
        ``a = std(err_row / sig_row)`` (and b likewise), after removing the
        0.1% most extreme ratios.

    References
    ----------
    Kuleshov, Fenner and Ermon, "Accurate uncertainties for deep learning
    using calibrated regression", ICML (2018).
    """
    scales = []
    for e, s in ((err_row, sig_row), (err_col, sig_col)):
        z = e / s
        z = z[np.isfinite(z)]
        lim = np.quantile(np.abs(z), 0.999)
        scales.append(float(np.std(z[np.abs(z) <= lim])))
    return {"kind": "scale", "row_scale": scales[0], "col_scale": scales[1]}


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


def calibrate_localizer(localizer, *, n: int = 20000, seed: int = 0, kind: str = "mixed", patches=None) -> tuple[dict, dict]:
    """Measure a localizer's errors on simulated patches and calibrate them.

    Parameters
    ----------
    localizer : braggflow.models.files.Localizer
    n : int
        Number of simulated patches (ignored when ``patches`` is given).
    seed : int
        Simulation seed.
    kind : str
        Patch kind for :func:`braggflow.simulate.patches.simulate_patches`.
    patches : PatchSet, optional
        Use these patches instead of simulating.

    Returns
    -------
    calibration : dict
        A ``"table"`` calibration for networks without an error output, a
        ``"scale"`` one otherwise.
    metrics : dict
        Median radial error (px) and the calibration figures after scaling.
    """
    from braggflow.models.inference import raw_predict
    from braggflow.models.preprocess import check_patches, patch_snr_width

    if patches is None:
        from braggflow.simulate.patches import simulate_patches

        patches = simulate_patches(n, size=localizer.size, kind=kind, seed=seed)
    data, mask = check_patches(patches.data, patches.mask)
    raw = raw_predict(localizer, data, mask)
    er = raw["row"] - np.asarray(patches.row)
    ec = raw["col"] - np.asarray(patches.col)
    metrics = {"calibration_patches": int(len(data)), "calibration_median_px": float(np.nanmedian(np.hypot(er, ec)))}
    if localizer.predicts_error:
        calibration = fit_error_scale(er, ec, raw["row_err"], raw["col_err"])
        sr = raw["row_err"] * calibration["row_scale"]
        sc = raw["col_err"] * calibration["col_scale"]
    else:
        snr, width = patch_snr_width(data, mask)
        calibration = fit_error_table(er, ec, snr, width)
        sr, sc = apply_error_table(calibration, snr, width)
    metrics.update({f"calibration_{k}": v for k, v in calibration_figures(er, ec, sr, sc).items()})
    return calibration, metrics
