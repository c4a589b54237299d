"""braggflow: from X-ray area-detector frames to Bragg-peak tables, fast.

The public Python API mirrors the data flow of ``DESIGN.md``::

    frames = braggflow.open_frames("scan.h5")
    table = braggflow.process_frame(frames[0], config=braggflow.Config())
    results = braggflow.run(frames, config=braggflow.Config(), output="results.h5")

Heavy dependencies (torch, dask, pyFAI) are imported lazily, so
``import braggflow`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY = {
    "open_frames": "braggflow.io.frames",
    "read_peaks": "braggflow.io.results",
    "correct_frame": "braggflow.correct",
    "find_peaks": "braggflow.find",
    "extract_patches": "braggflow.locate",
    "locate": "braggflow.locate",
    "integrate": "braggflow.integrate",
    "process_frame": "braggflow.pipeline",
    "run": "braggflow.pipeline",
    "Config": "braggflow.pipeline.config",
    "Flag": "braggflow.schema",
    "empty_peak_table": "braggflow.schema",
    "BraggflowError": "braggflow.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'braggflow' has no attribute {name!r}")
