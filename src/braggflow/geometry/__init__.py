"""Detector geometry (pyFAI): pixel -> two_theta/eta/q/d, grazing incidence, azimuthal integration.

pyFAI's units (metres, radians, 1/nm) are used inside this package only;
everything it returns is in px, deg, Å and 1/Å.  Names are resolved lazily
so that importing the config section stays cheap.
"""

from __future__ import annotations

import lazy_loader

from braggflow.geometry.config import GeometryConfig

__getattr__, __dir__, _names = lazy_loader.attach(
    __name__,
    submod_attrs={
        "core": ["Geometry", "HC_KEV_ANGSTROM"],
        "columns": ["add_geometry_columns", "geometry_values"],
        "azimuthal": ["azimuthal_profile", "ring_positions"],
        "remap": ["remap"],
    },
)
__all__ = ["GeometryConfig", *_names]
