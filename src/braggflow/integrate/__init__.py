"""Peak intensities: background-subtracted sums with Poisson errors.

For each peak a square window around its centre is cut from the frame (all
peaks at once, vectorised; a region the window cannot hold gets a window
around its bounding box instead).  Signal pixels are the peak's own region from the
finder grown by one pixel (or, with ``radius``, a disk around the located
centre); background pixels are the window's pixels that belong to no peak
(nor its one-pixel rim) and are not masked.  The background level is their
median; its variance comes from their scatter.

    I = sum_signal (v - b),
    var(I) = sum_signal [gain * max(v - b, 0) + s_b^2] + n^2 * (pi / 2) * s_b^2 / n_b

where ``s_b^2`` is the background pixels' variance (Poisson plus read noise),
``n`` the signal pixel count, ``n_b`` the background pixel count and pi / 2 the
variance ratio of a median to a mean.
"""

from __future__ import annotations

import functools

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.schema import Flag, cast_columns, conform, conformed_columns, table_from_columns, validate_peak_table
from braggflow.windows import cut_box, cut_windows, grow8

__all__ = ["integrate", "integrate_columns", "windows"]

#: Kept under its old name; the function is :func:`braggflow.windows.cut_windows`.
windows = cut_windows


#: Half-size limit (px) of the window grown for regions larger than the default one.
MAX_REGION_HALF = 64


#: Frame dtypes whose values float32 holds exactly: windows of them are worked on in float32.
_EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.float32, np.float16, np.uint8, np.int8, np.uint16, np.int16))


