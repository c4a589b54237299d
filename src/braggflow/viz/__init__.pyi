"""Type stub: the names this package resolves lazily (lazy_loader.attach_stub reads it)."""

__all__ = ["plot_frame", "animate_series", "plot_tracks", "summed_image", "plot_series", "frame_statistics",
           "plot_remap"]

from .animate import animate_series
from .frame import plot_frame
from .remap import plot_remap
from .series import frame_statistics, plot_series
from .tracks import plot_tracks, summed_image
