"""Command-line interface (``braggflow ...``): a thin front over the stages."""

from braggflow.cli.app import app, main

__all__ = ["app", "main"]
