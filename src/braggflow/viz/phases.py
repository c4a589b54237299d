"""Plots of phase identification: observed lines over predicted ones, in q and in (q_xy, q_z)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_identification", "miller_label"]


def plot_identification(result, path: str | Path | None = None, *, profile=None, max_phases: int = 3, title: str = ""):
    """Plot observed lines (and I(q)) over each top phase's predicted lines, and GIXD spots.

    Predicted lines hang below the axis: red when matched (labelled with their
    Miller indices, ``(121)``), orange when expected but not found, grey when
    too weak to be expected; a legend under the panels says so.

    Parameters
    ----------
    result : braggflow.phases.Identification
    path : str or Path, optional
        PNG file to write; None: return the figure only.
    profile : pandas.DataFrame, optional
        I(q) (``q``, ``intensity``); default: ``result.profile`` when present.
    max_phases : int
        Phases shown (best first), one panel each.
    title : str

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    from braggflow.viz import style

    profile = profile if profile is not None else getattr(result, "profile", None)
    names = list(result.ranked["phase"])[:max_phases]
    gixd = [n for n in names if result.matches[n].contact_plane != "random"]
    ncols = 2 if gixd else 1
    fig = style.figure((9 if ncols == 1 else 13, 2.3 * len(names) + 1.0), 110)
    axes = fig.subplots(len(names), ncols, squeeze=False, sharex="col")
    obs = result.assignment
    q_lo, q_hi = float(obs["q"].min()) * 0.9, float(obs["q"].max()) * 1.05
    for r, name in enumerate(names):
        m = result.matches[name]
        ax = axes[r, 0]
        if profile is not None and len(profile):
            sel = (profile["q"] >= q_lo) & (profile["q"] <= q_hi)
            ax.plot(profile["q"][sel], profile["intensity"][sel], color="0.4", lw=0.8, label="I(q)")
            top = float(profile["intensity"][sel].max())
        else:
            top = 1.0
        ax.vlines(obs["q"], 0, top * 1.05, color="tab:blue", lw=0.6, alpha=0.6, label="observed")
        pred = m.predicted
        if len(pred):
            scale = top / max(float(pred["intensity"].max()), 1e-12)
            for row in pred.itertuples():
                color = "tab:red" if row.matched else ("tab:orange" if row.expected else "0.7")
                ax.vlines(row.q, -0.45 * top * min(1.0, row.intensity * scale / top) - 0.02 * top, 0,
                          color=color, lw=1.5)
                if row.matched and row.intensity * scale > 0.08 * top:
                    ax.text(row.q, -0.5 * top * min(1.0, row.intensity * scale / top) - 0.06 * top,
                            miller_label(row.hkl), ha="center", va="top", fontsize=6)
        ax.set_ylim(-0.62 * top, top * 1.1)
        a = m.cell[0] if m.cell else float("nan")
        aerr = m.cell_err[0] if m.cell_err else float("nan")
        ax.set_title(f"#{r + 1} {name}: score {m.score:.2f}, -log10 p = {m.significance:.1f}, "
                     f"{m.n_matched}/{m.n_expected} lines, a = {a:.4f} ± {aerr:.4f} Å"
                     + ("" if m.contact_plane == "random" else f", contact plane ({m.contact_plane})"), fontsize=8)
        ax.set_ylabel("I (counts/px) above,\npredicted (scaled) below", fontsize=7)
        if ncols == 2:
            ax2 = axes[r, 1]
            if m.contact_plane != "random" and "polar" in pred:
                qxy = pred["q"] * np.sin(np.radians(pred["polar"]))
                qz = pred["q"] * np.cos(np.radians(pred["polar"]))
                ax2.scatter(np.concatenate([qxy, -qxy]), np.concatenate([qz, qz]), s=40, facecolors="none",
                            edgecolors="tab:red", label="predicted")
            if "q_xy" in obs:
                ax2.scatter(obs["q_xy"], obs["q_z"], s=8, color="tab:blue", label="observed")
            ax2.set_xlabel("q_xy (1/Å)")
            ax2.set_ylabel("q_z (1/Å)")
            ax2.set_aspect("equal")
            ax2.legend(fontsize=6)
    axes[-1, 0].set_xlabel("q (1/Å)")
    handles = axes[0, 0].get_legend_handles_labels()[0] + [
        Line2D([], [], color="tab:red", lw=1.5, label="predicted, matched"),
        Line2D([], [], color="tab:orange", lw=1.5, label="predicted, expected, not found"),
        Line2D([], [], color="0.7", lw=1.5, label="predicted, too weak to expect"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def miller_label(hkl) -> str:
    """Miller indices as crystallographers write them: ``"1 2 1"`` -> ``"(121)"``, ``"1 -1 10"`` -> ``"(1 -1 10)"``.

    Single-digit non-negative indices are written together; with a negative or
    a two-digit index they stay separated by spaces, so the label reads one way.

    Parameters
    ----------
    hkl : str or sequence of int
        ``"h k l"`` (spaces or commas; of ``"h k l;h k l"``, the first) or (h, k, l).

    Returns
    -------
    label : str
    """
    if isinstance(hkl, str):  # members of a line of equivalent reflections are ';'-separated: the first names it
        parts = hkl.split(";")[0].replace(",", " ").strip("()[] ").split()
    else:
        parts = [str(int(i)) for i in hkl]
    together = all(p.isdigit() and len(p) == 1 for p in parts)
    return "(" + ("" if together else " ").join(parts) + ")"
