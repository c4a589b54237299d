"""Core commands: run, demo, simulate, config."""

from __future__ import annotations

import gc
import math
import time
from pathlib import Path

import typer

from braggflow.cli.cluster import CLUSTER_HELP
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

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames  {task.fields[peaks]} peaks  {task.fields[rate]:.1f} frames/s  ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )


def build_config(config_file: Path | None, overrides: dict, sets: list[str] | None):
    """Config from file, then named options, then ``--set KEY=VALUE`` pairs."""
    from braggflow.pipeline.config import apply_overrides, load_config

    config = load_config(config_file)
    config = apply_overrides(config, overrides)
    if sets:
        config = apply_overrides(config, list(sets))
    return config


def run_with_progress(series, config, output, frames_range, resume, workers=0, scheduler=None, description="run",
                      overwrite=False, cluster=None, return_table=True):
    """Run the pipeline with a rich progress bar.

    Returns ``(table, seconds, steady_rate)``: the peak table (None unless
    ``return_table``: it is read back from the results file), the wall time of
    the whole run, and frames/s after the first frame (start-up -- importing
    torch and pyFAI, building the detector mask, loading a model -- costs
    several seconds once and would hide the rate on short runs; NaN when fewer
    than two frames were processed, and with Dask workers, which return frames
    in batches).
    """
    from braggflow.pipeline import run

    start = time.perf_counter()
    first: list[tuple[float, int]] = []  # (time, frames done) at the first report
    last: list[tuple[float, int]] = []  # ... and at the latest one
    with _progress() as progress:
        total = len(series) if frames_range is None else len(frames_range)
        task = progress.add_task(description, total=total, peaks=0, rate=0.0)

        def report(done, total, peaks):
            now = time.perf_counter()
            if not first:
                first.append((now, done))
                gc.freeze()  # and what the first frame loaded (compiled kernels, modules imported on first use)
            t0, d0 = first[0]
            rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
            progress.update(task, completed=done, total=total, peaks=peaks, rate=rate)
            last[:] = [(now, done)]

        # The objects alive now (the imported modules above all: ~185,000 with pandas, numba and
        # dask) outlive the run; frozen out of the garbage collector, its full collections during
        # the run (~0.1 s each, every few hundred frames) no longer traverse them.
        gc.freeze()
        try:
            table = run(series, config=config, output=output, frames_range=frames_range, resume=resume,
                        overwrite=overwrite, progress=report, workers=workers, scheduler_address=scheduler,
                        cluster=cluster, return_table=return_table)
        finally:
            gc.unfreeze()
    steady = float("nan")  # Dask returns frames in batches: no per-frame rate there
    serial = not workers and scheduler is None and cluster is None
    if serial and first and last and last[0][1] > first[0][1] and last[0][0] > first[0][0]:
        steady = (last[0][1] - first[0][1]) / (last[0][0] - first[0][0])
    return table, time.perf_counter() - start, steady


