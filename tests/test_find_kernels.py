"""The finder's compiled kernels against the NumPy/SciPy formulations they stand for, and known answers."""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from braggflow._stats import median_last
from braggflow.find._kernels import (
    ascent_roots,
    basin_contacts,
    best_spot_fits,
    best_spot_fits_until,
    box_rings,
    clear_of,
    clip_deviations,
    counted_medians,
    event_ring_keys,
    list_local_maxima,
    list_neighbours,
    listed_tile_tests,
    sampled_zeros,
    sparse_component_labels,
    window_excess,
)
from braggflow.find.components import neighbour_positions

OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def random_pixels(rng, h, w, fraction):
    """Sorted flat indices of a random set of pixels, with the first and last columns well represented."""
    img = rng.random((h, w)) < fraction
    img[:, 0] |= rng.random(h) < 0.5  # pixels at the row ends: a neighbour across the end is no neighbour
    img[:, -1] |= rng.random(h) < 0.5
    return np.flatnonzero(img).astype(np.int64)


def scipy_components(flat, w):
    """Components of the 8-neighbour graph by scipy: the numbering the kernel must reproduce."""
    h = int(flat.max()) // w + 1
    img = np.zeros((h, w), dtype=bool)
    img.ravel()[flat] = True
    pos = np.full(h * w, -1)
    pos[flat] = np.arange(flat.size)
    src, dst = [], []
    r, c = np.divmod(flat, w)
    for dr, dc in OFFSETS:
        rr, cc = r + dr, c + dc
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        ok[ok] = img[rr[ok], cc[ok]]
        src.append(np.flatnonzero(ok))
        dst.append(pos[rr[ok] * w + cc[ok]])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(flat.size, flat.size))
    n, labels = connected_components(graph, directed=False)
    return labels + 1, n


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6])
def test_components_number_as_scipy_does(fraction):
    rng = np.random.default_rng(int(fraction * 100))
    for _ in range(5):
        h, w = rng.integers(3, 40, size=2)
        flat = random_pixels(rng, h, w, fraction)
        labels, n = sparse_component_labels(flat, int(w))
        want, n_want = scipy_components(flat, int(w))
        assert n == n_want
        np.testing.assert_array_equal(labels, want)


def test_components_known_answer():
    w = 5
    # (0, 4) and (1, 0) follow each other in the list but lie at opposite ends of their rows: not neighbours;
    # (1, 0) and (2, 1) touch at a corner: one component; (4, 4) alone
    flat = np.array([0 * w + 4, 1 * w + 0, 2 * w + 1, 4 * w + 4], dtype=np.int64)
    labels, n = sparse_component_labels(flat, w)
    assert n == 3
    np.testing.assert_array_equal(labels, [1, 2, 2, 3])


def numpy_local_maxima(values, flat, frame):
    """>= every later neighbour, > every earlier one; outside the frame -inf."""
    h, w = frame.shape
    padded = np.full((h + 2, w + 2), -np.inf)
    padded[1:-1, 1:-1] = frame
    r, c = np.divmod(flat, w)
    is_max = np.ones(flat.size, dtype=bool)
    for dr, dc in OFFSETS:
        nb = padded[r + 1 + dr, c + 1 + dc]
        is_max &= values > nb if (dr, dc) < (0, 0) else values >= nb
    return is_max


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_local_maxima_match_the_neighbour_comparisons(dtype):
    rng = np.random.default_rng(3)
    for _ in range(5):
        frame = rng.integers(0, 4, size=rng.integers(2, 30, size=2)).astype(dtype)  # many plateaus
        flat = random_pixels(rng, *frame.shape, 0.5)
        values = frame.ravel()[flat].astype(np.float64)
        np.testing.assert_array_equal(list_local_maxima(values, flat, frame), numpy_local_maxima(values, flat, frame))


