"""Phase commands: identify, azimuthal, remap."""

from __future__ import annotations

from pathlib import Path

import typer

from braggflow.cli.common import (  # noqa: F401 (the geometry options are used by cli.detect from here)
    BeamCol,
    BeamRow,
    Distance,
    Energy,
    IncidenceAngle,
    PixelSize,
    Poni,
    Wavelength,
    console,
    friendly_errors,
)

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""

# the geometry options are shared with run, watch and detect (braggflow.cli.common)
def _geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence, distance_err, stored=None):
    """Geometry from --poni or the explicit options, else the stored one; None when nothing is given."""
    from braggflow.geometry import Geometry, GeometryConfig

    explicit = {k: v for k, v in dict(distance_mm=distance, beam_center_row=beam_row, beam_center_col=beam_col,
                                      pixel_size_mm=pixel, wavelength_A=wavelength, energy_keV=energy).items()
                if v is not None}
    if poni is None and not explicit:
        if stored is None:
            return None
        geo = stored
        changes = {}
        if incidence is not None:
            changes["incidence_angle_deg"] = incidence
        if distance_err is not None:
            changes["distance_err_mm"] = distance_err
        return geo.replace(**changes) if changes else geo
    cfg = GeometryConfig(poni=str(poni) if poni else None, incidence_angle_deg=incidence,
                         distance_err_mm=distance_err or 0.0, **explicit)
    return Geometry.from_config(cfg)


def _read_frame(path: str):
    """First frame of a file (any format braggflow reads) as float64."""
    import numpy as np

    from braggflow.io.frames import open_frames

    series = open_frames(path)
    return np.asarray(series[0], dtype=np.float64)


def _is_results(path: Path) -> bool:
    if path.suffix.lower() not in (".h5", ".hdf5", ".nxs"):
        return False
    try:
        from braggflow.io.results import read_process

        read_process(path)
        return True
    except Exception:  # not a results file: treat it as frames
        return False


