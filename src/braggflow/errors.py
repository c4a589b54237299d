"""Exceptions raised for bad input.

Every error that a user can cause (a missing file, a wrong dataset path, a bad
parameter) is a :class:`BraggflowError`, whose message names the file or
parameter and what was expected.  The CLI prints it as one line and exits with
a non-zero status.
"""

from __future__ import annotations


class BraggflowError(ValueError):
    """Base class of braggflow's errors about bad input (a ValueError)."""


class InputFileError(BraggflowError):
    """A file is missing, unreadable, truncated or not of the expected format."""


class ConfigError(BraggflowError):
    """A configuration value or command-line option is invalid."""
