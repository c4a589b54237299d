"""Shared drawing helpers: Agg figures, the log-scaled frame image, peak markers (style: :mod:`braggflow.viz.style`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from braggflow.errors import BraggflowError

CMAP = "magma"
MASK_COLOUR = "#3b82f6"
PEAK_COLOUR = "#00e5ff"
FLAGGED_COLOUR = "#ffb000"
REFERENCE_COLOUR = "#7cfc00"
SIZE_COLUMNS = ("intensity", "score", "peak_value", "snr", "npix")


def new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    """A matplotlib figure on the Agg canvas with constrained layout (see :func:`braggflow.viz.style.figure`)."""
    from braggflow.viz.style import figure

    return figure(figsize, dpi)


def save(fig: Figure, output: str | Path | None) -> Path | Figure:
    """Write ``fig`` to ``output`` (format from the suffix); without output return the figure.

    The figure keeps its size (no tight bounding box), so the image is exactly
    figsize x dpi pixels.
    """
    if output is None:
        return fig
    output = Path(output)
    if not output.parent.exists():
        raise BraggflowError(f"cannot write {output}: folder {output.parent} does not exist")
    fig.savefig(output, dpi=fig.dpi)
    return output


def frame_norm(images: list[np.ndarray], *, mask: np.ndarray | None = None) -> LogNorm:
    """A log colour scale from half the 1st to the 99.9th percentile of positive pixels."""
    values = []
    for image in images:
        v = np.asarray(image, dtype=float)
        if mask is not None:
            v = v[~mask]
        v = v[np.isfinite(v) & (v > 0)]
        if v.size > 200_000:  # a regular subsample is enough for percentiles
            v = v[:: v.size // 200_000]
        values.append(v)
    v = np.concatenate(values) if values else np.zeros(0)
    if v.size == 0:
        return LogNorm(vmin=0.1, vmax=1.0, clip=True)
    vmin, vmax = np.percentile(v, [1.0, 99.9])
    # half the faintest signal: zero and negative pixels (clipped to vmin) stay darker than any signal
    vmin = max(0.5 * max(float(vmin), float(v.min())), 1e-6)
    vmax = max(float(vmax), vmin * 10)
    return LogNorm(vmin=vmin, vmax=vmax, clip=True)


def check_frame(frame: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a (H, W) frame and optional (H, W) bool mask."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be a 2D (H, W) array, got shape {frame.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != frame.shape:
            raise BraggflowError(f"mask has shape {mask.shape}, expected the frame's {frame.shape}")
    return frame, mask


def reduction_factor(ax, shape: tuple[int, int]) -> int:
    """Image pixels per screen pixel of ``ax``, rounded up (1 when the axes is large enough)."""
    box = ax.get_window_extent()
    ratio = min(shape[0] / max(box.height, 1.0), shape[1] / max(box.width, 1.0))
    return max(1, int(np.ceil(ratio - 1e-9)))


def masked_image(frame: np.ndarray, mask: np.ndarray | None, norm: LogNorm, factor: int = 1) -> np.ma.MaskedArray:
    """The frame clipped to the colour scale, with masked pixels as 'bad' values.

    With ``factor`` > 1 the frame is reduced by the maximum over
    ``factor x factor`` blocks (padded at the far edges), so that one-pixel
    peaks stay visible on a screen smaller than the frame; a block is shown as
    masked when most of its pixels are.
    """
    image = np.asarray(frame, dtype=np.float32)
    bad = ~np.isfinite(image)
    if mask is not None:
        bad |= mask
    if factor > 1:
        h, w = image.shape
        ph, pw = -h % factor, -w % factor
        image = np.pad(np.where(bad, -np.inf, image), ((0, ph), (0, pw)), constant_values=-np.inf)
        bad = np.pad(bad, ((0, ph), (0, pw)), constant_values=False)
        hb, wb = image.shape[0] // factor, image.shape[1] // factor
        image = image.reshape(hb, factor, wb, factor).max(axis=(1, 3))
        bad = (bad.reshape(hb, factor, wb, factor).mean(axis=(1, 3)) > 0.5) | ~np.isfinite(image)
    image = np.clip(np.where(bad, norm.vmin, image), norm.vmin, None)
    return np.ma.masked_array(image, mask=bad)


def show_frame(ax, frame: np.ndarray, mask: np.ndarray | None, norm: LogNorm, *, origin: tuple[int, int] = (0, 0)):
    """Draw a frame on ``ax`` with the log scale; masked pixels in MASK_COLOUR.

    Frames larger than the axes on screen are block-max reduced (see
    :func:`masked_image`).  ``origin`` is the (row, col) of the frame's first
    pixel (for a cut-out).  Returns the AxesImage and the reduction factor.
    """
    import matplotlib

    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=MASK_COLOUR)
    factor = reduction_factor(ax, frame.shape)
    h, w = frame.shape
    hp, wp = h + (-h % factor), w + (-w % factor)
    r0, c0 = origin
    im = ax.imshow(masked_image(frame, mask, norm, factor), cmap=cmap, norm=norm, origin="upper",
                   interpolation="nearest" if factor > 1 else "antialiased",
                   extent=(c0 - 0.5, c0 + wp - 0.5, r0 + hp - 0.5, r0 - 0.5))
    ax.set_xlim(c0 - 0.5, c0 + w - 0.5)
    ax.set_ylim(r0 + h - 0.5, r0 - 0.5)
    ax.set_xlabel("col (px)")
    ax.set_ylabel("row (px)")
    return im, factor


def marker_sizes(values: np.ndarray, *, smallest: float = 4.0, largest: float = 16.0,
                 limits: tuple[float, float] | None = None) -> np.ndarray:
    """Marker areas (points^2) growing with sqrt(value) between two radii in points.

    Values at or below the low limit (or non-finite) get the smallest radius.
    ``limits`` (low, high) fixes the scale (e.g. over a whole series).
    """
    v = np.asarray(values, dtype=float)
    if limits is None:
        limits = value_limits(v)
    lo, hi = np.sqrt(np.clip(limits, 0, None))
    s = np.sqrt(np.clip(np.nan_to_num(v, nan=0.0), 0, None))
    frac = np.clip((s - lo) / (hi - lo), 0, 1) if hi > lo else np.full(v.shape, 0.5)
    radius = smallest + (largest - smallest) * frac
    return radius**2


def value_limits(values: np.ndarray) -> tuple[float, float]:
    """Robust (2nd, 98th percentile) limits of the finite positive values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, [2.0, 98.0])
    return float(lo), float(max(hi, lo))


