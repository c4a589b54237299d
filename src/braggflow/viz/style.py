"""The look shared by every braggflow picture: layout, axis labels, scales, ticks, colour maps.

Each plot function builds its figure with :func:`figure` (matplotlib's
constrained layout, so labels, colour bars and legends are never cut at the
figure's edge) and finishes its axes with the helpers here:

- :func:`axis_label`: ``"name (unit)"``: every axis label carries its unit.
- :func:`value_scale`: ``"log"`` for positive data spanning more than two
  decades, else ``"linear"``.
- :func:`plain_numbers`: linear axes print whole values (no offset text such
  as ``+2.02e4`` or ``x 10^4`` in the corner).
- :func:`integer_ticks`: frame numbers and counts get integer ticks only.
- :data:`IMAGE_CMAP` (perceptually uniform) and :func:`image_limits` (robust
  percentiles) for remapped and reciprocal-space images.
- :data:`FEATURE_COLOURS`: one colour per kind of the learned detector's
  features (ring, arc, spot), the same in every picture.
- :func:`texts_outside`: the texts of a drawn figure that reach past its
  edges (empty for a well-laid-out figure; what the tests check).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from braggflow.errors import BraggflowError

__all__ = ["IMAGE_CMAP", "FEATURE_COLOURS", "figure", "axis_label", "value_scale", "plain_numbers", "integer_ticks",
           "image_limits", "texts_outside"]

IMAGE_CMAP = "viridis"
"""Colour map of remapped images: perceptually uniform, readable in grey and by colour-blind readers."""

FEATURE_COLOURS = {"ring": "#56b4e9", "arc": "#f0e442", "spot": "#ff5a36"}
"""Outline colour of each feature kind of the learned detector (sky blue, yellow, vermilion: told apart by
colour-blind readers, and seen on the dark and the light ends of the image colour maps)."""


def figure(figsize: tuple[float, float], dpi: float) -> Figure:
    """A figure on the Agg canvas (no GUI backend) with matplotlib's constrained layout.

    Parameters
    ----------
    figsize : (float, float)
        Width and height, inches.
    dpi : float
        Pixels per inch.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    BraggflowError
        If ``figsize`` is not two positive lengths or ``dpi`` is not positive.
    """
    if len(figsize) != 2 or min(figsize) <= 0:
        raise BraggflowError(f"figsize must be two positive lengths in inches, got {figsize!r}")
    if not dpi > 0:
        raise BraggflowError(f"dpi must be positive, got {dpi!r}")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def axis_label(name: str, unit: str | None) -> str:
    """``"name (unit)"``, or ``name`` alone for a dimensionless quantity (``unit`` None or empty)."""
    return f"{name} ({unit})" if unit else name


def value_scale(values, *, decades: float = 2.0) -> str:
    """``"log"`` when the finite values are all positive and span more than ``decades`` decades, else ``"linear"``.

    Parameters
    ----------
    values : array_like
    decades : float
        Span (log10 of max / min) above which a log scale is chosen.

    Returns
    -------
    scale : {"log", "linear"}
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() <= 0:
        return "linear"
    return "log" if np.log10(v.max() / v.min()) > decades else "linear"


def plain_numbers(ax, which: str = "y") -> None:
    """Linear ``which`` axis (``"x"``, ``"y"`` or ``"both"``) labelled with whole values, no offset or multiplier."""
    for axis in ((ax.xaxis, ax.yaxis) if which == "both" else (getattr(ax, f"{which}axis"),)):
        if axis.get_scale() == "linear":
            formatter = ScalarFormatter(useOffset=False)
            formatter.set_scientific(False)
            axis.set_major_formatter(formatter)


def integer_ticks(ax, which: str = "x") -> None:
    """Ticks at integers only on ``which`` axis (``"x"``, ``"y"`` or ``"both"``): frame numbers, counts."""
    for axis in ((ax.xaxis, ax.yaxis) if which == "both" else (getattr(ax, f"{which}axis"),)):
        if axis.get_scale() == "linear":
            axis.set_major_locator(MaxNLocator(integer=True))


def image_limits(image, *, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """Colour limits of an image: its ``low`` and ``high`` percentiles over the finite pixels.

    Returns
    -------
    (vmin, vmax) : (float, float)
        With ``vmax > vmin``; (0, 1) for an image without finite pixels.
    """
    v = np.asarray(image, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, [low, high]))
    if not hi > lo:
        hi = lo + max(abs(lo), 1.0) * 1e-3
    return lo, hi


def texts_outside(fig: Figure, *, tolerance: float = 1.0) -> list[str]:
    """The drawn texts of ``fig`` (labels, tick labels, titles, legends, colour-bar labels) reaching past its edges.

    The figure is laid out and drawn first, so the extents are those of the
    saved image; tick labels are those of the ticks inside each axis' view.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    tolerance : float
        Pixels a text may reach past an edge (anti-aliasing).

    Returns
    -------
    texts : list of str
        The strings of the texts cut by the figure's edge; empty when none is.
    """
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    cut = []
    for text in _drawn_texts(fig):
        box = text.get_window_extent(renderer)
        if box.x0 < -tolerance or box.y0 < -tolerance or box.x1 > width + tolerance or box.y1 > height + tolerance:
            cut.append(text.get_text())
    return cut


def _drawn_texts(fig: Figure) -> list:
    """The visible, non-empty texts that drawing ``fig`` puts on the image."""
    texts = list(fig.texts)
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        if getattr(fig, name, None) is not None:
            texts.append(getattr(fig, name))
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            for tick in axis._update_ticks():  # the ticks inside the view, as drawn
                texts += [label for label in (tick.label1, tick.label2) if label.get_visible()]
            texts += [axis.label, axis.get_offset_text()]
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for legend in legends:
        texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]
