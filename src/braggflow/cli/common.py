"""What every command shares: the consoles, error reporting and warning display.

:func:`friendly_errors` wraps each command: bad input gives one ``error:``
line and exit code 2, a bug gives an ``internal error:`` line and exit code 1,
and braggflow's deprecation warnings are shown as one ``warning:`` line each.
This module imports nothing from the command modules, which import it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["console", "err_console", "state", "friendly_errors", "user_warnings", "library_chatter_to_log",
           "process_seconds", "check_results_name", "print_table", "write_json", "JSON_HELP", "METHOD_HELP",
           "MODEL_HELP", "BACKEND_HELP", "Poni", "Distance", "BeamRow", "BeamCol", "PixelSize", "Wavelength", "Energy",
           "IncidenceAngle", "geometry_overrides"]

log = logging.getLogger("braggflow")

_IMPORTED = time.time()  # fallback start of the command where the process start time cannot be read


def process_seconds() -> float:
    """Seconds since this process started: the wall time of the command, interpreter start-up included.

    Read from ``/proc/self/stat`` (Linux); elsewhere, from the moment
    :mod:`braggflow.cli.common` was imported.
    """
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as uptime:
            since_boot = float(uptime.read().split()[0])
        return max(0.0, since_boot - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


class _PlainWhenPiped(Console):
    """A rich console whose lines are not wrapped when its output is not a terminal.

    Redirected to a file or a pipe, a line stays one line (rich would otherwise
    break it at 80 columns, mid-sentence); on a terminal rich wraps it at the
    terminal's width, between words.
    """

    @property
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:  # rich assigns it in __init__; the property decides
        pass


console = _PlainWhenPiped(stderr=False, highlight=False)
err_console = _PlainWhenPiped(stderr=True, highlight=False)

# geometry options shared by run, watch, identify, azimuthal, remap and detect (typer's Annotated form: declared once)
Poni = Annotated[Path | None, typer.Option("--poni", help="pyFAI PONI file with the detector geometry")]
Distance = Annotated[float | None, typer.Option("--distance", help="geometry: sample-detector distance, mm")]
BeamRow = Annotated[float | None, typer.Option("--beam-row", help="geometry: direct-beam row, px")]
BeamCol = Annotated[float | None, typer.Option("--beam-col", help="geometry: direct-beam column, px")]
PixelSize = Annotated[float | None, typer.Option("--pixel-size", help="geometry: pixel size, mm")]
Wavelength = Annotated[float | None, typer.Option("--wavelength", help="geometry: wavelength, Å")]
Energy = Annotated[float | None, typer.Option("--energy", help="geometry: X-ray energy, keV (or --wavelength)")]
IncidenceAngle = Annotated[float | None, typer.Option(
    "--incidence-angle", help="geometry: grazing incidence angle, deg")]


def geometry_overrides(poni, distance, beam_row, beam_col, pixel, wavelength, energy, incidence) -> dict:
    """The shared geometry options as config keys (``geometry.*``) for run and watch; None where not given."""
    return {"geometry.poni": None if poni is None else str(poni), "geometry.distance_mm": distance,
            "geometry.beam_center_row": beam_row, "geometry.beam_center_col": beam_col,
            "geometry.pixel_size_mm": pixel, "geometry.wavelength_A": wavelength, "geometry.energy_keV": energy,
            "geometry.incidence_angle_deg": incidence}


JSON_HELP = "also write the table as JSON to PATH ('-': print only the JSON, on stdout)"

state = {"debug": False}
"""Options of the root command that the commands read (``debug``: re-raise errors with their traceback)."""

RESULTS_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx5")

# help of the localization options shared by run, watch and demo
METHOD_HELP = "com, gauss, pvoigt or nn (a network: see --model; 'braggnn' is a deprecated name of nn)"
MODEL_HELP = "network for --method nn: shipped name (braggflow models) or model file"
BACKEND_HELP = "inference engine for --method nn: auto (ONNX Runtime when installed, else torch), onnx or torch"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or a problem of the environment, not a bug.

    - ``BraggflowError``: braggflow's own errors about bad input (a ValueError).
    - ``OSError``: a missing or unreadable file, a permission, a full disk, a
      refused connection (h5py and fabio also report unreadable files as OSError).
    - ``ValueError``: libraries report malformed input as a plain ValueError
      that braggflow does not always wrap: a binary file given as a YAML config
      or phase file (UnicodeDecodeError), a malformed CSV reference (pandas'
      ParserError), numpy reading a damaged array.  Treating these as bugs
      would tell the user to report their own broken file.
    - ``MemoryError``: the input does not fit in memory.

    Everything else (TypeError, KeyError, AttributeError, RuntimeError, ...)
    is a bug in braggflow.
    """
    from braggflow.errors import BraggflowError

    return (BraggflowError, OSError, ValueError, MemoryError)