def size_column(table: pd.DataFrame, size_by: str | None) -> np.ndarray:
    """Values that set the marker size ('intensity', 'score', ...; None: all equal)."""
    if size_by is None:
        return np.ones(len(table))
    if size_by not in SIZE_COLUMNS:
        raise BraggflowError(f"size_by must be one of {', '.join(SIZE_COLUMNS)} or None, got {size_by!r}")
    if size_by not in table.columns:
        raise BraggflowError(f"the peak table has no {size_by!r} column to size markers by")
    return table[size_by].to_numpy(dtype=float)


def peak_colours(table: pd.DataFrame) -> np.ndarray:
    """Marker edge colours: flagged peaks in FLAGGED_COLOUR, the others in PEAK_COLOUR."""
    flagged = table["flags"].to_numpy() != 0 if "flags" in table.columns else np.zeros(len(table), bool)
    return np.where(flagged, FLAGGED_COLOUR, PEAK_COLOUR)


def draw_peaks(ax, table: pd.DataFrame, sizes: np.ndarray):
    """Open circles at (col, row) of each peak; returns the PathCollection."""
    return ax.scatter(
        table["col"].to_numpy(dtype=float), table["row"].to_numpy(dtype=float), s=sizes,
        facecolors="none", edgecolors=peak_colours(table), linewidths=0.8,
    )