@commands.command("run")
@friendly_errors
def run_command(
    inputs: list[str] = typer.Argument(..., help="frame files, a folder, a glob pattern, or FILE.h5::/dataset"),
    output: Path = typer.Option(..., "-o", "--output", help="results file (NeXus/HDF5)"),
    config_file: Path | None = typer.Option(
        None, "-c", "--config", help="YAML config (see 'braggflow config --default')",
    ),
    frames: str | None = typer.Option(None, "--frames", help="frames START:STOP[:STEP] (a Python slice)"),
    method: str | None = typer.Option(None, "--method", help="localization: " + METHOD_HELP),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    mask: str | None = typer.Option(None, "--mask", help="mask file (nonzero = bad)"),
    dark: str | None = typer.Option(None, "--dark", help="dark frame file"),
    flat: str | None = typer.Option(None, "--flat", help="flat-field file"),
    poni: Poni = None,
    distance: Distance = None,
    beam_row: BeamRow = None,
    beam_col: BeamCol = None,
    pixel: PixelSize = None,
    wavelength: Wavelength = None,
    energy: Energy = None,
    incidence_angle: IncidenceAngle = None,
    finder: str | None = typer.Option(
        None, "--finder", help="find.method: components (default), persistence, or learned (the grazing-incidence "
        "detector network: rings, arcs, spots; needs --incidence-angle)"),
    threshold_sigma: float | None = typer.Option(None, "--threshold-sigma", help="find.threshold_sigma"),
    max_size: int | None = typer.Option(None, "--max-size", help="find.max_size: largest peak kept, pixels"),
    d_min: float | None = typer.Option(None, "--d-min", help="find.d_min: high-resolution limit, Å (needs geometry)"),
    d_max: float | None = typer.Option(None, "--d-max", help="find.d_max: low-resolution limit, Å (needs geometry)"),
    gain: float | None = typer.Option(None, "--gain", help="correct.gain, ADU per photon"),
    dataset: str | None = typer.Option(None, "--dataset", help="dataset path inside HDF5 inputs"),
    sets: list[str] | None = typer.Option(None, "--set", help="any config key: SECTION.KEY=VALUE (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue an unfinished results file (same inputs)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing results file, all of it"),
    omega_start: float | None = typer.Option(
        None, "--omega-start", help="series.omega_start: angle at the start of frame 0, deg (files without omega)",
    ),
    omega_step: float | None = typer.Option(
        None, "--omega-step", help="series.omega_step: rotation per frame, deg (files without omega)",
    ),
    csv: Path | None = typer.Option(None, "--csv", help="also write the peak table as CSV"),
    parquet: Path | None = typer.Option(None, "--parquet", help="also write the peak table as Parquet"),
    workers: int = typer.Option(0, "--workers", help="Dask worker processes (0: this process)"),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="address of a running Dask scheduler (e.g. on Slurm)",
    ),
    cluster_kind: str | None = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    jobs: int | None = typer.Option(None, "--jobs", help="cluster.jobs: batch jobs to submit (default 1)"),
    cores: int | None = typer.Option(None, "--cores", help="cluster.cores: cores per job, one worker each"),
    memory: str | None = typer.Option(None, "--memory", help="cluster.memory: memory per job, e.g. 16GB"),
    walltime: str | None = typer.Option(None, "--walltime", help="cluster.walltime: job time limit HH:MM:SS"),
    queue: str | None = typer.Option(None, "--queue", help="cluster.queue: partition or queue"),
    account: str | None = typer.Option(None, "--account", help="cluster.account: account charged for the jobs"),
    veto_empty: bool = typer.Option(
        False, "--veto-empty", help="frames.veto_empty: store the peaks of hits only (frames with at least "
        "frames.hit_min_peaks peaks, default 10); other frames' peaks are counted, not stored"),
) -> None:
    """Find, locate and integrate Bragg peaks in a series of frames."""
    from braggflow.cli.cluster import cluster_from_options
    from braggflow.io.frames import open_frames
    from braggflow.pipeline import check_workers, parse_frame_range

    overrides = {
        "locate.method": method, "locate.model": model, "locate.backend": backend, "correct.mask": mask,
        "correct.dark": dark, "correct.flat": flat, "find.method": finder, "find.threshold_sigma": threshold_sigma,
        "find.max_size": max_size, "find.d_min": d_min, "find.d_max": d_max,
        "correct.gain": gain, "series.omega_start": omega_start, "series.omega_step": omega_step,
        "frames.veto_empty": True if veto_empty else None,
        **geometry_overrides(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence_angle),
    }
    config = build_config(config_file, overrides, sets)
    check_results_name(output)
    check_workers(workers)
    cluster = cluster_from_options(config_file, kind=cluster_kind, jobs=jobs, cores=cores, memory=memory,
                                   walltime=walltime, queue=queue, account=account, workers=workers,
                                   scheduler=scheduler)
    series = open_frames(inputs if len(inputs) > 1 else inputs[0], dataset=dataset)
    rng = None if frames is None else parse_frame_range(frames, len(series))
    _, seconds, steady = run_with_progress(series, config, output, rng, resume, workers, scheduler,
                                           overwrite=overwrite, cluster=cluster, return_table=False)
    if csv is not None or parquet is not None:  # the whole table, read back only for these
        from braggflow.io.results import read_peaks

        table = read_peaks(output)
        if csv is not None:
            table.to_csv(csv, index=False)
        if parquet is not None:
            table.to_parquet(parquet, index=False)
    line = run_summary(output, seconds, steady, total=len(series))
    compiled = kernels_compiled()
    if compiled:
        line += (f"\n{compiled} compiled kernel version{'' if compiled == 1 else 's'} built on first use (numba); "
                 "cached on disk, later runs load them")
    console.print(line)


