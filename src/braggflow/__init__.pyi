"""Type stub: the names this package resolves lazily (lazy_loader.attach_stub reads it)."""

__all__ = [
    "__version__",
    "open_frames",
    "read_peaks",
    "correct_frame",
    "find_peaks",
    "FoundPeaks",
    "extract_patches",
    "locate",
    "integrate",
    "process_frame",
    "run",
    "Config",
    "Flag",
    "empty_peak_table",
    "BraggflowError",
]

__version__: str

from .correct import correct_frame
from .errors import BraggflowError
from .find import FoundPeaks, find_peaks
from .integrate import integrate
from .io.frames import open_frames
from .io.results import read_peaks
from .locate import extract_patches, locate
from .pipeline import process_frame, run
from .pipeline.config import Config
from .schema import Flag, empty_peak_table
