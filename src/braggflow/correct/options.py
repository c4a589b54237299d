"""Options of the correct stage (section ``correct`` of the pipeline configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braggflow.options import OptionSection

__all__ = ["CorrectConfig"]


class CorrectConfig(OptionSection):
    """Frame corrections (:mod:`braggflow.correct`)."""

    dark: str | None = Field(None, description="dark frame file (subtracted), or null")
    flat: str | None = Field(
        None, description="flat-field file (frames are divided by it, normalised to mean 1), or null"
    )
    mask: str | None = Field(None, description="mask file (nonzero/True = bad pixel), or null")
    detector: str | None = Field(
        "auto",
        description="pyFAI detector name whose gap mask is added ('auto': by frame shape; null: none)",
    )
    gap_margin: int = Field(
        1, ge=0, description="also mask this many px beside the detector's module gaps (Pilatus module-edge pixels "
        "read ~1.2x their neighbours and make lines of false peaks without a flat field); 0: gaps only")
    flag_values: list[float] = Field(
        default_factory=lambda: [-1.0, -2.0],
        description="pixel values that mark bad pixels (Pilatus: -1 gaps, -2 bad); masked",
    )
    saturation: float | None = Field(
        None,
        gt=0,
        description="counts at which a pixel saturates (peaks touching it are flagged); "
        "null: dtype maximum for integer frames",
    )
    minval: float | None = Field(
        None, description="pixels below this value are set to zero (published BraggNN practice), or null"
    )
    binning: Literal[1, 2] = Field(1, description="bin 2x2 pixels into one (1: no binning)")
    gain: float = Field(1.0, gt=0, description="detector gain, ADU per photon; used for every Poisson error")
    hot_pixels: bool = Field(
        True, description="mask hot pixels: outliers against their 8 neighbours in most of a sample of the series' "
        "frames (braggflow.correct.outliers); measured once before the frames are processed")
    hot_pixel_sigma: float = Field(5.0, gt=0, description="hot-pixel test: excess over the neighbours' median, noise "
                                   "sigma")
    hot_pixel_fraction: float = Field(0.5, gt=0, le=1, description="hot-pixel test: least fraction of the sampled "
                                      "frames in which the pixel is an outlier")
    hot_pixel_frames: int = Field(20, ge=2, le=1000, description="frames sampled (evenly over the series) for the "
                                  "hot-pixel map and the noise of thresholded frames; a series of fewer than 5 frames "
                                  "gets no hot-pixel map (one frame cannot tell a hot pixel from a sharp spot)")

