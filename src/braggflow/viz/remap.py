"""A remapped frame as a picture: (eta, q), (eta, 2theta) or the grazing-incidence (q_xy, q_z) map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.viz import _draw, style

__all__ = ["plot_remap", "REMAP_AXES", "REMAP_TITLES"]

REMAP_AXES = {
    "q": (("η", "deg"), ("q", "1/Å")),
    "polar": (("η", "deg"), ("2θ", "deg")),
    "qxy-qz": (("q_z", "1/Å"), ("q_xy", "1/Å")),
}
"""For each ``to`` of :func:`braggflow.geometry.remap.remap`: (name, unit) of axis 0 (rows) and axis 1 (columns)."""

REMAP_TITLES = {"q": "remapped to (q, η)", "polar": "remapped to (2θ, η)",
                "qxy-qz": "grazing-incidence map (q_xy, q_z)"}
"""What each remapping shows, for titles."""


def plot_remap(
    image: np.ndarray,
    axis0: np.ndarray,
    axis1: np.ndarray,
    *,
    to: str,
    output: str | Path | None,
    title: str | None = None,
    log: bool | None = None,
    features=None,
    geometry=None,
    figsize: tuple[float, float] = (7.0, 5.5),
    dpi: float = 100,
):
    """Draw a remapped frame with a colour bar, a title and axis labels with units, and learned features.

    The colour map is perceptually uniform (:data:`braggflow.viz.style.IMAGE_CMAP`)
    with limits at the 1st and 99.5th percentiles of the filled bins (log
    scale when the image is positive and spans more than two decades);
    empty bins (the missing wedge, outside the detector) are white.  The
    (q_xy, q_z) map is drawn at equal aspect, so rings stay circles.

    Features of the learned detector (``features``: a feature table of
    ``braggflow detect``, a peak table of ``braggflow run --finder learned``,
    or labels of :func:`braggflow.training.labels.read_labels`) are drawn as
    the outlines of their extents in the map's coordinates (a rectangle in
    (q, chi); its image through the geometry in (2theta, chi) and (q_xy,
    q_z)), coloured by kind, with a legend.

    Parameters
    ----------
    image : (N0, N1) ndarray
        Remapped intensity, counts per pixel; NaN for empty bins.
    axis0, axis1 : (N0,), (N1,) ndarray
        Bin centres along the rows and the columns (units of :data:`REMAP_AXES`).
    to : {"q", "polar", "qxy-qz"}
        The remapping that made ``image``.
    output : str or Path or None
        Image file to write; ``None`` returns the Figure.
    title : str, optional
        Default: what the map shows.
    log : bool, optional
        Log colour scale; default: chosen from the data (:func:`braggflow.viz.style.value_scale`).
    features : pandas.DataFrame, optional
        Features with ``kind`` and extents (``q``, ``eta`` or ``chi``,
        ``q_width``, ``chi_width``; or ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``).
    geometry : braggflow.geometry.Geometry, optional
        Needed to draw features on the "polar" and "qxy-qz" maps.
    figsize : (float, float), optional
        Inches.
    dpi : float, optional

    Returns
    -------
    Path or matplotlib.figure.Figure

    Raises
    ------
    BraggflowError
        For an unknown ``to``, axes whose lengths differ from the image's
        shape, features without their extents or without the geometry their
        map needs, or a missing output folder.
    """
    import matplotlib
    from matplotlib.colors import LogNorm, Normalize

    if to not in REMAP_AXES:
        raise BraggflowError(f"to must be one of {', '.join(REMAP_AXES)}, got {to!r}")
    image = np.asarray(image, dtype=float)
    axis0, axis1 = np.asarray(axis0, dtype=float), np.asarray(axis1, dtype=float)
    if image.ndim != 2 or image.shape != (axis0.size, axis1.size):
        raise BraggflowError(f"image of shape {image.shape} does not match axes of lengths {axis0.size}, {axis1.size}")
    (name0, unit0), (name1, unit1) = REMAP_AXES[to]
    filled = image[np.isfinite(image)]
    if log is None:  # log when most bins are positive and those span more than two decades
        log = bool(filled.size) and (filled > 0).mean() > 0.5 and style.value_scale(filled[filled > 0]) == "log"
    if log:
        positive = filled[filled > 0]
        lo, hi = style.image_limits(positive) if positive.size else (1.0, 10.0)
        norm = LogNorm(vmin=max(lo, 1e-12), vmax=max(hi, lo * 10), clip=True)
    else:
        norm = Normalize(*style.image_limits(filled), clip=True)
    cmap = matplotlib.colormaps[style.IMAGE_CMAP].with_extremes(bad="white")
    fig = _draw.new_figure(figsize, dpi)
    ax = fig.add_subplot()
    step0 = (axis0[-1] - axis0[0]) / max(axis0.size - 1, 1)
    step1 = (axis1[-1] - axis1[0]) / max(axis1.size - 1, 1)
    extent = (axis1[0] - step1 / 2, axis1[-1] + step1 / 2, axis0[0] - step0 / 2, axis0[-1] + step0 / 2)
    shown = np.ma.masked_invalid(np.where(image > 0, image, np.nan) if log else image)
    im = ax.imshow(shown, origin="lower", cmap=cmap, norm=norm, extent=extent, interpolation="nearest",
                   aspect="equal" if to == "qxy-qz" else "auto")
    fig.colorbar(im, ax=ax, label=style.axis_label("intensity", "counts/px"), shrink=0.9)
    boxes = _draw.feature_rows(features)
    if len(boxes):
        drawn = _draw.draw_features(ax, boxes, to, geometry)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.legend(handles=_draw.feature_handles(drawn), loc="upper right", fontsize=7, framealpha=0.6)
    ax.set_xlabel(style.axis_label(name1, unit1))
    ax.set_ylabel(style.axis_label(name0, unit0))
    if title is None:
        title = "frame " + REMAP_TITLES[to]
    empty = float(np.isnan(image).mean()) if image.size else 0.0
    ax.set_title(f"{title}\n{empty:.0%} of the bins empty (white)", fontsize=10)
    return _draw.save(fig, output)
