"""From a frame or a results file to an identification: the glue the CLI and the pipeline call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError, InputFileError
from braggflow.phases.identify import Identification, assign_peaks, identify, lines_from_peaks, pattern_kind
from braggflow.phases.matching import MatchOptions
from braggflow.phases.structure import Phase, load_phase

__all__ = ["options_for", "observed_rings", "identify_frame", "identify_table", "identify_results", "load_phases"]


def load_phases(paths) -> list[Phase]:
    """Read CIF and YAML phase files (see :func:`~braggflow.phases.structure.load_phase`).

    Parameters
    ----------
    paths : iterable of str or Path

    Returns
    -------
    phases : list of Phase
    """
    return [load_phase(p) for p in paths]


def options_for(geometry, options: MatchOptions | None = None, **changes) -> MatchOptions:
    """Matching options carrying the geometry's wavelength, distance and distance error.

    Parameters
    ----------
    geometry : braggflow.geometry.Geometry
    options : MatchOptions, optional
    **changes
        Other fields to set (None values ignored).

    Returns
    -------
    options : MatchOptions
    """
    from dataclasses import replace

    options = options or MatchOptions()
    fields = dict(wavelength=geometry.wavelength_A, distance_mm=geometry.distance_mm,
                  distance_err_mm=geometry.distance_err_mm)
    fields.update({k: v for k, v in changes.items() if v is not None})
    return replace(options, **fields)


def observed_rings(frame: np.ndarray, geometry, *, mask=None, gain: float = 1.0, min_snr: float = 5.0,
                   npt: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ring positions (maxima of I(q)) of a powder-like frame, and the profile they come from.

    Parameters
    ----------
    frame : (H, W) ndarray
    geometry : Geometry
    mask : (H, W) ndarray of bool, optional
    gain : float
        ADU per photon.
    min_snr : float
    npt : int, optional

    Returns
    -------
    rings : pandas.DataFrame
        ``q``, ``q_err`` (1/Å), ``fwhm``, ``intensity`` (ring area), ...
    profile : pandas.DataFrame
        I(q) from :func:`~braggflow.geometry.azimuthal_profile`.
    """
    from braggflow.geometry.azimuthal import azimuthal_profile, ring_positions

    profile = azimuthal_profile(frame, geometry, mask=mask, gain=gain, npt=npt)
    rings = ring_positions(profile, min_snr=min_snr)
    return rings, profile


def identify_frame(frame: np.ndarray, geometry, phases: list[Phase], *, mask=None, gain: float = 1.0,
                   options: MatchOptions | None = None, p_max: float = 1e-3) -> Identification:
    """Identify the phases of a powder-like (ring) frame from the maxima of its I(q).

    Parameters
    ----------
    frame : (H, W) ndarray
    geometry : Geometry
    phases : list of Phase
    mask : (H, W) ndarray of bool, optional
    gain : float
    options : MatchOptions, optional
        Wavelength and distance are taken from the geometry.
    p_max : float

    Returns
    -------
    identification : Identification
        With ``profile`` (I(q)) and ``rings`` attributes added.
    """
    rings, profile = observed_rings(frame, geometry, mask=mask, gain=gain)
    q_range = (float(profile["q"].min()), float(profile["q"].max())) if len(profile) else None
    result = identify(rings, phases, options=options_for(geometry, options), q_range=q_range, p_max=p_max)
    result.profile = profile
    result.rings = rings
    return result


def identify_table(table: pd.DataFrame, phases: list[Phase], *, geometry, mode: str = "auto", frame=None,
                   mask=None, gain: float = 1.0, gixd: bool = False, options: MatchOptions | None = None,
                   p_max: float = 1e-3) -> tuple[Identification, pd.DataFrame]:
    """Identify the phases of one frame's peak table (rings or spots), and label its peaks.

    Parameters
    ----------
    table : pandas.DataFrame
        Peaks of one frame with ``row``, ``col`` (geometry columns are filled here
        when missing).
    phases : list of Phase
    geometry : Geometry
    mode : {"auto", "rings", "spots"}
        "auto": from how the peaks spread in eta (:func:`pattern_kind`).
    frame : (H, W) ndarray, optional
        The frame, needed for ring patterns (lines are the maxima of its I(q)).
    mask, gain
        For the azimuthal integration.
    gixd : bool
        Spots: match (q_xy, q_z) with a contact-plane search.
    options : MatchOptions, optional
    p_max : float

    Returns
    -------
    identification : Identification
    table : pandas.DataFrame
        The peak table with ``phase``, ``h``, ``k``, ``l``.

    Raises
    ------
    ValueError
        If the table has no positions, or a ring pattern comes without its frame.
    """
    from braggflow.geometry import add_geometry_columns
    from braggflow.schema import validate_peak_table

    validate_peak_table(table, required=("row", "col"))
    if "q" not in table.columns or table["q"].isna().all():
        table = add_geometry_columns(table, geometry)
    if gixd and ("q_xy" not in table.columns or table["q_xy"].isna().all()):
        if not geometry.has_incidence:
            raise ConfigError("--gixd needs an incidence angle (--incidence-angle DEG or geometry.incidence_angle_deg)")
        table = add_geometry_columns(table, geometry)
    if mode == "auto":
        mode = pattern_kind(table) if len(table) else ("rings" if frame is not None else "spots")
    opts = options_for(geometry, options)
    if mode == "rings":
        if frame is None:
            raise ValueError(
                "a ring pattern needs its frame for I(q): "
                "give --frame FILE (or keep the input file next to the results)"
            )
        result = identify_frame(frame, geometry, phases, mask=mask, gain=gain, options=opts, p_max=p_max)
        labelled = assign_peaks(table, result) if len(table) else table
    elif mode == "spots":
        if gixd:
            spots = table[np.isfinite(table["q"])].copy()
            spots["intensity"] = (
                np.nan_to_num(spots["intensity"].to_numpy(dtype=float), nan=1.0) if "intensity" in spots else 1.0
            )
            result = identify(spots.reset_index(drop=True), phases, options=opts, p_max=p_max, gixd=True)
            labelled = table.copy()
            assigned = result.assignment
            labels = spots.index.to_numpy()
            labelled["phase"] = pd.Categorical([None] * len(labelled))
            phase = pd.Series([None] * len(labelled), index=labelled.index, dtype=object)
            hkl = {c: pd.Series(pd.array([pd.NA] * len(labelled), dtype="Int32"), index=labelled.index) for c in "hkl"}
            for i, row in assigned.iterrows():
                if row["phase"] is not None and not (isinstance(row["phase"], float)):
                    phase[labels[i]] = row["phase"]
                    for c in "hkl":
                        hkl[c][labels[i]] = row[c]
            labelled["phase"] = pd.Categorical(phase)
            for c in "hkl":
                labelled[c] = hkl[c]
            result.mode = "gixd"
        else:
            lines = lines_from_peaks(table)
            result = identify(lines, phases, options=opts, p_max=p_max)
            result.mode = "spots"
            labelled = assign_peaks(table, result, lines=lines)
    else:
        raise ConfigError(f"mode must be 'auto', 'rings' or 'spots', got {mode!r}")
    return result, labelled


