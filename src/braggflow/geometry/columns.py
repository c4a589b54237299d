"""Per-peak geometry columns: two_theta, eta, q, d (and q_xy, q_z) with propagated errors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.geometry.core import Geometry
from braggflow.schema import Flag, validate_peak_table

__all__ = ["add_geometry_columns", "geometry_values"]

_STEP = 0.25  # px, central-difference step for the Jacobian (the maps are smooth on this scale)


def geometry_values(row, col, geometry: Geometry) -> dict[str, np.ndarray]:
    """two_theta, eta, q, d (and q_xy, q_z with an incidence angle) at detector points.

    Parameters
    ----------
    row, col : (N,) array_like of float, px
    geometry : Geometry

    Returns
    -------
    values : dict of str -> (N,) ndarray
        ``two_theta``, ``eta`` (deg), ``q`` (1/Å), ``d`` (Å), and ``q_xy``,
        ``q_z`` (1/Å) when the geometry has an incidence angle.
    """
    two_theta, eta = geometry.pixel_to_angles(row, col)
    q = geometry.two_theta_to_q(two_theta)
    with np.errstate(divide="ignore"):
        d = np.where(q > 0, 2 * np.pi / np.where(q > 0, q, 1.0), np.inf)
    out = {"two_theta": two_theta, "eta": eta, "q": q, "d": d}
    if geometry.has_incidence:
        out["q_xy"], out["q_z"] = geometry.pixel_to_qxy_qz(row, col)
    return out


def add_geometry_columns(table: pd.DataFrame, geometry: Geometry) -> pd.DataFrame:
    """Fill the geometry columns of a peak table from its row/col.

    Fills ``two_theta``, ``eta`` (deg, pyFAI's chi), ``q`` (1/Å), ``d`` (Å),
    ``two_theta_err``, ``q_err``, ``d_err`` and, when the geometry has an
    incidence angle, ``q_xy``, ``q_z`` (1/Å).  Errors are propagated from
    ``row_err``, ``col_err`` and ``rc_cov`` through the Jacobian of the pixel ->
    angle map (central differences, one vectorised pyFAI call for all peaks):
    ``var(f) = J C J^T`` with ``C = [[row_err^2, rc_cov], [rc_cov, col_err^2]]``.
    Rows whose positions are NaN get NaN values and the OUT_OF_RANGE flag.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` (px); ``row_err``, ``col_err``,
        ``rc_cov`` are used when present (missing: errors NaN, covariance 0).
    geometry : Geometry

    Returns
    -------
    table : pandas.DataFrame
        A copy with the columns filled.

    Raises
    ------
    ValueError
        If the table has no ``row``/``col`` columns.
    """
    validate_peak_table(table, required=("row", "col"))
    out = table.copy()
    n = len(out)
    if n == 0:
        for name in ("two_theta", "eta", "q", "d", "two_theta_err", "q_err", "d_err", "q_xy", "q_z"):
            if name not in out.columns:
                out[name] = pd.Series(dtype="float64")
        return out
    row = out["row"].to_numpy(dtype=np.float64)
    col = out["col"].to_numpy(dtype=np.float64)
    # one call for the centres and the four Jacobian points
    h = _STEP
    rows = np.concatenate([row, row + h, row - h, row, row])
    cols = np.concatenate([col, col, col, col + h, col - h])
    vals = geometry_values(rows, cols, geometry)
    centre = {k: v[:n] for k, v in vals.items()}
    for name, value in centre.items():
        out[name] = value
    row_err = out["row_err"].to_numpy(dtype=np.float64) if "row_err" in out else np.full(n, np.nan)
    col_err = out["col_err"].to_numpy(dtype=np.float64) if "col_err" in out else np.full(n, np.nan)
    rc_cov = out["rc_cov"].to_numpy(dtype=np.float64) if "rc_cov" in out else np.zeros(n)
    rc_cov = np.nan_to_num(rc_cov)
    for name in ("two_theta", "q", "d"):
        v = vals[name]
        with np.errstate(invalid="ignore"):  # d is infinite at q = 0 (the direct beam): its error is NaN there
            jr = (v[n:2 * n] - v[2 * n:3 * n]) / (2 * h)
            jc = (v[3 * n:4 * n] - v[4 * n:]) / (2 * h)
            var = jr ** 2 * row_err ** 2 + jc ** 2 * col_err ** 2 + 2 * jr * jc * rc_cov
        out[f"{name}_err"] = np.sqrt(np.maximum(var, 0.0))
    bad = ~np.isfinite(centre["q"])
    if bad.any() and "flags" in out.columns:
        flags = out["flags"].to_numpy(dtype=np.uint32).copy()
        flags[bad] |= np.uint32(Flag.OUT_OF_RANGE)
        out["flags"] = flags
    return out
