"""The typer application shared by every command module, and its error handling.

Command modules (``core``, ``models``, ``phases``, ``series``) decorate their
functions with ``@app.command()``; :func:`main` is the console entry point.
Logic lives in the stages; commands only parse options, call them and print.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console

app = typer.Typer(
    name="braggflow",
    help="From X-ray area-detector frames to Bragg-peak tables, fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks on errors")) -> None:
    """braggflow: find, locate, integrate and identify Bragg peaks."""
    _state["debug"] = debug


def friendly_errors(func: Callable) -> Callable:
    """Decorate a command so bad input gives one readable line and exit code 2.

    braggflow's own errors, OS errors (missing files) and ValueError/KeyError from
    validation are printed as ``error: <message>``; with ``--debug`` the
    traceback is shown instead.  Ctrl-C exits with 130.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except (ValueError, KeyError, OSError, TypeError, RuntimeError) as exc:
            if _state["debug"]:
                raise
            message = str(exc) if str(exc) else type(exc).__name__
            if isinstance(exc, KeyError):
                message = str(exc.args[0]) if exc.args else message
            err_console.print(f"error: {message}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``braggflow``)."""
    # the command modules register their commands on import
    from braggflow.cli import core, models, phases, series  # noqa: F401

    app(args=argv if argv is not None else sys.argv[1:], prog_name="braggflow")