def test_local_maxima_one_per_plateau_at_its_first_pixel():
    frame = np.zeros((4, 5), dtype=np.float32)
    frame[1, 1:3] = 7.0  # a plateau of two pixels
    frame[3, 4] = 2.0  # a maximum in the frame's corner
    flat = np.array([6, 7, 19], dtype=np.int64)
    np.testing.assert_array_equal(list_local_maxima(frame.ravel()[flat].astype(np.float64), flat, frame),
                                  [True, False, True])


def test_best_spot_fits_match_the_dense_products():
    rng = np.random.default_rng(5)
    n, p, t = 40, 49, 30
    templates = rng.random((p, t))
    x = rng.normal(0.0, 3.0, size=(n, p))
    inv_var = rng.random((n, p)) * (rng.random((n, p)) < 0.4)  # most window pixels left out (weight 0)
    cross = (x * inv_var) @ templates
    norm = inv_var @ templates**2
    want = np.max(np.clip(cross, 0.0, None) ** 2 / np.maximum(norm, 1e-300), axis=1)
    np.testing.assert_allclose(best_spot_fits(x * inv_var, inv_var, templates, templates**2), want, rtol=1e-12)


def test_best_spot_fits_until_decides_as_the_full_search():
    # events whose chi2 - best exceeds the limit get the full search's value bit for bit; the others a value
    # between the full search's and the one that brings chi2 - best to the limit
    rng = np.random.default_rng(7)
    n, p, t = 200, 49, 90
    templates = rng.random((p, t))
    x = rng.normal(0.0, 3.0, size=(n, p))
    x[: n // 2] += 8.0 * templates[:, rng.integers(0, t, n // 2)].T  # half of them drawn by a template
    inv_var = rng.random((n, p)) * (rng.random((n, p)) < 0.5)
    chi2 = (x * x * inv_var).sum(axis=1) * rng.uniform(0.5, 1.0, n)
    limit = 8.0
    full = best_spot_fits(x * inv_var, inv_var, templates, templates**2)
    for block in (1, 7, 30, 90, 200):
        fast = best_spot_fits_until(x * inv_var, inv_var, templates, templates**2, chi2, limit, block)
        undecided = chi2 - full > limit
        np.testing.assert_array_equal(chi2 - fast > limit, undecided)
        np.testing.assert_array_equal(fast[undecided], full[undecided])
        assert np.all(fast <= full) and np.all(chi2[~undecided] - fast[~undecided] <= limit)
    assert 0 < undecided.sum() < n  # both kinds of event occur


def test_best_spot_fit_of_a_template_itself_is_its_chi2():
    # the data equal to 5 x template k, unit variances: the best projection is 25 sum g_k^2 (a perfect fit)
    rng = np.random.default_rng(6)
    templates = rng.random((9, 4))
    x = 5.0 * templates[:, 2]
    inv_var = np.ones((1, 9))
    best = best_spot_fits(x[None, :], inv_var, templates, templates**2)
    assert best[0] >= 25.0 * (templates[:, 2] ** 2).sum() * (1 - 1e-12)
    assert best[0] <= (x**2).sum() * (1 + 1e-12)  # no projection exceeds the data's own chi2 (Cauchy-Schwarz)


def numpy_ring_keys(ev_reg, ev_flat, h, w):
    r, c = np.divmod(ev_flat, w)
    rr = r[:, None] + np.array([dr for dr, _ in OFFSETS])
    cc = c[:, None] + np.array([dc for _, dc in OFFSETS])
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    key = np.unique((ev_reg[:, None] * (h * w) + rr * w + cc)[inside])
    own = ev_reg * (h * w) + ev_flat
    return key[~np.isin(key, own)]


def test_event_ring_keys_are_the_unique_neighbours_outside_the_events():
    rng = np.random.default_rng(7)
    h, w = 12, 9
    for _ in range(20):
        n_ev = rng.integers(1, 6)
        ev_reg = np.repeat(rng.choice(50, n_ev, replace=False), rng.integers(1, 5, n_ev)).astype(np.int64)
        start = rng.integers(0, h * w, size=ev_reg.size)
        ev_flat = np.clip(start, 0, h * w - 1).astype(np.int64)
        order = rng.permutation(ev_reg.size)  # any order of the event pixels
        got = event_ring_keys(ev_reg[order], ev_flat[order], h, w)
        np.testing.assert_array_equal(got, numpy_ring_keys(ev_reg, ev_flat, h, w))


def test_event_ring_of_a_corner_pixel_has_three_pixels():
    h, w = 4, 4
    keys = event_ring_keys(np.array([2], dtype=np.int64), np.array([0], dtype=np.int64), h, w)
    np.testing.assert_array_equal(keys, 2 * h * w + np.array([1, 4, 5]))


def test_list_neighbours_agree_with_binary_searches():
    rng = np.random.default_rng(8)
    for _ in range(5):
        h, w = rng.integers(3, 30, size=2)
        flat = random_pixels(rng, h, w, 0.4)
        table = list_neighbours(flat, int(w))
        positions = neighbour_positions(flat, int(w))
        cols = flat % w
        for q, (dr, dc) in enumerate(OFFSETS):
            pos = positions[dr, dc]
            hit = (flat[pos] == flat + dr * w + dc) & (cols + dc >= 0) & (cols + dc < w)
            np.testing.assert_array_equal(table[:, q], np.where(hit, pos, -1))


def numpy_ascent(table, rank, comp):
    best = np.arange(rank.size)
    for k in range(rank.size):
        cand = [j for j in table[k] if j >= 0 and comp[j] == comp[k]] + [k]
        best[k] = max(cand, key=lambda j: rank[j])
    root = best
    while not np.array_equal(root[root], root):
        root = root[root]
    return root


def test_ascent_roots_follow_the_highest_neighbour_to_a_maximum():
    rng = np.random.default_rng(9)
    for _ in range(5):
        h, w = rng.integers(3, 25, size=2)
        flat = random_pixels(rng, h, w, 0.6)
        values = rng.integers(0, 5, flat.size).astype(np.float64)
        rank = np.empty(flat.size, dtype=np.int64)
        rank[np.lexsort((-flat, values))] = np.arange(flat.size)
        comp, _ = sparse_component_labels(flat, int(w))
        table = list_neighbours(flat, int(w))
        root = ascent_roots(table, rank, comp)
        np.testing.assert_array_equal(root, numpy_ascent(table, rank, comp))
        # a root is a maximum of its component's neighbourhood and shares the pixel's component
        assert (comp[root] == comp).all()
        assert (root[root] == root).all()


def test_basin_contacts_list_each_touching_pair_once():
    w = 6
    # one component of two basins: rows 0 (basin 0) and 1 (basin 1), columns 0-2
    flat = np.array([0, 1, 2, 6, 7, 8], dtype=np.int64)
    values = np.array([5.0, 4.0, 3.0, 1.0, 2.0, 6.0])
    basin = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)
    comp = np.ones(6, dtype=np.int64)
    lo, hi, saddle = basin_contacts(list_neighbours(flat, w), values, comp, basin)
    # the 7 touching pairs across the rows: (0,6) (0,7) (1,6) (1,7) (1,8) (2,7) (2,8)
    assert lo.size == 7
    assert (lo == 0).all() and (hi == 1).all()
    np.testing.assert_array_equal(np.sort(saddle), np.sort([1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 3.0]))


