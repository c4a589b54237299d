"""braggflow: from X-ray area-detector frames to Bragg-peak tables, fast.

The public Python API mirrors the data flow of ``docs/design.md``::

    frames = braggflow.open_frames("scan.h5")
    table = braggflow.process_frame(frames[0], config=braggflow.Config())
    results = braggflow.run(frames, config=braggflow.Config(), output="results.h5")

Heavy dependencies (torch, dask, pyFAI) are imported lazily, so
``import braggflow`` stays fast.
"""

from __future__ import annotations

import lazy_loader

__version__ = "0.2.0.dev0"

# names resolved on first access (PEP 562); they, and the modules that define them, are listed once:
# in the type stub __init__.pyi, which type checkers and IDEs read too
__getattr__, __dir__, _names = lazy_loader.attach_stub(__name__, __file__)
__all__ = ["__version__", *_names]