def kernels_compiled() -> int:
    """How many kernel versions this process compiled instead of loading them from numba's disk cache.

    Counts the cache misses of every numba dispatcher in the braggflow modules
    imported so far (one per argument-type signature compiled).  The first run
    after an install or an update compiles them (tens of seconds), later runs
    load them.

    Returns
    -------
    n : int
        Kernel versions compiled by this process (0 without numba).
    """
    import sys

    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    seen: set[int] = set()
    misses = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("braggflow.") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and id(value) not in seen:
                seen.add(id(value))
                misses += sum(value.stats.cache_misses.values())
    return misses


def run_summary(output: Path, seconds: float, steady: float, *, total: int) -> str:
    """The closing line of ``run``: frames processed now, frames in the file, its status, peaks, speed.

    The frames processed now are those the file holds less those it held
    before (a resumed run); the peaks are counted from the file's attributes.
    """
    from braggflow.io.results import read_frames_done, read_process, read_status
    from braggflow.io.store import stored_peak_count

    stored = len(read_frames_done(output))
    n_peaks = stored_peak_count(output)
    process = read_process(output)
    processed = int(process.get("frames_processed", stored))
    asked = str(process.get("frames_requested", f"0:{total}"))
    status = read_status(output)
    rates = f"{processed / seconds:.1f} frames/s overall" if seconds > 0 and processed else ""
    if not math.isnan(steady):
        rates += f", {steady:.1f} after the first frame"
    part = f"; frames asked {asked}" if asked != f"0:{total}" else ""
    line = (f"{processed} frame{'' if processed == 1 else 's'} processed, {stored} of {total} in the file "
            f"({status}{part}), {n_peaks} peaks -> "
            f"{output} in {seconds:.1f} s" + (f" ({rates})" if rates else ""))
    if status != "complete":
        line += "; continue with --resume"
    elif stored < total:
        line += "; add frames with --resume --frames START:STOP (--resume alone: all the others)"
    from braggflow.io.results import read_frames

    frames = read_frames(output)
    if len(frames):
        hot = int(frames["hot_pixels"].max())
        line += (f"\n{hot} hot pixel{'' if hot == 1 else 's'} masked, {int(frames['zingers'].sum())} zingers dropped, "
                 f"{int((frames['saturated'] > 0).sum())} frames with saturated pixels; median noise "
                 f"{frames['noise'].median():.3g} counts (frames table: {output}:/entry/frames)")
        thresholded = int(frames["thresholded"].sum()) if "thresholded" in frames else 0
        if thresholded:
            line += (f"\n{thresholded} of {len(frames)} frames thresholded upstream (noise from the storage threshold; "
                     "not deblended)")
    if process.get("geometry_source"):
        line += f"\ngeometry from {process['geometry_source']}"
    return line


