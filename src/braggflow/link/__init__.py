"""Linking peaks across frames: trajectories in time, 3D spots in rotation.

- :func:`link`: trackpy's linker on the peak table, fills ``track_id``.
- :func:`track_summary`: one row per track (extent, drift, intensity, strain).
- :func:`link_rotation` / :func:`merge_rotation_spots`: peaks of frames whose
  omega ranges touch, merged into one spot with an intensity-weighted centroid.
"""

from braggflow.link.rotation import (
    link_rotation,
    merge_rotation_spots,
    omega_ranges_from_steps,
    omega_ranges_from_table,
)
from braggflow.link.tracks import link, track_summary

__all__ = [
    "link",
    "track_summary",
    "link_rotation",
    "merge_rotation_spots",
    "omega_ranges_from_table",
    "omega_ranges_from_steps",
]