@commands.command("identify")
@friendly_errors
def identify_command(
    results: Path = typer.Argument(..., help="results file of 'braggflow run' (or a frame file with --poni)"),
    candidates: list[str] = typer.Argument(
        None, help="candidate phases: CIF or YAML files, folders (their .cif/.yaml files) or quoted glob patterns",
        show_default=False,
    ),
    cif: list[str] = typer.Option([], "--cif", help="candidate phase CIF file, folder or quoted pattern"),
    phase: list[str] = typer.Option([], "--phase", help="candidate phase YAML file, folder or quoted pattern"),
    gixd: bool = typer.Option(
        False, "--gixd", help="grazing incidence: match the peak table's spots in (q_xy, q_z), contact planes too",
    ),
    incidence_angle: IncidenceAngle = None,
    rings: bool = typer.Option(False, "--rings", help="force ring (powder) matching on the maxima of I(q)"),
    spots: bool = typer.Option(False, "--spots", help="force spot matching on the peak table's q values"),
    frame: str | None = typer.Option(
        None, "--frame", help="frame file for ring patterns (default: the run's input)",
    ),
    json_file: Path | None = typer.Option(
        None, "--json", help="write the ranked table as JSON to PATH ('-': print only the JSON, on stdout)"),
    plot: Path | None = typer.Option(None, "--plot", help="write a PNG of observed vs predicted lines"),
    max_mismatch: float = typer.Option(0.01, "--max-mismatch", help="largest relative lattice mismatch searched"),
    p_max: float = typer.Option(1e-3, "--p-max", help="largest chance probability of an accepted phase"),
    refine_distance: bool = typer.Option(
        False, "--refine-distance", help="refine the sample-detector distance too, with --distance-err as its prior",
    ),
    poni: Poni = None,
    distance: Distance = None,
    distance_err: float | None = typer.Option(None, "--distance-err", help="1-sigma distance uncertainty, mm"),
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
) -> None:
    """Rank candidate phases (CIF or YAML) against a results file's peaks, best first.

    Candidates come after the results file (files, folders, quoted patterns) or with --cif / --phase.
    """
    from braggflow.errors import ConfigError
    from braggflow.phases.matching import MatchOptions
    from braggflow.phases.workflow import identify_frame, identify_results, load_phases

    if rings and spots:
        raise ConfigError("--rings and --spots exclude each other")
    if gixd and rings:
        raise ConfigError("--gixd matches the peak table's spots in (q_xy, q_z): it excludes --rings")
    if p_max <= 0 or p_max > 1:
        raise ConfigError(f"--p-max {p_max}: a probability in (0, 1] is needed")
    if max_mismatch < 0:
        raise ConfigError(f"--max-mismatch {max_mismatch}: must be 0 or more")
    phases = load_phases(list(candidates or []) + list(cif) + list(phase))
    if not phases:
        raise ConfigError("give at least one candidate phase: files after the results file, "
                          "or --cif FILE / --phase FILE")
    options = MatchOptions(max_mismatch=max_mismatch, refine_distance=refine_distance, p_max=p_max)
    mode = "rings" if rings else "spots" if spots else "auto"
    if _is_results(results):
        from braggflow.geometry import Geometry
        from braggflow.io.results import read_process

        stored = read_process(results).get("geometry")
        stored = Geometry.from_dict(stored) if stored else None
        geometry = _geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence_angle,
                             distance_err, stored)
        outcome = identify_results(results, phases, geometry=geometry, mode=mode, frame_file=frame, gixd=gixd,
                                   options=options, p_max=p_max)
    else:
        if not results.exists():
            raise FileNotFoundError(f"{results}: no such file")
        if gixd or spots:
            option = "--gixd" if gixd else "--spots"
            raise ConfigError(f"{option} matches the peaks of a results file; {results} is a frame (rings from its "
                              "I(q)): run 'braggflow run' on it first, then identify the results file")
        geometry = _geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence_angle,
                             distance_err)
        if geometry is None:
            raise ConfigError(f"{results} is a frame, not a results file: give --poni FILE or the geometry options")
        outcome = {0: identify_frame(_read_frame(str(results)), geometry, phases, options=options, p_max=p_max)}
    if json_file is not None:
        from braggflow.cli.common import write_json

        write_json({str(k): r.to_json() for k, r in outcome.items()}, json_file)
    json_only = json_file is not None and str(json_file) == "-"  # stdout holds the JSON only
    if not json_only:
        _print(outcome)
        _print_record(results, outcome)
    if plot is not None:
        from braggflow.viz.phases import plot_identification

        first = outcome[min(outcome)]
        plot_identification(first, plot, title=str(results.name))
        if not json_only:
            console.print(f"plot written to {plot}")


def _cell_text(m) -> str:
    """The cell of a match as text, one line per parameter: refined values with their errors, or why not refined."""
    import math

    if not m.refined:
        n, n_free = m.n_pairs, len(m.free_parameters)
        return f"not refined:\n{n} line{'s' if n != 1 else ''},\n{n_free} free parameter{'s' if n_free != 1 else ''}"
    shown, cell = set(), []
    for name, v, e in zip(("a", "b", "c", "α", "β", "γ"), m.cell, m.cell_err):
        if (round(v, 6), round(e, 6)) in shown or (name in "αβγ" and e == 0) or math.isnan(e):
            continue
        shown.add((round(v, 6), round(e, 6)))
        cell.append(f"{name}={v:.4f}±{e:.4f}")
    if m.distance_mm is not None:
        cell.append(f"d={m.distance_mm:.1f}±{m.distance_err_mm:.1f} mm")
    if m.at_limit:
        cell.append("(at the search limit)")
    return "\n".join(cell)