def check_watch_options(*, idle_timeout: float, poll: float, give_up: float) -> None:
    """Refuse watch timings that are not finite seconds: ``--poll`` and ``--give-up`` above 0, ``--idle-timeout`` >= 0.

    Raises
    ------
    ConfigError
        Naming the option and its value.
    """
    from braggflow.errors import ConfigError

    for option, value, least in (("--idle-timeout", idle_timeout, "0 (never)"), ("--poll", poll, None),
                                 ("--give-up", give_up, None)):
        ok = math.isfinite(value) and (value >= 0 if least else value > 0)
        if not ok:
            raise ConfigError(f"{option} {value:g}: give a finite number of seconds, "
                              + (f"at least {least}" if least else "above 0"))


def watch_summary(output: Path, result, *, shown: int = 10) -> str:
    """The closing lines of ``watch``: frames, peaks, speed, status; the files skipped and unfinished, named.

    Parameters
    ----------
    output : Path
        The results file.
    result : braggflow.pipeline.watch.WatchResult
    shown : int
        Files named of each kind; the others are counted (all are in ``/entry/watch``).
    """
    import numpy as np

    log = result.frames
    if len(log):
        lat = log["latency"].to_numpy()
        rate = len(log) / max(log["t_written"].max() - log["t_written"].min(), 1e-9) if len(log) > 1 else float("nan")
        line = (f"{len(log)} frames, {int(log['n_peaks'].sum())} peaks -> {output} ({result.status}); "
                f"stopped: {result.stopped_by}; {rate:.1f} frames/s; latency median {np.median(lat):.2f} s, "
                f"p95 {np.percentile(lat, 95):.2f} s")
    else:
        line = f"no new frames -> {output} ({result.status}); stopped: {result.stopped_by}"
    lines = [line]
    for kind, names, why in (("skipped", result.skipped, result.reasons),
                             ("unfinished", result.unfinished, {})):
        for name in names[:shown]:
            lines.append(f"{kind}: {name} ({why.get(name, 'not complete when the watch stopped')})")
        if len(names) > shown:
            lines.append(f"{kind}: {len(names) - shown} more files (all named in {output}:/entry/watch/{kind})")
    if result.status != "complete":
        lines.append(f"{output} is incomplete: the files above are not in it; start the watch again on the same "
                     "output to continue (after repairing a skipped file)")
    return "\n".join(lines)


@commands.command("config")
@friendly_errors
def config_command(
    default: bool = typer.Option(False, "--default", help="print the full default config with a comment per key"),
    config_file: Path | None = typer.Option(None, "-c", "--config", help="validate and print this config"),
) -> None:
    """Print the default configuration, or validate a config file."""
    from braggflow.pipeline.config import default_config_yaml, load_config

    # plain text, never wrapped at the terminal width: the output is meant to be redirected into a YAML file
    text = load_config(config_file).to_yaml() if config_file is not None else default_config_yaml()
    typer.echo(text, nl=False)


