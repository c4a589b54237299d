"""Crystal phases: reflections from CIF/YAML (gemmi), matching, ranking and mixtures."""

from __future__ import annotations

import importlib

_LAZY = {
    "Phase": "braggflow.phases.structure",
    "load_cif": "braggflow.phases.structure",
    "load_phase": "braggflow.phases.structure",
    "load_phase_yaml": "braggflow.phases.structure",
    "reflections": "braggflow.phases.reflections",
    "powder_lines": "braggflow.phases.reflections",
    "lorentz_polarization": "braggflow.phases.reflections",
    "MatchOptions": "braggflow.phases.matching",
    "PhaseMatch": "braggflow.phases.matching",
    "match_phase": "braggflow.phases.matching",
    "contact_planes": "braggflow.phases.matching",
    "Identification": "braggflow.phases.identify",
    "identify": "braggflow.phases.identify",
    "lines_from_peaks": "braggflow.phases.identify",
    "pattern_kind": "braggflow.phases.identify",
    "assign_peaks": "braggflow.phases.identify",
    "identify_frame": "braggflow.phases.workflow",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'braggflow.phases' has no attribute {name!r}")
