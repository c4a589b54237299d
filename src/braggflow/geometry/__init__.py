"""Detector geometry (pyFAI): pixel -> two_theta/eta/q/d, grazing incidence, azimuthal integration.

pyFAI's units (metres, radians, 1/nm) are used inside this package only;
everything it returns is in px, deg, Å and 1/Å.  Names are resolved lazily
so that importing the config section stays cheap.
"""

from __future__ import annotations

import lazy_loader

# the names, and the modules that define them, are listed once: in the type stub __init__.pyi
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
