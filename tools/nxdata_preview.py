"""Draw the default plot of a NeXus file, the NXdata that silx's ``get_default`` finds (what h5web and ``silx view``
open first), and the peak map beside it, for the documentation.

    python tools/nxdata_preview.py RESULTS.h5 OUT.png

Uses :func:`silx.io.nxdata.get_default` to find the plot and its axes, and matplotlib to draw it (``silx view``
needs a Qt display, h5web a browser).
"""

from __future__ import annotations

import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from silx.io import nxdata  # noqa: E402


def _label(dataset) -> str:
    units = dataset.attrs.get("units", "")
    units = units.decode() if isinstance(units, bytes) else units
    name = dataset.name.rsplit("/", 1)[-1]
    return f"{name} ({units})" if units else name


def main(path: str, out: str) -> None:
    with h5py.File(path) as h5:
        default = nxdata.get_default(h5)
        if default is None:
            raise SystemExit(f"{path}: silx finds no default NXdata")
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        x = default.axes[0][()] if default.axes and default.axes[0] is not None else np.arange(len(default.signal))
        y = np.asarray(default.signal[()], dtype=float)
        x = np.asarray(x, dtype=float)
        step = np.diff(x)
        gap = np.flatnonzero(np.abs(step) > 3 * np.median(np.abs(step))) + 1 if len(x) > 2 else []
        axes[0].plot(np.insert(x, gap, np.nan), np.insert(y, gap, np.nan), ".-", ms=3)  # no line across a gap
        axes[0].set_xlabel(_label(default.axes[0]) if default.axes and default.axes[0] is not None else "index")
        axes[0].set_ylabel(_label(default.signal))
        axes[0].set_title(f"default plot: {default.group.name}")
        if "entry/peak_map" in h5:
            peak_map = nxdata.NXdata(h5["entry/peak_map"])
            extent = [peak_map.axes[1][()][0], peak_map.axes[1][()][-1], peak_map.axes[0][()][-1],
                      peak_map.axes[0][()][0]]
            image = axes[1].imshow(peak_map.signal[()], extent=extent, aspect="auto", cmap="viridis",
                                   norm=matplotlib.colors.LogNorm() if peak_map.signal[()].max() > 10 else None)
            axes[1].set_xlabel(_label(peak_map.axes[1]))
            axes[1].set_ylabel(_label(peak_map.axes[0]))
            axes[1].set_title("/entry/peak_map")
            fig.colorbar(image, ax=axes[1], label=_label(peak_map.signal))
        fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
