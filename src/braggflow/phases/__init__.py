"""Crystal phases: reflections from CIF/YAML (gemmi), matching, ranking and mixtures."""

from braggflow.phases.identify import Identification, assign_peaks, identify, lines_from_peaks, pattern_kind
from braggflow.phases.matching import MatchOptions, PhaseMatch, contact_planes, match_phase
from braggflow.phases.reflections import lorentz_polarization, powder_lines, reflections
from braggflow.phases.structure import Phase, load_cif, load_phase, load_phase_yaml
from braggflow.phases.workflow import identify_frame, identify_results, identify_table

__all__ = [
    "Phase", "load_cif", "load_phase", "load_phase_yaml", "reflections", "powder_lines", "lorentz_polarization",
    "MatchOptions", "PhaseMatch", "match_phase", "contact_planes", "Identification", "identify",
    "lines_from_peaks", "pattern_kind", "assign_peaks", "identify_frame", "identify_table", "identify_results",
]
