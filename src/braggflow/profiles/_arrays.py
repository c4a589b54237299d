"""Small-array helpers of the fitting stages, cheaper than their NumPy counterparts for the arrays of one frame."""

from __future__ import annotations

import numpy as np

__all__ = ["nan_to_num", "starting_widths"]


def nan_to_num(x, nan: float = 0.0) -> np.ndarray:
    """``np.nan_to_num(x, nan=nan)``: a copy of ``x`` with NaN replaced by ``nan`` and +-inf by the largest finite
    numbers of its dtype, the same values, at a few microseconds rather than ~15 (one finiteness test where every
    value is finite).

    Parameters
    ----------
    x : array_like
        Values (floating arrays take the short path; anything else goes to ``np.nan_to_num``).
    nan : float
        The value NaN becomes.

    Returns
    -------
    out : ndarray
        A new array of ``x``'s dtype and shape (a scalar for a 0-d ``x``, as NumPy returns it).
    """
    out = np.array(x, copy=True)
    if out.ndim == 0 or out.dtype.kind != "f":
        return np.nan_to_num(out, copy=False, nan=nan)
    finite = np.isfinite(out)
    if not finite.all():
        missing = np.isnan(out)
        infinite = ~(finite | missing)
        if infinite.any():  # before the NaN are replaced: a NaN made +-inf stays so
            info = np.finfo(out.dtype)
            np.copyto(out, np.where(out > 0, info.max, info.min), where=infinite)
        np.copyto(out, nan, where=missing)
    return out


def starting_widths(sigma, low: float, high: float) -> np.ndarray:
    """Starting Gaussian widths of a fit: ``sigma`` with NaN made 1 px, held within [``low``, ``high``] px.

    ``np.clip(np.nan_to_num(sigma, nan=1.0), low, high)``'s values without its per-call overhead.

    Parameters
    ----------
    sigma : (N,) array_like of float
        Widths from moments or an earlier fit, px (NaN: unknown).
    low, high : float
        Bounds, px.

    Returns
    -------
    widths : (N,) ndarray of float
    """
    return np.minimum(np.maximum(nan_to_num(sigma, nan=1.0), low), high)
