"""Azimuthal integration I(q) / I(2theta) through pyFAI, and ring positions from its maxima."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd

from braggflow._stats import MAD_TO_SIGMA
from braggflow.errors import ConfigError
from braggflow.geometry.core import Geometry

__all__ = ["azimuthal_profile", "ring_positions", "valid_mask"]

_UNITS = {
    "q": ("q_A^-1", "q", "1/Å"),
    "2th": ("2th_deg", "two_theta", "deg"),
    "two_theta": ("2th_deg", "two_theta", "deg"),
}


def valid_mask(frame: np.ndarray, geometry: Geometry, *, mask: np.ndarray | None = None,
               above_horizon: bool | None = None) -> np.ndarray:
    """Pixels to leave out of an integration (True = masked).

    Parameters
    ----------
    frame : (H, W) ndarray
    geometry : Geometry
    mask : (H, W) ndarray of bool, optional
        Bad pixels (True = bad).
    above_horizon : bool, optional
        Also mask pixels below the sample horizon (exit angle < 0).  Default:
        True when the geometry has an incidence angle.

    Returns
    -------
    mask : (H, W) ndarray of bool
    """
    out = ~np.isfinite(frame)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != frame.shape:
            raise ConfigError(f"mask shape {mask.shape} differs from the frame shape {frame.shape}")
        out |= mask
    if above_horizon is None:
        above_horizon = geometry.has_incidence
    if above_horizon:
        if not geometry.has_incidence:
            raise ConfigError("above_horizon needs an incidence angle (geometry.incidence_angle_deg)")
        rows, cols = np.indices(frame.shape, dtype=np.float64)
        out |= geometry.exit_angle(rows, cols) < 0
    return out


def azimuthal_profile(
    frame: np.ndarray,
    geometry: Geometry,
    *,
    mask: np.ndarray | None = None,
    gain: float = 1.0,
    npt: int | None = None,
    unit: Literal["q", "2th"] = "q",
    radial_range: tuple[float, float] | None = None,
    azimuth_range: tuple[float, float] | None = None,
    above_horizon: bool | None = None,
    error_model: Literal["poisson", "azimuthal"] = "poisson",
    polarization_factor: float | None = None,
) -> pd.DataFrame:
    """Azimuthally averaged intensity I(q) or I(2theta) with 1-sigma errors (pyFAI).

    Solid-angle corrected, without pixel splitting (each pixel goes to one bin).

    Parameters
    ----------
    frame : (H, W) ndarray of float, counts (ADU)
    geometry : Geometry
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    gain : float
        Detector gain, ADU per photon: the Poisson variance of a pixel is
        ``gain * max(value, 0)`` ADU^2.
    npt : int, optional
        Number of bins; default: 1.5 per pixel of the detector diagonal.
    unit : {"q", "2th"}
        Radial axis: q in 1/Å or two_theta in deg.
    radial_range : (float, float), optional
        In the chosen unit.
    azimuth_range : (float, float), optional
        eta range in deg (pyFAI's chi).
    above_horizon : bool, optional
        Leave out pixels below the sample horizon (default: True with an incidence angle).
    error_model : {"poisson", "azimuthal"}
        "poisson": from the counts and the gain; "azimuthal": from the scatter of
        the pixels in each bin (includes texture along the ring).
    polarization_factor : float, optional
        pyFAI polarisation factor (-1..1); None: no correction.

    Returns
    -------
    profile : pandas.DataFrame
        Columns ``q`` (1/Å) or ``two_theta`` (deg), ``intensity`` and
        ``intensity_err`` (counts per pixel, solid-angle normalised), ``count``
        (pixels in the bin).  Empty bins are dropped.

    Raises
    ------
    ConfigError
        For an unknown unit or error model, a bad gain or ``npt``, or a mask of the wrong shape.

    References
    ----------
    Kieffer, J. et al., J. Appl. Cryst. 53, 949 (2020) (pyFAI).
    """
    if unit not in _UNITS:
        raise ConfigError(f"unit must be 'q' or '2th', got {unit!r}")
    if error_model not in ("poisson", "azimuthal"):
        raise ConfigError(f"error_model must be 'poisson' or 'azimuthal', got {error_model!r}")
    if not gain > 0:
        raise ConfigError(f"gain must be positive, got {gain}")
    if npt is not None and not npt >= 1:
        raise ConfigError(f"npt (number of radial bins) must be >= 1, got {npt}")
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim != 2:
        raise ConfigError(f"expected a 2D frame, got shape {frame.shape}")
    pyfai_unit, column, _ = _UNITS[unit]
    ai = geometry.integrator_for(frame.shape)
    bad = valid_mask(frame, geometry, mask=mask, above_horizon=above_horizon)
    data = np.where(bad, 0.0, frame)
    if npt is None:
        npt = int(max(100, 1.5 * np.hypot(*frame.shape)))
    kwargs = {}
    if error_model == "poisson":
        kwargs["variance"] = gain * np.maximum(data, 0.0)
    else:
        kwargs["error_model"] = "azimuthal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ai.integrate1d(
            data, npt, unit=pyfai_unit, mask=bad.astype(np.int8), radial_range=radial_range,
            azimuth_range=azimuth_range, method=("no", "histogram", "cython"), correctSolidAngle=True,
            polarization_factor=polarization_factor, dummy=None, **kwargs,
        )
    count = np.asarray(res.count if res.count is not None else np.ones_like(res.radial))
    if count.ndim > 1:
        count = count.sum(axis=0)
    sigma = np.asarray(res.sigma) if res.sigma is not None else np.full_like(res.intensity, np.nan)
    keep = count > 0
    return pd.DataFrame({column: np.asarray(res.radial)[keep], "intensity": np.asarray(res.intensity)[keep],
                         "intensity_err": sigma[keep], "count": count[keep]})


def _baseline(y: np.ndarray, width: int) -> np.ndarray:
    """Smooth lower envelope (rolling minimum then rolling mean), robust to peaks narrower than ``width``."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    low = minimum_filter1d(y, size=width, mode="nearest")
    return uniform_filter1d(low, size=width, mode="nearest")


def _maximum(x, y, err, i, fwhm, step):
    """Vertex of a weighted parabola through the bins within 0.35 FWHM of bin i, and its error."""
    half = max(2, int(round(0.35 * fwhm / step)))
    lo, hi = max(0, i - half), min(len(x), i + half + 1)
    # recentre on the highest bin of the window first
    i = lo + int(np.argmax(y[lo:hi]))
    lo, hi = max(0, i - half), min(len(x), i + half + 1)
    if hi - lo < 5:
        return np.nan, np.nan
    t = x[lo:hi] - x[i]
    design = np.stack([np.ones_like(t), t, t * t], axis=1) / err[lo:hi, None]
    rhs = y[lo:hi] / err[lo:hi]
    coef, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    c0, c1, c2 = coef
    if not c2 < 0:
        return np.nan, np.nan
    cov = np.linalg.pinv(design.T @ design)
    dof = hi - lo - 3
    chi2 = float(np.sum((design @ coef - rhs) ** 2) / dof) if dof > 0 else 1.0
    cov = cov * max(1.0, chi2)
    vertex = -c1 / (2 * c2)
    jac = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 ** 2)])
    return float(x[i] + vertex), float(np.sqrt(max(jac @ cov @ jac, 0.0)))


