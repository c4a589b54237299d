"""The ``dashboard`` and ``summary`` commands, and the web dashboard that ``watch --dashboard`` starts."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from braggflow.cli.common import console, err_console, friendly_errors

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""

__all__ = ["commands", "start_dashboard", "summary_text", "summary_record", "SUMMARY_FIELDS", "DASHBOARD_HELP",
           "HOST_HELP", "PORT_HELP"]

DASHBOARD_HELP = "serve a live web dashboard of the results file (http://127.0.0.1:8050/ unless --host/--port)"
HOST_HELP = ("address the dashboard binds (default 127.0.0.1: this machine only); another address lets anyone who "
             "reaches it see the results")
PORT_HELP = "TCP port of the dashboard (0: a free one)"


def start_dashboard(results: Path, *, host: str | None, port: int, hit_peaks: int | None = None,
                    interval: float = 1.0):
    """Serve the dashboard of ``results``; print where, and a warning when it is reachable from other machines.

    Parameters
    ----------
    results : Path
        Results file (finished, being written, or about to be).
    host : str or None
        ``--host``; None binds 127.0.0.1.
    port : int
        ``--port``.
    hit_peaks : int, optional
        Peaks that make a frame a hit (default :data:`braggflow.dashboard.HIT_PEAKS`).
    interval : float
        Seconds between reads of the file.

    Returns
    -------
    server : braggflow.dashboard.DashboardServer

    Raises
    ------
    ConfigError
        If Bokeh is missing, the port is taken or out of range.
    """
    from braggflow.dashboard import HIT_PEAKS, serve
    from braggflow.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a TCP port 1-65535 (0: a free one)")
    address = host or "127.0.0.1"
    if address not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[bold yellow]warning:[/] the dashboard listens on {address}: anyone who can reach this "
                          "machine there can see the results (it is read-only; it has no login)")
    server = serve(results, host=address, port=port, hit_peaks=hit_peaks or HIT_PEAKS, interval=interval)
    err_console.print(f"dashboard: {server.url}")
    return server


@commands.command("dashboard")
@friendly_errors
def dashboard_command(
    results: Path = typer.Argument(..., help="results file (finished, or being written by run/watch)"),
    port: int = typer.Option(8050, "--port", help=PORT_HELP),
    host: str | None = typer.Option(None, "--host", help=HOST_HELP),
    hit_peaks: int = typer.Option(10, "--hit-peaks", help="a frame with at least this many peaks is a hit"),
    interval: float = typer.Option(1.0, "--interval", help="seconds between reads of the results file"),
    duration: float = typer.Option(0.0, "--duration", help="stop after this many seconds (0: at Ctrl-C)"),
) -> None:
    """Serve a live web dashboard of a results file: latest frame, hit rate, speed, q, phases."""
    from braggflow.errors import ConfigError

    if not results.exists() and not results.with_name(results.name + ".journal").exists():
        raise ConfigError(f"{results}: no such results file")
    if hit_peaks < 1 or not interval > 0:
        raise ConfigError("--hit-peaks must be >= 1 and --interval above 0")
    server = start_dashboard(results, host=host, port=port, hit_peaks=hit_peaks, interval=interval)
    console.print(f"serving {results} at {server.url} (Ctrl-C stops)")
    try:
        end = time.monotonic() + duration if duration > 0 else float("inf")
        while time.monotonic() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@commands.command("summary")
@friendly_errors
def summary_command(
    results: Path = typer.Argument(..., help="results file (finished, or being written)"),
    hit_peaks: int | None = typer.Option(
        None, "--hit-peaks", help="a frame with at least this many peaks is a hit (default: the file's "
        "frames.hit_min_peaks, 10 for a file that records none)"),
    json_file: Path | None = typer.Option(None, "--json", help="also write the totals as JSON to PATH ('-': print "
                                          "only the JSON, on stdout)"),
) -> None:
    """Print a results file's totals and rates as a table: frames, peaks, hits and hit rate, time, latency."""
    from braggflow.cli.common import print_table, write_json
    from braggflow.errors import ConfigError

    if hit_peaks is not None and hit_peaks < 1:
        raise ConfigError(f"--hit-peaks {hit_peaks}: give at least 1")
    record = summary_record(results, hit_peaks=hit_peaks)
    if json_file is not None:
        write_json(record, json_file)
        if str(json_file) == "-":
            return
    rows = [[name, _summary_value(value), SUMMARY_FIELDS[name]] for name, value in record.items()
            if name in SUMMARY_FIELDS]
    print_table(f"{results}: totals and rates", ["quantity", "value", "meaning"], rows, optional=("meaning",),
                right=("value",))


#: the rows of ``braggflow summary``'s table, with what each means
SUMMARY_FIELDS = {
    "status": "running, incomplete or complete",
    "frames": "frames in the file",
    "first_frame": "lowest frame index",
    "last_frame": "highest frame index",
    "peaks_found": "peaks found (sum of n_peaks)",
    "peaks_stored": "peaks in /entry/peaks (fewer with --veto-empty)",
    "peaks_per_frame_mean": "peaks per frame, mean",
    "peaks_per_frame_median": "peaks per frame, median",
    "peaks_per_frame_max": "peaks per frame, most",
    "frames_without_peaks": "frames with no peak",
    "hit_min_peaks": "hit rule: at least this many peaks",
    "hits": "frames that are hits",
    "hit_rate": "hits / frames",
    "veto_empty": "peaks of non-hits not stored",
    "time_per_frame_median_s": "processing time per frame, median, s",
    "time_per_frame_p95_s": "processing time per frame, 95th percentile, s",
    "frames_per_second_per_process": "1 / median processing time",
    "latency_median_s": "live: frame complete to journaled, median, s",
    "latency_p95_s": "live: frame complete to journaled, 95th percentile, s",
}


