"""Options of the integrate stage (section ``integrate`` of the pipeline configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braggflow.options import OptionSection

__all__ = ["IntegrateConfig"]


class IntegrateConfig(OptionSection):
    """Peak intensities (:mod:`braggflow.integrate`)."""

    radius: float | None = Field(
        None, gt=0, description="integration radius in px; null: the peak's own region grown by 1 px"
    )
    background_width: float = Field(3.0, gt=0, description="width of the background annulus, px")

    method: Literal["sum", "profile"] = Field(
        "sum", description="'sum': background-subtracted sum over the peak's region; 'profile': the integral of a "
        "pseudo-Voigt-Moffat profile fitted to each peak (wings beyond the region included), the sum kept and "
        "flagged SUMMED where the profile does not describe the peak; on frames thresholded upstream (frames "
        "table: thresholded) a Gaussian fitted by the censored likelihood (braggflow.integrate.censored), which "
        "counts the part of a spot below the storage threshold")
