"""What every command shares: the consoles, error reporting and warning display.

:func:`friendly_errors` wraps each command: bad input gives one ``error:``
line and exit code 2, a bug gives an ``internal error:`` line and exit code 1,
and braggflow's deprecation warnings are shown as one ``warning:`` line each.
This module imports nothing from the command modules, which import it.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console

__all__ = ["console", "err_console", "state", "friendly_errors", "user_warnings", "check_results_name", "METHOD_HELP",
           "MODEL_HELP", "BACKEND_HELP"]

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

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
            with user_warnings():
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
    once per message.  Other libraries' DeprecationWarnings stay hidden, and
    other warnings are shown as before.
    """
    shown: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DeprecationWarning):
            previous(message, category, filename, lineno, file, line)
            return
        if not _warned_by_braggflow():
            return
        text = _one_line(str(message))
        if text not in shown:
            shown.add(text)
            err_console.print(f"warning: {text}", markup=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeprecationWarning)
        warnings.showwarning = show
        yield


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