def test_window_excess_is_the_frame_minus_the_mean_inside_the_frame_and_off_the_mask():
    rng = np.random.default_rng(10)
    frame = rng.normal(5.0, 2.0, size=(9, 11)).astype(np.float32)
    mask = rng.random(frame.shape) < 0.2
    rows = np.array([0, 4, 8, 2], dtype=np.int64)  # at the frame's edges and inside
    cols = np.array([0, 5, 10, 9], dtype=np.int64)
    mean = np.array([1.0, 2.0, 3.0, 4.5])
    excess, good = window_excess(frame, mask, rows, cols, mean, 2)
    padded = np.full((13, 15), np.nan)
    padded[2:-2, 2:-2] = np.where(mask, np.nan, frame.astype(np.float64))
    for i, (r, c) in enumerate(zip(rows, cols)):
        window = padded[r : r + 5, c : c + 5].ravel()
        np.testing.assert_array_equal(good[i], np.isfinite(window))
        np.testing.assert_array_equal(excess[i], np.where(np.isfinite(window), window - mean[i], 0.0))
    _, no_mask = window_excess(frame, np.zeros((0, 0), dtype=bool), rows, cols, mean, 2)
    assert no_mask[1].all() and no_mask[0].sum() == 9  # a corner keeps the 3 x 3 pixels inside the frame


