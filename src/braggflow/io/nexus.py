"""NeXus layout of braggflow's HDF5 files: groups with ``NX_class``, NXdata plots, units, instrument and sample.

The results file (:mod:`braggflow.io.results`) and the images and profiles
written by ``braggflow remap`` and ``braggflow azimuthal`` are laid out with
NeXus discipline (NeXus base classes, NIAC, https://manual.nexusformat.org):

- every group carries ``NX_class``; every dataset of a physical quantity
  carries ``units`` as a UDUNITS string (``angstrom``, ``1/angstrom``,
  ``degree``, ``pixel``, ``counts``, ``mm``, ``keV``, ``s``);
- plottable data are ``NXdata`` groups with ``signal`` and ``axes`` (a string
  array attribute) and ``<axis>_indices``, and ``@default`` attributes lead
  from the file's root to one of them (what h5web and silx show first);
- the instrument (``NXinstrument`` with ``NXsource``, ``NXbeam``,
  ``NXdetector``) and the sample (``NXsample``) are described from the
  geometry when it is known.

Writers here take an open :class:`h5py.Group`; they never open files.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TABLE_UNITS",
    "column_units",
    "now_iso",
    "set_nxdata",
    "write_nxdata",
    "write_peaks_data",
    "write_peak_map",
    "write_peak_map_columns",
    "write_frames_data",
    "write_instrument",
    "write_sample",
    "raw_frame_links",
]

#: Units of the columns of tables other than the peak and frames tables (refined cells, tracks, spots).
TABLE_UNITS: dict[str, str] = {
    **{name: "angstrom" for name in ("a", "b", "c", "a_err", "b_err", "c_err", "d_obs", "d_calc", "d_err")},
    **{name: "degree" for name in ("alpha", "beta", "gamma", "alpha_err", "beta_err", "gamma_err",
                                   "omega_start", "omega_end", "omega_mean", "omega_err", "omega_width")},
    "volume": "angstrom^3", "volume_err": "angstrom^3",
    **{name: "pixel" for name in ("row_mean", "col_mean", "row_std", "col_std", "displacement")},
    **{name: "1/angstrom" for name in ("q_obs", "q_calc", "q_mean", "q_std")},
    **{name: "counts" for name in ("intensity_sum", "intensity_mean", "intensity_max")},
}


def column_units(name: str) -> str:
    """The UDUNITS string of a table column ("" for a dimensionless or unknown one).

    Peak-table and frames-table columns take their unit from
    :mod:`braggflow.schema`; other tables' columns from :data:`TABLE_UNITS`.

    Parameters
    ----------
    name : str
        Column name.

    Returns
    -------
    units : str
    """
    from braggflow.schema import COLUMNS, FRAME_COLUMNS

    for columns in (COLUMNS, FRAME_COLUMNS):
        if name in columns:
            return columns[name].unit
    return TABLE_UNITS.get(name, "")


def now_iso() -> str:
    """The current time as an ISO 8601 string with its UTC offset (NeXus ``NX_DATE_TIME``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def set_nxdata(group, signal: str, axes: Sequence[str], *, indices: dict[str, int] | None = None,
               title: str | None = None, auxiliary: Sequence[str] = ()) -> None:
    """Make an existing group an ``NXdata`` plot: ``signal``, ``axes`` (string array) and ``<axis>_indices``.

    Parameters
    ----------
    group : h5py.Group
        Holds the signal and axis datasets already.
    signal : str
        Name of the signal dataset.
    axes : sequence of str
        Axis dataset names, one per signal dimension (``"."`` for a dimension
        without one).
    indices : dict of {str: int}, optional
        ``<axis>_indices`` of further axis datasets (other coordinates along
        a dimension, such as ``eta`` beside ``two_theta`` for a 1D table of
        peaks); the axes of ``axes`` get their position.
    title : str, optional
    auxiliary : sequence of str
        Names of further signals of the same shape (``auxiliary_signals``).
    """
    import h5py

    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = np.array(list(axes), dtype=h5py.string_dtype())
    for name, value in {**(indices or {}), **{name: i for i, name in enumerate(axes) if name != "."}}.items():
        group.attrs[f"{name}_indices"] = np.int32(value)
    if auxiliary:
        group.attrs["auxiliary_signals"] = np.array(list(auxiliary), dtype=h5py.string_dtype())
    if title:
        group.create_dataset("title", data=title)


def write_nxdata(parent, name: str, signal: tuple[str, np.ndarray, str],
                 axes: Sequence[tuple[str, np.ndarray, str]], *, errors: np.ndarray | None = None,
                 title: str | None = None, long_names: dict[str, str] | None = None):
    """Write an ``NXdata`` group: a signal with its axes, each with units.

    Parameters
    ----------
    parent : h5py.Group
    name : str
        Name of the new group.
    signal : (str, ndarray, str)
        Name, values and units of the signal (e.g. ``("intensity", I, "counts")``).
    axes : sequence of (str, ndarray, str)
        Name, 1D values and units of each axis, in the order of the signal's
        dimensions (row axis first for an image).
    errors : ndarray, optional
        1-sigma errors of the signal, stored as ``<signal>_errors``.
    title : str, optional
    long_names : dict of {str: str}, optional
        ``long_name`` attributes (axis labels with units) by dataset name.

    Returns
    -------
    group : h5py.Group

    Raises
    ------
    ValueError
        If an axis' length is not that of its signal dimension.
    """
    sname, values, sunits = signal
    values = np.asarray(values)
    for dim, (aname, avalues, _) in enumerate(axes):
        if np.asarray(avalues).shape != (values.shape[dim],):
            raise ValueError(f"NXdata {name}: axis {aname!r} has shape {np.shape(avalues)}, "
                             f"expected ({values.shape[dim]},)")
    group = parent.create_group(name)
    ds = group.create_dataset(sname, data=values, compression="gzip", compression_opts=1)
    if sunits:
        ds.attrs["units"] = sunits
    if errors is not None:
        err = group.create_dataset(f"{sname}_errors", data=np.asarray(errors), compression="gzip", compression_opts=1)
        if sunits:
            err.attrs["units"] = sunits
    for aname, avalues, aunits in axes:
        ads = group.create_dataset(aname, data=np.asarray(avalues))
        if aunits:
            ads.attrs["units"] = aunits
    for dname, label in (long_names or {}).items():
        group[dname].attrs["long_name"] = label
    set_nxdata(group, sname, [a[0] for a in axes], title=title)
    return group


def _scatter_axes(table: pd.DataFrame) -> tuple[str, str]:
    """The two peak-table columns to plot the peaks against: q_xy-q_z, two_theta-eta, or col-row."""
    for x, y in (("q_xy", "q_z"), ("two_theta", "eta")):
        if x in table and y in table and len(table) and np.isfinite(table[x].to_numpy(dtype=float)).any():
            return x, y
    return "col", "row"


def write_peaks_data(group, table: pd.DataFrame) -> None:
    """Make the peak table's group an ``NXdata``: the peaks' intensities against their position.

    The signal is ``intensity``, one value per peak; its axis is ``q_xy``
    (grazing incidence), ``two_theta`` (geometry known) or ``col``, with
    ``q_z``, ``eta`` or ``row`` as a second coordinate of the same dimension
    (``<name>_indices = 0``).  The group holds one 1D dataset per column,
    written before (with :func:`braggflow.io.tables.write_table`).

    Parameters
    ----------
    group : h5py.Group
    table : pandas.DataFrame
        The table written into ``group``.
    """
    x, y = _scatter_axes(table)
    set_nxdata(group, "intensity", [x], indices={y: 0}, title=f"Bragg peaks: intensity against {x} (and {y})")


#: Bins of the peak map (:func:`write_peak_map`) along each axis.
PEAK_MAP_BINS = 200


def write_peak_map(entry, table: pd.DataFrame, *, frame_shape: Sequence[int] | None = None) -> None:
    """``/entry/peak_map`` (NXdata): the number of peaks in bins of (q_z, q_xy), (eta, two_theta) or (row, col).

    A 2D histogram over every frame: where the peaks are, in reciprocal space
    when the geometry is known, else on the detector.  Nothing is written for
    a table without a finite position.

    Parameters
    ----------
    entry : h5py.Group
    table : pandas.DataFrame
        The peak table.
    frame_shape : (int, int), optional
        Detector shape (rows, columns): the range of the detector map.
    """
    x, y = _scatter_axes(table)
    xs = table[x].to_numpy(dtype=float) if len(table) else np.array([])
    ys = table[y].to_numpy(dtype=float) if len(table) else np.array([])
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.any():
        return
    xs, ys = xs[keep], ys[keep]
    if x == "col" and frame_shape is not None:
        ranges = [(-0.5, frame_shape[0] - 0.5), (-0.5, frame_shape[1] - 0.5)]
    else:
        ranges = [_padded_range(ys), _padded_range(xs)]
    counts, y_edges, x_edges = np.histogram2d(ys, xs, bins=PEAK_MAP_BINS, range=ranges)
    units = column_units
    write_nxdata(entry, "peak_map", ("peaks", counts.astype(np.int32), ""),
                 [(y, 0.5 * (y_edges[1:] + y_edges[:-1]), units(y)), (x, 0.5 * (x_edges[1:] + x_edges[:-1]), units(x))],
                 title=f"peaks per bin of ({y}, {x}), all frames",
                 long_names={"peaks": "peaks per bin", y: _label(y), x: _label(x)})


def write_peak_map_columns(entry, group, x: str, y: str, *, frame_shape: Sequence[int] | None = None,
                           rows: int = 65536) -> None:
    """``/entry/peak_map`` as :func:`write_peak_map` makes it, from the columns ``x`` and ``y`` of a stored table.

    The columns are read ``rows`` at a time, twice (their range, then the
    histogram), so the peak table is never held whole.

    Parameters
    ----------
    entry : h5py.Group
    group : h5py.Group
        The peak table's group (one 1D dataset per column).
    x, y : str
        The map's columns (``q_xy``/``q_z``, ``two_theta``/``eta`` or ``col``/``row``).
    frame_shape : (int, int), optional
        Detector shape (rows, columns): the range of the detector map.
    rows : int
        Rows read at a time.
    """
    if x not in group or y not in group:
        return
    n = len(group[x])

    def parts():
        for start in range(0, n, rows):
            xs = group[x][start:start + rows].astype(float)
            ys = group[y][start:start + rows].astype(float)
            keep = np.isfinite(xs) & np.isfinite(ys)
            if keep.any():
                yield xs[keep], ys[keep]

    if x == "col" and frame_shape is not None:
        ranges = [(-0.5, frame_shape[0] - 0.5), (-0.5, frame_shape[1] - 0.5)]
    else:
        lows, highs = [np.inf, np.inf], [-np.inf, -np.inf]
        for xs, ys in parts():
            lows = [min(lows[0], ys.min()), min(lows[1], xs.min())]
            highs = [max(highs[0], ys.max()), max(highs[1], xs.max())]
        if not np.isfinite(lows[0]):
            return
        ranges = [_padded_range(np.array([lows[k], highs[k]])) for k in (0, 1)]
    counts = np.zeros((PEAK_MAP_BINS, PEAK_MAP_BINS))
    edges = None
    for xs, ys in parts():
        part, y_edges, x_edges = np.histogram2d(ys, xs, bins=PEAK_MAP_BINS, range=ranges)
        counts += part
        edges = (y_edges, x_edges)
    if edges is None:
        return
    y_edges, x_edges = edges
    units = column_units
    write_nxdata(entry, "peak_map", ("peaks", counts.astype(np.int32), ""),
                 [(y, 0.5 * (y_edges[1:] + y_edges[:-1]), units(y)), (x, 0.5 * (x_edges[1:] + x_edges[:-1]), units(x))],
                 title=f"peaks per bin of ({y}, {x}), all frames",
                 long_names={"peaks": "peaks per bin", y: _label(y), x: _label(x)})


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    """The range of ``values`` widened by half a percent on each side (a single value gets +-0.5)."""
    low, high = float(values.min()), float(values.max())
    pad = 0.005 * (high - low) or 0.5
    return low - pad, high + pad


def _label(name: str) -> str:
    """An axis label with its unit, e.g. ``"two_theta (degree)"``."""
    unit = column_units(name)
    return f"{name} ({unit})" if unit else name


def write_frames_data(group, table: pd.DataFrame) -> None:
    """Make the frames table's group an ``NXdata`` plot of the peaks per frame (against omega when known).

    Parameters
    ----------
    group : h5py.Group
        Holds the frames table (one 1D dataset per column).
    table : pandas.DataFrame
        The frames table written into ``group``.
    """
    omega = table["omega"].to_numpy(dtype=float) if "omega" in table else np.array([])
    axis = "omega" if omega.size and np.isfinite(omega).all() else "frame"
    set_nxdata(group, "n_peaks", [axis], auxiliary=[c for c in ("background", "noise") if c in table],
               title="peaks per frame")


def raw_frame_links(series) -> list[tuple[str, str]]:
    """The HDF5 datasets a series reads its frames from: (absolute file name, dataset path) pairs.

    Parameters
    ----------
    series : braggflow.io.series.FrameSeries
        An HDF5 series (one file with ``datasets``, or several ``parts``); other
        series give none.

    Returns
    -------
    links : list of (str, str)
    """
    parts = getattr(series, "parts", None) or [series]
    out = []
    for part in parts:
        path, datasets = getattr(part, "path", None), getattr(part, "datasets", None)
        if path is None or not datasets:
            continue
        out += [(os.path.abspath(str(path)), str(d)) for d in datasets]
    return out


def _field(group, name: str, value, units: str = "", **attrs):
    ds = group.create_dataset(name, data=value)
    if units:
        ds.attrs["units"] = units
    for key, val in attrs.items():
        ds.attrs[key] = val
    return ds


def write_instrument(entry, instrument: dict[str, Any] | None, *, frame_shape: Sequence[int] | None = None,
                     raw_frames: Sequence[tuple[str, str]] = ()) -> None:
    """``/entry/instrument`` (NXinstrument): the X-ray source, the beam, the detector, links to the raw frames.

    ``source`` (NXsource, ``probe``), ``beam`` (NXbeam, ``incident_wavelength``
    and ``incident_energy``: where NeXus keeps the wavelength of a
    monochromatic beam; only when it is known) and ``detector`` (NXdetector:
    ``distance``, ``x_pixel_size``, ``y_pixel_size``, ``beam_center_x``,
    ``beam_center_y`` in pixels from the detector's corner as NXmx counts
    them (column + 0.5, row + 0.5 of braggflow's pixel-centred indices), ``frame_shape``,
    ``masked_pixels``, ``saturation_value``, ``data``).

    Parameters
    ----------
    entry : h5py.Group
        The ``NXentry`` group.
    instrument : dict or None
        What is known: ``wavelength_A``, ``energy_keV``, ``distance_mm``,
        ``pixel_size_mm`` (row, col), ``beam_center`` (row, col, px),
        ``masked_pixels``, ``saturation``, ``geometry_source``.
    frame_shape : (int, int), optional
        Detector shape in pixels (rows, columns).
    raw_frames : sequence of (str, str)
        (file, dataset) of the raw frames: external links ``detector/data``
        (one) or ``detector/data_NNNNN`` (several).
    """
    import h5py

    info = dict(instrument or {})
    inst = entry.create_group("instrument")
    inst.attrs["NX_class"] = "NXinstrument"
    source = inst.create_group("source")
    source.attrs["NX_class"] = "NXsource"
    _field(source, "probe", "x-ray")
    if info.get("wavelength_A") is not None:
        beam = inst.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        _field(beam, "incident_wavelength", float(info["wavelength_A"]), "angstrom")
        if info.get("energy_keV") is not None:
            _field(beam, "incident_energy", float(info["energy_keV"]), "keV")
    det = inst.create_group("detector")
    det.attrs["NX_class"] = "NXdetector"
    _field(det, "layout", "area")
    if info.get("distance_mm") is not None:
        _field(det, "distance", float(info["distance_mm"]), "mm")
    if info.get("pixel_size_mm") is not None:
        rows, cols = (float(v) for v in np.broadcast_to(info["pixel_size_mm"], 2))
        _field(det, "x_pixel_size", cols, "mm")
        _field(det, "y_pixel_size", rows, "mm")
    if info.get("beam_center") is not None:
        row, col = (float(v) for v in info["beam_center"])  # NXmx counts pixels from the corner: centre at i + 0.5
        _field(det, "beam_center_x", col + 0.5, "pixel", long_name="direct beam, column + 0.5 (from the corner)")
        _field(det, "beam_center_y", row + 0.5, "pixel", long_name="direct beam, row + 0.5 (from the corner)")
    if frame_shape is not None:
        _field(det, "frame_shape", np.asarray(frame_shape, dtype=np.int64), "pixel")
    if info.get("masked_pixels") is not None:
        _field(det, "masked_pixels", np.int64(info["masked_pixels"]))
    if info.get("saturation") is not None and np.isfinite(info["saturation"]):
        _field(det, "saturation_value", float(info["saturation"]), "counts")
    if info.get("geometry_source"):
        det.attrs["geometry_source"] = str(info["geometry_source"])
    links = list(raw_frames)
    for i, (path, dataset) in enumerate(links):
        det[("data" if len(links) == 1 else f"data_{i:05d}")] = h5py.ExternalLink(path, dataset)


def write_sample(entry, instrument: dict[str, Any] | None) -> None:
    """``/entry/sample`` (NXsample), with the grazing-incidence angle when one is given.

    Parameters
    ----------
    entry : h5py.Group
    instrument : dict or None
        ``incidence_angle_deg`` (grazing incidence), ``tilt_angle_deg``.
    """
    info = dict(instrument or {})
    sample = entry.create_group("sample")
    sample.attrs["NX_class"] = "NXsample"
    if info.get("incidence_angle_deg") is not None:
        _field(sample, "incident_angle", float(info["incidence_angle_deg"]), "degree",
               long_name="grazing incidence angle of the beam on the sample surface")
        if info.get("tilt_angle_deg") is not None:
            _field(sample, "tilt_angle", float(info["tilt_angle_deg"]), "degree",
                   long_name="sample tilt about the beam")


def _plot_file(path, title: str, sources: Sequence[str] = ()):
    """A new NeXus file (NXroot, NXentry with program and time) open for writing; returns (file, entry)."""
    import h5py

    from braggflow import __version__

    h5 = h5py.File(path, "w")
    h5.attrs["NX_class"] = "NXroot"
    h5.attrs["default"] = "entry"
    h5.attrs["creator"] = f"braggflow {__version__}"
    h5.attrs["file_name"] = os.path.basename(str(path))
    h5.attrs["file_time"] = now_iso()
    entry = h5.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    entry.create_dataset("title", data=title)
    entry.create_dataset("start_time", data=now_iso())
    entry.create_dataset("program_name", data="braggflow").attrs["version"] = __version__
    process = entry.create_group("process")
    process.attrs["NX_class"] = "NXprocess"
    process.create_dataset("program", data="braggflow")
    process.create_dataset("version", data=__version__)
    process.create_dataset("date", data=now_iso())
    if sources:
        process.create_dataset("sources", data=np.array([os.path.abspath(s) for s in sources],
                                                        dtype=h5py.string_dtype()))
    return h5, entry


#: Names, units and labels of the remapped images' axes (``braggflow remap``), by target.
REMAP_AXES = {
    "q": (("eta", "degree", "eta (degree)"), ("q", "1/angstrom", "q (1/angstrom)")),
    "polar": (("eta", "degree", "eta (degree)"), ("two_theta", "degree", "2θ (degree)")),
    "qxy-qz": (("q_z", "1/angstrom", "q_z (1/angstrom)"), ("q_xy", "1/angstrom", "q_xy (1/angstrom)")),
}


def write_remap_file(path, image: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, *, to: str,
                     sources: Sequence[str] = ()) -> None:
    """Write a remapped frame (``braggflow remap``) as a NeXus file: ``/entry/remap`` NXdata, the default plot.

    Parameters
    ----------
    path : str or Path
        Output HDF5 file (replaced).
    image : (N0, N1) ndarray of float
        Mean intensity per bin (counts per pixel), NaN where empty.
    axis0, axis1 : (N0,), (N1,) ndarray
        Bin centres along rows and columns, in the units of :data:`REMAP_AXES`.
    to : {"q", "polar", "qxy-qz"}
        The target of the remap.
    sources : sequence of str
        The frame files remapped (recorded in ``/entry/process/sources``).

    Raises
    ------
    ValueError
        For an unknown target or axes that do not fit the image.
    """
    if to not in REMAP_AXES:
        raise ValueError(f"remap target {to!r}: expected one of {', '.join(REMAP_AXES)}")
    (n0, u0, l0), (n1, u1, l1) = REMAP_AXES[to]
    h5, entry = _plot_file(path, f"frame remapped to ({n0}, {n1})", sources)
    with h5:
        entry.attrs["default"] = "remap"
        write_nxdata(entry, "remap", ("intensity", np.asarray(image, dtype=np.float32), "counts"),
                     [(n0, axis0, u0), (n1, axis1, u1)], title=f"intensity in bins of ({n0}, {n1})",
                     long_names={"intensity": "mean intensity per pixel (counts)", n0: l0, n1: l1})
        entry["remap"].attrs["interpretation"] = "image"


def write_profile_file(path, profile: pd.DataFrame, *, sources: Sequence[str] = ()) -> None:
    """Write an azimuthal profile I(q) or I(two_theta) (``braggflow azimuthal``) as a NeXus file.

    ``/entry/profile`` (NXdata, the default plot): ``intensity`` with
    ``intensity_errors`` against ``q`` (1/angstrom) or ``two_theta``
    (degree), and ``count`` (pixels per bin).

    Parameters
    ----------
    path : str or Path
        Output HDF5 file (replaced).
    profile : pandas.DataFrame
        Columns ``q`` or ``two_theta``, ``intensity``, ``intensity_err``, ``count``
        (:func:`braggflow.geometry.azimuthal.azimuthal_profile`).
    sources : sequence of str

    Raises
    ------
    ValueError
        If the profile has neither ``q`` nor ``two_theta``.
    """
    axis = "q" if "q" in profile else "two_theta" if "two_theta" in profile else None
    if axis is None:
        raise ValueError("azimuthal profile: needs a q or two_theta column")
    h5, entry = _plot_file(path, f"azimuthal profile I({axis})", sources)
    with h5:
        entry.attrs["default"] = "profile"
        err = profile["intensity_err"].to_numpy(dtype=float) if "intensity_err" in profile else None
        group = write_nxdata(entry, "profile", ("intensity", profile["intensity"].to_numpy(dtype=float), "counts"),
                             [(axis, profile[axis].to_numpy(dtype=float), column_units(axis))], errors=err,
                             title=f"azimuthal profile I({axis})",
                             long_names={"intensity": "intensity per pixel (counts)", axis: _label(axis)})
        if "count" in profile:
            group.create_dataset("count", data=profile["count"].to_numpy()).attrs["long_name"] = "pixels in the bin"