def _summary_value(value) -> str:
    """A summary value as table text (3 significant digits for fractions, "-" for none)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary_record(results: Path, *, hit_peaks: int | None = None) -> dict:
    """The totals and rates of a results file, from its frames table (no peak is read).

    Parameters
    ----------
    results : Path
        A results file, finished or being written (snapshot and journal).
    hit_peaks : int, optional
        The hit rule's minimum peaks; default: the file's ``frames.hit_min_peaks``
        (:data:`braggflow.pipeline.config.HIT_MIN_PEAKS` for a file that records none).

    Returns
    -------
    record : dict
        The keys of :data:`SUMMARY_FIELDS` (None where the file has nothing to say, e.g. latency of a run).

    Raises
    ------
    InputFileError
        If the file is missing or is not a results file.
    """
    import numpy as np
    import yaml

    from braggflow.io.results import read_frames, read_status
    from braggflow.io.store import count_peaks
    from braggflow.io.writer import stored_process
    from braggflow.pipeline.config import HIT_MIN_PEAKS

    frames = read_frames(results)
    process = stored_process(results)
    status = read_status(results) if results.exists() else process["_status"]
    stored = (yaml.safe_load(process.get("config") or "") or {}).get("frames") or {}
    for key in ("hit_min_peaks", "veto_empty"):  # the writer's own record of the rule, where it keeps one
        if key in process:
            stored[key] = int(process[key])
    rule = hit_peaks or int(stored.get("hit_min_peaks", HIT_MIN_PEAKS))
    counts = frames["n_peaks"].to_numpy()
    n = len(frames)
    hits = frames["hit"].to_numpy(bool) if hit_peaks is None and "hit_min_peaks" in stored else counts >= rule
    t = frames["time"].to_numpy(float)
    t = t[np.isfinite(t)]
    lat = frames["latency"].to_numpy(float)
    lat = lat[np.isfinite(lat)]

    def stat(values, f):
        return float(f(values)) if values.size else None

    return {
        "path": str(results), "status": status, "frames": n,
        "first_frame": int(frames["frame"].min()) if n else None,
        "last_frame": int(frames["frame"].max()) if n else None,
        "peaks_found": int(counts.sum()), "peaks_stored": count_peaks(results),
        "peaks_per_frame_mean": stat(counts, np.mean), "peaks_per_frame_median": stat(counts, np.median),
        "peaks_per_frame_max": int(counts.max()) if n else None,
        "frames_without_peaks": int((counts == 0).sum()),
        "hit_min_peaks": rule, "hits": int(hits.sum()), "hit_rate": float(hits.mean()) if n else None,
        "veto_empty": bool(stored.get("veto_empty", False)),
        "time_per_frame_median_s": stat(t, np.median), "time_per_frame_p95_s": stat(t, lambda v: np.percentile(v, 95)),
        "frames_per_second_per_process": 1 / float(np.median(t)) if t.size and np.median(t) > 0 else None,
        "latency_median_s": stat(lat, np.median), "latency_p95_s": stat(lat, lambda v: np.percentile(v, 95)),
    }


def summary_text(view) -> str:
    """The lines of ``braggflow summary`` for a :class:`braggflow.dashboard.ResultsView` that was updated.

    Returns
    -------
    text : str
        Frames, peaks (total, per frame: mean, median, max), hits (>= N peaks) and hit rate, frames
        without peaks, processing time per frame (median, p95), latency when the file records it.
    """
    import numpy as np

    frames = view.frames
    n = len(frames)
    if not n:
        return f"{view.path}: no frames yet"
    counts = frames["n_peaks"].to_numpy()
    hits = view.hits()
    t = frames["time"].to_numpy(float) if "time" in frames else np.zeros(0)
    t = t[np.isfinite(t)]
    lines = [f"{view.path}: {n} frames (frames {int(frames['frame'].min())}-{int(frames['frame'].max())})",
             f"peaks: {int(counts.sum())} (per frame: mean {counts.mean():.1f}, median {np.median(counts):g}, "
             f"max {counts.max()}); {int((counts == 0).sum())} frames without peaks",
             f"hits (>= {view.hit_peaks} peaks): {int(hits.sum())} of {n}, hit rate {hits.mean():.3f}"]
    if t.size:
        lines.append(f"processing time per frame: median {np.median(t) * 1e3:.1f} ms, p95 "
                     f"{np.percentile(t, 95) * 1e3:.1f} ms ({1 / np.median(t):.1f} frames/s per process)")
    lat = view.latency()
    if lat.size:
        lines.append(f"latency (frame complete -> journaled): median {np.median(lat):.2f} s, p95 "
                     f"{np.percentile(lat, 95):.2f} s")
    return "\n".join(lines)
