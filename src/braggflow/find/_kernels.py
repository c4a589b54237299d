"""Compiled per-pixel and per-event loops of the finder, in numba.

Each kernel computes what a NumPy formulation of the finder computes, as one
pass over a sparse pixel list or over the finder's small events instead of
many whole-array NumPy calls (each of which reads its arrays from memory
again):

* :func:`sparse_component_labels`: 8-connected components of a sorted list of
  flat pixel indices (a union-find over the list, the row below followed by a
  pointer that only moves forward), numbered as
  ``scipy.sparse.csgraph.connected_components`` numbers them (in the order of
  each component's first pixel in the list);
* :func:`list_local_maxima`: the pixels of a list that are at least their 8
  neighbours in the frame, earlier neighbours (raster order) strictly (one
  maximum per plateau), outside the frame ``-inf``;
* :func:`best_spot_fits`: the largest ``(sum_j a_j g_jt)^2 / sum_j v_j g_jt^2``
  over the templates ``t`` of each event, reading only the event's own
  window pixels (the others carry weight 0); :func:`best_spot_fits_until`
  stops an event's search once its test is decided;
* :func:`event_ring_keys`: the ring pixels of the zinger test's events
  (8-neighbours of an event's pixels, not its own), sorted by event and
  pixel, each once (``np.unique`` of all neighbour keys);
* :func:`list_neighbours`, :func:`ascent_roots`, :func:`basin_contacts`: the
  split's steepest-ascent basins and the contacts between them;
* :func:`window_excess`, :func:`clear_of`: the aperture test's windows
  around its seeds, and the seeds clear of the peaks found otherwise;
* :func:`box_rings`: the median or mean of the ring of pixels around boxes
  (the local background of weak regions and of the aperture test);
* :func:`counted_medians`: the median and median absolute deviation of
  tiles of whole counts, from a histogram of each tile's samples (the
  order statistics a partition finds);
* :func:`clip_deviations`: the samples of each tile within a clipping
  distance of its level (the tiles' sigma-clipped moments);
* :func:`sampled_zeros`: the good pixels and the zeros among them on a
  sampling grid (the test for frames thresholded upstream);
* :func:`median3x3_tiles`: the median filter of the background's tile maps
  (a fixed network of compare-exchanges);
* :func:`pixels_above_tiles`: the pixels above a per-tile threshold, one
  read of the frame (a row segment of one tile is first tested as a whole,
  a branch-free pass, and its pixels are listed only when one of them passes);
* :func:`listed_tile_tests`: the listed pixels' values and their tests against
  two tile maps (the threshold and the aperture test's seed level), one pass.

The functions are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["sparse_component_labels", "list_local_maxima", "best_spot_fits", "best_spot_fits_until",
           "event_ring_keys", "list_neighbours", "ascent_roots", "basin_contacts", "window_excess", "clear_of",
           "box_rings", "pixels_above_tiles", "median3x3_tiles", "sampled_zeros", "clip_deviations", "counted_medians",
           "NO_MASK"]

#: the ``bad`` argument of the kernels for "no bad pixel": a (0, 0) array (a frame-sized one would be read)
NO_MASK = np.zeros((0, 0), dtype=bool)


def _jit(fn):
    return njit(cache=True, nogil=True)(fn)


@_jit
def _root(parent, i):
    """Root of ``i`` in a union-find forest, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@_jit
