"""Peak intensities: background-subtracted sums with Poisson errors.

For each peak a square window around its centre is cut from the frame (all
peaks at once, vectorised).  Signal pixels are the peak's own region from the
finder grown by one pixel (or, with ``radius``, a disk around the located
centre); background pixels are the window's pixels that belong to no peak
(nor its one-pixel rim) and are not masked.  The background level is their
median; its variance comes from their scatter.

    I = sum_signal (v - b),
    var(I) = sum_signal [gain * max(v - b, 0) + s_b^2] + n^2 * (pi / 2) * s_b^2 / n_b

where ``s_b^2`` is the background pixels' variance (Poisson plus read noise),
``n`` the signal pixel count, ``n_b`` the background pixel count and pi / 2 the
variance ratio of a median to a mean.
"""

from __future__ import annotations

import warnings

import numpy as np

from braggflow._stats import nanmedian_last
from braggflow.errors import BraggflowError
from braggflow.schema import Flag, conform, validate_peak_table
from braggflow.windows import cut_windows

__all__ = ["integrate", "windows"]

#: Kept under its old name; the function is :func:`braggflow.windows.cut_windows`.
windows = cut_windows


def _grow(region: np.ndarray) -> np.ndarray:
    """Grow (N, w, w) boolean regions by one pixel (8-connected)."""
    out = region.copy()
    out[:, 1:, :] |= region[:, :-1, :]
    out[:, :-1, :] |= region[:, 1:, :]
    grown = out.copy()
    grown[:, :, 1:] |= out[:, :, :-1]
    grown[:, :, :-1] |= out[:, :, 1:]
    return grown


#: Half-size limit (px) of the window grown for regions larger than the default one.
MAX_REGION_HALF = 64


def _integrate_windows(frame, d_row, d_col, ri, ci, ids, core, background_width, *, mask, labels, gain, radius,
                       saturated) -> dict[str, np.ndarray]:
    """Integrate peaks in windows of half-size ``core + background_width`` (see :func:`integrate`).

    ``ri``, ``ci`` are the window centres, ``d_row``, ``d_col`` the centres'
    offsets from them, ``ids`` the peaks' labels.  ``truncated`` marks peaks
    whose own region reaches beyond the window's core, so that part of it
    would be lost.
    """
    n = len(ri)
    half = core + int(np.ceil(background_width))
    win = cut_windows(frame, ri, ci, half, 0).astype(np.float64)  # cast the windows, not the frame
    offs = np.arange(-half, half + 1)
    if mask is not None:
        bad = cut_windows(mask, ri, ci, half, True)
    else:  # only pixels outside the frame are bad
        rr = ri[:, None, None] + offs[None, :, None]
        cc = ci[:, None, None] + offs[None, None, :]
        bad = (rr < 0) | (rr >= frame.shape[0]) | (cc < 0) | (cc >= frame.shape[1])
    truncated = np.zeros(n, dtype=bool)
    overlap = np.zeros(n, dtype=bool)
    if radius is not None:
        dr = offs[None, :, None] - d_row[:, None, None]
        dc = offs[None, None, :] - d_col[:, None, None]
        signal = (dr**2 + dc**2) <= radius**2
        occupied = signal
        if labels is not None:  # another peak's region inside the disk is not this peak's signal
            lab = cut_windows(labels, ri, ci, half, 0)
            other = signal & (lab > 0) & (lab != ids[:, None, None])
            overlap = other.any(axis=(1, 2))
            signal = signal & ~other
            occupied = (lab > 0) | occupied
    else:
        lab = cut_windows(labels, ri, ci, half, 0)
        own = lab == ids[:, None, None]
        signal = _grow(own) & ((lab == 0) | own)
        occupied = _grow(lab > 0)
        outside_core = np.abs(offs) > core
        truncated = (own & (outside_core[None, :, None] | outside_core[None, None, :])).any(axis=(1, 2))
    background_px = ~occupied & ~bad
    signal &= ~bad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bgvals = np.where(background_px, win, np.nan).reshape(n, -1)
        b = nanmedian_last(bgvals)
        s2 = np.nanvar(bgvals, axis=1, ddof=1)
    n_b = background_px.reshape(n, -1).sum(axis=1)
    b = np.where(n_b > 0, b, 0.0)
    s2 = np.where(n_b > 1, s2, np.nan)
    npix = signal.reshape(n, -1).sum(axis=1)
    excess = np.where(signal, win - b[:, None, None], 0.0)
    intensity = excess.reshape(n, -1).sum(axis=1)
    var_pix = (gain * np.clip(excess, 0, None)).reshape(n, -1).sum(axis=1) + npix * np.nan_to_num(s2)
    var_bg = np.where(n_b > 0, npix**2 * (np.pi / 2) * np.nan_to_num(s2) / np.maximum(n_b, 1), 0.0)
    err = np.sqrt(var_pix + var_bg)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(err > 0, intensity / err, np.nan)
    peak_value = np.where(signal, win, -np.inf).reshape(n, -1).max(axis=1)
    peak_value = np.where(npix > 0, peak_value, np.nan)
    sat = np.zeros(n, dtype=bool)
    if saturated is not None:
        sat = (cut_windows(saturated, ri, ci, half, False) & signal).reshape(n, -1).any(axis=1)
    return dict(intensity=intensity, err=err, b=b, snr=snr, npix=npix, n_b=n_b, peak_value=peak_value, sat=sat,
                truncated=truncated, overlap=overlap)


