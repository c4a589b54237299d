"""Type stub: the names this package resolves lazily (lazy_loader.attach_stub reads it)."""

__all__ = [
    "GeometryConfig",
    "Geometry",
    "HC_KEV_ANGSTROM",
    "add_geometry_columns",
    "geometry_values",
    "azimuthal_profile",
    "ring_positions",
    "remap",
]

from .azimuthal import azimuthal_profile, ring_positions
from .columns import add_geometry_columns, geometry_values
from .config import GeometryConfig
from .core import HC_KEV_ANGSTROM, Geometry
from .remap import remap