def test_clear_of_finds_a_pixel_within_reach():
    h, w = 20, 20
    occupied = np.array([5 * w + 5, 12 * w + 19], dtype=np.int64)
    rows = np.array([7, 8, 5, 14, 10], dtype=np.int64)
    cols = np.array([7, 5, 2, 17, 17], dtype=np.int64)
    # Chebyshev distances to the nearest occupied pixel: 2, 3, 3, 2, 2
    np.testing.assert_array_equal(clear_of(occupied, rows, cols, h, w, 2), [False, True, True, False, False])
    rng = np.random.default_rng(11)
    occupied = np.unique(rng.integers(0, h * w, 15)).astype(np.int64)
    r, c = rng.integers(0, h, 50).astype(np.int64), rng.integers(0, w, 50).astype(np.int64)
    orow, ocol = np.divmod(occupied, w)
    near = (np.abs(r[:, None] - orow) <= 2) & (np.abs(c[:, None] - ocol) <= 2)
    np.testing.assert_array_equal(clear_of(occupied, r, c, h, w, 2), ~near.any(axis=1))


def numpy_ring_values(frame, mask, top, left, height, width, margin):
    """Each box's ring pixels by a direct loop: the border of the grown box, clipped to the frame, unmasked."""
    h, w = frame.shape
    out = []
    for t, lf, ht, wd in zip(top, left, height, width):
        r0, r1 = max(t - margin, 0), min(t + ht + margin, h)
        c0, c1 = max(lf - margin, 0), min(lf + wd + margin, w)
        ring = np.zeros((h, w), dtype=bool)
        ring[r0:r1, c0:c1] = True
        ring[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = False
        if mask is not None:
            ring &= ~mask
        out.append(frame[ring].astype(np.float64))
    return out


def test_box_rings_median_and_mean_of_the_ring_pixels():
    rng = np.random.default_rng(12)
    frame = rng.normal(10.0, 3.0, size=(30, 25)).astype(np.float32)
    mask = rng.random(frame.shape) < 0.1
    top = rng.integers(0, 30, 40).astype(np.int64)
    left = rng.integers(0, 25, 40).astype(np.int64)
    height = rng.integers(1, 6, 40).astype(np.int64)
    width = rng.integers(1, 6, 40).astype(np.int64)
    for margin in (0, 1, 3):
        for m in (mask, None):
            bad = np.zeros((0, 0), dtype=bool) if m is None else m
            rings = numpy_ring_values(frame, m, top, left, height, width, margin)
            medians = box_rings(frame, bad, top, left, height, width, margin, True)
            means = box_rings(frame, bad, top, left, height, width, margin, False)
            np.testing.assert_array_equal(medians, [np.median(v) if v.size else np.nan for v in rings])
            np.testing.assert_allclose(means, [v.mean() if v.size else np.nan for v in rings], rtol=1e-12)


def test_box_ring_of_a_pixel_with_margin_one_is_its_eight_neighbours():
    frame = np.arange(25, dtype=np.float32).reshape(5, 5)
    one = np.array([2], dtype=np.int64)
    median = box_rings(frame, np.zeros((0, 0), dtype=bool), one, one, one // 2, one // 2, 1, True)
    assert median[0] == 12.0  # the neighbours of 12: 6 7 8 11 13 16 17 18, median (11 + 13) / 2


def test_clip_deviations_zeroes_the_samples_beyond_each_limit():
    rng = np.random.default_rng(8)
    dev = rng.normal(0, 4, (50, 64)).astype(np.float32)
    dev[3, :10] = np.nan  # missing samples: always outside
    distance = np.abs(dev)
    limit = rng.uniform(2, 8, 50).astype(np.float32)
    limit[7] = distance[7, 5]  # a sample exactly at the limit stays
    with np.errstate(invalid="ignore"):
        outside = ~(distance <= limit[:, None])
    expected = np.where(outside, np.float32(0), dev)
    n_in = clip_deviations(dev, distance, limit)
    assert np.array_equal(dev, expected) and np.array_equal(n_in, 64 - outside.sum(axis=1))
    assert dev[7, 5] != 0 and n_in[3] <= 54


def test_sampled_zeros_counts_the_good_pixels_of_the_grid():
    rng = np.random.default_rng(9)
    for h, w, step in ((20, 30, 7), (7, 7, 7), (15, 4, 2), (1, 9, 3)):
        frame = np.where(rng.random((h, w)) < 0.6, 0.0, rng.normal(5, 1, (h, w)))
        bad = rng.random((h, w)) < 0.3
        good = ~bad[::step, ::step]
        assert sampled_zeros(frame, bad, step) == (good.sum(), (frame[::step, ::step][good] == 0).sum())
        assert sampled_zeros(frame, np.zeros((0, 0), bool), step) == (frame[::step, ::step].size,
                                                                      (frame[::step, ::step] == 0).sum())


def test_counted_medians_are_the_partitions_medians_on_whole_counts():
    rng = np.random.default_rng(10)
    for m in (256, 255, 16, 3, 2, 1):
        blocks = np.concatenate([
            rng.poisson(rng.uniform(0.1, 80, (40, 1)), (40, m)),  # counts, many ties
            rng.integers(-60, 60, (10, m)),  # dark-subtracted counts
            np.where(rng.random((10, m)) < 0.05, 30000, rng.poisson(4, (10, m))),  # a bright peak in the tile
            rng.integers(-(2**21), 2**21, (5, m)),
        ]).astype(np.float32)
        level, mad, ok = counted_medians(blocks)
        wide = blocks.max(axis=1) - blocks.min(axis=1) > 32767
        assert np.array_equal(ok, ~wide)
        expected = median_last(blocks)
        spread = median_last(np.abs(blocks - expected[:, None]))
        assert np.array_equal(level[ok], expected[ok]) and np.array_equal(mad[ok], spread[ok])
        assert level.dtype == mad.dtype == np.float32
    # rows that are not whole counts below 2**22 are left to the partition
    odd = np.array([[1.0, 2.5, 3.0], [1.0, np.nan, 2.0], [0.0, -0.0, 1.0], [2.0**22, 1.0, 2.0], [1.0, 2.0, 2.0]],
                   dtype=np.float32)
    assert counted_medians(odd)[2].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("ascending", [True, False])
def test_listed_tile_tests_equal_numpy(dtype, ascending):
    """Values and both tile comparisons of listed pixels (tiles of 7 px over a 40 x 53 frame, the last tile
    row and column partial; values equal to a threshold; a NaN) against NumPy's gather and comparisons."""
    rng = np.random.default_rng(5)
    h, w, tile = 40, 53, 7
    frame = rng.integers(0, 30, (h, w)).astype(dtype)
    first = rng.integers(5, 25, (-(-h // tile), -(-w // tile))).astype(np.float64)
    second = first + rng.choice([-0.5, 0.0, 2.0], first.shape)
    if frame.dtype.kind == "f":
        frame[3, 4] = np.nan
    flat = random_pixels(rng, h, w, 0.4)
    flat = np.append(flat, 3 * w + 4)  # the NaN pixel, out of order
    if not ascending:
        flat = rng.permutation(flat)
    values, above_first, above_second = listed_tile_tests(frame, flat, tile, first, second)
    rows, cols = np.divmod(flat, w)
    expected = frame.ravel()[flat]
    np.testing.assert_array_equal(values, expected.astype(np.float64))
    np.testing.assert_array_equal(above_first, expected > first[rows // tile, cols // tile])
    np.testing.assert_array_equal(above_second, expected > second[rows // tile, cols // tile])
    assert above_first.any() and not above_first.all()