def identification_rows(result) -> tuple[list[str], list[list[str]]]:
    """The ranked table of one identification as text: columns and one row per candidate phase.

    Parameters
    ----------
    result : braggflow.phases.Identification

    Returns
    -------
    columns : list of str
    rows : list of list of str
    """
    columns = ["phase", "rank", "ok", "p", "score", "lines", "cell (Å, deg)", "plane", "alone"]
    rows = []
    for row in result.ranked.itertuples():
        m = result.matches[row.phase]
        alone = result.alone.get(row.phase, m)
        alone_text = "" if alone is m else f"{alone.n_matched}/{alone.n_expected}, p {alone.chance_probability:.0e}"
        extra = max(0, m.n_pairs - m.n_matched)  # paired with lines that were not expected
        lines = f"{row.n_matched}/{row.n_expected}" + (f" +{extra}" if extra else "")
        rows.append([row.phase, str(row.rank), "yes" if row.accepted else "", f"{row.chance_probability:.1e}",
                     f"{row.score:.3f}", lines, _cell_text(m), row.contact_plane, alone_text])
    return columns, rows


def _print(outcome) -> None:
    from braggflow.cli.common import print_table

    for i, result in outcome.items():
        console.print(f"frame {i}: {result.mode} matching ({result.mode_reason})")
        columns, rows = identification_rows(result)
        print_table(f"frame {i}: {result.mode}, {len(result.assignment)} observed, "
                    f"{len(result.unexplained)} unexplained", columns, rows, optional=("alone", "plane", "score"),
                    right=("rank", "p", "score", "lines"))


def _print_record(results: Path, outcome) -> None:
    """Where the identification was recorded, the earlier ones kept, and what the peak columns hold."""
    record = next(iter(outcome.values())).record if outcome else {}
    if not record or record.get("number") is None:
        return
    n = record["number"]
    console.print(f"identification {n} recorded in {results}:/entry/{record['group']} (current: /entry/phases)",
                  soft_wrap=True)
    earlier = record.get("earlier") or {}
    columns = (f"the peak columns phase, h, k, l now hold identification {n}" if record.get("peak_columns")
               else "no peaks: the peak columns phase, h, k, l are unchanged")
    if earlier:
        last = max(earlier)
        attrs = earlier[last]
        what = ", ".join(x for x in (str(attrs.get("date", "")), str(attrs.get("mode", ""))) if x)
        more = f" and {len(earlier) - 1} before it" if len(earlier) > 1 else ""
        console.print(f"an earlier identification exists: {last} ({what}) in /entry/phases_{last}{more}, kept; "
                      f"{columns}", soft_wrap=True)
    else:
        console.print(columns, soft_wrap=True)


