"""The ``dashboard`` and ``summary`` commands, and the web dashboard that ``watch --dashboard`` starts."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from braggflow.cli.common import console, err_console, friendly_errors

commands = typer.Typer()
"""This module's commands (added to ``braggflow`` by :mod:`braggflow.cli.app`)."""

__all__ = ["commands", "start_dashboard", "summary_text", "DASHBOARD_HELP", "HOST_HELP", "PORT_HELP"]

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
    hit_peaks: int = typer.Option(10, "--hit-peaks", help="a frame with at least this many peaks is a hit"),
) -> None:
    """Print a results file's totals and rates: frames, peaks, hits and hit rate, processing time, latency."""
    from braggflow.dashboard import ResultsView
    from braggflow.errors import ConfigError

    if hit_peaks < 1:
        raise ConfigError(f"--hit-peaks {hit_peaks}: give at least 1")
    view = ResultsView(results, hit_peaks=hit_peaks)
    view.update()
    if view.error:
        raise ConfigError(view.error)
    console.print(summary_text(view), markup=False, highlight=False, soft_wrap=True)


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
