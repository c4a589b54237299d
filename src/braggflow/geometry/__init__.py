"""Detector geometry (pyFAI): pixel -> two_theta/eta/q/d, grazing incidence, azimuthal integration.

pyFAI's units (metres, radians, 1/nm) are used inside this package only;
everything it returns is in px, deg, Å and 1/Å.  Names are resolved lazily
so that importing the config section stays cheap.
"""

from __future__ import annotations

import importlib

from braggflow.geometry.config import GeometryConfig

_LAZY = {
    "Geometry": "braggflow.geometry.core",
    "HC_KEV_ANGSTROM": "braggflow.geometry.core",
    "add_geometry_columns": "braggflow.geometry.columns",
    "geometry_values": "braggflow.geometry.columns",
    "azimuthal_profile": "braggflow.geometry.azimuthal",
    "ring_positions": "braggflow.geometry.azimuthal",
    "remap": "braggflow.geometry.remap",
}

__all__ = ["GeometryConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'braggflow.geometry' has no attribute {name!r}")
