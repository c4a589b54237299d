"""Detector geometry from the input's own metadata: NeXus/Eiger master files and miniCBF headers.

When no PONI file and no ``geometry.*`` keys are given, the pipeline takes
the geometry from what the detector wrote beside the frames:

- HDF5/NeXus (Eiger master files, NXmx): the ``NXdetector`` group
  (``/entry/instrument/detector``: ``detector_distance`` or ``distance``,
  ``x_pixel_size``, ``y_pixel_size``, ``beam_center_x``, ``beam_center_y``)
  and the wavelength of ``NXbeam`` (``incident_wavelength``, or
  ``incident_energy``) or ``NXmonochromator`` (``wavelength``, ``energy``),
  each read with its ``units`` attribute;
- CBF files with a miniCBF header (PILATUS/EIGER ``_array_data.header_contents``:
  ``# Detector_distance``, ``# Beam_xy``, ``# Wavelength``, ``# Pixel_size``).

Beam centres in these files are in pixels counted from the detector's corner
(the convention of NeXus NXmx, of the miniCBF header, of DIALS' dxtbx and of
pyFAI), so the centre of pixel ``i`` is at ``i + 0.5``; braggflow puts pixel
centres on integers, so ``beam_center_col = beam_center_x - 0.5`` and
``beam_center_row = beam_center_y - 0.5``.

References
----------
NXmx application definition (NeXus International Advisory Committee),
https://manual.nexusformat.org/classes/applications/NXmx.html ;
DECTRIS miniCBF header (PILATUS/EIGER "Detector_distance", "Beam_xy", "Pixel_size").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braggflow.errors import InputFileError

__all__ = ["GeometryMetadata", "read_geometry_metadata", "geometry_from_hdf5", "geometry_from_cbf_header",
           "length_in_mm"]

#: Metres per unit of length, for the ``units`` strings detectors write.
_LENGTH_M = {"m": 1.0, "metre": 1.0, "meter": 1.0, "cm": 1e-2, "mm": 1e-3, "millimetre": 1e-3, "millimeter": 1e-3,
             "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "micrometre": 1e-6, "micrometer": 1e-6,
             "nm": 1e-9, "angstrom": 1e-10, "a": 1e-10, "å": 1e-10, "ang": 1e-10}
_ENERGY_KEV = {"ev": 1e-3, "kev": 1.0, "mev": 1e3, "j": 1.0 / 1.602176634e-16}
_HC_KEV_ANGSTROM = 12.398419843320026


@dataclass(frozen=True)
class GeometryMetadata:
    """Geometry read from an input file's metadata, in the units of the ``geometry:`` config section.

    Attributes
    ----------
    values : dict
        ``distance_mm``, ``beam_center_row``, ``beam_center_col`` (px, pixel
        centres on integers), ``pixel_size_mm``, ``wavelength_A``: those the
        file gives.
    source : str
        Where they were read, e.g. ``"metadata: master.h5 (NXdetector /entry/instrument/detector, NXbeam ...)"``.
    missing : list of str
        Keys the file lacks.
    """

    values: dict[str, float]
    source: str
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every value a geometry needs is known."""
        return not self.missing


_REQUIRED = ("distance_mm", "beam_center_row", "beam_center_col", "pixel_size_mm", "wavelength_A")


def length_in_mm(value: float, units: str | None, *, default: str = "m", what: str = "length") -> float:
    """A length in millimetres from a value and its unit string.

    Parameters
    ----------
    value : float
    units : str or None
        ``m``, ``mm``, ``um``/``micron``, ``nm``, ``angstrom``, ... (case-insensitive); None or "": ``default``.
    default : str
        Unit assumed when none is given.
    what : str
        What the value is, for the error message.

    Returns
    -------
    mm : float

    Raises
    ------
    ValueError
        If the unit is not a length unit.
    """
    unit = (units or default).strip().lower().replace("metres", "m").replace("meters", "m")
    if unit not in _LENGTH_M:
        raise ValueError(f"{what}: unit {units!r} is not a length unit (m, mm, um, ...)")
    return float(value) * _LENGTH_M[unit] / 1e-3


def _wavelength_A(value: float, units: str | None) -> float:
    """A wavelength in Å from a length or an energy with its unit (an energy is converted with hc)."""
    unit = (units or "angstrom").strip().lower()
    if unit in _ENERGY_KEV:
        return _HC_KEV_ANGSTROM / (float(value) * _ENERGY_KEV[unit])
    return length_in_mm(value, unit, what="wavelength") * 1e7