def flag_names(table: pd.DataFrame | None) -> list[str]:
    """Names of the flags set on any peak of ``table`` (``edge``, ``saturated``, ...), in bit order."""
    from braggflow.schema import describe_flags

    if table is None or "flags" not in table.columns or not len(table):
        return []
    combined = int(np.bitwise_or.reduce(table["flags"].to_numpy().astype(np.int64)))
    return describe_flags(combined)


def legend_handles(with_mask: bool, with_reference: bool = False, flags: list[str] | None = None):
    """Legend entries for peaks, flagged peaks and (optionally) reference peaks and masked pixels.

    ``flags`` names the flags set on the peaks drawn (:func:`flag_names`); the
    flagged entry lists them (``flagged: edge, saturated``), or says "any flag".
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shown = flags if flags is not None else []
    flagged = "flagged: " + (", ".join(n.replace("_", " ") for n in shown[:4]) + (", ..." if len(shown) > 4 else "")
                             if shown else "any flag (none here)" if flags is not None else "any flag")
    handles = [
        Line2D([], [], marker="o", ls="", mfc="none", mec=PEAK_COLOUR, label="peak, no flag"),
        Line2D([], [], marker="o", ls="", mfc="none", mec=FLAGGED_COLOUR, label=flagged),
    ]
    if with_reference:
        handles.append(Line2D([], [], marker="+", ls="", mec=REFERENCE_COLOUR, label="reference"))
    if with_mask:
        handles.append(Patch(color=MASK_COLOUR, label="masked"))
    return handles


def frame_peaks(table: pd.DataFrame | None, frame_index: int | None) -> pd.DataFrame:
    """The rows of ``table`` on one frame (all rows when ``frame_index`` is None)."""
    if table is None:
        return pd.DataFrame({"row": [], "col": []})
    missing = [c for c in ("row", "col") if c not in table.columns]
    if missing:
        raise BraggflowError(f"the peak table lacks column(s) {', '.join(missing)}")
    if frame_index is None or "frame" not in table.columns:
        return table
    return table[table["frame"].to_numpy() == frame_index]


# ---------------------------------------------------------------- learned features (kind, extent in q and chi)
def feature_rows(table: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of ``table`` that are features of the learned detector, with their extents.

    A feature has a ``kind`` (ring, arc, spot) and a centre ``q`` (1/Å) with
    ``eta`` or ``chi`` (deg), and its extent as ``q_width``, ``chi_width`` (full
    widths around the centre) or as ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``
    (the detector's and the label files' boxes).

    Returns
    -------
    features : pandas.DataFrame
        ``kind``, ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi`` (1/Å, deg) of the
        rows with a kind and a finite extent; empty when the table has none.
    """
    columns = ["kind", "q_lo", "q_hi", "chi_lo", "chi_hi"]
    if table is None or "kind" not in table.columns or not len(table):
        return pd.DataFrame(columns=columns)
    kind = table["kind"].astype(object)
    rows = table[kind.isin(("ring", "arc", "spot")).to_numpy()]
    if {"q_lo", "q_hi", "chi_lo", "chi_hi"} <= set(rows.columns):
        out = rows[["q_lo", "q_hi", "chi_lo", "chi_hi"]].astype(float)
    elif {"q", "q_width", "chi_width"} <= set(rows.columns) and ("eta" in rows.columns or "chi" in rows.columns):
        chi = rows["eta" if "eta" in rows.columns else "chi"].to_numpy(dtype=float)
        q, dq = rows["q"].to_numpy(dtype=float), rows["q_width"].to_numpy(dtype=float) / 2
        dchi = rows["chi_width"].to_numpy(dtype=float) / 2
        out = pd.DataFrame(dict(q_lo=q - dq, q_hi=q + dq, chi_lo=np.maximum(chi - dchi, -180.0),
                                chi_hi=np.minimum(chi + dchi, 180.0)), index=rows.index)
    else:
        raise BraggflowError("the feature table has a kind column but no extent: it needs q, eta (or chi), q_width "
                             "and chi_width, or q_lo, q_hi, chi_lo, chi_hi")
    out.insert(0, "kind", rows["kind"].astype(str).to_numpy())
    finite = np.isfinite(out[columns[1:]].to_numpy()).all(1)
    return out[finite].reset_index(drop=True)