@commands.command("azimuthal")
@friendly_errors
def azimuthal_command(
    source: Path = typer.Argument(..., help="frame file, or a results file (its first input frame)"),
    output: Path = typer.Option(..., "-o", "--output", help="CSV file for I(q) or I(2theta), or .h5 (NeXus NXdata)"),
    unit: str = typer.Option("q", "--unit", help="q (1/Å) or 2th (deg)"),
    npt: int | None = typer.Option(None, "--npt", help="number of bins"),
    mask: Path | None = typer.Option(None, "--mask", help="mask file (nonzero = bad pixel)"),
    gain: float = typer.Option(1.0, "--gain", help="ADU per photon (Poisson errors)"),
    rings_out: Path | None = typer.Option(None, "--rings", help="CSV file for the ring positions (maxima)"),
    dark: Path | None = typer.Option(None, "--dark", help="dark frame file, subtracted first"),
    flat: Path | None = typer.Option(None, "--flat", help="flat-field file: the frame is divided by it"),
    polarization: float | None = typer.Option(
        None, "--polarization", help="polarization factor, -1..1 (pyFAI's; 0.99 at most synchrotrons); default: none"),
    radial_range: tuple[float, float] | None = typer.Option(
        None, "--radial-range", help="radial range LO HI in the --unit (1/Å or deg)"),
    azimuth_range: tuple[float, float] | None = typer.Option(
        None, "--azimuth-range", help="azimuthal (eta, pyFAI's chi) range LO HI, deg"),
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
    incidence_angle: IncidenceAngle = None,
) -> None:
    """Azimuthal integration I(q) / I(2theta) with errors (pyFAI), and ring positions from its maxima."""
    import numpy as np

    from braggflow.errors import ConfigError
    from braggflow.geometry.azimuthal import azimuthal_profile, ring_positions

    if npt is not None and npt < 1:
        raise ConfigError(f"--npt {npt}: the number of bins must be >= 1")
    geometry, frame = _frame_and_geometry(source, poni, distance, beam_row, beam_col, pixel, wavelength, energy,
                                          incidence_angle)
    if polarization is not None and not -1 <= polarization <= 1:
        raise ConfigError(f"--polarization {polarization}: a factor in [-1, 1] is needed")
    for option, limits in (("--radial-range", radial_range), ("--azimuth-range", azimuth_range)):
        if limits is not None and not limits[0] < limits[1]:
            raise ConfigError(f"{option} {limits[0]} {limits[1]}: LO must be below HI")
    bad = _read_mask(mask, frame.shape) if mask else None
    frame = _dark_and_flat(frame, dark, flat)
    profile = azimuthal_profile(frame, geometry, mask=bad, gain=gain, npt=npt, unit=unit, radial_range=radial_range,
                                azimuth_range=azimuth_range, polarization_factor=polarization)
    if output.suffix.lower() in (".h5", ".hdf5", ".nxs"):
        from braggflow.io.nexus import write_profile_file

        write_profile_file(output, profile, sources=[str(source)])
    else:
        profile.to_csv(output, index=False)
    rings = ring_positions(profile)
    if rings_out:
        rings.to_csv(rings_out, index=False)
    col = "q" if unit == "q" else "two_theta"
    console.print(f"{len(profile)} bins written to {output}; {len(rings)} rings at {col} = "
                  + ", ".join(f"{v:.4f}±{e:.4f}" for v, e in zip(rings[col], rings[f'{col}_err'])))
    del np


def _dark_and_flat(frame, dark: Path | None, flat: Path | None):
    """``(frame - dark) / flat``: each file's first frame, of the frame's shape; pixels with flat <= 0 become NaN.

    Raises
    ------
    InputFileError
        If a file's frame shape differs from the frame's.
    """
    import numpy as np

    from braggflow.errors import InputFileError

    for option, path in (("--dark", dark), ("--flat", flat)):
        if path is None:
            continue
        other = _read_frame(str(path))
        if other.shape != frame.shape:
            raise InputFileError(f"{option} {path}: shape {other.shape} differs from the frame shape {frame.shape}")
        if option == "--dark":
            frame = frame - other
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                frame = np.where(other > 0, frame / other, np.nan)
    return frame


def _read_mask(path, shape):
    import fabio
    import numpy as np

    from braggflow.errors import InputFileError

    try:
        data = fabio.open(str(path)).data
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read mask ({exc})") from None
    if data.shape != shape:
        raise InputFileError(f"{path}: mask shape {data.shape} differs from the frame shape {shape}")
    return np.asarray(data) != 0


def _frame_and_geometry(source, poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence):
    from braggflow.errors import ConfigError

    stored = None
    frame_path = str(source)
    if _is_results(source):
        from braggflow.geometry import Geometry
        from braggflow.io.results import read_process

        process = read_process(source)
        if process.get("geometry"):
            stored = Geometry.from_dict(process["geometry"])
        inputs = process.get("inputs", [])
        if not inputs:
            raise ConfigError(f"{source}: no input frames recorded")
        frame_path = inputs[0]["name"]
    geometry = _geometry(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence, None, stored)
    if geometry is None:
        raise ConfigError("no geometry: give --poni FILE or --distance/--beam-row/--beam-col/--pixel-size/--wavelength")
    return geometry, _read_frame(frame_path)


