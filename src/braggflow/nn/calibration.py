"""Error calibration of the localizer networks.

Every braggflow localizer fills ``row_err``/``col_err``.  Two kinds of
calibration are stored with a model (``Localizer.calibration``):

``{"kind": "table", ...}``
    For networks that predict no error (the published BraggNN): the robust
    1-sigma position error per axis measured on simulated patches, tabulated
    in bins of the patch's SNR and width (both estimated from the patch by
    :func:`braggflow.nn.preprocess.patch_snr_width`).
``{"kind": "scale", "row_scale": a, "col_scale": b}``
    For networks that predict a log-variance (``locnet``): a factor per axis
    that makes ``std(error / predicted sigma)`` equal to 1 on validation
    patches (temperature scaling; Kuleshov et al., ICML 2018).
"""

from __future__ import annotations

import numpy as np

__all__ = ["apply_error_table", "apply_error_scale"]


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


def apply_error_scale(calibration: dict, row_err: np.ndarray, col_err: np.ndarray,
                      masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a ``"scale"`` calibration.

    Parameters
    ----------
    calibration : dict
        From :func:`fit_error_scale`.
    row_err, col_err : (N,) ndarray of float
        Predicted sigmas before scaling, px.
    masked : (N,) ndarray of bool
        Patches with at least one masked pixel.

    Returns
    -------
    row_err, col_err : (N,) ndarray of float64, px
        With sigma bins, the factors are interpolated linearly in log sigma
        between the bins' medians (constant beyond them).
    """
    masked = np.asarray(masked, bool)
    sr = np.where(masked, calibration.get("masked_row_scale", calibration.get("row_scale", 1.0)),
                  calibration.get("row_scale", 1.0))
    sc = np.where(masked, calibration.get("masked_col_scale", calibration.get("col_scale", 1.0)),
                  calibration.get("col_scale", 1.0))
    bins = calibration.get("bins") or {}
    if bins:
        log_sigma = 0.5 * np.log(np.maximum(np.asarray(row_err, float) * np.asarray(col_err, float), 1e-30))
        for prefix, cls in (("", ~masked), ("masked_", masked)):
            if prefix in bins and cls.any():
                b = bins[prefix]
                sr = np.where(cls, np.interp(log_sigma, b["log_sigma"], b["row_scale"]), sr)
                sc = np.where(cls, np.interp(log_sigma, b["log_sigma"], b["col_scale"]), sc)
    return row_err * sr, col_err * sc
