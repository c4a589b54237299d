"""Options of the find stage (section ``find`` of the pipeline configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braggflow.options import OptionSection

__all__ = ["FindConfig"]


class FindConfig(OptionSection):
    """Peak finding (:mod:`braggflow.find`)."""

    method: Literal["components", "persistence", "learned"] = Field(
        "components",
        description="'components': connected components with watershed splitting; "
        "'persistence': topological persistence; 'learned': the grazing-incidence detector network (rings, arcs, "
        "spots; needs a geometry with an incidence angle; braggflow.pipeline.learned)",
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
        description="minimum pixels above threshold for a peak; null: 2, or 1 on thresholded frames (see sparse), "
        "where a one-pixel region must also pass single_pixel_sigma")
    min_separation: float = Field(2.0, ge=1, description="minimum distance between two peaks' maxima, px")
    split_sigma: float = Field(
        4.0, gt=0, description="components: two maxima stay separate peaks when the dip between them exceeds this many "
        "sigma of its noise (tile noise and Poisson at the saddle)")
    min_persistence: float | None = Field(
        None, description="persistence method: minimum persistence, counts; null: threshold"
    )
    min_snr: float | None = Field(
        None, ge=0, description="minimum score (detection SNR) to keep a peak; null: 3, or 4 on thresholded frames, "
        "where every pixel of a cluster of noise already sits above the storage threshold (at 3: ~6 clusters of "
        "thresholded normal noise pass per 4 Mpx; at 4: none in 12 Mpx)")
    noise: float | None = Field(
        None, gt=0, description="noise of one background pixel, counts (e.g. the read noise of a dark-subtracted "
        "detector); null: measured, from each tile's spread, or on thresholded frames from the stored pixels just "
        "above the storage threshold (braggflow.find.noise)")
    single_pixel_sigma: float = Field(
        10.0, gt=0, description="a region of one pixel is a peak only when that pixel is this many noise sigma "
        "above the background: nothing beside it confirms it")
    zingers: bool = Field(
        True, description="drop zingers: events of 1-4 pixels whose neighbours hold too little of their counts "
        "for a spot of width min_sigma (braggflow.find.zingers)")
    min_sigma: float = Field(
        0.7, gt=0, description="width (Gaussian sigma, px) of the narrowest real spot the detector records; "
        "compact events narrower than this are zingers")
    local_snr_below: float = Field(
        10.0, ge=0, description="components: a peak whose SNR is below this is measured again against the median of a "
        "ring of pixels 3 px around its region instead of the tile level, and dropped unless its highest pixel passes "
        "the threshold and its SNR passes min_snr above that level (noise on the wings of a bright peak); 0: off")
    aperture_sigma: float | None = Field(
        5.5, gt=0, description="components: a local maximum 4 sd above the tile mean and clear of the peaks above "
        "threshold is a peak too when the matched-filter sum of the 5 x 5 pixels around it is this "
        "many (normal-equivalent) sigma above the tile background under Poisson statistics, also against a ring "
        "around it (faint spots on a weak background; braggflow.find.aperture; at 5.5 ~0.1 false peak in 4 Mpx of "
        "pure noise); not on thresholded frames; null: off")
    sparse: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="frames thresholded upstream (most pixels exactly 0, e.g. HEXRD frame caches, ImageD11 sparse "
        "files): every stored pixel is a candidate, the noise comes from the stored pixels at the threshold "
        "(or noise), and one-pixel regions pass when single_pixel_sigma says so; 'auto': when over half the "
        "pixels are 0",
    )
    max_peaks: int | None = Field(
        None, ge=1, description="keep at most this many peaks per frame (highest score first), or null"
    )

