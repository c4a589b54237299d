"""The ``braggflow`` typer application, assembled from the command modules.

Each command module (``core``, ``models``, ``phases``, ``series``) defines its
commands on its own ``typer.Typer`` named ``commands`` and imports nothing
from here; this module adds them to :data:`app` in the order ``braggflow
--help`` lists them.  :func:`main` is the console entry point.  Logic lives in
the stages; commands only parse options, call them and print.
"""

from __future__ import annotations

import atexit
import gc
import logging
import sys

import typer
import typer.core

from braggflow.cli import core, models, phases, series
from braggflow.cli.common import console, err_console, friendly_errors, state

__all__ = ["app", "build_app", "main", "console", "err_console", "friendly_errors"]


def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks on errors")) -> None:
    """braggflow: find, locate, integrate and identify Bragg peaks."""
    state["debug"] = debug
    if debug:  # libraries' messages, demoted to debug records, are shown too
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


def _flag_type(self, ctx):
    """The type shown in ``--help`` for an option: none for a flag (``--resume``, not ``--resume <bool>``)."""
    if getattr(self, "is_flag", False):
        return None
    return _option_type(self, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type


def build_app() -> typer.Typer:
    """A complete ``braggflow`` application: the root options and every command.

    Returns
    -------
    app : typer.Typer
    """
    application = typer.Typer(
        name="braggflow",
        help="From X-ray area-detector frames to Bragg-peak tables, fast.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    application.callback()(_root)
    from braggflow.cli import dashboard, detect

    for module in (core, models, phases, series, detect, dashboard):
        application.add_typer(module.commands)
    return application


app = build_app()

# At exit the interpreter's last garbage collections traverse every object still alive (the
# imported modules above all: ~185,000 objects with pandas, numba and dask), ~0.5 s a
# process; frozen out of the collector by the last exit handler, they are not traversed
# (the files are closed and flushed by then: exit handlers run in reverse order).
atexit.register(gc.freeze)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``braggflow``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name; default: ``sys.argv[1:]``.
    """
    app(args=argv if argv is not None else sys.argv[1:], prog_name="braggflow")
