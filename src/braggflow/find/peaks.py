"""The public peak finder: threshold, components, splits, region statistics, selection."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.find._kernels import listed_tile_tests
from braggflow.find.aperture import aperture_peaks, seed_levels
from braggflow.find.background import Background, estimate_background, is_sparse
from braggflow.find.components import local_maxima, pixels_above_threshold, sparse_components
from braggflow.find.noise import ThresholdNoise, fitted_threshold_noise, isolated_pixel_values
from braggflow.find.options import FindConfig
from braggflow.find.regions import LOCAL_RING_MARGIN, Regions, region_boxes, ring_medians
from braggflow.find.split import split_components
from braggflow.find.zingers import MAX_ZINGER_PIXELS, zinger_regions
from braggflow.schema import conformed_columns, new_peak_columns, table_from_columns

__all__ = ["FoundPeaks", "find_peaks", "frame_threshold_noise", "PERSISTENCE_BASE_SIGMA"]

#: The persistence method builds its level sets above background + this many noise sigma
#: (lower levels join noise into frame-spanning clusters and cost far more than they add).
PERSISTENCE_BASE_SIGMA = 3.0


@dataclass(frozen=True)
class FoundPeaks:
    """What :func:`find_peaks` finds in one frame.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per peak (peak-table schema): ``row``, ``col`` of the peak's
        highest pixel (integers, px), ``peak_value``, ``npix``, ``score``,
        ``background`` (tile level, counts/px); sorted by descending score.
    labels : (H, W) ndarray of int32
        Label k (1-based) marks the pixels of table row k - 1; 0 elsewhere.
    regions : Regions
        The regions' bounding boxes and signals, aligned with the table's rows.
    zingers : int
        Candidate regions dropped as zingers (:mod:`braggflow.find.zingers`).
    threshold_noise : ThresholdNoise or None
        The noise model used for a frame thresholded upstream (None for other frames).
    background : Background or None
        The background and noise maps the finder used.
    """

    table: pd.DataFrame
    labels: np.ndarray
    regions: Regions
    zingers: int = 0
    threshold_noise: ThresholdNoise | None = None
    background: Background | None = None

    @classmethod
    def from_columns(cls, columns: dict, n: int, labels: np.ndarray, regions: Regions, *, zingers: int = 0,
                     threshold_noise: ThresholdNoise | None = None,
                     background: Background | None = None) -> FoundPeaks:
        """The peaks found, given as the columns of their table, which is built on first use of ``table``.

        The per-frame pipeline reads the columns (:meth:`columns`) and hands
        them on; the table is built only where ``table`` is read.

        Parameters
        ----------
        columns : dict of str to array
            Every peak-table column, in order, with its schema dtype
            (:func:`braggflow.schema.new_peak_columns`), each of length ``n``; kept, not copied.
        n : int
            Number of peaks.
        labels, regions, zingers, threshold_noise, background
            As the attributes.

        Returns
        -------
        found : FoundPeaks
        """
        found = object.__new__(cls)
        for name, value in (("labels", labels), ("regions", regions), ("zingers", zingers),
                            ("threshold_noise", threshold_noise), ("background", background),
                            ("_columns", (columns, int(n)))):
            object.__setattr__(found, name, value)
        return found

    def __getattr__(self, name: str):
        """``table``, built from the columns of :meth:`from_columns` the first time it is read."""
        given = self.__dict__.get("_columns")
        if name != "table" or given is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        table = table_from_columns(*given)
        object.__setattr__(self, "table", table)
        return table

    def columns(self) -> dict:
        """The columns of the peak table (:func:`braggflow.schema.conformed_columns`), without building it.

        Returns
        -------
        columns : dict of str to array
            Every schema column in order, with its dtype; read them, never write into them.
        """
        given = self.__dict__.get("_columns")
        return dict(given[0]) if given is not None else conformed_columns(self.table)

    def __len__(self) -> int:
        """Number of peaks found."""
        given = self.__dict__.get("_columns")
        return given[1] if given is not None else len(self.table)


def find_peaks(
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    config: FindConfig | None = None,
    gain: float = 1.0,
    background: Background | None = None,
    threshold_noise: ThresholdNoise | None = None,
    return_labels: bool | None = None,
    return_regions: bool | None = None,
) -> FoundPeaks:
    """Find Bragg peaks in a corrected frame.

    Pixels above ``background + threshold`` are grouped into 8-connected
    components on the sparse pixel list; components with several maxima are
    split where the dip between maxima is significant; each region is scored
    (detection SNR, or persistence) and kept when it passes ``min_size`` and
    ``min_snr`` (weak regions again against a ring around them).  The method
    and its thresholds are described in :mod:`braggflow.find`.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    mask : (H, W) ndarray of bool, optional
        True = bad pixel; never part of a peak.
    config : FindConfig, optional
        Method and thresholds (defaults adapt to the frame's own noise).
    gain : float
        ADU per photon, for the Poisson noise floor and the detection SNR.
    background : Background, optional
        Precomputed background; estimated from the frame when None.
    threshold_noise : ThresholdNoise, optional
        Noise model of a series thresholded upstream, measured once over a
        sample of its frames (:func:`braggflow.find.noise.fit_threshold_noise`);
        when None, ``config.noise`` or a fit to this frame's isolated pixels.
    return_labels, return_regions : bool, optional
        Deprecated: with either, the result is returned as the tuple
        ``(table[, labels][, regions])`` of earlier versions.

    Returns
    -------
    found : FoundPeaks
        ``found.table``, ``found.labels``, ``found.regions``.

    Raises
    ------
    BraggflowError
        If the frame is not 2D or the mask has another shape.

    References
    ----------
    A. Barty et al., J. Appl. Cryst. 47, 1118 (2014) (peakfinder8: local
    thresholds from a robust noise estimate); H. Edelsbrunner, D. Letscher,
    A. Zomorodian, Discrete Comput. Geom. 28, 511 (2002) (persistence).
    """
    config = config or FindConfig()
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"frame must be 2D, got shape {frame.shape}")
    if mask is not None and mask.shape != frame.shape:
        raise BraggflowError(f"mask has shape {mask.shape}, expected the frame shape {frame.shape}")
    bg = background or estimate_background(frame, mask=mask, tile=config.tile, gain=gain)
    sparse = config.sparse == "yes" or (config.sparse == "auto" and is_sparse(frame, mask, gain=gain))
    if sparse:
        threshold_noise = threshold_noise or frame_threshold_noise(frame, mask, config)
        bg = _with_noise_floor(bg, threshold_noise.sigma)
    elif config.noise is not None:
        bg = _with_noise_floor(bg, config.noise)
    level_sigma = PERSISTENCE_BASE_SIGMA if config.method == "persistence" else config.threshold_sigma
    if config.threshold is not None and config.method != "persistence":
        threshold_tiles = bg.level + config.threshold
    else:
        threshold_tiles = bg.level + level_sigma * bg.noise
    if sparse:
        # every stored pixel of a tile with no background of its own is a candidate: it passed the storage threshold
        stored = np.nextafter(threshold_noise.threshold, -np.inf)
        threshold_tiles = np.where(bg.level < threshold_noise.threshold, np.minimum(threshold_tiles, stored),
                                   threshold_tiles)
    aperture = config.method == "components" and not sparse and config.aperture_sigma is not None
    is_max = None
    if aperture:
        # one pass at the seeds' level: the pixels above threshold are those of them above their tile's threshold;
        # the local maxima of both lists in one pass over the pixels of either
        seed_tiles = seed_levels(bg)
        low_index = pixels_above_threshold(frame, bg, np.minimum(threshold_tiles, seed_tiles), mask)
        # each pixel's value and its tests against both tile maps in one pass over the list
        low_values, above, above_seed = listed_tile_tests(
            np.ascontiguousarray(frame), np.ascontiguousarray(low_index, dtype=np.int64), int(bg.tile),
            np.ascontiguousarray(threshold_tiles, dtype=np.float64), np.ascontiguousarray(seed_tiles, dtype=np.float64))
        low_max = local_maxima(low_values, low_index, frame)
        flat_index, is_max = low_index[above], low_max[above]
    else:
        flat_index = pixels_above_threshold(frame, bg, threshold_tiles, mask)
    strong = _peaks_from_pixels(frame, flat_index, mask=mask, config=config, gain=gain, bg=bg,
                                level_sigma=level_sigma, stored_threshold=threshold_noise.threshold if sparse else None,
                                is_max=is_max)
    weak = None
    if aperture and low_index.size:
        seeds = low_index[above_seed & low_max]
        weak = aperture_peaks(frame, mask, seeds, strong.occupied, bg, sigma=config.aperture_sigma, gain=gain)
    found = _assemble(frame, strong, weak, bg=bg, config=config, threshold_noise=threshold_noise if sparse else None)
    if return_labels is None and return_regions is None:
        return found
    warnings.warn("find_peaks(return_labels=..., return_regions=...) is deprecated: find_peaks returns a FoundPeaks "
                  "with .table, .labels and .regions", DeprecationWarning, stacklevel=2)
    out = (found.table,) + ((found.labels,) if return_labels else ()) + ((found.regions,) if return_regions else ())
    return out if len(out) > 1 else found.table


def frame_threshold_noise(frame: np.ndarray, mask: np.ndarray | None, config: FindConfig) -> ThresholdNoise:
    """The noise model of one thresholded frame: ``config.noise``, or a fit to its isolated stored pixels.

    Parameters
    ----------
    frame : (H, W) ndarray
        A frame thresholded upstream (0 = not stored), counts.
    mask : (H, W) ndarray of bool, optional
    config : FindConfig

    Returns
    -------
    noise : ThresholdNoise
        With too few isolated pixels to fit, sigma is a third of the storage threshold (a threshold at
        3 sigma, the common choice) and ``source`` says ``"threshold"``.
    """
    good = frame > 0 if mask is None else (frame > 0) & ~mask
    threshold = float(frame[good].min()) if good.any() else 1.0
    if config.noise is not None:
        return ThresholdNoise(threshold=threshold, sigma=float(config.noise), source="config")
    fitted = fitted_threshold_noise(isolated_pixel_values(frame, mask))
    if fitted is not None:
        return fitted
    return ThresholdNoise(threshold=threshold, sigma=max(threshold, 1e-12) / 3.0, source="threshold")


@dataclass(frozen=True)
class _Strong:
    """The peaks kept among the regions of the pixels above threshold (``_peaks_from_pixels``).

    ``flat_index`` and ``final`` (region id of each pixel) cover all candidate
    pixels; the other arrays hold one entry per kept region (``reg_ids``), in
    region-id order; ``occupied`` are the pixels of kept regions and zingers.
    """

    flat_index: np.ndarray
    final: np.ndarray
    nreg: int
    reg_ids: np.ndarray
    npix: np.ndarray
    signal: np.ndarray
    score: np.ndarray
    peak_index: np.ndarray
    peak_value: np.ndarray
    boxes: dict
    zingers: int
    occupied: np.ndarray

    @classmethod
    def empty(cls) -> _Strong:
        """No pixel above threshold."""
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return cls(i, i, 1, i, i, f, f, i, f, {k: i for k in ("top", "left", "height", "width")}, 0, i)


def _assemble(frame: np.ndarray, strong: _Strong, weak: dict | None, *, bg: Background, config: FindConfig,
              threshold_noise: ThresholdNoise | None) -> FoundPeaks:
    """The peak table, labels and regions of the kept regions and the aperture peaks, by descending score."""
    h, w = frame.shape
    peak_index, peak_value, score = strong.peak_index, strong.peak_value, strong.score
    npix, signal, boxes = strong.npix, strong.signal, strong.boxes
    n_weak = 0 if weak is None else weak["index"].size
    if n_weak:
        wr, wc = np.divmod(weak["index"], w)
        top, left = np.maximum(wr - 1, 0), np.maximum(wc - 1, 0)
        weak_boxes = {"top": top, "left": left, "height": np.minimum(wr + 2, h) - top,
                      "width": np.minimum(wc + 2, w) - left}
        peak_index = np.concatenate([peak_index, weak["index"]])
        peak_value = np.concatenate([peak_value, frame.ravel()[weak["index"]].astype(np.float64)])
        score = np.concatenate([score, weak["score"]])
        npix = np.concatenate([npix, weak["npix"]])
        signal = np.concatenate([signal, weak["signal"]])
        boxes = {k: np.concatenate([v, weak_boxes[k]]) for k, v in boxes.items()}
    sort = np.argsort(-score, kind="stable")
    if config.max_peaks is not None:
        sort = sort[: config.max_peaks]
    peak_r, peak_c = np.divmod(peak_index[sort], w)
    columns = new_peak_columns(len(sort), row=peak_r.astype(float), col=peak_c.astype(float),
                               peak_value=peak_value[sort], npix=npix[sort], score=score[sort],
                               background=bg.at(peak_r, peak_c))
    regions = Regions(**{k: v[sort] for k, v in boxes.items()}, signal=signal[sort],
                      noise=bg.at(peak_r, peak_c, values=bg.noise), background=bg)
    label_of = np.zeros(len(score), dtype=np.int32)  # label of each strong, then weak, peak (0: cut by max_peaks)
    label_of[sort] = np.arange(1, len(sort) + 1, dtype=np.int32)
    labels = np.zeros((h, w), dtype=np.int32)
    n_strong = strong.reg_ids.size
    if n_strong:
        lut = np.zeros(strong.nreg, dtype=np.int32)
        lut[strong.reg_ids] = label_of[:n_strong]
        labels.ravel()[strong.flat_index] = lut[strong.final]
    if n_weak:
        labels.ravel()[weak["pixels"]] = label_of[n_strong:][weak["owner"]]
    return FoundPeaks.from_columns(columns, len(sort), labels, regions, zingers=strong.zingers,
                                   threshold_noise=threshold_noise, background=bg)


def _with_noise_floor(bg: Background, sigma: float) -> Background:
    """The background with its tile noise raised to at least ``sigma``."""
    return replace(bg, noise=np.maximum(bg.noise, float(sigma)))


def _peaks_from_pixels(frame, flat_index, *, mask, config: FindConfig, gain: float, bg: Background,
                       level_sigma: float, stored_threshold: float | None, is_max: np.ndarray | None = None) -> _Strong:
    """Regions, scores and the selection of peaks from the list of pixels above threshold.

    ``stored_threshold`` is the storage threshold of a frame thresholded upstream, None for other frames;
    ``is_max``, optional, the pixels' :func:`~braggflow.find.components.local_maxima` when already known.
    """
    if flat_index.size == 0:
        return _Strong.empty()
    sparse = stored_threshold is not None
    h, w = frame.shape
    comp_of, ncomp = sparse_components(flat_index, w)
    values = frame.ravel()[flat_index].astype(np.float64)
    if is_max is None:
        is_max = local_maxima(values, flat_index, frame)
    pix_rows, pix_cols = np.divmod(flat_index, w)
    tile_noise = bg.at(pix_rows, pix_cols, values=bg.noise)
    tile_level = bg.at(pix_rows, pix_cols)
    final, nreg, persistence_of = split_components(frame, flat_index, values, comp_of, ncomp, is_max, tile_level,
                                                   tile_noise, config=config, gain=gain)
    stats = _region_statistics(final, nreg, values, tile_level, tile_noise, gain)
    brightest = stats["brightest"]
    reg_ids = final[brightest]
    peak_r, peak_c = np.divmod(flat_index[brightest], w)
    peak_value = values[brightest]
    boxes = region_boxes(final, pix_rows, pix_cols, nreg)
    min_size = config.min_size if config.min_size is not None else (1 if sparse else 2)
    min_snr = config.min_snr if config.min_snr is not None else (4.0 if sparse else 3.0)
    npix, signal, noise = stats["npix"], stats["signal"], stats["noise"]
    if config.method == "persistence":
        thr_at_peak = bg.at(peak_r, peak_c) + bg.at(peak_r, peak_c, values=bg.noise)
        score = np.array([persistence_of.get(int(r), np.inf) for r in reg_ids])
        score = np.where(np.isinf(score), peak_value - thr_at_peak, score)
        min_pers = config.min_persistence
        if min_pers is None:
            min_pers = config.threshold_sigma * bg.at(peak_r, peak_c, values=bg.noise)
        good = (score >= min_pers) & (npix[reg_ids] >= min_size)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            score = signal[reg_ids] / noise[reg_ids]
        good = (npix[reg_ids] >= min_size) & (score >= min_snr)
        noise_at_peak = bg.at(peak_r, peak_c, values=bg.noise)
        single = npix[reg_ids] == 1
        good &= ~single | (peak_value - bg.at(peak_r, peak_c) >= config.single_pixel_sigma * noise_at_peak)
        # on a thresholded frame the ring around a region holds no stored background to compare with
        weak = np.flatnonzero(good & (score < config.local_snr_below) & (min_snr > 0) & (not sparse))
        if weak.size:
            good[weak] = _pass_against_ring(frame, mask, weak, reg_ids, peak_r, peak_c, peak_value, stats, boxes,
                                            bg=bg, config=config, gain=gain, level_sigma=level_sigma, min_snr=min_snr)
    n_zingers = 0
    occupied_region = np.zeros(nreg, dtype=bool)
    if config.zingers:
        # the small regions kept, and those dropped for their size alone: a zinger among them must not come back
        # as a faint spot of the aperture test
        sized_out = (npix[reg_ids] < min_size) | (npix[reg_ids] == 1)
        small = np.flatnonzero((good | sized_out) & (npix[reg_ids] <= MAX_ZINGER_PIXELS))
        if small.size:
            zinger = zinger_regions(frame, mask, flat_index, final, reg_ids[small], npix, signal,
                                    bg.at, lambda r, c: bg.at(r, c, values=bg.noise), min_sigma=config.min_sigma,
                                    unstored=stored_threshold, gain=gain)
            n_zingers = int((zinger & good[small]).sum())
            good[small[zinger]] = False
            occupied_region[reg_ids[small[zinger]]] = True
    occupied_region[reg_ids[good]] = True
    occupied = flat_index[occupied_region[final]]  # pixels of the peaks and of the zingers, ascending
    reg_ids = reg_ids[good]
    return _Strong(flat_index=flat_index, final=final, nreg=nreg, reg_ids=reg_ids, npix=npix[reg_ids],
                   signal=signal[reg_ids], score=score[good], peak_index=flat_index[brightest[good]],
                   peak_value=peak_value[good], boxes={k: v[reg_ids] for k, v in boxes.items()}, zingers=n_zingers,
                   occupied=occupied)


def _region_statistics(final, nreg, values, tile_level, tile_noise, gain) -> dict[str, np.ndarray]:
    """Pixel count, net signal and its noise per region id, and the list position of each region's highest pixel.

    ``signal`` sums the counts above the tile level; ``noise`` is the square root
    of the summed variances (tile noise squared plus Poisson ``gain x excess``).
    ``brightest`` is ordered by region id (regions with pixels only; the first
    list position among equal highest values).
    """
    npix = np.bincount(final, minlength=nreg)
    excess = values - tile_level
    var = tile_noise**2 + gain * np.clip(excess, 0, None)
    signal = np.bincount(final, weights=excess, minlength=nreg)
    noise = np.sqrt(np.bincount(final, weights=var, minlength=nreg))
    # each region's highest value, then the first list position holding it (no sort of the pixel list)
    top = np.full(nreg, -np.inf)
    np.maximum.at(top, final, values)
    at_top = np.flatnonzero(values == top[final])
    brightest = np.full(nreg, final.size)
    np.minimum.at(brightest, final[at_top], at_top)
    return {"npix": npix, "signal": signal, "noise": noise, "brightest": brightest[brightest < final.size]}


def _pass_against_ring(frame, mask, weak, reg_ids, peak_r, peak_c, peak_value, stats, boxes, *, bg: Background,
                       config: FindConfig, gain: float, level_sigma: float, min_snr: float) -> np.ndarray:
    """Whether each weak region still passes the threshold and ``min_snr`` above the median of a ring around it.

    The ring lies :data:`~braggflow.find.regions.LOCAL_RING_MARGIN` px outside
    the region's bounding box (an annulus background, as in aperture
    photometry); its level lifts the tile background where it is higher.
    """
    ids = reg_ids[weak]
    local = ring_medians(frame, mask, boxes["top"][ids], boxes["left"][ids], boxes["height"][ids],
                         boxes["width"][ids], LOCAL_RING_MARGIN)
    tile_bg = bg.at(peak_r[weak], peak_c[weak])
    lift = np.nan_to_num(np.clip(local - tile_bg, 0.0, None))  # NaN (no usable ring pixel): no lift
    if config.threshold is not None:
        above_local = peak_value[weak] - (tile_bg + lift) >= config.threshold
    else:
        local_noise = np.sqrt(bg.at(peak_r[weak], peak_c[weak], values=bg.noise) ** 2 + gain * lift)
        above_local = peak_value[weak] - (tile_bg + lift) >= level_sigma * local_noise
    return above_local & ((stats["signal"][ids] - stats["npix"][ids] * lift) / stats["noise"][ids] >= min_snr)