@commands.command("simulate")
@friendly_errors
def simulate_command(
    output: Path = typer.Argument(..., help="NeXus/HDF5 file to write"),
    frames: int | None = typer.Option(None, "--frames", help="number of frames (default 20; 24 with --benchmark)"),
    shape: tuple[int, int] = typer.Option((2048, 2048), "--shape", help="frame shape H W, px"),
    peaks: int = typer.Option(100, "--peaks", help="peaks per frame (mixed profile without --pairs: ~10% more)"),
    seed: int | None = typer.Option(None, "--seed", help="random seed (default 0; the pinned one with --benchmark)"),
    profile: str = typer.Option("mixed", "--profile", help="peak population: mixed (the demo's) or gaussian"),
    sigma: tuple[float, float] | None = typer.Option(
        None, "--sigma", help="range of the Gaussian sigma LO HI, px (default 0.8 1.8 mixed, 0.8 2.0 gaussian)"),
    flux: tuple[float, float] | None = typer.Option(
        None, "--flux", help="range of the peak flux LO HI, photons, log-uniform (default 1500 60000 mixed, "
        "2000 50000 gaussian)"),
    pairs: float | None = typer.Option(None, "--pairs", help="fraction of the peaks in close pairs, 0-1"),
    pair_sep: tuple[float, float] | None = typer.Option(
        None, "--pair-sep", help="distance between the members of a close pair LO HI, px (default 3 6)"),
    background: float = typer.Option(20.0, "--background", help="mean background, photons/px"),
    flat_background: bool = typer.Option(False, "--flat-background", help="flat background (default: smooth +-50%)"),
    defects: bool = typer.Option(True, "--defects/--no-defects", help="masked module gap, 20 hot and 20 dead pixels"),
    benchmark: bool = typer.Option(
        False, "--benchmark", help="write the pinned frames of the pipeline benchmark (benchmark_series); "
        "only --frames and --seed combine with it"),
) -> None:
    """Write a simulated series with its ground-truth peak table."""
    from braggflow.errors import BraggflowError
    from braggflow.simulate.frames import benchmark_series, simulate_series, write_nexus

    check_results_name(output, option="OUTPUT")
    if frames is not None and frames < 1:
        raise BraggflowError(f"--frames must be >= 1, got {frames}")
    if benchmark:
        given = {"--shape": shape != (2048, 2048), "--peaks": peaks != 100, "--profile": profile != "mixed",
                 "--sigma": sigma is not None, "--flux": flux is not None, "--pairs": pairs is not None,
                 "--pair-sep": pair_sep is not None, "--background": background != 20.0,
                 "--flat-background": flat_background, "--no-defects": not defects}
        clash = [name for name, set_ in given.items() if set_]
        if clash:
            raise BraggflowError(f"--benchmark pins the frames; it does not combine with {', '.join(clash)}")
        frames = 24 if frames is None else frames
        series = benchmark_series(frames) if seed is None else benchmark_series(frames, seed=seed)
    else:
        frames = 20 if frames is None else frames
        checks = [("--shape", min(shape) >= 64, f"must be at least 64 64, got {shape[0]} {shape[1]}"),
                  ("--peaks", peaks >= 0, f"must be >= 0, got {peaks}"),
                  ("--profile", profile in ("mixed", "gaussian"), f"must be mixed or gaussian, got {profile!r}"),
                  ("--pairs", pairs is None or 0 <= pairs <= 1, f"must be a fraction in [0, 1], got {pairs}"),
                  ("--background", math.isfinite(background) and background >= 0,
                   f"must be a finite number >= 0 photons/px, got {background}")]
        for name, value in (("--sigma", sigma), ("--flux", flux), ("--pair-sep", pair_sep)):
            checks.append((name, value is None or (0 < value[0] <= value[1] and math.isfinite(value[1])),
                           f"must be two numbers LO HI with 0 < LO <= HI, got {value and ' '.join(map(str, value))}"))
        for name, ok, what in checks:
            if not ok:
                raise BraggflowError(f"{name} {what}")
        series = simulate_series(frames, shape=tuple(shape), n_peaks=peaks, seed=0 if seed is None else seed,
                                 profile=profile, sigma=sigma, flux=flux, pairs=pairs, pair_sep=pair_sep,
                                 background=background, flat_background=flat_background, gap=defects,
                                 n_hot=20 if defects else 0, n_dead=20 if defects else 0)
    write_nexus(output, series)
    h, w = series.frames.shape[1:]
    console.print(f"{frames} frames of {h}x{w}, {len(series.truth)} true peaks -> {output}")


def _default_demo_method() -> str:
    """``nn`` when a default network is shipped, else ``com`` (centre of mass).

    Raises
    ------
    InputFileError
        If the shipped-model manifest exists but cannot be read.
    """
    from braggflow.nn.files import list_models

    return "nn" if any(row["default"] for row in list_models()) else "com"