def _scalar(ds) -> tuple[float, str | None]:
    """The first value of an HDF5 dataset and its ``units`` attribute."""
    import numpy as np

    value = np.asarray(ds[()]).reshape(-1)
    if value.size == 0:
        raise ValueError(f"{ds.name}: empty")
    units = ds.attrs.get("units")
    units = units.decode() if isinstance(units, bytes) else units
    return float(value[0]), (str(units) if units is not None else None)


def _groups_of_class(h5, nx_class: str) -> list:
    """Groups of ``h5`` with ``NX_class == nx_class``, under ``/entry*/instrument`` first, then anywhere."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            value = obj.attrs.get("NX_class")
            if (value.decode() if isinstance(value, bytes) else value) == nx_class:
                found.append(obj)

    h5.visititems(visit)
    return sorted(found, key=lambda g: ("/instrument/" not in g.name, g.name))


def _detector_values(det, values: dict[str, float]) -> None:
    """Distance, pixel size and beam centre of an NXdetector group, in config units, into ``values``."""
    for key in ("detector_distance", "distance"):
        if key in det and "distance_mm" not in values:
            v, u = _scalar(det[key])
            values["distance_mm"] = length_in_mm(v, u, what=f"{det.name}/{key}")
    sizes = {}
    for key in ("x_pixel_size", "y_pixel_size"):
        if key in det:
            v, u = _scalar(det[key])
            sizes[key] = length_in_mm(v, u, what=f"{det.name}/{key}")
    if len(sizes) == 2 and not math.isclose(sizes["x_pixel_size"], sizes["y_pixel_size"], rel_tol=1e-6):
        raise ValueError(f"{det.name}: x_pixel_size {sizes['x_pixel_size']} mm and y_pixel_size "
                         f"{sizes['y_pixel_size']} mm differ (braggflow takes square pixels)")
    if sizes:
        values["pixel_size_mm"] = next(iter(sizes.values()))
    for key, name in (("beam_center_x", "beam_center_col"), ("beam_center_y", "beam_center_row")):
        if key not in det:
            continue
        v, u = _scalar(det[key])
        if u and u.strip().lower() not in ("pixel", "pixels", "px"):
            if "pixel_size_mm" not in values:
                raise ValueError(f"{det.name}/{key} in {u} needs a pixel size to convert")
            v = length_in_mm(v, u, what=f"{det.name}/{key}") / values["pixel_size_mm"]
        values[name] = v - 0.5


def _wavelength_values(h5, values: dict[str, float], where: list[str]) -> None:
    """The wavelength of NXbeam (incident_wavelength/energy) or NXmonochromator (wavelength/energy), in Å."""
    for nx_class, keys, usual in (("NXbeam", ("incident_wavelength", "incident_energy"), "beam"),
                                  ("NXmonochromator", ("wavelength", "energy"), "monochromator")):
        groups = _groups_of_class(h5, nx_class)
        if not groups and f"entry/instrument/{usual}" in h5:
            groups = [h5[f"entry/instrument/{usual}"]]
        for group in groups:
            for key in keys:
                if key in group and "wavelength_A" not in values:
                    v, u = _scalar(group[key])
                    values["wavelength_A"] = _wavelength_A(v, u or ("keV" if "energy" in key else None))
                    where.append(f"{nx_class} {group.name}/{key}")


def geometry_from_hdf5(path) -> GeometryMetadata | None:
    """The geometry an HDF5/NeXus file (Eiger master file, NXmx) records, or None when it records none.

    Parameters
    ----------
    path : str or Path
        HDF5 file (a ``FILE::/dataset`` suffix is ignored).

    Returns
    -------
    metadata : GeometryMetadata or None
        None when the file has no detector distance, pixel size, beam centre or wavelength.

    Raises
    ------
    InputFileError
        If a value is there but cannot be read (unknown units, not a number), naming the file and the field.
    """
    import h5py

    path = Path(str(path).split("::", 1)[0])
    values: dict[str, float] = {}
    where: list[str] = []
    try:
        h5 = h5py.File(path, "r", locking=False)
    except OSError:
        return None
    with h5:
        try:
            detectors = _groups_of_class(h5, "NXdetector")
            if not detectors and "entry/instrument/detector" in h5:
                detectors = [h5["entry/instrument/detector"]]
            if detectors:
                before = len(values)
                _detector_values(detectors[0], values)
                if len(values) > before:
                    where.append(f"NXdetector {detectors[0].name}")
            _wavelength_values(h5, values, where)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise InputFileError(f"{path}: cannot read the geometry in its metadata ({exc})") from None
    if not values:
        return None
    return GeometryMetadata(values=values, source=f"metadata: {path.name} ({', '.join(where)})",
                            missing=[k for k in _REQUIRED if k not in values])


_CBF_KEYS = {
    "Detector_distance": re.compile(r"^#\s*Detector_distance\s+([-+0-9.eE]+)\s*(\S+)?", re.M),
    "Beam_xy": re.compile(r"^#\s*Beam_xy\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*(\S+)?", re.M),
    "Wavelength": re.compile(r"^#\s*Wavelength\s+([-+0-9.eE]+)\s*(\S+)?", re.M),
    "Pixel_size": re.compile(r"^#\s*Pixel_size\s+([-+0-9.eE]+)\s*(\S+)?\s*x\s*([-+0-9.eE]+)\s*(\S+)?", re.M),
}


def geometry_from_cbf_header(text: str, *, name: str = "CBF") -> GeometryMetadata | None:
    """The geometry of a miniCBF header (``_array_data.header_contents``), or None when it gives none.

    Parameters
    ----------
    text : str
        The header text, lines such as ``# Detector_distance 0.20000 m``,
        ``# Beam_xy (1231.50, 1263.50) pixels``, ``# Wavelength 0.97625 A``,
        ``# Pixel_size 172e-6 m x 172e-6 m``.
    name : str
        The file's name, for ``source`` and errors.

    Returns
    -------
    metadata : GeometryMetadata or None

    Raises
    ------
    InputFileError
        If a value is there with units that cannot be read, or with non-square pixels.
    """
    values: dict[str, float] = {}
    try:
        if m := _CBF_KEYS["Pixel_size"].search(text):
            x = length_in_mm(float(m.group(1)), m.group(2), what="Pixel_size")
            y = length_in_mm(float(m.group(3)), m.group(4) or m.group(2), what="Pixel_size")
            if not math.isclose(x, y, rel_tol=1e-6):
                raise ValueError(f"Pixel_size {x} mm x {y} mm is not square (braggflow takes square pixels)")
            values["pixel_size_mm"] = x
        if m := _CBF_KEYS["Detector_distance"].search(text):
            values["distance_mm"] = length_in_mm(float(m.group(1)), m.group(2), what="Detector_distance")
        if m := _CBF_KEYS["Beam_xy"].search(text):
            if m.group(3) and m.group(3).lower() not in ("pixels", "pixel", "px"):
                raise ValueError(f"Beam_xy in {m.group(3)!r}, expected pixels")
            values["beam_center_col"] = float(m.group(1)) - 0.5
            values["beam_center_row"] = float(m.group(2)) - 0.5
        if m := _CBF_KEYS["Wavelength"].search(text):
            values["wavelength_A"] = _wavelength_A(float(m.group(1)), m.group(2) or "A")
    except ValueError as exc:
        raise InputFileError(f"{name}: cannot read the geometry in its miniCBF header ({exc})") from None
    if not values:
        return None
    return GeometryMetadata(values=values, source=f"metadata: {name} (miniCBF header)",
                            missing=[k for k in _REQUIRED if k not in values])


def _cbf_header_text(path: Path) -> str:
    """The miniCBF header text of a CBF file, read with fabio ("" when it has none)."""
    import fabio

    try:
        image = fabio.open(str(path))
    except Exception as exc:  # fabio raises many kinds of errors for bad files
        raise InputFileError(f"{path}: not a readable CBF file ({exc})") from None
    header: dict[str, Any] = dict(getattr(image, "header", {}) or {})
    text = header.get("_array_data.header_contents", "")
    return text if isinstance(text, str) else ""


def read_geometry_metadata(sources) -> GeometryMetadata | None:
    """The geometry recorded in the metadata of a series' first input file, or None when it records none.

    Parameters
    ----------
    sources : list of str
        The series' input files (:attr:`braggflow.io.series.FrameSeries.sources`).

    Returns
    -------
    metadata : GeometryMetadata or None
        From an HDF5/NeXus file's NXdetector and NXbeam/NXmonochromator, or
        a CBF file's miniCBF header; None for other formats and files without them.

    Raises
    ------
    InputFileError
        If the file records geometry values that cannot be read.
    """
    if not sources:
        return None
    path = Path(str(sources[0]).split("::", 1)[0])
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".nxs", ".hdf", ".nx5", ".cxi"):
        return geometry_from_hdf5(path)
    if suffix == ".cbf" and path.is_file():
        text = _cbf_header_text(path)
        return geometry_from_cbf_header(text, name=path.name) if text else None
    return None
