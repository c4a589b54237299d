"""Profile-fitted intensities: the integral over the plane of a peak profile fitted to each peak's window.

Summation over the finder's region misses the part of a peak outside it:
little for a Gaussian, a few per cent for a Moffat (r^-5 wings, like a
detector's point-spread function), a quarter for a pseudo-Voigt (r^-3).
Profile fitting (Diamond 1969; Kabsch's XDS; DIALS fits by default) measures
the whole peak, the wings beyond the window included, by the fitted model.

One model describes every kind: the rotated elliptical pseudo-Voigt-Moffat
of :mod:`braggflow.profiles.fitting` (``"pvmoffat"``),
``(1 - eta) G + eta M`` with a Gaussian core ``G`` and a Moffat wing ``M`` of
free exponent beta from 1.5 to 10 (``beta = 1.5`` is the pseudo-Voigt's Lorentzian,
the heaviest wing allowed: heavier ones, extrapolated past the window, scatter
the intensities of faint peaks; ``eta = 0`` a
Gaussian; ``eta = 1``, ``beta = 2.5`` a Moffat peak; rotation and two widths
an elongated peak).  Each peak is fitted in a square window around its
located centre (21 x 21 px, larger for regions that do not fit) with the
pixels of other peaks (grown by one pixel), masked and saturated pixels left
out, first by an axis-aligned Gaussian (the start: started from the wings'
model directly, a faint pseudo-Voigt can settle in a second minimum where
one broad Moffat takes core and wings), then by the full model.  The
background is a free parameter of the fit, started at the table's level: the
window reaches far enough from the peak (10 px) for its outer pixels to
measure it.  (A background held at a level measured elsewhere is worse: an
error of 1 count/px in it moves a pseudo-Voigt's fitted intensity by 5 %
through the wing it trades with.)

The intensity is the fitted ``I`` (the model's integral over the plane) and
its error the square root of its variance from the inverse Fisher
information (Poisson noise, counts through ``gain``).  A peak the model does
not describe keeps the summed intensity and is flagged ``SUMMED``: the fit
failed, did not converge, moved the centre by more than 2 px, its deviance
exceeds the number of degrees of freedom by more than 6 of its standard
deviations (a poor fit), or its region does not fit the largest window.

References
----------
Diamond, Acta Cryst. A25, 43 (1969); Kabsch, Acta Cryst. D66, 125 (2010)
(XDS); Winter et al., Acta Cryst. D74, 85 (2018) (DIALS); International
Tables for Crystallography F, 11.2.6.6 (summation against profile fitting).
"""

from __future__ import annotations

import numpy as np

from braggflow.profiles.fitting import fit_profiles, start_parameters
from braggflow.windows import cut_windows

__all__ = ["PROFILE_MODEL", "WINDOW_HALVES", "profile_intensities"]

#: The profile fitted to every peak (see :mod:`braggflow.profiles.fitting`).
PROFILE_MODEL = "pvmoffat"
#: Half-sizes of the fit windows, px: a peak's region must lie inside, one pixel from the edge.
WINDOW_HALVES = (10, 16, 24, 32)
_MAX_SHIFT = 2.0  # px, largest move of the centre from the located one
_DEVIANCE_SIGMAS = 6.0
_SUPERSAMPLE = 1  # pixel centres with the box-convolved precision


def _grow(region: np.ndarray) -> np.ndarray:
    """Grow (N, w, w) boolean regions by one pixel (8-connected)."""
    out = region.copy()
    out[:, 1:, :] |= region[:, :-1, :]
    out[:, :-1, :] |= region[:, 1:, :]
    grown = out.copy()
    grown[:, :, 1:] |= out[:, :, :-1]
    grown[:, :, :-1] |= out[:, :, 1:]
    return grown


