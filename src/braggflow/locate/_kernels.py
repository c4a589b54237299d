"""Compiled background-subtracted centroids of :func:`braggflow.locate.centroid.centroid_patches`, in numba.

One patch at a time: the central peak region (pixels above background +
``nsigma`` Poisson sigma, the 8-connected component nearest the centre,
grown by one pixel), its centre of mass, the centre's variances and the
second moments.  Every sum is NumPy's pairwise summation over the whole
patch in the same order (:func:`braggflow.integrate._kernels.pairwise_sum`)
and every product is taken in the array path's order, so the values equal
those of the array path bit for bit.

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from braggflow.integrate._kernels import COUNTED_SPAN, _median, _select, pairwise_sum

__all__ = ["centroid_windows", "cut_patches"]


@njit(cache=True, nogil=True)
def _central_region(values, unusable, background, threshold, side, above, stack, region):  # pragma: no cover
    """The central peak region of one flat patch, into ``region`` (0 or 1).

    Pixels above ``background + threshold`` (usable) form 8-connected
    components; the one holding the pixel nearest the centre (the first in
    raster order among equals) is kept and grown by one pixel (8-neighbours),
    usable pixels only.  Without any such pixel every usable pixel is taken.
    ``above`` is a work space of ``(side + 2)^2`` (uint8, its border 0: the
    patch padded by one pixel, so that no neighbour needs a bounds check),
    ``stack`` one of ``side * side``.
    """
    m = side * side
    h = side // 2
    padded = side + 2
    seed = -1
    nearest = m * 4
    for i in range(side):  # 1 in ``above``: above the threshold and usable
        base = (i + 1) * padded + 1
        di = (i - h) * (i - h)
        for j in range(side):
            p = i * side + j
            a = (values[p] - background > threshold) & ~unusable[p]
            above[base + j] = a
            d2 = di + (j - h) * (j - h)
            closer = a & (d2 < nearest)
            nearest = d2 if closer else nearest
            seed = p if closer else seed
    if seed < 0:
        for p in range(m):
            region[p] = not unusable[p]
        return
    # the seed's component: depth-first over the pixels above threshold, each taken marked 2
    start = (seed // side + 1) * padded + seed % side + 1
    above[start] = 2
    stack[0] = start
    top = 1
    while top:
        top -= 1
        q = stack[top]
        for d in (-padded - 1, -padded, -padded + 1, -1, 1, padded - 1, padded, padded + 1):
            t = q + d
            if above[t] == 1:
                above[t] = 2
                stack[top] = t
                top += 1
    # grown by one pixel: the component's pixels and their 8-neighbours, usable pixels only
    for i in range(side):
        base = (i + 1) * padded + 1
        for j in range(side):
            q = base + j
            g = (above[q - padded - 1] | above[q - padded] | above[q - padded + 1] | above[q - 1] | above[q]
                 | above[q + 1] | above[q + padded - 1] | above[q + padded] | above[q + padded + 1]) >> 1
            region[i * side + j] = (g != 0) & ~unusable[i * side + j]


#: Widest patch whose rows :func:`_central_region_bits` holds as 64-bit words.
_BITS_SIDE = 64


@njit(cache=True, nogil=True)
def _grown_row(component, i, side, one):  # pragma: no cover - compiled
    """Row ``i`` of a row-word component grown by one pixel: its pixels and their 8-neighbours (unmasked)."""
    g = component[i]
    if i > 0:
        g |= component[i - 1]
    if i < side - 1:
        g |= component[i + 1]
    return g | (g << one) | (g >> one)


@njit(cache=True, nogil=True)
def _central_region_bits(values, unusable, background, threshold, side, above, component, region):  # pragma: no cover
    """:func:`_central_region` for patches of up to 64 px a side, one 64-bit word of pixel flags a row.

    The seed's component grows one pixel (8-neighbours) at a time inside the
    pixels above the threshold until it stops changing, every row at once
    (no branch per pixel); it is the same set of pixels as the depth-first
    search finds.  ``above`` and ``component`` are work spaces of ``side``
    words.
    """
    h = side // 2
    one = np.uint64(1)
    full = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - side)
    seed = -1
    nearest = side * side * 4
    for i in range(side):  # bit j of ``above[i]``: pixel (i, j) above the threshold and usable
        di = (i - h) * (i - h)
        row_values = values[i * side:(i + 1) * side]
        row_unusable = unusable[i * side:(i + 1) * side]
        bits = np.uint64(0)
        for j in range(side):
            a = (row_values[j] - background > threshold) & ~row_unusable[j]
            bits |= np.uint64(a) << np.uint64(j)
            d2 = di + (j - h) * (j - h)
            closer = a & (d2 < nearest)
            nearest = d2 if closer else nearest
            seed = i * side + j if closer else seed
        above[i] = bits
    if seed < 0:
        for p in range(side * side):
            region[p] = not unusable[p]
        return
    for i in range(side):
        component[i] = 0
    component[seed // side] = one << np.uint64(seed % side)
    changed = True
    while changed:  # grown by one pixel inside ``above`` until it stops changing
        changed = False
        for i in range(side):
            g = _grown_row(component, i, side, one) & above[i]
            if g != component[i]:
                component[i] = g
                changed = True
    # grown by one pixel: the component's pixels and their 8-neighbours, usable pixels only
    for i in range(side):
        g = _grown_row(component, i, side, one) & full
        row_unusable = unusable[i * side:(i + 1) * side]
        row_region = region[i * side:(i + 1) * side]
        for j in range(side):
            row_region[j] = ((g >> np.uint64(j)) & one) != 0 and not row_unusable[j]


@njit(cache=True, nogil=True)
def centroid_windows(data, mask, background, gain, nsigma, plan):  # pragma: no cover - compiled
    """Central peak region, centre of mass, its variances and the second moments of each patch.

    Parameters
    ----------
    data : (N, s, s) ndarray of float64
        Patches, counts.
    mask : (N, s, s) ndarray of bool
        True = unusable pixel.
    background : (N,) ndarray of float64
        Each patch's background, counts/px.
    gain : float
        Detector gain, counts per photon.
    nsigma : float
        Region threshold in Poisson sigma of the background.
    plan : (K, 2) ndarray of int64
        :func:`braggflow.integrate._kernels.pairwise_plan` of s * s.

    Returns
    -------
    region : (N, s, s) ndarray of bool
        Each patch's central peak region.
    total : (N,) ndarray of float64
        Sum of the weights ``max(data - background, 0)`` over the region,
        counts; NaN where not positive.
    row, col : (N,) ndarray of float64
        Centre of mass, patch px.
    row_var, col_var, rc_cov : (N,) ndarray of float64
        Its Poisson variances and covariance (variance of a pixel ``gain *
        max(data, 0)``), px^2.
    m2r, m2c : (N,) ndarray of float64
        Weighted second moments about the centre, px^2.

    Notes
    -----
    Masked pixels are not completed here: the caller takes the patches with
    masked pixels through the symmetric completion of the array path.
    """
    n, side = data.shape[0], data.shape[1]
    m = side * side
    region = np.zeros((n, m), dtype=np.bool_)
    total = np.empty(n)
    row = np.empty(n)
    col = np.empty(n)
    row_var = np.empty(n)
    col_var = np.empty(n)
    rc_cov = np.empty(n)
    m2r = np.empty(n)
    m2c = np.empty(n)
    above = np.zeros((side + 2) * (side + 2), dtype=np.uint8)  # its border stays 0
    stack = np.empty(m, dtype=np.int64)
    above_bits = np.zeros(side, dtype=np.uint64)
    component = np.zeros(side, dtype=np.uint64)
    rr = np.empty(m)  # each pixel's row and column, px
    cc = np.empty(m)
    for p in range(m):
        rr[p] = p // side
        cc[p] = p % side
    w = np.empty(m)
    var0 = np.empty(m)
    work = np.empty(m)
    partial = np.empty(plan.shape[0])
    flat_data = data.reshape(n, m)
    flat_mask = mask.reshape(n, m)
    for k in range(n):
        values = flat_data[k]
        bg = background[k]
        inside = region[k]
        threshold = nsigma * np.sqrt(gain * max(bg, gain))
        if side <= _BITS_SIDE:
            _central_region_bits(values, flat_mask[k], bg, threshold, side, above_bits, component, inside)
        else:
            _central_region(values, flat_mask[k], bg, threshold, side, above, stack, inside)
        for p in range(m):
            w[p] = max(values[p] - bg, 0.0) if inside[p] else 0.0
            var0[p] = gain * max(values[p], 0.0) if inside[p] else 0.0
        t = pairwise_sum(w, plan, partial)
        if not t > 0:
            t = np.nan
        for p in range(m):
            work[p] = w[p] * rr[p]
        r = pairwise_sum(work, plan, partial) / t
        for p in range(m):
            work[p] = w[p] * cc[p]
        c = pairwise_sum(work, plan, partial) / t
        t2 = t * t
        for p in range(m):
            dr = rr[p] - r
            work[p] = var0[p] * (dr * dr)
        row_var[k] = pairwise_sum(work, plan, partial) / t2
        for p in range(m):
            dc = cc[p] - c
            work[p] = var0[p] * (dc * dc)
        col_var[k] = pairwise_sum(work, plan, partial) / t2
        for p in range(m):
            work[p] = var0[p] * (rr[p] - r) * (cc[p] - c)
        rc_cov[k] = pairwise_sum(work, plan, partial) / t2
        for p in range(m):
            dr = rr[p] - r
            work[p] = w[p] * dr * dr
        m2r[k] = pairwise_sum(work, plan, partial) / t
        for p in range(m):
            dc = cc[p] - c
            work[p] = w[p] * dc * dc
        m2c[k] = pairwise_sum(work, plan, partial) / t
        total[k], row[k], col[k] = t, r, c
    return region.reshape(n, side, side), total, row, col, row_var, col_var, rc_cov, m2r, m2c


@njit(cache=True, nogil=True)
def mirror_sources(w0, flat_mask, side, plan):  # pragma: no cover - compiled
    """Symmetric completion of patches with masked pixels, one patch at a time.

    The loop of :func:`braggflow.locate.centroid._mirror_sources` (which
    stays the reference): up to five times a masked pixel takes the weight
    of its mirror pixel through the current centre when that one is usable;
    a patch whose sources stay the same is done.

    Parameters
    ----------
    w0 : (M, s * s) ndarray of float64
        Weights of each patch's pixels.
    flat_mask : (M, s * s) ndarray of bool
        True = unusable pixel.
    side : int
        Patch side s, px.
    plan : (K, 2) ndarray of int64
        :func:`braggflow.integrate._kernels.pairwise_plan` of s * s.

    Returns
    -------
    w : (M, s * s) ndarray of float64
        The weights after the last centre taken.
    total, row, col : (M,) ndarray of float64
        Their sum (NaN where not positive) and centre, patch px.
    source : (M, s * s) ndarray of int64
        The pixel each weight is read from after the last centre.
    """
    n, m = w0.shape
    w = np.empty((n, m))
    total = np.empty(n)
    row = np.empty(n)
    col = np.empty(n)
    source = np.empty((n, m), dtype=np.int64)
    new = np.empty(m, dtype=np.int64)
    mr = np.empty(side, dtype=np.int64)
    mc = np.empty(side, dtype=np.int64)
    work = np.empty(m)
    partial = np.empty(plan.shape[0])
    centre = side // 2
    for k in range(n):
        for p in range(m):
            source[k, p] = p
        for _ in range(5):
            for p in range(m):
                w[k, p] = w0[k, source[k, p]]
            t = pairwise_sum(w[k], plan, partial)
            if not t > 0:
                t = np.nan
            for p in range(m):
                work[p] = w[k, p] * np.float64(p // side)
            r = pairwise_sum(work, plan, partial) / t
            for p in range(m):
                work[p] = w[k, p] * np.float64(p % side)
            c = pairwise_sum(work, plan, partial) / t
            total[k], row[k], col[k] = t, r, c
            # the mirror of pixel (i, j) through the centre is (2 row - i, 2 col - j), rounded
            r2 = 2 * (centre if np.isnan(r) else r)
            c2 = 2 * (centre if np.isnan(c) else c)
            for i in range(side):
                mr[i] = np.int64(np.rint(r2 - np.float64(i)))
                mc[i] = np.int64(np.rint(c2 - np.float64(i)))
            changed = False
            for p in range(m):
                q = p
                if flat_mask[k, p]:
                    a, b = mr[p // side], mc[p % side]
                    if 0 <= a < side and 0 <= b < side and not flat_mask[k, a * side + b]:
                        q = a * side + b
                changed |= q != source[k, p]
                new[p] = q
            for p in range(m):
                source[k, p] = new[p]
            if not changed:
                break
    return w, total, row, col, source


@njit(cache=True, nogil=True)
def _touch_patch(frame, mask, use_mask, labels, top, left, size):  # pragma: no cover - compiled
    """Read the first and last pixel of each row of a patch, so that the memory fetches them ahead of use.

    Returns their sum (kept by the caller, so that the reads are not dropped).
    """
    height, width = frame.shape
    first = min(max(left, 0), width - 1)
    last = min(max(left + size - 1, 0), width - 1)
    total = 0.0
    for r in range(max(top, 0), min(top + size, height)):
        total += np.float64(frame[r, first]) + np.float64(frame[r, last]) + labels[r, first] + labels[r, last]
        if use_mask:
            total += mask[r, first] + mask[r, last]
    return total


@njit(cache=True, nogil=True)
def _cut_patch(frame, mask, use_mask, labels, relabel, use_relabel, top, left, peak, saturation, use_saturation,
               counts, data, removed, own):  # pragma: no cover - compiled
    """Cut one patch (first pixel ``top``, ``left``) into ``counts``, ``data``, ``removed`` and ``own`` (s, s).

    Returns whether a pixel inside the frame is unusable (masked or not
    finite), another peak's usable pixel is there, and a usable pixel is
    saturated.
    """
    height, width = frame.shape
    size = counts.shape[0]
    zero = np.zeros(1, dtype=frame.dtype)[0]
    fill = np.zeros(1, dtype=labels.dtype)[0]
    masked = False
    other_any = False
    hot = False
    for i in range(size):
        r = top + i
        row_in = 0 <= r < height
        for j in range(size):
            c = left + j
            inside = row_in and 0 <= c < width
            if inside:
                count = frame[r, c]
                lab = labels[r, c]
                bad = use_mask and mask[r, c]
            else:
                count = zero
                lab = fill
                bad = True
            if use_relabel:
                lab = relabel[lab]
            v = np.float32(count)
            bad = bad or not np.isfinite(v)
            mine = lab == peak
            other = lab != 0 and not mine and not bad
            masked |= bad and inside
            other_any |= other
            gone = bad or other
            if use_saturation:
                hot |= np.float64(v) >= saturation and not gone
            counts[i, j] = count
            data[i, j] = v
            removed[i, j] = gone
            own[i, j] = mine
    return masked, other_any, hot


@njit(cache=True, nogil=True)
def _patch_level(data, removed, values, lower, upper, bins):  # pragma: no cover - compiled
    """The border-median background of one cut patch (see :func:`cut_patches`) and its usable border pixels."""
    size = data.shape[0]
    # counters typed int64: one starting as a literal 0 makes numba compile the callee once more, for Literal[int](0)
    n_border = np.int64(0)
    for i in range(size):  # the border's usable pixels
        step = 1 if i == 0 or i == size - 1 else size - 1
        for j in range(0, size, step):
            if not removed[i, j]:
                values[n_border] = data[i, j]
                n_border += 1
    if n_border >= 3:
        return _median(values, n_border, lower, upper, bins), n_border
    count = np.int64(0)  # the lower quartile of all usable pixels
    for i in range(size):
        for j in range(size):
            if not removed[i, j]:
                values[count] = data[i, j]
                count += 1
    return (np.float64(_select(values, count, count // 4, lower, upper)) if count else 0.0), n_border


@njit(cache=True, nogil=True)
def cut_patches(frame, mask, use_mask, labels, relabel, use_relabel, r0, c0, size, saturation, use_saturation,
                flag_bits):  # pragma: no cover - compiled
    """Patches, their unusable pixels, own pixels, flags and border-median background, one patch at a time.

    The values of :func:`braggflow.locate.patches.patches_at` with the
    finder's labels, read from the frame, mask and label images in one pass
    per patch (while one patch is cut, the rows of the next are fetched).

    Parameters
    ----------
    frame : (H, W) ndarray of numbers
        Counts.
    mask : (H, W) ndarray of bool
        True = bad pixel (read only when ``use_mask``).
    use_mask : bool
    labels : (H, W) ndarray of int
        The finder's label image.
    relabel : (L,) ndarray of int64
        Label map ``relabel[labels]`` (read only when ``use_relabel``).
    use_relabel : bool
    r0, c0 : (N,) ndarray of int64
        Patch centres, px.
    size : int
        Patch side s (odd), px.
    saturation : float
        Counts at or above which a usable pixel is saturated (when
        ``use_saturation``), compared with the float32 values in float64.
    use_saturation : bool
    flag_bits : (5,) ndarray of uint32
        The Flag bits EDGE, MASKED_NEIGHBOUR, OVERLAPPING, SATURATED, BAD_BACKGROUND.

    Returns
    -------
    counts : (N, s, s) ndarray, the frame's dtype
        The pixels as cut, 0 outside the frame.
    data : (N, s, s) ndarray of float32
        The pixels, the unusable ones replaced by the background.
    removed : (N, s, s) ndarray of bool
        Unusable: outside the frame, masked, not finite, or another peak's.
    own : (N, s, s) ndarray of bool
        The pixels of label k + 1 (after ``relabel``).
    flags : (N,) ndarray of uint32
    background : (N,) ndarray of float64
        Median of the usable border pixels (taken in float32, the two middle
        values averaged in float64); with fewer than 3 of them the lower
        quartile (sorted position count // 4) of all usable pixels, 0 without any.
    """
    n = r0.size
    height, width = frame.shape
    half = size // 2
    m = size * size
    counts = np.empty((n, size, size), dtype=frame.dtype)
    data = np.empty((n, size, size), dtype=np.float32)
    removed = np.empty((n, size, size), dtype=np.bool_)
    own = np.empty((n, size, size), dtype=np.bool_)
    flags = np.zeros(n, dtype=np.uint32)
    background = np.empty(n)
    values = np.empty(m, dtype=np.float32)
    lower = np.empty(m, dtype=np.float32)
    upper = np.empty(m, dtype=np.float32)
    bins = np.empty((4, COUNTED_SPAN), dtype=np.int64)
    read_ahead = 0.0
    for k in range(n):
        if k + 1 < n:
            read_ahead += _touch_patch(frame, mask, use_mask, labels, r0[k + 1] - half, c0[k + 1] - half, size)
        top, left = r0[k] - half, c0[k] - half
        masked, other, hot = _cut_patch(frame, mask, use_mask, labels, relabel, use_relabel, top, left, k + 1,
                                        saturation, use_saturation, counts[k], data[k], removed[k], own[k])
        level, n_border = _patch_level(data[k], removed[k], values, lower, upper, bins)
        flag = np.uint32(0)
        if top < 0 or left < 0 or top + size > height or left + size > width:
            flag |= flag_bits[0]
        if masked:
            flag |= flag_bits[1]
        if other:
            flag |= flag_bits[2]
        if hot:
            flag |= flag_bits[3]
        if n_border == 0:
            flag |= flag_bits[4]
        flags[k] = flag
        background[k] = level
        fill_value = np.float32(level)
        for i in range(size):
            for j in range(size):
                if removed[k, i, j]:
                    data[k, i, j] = fill_value
    return counts, data, removed, own, flags, background, read_ahead
