"""From a frame or a results file to an identification: the glue the CLI and the pipeline call."""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError, InputFileError
from braggflow.phases.identify import Identification, assign_peaks, identify, lines_from_peaks, ring_share
from braggflow.phases.matching import MatchOptions
from braggflow.phases.structure import Phase, load_phase

__all__ = ["options_for", "observed_rings", "identify_frame", "identify_table", "identify_results", "load_phases",
           "candidate_files", "matching_mode", "PHASE_SUFFIXES"]

PHASE_SUFFIXES = (".cif", ".yaml", ".yml")
"""Suffixes of structure files taken from a folder or a pattern."""

RINGS_HOW = "lines are the maxima of the frame's I(q)"
SPOTS_HOW = "the peaks grouped into lines by q"
GIXD_HOW = "spots matched in (q, polar angle): powder lines and contact planes"


def candidate_files(specs) -> list[Path]:
    """Structure files from paths, folders and glob patterns, in the order given.

    A folder gives its ``.cif``, ``.yaml`` and ``.yml`` files in natural order
    (``phase2`` before ``phase10``); a pattern (``*``, ``?``, ``[``) the files it
    matches, in natural order; any other path is taken as it is (a missing file is
    reported when it is read).  A file named twice is kept once.

    Parameters
    ----------
    specs : iterable of str or Path

    Returns
    -------
    files : list of Path

    Raises
    ------
    InputFileError
        If a folder holds no structure file or a pattern matches no file.
    """
    from natsort import natsorted

    out: list[Path] = []
    seen: set[str] = set()
    for spec in specs:
        text = str(spec)
        if os.path.isdir(text):
            found = natsorted((str(p) for p in Path(text).iterdir()
                               if p.is_file() and p.suffix.lower() in PHASE_SUFFIXES), key=lambda s: Path(s).name)
            if not found:
                raise InputFileError(f"{text}: folder holds no structure file (.cif, .yaml, .yml)")
        elif any(ch in text for ch in "*?[") and not os.path.exists(text):
            found = natsorted((p for p in glob.glob(text) if os.path.isfile(p)), key=lambda s: Path(s).name)
            if not found:
                raise InputFileError(f"{text}: pattern matches no file")
        else:
            found = [text]
        for f in found:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                out.append(Path(f))
    return out