def box_outline(q_lo: float, q_hi: float, chi_lo: float, chi_hi: float, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Points around a (q, chi) box, closed: ``n`` along each edge (edges of constant q are arcs on the detector)."""
    t = np.linspace(0.0, 1.0, n)
    q = np.concatenate([np.full(n, q_lo), q_lo + (q_hi - q_lo) * t, np.full(n, q_hi), q_hi - (q_hi - q_lo) * t])
    chi = np.concatenate([chi_lo + (chi_hi - chi_lo) * t, np.full(n, chi_hi), chi_hi - (chi_hi - chi_lo) * t,
                          np.full(n, chi_lo)])
    return q, chi


def feature_outlines(features: pd.DataFrame, to: str, geometry=None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The outline of each feature's extent in the coordinates of a picture.

    Parameters
    ----------
    features : pandas.DataFrame
        From :func:`feature_rows`.
    to : {"detector", "q", "polar", "qxy-qz"}
        "detector": (col, row) pixels; "q": (q, chi); "polar": (2theta, chi);
        "qxy-qz": (q_xy, q_z).
    geometry : Geometry, optional
        Needed for every ``to`` but "q"; "qxy-qz" needs its incidence angle.

    Returns
    -------
    outlines : list of (kind, x, y)
        x and y: the outline's points along the picture's horizontal and
        vertical axes (NaN where a point falls off the detector).

    Raises
    ------
    BraggflowError
        If the geometry is missing where it is needed.
    """
    if to != "q" and geometry is None:
        raise BraggflowError(f"drawing features on the {to} picture needs the detector geometry")
    if to == "qxy-qz" and not geometry.has_incidence:
        raise BraggflowError("drawing features on the (q_xy, q_z) map needs a geometry with an incidence angle")
    out = []
    for f in features.itertuples():
        q, chi = box_outline(f.q_lo, f.q_hi, f.chi_lo, f.chi_hi)
        if to == "q":
            x, y = q, chi
        elif to == "polar":
            x, y = geometry.q_to_two_theta(q), chi
        else:
            with np.errstate(all="ignore"):
                row, col = geometry.angles_to_pixel(geometry.q_to_two_theta(q), chi)
            row, col = np.asarray(row, dtype=float), np.asarray(col, dtype=float)
            if to == "detector":
                x, y = col, row
            else:
                on = np.isfinite(row) & np.isfinite(col)
                x, y = np.full(row.shape, np.nan), np.full(row.shape, np.nan)
                if on.any():
                    qxy, qz = geometry.pixel_to_qxy_qz(row[on], col[on])
                    x[on], y[on] = qxy, qz
        out.append((f.kind, np.asarray(x, dtype=float), np.asarray(y, dtype=float)))
    return out


def draw_features(ax, features: pd.DataFrame, to: str, geometry=None) -> dict:
    """Draw the outlines of features on ``ax``, coloured by kind (:data:`braggflow.viz.style.FEATURE_COLOURS`).

    Returns
    -------
    collections : dict
        Kind -> the LineCollection drawn (label ``"ring (3)"`` etc. for the legend).
    """
    from matplotlib.collections import LineCollection

    from braggflow.viz.style import FEATURE_COLOURS

    drawn = {}
    outlines = feature_outlines(features, to, geometry)
    for kind, colour in FEATURE_COLOURS.items():
        segments = [np.column_stack([x, y]) for k, x, y in outlines if k == kind]
        if not segments:
            continue
        lines = LineCollection(segments, colors=colour, linewidths=1.1, label=f"{kind} ({len(segments)})")
        ax.add_collection(lines, autolim=False)
        drawn[kind] = lines
    return drawn


def feature_handles(kinds: dict) -> list:
    """Legend entries for the feature kinds drawn (:func:`draw_features`' result)."""
    from matplotlib.lines import Line2D

    from braggflow.viz.style import FEATURE_COLOURS

    return [Line2D([], [], color=FEATURE_COLOURS[k], lw=1.5, label=lines.get_label()) for k, lines in kinds.items()]