def _read_features(path: Path, frame_name: str):
    """A table of learned features or labels to draw: .csv (feature table or label file), .parquet, or results.

    A ``frame`` column keeps the rows of the frame drawn: its file name (label files), or frame 0 (results files,
    whose first input frame is the one remapped).
    """
    import pandas as pd

    from braggflow.errors import ConfigError, InputFileError

    if not path.is_file():
        raise InputFileError(f"--features {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = pd.read_csv(path, comment="#")
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix in (".h5", ".hdf5", ".nxs"):
        from braggflow.io.results import read_peaks

        table = read_peaks(path)
    else:
        raise ConfigError(f"--features {path}: use a .csv or .parquet feature table, a label file or a results file")
    if "frame" in table.columns:
        if pd.api.types.is_numeric_dtype(table["frame"]):
            return table[table["frame"] == 0]
        return table[table["frame"].astype(str).map(lambda f: Path(f).name) == Path(frame_name).name]
    return table


@commands.command("remap")
@friendly_errors
def remap_command(
    source: Path = typer.Argument(..., help="frame file, or a results file (its first input frame)"),
    to: str = typer.Option("q", "--to", help="q: (eta, q); polar: (eta, 2theta); qxy-qz: grazing-incidence map"),
    output: Path = typer.Option(
        ..., "-o", "--output", help="output: .npz or .h5 (image and axes), .png/.pdf/.svg (picture)"),
    npt: int = typer.Option(500, "--npt", help="bins along each axis"),
    mask: Path | None = typer.Option(None, "--mask", help="mask file (nonzero = bad pixel)"),
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
    incidence_angle: IncidenceAngle = None,
    features: Path | None = typer.Option(
        None, "--features",
        help="draw these features on a picture: a feature table of 'braggflow detect -o' (.csv, .parquet), a label "
             "file (.csv) or a results file of 'braggflow run --finder learned' (.h5)"),
) -> None:
    """Rebin a frame to (eta, q), (eta, 2theta) or (q_z, q_xy); empty bins (missing wedge) are NaN."""
    import numpy as np

    from braggflow.errors import ConfigError
    from braggflow.geometry.remap import remap

    if npt < 1:
        raise ConfigError(f"--npt {npt}: the number of bins must be >= 1")
    geometry, frame = _frame_and_geometry(source, poni, distance, beam_row, beam_col, pixel, wavelength, energy,
                                          incidence_angle)
    if features is not None and output.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--features draws on a picture: give -o a .png, .pdf or .svg name, not {output.name}")
    bad = _read_mask(mask, frame.shape) if mask else None
    image, axis0, axis1 = remap(frame, geometry, to=to, mask=bad, npt=(npt, npt))
    names = {"q": ("eta_deg", "q_A-1"), "polar": ("eta_deg", "two_theta_deg"), "qxy-qz": ("qz_A-1", "qxy_A-1")}[to]
    suffix = output.suffix.lower()
    if suffix == ".npz":
        np.savez_compressed(output, image=image, **{names[0]: axis0, names[1]: axis1})
    elif suffix in (".h5", ".hdf5", ".nxs"):
        from braggflow.io.nexus import write_remap_file

        write_remap_file(output, image, axis0, axis1, to=to, sources=[str(source)])
    elif suffix in (".png", ".pdf", ".svg"):
        from braggflow.viz.remap import REMAP_TITLES, plot_remap

        plot_remap(image, axis0, axis1, to=to, output=output, title=f"{source.name}\n{REMAP_TITLES[to]}",
                   features=_read_features(features, source.name) if features is not None else None,
                   geometry=geometry)
    else:
        raise ConfigError(f"-o {output}: use .npz, .h5, or .png/.pdf/.svg for a picture")
    console.print(f"{image.shape} image written to {output} ({np.isnan(image).mean():.0%} empty bins)")