def profile_intensities(frame, rows, cols, *, ids, sigma_row, sigma_col, summed, background, background_var=None,
                        mask=None, labels=None, saturated=None, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Fit the profile to each peak and return its integral and error.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    rows, cols : (N,) ndarray of float
        Located centres, px (finite).
    ids : (N,) ndarray of int
        Each peak's label in ``labels``.
    sigma_row, sigma_col : (N,) ndarray of float
        Width estimates for the start, px (NaN: 1 px).
    summed : (N,) ndarray of float
        Summed intensities, counts (the start).
    background : (N,) ndarray of float
        Background level where the fit starts, counts/px.
    background_var : (N,) ndarray of float, optional
        Variance of ``background`` (counts^2): given, the fit's background is
        tied to ``background`` by a Gaussian prior of that variance
        (``background_prior`` of :func:`~braggflow.profiles.fitting.fit_profiles`);
        None (default): fitted freely.
    mask, labels, saturated : (H, W) ndarray, optional
        Bad pixels, the finder's label image, saturated pixels.
    gain : float
        Counts (ADU) per photon.

    Returns
    -------
    result : dict of (N,) ndarray
        ``intensity``, ``intensity_err`` (counts; NaN where not described),
        ``described`` (bool: the profile describes the peak), ``eta``, ``beta``
        (the fitted wing fraction and exponent).
    """
    n = len(rows)
    out = dict(intensity=np.full(n, np.nan), intensity_err=np.full(n, np.nan), described=np.zeros(n, dtype=bool),
               eta=np.full(n, np.nan), beta=np.full(n, np.nan))
    if n == 0:
        return out
    ri = np.rint(rows).astype(np.intp)
    ci = np.rint(cols).astype(np.intp)
    todo = np.arange(n)
    for level, half in enumerate(WINDOW_HALVES):
        if todo.size == 0:
            break
        last = level == len(WINDOW_HALVES) - 1
        lab = None if labels is None else cut_windows(labels, ri[todo], ci[todo], half, 0)
        if lab is not None:
            own = lab == ids[todo][:, None, None]
            edge = np.zeros(own.shape[1:], dtype=bool)
            edge[[0, -1], :] = edge[:, [0, -1]] = True
            larger = (own & edge).any(axis=(1, 2))
            if larger.any() and not last:
                here = todo[~larger]
                lab = lab[~larger]
                todo_next = todo[larger]
            elif larger.any():
                here, lab, todo_next = todo[~larger], lab[~larger], np.zeros(0, dtype=np.intp)
            else:
                here, todo_next = todo, np.zeros(0, dtype=np.intp)
        else:
            here, todo_next = todo, np.zeros(0, dtype=np.intp)
        if here.size:
            _fit_level(frame, here, ri, ci, rows, cols, half, lab, ids, sigma_row, sigma_col, summed, background,
                       background_var, mask, saturated, gain, out)
        todo = todo_next
    return out


def _fit_level(frame, here, ri, ci, rows, cols, half, lab, ids, sigma_row, sigma_col, summed, background,
               background_var, mask, saturated, gain, out) -> None:
    """Fit the peaks ``here`` in windows of half-size ``half`` and write their results into ``out``."""
    win = cut_windows(frame, ri[here], ci[here], half, 0).astype(float)
    if mask is not None:
        bad = cut_windows(mask, ri[here], ci[here], half, True)
    else:
        offs = np.arange(-half, half + 1)
        rr = ri[here][:, None, None] + offs[None, :, None]
        cc = ci[here][:, None, None] + offs[None, None, :]
        bad = (rr < 0) | (rr >= frame.shape[0]) | (cc < 0) | (cc >= frame.shape[1])
    bad = bad | ~np.isfinite(win)
    if lab is not None:
        bad |= _grow((lab > 0) & (lab != ids[here][:, None, None])) & (lab != ids[here][:, None, None])
    if saturated is not None:
        bad |= cut_windows(saturated, ri[here], ci[here], half, False)
    win = np.where(bad, 0.0, win)
    r0 = rows[here] - ri[here] + half
    c0 = cols[here] - ci[here] + half
    sr = np.clip(np.nan_to_num(sigma_row[here], nan=1.0), 0.4, half / 2)
    sc = np.clip(np.nan_to_num(sigma_col[here], nan=1.0), 0.4, half / 2)
    b0 = np.maximum(np.nan_to_num(background[here], nan=0.0), 0.0)
    i0 = np.maximum(np.nan_to_num(summed[here], nan=0.0), 10.0 * gain)
    prior = None if background_var is None else (b0, background_var[here])
    good = ~bad
    first = fit_profiles(win, good, start_parameters("gauss", r0, c0, sr, sc, i0, b0), model="gauss", gain=gain,
                         background_prior=prior)
    g = np.where(first.ok[:, None], first.params, start_parameters("gauss", r0, c0, sr, sc, i0, b0))
    start = start_parameters(PROFILE_MODEL, g[:, 0], g[:, 1], g[:, 2], g[:, 3], g[:, 4], g[:, 5],
                             supersample=_SUPERSAMPLE, shape=0.3)
    fit = fit_profiles(win, good, start, model=PROFILE_MODEL, gain=gain, supersample=_SUPERSAMPLE,
                       background_prior=prior)
    inten, err = fit.column("intensity"), fit.error("intensity")
    dev = fit.deviance
    dof = np.maximum(fit.npix - 9, 1)
    shift = np.hypot(fit.column("row") - r0, fit.column("col") - c0)
    described = (fit.ok & fit.converged & (inten > 0) & (err > 0) & (shift < _MAX_SHIFT)
                 & (dev < dof + _DEVIANCE_SIGMAS * np.sqrt(2.0 * dof)))
    out["intensity"][here] = np.where(described, inten, np.nan)
    out["intensity_err"][here] = np.where(described, err, np.nan)
    out["described"][here] = described
    out["eta"][here] = fit.column("eta")
    out["beta"][here] = 1.0 / fit.column("t")
