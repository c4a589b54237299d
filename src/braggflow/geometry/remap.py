"""Remap a frame to polar (two_theta, eta), (q, eta) or grazing-incidence (q_xy, q_z) images (pyFAI)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from braggflow.errors import ConfigError
from braggflow.geometry.azimuthal import valid_mask
from braggflow.geometry.core import Geometry

__all__ = ["remap"]


def remap(
    frame: np.ndarray,
    geometry: Geometry,
    *,
    to: Literal["q", "polar", "qxy-qz"] = "q",
    mask: np.ndarray | None = None,
    npt: tuple[int, int] = (500, 500),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebin a frame onto a regular grid in reciprocal space or polar angles.

    Each pixel goes whole into one bin (no pixel splitting, no interpolation);
    bins no pixel reaches (the missing wedge of grazing incidence, detector
    gaps, beyond the detector) are NaN.

    Parameters
    ----------
    frame : (H, W) ndarray
    geometry : Geometry
    to : {"q", "polar", "qxy-qz"}
        "polar": (eta in deg, two_theta in deg); "q": (eta in deg, q in 1/Å);
        "qxy-qz": (q_z, q_xy) in 1/Å, needs an incidence angle.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    npt : (int, int)
        Bins along (radial or q_xy, azimuthal or q_z).

    Returns
    -------
    image : (npt[1], npt[0]) ndarray of float
        Mean intensity per bin (solid-angle corrected), NaN where empty.
    axis0 : (npt[1],) ndarray
        Bin centres along rows: eta (deg) or q_z (1/Å).
    axis1 : (npt[0],) ndarray
        Bin centres along columns: two_theta (deg), q (1/Å) or q_xy (1/Å).

    Raises
    ------
    ConfigError
        For an unknown target, ``npt`` below 1, or "qxy-qz" without an incidence angle.
    """
    if to not in ("q", "polar", "qxy-qz"):
        raise ConfigError(f"--to must be q, polar or qxy-qz, got {to!r}")
    if len(npt) != 2 or min(npt) < 1:
        raise ConfigError(f"npt (bins along columns and rows) must be two numbers >= 1, got {tuple(npt)}")
    frame = np.asarray(frame, dtype=np.float64)
    ai = geometry.integrator_for(frame.shape)
    bad = valid_mask(frame, geometry, mask=mask, above_horizon=False)
    data = np.where(bad, 0.0, frame)
    method = ("no", "histogram", "cython")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if to == "qxy-qz":
            if not geometry.has_incidence:
                raise ConfigError(
                    "--to qxy-qz needs an incidence angle (--incidence-angle DEG or geometry.incidence_angle_deg)"
                )
            res = ai.integrate2d_grazing_incidence(
                data, npt_ip=npt[0], npt_oop=npt[1], unit_ip="qip_A^-1", unit_oop="qoop_A^-1",
                incident_angle=float(geometry.incidence_angle_deg), tilt_angle=float(geometry.tilt_angle_deg),
                angle_unit="deg", sample_orientation=int(geometry.sample_orientation), mask=bad.astype(np.int8),
                method=method, dummy=None,
            )
        else:
            unit = "2th_deg" if to == "polar" else "q_A^-1"
            res = ai.integrate2d_ng(data, npt[0], npt[1], unit=unit, mask=bad.astype(np.int8), method=method,
                                    correctSolidAngle=True)
    image = np.array(res.intensity, dtype=np.float64)
    count = getattr(res, "count", None)
    if count is None:
        count = res._count if hasattr(res, "_count") else None
    if count is not None:
        count = np.asarray(count)
        if count.shape == image.shape:
            image[count <= 0] = np.nan
    if to == "qxy-qz":
        return image, np.asarray(res.outofplane, dtype=np.float64), np.asarray(res.inplane, dtype=np.float64)
    return image, np.asarray(res.azimuthal, dtype=np.float64), np.asarray(res.radial, dtype=np.float64)