def integrate(
    frame: np.ndarray,
    table,
    *,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    gain: float = 1.0,
    radius: float | None = None,
    background_width: float = 3.0,
    saturated: np.ndarray | None = None,
):
    """Integrate the peaks of one frame.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts (ADU).
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` (px).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel (excluded from signal and background).
    labels : (H, W) ndarray of int, optional
        Finder label image: label k is the region of table row k - 1.  Required
        unless ``radius`` is given.
    gain : float
        ADU per photon (Poisson variance of v ADU is gain x v).
    radius : float, optional
        Integrate a disk of this radius (px) around (row, col) instead of the
        finder's region; with ``labels``, the pixels of other peaks' regions
        are left out of the disk (and the peak flagged ``OVERLAPPING``), so
        a close neighbour is not summed in.  Without it, windows reach 5 px
        beyond the centre and grow (10, 20, ... up to
        :data:`MAX_REGION_HALF` px) for the peaks whose region does not fit,
        so a streak is integrated whole.
    background_width : float
        Width of the background ring around the signal pixels, px.
    saturated : (H, W) ndarray of bool, optional
        Pixels at or above the detector's saturation level; peaks containing
        one are flagged ``SATURATED``.

    Returns
    -------
    table : pandas.DataFrame
        Copy of ``table`` with ``intensity``, ``intensity_err`` (counts),
        ``background`` (counts/px), ``peak_value`` (counts), ``snr``, ``npix``,
        and flags ``LOW_SNR`` (snr < 3), ``BAD_BACKGROUND`` (< 5 background
        pixels), ``SATURATED``, ``OVERLAPPING`` (with ``radius``: another
        peak's pixels were left out of the disk).

    Raises
    ------
    BraggflowError
        If neither ``labels`` nor ``radius`` is given, or shapes disagree.
    """
    validate_peak_table(table, required=("row", "col"))
    table = conform(table)
    if len(table) == 0:
        return table
    if labels is None and radius is None:
        raise BraggflowError("integrate needs the finder's labels or an integration radius")
    for name, arr in (("mask", mask), ("labels", labels), ("saturated", saturated)):
        if arr is not None and arr.shape != frame.shape:
            raise BraggflowError(f"{name} has shape {arr.shape}, expected the frame shape {frame.shape}")
    n = len(table)
    rows = table["row"].to_numpy()
    cols = table["col"].to_numpy()
    ok = np.isfinite(rows) & np.isfinite(cols)
    ri = np.where(ok, np.rint(np.nan_to_num(rows)), 0).astype(np.intp)
    ci = np.where(ok, np.rint(np.nan_to_num(cols)), 0).astype(np.intp)
    ids = np.arange(1, n + 1)
    core = 5 if radius is None else int(np.ceil(radius))
    res = _integrate_windows(frame, rows - ri, cols - ci, ri, ci, ids, core, background_width, mask=mask,
                             labels=labels, gain=gain, radius=radius, saturated=saturated)
    # regions larger than the window (streaks, large spots): again with a window that holds them
    todo = np.flatnonzero(res.pop("truncated"))
    while todo.size and core < MAX_REGION_HALF:
        core = min(2 * core, MAX_REGION_HALF)
        again = _integrate_windows(frame, (rows - ri)[todo], (cols - ci)[todo], ri[todo], ci[todo], ids[todo], core,
                                   background_width, mask=mask, labels=labels, gain=gain, radius=radius,
                                   saturated=saturated)
        truncated = again.pop("truncated")
        for name, values in again.items():
            res[name][todo] = values
        todo = todo[truncated]
    intensity, err, b, snr, npix, n_b = (res[k] for k in ("intensity", "err", "b", "snr", "npix", "n_b"))
    peak_value, sat, overlap = res["peak_value"], res["sat"], res["overlap"]

    flags = table["flags"].to_numpy().astype(np.uint32)
    flags |= np.where(~(snr >= 3), np.uint32(Flag.LOW_SNR), np.uint32(0))
    flags |= np.where(n_b < 5, np.uint32(Flag.BAD_BACKGROUND), np.uint32(0))
    flags |= np.where(sat, np.uint32(Flag.SATURATED), np.uint32(0))
    flags |= np.where(overlap, np.uint32(Flag.OVERLAPPING), np.uint32(0))
    valid = ok & (npix > 0)
    table["intensity"] = np.where(valid, intensity, np.nan)
    table["intensity_err"] = np.where(valid, err, np.nan)
    table["background"] = np.where(n_b > 0, b, np.nan)
    table["snr"] = np.where(valid, snr, np.nan)
    table["peak_value"] = peak_value
    table["npix"] = npix.astype(np.int64)
    table["flags"] = flags
    return table