def _background_level(win: np.ndarray, background_px: np.ndarray,
                      finite: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, variance (ddof 1) and count of each window's background pixels; NaN values do not count.

    The values of ``nanmedian_last`` and ``np.nanvar(..., ddof=1)`` on
    ``where(background_px, win, NaN)`` in float64, with the variance's steps
    written out (same sums, same order) and no masked-array machinery; the
    median is taken on ``win``'s own dtype (float32 windows sort faster) and
    averaged in float64.

    Parameters
    ----------
    win : (N, M) ndarray of float32 or float64
        Window pixels, counts.
    background_px : (N, M) ndarray of bool
        The background pixels of each window.
    finite : bool
        Whether every value of ``win`` is finite and far below ``_FAR``: the
        background pixels are then selected by arithmetic (faster than
        selecting).

    Returns
    -------
    median : (N,) ndarray of float64
        0 where a window has no background pixel, NaN where it has no finite one.
    variance : (N,) ndarray of float64
        NaN where it has fewer than 2 background pixels.
    count : (N,) ndarray of int
        Background pixels of each window.
    """
    n, m = win.shape
    n_b = np.count_nonzero(background_px, axis=1)
    if finite:  # the others sort after every background pixel
        values = win + _FAR * ~background_px
        count = n_finite = n_b
        dev = win.astype(np.float64)
        dev *= background_px
    else:
        values = np.where(background_px, win, np.nan)
        missing = np.isnan(values)
        count = m - np.count_nonzero(missing, axis=1)
        n_finite = np.count_nonzero(np.isfinite(values), axis=1)
        dev = np.where(missing, np.float64(0.0), values)
    values.sort(axis=1)
    rows = np.arange(n)
    lo, hi = np.maximum((n_finite - 1) // 2, 0), np.maximum(n_finite // 2, 0)
    median = 0.5 * (values[rows, lo].astype(np.float64) + values[rows, hi])
    median[n_finite == 0] = np.nan
    median[n_b == 0] = 0.0
    dev -= dev.sum(axis=1, keepdims=True) / np.maximum(count, 1)[:, None]
    if finite:
        dev *= background_px
    else:
        dev[missing] = 0.0
    dev *= dev
    variance = dev.sum(axis=1) / np.maximum(count - 1, 1)
    variance[(count <= 1) | (n_b <= 1)] = np.nan
    return median, variance, n_b


def _cut_bad(frame, mask, ri, ci, half) -> np.ndarray:
    """(N, w, w) unusable pixels of each window: masked, or outside the frame."""
    if mask is not None:
        return cut_windows(mask, ri, ci, half, True)
    offs = np.arange(-half, half + 1)
    rr = ri[:, None, None] + offs[None, :, None]
    cc = ci[:, None, None] + offs[None, None, :]
    return (rr < 0) | (rr >= frame.shape[0]) | (cc < 0) | (cc >= frame.shape[1])


@functools.lru_cache(maxsize=16)
def _outside_core(half: int, core: int) -> np.ndarray:
    """Flat (w * w,) pixels of a window of half-size ``half`` farther than ``core`` px from its centre (either axis)."""
    outside = np.abs(np.arange(-half, half + 1)) > core
    return (outside[:, None] | outside[None, :]).reshape(-1)


def _integrate_level(frame, d_row, d_col, ri, ci, ids, placed, core, background_width, *, mask, labels, gain, radius,
                     saturated, last: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Integrate peaks in windows of half-size ``core + background_width`` (see :func:`integrate`).

    ``ri``, ``ci`` are the window centres, ``d_row``, ``d_col`` the centres'
    offsets from them, ``ids`` the peaks' labels, ``placed`` whether a peak
    has a finite centre.  A peak whose own region reaches beyond the window's
    core would lose part of it: unless ``last``, such peaks are left for a
    larger window.  A placed peak whose window holds none of its own pixels (a
    centre off its region, such as the centroid of an arc), or whose region
    the ``last`` window still cuts, is left for a window around its region's
    bounding box.

    Returns
    -------
    done : (K,) ndarray of int
        Positions (in the inputs) of the peaks integrated here.
    larger : (N,) ndarray of bool
        The peaks left for a larger window.
    boxed : (N,) ndarray of bool
        The peaks left for their bounding box.
    sums : dict of (K,) ndarray
        See :func:`_window_sums`.
    """
    n = len(ri)
    half = core + int(np.ceil(background_width))
    if radius is None and frame.dtype in _COMPILED_DTYPES and half <= _COMPILED_HALF:
        return _integrate_level_compiled(frame, d_row, d_col, ri, ci, ids, placed, core, half, mask=mask,
                                         labels=labels, gain=gain, saturated=saturated, last=last)
    lab = None if labels is None else cut_windows(labels, ri, ci, half, 0)
    own = None
    larger = np.zeros(n, dtype=bool)
    boxed = np.zeros(n, dtype=bool)
    if radius is None:
        own = lab == ids[:, None, None]
        flat = own.reshape(n, -1)
        truncated = (flat & _outside_core(half, core)).any(axis=1)
        boxed = ~flat.any(axis=1)
        if last:
            boxed |= truncated
        boxed &= placed
        if not last:
            larger = truncated & ~boxed
    if not (larger.any() or boxed.any()):
        return np.arange(n), larger, boxed, _window_sums(frame, lab, own, d_row, d_col, ri, ci, ids, half,
                                                         mask=mask, gain=gain, radius=radius, saturated=saturated)
    done = np.flatnonzero(~(larger | boxed))
    sums = _window_sums(frame, None if lab is None else lab[done], None if own is None else own[done], d_row[done],
                        d_col[done], ri[done], ci[done], ids[done], half, mask=mask, gain=gain, radius=radius,
                        saturated=saturated)
    return done, larger, boxed, sums


#: Frame dtypes integrated by the compiled kernel (:mod:`braggflow.integrate._kernels`) with labels.
_COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Largest window half-size of the kernel (a window row is one 64-bit word of pixel flags).
_COMPILED_HALF = 31


def _integrate_level_compiled(frame, d_row, d_col, ri, ci, ids, placed, core, half, *, mask, labels, gain, saturated,
                              last: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """:func:`_integrate_level` with the finder's regions (no ``radius``) by the compiled window kernel.

    :func:`braggflow.integrate._kernels.label_window_sums` reads every window
    from the images once and sums it; windows holding a non-finite or huge
    value are summed again by the array path (:func:`_window_sums`), which
    gives the same values for the others.
    """
    from braggflow.integrate._kernels import label_window_sums, pairwise_plan

    n = len(ri)
    use_mask, use_saturated = mask is not None, saturated is not None
    no_image = np.zeros((1, 1), dtype=bool)
    # C-ordered images (a copy only of a view): one compiled version of the kernel serves every caller
    intensity, positive, b, s2, npix, n_b, peak_value, sat, own, truncated, large, _ = label_window_sums(
        np.ascontiguousarray(frame), np.ascontiguousarray(mask, dtype=bool) if use_mask else no_image, use_mask,
        np.ascontiguousarray(labels), np.ascontiguousarray(saturated, dtype=bool) if use_saturated else no_image,
        use_saturated, ri, ci, ids, half, core, float(gain), pairwise_plan((2 * half + 1) ** 2))
    boxed = ~own
    if last:
        boxed |= truncated
    boxed &= placed
    larger = truncated & ~boxed if not last else np.zeros(n, dtype=bool)
    done = np.flatnonzero(~(larger | boxed))
    sums = _finish_sums(intensity[done], positive[done], b[done], s2[done], npix[done], n_b[done], peak_value[done],
                        sat[done], finite=True)
    sums["overlap"] = np.zeros(done.size, dtype=bool)
    again = np.flatnonzero(large[done])
    if again.size:
        k = done[again]
        lab = cut_windows(labels, ri[k], ci[k], half, 0)
        redone = _window_sums(frame, lab, lab == ids[k][:, None, None], d_row[k], d_col[k], ri[k], ci[k], ids[k],
                              half, mask=mask, gain=gain, radius=None, saturated=saturated)
        for name, values in redone.items():
            sums[name][again] = values
    return done, larger, boxed, sums


def _signal_pixels(lab, own, ids, d_row, d_col, half, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signal pixels, background candidates (pixels of no peak nor its rim) and the overlap flag of each window.

    ``lab`` holds the windows' labels (None: no labels, only with ``radius``),
    ``own`` the peaks' own pixels (``lab == ids``; without ``radius``).
    """
    n = len(ids)
    overlap = np.zeros(n, dtype=bool)
    if radius is None:
        # bit 0: any peak's pixel, bit 1: this peak's; grown together by one pixel
        codes = (lab > 0).view(np.uint8) | (own.view(np.uint8) << 1)
        grown = grow8(codes)
        return (grown >= 2) & (codes != 1), grown == 0, overlap
    offs = np.arange(-half, half + 1)
    dr = offs[None, :, None] - d_row[:, None, None]
    dc = offs[None, None, :] - d_col[:, None, None]
    signal = (dr**2 + dc**2) <= radius**2
    occupied = signal
    if lab is not None:  # another peak's region inside the disk is not this peak's signal
        other = signal & (lab > 0) & (lab != ids[:, None, None])
        overlap = other.any(axis=(1, 2))
        signal = signal & ~other
        occupied = (lab > 0) | occupied
    return signal, ~occupied, overlap


def _window_sums(frame, lab, own, d_row, d_col, ri, ci, ids, half, *, mask, gain, radius,
                 saturated) -> dict[str, np.ndarray]:
    """Background level and intensity of each peak in its window of half-size ``half``.

    Returns
    -------
    sums : dict of (N,) ndarray
        ``intensity``, ``err`` (counts), ``b`` (background, counts/px),
        ``snr``, ``npix``, ``n_b`` (background pixels), ``peak_value``,
        ``sat`` (a saturated signal pixel), ``overlap`` (with ``radius``:
        another peak's pixels left out of the disk).
    """
    n, m = len(ri), (2 * half + 1) ** 2
    win = cut_windows(frame, ri, ci, half, 0)  # cast the windows, not the frame
    bad = _cut_bad(frame, mask, ri, ci, half)
    signal, background_px, overlap = _signal_pixels(lab, own, ids, d_row, d_col, half, radius)
    sat = None if saturated is None else cut_windows(saturated, ri, ci, half, False).reshape(n, m)
    sums = _pixel_sums(win.reshape(n, m), bad.reshape(n, m), signal.reshape(n, m), background_px.reshape(n, m),
                       gain=gain, saturated=sat)
    sums["overlap"] = overlap
    return sums


def _pixel_sums(win, bad, signal, background_px, *, gain, saturated) -> dict[str, np.ndarray]:
    """Background level and intensity from (N, M) window pixels: see :func:`_window_sums`.

    ``signal`` and ``background_px`` are modified (unusable pixels dropped);
    ``saturated`` is None or the windows' saturated pixels.
    """
    n = len(win)
    win = win.astype(np.float32 if win.dtype in _EXACT_IN_FLOAT32 else np.float64, copy=False)
    background_px &= ~bad
    signal &= ~bad
    # finite windows well below _FAR: masks are applied by arithmetic (faster than selecting), with equal results
    finite = bool(np.abs(win).max(initial=0.0) < _FAR / 2)

    b, s2, n_b = _background_level(win, background_px, finite)
    npix = np.count_nonzero(signal, axis=1)
    excess = win - b[:, None]
    if finite:  # multiplying by the mask selects as np.where does, but faster
        excess *= signal
        # the signal's highest pixel: every other pixel pushed far below (the windows' values are finite)
        peak_value = (win - _FAR * ~signal).max(axis=1)
    else:
        excess[~signal] = 0.0
        peak_value = np.where(signal, win, -np.inf).max(axis=1)
    intensity = excess.sum(axis=1)
    np.maximum(excess, 0.0, out=excess)
    if gain != 1.0:
        excess *= gain
    sat = np.zeros(n, dtype=bool) if saturated is None else (saturated & signal).any(axis=1)
    return _finish_sums(intensity, excess.sum(axis=1), b, s2, npix, n_b, peak_value, sat, finite=finite)


def _finish_sums(intensity, positive, b, s2, npix, n_b, peak_value, sat, *, finite: bool) -> dict[str, np.ndarray]:
    """Errors and signal-to-noise ratios from each window's sums (the formula of the module docstring).

    ``positive`` is ``gain`` times the sum of the positive excesses over the
    signal pixels, ``s2`` the background variance (NaN: fewer than 2
    background pixels, counted as 0), ``peak_value`` the highest signal pixel
    (any value where ``npix`` is 0).  Returns the dict of :func:`_window_sums`
    without ``overlap``.
    """
    s2 = np.where(np.isnan(s2), 0.0, s2) if finite else np.nan_to_num(s2)
    var_pix = positive + npix * s2
    var_bg = npix**2 * (np.pi / 2) * s2 / np.maximum(n_b, 1)  # 0 where n_b = 0: s2 is then 0
    err = np.sqrt(var_pix + var_bg)
    snr = np.divide(intensity, err, out=np.full(len(intensity), np.nan), where=err > 0)
    peak_value = np.where(npix > 0, peak_value.astype(np.float64), np.nan)
    return dict(intensity=intensity, err=err, b=b, snr=snr, npix=npix, n_b=n_b, peak_value=peak_value, sat=sat)


#: Subtracted from the pixels outside a window's signal before taking its maximum (finite windows only).
_FAR = np.float32(1e30)


def _integrate_all(frame, d_row, d_col, ri, ci, ids, placed, background_width, *, mask, labels, regions, gain,
                   radius, saturated) -> dict[str, np.ndarray]:
    """:func:`_window_sums` of every peak, each in the first window (core 5, 10, 20, ... px) that holds its region,
    or in a window around the region's bounding box (:func:`_integrate_level`)."""
    n = len(ri)
    core = 5 if radius is None else int(np.ceil(radius))
    todo = np.arange(n)
    res = dict(intensity=np.full(n, np.nan), err=np.full(n, np.nan), b=np.full(n, np.nan), snr=np.full(n, np.nan),
               npix=np.zeros(n, dtype=np.int64), n_b=np.zeros(n, dtype=np.int64), peak_value=np.full(n, np.nan),
               sat=np.zeros(n, dtype=bool), overlap=np.zeros(n, dtype=bool))
    boxed = []
    while todo.size:
        # regions larger than the window (streaks, large spots): again with a window that holds them
        last = radius is not None or core >= MAX_REGION_HALF
        done, larger, box, sums = _integrate_level(frame, d_row[todo], d_col[todo], ri[todo], ci[todo], ids[todo],
                                                   placed[todo], core, background_width, mask=mask, labels=labels,
                                                   gain=gain, radius=radius, saturated=saturated, last=last)
        for name, values in sums.items():
            res[name][todo[done]] = values
        boxed.append(todo[box])
        todo = todo[larger]
        core = min(2 * core, MAX_REGION_HALF)
    boxed = np.concatenate(boxed)
    if boxed.size:
        for k, sums in _integrate_boxes(frame, ids[boxed], background_width, mask=mask, labels=labels,
                                        regions=regions, gain=gain, saturated=saturated):
            for name, values in sums.items():
                res[name][boxed[k]] = values[0]
    return res


def _label_boxes(labels: np.ndarray, ids: np.ndarray, regions) -> list[tuple[int, int, int, int] | None]:
    """(top, left, height, width) of the pixels of each label of ``ids`` (None: no such pixel).

    From ``regions`` (row k is label k + 1) when given, else from one pass over ``labels``.
    """
    if regions is not None:
        k = ids - 1
        return list(zip(np.asarray(regions.top)[k].tolist(), np.asarray(regions.left)[k].tolist(),
                        np.asarray(regions.height)[k].tolist(), np.asarray(regions.width)[k].tolist()))
    from scipy import ndimage

    found = ndimage.find_objects(labels, max_label=int(ids.max()))
    boxes = []
    for i in ids.tolist():
        sl = found[i - 1]
        boxes.append(None if sl is None else (sl[0].start, sl[1].start, sl[0].stop - sl[0].start,
                                               sl[1].stop - sl[1].start))
    return boxes


def _integrate_boxes(frame, ids, background_width, *, mask, labels, regions, gain, saturated):
    """Integrate the peaks ``ids`` (labels) in windows around their regions' bounding boxes.

    Each window is the bounding box grown by ``background_width`` (at least
    1 px, so that the grown region fits); signal and background pixels are
    chosen as in the square windows.  Yields the position in ``ids`` and the
    sums (arrays of one) of each peak whose label has pixels.
    """
    margin = max(int(np.ceil(background_width)), 1)
    for k, (peak, box) in enumerate(zip(ids.tolist(), _label_boxes(labels, ids, regions))):
        if box is None:
            continue
        top, left = box[0] - margin, box[1] - margin
        height, width = box[2] + 2 * margin, box[3] + 2 * margin
        lab = cut_box(labels, top, left, height, width, 0)[None]
        if mask is not None:
            bad = cut_box(mask, top, left, height, width, True)
        else:  # only pixels outside the frame are bad
            rr, cc = np.arange(top, top + height), np.arange(left, left + width)
            bad = ~(((rr >= 0) & (rr < frame.shape[0]))[:, None] & ((cc >= 0) & (cc < frame.shape[1]))[None, :])
        signal, background_px, _ = _signal_pixels(lab, lab == peak, np.array([peak]), None, None, 0, None)
        sat = None if saturated is None else cut_box(saturated, top, left, height, width, False).reshape(1, -1)
        win = cut_box(frame, top, left, height, width, 0).reshape(1, -1)
        yield k, _pixel_sums(win, bad.reshape(1, -1), signal.reshape(1, -1), background_px.reshape(1, -1),
                             gain=gain, saturated=sat)


def integrate(
    frame: np.ndarray,
    table,
    *,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    regions=None,
    gain: float = 1.0,
    radius: float | None = None,
    background_width: float = 3.0,
    saturated: np.ndarray | None = None,
    method: str = "sum",
    threshold_noise=None,
):
    """Integrate the peaks of one frame.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts (ADU).
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` (px).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel (excluded from signal and background).
    labels : (H, W) ndarray of int, optional
        Finder label image: label k is the region of table row k - 1.  Required
        unless ``radius`` is given.
    regions : braggflow.find.Regions, optional
        The finder's regions (rows of ``table``): their bounding boxes
        (``top``, ``left``, ``height``, ``width``, px) place the windows of
        the regions that a window around (row, col) cannot hold.  Without
        them those boxes are found in ``labels`` (one pass over the frame,
        only when such a region occurs).
    gain : float
        ADU per photon (Poisson variance of v ADU is gain x v).
    radius : float, optional
        Integrate a disk of this radius (px) around (row, col) instead of the
        finder's region; with ``labels``, the pixels of other peaks' regions
        are left out of the disk (and the peak flagged ``OVERLAPPING``), so
        a close neighbour is not summed in.  Without it, windows reach 5 px
        beyond the centre and grow (10, 20, ... up to
        :data:`MAX_REGION_HALF` px) for the peaks whose region does not fit,
        so a streak is integrated whole; a region that still does not fit, or
        that the window around (row, col) misses altogether (the centroid of
        an arc can lie far off the arc), is integrated in a window around
        its bounding box.  Every peak with a region and a finite (row, col)
        thus gets ``npix >= 1``.
    background_width : float
        Width of the background ring around the signal pixels, px.
    saturated : (H, W) ndarray of bool, optional
        Pixels at or above the detector's saturation level; peaks containing
        one are flagged ``SATURATED``.
    method : {"sum", "profile"}
        ``"sum"``: the background-subtracted sum over the signal pixels.
        ``"profile"``: the integral over the plane of a profile fitted to each
        peak (:mod:`braggflow.integrate.profile`; the table's ``sigma_row``,
        ``sigma_col`` and ``background`` start it); peaks the profile does not
        describe keep the sum and are flagged ``SUMMED``.
    threshold_noise : braggflow.find.noise.ThresholdNoise, optional
        The frame was thresholded upstream (``find_peaks(...).threshold_noise``:
        its storage threshold and noise): with ``"profile"`` each peak gets an
        elliptical Gaussian fitted by the censored likelihood instead
        (:mod:`braggflow.integrate.censored`; a stored 0 means "below the
        threshold", not a count), the sum kept and flagged ``SUMMED`` where
        it does not describe the peak.

    Returns
    -------
    table : pandas.DataFrame
        Copy of ``table`` with ``intensity``, ``intensity_err`` (counts),
        ``background`` (counts/px), ``peak_value`` (counts), ``snr``, ``npix``,
        and flags ``LOW_SNR`` (snr < 3), ``BAD_BACKGROUND`` (< 5 background
        pixels), ``SATURATED``, ``OVERLAPPING`` (with ``radius``: another
        peak's pixels were left out of the disk), ``SUMMED`` (``"profile"``
        only: the sum kept).  Peaks flagged ``BLENDED`` (two peaks of one
        region, split by :func:`braggflow.locate.deblend.deblend`) keep the
        ``intensity`` and ``intensity_err`` of their joint fit; the member the
        split added shares its partner's region, and its ``npix`` and
        ``peak_value`` are that region's.

    Raises
    ------
    BraggflowError
        If neither ``labels`` nor ``radius`` is given, ``method`` is unknown,
        or shapes disagree.
    """
    if method not in ("sum", "profile"):
        raise BraggflowError(f"integrate method must be 'sum' or 'profile', got {method!r}")
    validate_peak_table(table, required=("row", "col"))
    n = len(table)
    if n == 0:
        return conform(table)
    columns = _integrate_columns(frame, conformed_columns(table), n, mask=mask, labels=labels, regions=regions,
                                 gain=gain, radius=radius, background_width=background_width, saturated=saturated,
                                 method=method, threshold_noise=threshold_noise)
    return table_from_columns(columns, n)


def integrate_columns(
    frame: np.ndarray,
    columns: dict,
    n: int,
    *,
    mask: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    regions=None,
    gain: float = 1.0,
    radius: float | None = None,
    background_width: float = 3.0,
    saturated: np.ndarray | None = None,
    method: str = "sum",
    threshold_noise=None,
) -> dict:
    """:func:`integrate` on the columns of a peak table, giving columns: no table is built.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts (ADU).
    columns : dict of str to array
        The columns of a conformed peak table (:func:`braggflow.schema.conformed_columns`,
        :func:`braggflow.locate.locate_columns`): every schema column in order, then any extra columns, each of
        length ``n``; read, never written into.
    n : int
        Number of peaks (rows).
    mask, labels, regions, gain, radius, background_width, saturated, method, threshold_noise
        As :func:`integrate`.

    Returns
    -------
    columns : dict of str to array
        The columns of the table :func:`integrate` returns, cast to the schema's dtypes
        (:func:`braggflow.schema.cast_columns`); the columns it does not fill are the arrays given.

    Raises
    ------
    BraggflowError
        As :func:`integrate`.
    ValueError
        If the schema columns are missing or out of order, or a column's length is not ``n``.
    """
    if method not in ("sum", "profile"):
        raise BraggflowError(f"integrate method must be 'sum' or 'profile', got {method!r}")
    columns = cast_columns(columns, n)
    if n == 0:
        return columns
    return cast_columns(_integrate_columns(frame, columns, n, mask=mask, labels=labels, regions=regions, gain=gain,
                                           radius=radius, background_width=background_width, saturated=saturated,
                                           method=method, threshold_noise=threshold_noise), n)


def _integrate_columns(frame, columns: dict, n: int, *, mask, labels, regions, gain, radius, background_width,
                       saturated, method, threshold_noise) -> dict:
    """The integrated columns of the conformed ``columns`` (n >= 1 rows, read only): :func:`integrate_columns`,
    without the checks of the method and the cast."""
    if labels is None and radius is None:
        raise BraggflowError("integrate needs the finder's labels or an integration radius")
    for name, arr in (("mask", mask), ("labels", labels), ("saturated", saturated)):
        if arr is not None and arr.shape != frame.shape:
            raise BraggflowError(f"{name} has shape {arr.shape}, expected the frame shape {frame.shape}")
    rows = columns["row"]
    cols = columns["col"]
    ok = np.isfinite(rows) & np.isfinite(cols)
    ri = np.where(ok, np.rint(np.nan_to_num(rows)), 0).astype(np.intp)
    ci = np.where(ok, np.rint(np.nan_to_num(cols)), 0).astype(np.intp)
    ids = np.arange(1, n + 1)
    # members of a blend keep the intensities of their joint fit (braggflow.locate.deblend): the region is shared
    flags = columns["flags"].astype(np.uint32)
    joint = ok & ((flags & np.uint32(Flag.BLENDED)) != 0)
    joint_intensity = np.asarray(columns["intensity"], dtype=float)
    joint &= np.isfinite(joint_intensity)
    res = _integrate_all(frame, rows - ri, cols - ci, ri, ci, ids, ok & ~joint, background_width, mask=mask,
                         labels=labels, regions=regions, gain=gain, radius=radius, saturated=saturated)
    intensity, err, b, snr, npix, n_b = (res[k] for k in ("intensity", "err", "b", "snr", "npix", "n_b"))
    peak_value, sat, overlap = res["peak_value"], res["sat"], res["overlap"]
    if joint.any():
        intensity = np.where(joint, joint_intensity, intensity)
        err = np.where(joint, np.asarray(columns["intensity_err"], dtype=float), err)
        snr = np.divide(intensity, err, out=np.full(n, np.nan), where=err > 0)
        # the member a split added has no region of its own: it shares the region it lies in (its partner's,
        # integrated above); off every region, the values the finder gave the partner (deblending copies its row)
        shared = np.flatnonzero(joint & (npix == 0))
        if shared.size:
            npix, peak_value = npix.copy(), peak_value.astype(float, copy=True)
            owner = np.full(shared.size, -1, dtype=np.intp)
            if labels is not None:
                r, c = ri[shared], ci[shared]
                on = (r >= 0) & (r < labels.shape[0]) & (c >= 0) & (c < labels.shape[1])
                owner[on] = labels[r[on], c[on]].astype(np.intp) - 1
            inside = (owner >= 0) & (owner < n)
            npix[shared] = np.where(inside, npix[np.where(inside, owner, 0)], columns["npix"][shared])
            peak_value[shared] = np.where(inside, peak_value[np.where(inside, owner, 0)],
                                          np.asarray(columns["peak_value"], dtype=float)[shared])

    flags |= np.where(~(snr >= 3), np.uint32(Flag.LOW_SNR), np.uint32(0))
    flags |= np.where(n_b < 5, np.uint32(Flag.BAD_BACKGROUND), np.uint32(0))
    flags |= np.where(sat, np.uint32(Flag.SATURATED), np.uint32(0))
    flags |= np.where(overlap, np.uint32(Flag.OVERLAPPING), np.uint32(0))
    valid = ok & ((npix > 0) | joint)
    if method == "profile" and threshold_noise is not None:
        intensity, err, snr, summed = _censored(frame, rows, cols, valid & ~joint, intensity, err, res["b"],
                                                threshold_noise, mask=mask, labels=labels, saturated=saturated,
                                                gain=gain)
        flags |= np.where(summed, np.uint32(Flag.SUMMED), np.uint32(0))
    elif method == "profile":
        intensity, err, snr, summed = _profile(frame, columns, rows, cols, ids, valid & ~joint, intensity, err, res,
                                               mask=mask, labels=labels, saturated=saturated, gain=gain)
        flags |= np.where(summed, np.uint32(Flag.SUMMED), np.uint32(0))
    columns = dict(columns)
    columns.update(intensity=np.where(valid, intensity, np.nan), intensity_err=np.where(valid, err, np.nan),
                   background=np.where(n_b > 0, b, np.nan), snr=np.where(valid, snr, np.nan), peak_value=peak_value,
                   npix=npix.astype(np.int64), flags=flags)
    return columns


def _censored(frame, rows, cols, valid, intensity, err, level, noise, *, mask, labels, saturated, gain):
    """Censored-likelihood intensities of the ``valid`` peaks of a thresholded frame
    (:func:`~braggflow.integrate.censored.censored_gaussian_fits`), the sums kept where the fit does not describe
    a peak; returns intensity, err, snr and the SUMMED mask."""
    from braggflow.integrate.censored import censored_gaussian_fits

    n = len(rows)
    sel = np.flatnonzero(valid)
    bad = mask if saturated is None else (saturated if mask is None else mask | saturated)
    fits = censored_gaussian_fits(frame, rows[sel], cols[sel], threshold=noise.threshold, sigma=noise.sigma,
                                  gain=gain, background=level[sel], intensity=intensity[sel], labels=labels, mask=bad)
    fitted = np.zeros(n, dtype=bool)
    fitted[sel] = fits["converged"] & fits["described"]
    intensity, err = intensity.copy(), err.copy()
    intensity[fitted] = fits["intensity"][fitted[sel]]
    err[fitted] = fits["intensity_err"][fitted[sel]]
    snr = np.divide(intensity, err, out=np.full(n, np.nan), where=err > 0)
    return intensity, err, snr, valid & ~fitted


def _profile(frame, columns, rows, cols, ids, valid, intensity, err, res, *, mask, labels, saturated, gain):
    """Profile-fitted intensities of the ``valid`` peaks (:func:`~braggflow.integrate.profile.profile_intensities`),
    the sums kept where the profile does not describe a peak; returns intensity, err, snr and the SUMMED mask."""
    from braggflow.integrate.profile import profile_intensities

    n = len(rows)
    level = np.asarray(columns["background"], dtype=float) if "background" in columns else np.full(n, np.nan)
    level = np.where(np.isfinite(level), level, res["b"])
    sel = np.flatnonzero(valid)
    sigma = [np.asarray(columns[name], dtype=float)[sel] if name in columns else np.full(sel.size, np.nan)
             for name in ("sigma_row", "sigma_col")]
    fitted = profile_intensities(frame, rows[sel], cols[sel], ids=ids[sel], sigma_row=sigma[0], sigma_col=sigma[1],
                                 summed=intensity[sel], background=level[sel], mask=mask, labels=labels,
                                 saturated=saturated, gain=gain)
    described = np.zeros(n, dtype=bool)
    described[sel] = fitted["described"]
    intensity, err = intensity.copy(), err.copy()
    intensity[sel] = np.where(fitted["described"], fitted["intensity"], intensity[sel])
    err[sel] = np.where(fitted["described"], fitted["intensity_err"], err[sel])
    snr = np.divide(intensity, err, out=np.full(n, np.nan), where=err > 0)
    return intensity, err, snr, valid & ~described