@commands.command("demo")
@friendly_errors
def demo_command(
    out: Path = typer.Option(Path("braggflow-demo"), "--out", help="folder for the simulated frames and the results"),
    frames: int = typer.Option(20, "--frames", help="frames to simulate"),
    peaks: int = typer.Option(100, "--peaks", help="peaks per frame"),
    method: str | None = typer.Option(
        None, "--method", help=f"localization: {METHOD_HELP}; default: nn when a network is shipped, else com"),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    json_file: Path | None = typer.Option(
        None, "--json", help="also write the report as JSON to PATH ('-': print only the JSON, on stdout)"),
) -> None:
    """Simulate a 2048 x 2048 series, run the whole pipeline, and report against the truth (written as truth.csv)."""
    import numpy as np

    from braggflow.io.frames import open_frames
    from braggflow.simulate.frames import match_peaks, simulate_series, write_nexus

    method = method or _default_demo_method()
    config = build_config(None, {"locate.method": method, "locate.model": model, "locate.backend": backend}, None)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"simulating {frames} frames of 2048x2048 with ~{peaks} peaks each ...")
    sim = simulate_series(frames, n_peaks=peaks, seed=seed)
    frames_path = out / "frames.h5"
    write_nexus(frames_path, sim)
    series = open_frames(str(frames_path))
    results = out / "results.h5"
    table, seconds, steady = run_with_progress(series, config, results, range(len(series)), False, description="demo",
                                               overwrite=True)  # the demo's own folder
    matches = match_peaks(table, sim.truth, max_distance=1.5)
    findable = ~sim.truth["masked"].to_numpy()
    hit = matches["found_index"].to_numpy() >= 0
    recall = hit[findable].mean()
    precision = hit.sum() / max(len(table), 1)
    dist = matches["distance"].dropna()
    table.to_csv(out / "peaks.csv", index=False)
    sim.truth.to_csv(out / "truth.csv", index=False)  # the reference of 'plot series --reference' and 'plot frame'
    label = config.locate.method
    if label == "nn":
        from braggflow.nn.files import default_model_name

        label += f", model {config.locate.model or default_model_name()}"
    from braggflow.cli.common import process_seconds

    total_seconds = process_seconds()
    report = {
        "frames": f"{len(series)} x 2048 x 2048",
        "true peaks (findable)": f"{len(sim.truth)} ({findable.sum()} outside the masked gap)",
        "peaks found": f"{len(table)}",
        "recall (within 1.5 px)": f"{recall:.3f}",
        "precision": f"{precision:.3f}",
        "position error median": f"{np.median(dist):.3f} px",
        "position error p95": f"{np.percentile(dist, 95):.3f} px",
        "speed": (f"{steady:.2f} frames/s after the first frame (reading, correcting, finding, locating, integrating, "
                  f"writing); the pipeline {seconds:.1f} s, the whole command {total_seconds:.1f} s (start-up, "
                  "simulation and this report included)" if math.isfinite(steady)
                  else f"the pipeline {seconds:.1f} s, the whole command {total_seconds:.1f} s"),
        "results": f"{results}, {out / 'peaks.csv'}",
        "truth": f"{out / 'truth.csv'} (e.g. braggflow plot series {results} --reference {out / 'truth.csv'})",
    }
    compiled = kernels_compiled()
    if compiled:
        report["compiled"] = (f"{compiled} kernel version{'' if compiled == 1 else 's'} built on first use (numba), "
                              "in the whole command's time; cached on disk, later runs load them")
    if json_file is not None:
        from braggflow.cli.common import write_json

        write_json({"method": label, **report, "seconds_pipeline": seconds, "seconds_command": total_seconds,
                    "frames_per_second": steady, "kernels_compiled": compiled}, json_file)
        if str(json_file) == "-":
            return
    console.print(f"braggflow demo ({label})", markup=False)
    for key, value in report.items():
        console.print(f"  {key}: {value}", markup=False)