def _join(parent, a, b):
    """Union of the trees of ``a`` and ``b``; the smaller root becomes the root."""
    ra, rb = _root(parent, a), _root(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@_jit
def sparse_component_labels(flat_index, width):
    """8-connected components of a sorted list of flat pixel indices.

    Parameters
    ----------
    flat_index : (K,) ndarray of int64
        Flat indices ``row x width + col``, strictly ascending.
    width : int
        Row length, px.

    Returns
    -------
    component : (K,) ndarray of int64
        Component id (1..n) of each pixel, ids in the order of each
        component's first pixel in the list.
    n : int
        Number of components.
    """
    m = flat_index.size
    parent = np.arange(m)
    below = 0  # first list position at or after the row below's left neighbour of pixel k
    for k in range(m):
        f = flat_index[k]
        c = f % width
        if k + 1 < m and flat_index[k + 1] == f + 1 and c + 1 < width:
            _join(parent, k, k + 1)
        target = f + width - 1
        while below < m and flat_index[below] < target:
            below += 1
        j = below
        while j < m and flat_index[j] <= f + width + 1:
            dc = flat_index[j] - (f + width)
            if c + dc >= 0 and c + dc < width:
                _join(parent, k, j)
            j += 1
    component = np.empty(m, dtype=np.int64)
    n = 0
    for k in range(m):
        r = _root(parent, k)
        if r == k:
            n += 1
            component[k] = n
        else:
            component[k] = component[r]
    return component, n


@_jit
def list_local_maxima(values, flat_index, frame):
    """Which pixels of a list are >= their 8 neighbours in ``frame`` (outside the frame counts as -inf).

    Parameters
    ----------
    values : (K,) ndarray of float64
        The pixels' values, ``frame[flat_index]``.
    flat_index : (K,) ndarray of int64
        Flat indices of the pixels (ascending makes it fastest).
    frame : (H, W) ndarray
        The frame the neighbours are read from.

    Returns
    -------
    is_max : (K,) ndarray of bool
        Earlier neighbours (raster order) must be strictly lower, later ones
        at most equal: one maximum per plateau.

    Notes
    -----
    Pixels away from the frame's edge compare with their 8 neighbours
    without branches, through three row views (the pixels' order in the
    frame is data, so branches on the comparisons are mispredicted).
    """
    h, w = frame.shape
    m = flat_index.size
    is_max = np.ones(m, dtype=np.bool_)
    r = -1
    row_start = 0
    for k in range(m):
        f = flat_index[k]
        if r < 0 or f < row_start or f >= row_start + w:  # a new row (the list is mostly ascending)
            r = f // w
            row_start = r * w
        c = f - row_start
        v = values[k]
        if 0 < r < h - 1 and 0 < c < w - 1:
            above = frame[r - 1]
            here = frame[r]
            below = frame[r + 1]
            up = (v > above[c - 1]) & (v > above[c]) & (v > above[c + 1]) & (v > here[c - 1])
            is_max[k] = up & (v >= here[c + 1]) & (v >= below[c - 1]) & (v >= below[c]) & (v >= below[c + 1])
            continue
        for dr in range(-1, 2):
            rr = r + dr
            if rr < 0 or rr >= h:
                continue
            for dc in range(-1, 2):
                cc = c + dc
                if (dr == 0 and dc == 0) or cc < 0 or cc >= w:
                    continue
                nb = frame[rr, cc]
                if dr < 0 or (dr == 0 and dc < 0):
                    if not v > nb:
                        is_max[k] = False
                elif not v >= nb:
                    is_max[k] = False
    return is_max


def best_spot_fits(weighted, inv_var, templates, squares):
    """Largest squared projection of each event on the spot templates, amplitudes >= 0.

    ``max_t max(sum_j a_j g_jt, 0)^2 / max(sum_j v_j g_jt^2, 1e-300)`` with
    ``a = x / var`` and ``v = 1 / var`` over the window pixels ``j`` of one
    event (pixels with ``v == 0`` are left out of both sums: they add 0).

    Parameters
    ----------
    weighted : (N, P) ndarray of float64
        ``a``: counts above background over variance, per event and window pixel.
    inv_var : (N, P) ndarray of float64
        ``v``: inverse variances (0 for a pixel left out).
    templates, squares : (P, T) ndarray of float64
        Templates ``g`` and their squares.

    Returns
    -------
    best : (N,) ndarray of float64
    """
    n = weighted.shape[0]
    # the search that stops early, never stopping: every template, the same sums in the same order
    return best_spot_fits_until(weighted, inv_var, templates, squares, np.zeros(n), -np.inf,
                                max(templates.shape[1], 1))


@_jit
def best_spot_fits_until(weighted, inv_var, templates, squares, chi2, limit, block):
    """:func:`best_spot_fits`, stopping an event's search once ``chi2 - best`` is at most ``limit``.

    The templates are taken ``block`` at a time (in their order); after each
    block, an event whose best projection so far already brings ``chi2 -
    best`` to ``limit`` or below is done: its value is that best so far (at
    most the true maximum, so ``chi2 - best`` still tells ``> limit`` exactly
    as the full search does).  Events that never get there are searched over
    every template and get the value of :func:`best_spot_fits` bit for bit
    (each projection's sums run over the pixels in the same order).

    Parameters
    ----------
    weighted, inv_var, templates, squares
        As :func:`best_spot_fits`.
    chi2 : (N,) ndarray of float64
        Each event's own chi2 (``sum_E x^2 / v``).
    limit : float
        The value of ``chi2 - best`` at or below which an event is decided.
    block : int
        Templates per step (>= 1).

    Returns
    -------
    best : (N,) ndarray of float64
    """
    n, p = weighted.shape
    t = templates.shape[1]
    best = np.empty(n)
    cross = np.empty(block)
    norm = np.empty(block)
    for i in range(n):
        top = 0.0
        for start in range(0, t, block):
            width = min(block, t - start)
            cross[:width] = 0.0
            norm[:width] = 0.0
            for j in range(p):
                v = inv_var[i, j]
                if v == 0.0:
                    continue
                a = weighted[i, j]
                template_row = templates[j, start:start + width]
                square_row = squares[j, start:start + width]
                for k in range(width):
                    cross[k] += a * template_row[k]
                    norm[k] += v * square_row[k]
            for k in range(width):
                c = cross[k] if cross[k] > 0.0 else 0.0
                q = c * c / max(norm[k], 1e-300)
                if (start == 0 and k == 0) or q > top or q != q:
                    top = q
                if top != top:  # NaN, as a maximum over the array would give
                    break
            if top != top or not chi2[i] - top > limit:
                break
        best[i] = top
    return best


@_jit
def event_ring_keys(event_of, event_flat, height, width):
    """The ring pixels of events: ``event x (height x width) + flat index``, sorted, each once.

    The ring of an event is the set of pixels inside the image that touch one
    of its pixels (8-neighbours) and are not its own.

    Parameters
    ----------
    event_of : (M,) ndarray of int64
        Event id (>= 0) of each event pixel.
    event_flat : (M,) ndarray of int64
        Flat index ``row x width + col`` of each event pixel.
    height, width : int
        Image shape, px.

    Returns
    -------
    keys : (R,) ndarray of int64
        Ascending: by event, then by flat index (``np.unique`` of the keys).
    """
    m = event_of.size
    size = height * width
    order = np.argsort(event_of * size + event_flat)
    out = np.empty(8 * m, dtype=np.int64)
    n = 0
    i = 0
    while i < m:
        event = event_of[order[i]]
        j = i
        while j < m and event_of[order[j]] == event:
            j += 1
        start = n
        for q in range(i, j):
            f = event_flat[order[q]]
            r, c = f // width, f % width
            for dr in range(-1, 2):
                rr = r + dr
                if rr < 0 or rr >= height:
                    continue
                for dc in range(-1, 2):
                    cc = c + dc
                    if (dr == 0 and dc == 0) or cc < 0 or cc >= width:
                        continue
                    p = rr * width + cc
                    own = False
                    for q2 in range(i, j):
                        if event_flat[order[q2]] == p:
                            own = True
                            break
                    if not own:
                        out[n] = event * size + p
                        n += 1
        if n > start:  # this event's keys ascending, each once
            seg = np.sort(out[start:n])
            kept = 1
            out[start] = seg[0]
            for q in range(1, seg.size):
                if seg[q] != seg[q - 1]:
                    out[start + kept] = seg[q]
                    kept += 1
            n = start + kept
        i = j
    return out[:n].copy()


@_jit
def list_neighbours(flat_index, width):
    """List positions of each pixel's 8-neighbours in a sorted list of flat pixel indices.

    Parameters
    ----------
    flat_index : (M,) ndarray of int64
        Flat indices ``row x width + col``, strictly ascending.
    width : int
        Row length, px.

    Returns
    -------
    neighbours : (M, 8) ndarray of int64
        Column ``q`` for the offset ``(drow, dcol)`` in the order (-1, -1),
        (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1): the list
        position of that neighbour, -1 where the list does not hold it (or it
        lies across the row's ends).
    """
    m = flat_index.size
    out = np.full((m, 8), -1, dtype=np.int64)
    above = 0
    below = 0
    for k in range(m):
        f = flat_index[k]
        c = f % width
        while above < m and flat_index[above] < f - width - 1:
            above += 1
        j = above
        while j < m and flat_index[j] <= f - width + 1:
            dc = flat_index[j] - (f - width)
            if c + dc >= 0 and c + dc < width:
                out[k, 1 + dc] = j
            j += 1
        if k > 0 and flat_index[k - 1] == f - 1 and c >= 1:
            out[k, 3] = k - 1
        if k + 1 < m and flat_index[k + 1] == f + 1 and c + 1 < width:
            out[k, 4] = k + 1
        while below < m and flat_index[below] < f + width - 1:
            below += 1
        j = below
        while j < m and flat_index[j] <= f + width + 1:
            dc = flat_index[j] - (f + width)
            if c + dc >= 0 and c + dc < width:
                out[k, 6 + dc] = j
            j += 1
    return out


@_jit
def ascent_roots(neighbours, rank, comp_of):
    """The list position of the maximum that a steepest ascent reaches from each pixel.

    Each pixel steps to its neighbour (in the list and in its component) of
    the highest rank when that is above its own, until none is.

    Parameters
    ----------
    neighbours : (M, 8) ndarray of int64
        :func:`list_neighbours` of the pixels.
    rank : (M,) ndarray of int64
        A permutation of 0..M-1: the ascent order (higher: higher up).
    comp_of : (M,) ndarray of int64
        Component of each pixel.

    Returns
    -------
    root : (M,) ndarray of int64
    """
    m = rank.size
    step = np.empty(m, dtype=np.int64)
    for k in range(m):
        best, best_rank = k, rank[k]
        for q in range(8):
            j = neighbours[k, q]
            if j >= 0 and comp_of[j] == comp_of[k] and rank[j] > best_rank:
                best, best_rank = j, rank[j]
        step[k] = best
    by_rank = np.empty(m, dtype=np.int64)
    for k in range(m):
        by_rank[rank[k]] = k
    root = np.empty(m, dtype=np.int64)
    for r in range(m - 1, -1, -1):  # descending rank: a pixel's step is higher, its root already known
        k = by_rank[r]
        root[k] = k if step[k] == k else root[step[k]]
    return root


@_jit
def basin_contacts(neighbours, values, comp_of, basin):
    """Every pair of 8-adjacent pixels of one component in two basins: (lower basin, higher basin, lower value).

    Each adjacent pair is taken once (the neighbour to the right and the three below).

    Parameters
    ----------
    neighbours : (M, 8) ndarray of int64
        :func:`list_neighbours` of the pixels.
    values : (M,) ndarray of float64
        The pixels' values.
    comp_of, basin : (M,) ndarray of int64
        Component and basin of each pixel.

    Returns
    -------
    lo, hi : (P,) ndarray of int64
        The two basins, ``lo < hi``.
    saddle : (P,) ndarray of float64
        The lower of the two pixels' values.
    """
    m = values.size
    lo = np.empty(4 * m, dtype=np.int64)
    hi = np.empty(4 * m, dtype=np.int64)
    saddle = np.empty(4 * m)
    n = 0
    for k in range(m):
        for q in range(4, 8):
            j = neighbours[k, q]
            if j < 0 or comp_of[j] != comp_of[k] or basin[j] == basin[k]:
                continue
            lo[n], hi[n] = min(basin[k], basin[j]), max(basin[k], basin[j])
            saddle[n] = min(values[k], values[j])
            n += 1
    return lo[:n].copy(), hi[:n].copy(), saddle[:n].copy()


@_jit
def window_excess(frame, bad, seed_rows, seed_cols, mean, half):
    """Counts above ``mean`` in the square window around each seed, and which window pixels count.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    bad : (H, W) ndarray of bool
        True = bad pixel, left out (a (0, 0) array: none).
    seed_rows, seed_cols : (K,) ndarray of int64
        The windows' centres, px.
    mean : (K,) ndarray of float64
        The background mean subtracted in each window, counts/px.
    half : int
        Half the window's side: the window is ``2 half + 1`` px square.

    Returns
    -------
    excess : (K, (2 half + 1)**2) ndarray of float64
        ``frame - mean``, row-major over the window; 0 where left out.
    good : (K, (2 half + 1)**2) ndarray of bool
        False for pixels outside the frame or bad.
    """
    h, w = frame.shape
    side = 2 * half + 1
    k = seed_rows.size
    use_bad = bad.shape[0] > 0
    excess = np.zeros((k, side * side))
    good = np.zeros((k, side * side), dtype=np.bool_)
    for i in range(k):
        for a in range(side):
            r = seed_rows[i] + a - half
            if r < 0 or r >= h:
                continue
            for b in range(side):
                c = seed_cols[i] + b - half
                if c < 0 or c >= w or (use_bad and bad[r, c]):
                    continue
                good[i, a * side + b] = True
                excess[i, a * side + b] = frame[r, c] - mean[i]
    return excess, good


@_jit
def clear_of(occupied, rows, cols, height, width, reach):
    """Whether no pixel of a sorted list lies within ``reach`` px (Chebyshev) of each position.

    Parameters
    ----------
    occupied : (M,) ndarray of int64
        Flat indices ``row x width + col``, ascending.
    rows, cols : (K,) ndarray of int64
        Positions, px.
    height, width : int
        Frame shape, px.
    reach : int
        Half-side of the square searched, px.

    Returns
    -------
    clear : (K,) ndarray of bool
    """
    k = rows.size
    m = occupied.size
    clear = np.ones(k, dtype=np.bool_)
    for i in range(k):
        c0, c1 = max(cols[i] - reach, 0), min(cols[i] + reach, width - 1)
        for r in range(max(rows[i] - reach, 0), min(rows[i] + reach, height - 1) + 1):
            pos = np.searchsorted(occupied, r * width + c0)
            if pos < m and occupied[pos] <= r * width + c1:
                clear[i] = False
                break
    return clear


@_jit
def box_rings(frame, bad, top, left, height, width, margin, median):
    """Median or mean of the good pixels on the border of each box grown by ``margin`` px (NaN: none).

    The border of a box clipped to the frame is its first and last row
    (every column), then its first and last column (the rows between); a box
    one row or one column thick is its own border.  The mean sums the pixels
    in that order.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    bad : (H, W) ndarray of bool
        True = bad pixel, left out (a (0, 0) array: none).
    top, left, height, width : (K,) ndarray of int64
        Boxes, px.
    margin : int
        Distance of the ring from each box, px.
    median : bool
        The median (else the mean).

    Returns
    -------
    values : (K,) ndarray of float64
        Counts per pixel.
    """
    h, w = frame.shape
    use_bad = bad.shape[0] > 0
    k = top.size
    out = np.full(k, np.nan)
    for i in range(k):
        r0, r1 = max(top[i] - margin, 0), min(top[i] + height[i] + margin, h)
        c0, c1 = max(left[i] - margin, 0), min(left[i] + width[i] + margin, w)
        nr, nc = r1 - r0, c1 - c0
        if nr < 1 or nc < 1:
            continue
        buf = np.empty(2 * (nr + nc))
        n = 0
        for side in range(2 if nr >= 2 else 1):
            r = r0 if side == 0 else r1 - 1
            for c in range(c0, c1):
                if not (use_bad and bad[r, c]):
                    buf[n] = frame[r, c]
                    n += 1
        if nr >= 3:
            for side in range(2 if nc >= 2 else 1):
                c = c0 if side == 0 else c1 - 1
                for r in range(r0 + 1, r1 - 1):
                    if not (use_bad and bad[r, c]):
                        buf[n] = frame[r, c]
                        n += 1
        if n == 0:
            continue
        if median:
            v = np.sort(buf[:n])
            out[i] = 0.5 * (v[(n - 1) // 2] + v[n // 2])
        else:
            total = 0.0
            for q in range(n):
                total += buf[q]
            out[i] = total / n
    return out


@_jit
def pixels_above_tiles(frame, thresholds, tile, bad):
    """Flat indices of the good pixels above their tile's threshold, ascending.

    Parameters
    ----------
    frame : (H, W) ndarray of float32 or float64
        Corrected frame, counts.
    thresholds : (TY, TX) ndarray of the frame's type
        Threshold of each ``tile x tile`` block (TY = ceil(H / tile), TX = ceil(W / tile)), counts.
    tile : int
        Tile side, px.
    bad : (H, W) ndarray of bool
        True = bad pixel, never listed (a (0, 0) array: none).

    Returns
    -------
    flat_index : (M,) ndarray of int64
        ``row x W + col`` of every pixel with ``frame > threshold`` of its
        tile (NaN never passes) and not bad, ascending.
    """
    h, w = frame.shape
    use_bad = bad.shape[0] > 0
    capacity = 4096
    out = np.empty(capacity, dtype=np.int64)
    n = 0
    for r in range(h):
        row = frame[r]
        row_thresholds = thresholds[r // tile]
        for j in range(row_thresholds.size):
            t = row_thresholds[j]
            c0 = j * tile
            c1 = min(c0 + tile, w)
            segment = row[c0:c1]
            hit = np.uint8(0)
            for k in range(segment.size):  # no branch, indices from 0: vectorised
                hit |= np.uint8(segment[k] > t)
            if hit == 0:
                continue
            if n + (c1 - c0) > capacity:
                capacity = max(2 * capacity, n + (c1 - c0))
                grown = np.empty(capacity, dtype=np.int64)
                grown[:n] = out[:n]
                out = grown
            for c in range(c0, c1):
                if row[c] > t and not (use_bad and bad[r, c]):
                    out[n] = r * w + c
                    n += 1
    return out[:n].copy()


@_jit
def listed_tile_tests(frame, flat_index, tile, first, second):
    """The values of listed pixels and whether each is above its tile's value in two tile maps, in one pass.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    flat_index : (M,) ndarray of int64
        Flat indices ``row x W + col`` of the pixels, ascending.
    tile : int
        Tile side, px.
    first, second : (TY, TX) ndarray of float64
        Tile maps, counts.

    Returns
    -------
    values : (M,) ndarray of float64
        ``frame.ravel()[flat_index]``.
    above_first, above_second : (M,) ndarray of bool
        ``values > first[row // tile, col // tile]`` and the same for ``second``
        (compared in float64; NaN is above nothing).

    Notes
    -----
    The list is ascending, so a pixel's tile is followed from the last one
    (a new row: the tile row and first tile column again; along a row: the
    next tile columns) instead of two integer divisions per pixel.
    """
    h, w = frame.shape
    m = flat_index.size
    values = np.empty(m)
    above_first = np.empty(m, dtype=np.bool_)
    above_second = np.empty(m, dtype=np.bool_)
    row_start = -1
    r = 0
    ty = 0
    tx = 0
    tile_end = 0
    for k in range(m):
        f = flat_index[k]
        if row_start < 0 or f < row_start or f >= row_start + w:
            r = f // w
            row_start = r * w
            ty = r // tile
            tx = 0
            tile_end = tile
        c = f - row_start
        if c < tile_end - tile:  # a step back along the row (the list not ascending): the tile column again
            tx = c // tile
            tile_end = (tx + 1) * tile
        while c >= tile_end:
            tx += 1
            tile_end += tile
        v = frame[r, c]
        values[k] = v
        above_first[k] = v > first[ty, tx]
        above_second[k] = v > second[ty, tx]
    return values, above_first, above_second


@_jit
def median3x3_tiles(maps):
    """Median over 3 x 3 tiles of each (TY, TX) map of a stack of finite values, edges repeated.

    Parameters
    ----------
    maps : (K, TY, TX) ndarray of float
        No NaN.

    Returns
    -------
    filtered : (K, TY, TX) ndarray
        The fifth smallest of the nine values of each 3 x 3 neighbourhood (rows
        and columns beyond the edges repeat the edge), the value of
        ``np.partition(..., 4)[..., 4]`` of the nine: a fixed network of 19
        compare-exchanges (A. W. Paeth, Graphics Gems, 1990), without branches.
    """
    k, ty, tx = maps.shape
    out = np.empty_like(maps)
    for m in range(k):
        for r in range(ty):
            r0, r2 = max(r - 1, 0), min(r + 1, ty - 1)
            for c in range(tx):
                c0, c2 = max(c - 1, 0), min(c + 1, tx - 1)
                p0, p1, p2 = maps[m, r0, c0], maps[m, r0, c], maps[m, r0, c2]
                p3, p4, p5 = maps[m, r, c0], maps[m, r, c], maps[m, r, c2]
                p6, p7, p8 = maps[m, r2, c0], maps[m, r2, c], maps[m, r2, c2]
                p1, p2 = min(p1, p2), max(p1, p2)
                p4, p5 = min(p4, p5), max(p4, p5)
                p7, p8 = min(p7, p8), max(p7, p8)
                p0, p1 = min(p0, p1), max(p0, p1)
                p3, p4 = min(p3, p4), max(p3, p4)
                p6, p7 = min(p6, p7), max(p6, p7)
                p1, p2 = min(p1, p2), max(p1, p2)
                p4, p5 = min(p4, p5), max(p4, p5)
                p7, p8 = min(p7, p8), max(p7, p8)
                p3 = max(p0, p3)
                p5 = min(p5, p8)
                p4, p7 = min(p4, p7), max(p4, p7)
                p6 = max(p3, p6)
                p4 = max(p1, p4)
                p2 = min(p2, p5)
                p4 = min(p4, p7)
                p4, p2 = min(p4, p2), max(p4, p2)
                p4 = max(p6, p4)
                out[m, r, c] = min(p4, p2)
    return out


@_jit
def sampled_zeros(frame, bad, step):
    """Good pixels, and those exactly 0, among every ``step``-th pixel of every ``step``-th row.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    bad : (H, W) ndarray of bool
        True = bad pixel, not counted (a (0, 0) array: none).
    step : int
        Sampling step, px.

    Returns
    -------
    n_good, n_zero : int
        ``frame[::step, ::step]`` pixels not bad, and those of them equal to 0.
    """
    h, w = frame.shape
    use_bad = bad.shape[0] > 0
    n_good = 0
    n_zero = 0
    for r in range(0, h, step):
        row = frame[r]
        for c in range(0, w, step):
            if use_bad and bad[r, c]:
                continue
            n_good += 1
            n_zero += row[c] == 0
    return n_good, n_zero


@_jit
def clip_deviations(dev, distance, limit):
    """Set to 0 the deviations whose distance is not within each row's limit, and count those left.

    Parameters
    ----------
    dev : (N, M) ndarray of float32
        Deviations of each tile's samples from its level, counts (changed in place).
    distance : (N, M) ndarray of float32
        Their absolute values (NaN: a missing sample).
    limit : (N,) ndarray of float32
        Clipping distance of each tile, counts.

    Returns
    -------
    n_in : (N,) ndarray of int64
        Samples with ``distance <= limit`` per tile (the others, NaN among
        them, are now 0 in ``dev``).
    """
    n, m = dev.shape
    n_in = np.empty(n, dtype=np.int64)
    for i in range(n):
        lim = limit[i]
        count = 0
        row = dev[i]
        far = distance[i]
        for q in range(m):  # no branch: vectorised
            inside = far[q] <= lim
            count += np.int64(inside)
            row[q] = row[q] if inside else np.float32(0.0)
        n_in[i] = count
    return n_in


#: the widest range of whole counts (largest - smallest sample) a tile's histogram covers
COUNTED_RANGE = 32767


@_jit
def _middle_pair(hist, offset, size, k):
    """The k-1-th and k-th smallest (0-based) of the values counted in ``hist[:size]`` (value = index + offset)."""
    seen = 0
    below = offset
    for q in range(size):
        seen += hist[q]
        if seen >= k:  # the k-1-th smallest is here (k >= 1)
            below = q + offset
            break
    if seen >= k + 1:
        return below, below
    for q2 in range(below - offset + 1, size):
        if hist[q2] > 0:
            return below, q2 + offset
    return below, below


@_jit
def _clear(hist, values, offset, size):
    """Zero the histogram bins of ``values`` (bin = value - offset): the first ``size`` bins, or the values' own."""
    if size <= values.size:
        hist[:size] = 0
    else:
        for q in range(values.size):
            hist[values[q] - offset] = 0


@_jit
def _whole_counts(row, whole):
    """Whether every value of ``row`` is a whole number below 2**22 in magnitude (not -0.0), with them in ``whole``.

    Returns ``(good, smallest, largest)``.
    """
    outside = np.uint8(0)
    for q in range(row.size):  # no branch: vectorised
        v = row[q]
        outside |= np.uint8(not (abs(v) < 4194304.0))  # 2**22 (NaN is outside too)
    if outside:
        return False, 0, 0
    lo = np.int64(row[0])
    hi = lo
    mismatch = np.uint8(0)
    for q in range(row.size):
        v = row[q]
        w = np.int64(v)
        whole[q] = w
        mismatch |= np.uint8(np.float32(w) != v) | np.uint8((w == 0) & (math.copysign(1.0, v) < 0))
        lo = min(lo, w)
        hi = max(hi, w)
    return mismatch == 0, lo, hi


@_jit
def counted_medians(blocks):
    """Median and median absolute deviation of each row of float32 samples that are all whole counts.

    Parameters
    ----------
    blocks : (N, M) ndarray of float32
        Samples of each tile, counts.

    Returns
    -------
    level, mad : (N,) ndarray of float32
        ``median_last`` of each row and of its absolute deviations from that
        median, for the rows marked ``ok`` (their order statistics are the
        same values; the middle two averaged as ``(a + b) / 2`` in float32).
    ok : (N,) ndarray of bool
        Rows whose samples are all whole numbers below 2**22 in magnitude
        spanning at most :data:`COUNTED_RANGE` (NaN and -0.0: not ok); other
        rows are left to a partition.
    """
    n, m = blocks.shape
    level = np.zeros(n, dtype=np.float32)
    mad = np.zeros(n, dtype=np.float32)
    ok = np.zeros(n, dtype=np.bool_)
    if m == 0:
        return level, mad, ok
    k = m // 2
    hist = np.zeros(2 * COUNTED_RANGE + 2, dtype=np.int32)
    whole = np.empty(m, dtype=np.int64)
    for i in range(n):
        good, lo, hi = _whole_counts(blocks[i], whole)
        if not good or hi - lo > COUNTED_RANGE:
            continue
        for q in range(m):
            hist[whole[q] - lo] += 1
        a, b = _middle_pair(hist, lo, hi - lo + 1, k)
        _clear(hist, whole, lo, hi - lo + 1)
        if m % 2:
            med = np.float32(b)
            twice = 2 * b
        else:
            med = (np.float32(a) + np.float32(b)) / np.float32(2.0)
            twice = a + b
        # |sample - median| = |2 sample - (a + b)| / 2, a whole number of half counts
        top = 0
        for q in range(m):
            t = abs(2 * whole[q] - twice)
            whole[q] = t
            if t > top:
                top = t
        for q in range(m):
            hist[whole[q]] += 1
        a2, b2 = _middle_pair(hist, np.int64(0), top + 1, k)
        _clear(hist, whole, np.int64(0), top + 1)
        if m % 2:
            spread = np.float32(b2) / np.float32(2.0)
        else:
            spread = (np.float32(a2) / np.float32(2.0) + np.float32(b2) / np.float32(2.0)) / np.float32(2.0)
        level[i] = med
        mad[i] = spread
        ok[i] = True
    return level, mad, ok
