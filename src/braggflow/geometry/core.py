"""The detector geometry: a frozen wrapper around a pyFAI integrator.

All geometry is computed by pyFAI.  This module is the ONE place where
braggflow's user units (px with pixel centres on integers, mm, deg, Å, 1/Å)
meet pyFAI's (metres, radians, 1/nm):

* pixel coordinates: pyFAI's ``calc_pos_zyx(d1=row, d2=col)`` places the centre
  of pixel index ``r`` at ``(r + 0.5) * pixel_size`` from the detector corner,
  which is exactly braggflow's convention (pixel centres on integers), so
  ``row``/``col`` are passed unchanged and a beam centre at ``row`` gives
  ``poni1 = (row + 0.5) * pixel1`` (see :meth:`Geometry.from_config`);
* lengths: mm / Å  <->  m (``_MM``, ``_ANGSTROM``);
* angles: deg <-> rad;  q: 1/nm (pyFAI) -> 1/Å (``/ 10``).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.constants

from braggflow.errors import ConfigError, InputFileError
from braggflow.geometry.config import GeometryConfig

__all__ = ["Geometry", "HC_KEV_ANGSTROM"]

HC_KEV_ANGSTROM = scipy.constants.h * scipy.constants.c / scipy.constants.e / scipy.constants.angstrom / 1e3
"""h c in keV Å: wavelength [Å] = HC_KEV_ANGSTROM / energy [keV]."""

_MM = 1e-3
_ANGSTROM = 1e-10
_NM_TO_ANGSTROM_INV = 0.1  # q [1/Å] = q [1/nm] / 10


@dataclass(frozen=True)
class Geometry:
    """Detector geometry in pyFAI's parameters, plus grazing-incidence angles.

    Build it with :meth:`from_config`, :meth:`from_poni` or :meth:`from_dict`;
    do not fill the fields by hand unless you think in pyFAI's units.

    Attributes
    ----------
    poni : dict
        pyFAI's PONI configuration (``dist``, ``poni1``, ``poni2`` in m,
        ``rot1..3`` in rad, ``wavelength`` in m, ``detector``,
        ``detector_config``), as returned by pyFAI's ``get_config()``.
    incidence_angle_deg : float or None
        Grazing-incidence angle, deg; None for transmission geometry.
    tilt_angle_deg : float
        Sample tilt about the beam, deg (grazing incidence).
    sample_orientation : int
        pyFAI's EXIF-style code (1-8) for where the sample surface normal points
        on the frame; 4 (default): towards row 0.
    distance_err_mm : float
        1-sigma uncertainty of the sample-detector distance, mm.
    """

    poni: dict = field(repr=False)
    incidence_angle_deg: float | None = None
    tilt_angle_deg: float = 0.0
    sample_orientation: int = 4
    distance_err_mm: float = 0.0

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_config(cls, config: GeometryConfig | dict) -> Geometry:
        """Build the geometry from the config's ``geometry:`` section.

        Parameters
        ----------
        config : GeometryConfig or dict
            Distance along the beam (mm), beam centre (row, col in px, pixel
            centres on integers), pixel size (mm), wavelength (Å) or energy
            (keV), pyFAI tilts rot1..3 (deg), incidence and tilt angles (deg).
            When ``poni`` is set, the PONI file is read instead and only the
            grazing-incidence values and ``distance_err_mm`` are taken from
            the config.

        Returns
        -------
        geometry : Geometry

        Raises
        ------
        ConfigError
            Naming the first required value that is missing or invalid.
        """
        if isinstance(config, dict):
            config = GeometryConfig(**config)
        extra = dict(
            incidence_angle_deg=config.incidence_angle_deg,
            tilt_angle_deg=config.tilt_angle_deg,
            sample_orientation=config.sample_orientation,
            distance_err_mm=config.distance_err_mm,
        )
        if config.poni:
            geo = cls.from_poni(config.poni)
            return cls(poni=geo.poni, **extra)
        for name in ("distance_mm", "beam_center_row", "beam_center_col", "pixel_size_mm"):
            if getattr(config, name) is None:
                raise ConfigError(f"geometry.{name} is required (or give geometry.poni, a pyFAI PONI file)")
        if config.wavelength_A is None and config.energy_keV is None:
            raise ConfigError("geometry.wavelength_A or geometry.energy_keV is required")
        if config.wavelength_A is not None and config.energy_keV is not None:
            if not math.isclose(config.wavelength_A, HC_KEV_ANGSTROM / config.energy_keV, rel_tol=1e-4):
                raise ConfigError(
                    f"geometry.wavelength_A={config.wavelength_A} and geometry.energy_keV={config.energy_keV} disagree"
                )
        wavelength_A = config.wavelength_A if config.wavelength_A is not None else HC_KEV_ANGSTROM / config.energy_keV
        for name, value in (("distance_mm", config.distance_mm), ("pixel_size_mm", config.pixel_size_mm),
                            ("wavelength_A", wavelength_A)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"geometry.{name} must be a positive number, got {value}")
        pixel = config.pixel_size_mm * _MM
        rots = [math.radians(config.rot1_deg), math.radians(config.rot2_deg), math.radians(config.rot3_deg)]
        poni = _poni_from_beam_center(
            distance=config.distance_mm * _MM,
            row=config.beam_center_row,
            col=config.beam_center_col,
            pixel=pixel,
            rots=rots,
            wavelength=wavelength_A * _ANGSTROM,
        )
        return cls(poni=poni, **extra)

    @classmethod
    def from_poni(cls, path: str | Path, **kwargs: Any) -> Geometry:
        """Read a pyFAI PONI file.

        Parameters
        ----------
        path : str or Path
            PONI file written by pyFAI-calib2 (or any pyFAI version).
        **kwargs
            Grazing-incidence fields (``incidence_angle_deg``, ...).

        Returns
        -------
        geometry : Geometry

        Raises
        ------
        InputFileError
            If the file is missing or is not a readable PONI file with a wavelength.
        """
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"{path}: PONI file not found")
        try:
            ai = AzimuthalIntegrator.sload(str(path))
        except Exception as exc:  # pyFAI raises many kinds of errors for bad files
            raise InputFileError(f"{path}: not a readable pyFAI PONI file ({exc})") from None
        config = ai.get_config()
        if not config.get("wavelength"):
            raise InputFileError(f"{path}: PONI file has no wavelength")
        if not config.get("dist"):
            raise InputFileError(f"{path}: PONI file has no distance")
        return cls(poni=_jsonable(config), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        """Rebuild a geometry stored with :meth:`to_dict`.

        Parameters
        ----------
        data : dict

        Returns
        -------
        geometry : Geometry

        Raises
        ------
        ConfigError
            If ``data`` lacks the PONI part.
        """
        if isinstance(data, str):
            data = json.loads(data)
        if "poni" not in data or not isinstance(data["poni"], dict):
            raise ConfigError("stored geometry lacks its 'poni' part")
        keys = ("incidence_angle_deg", "tilt_angle_deg", "sample_orientation", "distance_err_mm")
        return cls(poni=dict(data["poni"]), **{k: data[k] for k in keys if k in data})

    def to_dict(self) -> dict:
        """The geometry as a JSON-serialisable dict (see :meth:`from_dict`).

        Returns
        -------
        data : dict
        """
        return {
            "poni": _jsonable(self.poni),
            "incidence_angle_deg": self.incidence_angle_deg,
            "tilt_angle_deg": self.tilt_angle_deg,
            "sample_orientation": self.sample_orientation,
            "distance_err_mm": self.distance_err_mm,
        }

    def replace(self, **changes: Any) -> Geometry:
        """A copy with fields changed (``distance_mm=...`` rescales the distance along the beam).

        Returns
        -------
        geometry : Geometry
        """
        poni = dict(self.poni)
        if "distance_mm" in changes:
            new = changes.pop("distance_mm")
            poni["dist"] = poni["dist"] * new / self.distance_mm
        fields = self.to_dict()
        fields.pop("poni")
        fields.update(changes)
        return Geometry(poni=poni, **fields)

    # ------------------------------------------------------------------ properties
    @functools.cached_property
    def integrator(self):
        """The pyFAI ``FiberIntegrator`` (an ``AzimuthalIntegrator``) for this geometry.

        Shared by every call on this geometry: do not change its parameters.
        """
        from pyFAI.integrator.fiber import FiberIntegrator

        return FiberIntegrator.sload(self.poni)

    def integrator_for(self, shape: tuple[int, int]):
        """An integrator whose detector has the frame's shape (pyFAI needs it to integrate).

        Parameters
        ----------
        shape : (int, int)
            Frame shape (rows, cols).

        Returns
        -------
        integrator : pyFAI FiberIntegrator
        """
        return _integrator_for_shape(json.dumps(_jsonable(self.poni), sort_keys=True), tuple(int(s) for s in shape))

    @property
    def wavelength_A(self) -> float:
        """X-ray wavelength, Å."""
        return float(self.poni["wavelength"]) / _ANGSTROM

    @property
    def energy_keV(self) -> float:
        """X-ray energy, keV."""
        return HC_KEV_ANGSTROM / self.wavelength_A

    @property
    def pixel_size_mm(self) -> tuple[float, float]:
        """Pixel size (along rows, along columns), mm."""
        det = self.integrator.detector
        return det.pixel1 / _MM, det.pixel2 / _MM

    @property
    def beam_center(self) -> tuple[float, float]:
        """Where the direct beam hits the detector: (row, col), px."""
        rows, cols = self.angles_to_pixel(np.array([0.0]), np.array([0.0]))
        return float(rows[0]), float(cols[0])

    @property
    def distance_mm(self) -> float:
        """Sample-detector distance along the direct beam, mm."""
        p0, e1, e2 = self._plane()
        d1, d2 = self.beam_center
        point = p0 + d1 * e1 + d2 * e2
        return float(np.linalg.norm(point)) / _MM

    @property
    def has_incidence(self) -> bool:
        """True when an incidence angle is set (grazing incidence)."""
        return self.incidence_angle_deg is not None

    # ------------------------------------------------------------------ conversions
    def _lab(self, row, col):
        """Lab positions (x, y, z) in m of detector points (pixel centres on integers)."""
        row = np.asarray(row, dtype=np.float64)
        col = np.asarray(col, dtype=np.float64)
        z, y, x = self.integrator.calc_pos_zyx(d1=row.ravel(), d2=col.ravel())
        shape = np.broadcast(row, col).shape
        return (np.asarray(x).reshape(shape), np.asarray(y).reshape(shape), np.asarray(z).reshape(shape))

    def _plane(self):
        """Detector plane as lab point p0 (pixel 0, 0) and steps e1 (per row), e2 (per col), m."""
        x, y, z = self._lab(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
        pts = np.stack([x, y, z], axis=1)
        return pts[0], pts[1] - pts[0], pts[2] - pts[0]

    def pixel_to_angles(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """Scattering and azimuthal angle of detector points.

        Parameters
        ----------
        row, col : array_like of float, px
            Positions, pixel centres on integers.

        Returns
        -------
        two_theta : ndarray, deg
        eta : ndarray, deg
            pyFAI's chi: ``atan2(y, x)`` with y along increasing rows, x along
            increasing columns (so -90 deg points to row 0 from the beam).
        """
        x, y, z = self._lab(row, col)
        two_theta = np.degrees(np.arctan2(np.hypot(x, y), z))
        eta = np.degrees(np.arctan2(y, x))
        return two_theta, eta

    def angles_to_pixel(self, two_theta, eta) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`pixel_to_angles`: where a ray (two_theta, eta) hits the detector.

        Parameters
        ----------
        two_theta, eta : array_like of float, deg

        Returns
        -------
        row, col : ndarray, px
            NaN where the ray misses the detector plane (goes away from it).
        """
        tth = np.radians(np.asarray(two_theta, dtype=np.float64))
        chi = np.radians(np.asarray(eta, dtype=np.float64))
        tth, chi = np.broadcast_arrays(tth, chi)
        u = np.stack([np.sin(tth) * np.cos(chi), np.sin(tth) * np.sin(chi), np.cos(tth)], axis=-1)
        p0, e1, e2 = self._plane()
        # solve t u - d1 e1 - d2 e2 = p0 for (t, d1, d2), one 3x3 system per ray
        mats = np.stack([u, np.broadcast_to(-e1, u.shape), np.broadcast_to(-e2, u.shape)], axis=-1)
        rhs = np.broadcast_to(p0, u.shape)[..., None]
        with np.errstate(all="ignore"):
            sol = np.linalg.solve(mats, rhs)[..., 0]
        t, d1, d2 = sol[..., 0], sol[..., 1], sol[..., 2]
        bad = ~(t > 0)
        d1 = np.where(bad, np.nan, d1)
        d2 = np.where(bad, np.nan, d2)
        return d1, d2

    def two_theta_to_q(self, two_theta) -> np.ndarray:
        """q = 4 pi sin(theta) / lambda.

        Parameters
        ----------
        two_theta : array_like, deg

        Returns
        -------
        q : ndarray, 1/Å
        """
        return 4 * np.pi * np.sin(np.radians(np.asarray(two_theta, dtype=np.float64)) / 2) / self.wavelength_A

    def q_to_two_theta(self, q) -> np.ndarray:
        """Inverse of :meth:`two_theta_to_q`.

        Parameters
        ----------
        q : array_like, 1/Å

        Returns
        -------
        two_theta : ndarray, deg (NaN beyond 4 pi / lambda)
        """
        s = np.asarray(q, dtype=np.float64) * self.wavelength_A / (4 * np.pi)
        with np.errstate(invalid="ignore"):
            return np.degrees(2 * np.arcsin(np.where(np.abs(s) <= 1, s, np.nan)))

    def _fiber_unit(self, name: str):
        import pyFAI.units as units

        return units.get_unit_fiber(
            name,
            incident_angle=float(self.incidence_angle_deg or 0.0),
            tilt_angle=float(self.tilt_angle_deg),
            sample_orientation=int(self.sample_orientation),
            angle_unit="deg",
        )

    def pixel_to_qxy_qz(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """In-plane and out-of-plane momentum transfer of detector points (grazing incidence).

        Computed with pyFAI's grazing-incidence units ``qip_A^-1`` / ``qoop_A^-1``
        for this geometry's incidence angle, tilt angle and sample orientation
        (no refraction correction).

        Parameters
        ----------
        row, col : array_like of float, px

        Returns
        -------
        q_xy : ndarray, 1/Å
            Signed in-plane component.
        q_z : ndarray, 1/Å
            Out-of-plane component, positive above the sample horizon.

        Raises
        ------
        ConfigError
            If the geometry has no incidence angle.
        """
        if not self.has_incidence:
            raise ConfigError(
                "q_xy/q_z need an incidence angle: set geometry.incidence_angle_deg (or --incidence-angle)"
            )
        x, y, z = self._lab(row, col)
        wl = float(self.poni["wavelength"])
        out = []
        for name in ("qip_A^-1", "qoop_A^-1"):
            unit = self._fiber_unit(name)
            cfg = unit.get_config_shared()
            values = unit.equation(x.ravel(), y.ravel(), z.ravel(), wl, **cfg) * unit.scale
            out.append(np.asarray(values, dtype=np.float64).reshape(x.shape))
        return out[0], out[1]

    def exit_angle(self, row, col) -> np.ndarray:
        """Vertical exit angle above the sample horizon, deg (pyFAI ``exit_angle_vert_deg``).

        Parameters
        ----------
        row, col : array_like of float, px

        Returns
        -------
        alpha_f : ndarray, deg
        """
        x, y, z = self._lab(row, col)
        unit = self._fiber_unit("exit_angle_vert_deg")
        cfg = unit.get_config_shared()
        values = unit.equation(x.ravel(), y.ravel(), z.ravel(), float(self.poni["wavelength"]), **cfg) * unit.scale
        return np.asarray(values, dtype=np.float64).reshape(x.shape)


@functools.lru_cache(maxsize=8)
def _integrator_for_shape(poni_json: str, shape: tuple[int, int]):
    from pyFAI.integrator.fiber import FiberIntegrator

    config = json.loads(poni_json)
    det_config = dict(config.get("detector_config") or {})
    if "max_shape" in det_config or config.get("detector", "Detector") == "Detector":
        det_config["max_shape"] = list(shape)
        config["detector_config"] = det_config
    ai = FiberIntegrator.sload(config)
    if tuple(ai.detector.shape or ()) != shape:
        raise InputFileError(
            f"frame shape {shape} does not match the detector shape {tuple(ai.detector.shape)} of the geometry"
        )
    return ai


def _jsonable(obj):
    """Convert numpy scalars / tuples / enums in a pyFAI config into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "value") and not isinstance(obj, (int, float, str, bool)):  # enum.Enum (detector orientation)
        return _jsonable(obj.value)
    return obj


def _poni_from_beam_center(*, distance, row, col, pixel, rots, wavelength) -> dict:
    """pyFAI PONI parameters that put the direct beam on (row, col) at ``distance`` along the beam (m)."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = Detector(pixel1=pixel, pixel2=pixel)
    # pixel centre index r sits at (r + 0.5) * pixel from the detector corner
    poni1, poni2 = (row + 0.5) * pixel, (col + 0.5) * pixel
    ai = AzimuthalIntegrator(dist=distance, poni1=poni1, poni2=poni2, rot1=rots[0], rot2=rots[1], rot3=rots[2],
                             detector=det, wavelength=wavelength)
    if any(rots):
        # the direct beam misses the PONI when the detector is tilted; move the detector in its
        # plane and along its normal (both exact: beam spot and path length are linear in them)
        geo = Geometry(poni=_jsonable(ai.get_config()))
        scale = distance / (geo.distance_mm * _MM)
        ai.dist = ai.dist * scale
        geo = Geometry(poni=_jsonable(ai.get_config()))
        r_hit, c_hit = geo.beam_center
        ai.poni1 = ai.poni1 + (row - r_hit) * pixel
        ai.poni2 = ai.poni2 + (col - c_hit) * pixel
    return _jsonable(ai.get_config())
