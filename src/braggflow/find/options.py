"""Options of the find stage (section ``find`` of the pipeline configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braggflow.options import OptionSection

__all__ = ["FindConfig"]


class FindConfig(OptionSection):
    """Peak finding (:mod:`braggflow.find`)."""

    method: Literal["components", "persistence"] = Field(
        "components",
        description="'components': connected components with watershed splitting; "
        "'persistence': topological persistence",
    )
    threshold: float | None = Field(
        None, gt=0, description="absolute threshold above background, counts; null: threshold_sigma x robust noise"
    )
    threshold_sigma: float = Field(
        5.0, gt=0, description="threshold in units of the frame's robust noise (used when threshold is null)"
    )
    tile: int = Field(64, ge=8, le=4096, description="tile size in px for the background and noise estimate")
    min_size: int | None = Field(
        None, ge=1,
        description="minimum pixels above threshold for a peak; null: 2, or 1 on sparse frames (see sparse)")
    min_separation: float = Field(2.0, ge=1, description="minimum distance between two peaks' maxima, px")
    split_sigma: float = Field(
        4.0, gt=0, description="components: two maxima stay separate peaks when the dip between them exceeds this many "
        "sigma of its noise (tile noise and Poisson at the saddle)")
    min_persistence: float | None = Field(
        None, description="persistence method: minimum persistence, counts; null: threshold"
    )
    min_snr: float | None = Field(
        None, ge=0, description="minimum score (detection SNR) to keep a peak; null: 3, or 0 on sparse frames")
    local_snr_below: float = Field(
        10.0, ge=0, description="components: a peak whose SNR is below this is measured again against the median of a "
        "ring of pixels 3 px around its region instead of the tile level, and dropped unless its highest pixel passes "
        "the threshold and its SNR passes min_snr above that level (noise on the wings of a bright peak); 0: off")
    sparse: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="frames thresholded upstream (most pixels exactly 0, e.g. HEXRD frame-caches): "
        "every nonzero pixel already passed a threshold, so single-pixel peaks are kept "
        "(min_size and min_snr, when null, become 1 and 0); 'auto': when over half the pixels are 0",
    )
    max_peaks: int | None = Field(
        None, ge=1, description="keep at most this many peaks per frame (highest score first), or null"
    )