def ring_positions(
    profile: pd.DataFrame,
    *,
    min_snr: float = 5.0,
    max_width: int | None = None,
    window: float = 2.5,
    min_width_bins: float = 2.5,
    min_coverage: float = 0.2,
) -> pd.DataFrame:
    """Maxima of an azimuthal profile as ring positions with errors.

    A smooth baseline (rolling minimum, then mean, over ``max_width`` bins) is
    subtracted; maxima whose height is at least ``min_snr`` times the local
    error and whose prominence is above the noise are fitted with a Gaussian
    on a linear background over ``window`` FWHM either side (weighted least
    squares), which gives the width, height and area.  The ring position is
    the profile's maximum: the vertex of a weighted parabola through the bins
    within 0.35 FWHM of the highest one (rings of thin films are often
    asymmetric, so the maximum and the Gaussian centre, kept as ``centroid``,
    differ).  Errors are 1-sigma fit errors, scaled by the reduced chi-square
    when it exceeds 1.

    Parameters
    ----------
    profile : pandas.DataFrame
        From :func:`azimuthal_profile` (``q`` or ``two_theta``, ``intensity``,
        ``intensity_err``).
    min_snr : float
        Minimum peak height over its error.
    max_width : int, optional
        Widest expected ring in bins (baseline scale); default len/20.
    window : float
        Fit half-window in FWHM.
    min_width_bins : float
        Narrowest ring (FWHM) in bins; narrower maxima are spikes.
    min_coverage : float
        Bins with fewer pixels than this fraction of the median bin are left out.

    Returns
    -------
    rings : pandas.DataFrame
        One row per ring, in increasing position: ``q`` or ``two_theta`` (the
        profile's axis, the maximum) and its ``*_err``, ``centroid`` (Gaussian
        centre), ``fwhm``, ``height``, ``intensity``
        (area above the baseline, axis units x counts), ``intensity_err``, ``snr``.
    """
    from scipy.optimize import curve_fit
    from scipy.signal import find_peaks, peak_widths

    column = "q" if "q" in profile.columns else "two_theta"
    if "count" in profile.columns and len(profile):
        # bins that see only a sliver of the detector (its edges, the beam stop) give no rings
        count = profile["count"].to_numpy(dtype=np.float64)
        profile = profile[count >= min_coverage * np.median(count)]
    x = profile[column].to_numpy(dtype=np.float64)
    y = profile["intensity"].to_numpy(dtype=np.float64)
    err = profile["intensity_err"].to_numpy(dtype=np.float64)
    empty = pd.DataFrame({column: [], f"{column}_err": [], "centroid": [], "fwhm": [], "height": [], "intensity": [],
                          "intensity_err": [], "snr": []})
    if len(x) < 7:
        return empty
    err = np.where(np.isfinite(err) & (err > 0), err, np.nanmedian(err[err > 0]) if np.any(err > 0) else 1.0)
    if max_width is None:
        max_width = max(7, len(x) // 20)
    base = _baseline(y, max_width)
    net = y - base
    noise = np.maximum(err, MAD_TO_SIGMA * np.median(np.abs(np.diff(net))) / np.sqrt(2))
    idx, props = find_peaks(net / noise, height=min_snr, prominence=min_snr)
    if len(idx) == 0:
        return empty
    with warnings.catch_warnings():
        # a peak found in net / noise can have no prominence in net (a noisier stretch beside it): scipy warns
        # and gives it width 0, which the loop below raises to 1.5 bins
        warnings.filterwarnings("ignore", message="some peaks have a (prominence|width) of 0")
        widths = peak_widths(net, idx, rel_height=0.5)[0]
    step = np.median(np.diff(x))
    rows = []

    def model(t, a, mu, s, b0, b1):
        return a * np.exp(-0.5 * ((t - mu) / s) ** 2) + b0 + b1 * (t - mu)

    for i, w in zip(idx, widths):
        w = max(float(w), 1.5)
        half = int(np.ceil(window * w))
        lo, hi = max(0, i - half), min(len(x), i + half + 1)
        if hi - lo < 6 or lo == 0 or hi == len(x):
            continue  # too few bins, or cut by the end of the profile
        xs, ys, es = x[lo:hi], y[lo:hi], err[lo:hi]
        p0 = [net[i], x[i], w * step / 2.3548, base[i], 0.0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, pcov = curve_fit(model, xs, ys, p0=p0, sigma=es, absolute_sigma=True, maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        a, mu, s = popt[0], popt[1], abs(popt[2])
        if not (a > 0 and xs[0] < mu < xs[-1] and np.all(np.isfinite(pcov))):
            continue
        if 2.3548 * s < min_width_bins * step:
            continue  # narrower than the binning: a spike, not a ring
        chi2 = np.sum(((ys - model(xs, *popt)) / es) ** 2) / max(1, len(xs) - 5)
        cov = pcov * max(1.0, chi2)
        area = a * s * np.sqrt(2 * np.pi)
        # d(area) = sqrt(2 pi) (s da + a ds)
        jac = np.sqrt(2 * np.pi) * np.array([s, 0, a, 0, 0])
        area_err = float(np.sqrt(max(jac @ cov @ jac, 0.0)))
        top, top_err = _maximum(x, y, err, i, 2.3548 * s, step)
        if not np.isfinite(top) or not (xs[0] < top < xs[-1]):
            top, top_err = mu, float(np.sqrt(cov[1, 1]))
        rows.append({column: top, f"{column}_err": top_err, "centroid": mu, "fwhm": 2.3548 * s, "height": a,
                     "intensity": area, "intensity_err": area_err, "snr": a / noise[i]})
    if not rows:
        return empty
    out = pd.DataFrame(rows).sort_values(column).reset_index(drop=True)
    # two maxima fitted onto the same ring: keep the stronger
    keep = np.ones(len(out), dtype=bool)
    for k in range(1, len(out)):
        if abs(out[column][k] - out[column][k - 1]) < 0.5 * min(out["fwhm"][k], out["fwhm"][k - 1]):
            weaker = k if out["height"][k] < out["height"][k - 1] else k - 1
            keep[weaker] = False
    return out[keep].reset_index(drop=True)
