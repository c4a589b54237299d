"""Peaks kept after finding: the largest spot size and the resolution limits of the ``find`` section.

The finder (:mod:`braggflow.find`) decides what is a peak; these limits then
drop peaks by what the user wants measured, as ``dials.find_spots`` does with
``max_spot_size`` and ``d_min`` / ``d_max``:

- ``find.max_size``: a region of more pixels above the threshold (``npix``)
  is not a Bragg spot (a diffuse streak, a shadow's edge, an ice ring arc);
- ``find.d_min`` / ``find.d_max``: peaks outside the resolution shell
  ``d_min <= d <= d_max`` (Å) are dropped; they need the geometry, which
  gives ``d``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError

__all__ = ["select_peaks", "check_selection"]


def check_selection(find, *, geometry_known: bool) -> None:
    """Refuse resolution limits without a geometry to compute ``d`` from.

    Parameters
    ----------
    find : braggflow.pipeline.config.FindOptions
        The ``find`` section.
    geometry_known : bool
        Whether the run has a geometry (PONI, ``geometry.*`` keys or the input's metadata).

    Raises
    ------
    ConfigError
        If ``find.d_min`` or ``find.d_max`` is set and the geometry is not known.
    """
    given = [f"find.{key}" for key in ("d_min", "d_max") if getattr(find, key, None) is not None]
    if given and not geometry_known:
        raise ConfigError(f"{' and '.join(given)}: resolution limits need the detector geometry (give --poni FILE, "
                          "--distance/--beam-row/--beam-col/--pixel-size/--wavelength, or geometry.* keys)")


def select_peaks(table: pd.DataFrame, find) -> pd.DataFrame:
    """The rows of a peak table within ``find.max_size`` and the resolution shell ``find.d_min``-``find.d_max``.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``npix`` and (for the resolution limits) ``d`` in Å.
    find : braggflow.pipeline.config.FindOptions
        The ``find`` section; limits left at None are not applied.

    Returns
    -------
    table : pandas.DataFrame
        The peaks kept, index reset; ``table`` itself when no limit is set.
        A peak whose ``d`` is NaN (no geometry value) is dropped by a
        resolution limit: its resolution is not known to be inside.

    Raises
    ------
    ConfigError
        If a resolution limit is set and the table has no ``d`` column.
    """
    max_size = getattr(find, "max_size", None)
    d_min, d_max = getattr(find, "d_min", None), getattr(find, "d_max", None)
    if max_size is None and d_min is None and d_max is None:
        return table
    keep = np.ones(len(table), dtype=bool)
    if max_size is not None and "npix" in table.columns:
        keep &= table["npix"].to_numpy() <= max_size
    if d_min is not None or d_max is not None:
        if "d" not in table.columns:
            raise ConfigError("find.d_min / find.d_max: the peak table has no d column (no geometry)")
        d = table["d"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            if d_min is not None:
                keep &= d >= d_min
            if d_max is not None:
                keep &= d <= d_max
    if keep.all():
        return table
    return table[keep].reset_index(drop=True)