def identify_results(path, phases: list[Phase], *, geometry=None, mode: str = "auto", frame_file=None,
                     gixd: bool = False, incidence_angle: float | None = None, options: MatchOptions | None = None,
                     p_max: float = 1e-3, write: bool = True) -> dict[int, Identification]:
    """Identify phases frame by frame in a results file and store the outcome in it.

    Writes ``/entry/phases`` (one ranked table per frame, ``frame_<i>``, and the
    unexplained lines) and adds ``phase``, ``h``, ``k``, ``l`` to ``/entry/peaks``.

    Parameters
    ----------
    path : str or Path
        Results file of ``braggflow run``.
    phases : list of Phase
    geometry : Geometry, optional
        Default: the one stored in the results file.
    mode : {"auto", "rings", "spots"}
    frame_file : str, optional
        Frame(s) for ring patterns; default: the run's input files.
    gixd : bool
    incidence_angle : float, optional
        Overrides the stored incidence angle, deg.
    options : MatchOptions, optional
    p_max : float
    write : bool
        Store the results in the file.

    Returns
    -------
    results : dict of int -> Identification

    Raises
    ------
    InputFileError
        If the results file has no geometry and none is given, or its frames cannot be read.
    """
    from braggflow.geometry import Geometry
    from braggflow.io.results import read_peaks, read_process, update_peaks, write_group

    path = Path(path)
    process = read_process(path)
    if geometry is None:
        stored = process.get("geometry")
        if not stored:
            raise InputFileError(f"{path}: no geometry stored; give --poni FILE or the geometry options")
        geometry = Geometry.from_dict(stored)
    if incidence_angle is not None:
        geometry = geometry.replace(incidence_angle_deg=float(incidence_angle))
    peaks = read_peaks(path)
    frames_needed = sorted(set(int(f) for f in peaks["frame"].unique())) if len(peaks) else [0]
    series = None

    def frame_at(i):
        nonlocal series
        if series is None:
            from braggflow.io.frames import open_frames

            sources = [frame_file] if frame_file else [r["name"] for r in process.get("inputs", [])]
            if not sources:
                raise InputFileError(f"{path}: no input frames recorded; give --frame FILE")
            series = open_frames(sources[0] if len(sources) == 1 else sources)
        return np.asarray(series[i], dtype=np.float64)

    results: dict[int, Identification] = {}
    labelled_parts = []
    for i in frames_needed:
        table = peaks[peaks["frame"] == i] if len(peaks) else peaks
        kind = mode if mode != "auto" else (pattern_kind(table) if len(table) >= 4 and "eta" in table else "rings")
        frame = frame_at(i) if kind == "rings" else None
        result, labelled = identify_table(table, phases, geometry=geometry, mode=kind, frame=frame, gixd=gixd,
                                          options=options, p_max=p_max)
        results[i] = result
        labelled_parts.append(labelled)
    if write:
        tables = {f"frame_{i}": r.ranked for i, r in results.items()}
        tables.update({
            f"unexplained_{i}": r.unexplained.drop(columns=["peaks"], errors="ignore") for i, r in results.items()
        })
        write_group(path, "phases", tables=tables, attrs={"mode": ",".join(sorted({r.mode for r in results.values()})),
                                                          "candidates": [p.name for p in phases],
                                                          "geometry": geometry.to_dict()})
        if labelled_parts and len(peaks):
            update_peaks(path, pd.concat(labelled_parts).sort_index())
    return results
