"""Series commands: link, watch, and plot (frame, animate, tracks, series)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from braggflow.cli.common import (
    BACKEND_HELP,
    METHOD_HELP,
    MODEL_HELP,
    BeamCol,
    BeamRow,
    Distance,
    Energy,
    IncidenceAngle,
    PixelSize,
    Poni,
    Wavelength,
    check_results_name,
    console,
    err_console,
    friendly_errors,
    geometry_overrides,
)
from braggflow.cli.dashboard import DASHBOARD_HELP, HOST_HELP, PORT_HELP, start_dashboard

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""

plot_app = typer.Typer(
    name="plot",
    help="Pictures of a results file, written as files: frame, animate, tracks, series.",
    no_args_is_help=True,
)
commands.add_typer(plot_app, name="plot")

_RESULTS = typer.Argument(..., help="results file written by 'braggflow run' or 'braggflow watch'")
_SOURCE = typer.Option(None, "--source", help="the frames (default: the inputs recorded in RESULTS)")


def _open_source(results: Path, source: str | None):
    """The frame series behind a results file: --source, else what the file records."""
    from braggflow.errors import InputFileError
    from braggflow.io.frames import open_frames
    from braggflow.io.results import read_process

    if source:
        return open_frames(source)
    process = read_process(results)
    if process.get("source"):  # written by 'braggflow watch'
        return open_frames(process["source"])
    names = [item["name"] for item in process.get("inputs", []) if item.get("name")]
    if not names:
        raise InputFileError(f"{results}: records no input frames; give them with --source")
    try:
        return open_frames(names if len(names) > 1 else names[0])
    except InputFileError as exc:
        raise InputFileError(f"{exc} (the input recorded in {results}); give the frames with --source") from None


def _has_learned(table) -> bool:
    """Whether a peak table holds features of the learned finder (a kind: ring, arc or spot)."""
    return "kind" in table.columns and bool(table["kind"].astype(object).isin(("ring", "arc", "spot")).any())


def _stored_geometry(results: Path):
    """The geometry a results file records (None when the run had none)."""
    from braggflow.geometry import Geometry
    from braggflow.io.results import read_process

    stored = read_process(results).get("geometry")
    return Geometry.from_dict(stored) if stored else None


def _static_mask(results: Path, series):
    """The static mask of the run (user mask, detector gaps, file pixel mask)."""
    from braggflow.pipeline import prepare
    from braggflow.pipeline.config import Config, read_config

    config = read_config(results) or Config()
    config = config.model_copy(update={"geometry": None})  # the mask does not need the geometry
    return prepare(config, shape=series.shape, dtype=series.dtype, detector_mask=series.detector_mask).mask


def _omega_ranges(results: Path, table, source: str | None, step: float | None, start: float | None = None):
    """Per-frame omega ranges: from the frames when they know them, else rebuilt from the omega column
    (or, for a table without omega, from ``start`` and ``step``)."""
    from braggflow.errors import BraggflowError
    from braggflow.link import omega_ranges_from_table

    if step is None and start is None:
        try:
            series = _open_source(results, source)
        except BraggflowError:
            if source:
                raise
            series = None
        if series is not None and series.omega is not None:
            return series.omega
    return omega_ranges_from_table(table, step=step, start=start)


@commands.command("link")
@friendly_errors
def link_command(
    results: Path = _RESULTS,
    search_range: float = typer.Option(3.0, "--search-range", help="largest move of a peak between frames, px"),
    memory: int = typer.Option(0, "--memory", help="frames a peak may vanish and keep its track"),
    omega: bool = typer.Option(
        False, "--omega", help="rotation series: merge peaks of frames whose omega ranges touch into 3D spots",
    ),
    omega_step: float | None = typer.Option(
        None, "--omega-step", help="rotation per frame, deg, when the frames do not record omega ranges",
    ),
    omega_start: float | None = typer.Option(
        None, "--omega-start", help="angle at the start of frame 0, deg, for frames without omega (default 0)",
    ),
    source: str | None = _SOURCE,
    csv: Path | None = typer.Option(
        None, "--csv", help="also write the spots (--omega) or the track summary as CSV",
    ),
    min_length: int = typer.Option(
        1, "--min-length", help="keep tracks seen on at least this many frames (trackpy's filter_stubs); the peaks "
        "of shorter ones get track_id -1"),
) -> None:
    """Link peaks across frames: track_id in the peak table, plus a tracks (or spots) table.

    The results file gets the peaks' track_id (for --omega: the spot id) and a
    group /entry/link with the table 'tracks' (first/last frame, mean
    position, drift px/frame, mean intensity, d-spacing change) or 'spots'
    (spot_id, row, col, omega, intensity, intensity_err, first_frame, last_frame,
    n_peaks).
    """
    import numpy as np

    from braggflow.errors import ConfigError
    from braggflow.io.results import read_peaks, update_peaks, write_group
    from braggflow.link import link, merge_rotation_spots, track_summary

    table = read_peaks(results)
    attrs = {"search_range_px": float(search_range), "memory_frames": int(memory), "mode": "omega" if omega else "time",
             "min_length_frames": int(min_length)}
    if omega:
        if memory:
            raise ConfigError("--memory is not used with --omega (spots merge over touching omega ranges)")
        if min_length > 1:
            raise ConfigError("--min-length is for tracks in time; with --omega every spot keeps its peaks")
        ranges = _omega_ranges(results, table, source, omega_step, omega_start)
        spots, linked = merge_rotation_spots(table, ranges, search_range=search_range, return_table=True)
        update_peaks(results, linked)
        write_group(results, "link", tables={"spots": spots}, attrs=attrs)
        out = spots
        counts = np.bincount(spots["n_peaks"].to_numpy(), minlength=5)[1:] if len(spots) else np.zeros(4, int)
        spread = ", ".join(f"{k} frame{'s' if k > 1 else ''}: {n}" for k, n in enumerate(counts[:4], start=1))
        more = int(counts[4:].sum())
        console.print(f"{len(table)} peaks merged into {len(spots)} spots over omega ({spread}"
                      f"{f', more: {more}' if more else ''}) -> {results}:/entry/link/spots", soft_wrap=True)
    else:
        linked = link(table, search_range=search_range, memory=memory, min_length=min_length)
        summary = track_summary(linked)
        update_peaks(results, linked)
        write_group(results, "link", tables={"tracks": summary}, attrs=attrs)
        out = summary
        long = summary[summary["n_frames"] >= 2]
        drift = f", median drift {long['drift'].median():.3f} px/frame" if len(long) else ""
        console.print(f"{len(table)} peaks linked into {len(summary)} tracks ({len(long)} on >= 2 frames{drift})"
                      f" -> {results}:/entry/link/tracks", soft_wrap=True)
    if csv is not None:
        out.to_csv(csv, index=False)
        console.print(f"table written to {csv}")


@commands.command("watch")
@friendly_errors
def watch_command(
    source: str = typer.Argument(..., help="folder receiving frame files, or an HDF5 file being appended (SWMR)"),
    output: Path = typer.Option(..., "-o", "--output", help="results file (HDF5); an existing one is continued"),
    config_file: Path | None = typer.Option(
        None, "-c", "--config", help="YAML config (see 'braggflow config --default')",
    ),
    idle_timeout: float = typer.Option(
        60.0, "--idle-timeout", help="stop after this many seconds without a new frame (0: never)",
    ),
    poll: float = typer.Option(0.1, "--poll", help="seconds between looks at the source"),
    give_up: float = typer.Option(
        30.0, "--give-up", help="skip a file still unreadable this many seconds after its size settled",
    ),
    method: str | None = typer.Option(None, "--method", help="localization: " + METHOD_HELP),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help="frame dataset inside the HDF5 source"),
    workers: int = typer.Option(0, "--workers", help="worker processes for the frames (0: this process)"),
    mask: str | None = typer.Option(None, "--mask", help="mask file (nonzero = bad)"),
    dark: str | None = typer.Option(None, "--dark", help="dark frame file"),
    flat: str | None = typer.Option(None, "--flat", help="flat-field file"),
    gain: float | None = typer.Option(None, "--gain", help="correct.gain, ADU per photon"),
    threshold_sigma: float | None = typer.Option(None, "--threshold-sigma", help="find.threshold_sigma"),
    max_size: int | None = typer.Option(None, "--max-size", help="find.max_size: largest peak kept, pixels"),
    d_min: float | None = typer.Option(None, "--d-min", help="find.d_min: high-resolution limit, Å (needs geometry)"),
    d_max: float | None = typer.Option(None, "--d-max", help="find.d_max: low-resolution limit, Å (needs geometry)"),
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
    incidence_angle: IncidenceAngle = None,
    csv: Path | None = typer.Option(None, "--csv", help="also write the peak table as CSV when the watch stops"),
    sets: list[str] | None = typer.Option(None, "--set", help="any config key: SECTION.KEY=VALUE (repeatable)"),
    dashboard: bool = typer.Option(False, "--dashboard", help=DASHBOARD_HELP),
    port: int = typer.Option(8050, "--port", help=PORT_HELP),
    host: str | None = typer.Option(None, "--host", help=HOST_HELP),
    veto_empty: bool = typer.Option(
        False, "--veto-empty", help="frames.veto_empty: store the peaks of hits only (frames with at least "
        "frames.hit_min_peaks peaks, default 10); other frames' peaks are counted, not stored"),
    finder: str | None = typer.Option(
        None, "--finder", help="find.method: components (default), persistence, or learned (the grazing-incidence "
        "detector network: rings, arcs, spots; needs --incidence-angle)"),
    skip_empty: bool = typer.Option(
        False, "--skip-empty", help="frames.skip_empty (with --finder learned): skip the frames whose learned "
        "p_empty reaches 0.7 (or --p-empty P): their frames-table row is kept (n_peaks 0), their features are not "
        "localized, integrated or stored"),
    p_empty: float | None = typer.Option(
        None, "--p-empty", help="the p_empty from which --skip-empty skips a frame (0-1; implies --skip-empty)"),
) -> None:
    """Process frames while the detector writes them; stop after --idle-timeout or with Ctrl-C."""
    import numpy as np

    from braggflow.cli.core import build_config, check_watch_options, watch_summary
    from braggflow.pipeline import check_workers
    from braggflow.pipeline.learned import SKIP_EMPTY_DEFAULT
    from braggflow.pipeline.watch import watch

    skip = p_empty if p_empty is not None else SKIP_EMPTY_DEFAULT if skip_empty else None
    overrides = {"locate.method": method, "locate.model": model, "locate.backend": backend, "correct.mask": mask,
                 "correct.dark": dark, "correct.flat": flat, "correct.gain": gain, "find.method": finder,
                 "find.threshold_sigma": threshold_sigma, "find.max_size": max_size, "find.d_min": d_min,
                 "find.d_max": d_max, "frames.veto_empty": True if veto_empty else None, "frames.skip_empty": skip,
                 **geometry_overrides(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence_angle)}
    config = build_config(config_file, overrides, sets)
    check_results_name(output)
    check_workers(workers)
    check_watch_options(idle_timeout=idle_timeout, poll=poll, give_up=give_up)
    recent: list = []
    last_print = [0.0]

    server = (start_dashboard(output, host=host, port=port, hit_peaks=config.frames.hit_min_peaks) if dashboard
              else None)

    def show(record) -> None:
        if server is not None:
            server.latencies.append(record.latency)
        recent.append(record)
        del recent[:-50]
        now = time.monotonic()
        if now - last_print[0] < 1.0:
            return
        last_print[0] = now
        span = recent[-1].t_written - recent[0].t_written
        # a rate needs two frames: the first line says so instead of 'nan frames/s'
        rate_text = f"{(len(recent) - 1) / span:5.1f} frames/s" if span > 0 else "first frame"
        latency = np.median([r.latency for r in recent])
        peaks = np.mean([r.n_peaks for r in recent])
        err_console.print(f"frame {record.frame:6d} | {rate_text} | latency {record.latency:5.2f} s "
                          f"(median {latency:.2f}) | {peaks:6.1f} peaks/frame | backlog {record.backlog}",
                          markup=False, highlight=False, soft_wrap=True)

    err_console.print(f"watching {source} -> {output} (Ctrl-C to stop"
                      f"{f', or {idle_timeout:g} s without a new frame' if idle_timeout > 0 else ''})", soft_wrap=True)
    try:
        result = watch(source, output, config=config, idle_timeout=idle_timeout if idle_timeout > 0 else None,
                       poll_interval=poll, give_up=give_up, dataset=dataset, progress=show, workers=workers)
    finally:
        if server is not None:
            server.stop()
    console.print(watch_summary(output, result), markup=False, soft_wrap=True)
    if config.frames.skip_empty is not None:
        console.print(f"{result.n_skipped} of {result.n_frames} frames skipped as empty (learned p_empty >= "
                      f"{config.frames.skip_empty:g}; in the frames table with n_peaks 0)", markup=False)
    if csv is not None:
        from braggflow.io.results import read_peaks

        read_peaks(output).to_csv(csv, index=False)
        console.print(f"peak table written to {csv}", markup=False)


def _frame_range(text: str | None, n: int) -> range:
    from braggflow.pipeline import parse_frame_range

    return parse_frame_range(text, n)


def _parse_region(text: str | None):
    """'R0:R1,C0:C1' -> (r0, r1, c0, c1)."""
    if text is None:
        return None
    try:
        rows, cols = text.split(",")
        r0, r1 = (int(v) for v in rows.split(":"))
        c0, c1 = (int(v) for v in cols.split(":"))
    except ValueError:
        from braggflow.errors import ConfigError

        raise ConfigError(f"--region {text!r}: expected ROW0:ROW1,COL0:COL1 (integers)") from None
    return r0, r1, c0, c1


@plot_app.command("frame")
@friendly_errors
def plot_frame_command(
    results: Path = _RESULTS,
    frame: int = typer.Option(0, "--frame", help="frame index"),
    output: Path = typer.Option(Path("frame.png"), "-o", "--output", help="image file (PNG, PDF, SVG)"),
    source: str | None = _SOURCE,
    size_by: str = typer.Option(
        "intensity", "--size-by", help="marker size from: intensity, score, peak_value, snr, npix, none",
    ),
    region: str | None = typer.Option(None, "--region", help="cut-out ROW0:ROW1,COL0:COL1, px"),
    reference: Path | None = typer.Option(
        None, "--reference",
        help="reference peaks drawn as +: CSV (frame,row,col), simulated NeXus (/entry/truth) or results file",
    ),
    dpi: float = typer.Option(100, "--dpi", help="pixels per inch (the figure is 7 x 6 inches)"),
    features: bool = typer.Option(
        True, "--features/--no-features",
        help="draw the learned finder's features as the outlines of their extents, with the run's geometry "
             "(--no-features: circles at their centres)",
    ),
) -> None:
    """One frame on a log colour scale with its peaks (masked pixels in blue) and learned features by kind."""
    from braggflow.errors import ConfigError
    from braggflow.io.results import read_peaks
    from braggflow.viz import plot_frame

    series = _open_source(results, source)
    if not 0 <= frame < len(series):
        raise ConfigError(f"--frame {frame}: outside the series of {len(series)} frames (0 to {len(series) - 1})")
    table = read_peaks(results)
    plot_frame(series[frame], table, frame_index=frame, mask=_static_mask(results, series), output=output,
               size_by=None if size_by == "none" else size_by, region=_parse_region(region),
               reference=_read_reference(reference) if reference is not None else None, dpi=dpi,
               geometry=_stored_geometry(results) if features and _has_learned(table) else None)
    console.print(f"frame {frame}: {int((table['frame'] == frame).sum())} peaks -> {output}")


@plot_app.command("animate")
@friendly_errors
def plot_animate_command(
    results: Path = _RESULTS,
    output: Path = typer.Option(Path("series.gif"), "-o", "--output", help=".gif, or .mp4 (needs ffmpeg)"),
    source: str | None = _SOURCE,
    frames: str | None = typer.Option(None, "--frames", help="frames START:STOP[:STEP] (a Python slice)"),
    step: int = typer.Option(1, "--step", help="show every STEP-th frame"),
    fps: float = typer.Option(5.0, "--fps", help="animation frames per second"),
    size_by: str = typer.Option(
        "intensity", "--size-by", help="marker size from: intensity, score, peak_value, snr, npix, none",
    ),
    dpi: float = typer.Option(100, "--dpi", help="pixels per inch (the figure is 6 x 6 inches)"),
) -> None:
    """An animation of the series with the peaks of each frame overlaid."""
    from braggflow.errors import ConfigError
    from braggflow.io.results import read_peaks
    from braggflow.viz import animate_series

    if step < 1:
        raise ConfigError(f"--step {step}: must be >= 1")
    series = _open_source(results, source)
    indices = list(_frame_range(frames, len(series)))[::step]
    animate_series(series, read_peaks(results), output=output, mask=_static_mask(results, series), indices=indices,
                   fps=fps, size_by=None if size_by == "none" else size_by, dpi=dpi)
    console.print(f"{len(indices)} frames -> {output}")


@plot_app.command("tracks")
@friendly_errors
def plot_tracks_command(
    results: Path = _RESULTS,
    output: Path = typer.Option(Path("tracks.png"), "-o", "--output", help="image file"),
    source: str | None = _SOURCE,
    frames: str | None = typer.Option(None, "--frames", help="frames summed for the background, START:STOP"),
    min_length: int = typer.Option(2, "--min-length", help="draw tracks seen on at least this many frames"),
    max_tracks: int = typer.Option(
        2000, "--max-tracks", help="draw at most this many tracks, the longest (0: all); the title says how many"),
    dpi: float = typer.Option(100, "--dpi", help="pixels per inch (the figure is 7 x 6 inches)"),
) -> None:
    """Trajectories (after 'braggflow link') over the summed image of the series."""
    from braggflow.errors import ConfigError
    from braggflow.io.results import read_peaks
    from braggflow.viz import plot_tracks, summed_image

    table = read_peaks(results)
    if (table["track_id"] < 0).all():
        raise ConfigError(f"{results} has no linked peaks: run 'braggflow link {results}' first")
    series = _open_source(results, source)
    image = summed_image(series, indices=_frame_range(frames, len(series)))
    if max_tracks < 0:
        raise ConfigError(f"--max-tracks {max_tracks}: give a number of tracks >= 1, or 0 for all")
    fig = plot_tracks(image, table, output=None, mask=_static_mask(results, series), min_length=min_length,
                      max_tracks=max_tracks or None, dpi=dpi)
    fig.savefig(output, dpi=dpi)
    console.print(f"{fig.axes[0].get_title()} -> {output}", markup=False)


def _read_reference(path: Path):
    """A reference peak table: CSV, a simulated NeXus file (/entry/truth), or a results file."""
    import h5py
    import pandas as pd

    from braggflow.errors import InputFileError
    from braggflow.io.results import read_peaks, read_table

    if not path.exists():
        raise InputFileError(f"{path}: no such reference file")
    if path.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as exc:  # a binary or malformed file
            message = " ".join(str(exc).split())
            raise InputFileError(f"{path}: not a readable CSV reference ({message})") from None
        missing = [col for col in ("row", "col") if col not in table.columns]
        if missing:
            raise InputFileError(f"{path}: reference CSV lacks the column(s) {', '.join(missing)} "
                                 f"(it has {', '.join(map(str, table.columns))})")
        return table
    try:
        with h5py.File(path, "r", locking=False) as h5:
            simulated = "entry/truth" in h5
    except OSError:
        raise InputFileError(f"{path}: reference must be a CSV, a simulated NeXus file or a results file") from None
    return read_table(path, "/entry/truth") if simulated else read_peaks(path)


@plot_app.command("series")
@friendly_errors
def plot_series_command(
    results: Path = _RESULTS,
    output: Path = typer.Option(Path("series.png"), "-o", "--output", help="image file"),
    reference: Path | None = typer.Option(
        None, "--reference",
        help="reference peaks: CSV (frame,row,col), simulated NeXus (/entry/truth) or results file",
    ),
    max_distance: float = typer.Option(2.0, "--max-distance", help="matching radius against the reference, px"),
    csv: Path | None = typer.Option(None, "--csv", help="also write the per-frame statistics as CSV"),
    dpi: float = typer.Option(100, "--dpi", help="pixels per inch"),
) -> None:
    """Peak count, mean intensity and (with --reference) position error per frame."""
    from braggflow.io.results import read_peaks
    from braggflow.viz import frame_statistics, plot_series

    table = read_peaks(results)
    ref = _read_reference(reference) if reference is not None else None
    plot_series(table, reference=ref, max_distance=max_distance, output=output, dpi=dpi)
    if csv is not None:
        frame_statistics(table, reference=ref, max_distance=max_distance).to_csv(csv, index=False)
    console.print(f"{len(table)} peaks -> {output}")
