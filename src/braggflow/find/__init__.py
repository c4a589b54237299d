"""Peak finding: candidate Bragg peaks with their regions and a detection score.

Two methods share one engine:

``components`` (default)
    Pixels above ``background + threshold_sigma x noise`` (background and noise
    estimated per tile, so the threshold adapts to each frame) are grouped into
    8-connected components.  A component with several local maxima is split
    into the basins of steepest ascent to those maxima, merged by the elder
    rule: two maxima stay separate only when the dip between them is
    significant under Poisson statistics (deeper than ``split_sigma`` standard
    deviations of the counts at the saddle).  The score
    is the detection SNR of the region against the tile background.  A weak
    region (SNR below ``local_snr_below``) is measured again against the
    median of a ring of pixels around it (an annulus background, as in
    aperture photometry): it is dropped unless its highest pixel passes the
    threshold and its SNR passes ``min_snr`` above that level.  Noise
    on the Lorentzian wings of a bright peak rises above the tile threshold
    but not above its own surroundings.  Faint spots whose pixels all stay
    under the threshold are found at the local maxima around which a
    matched-filter sum is significant (``aperture_sigma``) against the
    Poisson statistics of the tile background (:mod:`~braggflow.find.aperture`).
``persistence``
    The "topology" method of findpeaks: 0-dimensional persistent homology of
    the upper level sets above a low level (background + 3 noise sigma).  Each
    maximum is born at its height and dies where its region merges with that
    of a higher maximum (elder rule); the difference is its persistence.
    Maxima with persistence >= ``min_persistence`` are peaks; the score is the
    persistence in counts.

The split works only on the components with more than one maximum, all at
once, so a frame with ~100 isolated peaks costs a few full-frame passes.

Modules: :mod:`~braggflow.find.background` (tile background and noise),
:mod:`~braggflow.find.components` (threshold, components, maxima),
:mod:`~braggflow.find.split` (steepest-ascent basins and elder rule),
:mod:`~braggflow.find.aperture` (faint spots: matched filter, Poisson significance),
:mod:`~braggflow.find.regions` (boxes, ring background, region centroids),
:mod:`~braggflow.find.peaks` (:func:`find_peaks` and its result).

References
----------
.. [1] H. Edelsbrunner, D. Letscher, A. Zomorodian, "Topological persistence and
   simplification", Discrete Comput. Geom. 28, 511 (2002).
.. [2] A. Barty et al., "Cheetah: software for high-throughput reduction and
   analysis of serial femtosecond X-ray diffraction data", J. Appl. Cryst. 47,
   1118 (2014) (peakfinder8: local thresholds from a robust noise estimate).
"""

from braggflow.find.background import Background, estimate_background, is_sparse
from braggflow.find.options import FindConfig
from braggflow.find.peaks import PERSISTENCE_BASE_SIGMA, FoundPeaks, find_peaks
from braggflow.find.regions import LOCAL_RING_MARGIN, Regions, region_centroids

__all__ = [
    "Background",
    "FindConfig",
    "FoundPeaks",
    "LOCAL_RING_MARGIN",
    "PERSISTENCE_BASE_SIGMA",
    "Regions",
    "estimate_background",
    "find_peaks",
    "is_sparse",
    "region_centroids",
]
