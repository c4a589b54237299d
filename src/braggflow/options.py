"""The base of every stage's option section.

Each stage keeps its options beside its code (``correct/options.py``,
``find/options.py``, ...) as a subclass of :class:`OptionSection`;
:mod:`braggflow.pipeline.config` composes them into the run's configuration.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["OptionSection"]


class OptionSection(BaseModel):
    """A section of options: unknown keys are errors, assignments are validated, numbers are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
