"""An animation of a frame series with its peaks overlaid (GIF, or MP4 with ffmpeg)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.viz import _draw

__all__ = ["animate_series", "ffmpeg_available"]


def ffmpeg_available() -> bool:
    """Whether an ``ffmpeg`` executable is on PATH (needed for MP4)."""
    return shutil.which("ffmpeg") is not None


def _writer(output: Path, fps: float):
    from matplotlib.animation import FFMpegWriter, PillowWriter

    suffix = output.suffix.lower()
    if suffix == ".gif":

        class _PalettePillowWriter(PillowWriter):
            """PillowWriter keeping each frame as a 256-colour image (4x less memory)."""

            def grab_frame(self, **savefig_kwargs):
                super().grab_frame(**savefig_kwargs)
                frames = getattr(self, "_frames", None)
                if frames and frames[-1].mode == "RGB":
                    frames[-1] = frames[-1].quantize(colors=256)

        return _PalettePillowWriter(fps=fps)
    if suffix == ".mp4":
        if not ffmpeg_available():
            raise BraggflowError(f"cannot write {output}: MP4 needs ffmpeg on PATH; write a .gif instead")
        return FFMpegWriter(fps=fps, codec="libx264", extra_args=["-pix_fmt", "yuv420p"])
    raise BraggflowError(f"cannot write {output}: animations are written as .gif or .mp4")


def _layout(first, mask, norm, peaks, last_index: int, figsize, dpi):
    """The animation's figure, laid out once: image, colour bar (counts), legend, a title as wide as any frame's.

    Returns ``(fig, image, reduction factor, peak scatter, title)``; the
    layout engine is then switched off, so frames do not shift as titles change.
    """
    fig = _draw.new_figure(figsize, dpi)
    ax = fig.add_subplot()
    im, factor = _draw.show_frame(ax, first, mask, norm)
    fig.colorbar(im, ax=ax, label="counts", fraction=0.046, pad=0.02)
    scatter = ax.scatter([], [], s=[], facecolors="none", linewidths=0.8)
    ax.legend(handles=_draw.legend_handles(mask is not None and bool(mask.any()), flags=_draw.flag_names(peaks)),
              loc="upper right", fontsize=7, framealpha=0.6)
    title = ax.set_title(f"frame {last_index}: {max(len(peaks), 1000)} peaks")  # the widest title sets the layout
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return fig, im, factor, scatter, title


def animate_series(
    frames: Sequence[np.ndarray],
    table: pd.DataFrame | None = None,
    *,
    output: str | Path,
    mask: np.ndarray | None = None,
    indices: Sequence[int] | None = None,
    fps: float = 5.0,
    size_by: str | None = "intensity",
    figsize: tuple[float, float] = (6.0, 6.0),
    dpi: float = 100,
) -> Path:
    """Write an animation of a series, each frame with its peaks overlaid.

    One colour scale (log, from a sample of the frames, shown by a colour bar
    in counts) and one marker scale serve the whole animation, so brightness is
    comparable between frames; a legend explains the markers.

    Parameters
    ----------
    frames : FrameSeries or (N, H, W) ndarray or sequence of (H, W) ndarray
        The series (read one frame at a time).
    table : pandas.DataFrame, optional
        Peak table of the series (``frame``, ``row``, ``col`` in px).
    output : str or Path
        ``.gif`` (Pillow) or ``.mp4`` (needs ffmpeg on PATH).
    mask : (H, W) ndarray of bool, optional
        Bad pixels; default: the series' ``detector_mask`` when it has one.
    indices : sequence of int, optional
        Frames to show, in order (default: all).
    fps : float, optional
        Frames per second of the animation.
    size_by : str or None, optional
        Peak-table column setting the marker size (see :func:`plot_frame`).
    figsize : (float, float), optional
        Inches; each animation frame is ``figsize * dpi`` pixels.
    dpi : float, optional

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    BraggflowError
        For an unknown suffix, MP4 without ffmpeg, an empty selection, a
        missing output folder, or an index outside the series.
    """
    output = Path(output)
    if not output.parent.exists():
        raise BraggflowError(f"cannot write {output}: folder {output.parent} does not exist")
    if fps <= 0:
        raise BraggflowError(f"fps must be positive, got {fps!r}")
    n = len(frames)
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if not indices:
        raise BraggflowError("no frames to animate")
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise BraggflowError(f"frame index {bad[0]} is outside the series of {n} frames")
    if mask is None:
        mask = getattr(frames, "detector_mask", None)
    first, mask = _draw.check_frame(frames[indices[0]], mask)
    sample = [first] + [frames[i] for i in indices[1:: max(1, len(indices) // 4)][:4]]
    norm = _draw.frame_norm(sample, mask=mask)
    peaks = _draw.frame_peaks(table, None)
    sizes = _draw.size_column(peaks, size_by) if len(peaks) else np.zeros(0)
    limits = _draw.value_limits(sizes)

    fig, im, factor, scatter, title = _layout(first, mask, norm, peaks, max(indices), figsize, dpi)
    by_frame = peaks.groupby("frame").indices if len(peaks) and "frame" in peaks.columns else {}
    writer = _writer(output, fps)
    with writer.saving(fig, str(output), dpi):
        for k, i in enumerate(indices):
            frame = first if k == 0 else frames[i]
            im.set_data(_draw.masked_image(frame, mask, norm, factor))
            rows = by_frame.get(i, np.zeros(0, dtype=int))
            p = peaks.iloc[rows]
            scatter.set_offsets(
                np.c_[p["col"].to_numpy(dtype=float), p["row"].to_numpy(dtype=float)] if len(p) else np.zeros((0, 2))
            )
            scatter.set_sizes(_draw.marker_sizes(sizes[rows], limits=limits))
            scatter.set_edgecolors(_draw.peak_colours(p) if len(p) else [])
            title.set_text(f"frame {i}: {len(p)} peaks")
            writer.grab_frame()
    return output