def load_phases(paths) -> list[Phase]:
    """Read CIF and YAML phase files (see :func:`~braggflow.phases.structure.load_phase`).

    Parameters
    ----------
    paths : iterable of str or Path
        Files, folders or glob patterns (see :func:`candidate_files`).

    Returns
    -------
    phases : list of Phase

    Raises
    ------
    InputFileError, ConfigError
        A folder without structure files, a pattern matching nothing, or a file that cannot be read.
    """
    return [load_phase(p) for p in candidate_files(paths)]


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

    Raises
    ------
    ConfigError
        If the distance is to be refined without a distance error above 0 (its prior).
    """
    options = options or MatchOptions()
    fields = dict(wavelength=geometry.wavelength_A, distance_mm=geometry.distance_mm,
                  distance_err_mm=geometry.distance_err_mm)
    fields.update({k: v for k, v in changes.items() if v is not None})
    options = replace(options, **fields)
    if options.refine_distance and not (options.distance_err_mm and options.distance_err_mm > 0):
        raise ConfigError("--refine-distance needs the distance uncertainty as its prior: give --distance-err MM "
                          "(or geometry.distance_err_mm) above 0")
    return options


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
                   options: MatchOptions | None = None, p_max: float | None = None) -> Identification:
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
    p_max : float, optional
        Default: ``options.p_max``.

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
    result.mode_reason = f"a frame: {RINGS_HOW}"
    return result


def matching_mode(table: pd.DataFrame, mode: str = "auto", gixd: bool = False,
                  frame_classes: dict | None = None) -> tuple[str, str]:
    """Which matching runs on a peak table, and why.

    Parameters
    ----------
    table : pandas.DataFrame
        Peaks with ``q`` and ``eta`` (for the automatic choice).
    mode : {"auto", "rings", "spots"}
    gixd : bool
        Grazing incidence: spots in (q, polar angle); excludes "rings".
    frame_classes : dict, optional
        The learned detector's frame-class probabilities (``p_spots``,
        ``p_arcs``, ``p_rings``: the frames table's columns).  When they are
        finite, "auto" takes ring matching if ``max(p_rings, p_arcs) >= p_spots``
        (rings and arcs both give maxima of I(q)), spot matching otherwise,
        instead of looking at how the peaks spread in eta.

    Returns
    -------
    kind : {"rings", "spots", "gixd"}
    reason : str
        The option that chose it, or what the automatic choice saw.

    Raises
    ------
    ConfigError
        For an unknown mode, or ``gixd`` with "rings".
    """
    if mode not in ("auto", "rings", "spots"):
        raise ConfigError(f"mode must be 'auto', 'rings' or 'spots', got {mode!r}")
    if gixd:
        if mode == "rings":
            raise ConfigError("--gixd matches the peak table's spots in (q_xy, q_z): it cannot run with --rings")
        return "gixd", f"--gixd: {GIXD_HOW}"
    if mode == "rings":
        return "rings", f"--rings: {RINGS_HOW}"
    if mode == "spots":
        return "spots", f"--spots: {SPOTS_HOW}"
    learned = _learned_choice(frame_classes)
    if learned is not None:
        return learned
    in_rings, n = ring_share(table) if len(table) and {"q", "eta"} <= set(table.columns) else (0, 0)
    if n < 4:
        return "rings", f"auto: {n} peaks with q and eta, too few to tell rings from spots; {RINGS_HOW}"
    if in_rings > 0.5 * n:
        return "rings", f"auto: {in_rings} of {n} peaks lie on rings; {RINGS_HOW}"
    return "spots", f"auto: {in_rings} of {n} peaks lie on rings; {SPOTS_HOW}"


def _learned_choice(frame_classes: dict | None) -> tuple[str, str] | None:
    """Ring or spot matching from the learned frame-class probabilities; None when they are missing or NaN."""
    if not frame_classes:
        return None
    try:
        p = {k: float(frame_classes[f"p_{k}"]) for k in ("spots", "arcs", "rings")}
    except (KeyError, TypeError, ValueError):
        return None
    if not all(np.isfinite(v) for v in p.values()):
        return None
    seen = f"learned frame class p_rings {p['rings']:.2f}, p_arcs {p['arcs']:.2f}, p_spots {p['spots']:.2f}"
    if max(p["rings"], p["arcs"]) >= p["spots"]:
        return "rings", f"auto: {seen}; {RINGS_HOW}"
    return "spots", f"auto: {seen}; {SPOTS_HOW}"


def _with_geometry(table: pd.DataFrame, geometry, gixd: bool) -> pd.DataFrame:
    """The peak table with q, eta (and q_xy, q_z for grazing incidence) filled when missing."""
    from braggflow.geometry import add_geometry_columns

    if not len(table):
        return table
    if "q" not in table.columns or table["q"].isna().all() or "eta" not in table.columns:
        table = add_geometry_columns(table, geometry)
    if gixd and ("q_xy" not in table.columns or table["q_xy"].isna().all()):
        if not geometry.has_incidence:
            raise ConfigError("--gixd needs an incidence angle (--incidence-angle DEG or geometry.incidence_angle_deg)")
        table = add_geometry_columns(table, geometry)
    return table


def identify_table(table: pd.DataFrame, phases: list[Phase], *, geometry, mode: str = "auto", frame=None,
                   mask=None, gain: float = 1.0, gixd: bool = False, options: MatchOptions | None = None,
                   p_max: float | None = None, frame_classes: dict | None = None
                   ) -> tuple[Identification, pd.DataFrame]:
    """Identify the phases of one frame's peak table (rings or spots), and label its peaks.

    Parameters
    ----------
    table : pandas.DataFrame
        Peaks of one frame with ``row``, ``col`` (geometry columns are filled here
        when missing).
    phases : list of Phase
    geometry : Geometry
    mode : {"auto", "rings", "spots"}
        See :func:`matching_mode`; "auto": from how the peaks spread in eta.
    frame : (H, W) ndarray, optional
        The frame, needed for ring patterns (lines are the maxima of its I(q)).
    mask, gain
        For the azimuthal integration.
    gixd : bool
        Match the spots in (q_xy, q_z) with a contact-plane search (spots only).
    options : MatchOptions, optional
    p_max : float, optional
    frame_classes : dict, optional
        The learned frame-class probabilities of the frame (see :func:`matching_mode`).

    Returns
    -------
    identification : Identification
        ``mode`` and ``mode_reason`` say which matching ran and why.
    table : pandas.DataFrame
        The peak table with ``phase``, ``h``, ``k``, ``l``.

    Raises
    ------
    ConfigError
        If spots are to be matched on a table without peaks, or ``gixd`` without an incidence angle.
    ValueError
        If the table has no positions, or a ring pattern comes without its frame.
    """
    from braggflow.schema import validate_peak_table

    validate_peak_table(table, required=("row", "col"))
    kind, reason = matching_mode(table, mode, gixd, frame_classes)
    if kind != "rings" and len(table) == 0:
        raise ConfigError(f"the peak table has 0 peaks: nothing to match as spots ({reason.split(':')[0]})")
    table = _with_geometry(table, geometry, gixd)
    if mode == "auto" and not gixd:
        kind, reason = matching_mode(table, mode, gixd, frame_classes)
    opts = options_for(geometry, options)
    if kind == "rings":
        if frame is None:
            raise ValueError(
                "a ring pattern needs its frame for I(q): "
                "give --frame FILE (or keep the input file next to the results)"
            )
        result = identify_frame(frame, geometry, phases, mask=mask, gain=gain, options=opts, p_max=p_max)
        labelled = assign_peaks(table, result) if len(table) else table
    elif kind == "gixd":
        opts = replace(opts, intensity_tau=opts.intensity_tau_spots)
        spots = table[np.isfinite(table["q"])].copy()
        spots["intensity"] = (
            np.nan_to_num(spots["intensity"].to_numpy(dtype=float), nan=1.0) if "intensity" in spots else 1.0
        )
        result = identify(spots.reset_index(drop=True), phases, options=opts, p_max=p_max, gixd=True)
        labelled = _label_spots(table, spots.index.to_numpy(), result.assignment)
    else:
        opts = replace(opts, intensity_tau=opts.intensity_tau_spots)
        lines = lines_from_peaks(table)
        result = identify(lines, phases, options=opts, p_max=p_max)
        result.mode = "spots"
        labelled = assign_peaks(table, result, lines=lines)
    result.mode_reason = reason
    return result, labelled


def _label_spots(table: pd.DataFrame, labels: np.ndarray, assigned: pd.DataFrame) -> pd.DataFrame:
    """The peak table with phase, h, k, l from the assignment of its spots (row i of ``assigned`` is ``labels[i]``)."""
    labelled = table.copy()
    phase = pd.Series([None] * len(labelled), index=labelled.index, dtype=object)
    hkl = {c: pd.Series(pd.array([pd.NA] * len(labelled), dtype="Int32"), index=labelled.index) for c in "hkl"}
    for i, row in assigned.iterrows():
        if row["phase"] is not None and not isinstance(row["phase"], float):
            phase[labels[i]] = row["phase"]
            for c in "hkl":
                hkl[c][labels[i]] = row[c]
    labelled["phase"] = pd.Categorical(phase)
    for c in "hkl":
        labelled[c] = hkl[c]
    return labelled


def identify_results(path, phases: list[Phase], *, geometry=None, mode: str = "auto", frame_file=None,
                     gixd: bool = False, incidence_angle: float | None = None, options: MatchOptions | None = None,
                     p_max: float | None = None, write: bool = True) -> dict[int, Identification]:
    """Identify phases frame by frame in a results file and record the outcome in it.

    Each identification is recorded as ``/entry/phases_<n>`` (n = 1, 2, ...: one
    ranked table per frame, ``frame_<i>``, the unexplained lines,
    ``unexplained_<i>``, and the candidates, their files, the options, the modes
    and the geometry as attributes) and copied to ``/entry/phases`` (attribute
    ``current`` = n).  Earlier records are kept.  The peak columns ``phase``,
    ``h``, ``k``, ``l`` of ``/entry/peaks`` hold the latest identification.

    Parameters
    ----------
    path : str or Path
        Results file of ``braggflow run``.
    phases : list of Phase
    geometry : Geometry, optional
        Default: the one stored in the results file.
    mode : {"auto", "rings", "spots"}
        "auto": from the learned frame classes of the frames table when the run
        recorded them (``find.method: learned``), else from how the peaks spread
        in eta (:func:`matching_mode`).
    frame_file : str, optional
        Frame(s) for ring patterns; default: the run's input files.
    gixd : bool
    incidence_angle : float, optional
        Overrides the stored incidence angle, deg.
    options : MatchOptions, optional
    p_max : float, optional
    write : bool
        Record the results in the file.

    Returns
    -------
    results : dict of int -> Identification
        By frame; each has ``record``: ``number`` (n, None without ``write``),
        ``group``, ``earlier`` (the attributes of the earlier records, by number)
        and ``peak_columns`` (whether the peak columns were written: the file has peaks).

    Raises
    ------
    InputFileError
        If the results file has no geometry and none is given, its frames cannot be
        read, or spots are to be matched and it holds no peaks.
    """
    from braggflow.geometry import Geometry
    from braggflow.io.results import read_frames, read_peaks, read_process, record_group, update_peaks

    path = Path(path)
    process = read_process(path)
    if geometry is None:
        stored = process.get("geometry")
        if not stored:
            raise InputFileError(f"{path}: no geometry stored; give --poni FILE or the geometry options")
        geometry = Geometry.from_dict(stored)
    if incidence_angle is not None:
        geometry = geometry.replace(incidence_angle_deg=float(incidence_angle))
    opts = options_for(geometry, options)
    peaks = read_peaks(path)
    if len(peaks) == 0:
        kind, reason = matching_mode(peaks, mode, gixd)
        if kind != "rings":
            raise InputFileError(f"{path}: 0 peaks in /entry/peaks, nothing to match as spots "
                                 f"({reason.split(':')[0]}); ring matching on the frame's I(q) needs no peaks")
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

    classes = {}  # the learned detector's frame classes, when the run had them
    frames_table = read_frames(path)
    if len(frames_table) and "p_spots" in frames_table.columns:
        cols = ["p_spots", "p_arcs", "p_rings"]
        for r in frames_table[["frame", *cols]].itertuples(index=False):
            classes[int(r.frame)] = dict(zip(cols, r[1:]))
    results: dict[int, Identification] = {}
    labelled_parts = []
    for i in frames_needed:
        table = _with_geometry(peaks[peaks["frame"] == i] if len(peaks) else peaks, geometry, gixd)
        kind, _ = matching_mode(table, mode, gixd, classes.get(i))
        frame = frame_at(i) if kind == "rings" else None
        result, labelled = identify_table(table, phases, geometry=geometry, mode=mode, frame=frame, gixd=gixd,
                                          options=opts, p_max=p_max, frame_classes=classes.get(i))
        results[i] = result
        labelled_parts.append(labelled)
    record = {"number": None, "group": None, "earlier": {}, "peak_columns": False}
    if write:
        import datetime as _dt

        tables = {f"frame_{i}": r.ranked for i, r in results.items()}
        tables.update({
            f"unexplained_{i}": r.unexplained.drop(columns=["peaks"], errors="ignore") for i, r in results.items()
        })
        used = replace(opts, p_max=p_max) if p_max is not None else opts
        attrs = {
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "mode": ",".join(sorted({r.mode for r in results.values()})),
            "modes": {str(i): f"{r.mode} ({r.mode_reason})" for i, r in results.items()},
            "candidates": [p.name for p in phases],
            "candidate_files": [p.source for p in phases],
            "options": {**asdict(used), "mode": mode, "gixd": bool(gixd)},
            "accepted": {str(i): [str(n) for n in r.ranked.loc[r.ranked["accepted"], "phase"]]
                         for i, r in results.items()},
            "geometry": geometry.to_dict(),
            "peak_columns": bool(labelled_parts and len(peaks)),
        }
        number, earlier = record_group(path, "phases", tables=tables, attrs=attrs)
        record = {"number": number, "group": f"phases_{number}", "earlier": earlier,
                  "peak_columns": attrs["peak_columns"]}
        if labelled_parts and len(peaks):
            update_peaks(path, pd.concat(labelled_parts).sort_index())
    for r in results.values():
        r.record = record
    return results
