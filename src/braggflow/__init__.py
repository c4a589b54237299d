"""braggflow: from X-ray area-detector frames to Bragg-peak tables, fast.

The public Python API mirrors the data flow of ``DESIGN.md``::

    frames = braggflow.open_frames("scan.h5")
    table = braggflow.process_frame(frames[0], config=braggflow.Config())
    results = braggflow.run(frames, config=braggflow.Config(), output="results.h5")

Heavy dependencies (torch, dask, pyFAI) are imported lazily, so
``import braggflow`` stays fast.
"""

from __future__ import annotations

import lazy_loader

__version__ = "0.1.0"

# names resolved on first access (PEP 562), grouped by the module that defines them
__getattr__, __dir__, _names = lazy_loader.attach(
    __name__,
    submod_attrs={
        "io.frames": ["open_frames"],
        "io.results": ["read_peaks"],
        "correct": ["correct_frame"],
        "find": ["find_peaks"],
        "locate": ["extract_patches", "locate"],
        "integrate": ["integrate"],
        "pipeline": ["process_frame", "run"],
        "pipeline.config": ["Config"],
        "schema": ["Flag", "empty_peak_table"],
        "errors": ["BraggflowError"],
    },
)
__all__ = ["__version__", *_names]