def _one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces collapsed, so that a message stays on one line."""
    return " ".join(text.split())


def friendly_errors(func: Callable) -> Callable:
    """Decorate a command: readable errors, exit codes, and braggflow's warnings shown.

    Bad input (see :func:`_user_errors`) prints ``error: <message>`` and exits
    with code 2; so does a results file that cannot be written (a full disk,
    the file size limit: SIGXFSZ is ignored, so the write fails instead of
    killing the process).  Any other exception is a bug: it prints ``internal error:
    <Type>: <message>`` and a line asking for a report, and exits with code 1.
    With ``--debug`` the exception is re-raised with its traceback instead.
    Ctrl-C exits with code 130.  typer's own exits and usage errors pass
    through unchanged.

    Parameters
    ----------
    func : callable
        The command function.

    Returns
    -------
    wrapper : callable
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _ignore_file_size_signal()
        try:
            with user_warnings(), library_chatter_to_log():
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if state["debug"]:
                raise
            if isinstance(exc, _user_errors()):
                message = _one_line(str(exc)) or type(exc).__name__
                if isinstance(exc, MemoryError):
                    message = f"out of memory ({message})"
                err_console.print(f"error: {message}", markup=False, soft_wrap=True)
                raise typer.Exit(2) from None
            message = _one_line(str(exc))
            err_console.print(f"internal error: {type(exc).__name__}{': ' + message if message else ''}",
                              markup=False, soft_wrap=True)
            err_console.print("this is a bug in braggflow; rerun with --debug for the traceback and report it",
                              markup=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _ignore_file_size_signal() -> None:
    """Let a write past the file size limit (``ulimit -f``) fail with EFBIG instead of killing the process.

    By default SIGXFSZ ends the process on the spot (with a core dump), leaving
    a temporary file and no message; ignored, the write raises an OSError that
    the command reports in one line, its journal intact.
    """
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _warned_by_braggflow() -> bool:
    """Whether the code that called :func:`warnings.warn` is part of braggflow.

    The location a warning is attributed to depends on its ``stacklevel`` (a
    pydantic validator's warning points into pydantic), so the caller of
    ``warnings.warn`` is found on the stack instead: the first frame outside
    the ``warnings`` module and this one.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "braggflow" or name.startswith("braggflow.")


@contextlib.contextmanager
def user_warnings() -> Iterator[None]:
    """Show braggflow's DeprecationWarnings as one ``warning: <message>`` line each on stderr.

    Python hides DeprecationWarning by default; inside this context those
    raised by braggflow's own code (a deprecated option value, say) are shown
    once per message.  Warnings raised by other libraries (scipy's
    ``PeakPropertyWarning``, numpy's runtime warnings, ...) go to the
    ``braggflow`` log at debug level (shown with ``--debug``); braggflow's
    own other warnings are shown as before.
    """
    shown: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not _warned_by_braggflow():  # a library's warning (scipy's PeakPropertyWarning, ...): to the log
            if not issubclass(category, DeprecationWarning):
                log.debug("%s: %s (%s:%s)", category.__name__, _one_line(str(message)), filename, lineno)
            return
        if not issubclass(category, DeprecationWarning):
            previous(message, category, filename, lineno, file, line)
            return
        text = _one_line(str(message))
        if text not in shown:
            shown.add(text)
            err_console.print(f"warning: {text}", markup=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeprecationWarning)
        warnings.showwarning = show
        yield


class _ToDebugLog(logging.Handler):
    """Hand a library's log record on to the ``braggflow.libraries`` log as a DEBUG record."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("braggflow.libraries")
        if target.isEnabledFor(logging.DEBUG):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            target.handle(record)


CHATTY_LIBRARIES = ("fabio", "pyFAI", "silx", "numexpr")
"""Loggers whose records are library chatter (fabio's "Non standard TIFF. Rows per strip TAG missing", ...)."""


@contextlib.contextmanager
def library_chatter_to_log() -> Iterator[None]:
    """Inside this context, the log records of :data:`CHATTY_LIBRARIES` are DEBUG records of ``braggflow.libraries``.

    They reach the terminal only when the log is at debug level (``braggflow
    --debug``), instead of Python's last-resort handler printing every
    library warning on stderr.
    """
    relay = _ToDebugLog()
    loggers = [logging.getLogger(name) for name in CHATTY_LIBRARIES]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(relay)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, saved):
            logger.removeHandler(relay)
            logger.propagate = propagate


def write_json(rows, path: str | Path) -> None:
    """Write ``rows`` (JSON-able: a list of records, or a mapping) as JSON to ``path``; ``-`` prints it on stdout.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    text = json.dumps(rows, indent=1, default=str, ensure_ascii=False)
    if str(path) == "-":
        typer.echo(text)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(text).splitlines()), default=0)


def print_table(title: str, columns: list[str], rows: list[list[str]], *, optional: tuple[str, ...] = (),
                right: tuple[str, ...] = (), caption: str | None = None, target: Console | None = None) -> str:
    """Print a table whose cells are never cut: whole, with fewer columns, or as one record per row.

    The table is printed whole when it fits the console's width (``COLUMNS``
    on a pipe); else without the ``optional`` columns (named under the table)
    when that fits; else as records: one line per row naming it by its first
    cell, then ``column: value`` for the others, each on its own line.  No
    value is shortened with an ellipsis in any of the three forms.

    Parameters
    ----------
    title : str
    columns : list of str
        Column headers.
    rows : list of list of str
        Cell texts, one list per row, in the order of ``columns``.
    optional : tuple of str
        Columns that may be left out to fit, the least important first: the
        first one is left out, then the first two, ... until the table fits.
    right : tuple of str
        Columns aligned right (numbers).
    caption : str, optional
        A line under the table.
    target : rich.console.Console, optional
        Default: :data:`console` (stdout).

    Returns
    -------
    form : {"table", "narrow", "records"}
        The form printed.
    """
    from rich import box
    from rich.table import Table

    out = target or console
    width = out.width

    def needed(names: list[str]) -> int:
        index = [columns.index(n) for n in names]
        widths = [max([_cell_width(n)] + [_cell_width(r[i]) for r in rows]) for n, i in zip(names, index)]
        return sum(widths) + 3 * (len(names) - 1)  # SIMPLE_HEAD box, no edge padding: 3 between columns

    def render(names: list[str], note: str | None) -> None:
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, caption=caption,
                      caption_justify="left")
        for name in names:
            table.add_column(name, justify="right" if name in right else "left", no_wrap=True)  # fits: never cut
        index = [columns.index(n) for n in names]
        for r in rows:
            table.add_row(*(str(r[i]) for i in index))
        out.print(table)
        if note:
            out.print(note, markup=False)

    if needed(columns) <= width:
        render(list(columns), None)
        return "table"
    for k in range(1, len(optional) + 1):
        left = [c for c in optional[:k] if c in columns]
        narrow = [c for c in columns if c not in left]
        if needed(narrow) <= width:
            render(narrow, f"(not shown: {', '.join(left)}; all with --json -)")
            return "narrow"
    out.print(title, markup=False)
    for r in rows:
        out.print(f"- {columns[0]} {r[0]}", markup=False)
        for name, value in zip(columns[1:], r[1:]):
            if str(value) != "":
                out.print(f"    {name}: {' '.join(str(value).split(chr(10)))}", markup=False)
    if caption:
        out.print(caption, markup=False)
    return "records"


def check_results_name(output: Path, option: str = "-o") -> None:
    """Refuse an output name that does not say HDF5 (results and simulated series are NeXus/HDF5 files).

    Raises
    ------
    ConfigError
        If ``output`` does not end in .h5, .hdf5, .nxs or .nx5, or is a folder.
    """
    from braggflow.errors import ConfigError

    if output.suffix.lower() not in RESULTS_SUFFIXES:
        raise ConfigError(f"{option} {output}: the file is written as HDF5; use a .h5 or .nxs name")
    if output.is_dir():
        raise ConfigError(f"{option} {output}: is a folder, not a file; give the file's name, such as "
                          f"{output / 'results.h5'}")
