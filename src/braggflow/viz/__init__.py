"""Pictures of frames, peaks and series, written as files (PNG, GIF, MP4).

Everything here draws on matplotlib's Agg canvas (no window, no display
needed), so it runs on a headless cluster node.  Names are resolved lazily so
``import braggflow.viz`` does not import matplotlib.

- :func:`plot_frame`: a frame (log colour scale, masked pixels shown) with its
  peaks as circles sized by intensity or score.
- :func:`animate_series`: the same for every frame of a series, as GIF or MP4.
- :func:`plot_tracks`: trajectories over the summed image of a series.
- :func:`plot_series` / :func:`frame_statistics`: peak count, mean intensity
  and, against a reference table, position error per frame.
- :func:`plot_remap`: a frame remapped to (eta, q), (eta, 2theta) or (q_xy, q_z).

Every picture shares the look of :mod:`braggflow.viz.style` (constrained
layout, units in every axis label, scales that fit the data).
"""

from __future__ import annotations

import lazy_loader

# the names, and the modules that define them, are listed once: in the type stub __init__.pyi
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
