"""Options of the frame series (section ``series`` of the pipeline configuration)."""

from __future__ import annotations

from pydantic import Field

from braggflow.options import OptionSection

__all__ = ["SeriesConfig"]


class SeriesConfig(OptionSection):
    """What the frame files do not record (:mod:`braggflow.io`)."""

    omega_start: float | None = Field(
        None, description="rotation angle at the start of frame 0, deg, for series whose files record no omega "
        "(TIFF, CBF, ...); used with omega_step (null: 0)")
    omega_step: float | None = Field(
        None, gt=0, description="rotation per frame, deg, for series whose files record no omega: frame k covers "
        "[omega_start + k step, omega_start + (k + 1) step]; null: no omega")
