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
"""

from __future__ import annotations

import importlib

_LAZY = {
    "plot_frame": "braggflow.viz.frame",
    "animate_series": "braggflow.viz.animate",
    "plot_tracks": "braggflow.viz.tracks",
    "summed_image": "braggflow.viz.tracks",
    "plot_series": "braggflow.viz.series",
    "frame_statistics": "braggflow.viz.series",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'braggflow.viz' has no attribute {name!r}")
