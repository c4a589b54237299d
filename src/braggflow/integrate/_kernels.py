"""Compiled summation integration of :mod:`braggflow.integrate`: one window at a time, in numba.

:func:`label_window_sums` reads each peak's window straight from the frame,
mask, label and saturation images (no (N, w, w) copies), picks the signal
pixels (the peak's own region grown by one pixel, other peaks' pixels left
out) and the background pixels (no peak's pixel within one pixel), and
takes the background median, its variance and the sums over the signal.
Every sum is NumPy's pairwise summation (:func:`pairwise_sum`) over the
whole window in the same order (:func:`pairwise_plan`), so the values equal those of the array
path of :func:`braggflow.integrate._pixel_sums` bit for bit.

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

__all__ = ["label_window_sums", "pairwise_plan", "pairwise_sum"]

#: Windows holding a value this large (or a non-finite one) are left to the array path.
_LARGE = 5e29


@functools.lru_cache(maxsize=16)
def pairwise_plan(count: int) -> np.ndarray:
    """The order of NumPy's pairwise summation of ``count`` values, as a program for :func:`pairwise_sum`.

    NumPy's ``add.reduce`` over a contiguous axis sums up to 128 values in
    one block (fewer than 8 one by one, else in eight interleaved partial
    sums) and splits longer runs in two at a multiple of 8, adding the two
    halves' sums.  The same order gives the same rounding.  The plan of each
    count is made once and the same array returned after (not to be changed).

    Parameters
    ----------
    count : int
        Number of values summed (>= 0).

    Returns
    -------
    plan : (K, 2) ndarray of int64
        Rows ``(start, length)``: push the sum of the block ``values[start:
        start + length]``; rows ``(-1, 0)``: replace the last two sums pushed
        by their total.
    """
    plan = []
    todo = [(0, int(count), False)]
    while todo:  # depth-first, the left half first; a split's total after both halves
        start, length, combine = todo.pop()
        if combine:
            plan.append((-1, 0))
        elif length <= _BLOCK:
            plan.append((start, length))
        else:
            left = length // 2
            left -= left % 8
            todo += [(0, 0, True), (start + left, length - left, False), (start, left, False)]
    return np.array(plan, dtype=np.int64).reshape(-1, 2)


#: Longest run NumPy's pairwise summation sums in one block.
_BLOCK = 128


@njit(cache=True, nogil=True)
def _block_sum(values, start, count):  # pragma: no cover - compiled
    """One block of NumPy's pairwise summation (``count`` <= 128 values from ``start``).

    The indices are unsigned: no negative-index wraparound test per read
    (a signed index computed from ``start`` costs one each).
    """
    if count < 8:
        total = 0.0
        for i in range(count):
            total += values[start + i]
        return total
    one = np.uint64(1)
    s = np.uint64(start)
    r0, r1, r2, r3 = values[s], values[s + one], values[s + np.uint64(2)], values[s + np.uint64(3)]
    r4, r5 = values[s + np.uint64(4)], values[s + np.uint64(5)]
    r6, r7 = values[s + np.uint64(6)], values[s + np.uint64(7)]
    end = s + np.uint64(count - count % 8)
    k = s + np.uint64(8)
    while k < end:
        r0 += values[k]
        r1 += values[k + one]
        r2 += values[k + np.uint64(2)]
        r3 += values[k + np.uint64(3)]
        r4 += values[k + np.uint64(4)]
        r5 += values[k + np.uint64(5)]
        r6 += values[k + np.uint64(6)]
        r7 += values[k + np.uint64(7)]
        k += np.uint64(8)
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while k < s + np.uint64(count):
        total += values[k]
        k += one
    return total


@njit(cache=True, nogil=True)
def pairwise_sum(values, plan, partial):  # pragma: no cover - compiled
    """Sum of float64 ``values`` in the order of NumPy's pairwise summation.

    Parameters
    ----------
    values : (M,) ndarray of float64
    plan : (K, 2) ndarray of int64
        :func:`pairwise_plan` of M.
    partial : (K,) ndarray of float64
        Work space.

    Returns
    -------
    total : float
        Equal to ``values.sum()`` bit for bit (NumPy's reduction starts from 0.0).
    """
    top = 0
    for q in range(plan.shape[0]):
        if plan[q, 0] >= 0:
            partial[top] = _block_sum(values, plan[q, 0], plan[q, 1])
            top += 1
        else:
            partial[top - 2] = partial[top - 2] + partial[top - 1]
            top -= 1
    return 0.0 + partial[0] if top else 0.0


@njit(cache=True, nogil=True)
def _select(values, count, k, lower, upper):  # pragma: no cover - compiled
    """The ``k``-th smallest (from 0) of the finite ``values[:count]``, which are left as they are.

    Quickselect without branches in its inner loop: each value is written to
    both ``lower`` and ``upper`` (work spaces of ``count`` values) and only
    the counts of those below and above the pivot (median of three) move on;
    the side holding rank ``k`` is taken on in place.  The counts are
    unsigned: no negative-index test per write.
    """
    source = values
    n = np.uint64(count)
    k = np.uint64(k)
    while True:
        a, b, c = source[0], source[n // np.uint64(2)], source[n - np.uint64(1)]
        pivot = max(min(a, b), min(max(a, b), c))
        below = np.uint64(0)
        above = np.uint64(0)
        for i in range(n):  # writes never pass the read in the same buffer
            v = source[i]
            lower[below] = v
            upper[above] = v
            below += np.uint64(v < pivot)
            above += np.uint64(v > pivot)
        if k < below:
            source = lower
            n = below
        elif k < n - above:
            return pivot
        else:
            k -= n - above
            source = upper
            n = above


#: Integer values spanning fewer than this many steps have their median counted (:func:`_counted_median`).
COUNTED_SPAN = 256


@njit(cache=True, nogil=True)
def _counted_median(values, count, smallest, width, bins):  # pragma: no cover - compiled
    """Median of ``values[:count]``, integers from ``smallest`` to ``smallest + width - 1``, by counting them.

    Four interleaved histograms (``bins``, (4, >= ``width``) int64 work
    space), so that equal values in a row do not wait on one counter; the
    two middle ranks are then found in one walk over the bins.
    """
    for b in range(4):
        for i in range(width):
            bins[b, i] = 0
    base = np.float64(smallest)
    for i in range(count):
        bins[i & 3, np.int64(np.float64(values[i]) - base)] += 1
    lo = (count - 1) // 2
    hi = count // 2
    seen = 0
    low = -1
    high = width - 1
    for i in range(width):
        seen += (bins[0, i] + bins[1, i]) + (bins[2, i] + bins[3, i])
        if low < 0 and seen > lo:
            low = i
        if seen > hi:
            high = i
            break
    return 0.5 * ((base + low) + (base + high))


@njit(cache=True, nogil=True)
def _extent(values, count):  # pragma: no cover - compiled
    """Smallest and largest of ``values[:count]`` (``count`` >= 1) and whether all are integers.

    Four running minima and maxima (their order does not change them): no
    chain of ``count`` dependent steps.
    """
    lo0 = lo1 = lo2 = lo3 = hi0 = hi1 = hi2 = hi3 = values[0]
    integral = True
    stop = count - count % 4
    for i in range(0, stop, 4):
        v0, v1, v2, v3 = values[i], values[i + 1], values[i + 2], values[i + 3]
        lo0, lo1, lo2, lo3 = min(lo0, v0), min(lo1, v1), min(lo2, v2), min(lo3, v3)
        hi0, hi1, hi2, hi3 = max(hi0, v0), max(hi1, v1), max(hi2, v2), max(hi3, v3)
        integral &= (v0 == np.floor(v0)) & (v1 == np.floor(v1)) & (v2 == np.floor(v2)) & (v3 == np.floor(v3))
    for i in range(stop, count):
        v = values[i]
        lo0, hi0 = min(lo0, v), max(hi0, v)
        integral &= v == np.floor(v)
    return min(min(lo0, lo1), min(lo2, lo3)), max(max(hi0, hi1), max(hi2, hi3)), integral


@njit(cache=True, nogil=True)
def _median(values, count, lower, upper, bins):  # pragma: no cover - compiled
    """Median of the finite ``values[:count]`` (``count`` >= 1), float64: the mean of the two middle values.

    The same value as ``0.5 * (sorted[(count - 1) // 2] + sorted[count // 2])``
    with both middle values taken in the values' type.  Integer values
    (counts) spanning fewer than ``bins.shape[1]`` steps are counted
    (:func:`_counted_median`), others selected (:func:`_select`; ``lower``
    and ``upper`` are its work spaces).
    """
    smallest, largest, integral = _extent(values, count)
    if integral and np.float64(largest) - np.float64(smallest) < bins.shape[1]:
        return _counted_median(values, count, smallest, np.int64(np.float64(largest) - np.float64(smallest)) + 1,
                               bins)
    lo = (count - 1) // 2
    low = _select(values, count, lo, lower, upper)
    high = low
    if count % 2 == 0:  # the next rank: ``low`` again if it occurs more often, else the smallest value above it
        n_le = 0
        nearest = np.inf
        for i in range(count):
            v = values[i]
            n_le += v <= low
            nearest = min(nearest, v if v > low else np.inf)
        if n_le < lo + 2:
            high = nearest
    return 0.5 * (np.float64(low) + np.float64(high))


@njit(cache=True, nogil=True)
def _touch_window(frame, mask, use_mask, labels, saturated, use_saturated, row, col, half):  # pragma: no cover
    """Read the first and last pixel of each row of a window, so that the memory fetches them ahead of use.

    Returns their sum (kept by the caller, so that the reads are not dropped).
    """
    height, width = frame.shape
    first = min(max(col - half, 0), width - 1)
    last = min(max(col + half, 0), width - 1)
    total = 0.0
    for r in range(max(row - half, 0), min(row + half + 1, height)):
        total += frame[r, first] + frame[r, last] + labels[r, first] + labels[r, last]
        if use_mask:
            total += mask[r, first] + mask[r, last]
        if use_saturated:
            total += saturated[r, first] + saturated[r, last]
    return total


@njit(cache=True, nogil=True)
def _read_window(frame, mask, use_mask, labels, saturated, use_saturated, top, left, side, peak, half, core, win,
                 rows_flags):  # pragma: no cover - compiled
    """Copy one window's pixels into ``win`` (flat, row by row) and its flags into ``rows_flags``.

    ``rows_flags[0..3, i]`` hold, one bit per column of window row ``i``, the
    pixels of any peak, of this ``peak``, the unusable pixels (masked or
    outside the frame) and the saturated ones.  Returns the number of the
    peak's own pixels, whether one lies beyond ``core`` px of the centre,
    and whether every pixel is finite and below ``_LARGE`` in magnitude.
    """
    height, width = frame.shape
    one = np.uint64(1)
    full = np.uint64((1 << side) - 1)
    core_cols = np.uint64(((1 << (2 * core + 1)) - 1) << (half - core))
    first = max(0, -left)
    stop = min(side, width - left)
    outside_cols = full
    for j in range(first, stop):
        outside_cols &= ~(one << np.uint64(j))
    n_own = 0
    cut = False
    finite = True
    for i in range(side):
        r = top + i
        anyone = np.uint64(0)
        mine = np.uint64(0)
        unusable = outside_cols
        hot = np.uint64(0)
        base = i * side
        if 0 <= r < height:  # the row's pixels as 1D views: no 2D index arithmetic per pixel
            frame_row = frame[r, left + first:left + stop]
            label_row = labels[r, left + first:left + stop]
            win_row = win[base + first:base + stop]
            for j in range(stop - first):
                v = frame_row[j]
                win_row[j] = v
                finite &= abs(v) < _LARGE
                lab = label_row[j]
                bit = np.uint64(first + j)
                anyone |= np.uint64(lab > 0) << bit
                mine |= np.uint64(lab == peak) << bit
            if use_mask:
                mask_row = mask[r, left + first:left + stop]
                for j in range(stop - first):
                    unusable |= np.uint64(mask_row[j]) << np.uint64(first + j)
            if use_saturated:
                saturated_row = saturated[r, left + first:left + stop]
                for j in range(stop - first):
                    hot |= np.uint64(saturated_row[j]) << np.uint64(first + j)
        else:
            unusable = full
        rows_flags[0, i] = anyone
        rows_flags[1, i] = mine
        rows_flags[2, i] = unusable
        rows_flags[3, i] = hot
        if mine:
            for j in range(side):
                n_own += (mine >> np.uint64(j)) & one
            cut |= abs(i - half) > core or (mine & ~core_cols) != 0
    return n_own, cut, finite


@njit(cache=True, nogil=True)
def _flag_pixels(rows_flags, side, quiet, signal):  # pragma: no cover - compiled
    """Background (``quiet``) and ``signal`` pixels (0 or 1, flat) from a window's :func:`_read_window` flags.

    Signal: within one pixel (8-neighbours) of the peak's own pixels, not
    another peak's, usable.  Background: no peak's pixel within one pixel,
    usable.  Returns whether a signal pixel is saturated.
    """
    one = np.uint64(1)
    full = np.uint64((1 << side) - 1)
    hit = False
    for i in range(side):
        near_any = rows_flags[0, i]
        near_mine = rows_flags[1, i]
        if i > 0:
            near_any |= rows_flags[0, i - 1]
            near_mine |= rows_flags[1, i - 1]
        if i < side - 1:
            near_any |= rows_flags[0, i + 1]
            near_mine |= rows_flags[1, i + 1]
        near_any = (near_any | (near_any << one) | (near_any >> one)) & full
        near_mine = (near_mine | (near_mine << one) | (near_mine >> one)) & full
        usable = ~rows_flags[2, i] & full
        sig = near_mine & ~(rows_flags[0, i] & ~rows_flags[1, i]) & usable
        q = ~near_any & usable
        hit |= (sig & rows_flags[3, i]) != 0
        quiet_row = quiet[i * side:(i + 1) * side]
        signal_row = signal[i * side:(i + 1) * side]
        for j in range(side):
            quiet_row[j] = (q >> np.uint64(j)) & one
            signal_row[j] = (sig >> np.uint64(j)) & one
    return hit


@njit(cache=True, nogil=True)
def _background(win, quiet, background, lower, upper, bins, work, plan, partial):  # pragma: no cover - compiled
    """Count, median and variance (ddof 1; NaN with fewer than 2) of a window's background pixels.

    The variance as the array path takes it: the window's values masked,
    their mean removed, masked again, squared and summed pairwise.
    """
    m = win.size
    kept = np.uint64(0)
    for p in range(m):  # written always, kept when quiet
        background[kept] = win[p]
        kept += np.uint64(quiet[p])
    count = np.int64(kept)
    level = _median(background, count, lower, upper, bins) if count > 0 else 0.0
    for p in range(m):
        work[p] = np.float64(win[p]) * quiet[p]
    mean = pairwise_sum(work, plan, partial) / max(count, 1)
    for p in range(m):
        d = (work[p] - mean) * quiet[p]
        work[p] = d * d
    spread = pairwise_sum(work, plan, partial) / max(count - 1, 1) if count > 1 else np.nan
    return count, level, spread


@njit(cache=True, nogil=True)
def _signal_sums(win, signal, level, gain, work, plan, partial):  # pragma: no cover - compiled
    """Signal pixel count, highest signal pixel, sum of (value - ``level``) and ``gain`` x its positive part."""
    m = win.size
    far = 2 * _LARGE  # pushes the pixels outside the signal below every signal pixel
    n_signal = 0
    for p in range(m):
        n_signal += signal[p]
        work[p] = (np.float64(win[p]) - level) * signal[p]
    # the highest value in four running maxima (a maximum does not depend on the order): no chain of m steps
    top0 = top1 = top2 = top3 = -far
    stop = m - m % 4
    for p in range(0, stop, 4):
        top0 = max(top0, win[p] - far * (1 - signal[p]))
        top1 = max(top1, win[p + 1] - far * (1 - signal[p + 1]))
        top2 = max(top2, win[p + 2] - far * (1 - signal[p + 2]))
        top3 = max(top3, win[p + 3] - far * (1 - signal[p + 3]))
    for p in range(stop, m):
        top0 = max(top0, win[p] - far * (1 - signal[p]))
    top_value = max(max(top0, top1), max(top2, top3))
    intensity = pairwise_sum(work, plan, partial)
    for p in range(m):
        work[p] = max(work[p], 0.0) * gain
    return n_signal, top_value, intensity, pairwise_sum(work, plan, partial)


@njit(cache=True, nogil=True)
def label_window_sums(frame, mask, use_mask, labels, saturated, use_saturated, rows, cols, ids, half, core,
                      gain, plan):  # pragma: no cover - compiled
    """Summation integration of each peak in the (2 half + 1)^2 window around (``rows``, ``cols``).

    Parameters
    ----------
    frame : (H, W) ndarray of float32 or float64
        Corrected frame, counts; the background median is taken in this type.
    mask : (H, W) ndarray of bool
        True = bad pixel (read only when ``use_mask``; pixels outside the
        frame are always bad).
    use_mask : bool
    labels : (H, W) ndarray of int
        The finder's label image.
    saturated : (H, W) ndarray of bool
        Saturated pixels (read only when ``use_saturated``).
    use_saturated : bool
    rows, cols : (N,) ndarray of intp
        Window centres, px.
    ids : (N,) ndarray of int
        Each peak's label.
    half, core : int
        Window half-size and the half-size of its core, px: own pixels
        beyond the core mean the window cuts the region.
    gain : float
        Detector gain, counts per photon.
    plan : (K, 2) ndarray of int64
        :func:`pairwise_plan` of the window's pixel count (2 half + 1)^2.

    Returns
    -------
    intensity : (N,) ndarray of float64
        Sum over the signal pixels of (value - background), counts.
    positive : (N,) ndarray of float64
        ``gain`` times the sum of the positive excesses, counts^2.
    level : (N,) ndarray of float64
        Median of the background pixels, counts/px (0 without any).
    spread : (N,) ndarray of float64
        Their variance (ddof 1), counts^2 (NaN with fewer than 2).
    npix, n_b : (N,) ndarray of int64
        Signal and background pixel counts.
    peak_value : (N,) ndarray of float64
        Highest signal pixel, counts (NaN without signal pixels).
    sat : (N,) ndarray of bool
        A saturated signal pixel.
    own, truncated, large : (N,) ndarray of bool
        The window holds pixels of the peak's region; some of them lie
        beyond the core; a pixel of the window is not finite or beyond
        ``_LARGE`` in magnitude (such a window's sums are not taken).
    read_ahead : float
        The sum of :func:`_touch_window` (no meaning: returned so that its
        reads are kept).

    Notes
    -----
    Reading the windows from the images is most of the cost when they are
    not in the cache: while one window is summed, the rows of the next are
    loaded (:func:`_touch_window`), which halves that cost.
    """
    n = rows.size
    side = 2 * half + 1
    m = side * side
    intensity = np.zeros(n)
    positive = np.zeros(n)
    level = np.zeros(n)
    spread = np.full(n, np.nan)
    npix = np.zeros(n, dtype=np.int64)
    n_b = np.zeros(n, dtype=np.int64)
    peak_value = np.full(n, np.nan)
    sat = np.zeros(n, dtype=np.bool_)
    own = np.zeros(n, dtype=np.bool_)
    truncated = np.zeros(n, dtype=np.bool_)
    large = np.zeros(n, dtype=np.bool_)
    win = np.zeros(m, dtype=frame.dtype)  # pixels outside the frame are never read back
    background = np.empty(m, dtype=frame.dtype)
    lower = np.empty(m, dtype=frame.dtype)
    upper = np.empty(m, dtype=frame.dtype)
    bins = np.empty((4, COUNTED_SPAN), dtype=np.int64)
    work = np.empty(m)
    partial = np.empty(plan.shape[0])
    rows_flags = np.zeros((4, side), dtype=np.uint64)  # any peak's, this peak's, unusable, saturated pixels
    quiet = np.zeros(m, dtype=np.uint8)  # background pixels, 0 or 1
    signal = np.zeros(m, dtype=np.uint8)
    read_ahead = 0.0
    for k in range(n):
        if k + 1 < n:
            read_ahead += _touch_window(frame, mask, use_mask, labels, saturated, use_saturated, rows[k + 1],
                                        cols[k + 1], half)
        n_own, cut, finite = _read_window(frame, mask, use_mask, labels, saturated, use_saturated, rows[k] - half,
                                          cols[k] - half, side, ids[k], half, core, win, rows_flags)
        own[k] = n_own > 0
        truncated[k] = cut
        if not finite:
            large[k] = True
            continue
        sat[k] = _flag_pixels(rows_flags, side, quiet, signal)
        n_b[k], level[k], spread[k] = _background(win, quiet, background, lower, upper, bins, work, plan, partial)
        npix[k], top_value, intensity[k], positive[k] = _signal_sums(win, signal, level[k], gain, work, plan,
                                                                     partial)
        if npix[k] > 0:
            peak_value[k] = np.float64(top_value)
    return intensity, positive, level, spread, npix, n_b, peak_value, sat, own, truncated, large, read_ahead
