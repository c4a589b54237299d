"""The finder's pixel-list primitives: the threshold comparison in the frame's type, local maxima, tile medians."""

import numpy as np
from scipy import ndimage

from braggflow.find.background import Background, _median3x3
from braggflow.find.components import local_maxima, neighbour_positions, pixels_above_threshold, same_comparison


def test_float32_thresholds_split_float32_values_as_the_float64_ones_do():
    rng = np.random.default_rng(0)
    thresholds = np.concatenate([rng.normal(50, 20, 300), [0.1, 1 / 3, 2.0**-30, 1e30, 7.0]])
    values = rng.normal(50, 20, 20_000).astype(np.float32)
    # the float32 values next to each threshold, where rounding the threshold could go wrong
    near = thresholds.astype(np.float32)
    values = np.concatenate([values, near, np.nextafter(near, np.float32(np.inf)),
                             np.nextafter(near, np.float32(-np.inf))])
    for t in thresholds:
        narrow = same_comparison(np.float64(t), np.float32)
        assert narrow.dtype == np.float32
        assert np.array_equal(values > narrow, values > np.float64(t))
    block = values[: 300 * 60].reshape(60, 300)
    assert np.array_equal(block > same_comparison(thresholds[:300], np.float32), block > thresholds[:300])
    assert same_comparison(thresholds, np.float64) is thresholds  # other frame types: unchanged


def test_pixels_above_threshold_are_those_above_their_tiles_threshold():
    rng = np.random.default_rng(3)
    for (h, w), tile, dtype in (((64, 96), 16, np.float32), ((37, 53), 8, np.float64), ((10, 70), 64, np.float32),
                                ((33, 33), 5, np.int32)):
        frame = rng.normal(50, 10, (h, w)).astype(dtype)
        if frame.dtype.kind == "f":
            frame[rng.random((h, w)) < 0.01] = np.nan  # never above
        mask = rng.random((h, w)) < 0.05
        ty, tx = -(-h // tile), -(-w // tile)
        thresholds = rng.normal(60, 5, (ty, tx))
        # some thresholds exactly at pixel values (the comparison is strict) and a tile with every pixel above
        thresholds[0, 0] = float(frame[0, 0]) if np.isfinite(frame[0, 0]) else 60.0
        thresholds[-1, -1] = -np.inf
        bg = Background(level=np.zeros((ty, tx)), noise=np.ones((ty, tx)), tile=tile, shape=(h, w))
        expanded = np.repeat(np.repeat(thresholds, tile, axis=0), tile, axis=1)[:h, :w]
        for m in (None, mask):
            above = frame > expanded if m is None else (frame > expanded) & ~m
            found = pixels_above_threshold(frame, bg, thresholds, m)
            assert found.dtype is np.dtype(np.int64)  # NumPy's own type object: ufunc.at on it stays fast
            assert np.array_equal(found, np.flatnonzero(above))


def _brute_force_maxima(frame: np.ndarray, index: np.ndarray) -> np.ndarray:
    """>= every 8-neighbour, > the earlier ones in raster order (one maximum per plateau); outside: -inf."""
    h, w = frame.shape
    out = []
    for k in index:
        r, c = divmod(int(k), w)
        ok = True
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) == (0, 0) or not (0 <= r + dr < h and 0 <= c + dc < w):
                    continue
                nb = frame[r + dr, c + dc]
                ok &= bool(frame[r, c] > nb) if (dr, dc) < (0, 0) else bool(frame[r, c] >= nb)
        out.append(ok)
    return np.array(out, dtype=bool)


def test_local_maxima_on_the_border_and_on_plateaus():
    rng = np.random.default_rng(1)
    for h, w in ((1, 7), (3, 3), (9, 13), (20, 5)):
        frame = rng.integers(0, 4, (h, w)).astype(np.float32)  # many ties: plateaus
        index = np.flatnonzero(rng.random(h * w) < 0.7)
        values = frame.ravel()[index].astype(np.float64)
        assert np.array_equal(local_maxima(values, index, frame), _brute_force_maxima(frame, index))


def test_tile_median_filter_is_scipys():
    rng = np.random.default_rng(2)
    shapes = [(4, 3, 3), (4, 32, 32), (2, 7, 11), (1, 1, 5), (3, 2, 2)]
    shapes += [(int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 20))) for _ in range(50)]
    for n, shape in enumerate(shapes):
        scale = (0.5, 3.0, 1e4)[n % 3]  # from many ties to none
        maps = np.round(rng.normal(size=shape) * scale).astype((np.float32, np.float64)[n % 2])
        if n % 4 < 2:
            maps += 0.0  # no -0.0: the compiled network
        expected = ndimage.median_filter(maps, size=(1, 3, 3), mode="nearest")
        got = _median3x3(maps)
        assert np.array_equal(got, expected)
        assert n % 4 >= 2 or not np.signbit(got[got == 0]).any()  # no -0.0 made up
    # maps with NaN: the fifth of the nine with NaN sorted last
    maps = np.round(rng.normal(size=(2, 6, 5)) * 3).astype(np.float32)
    maps[0, 2, 2] = maps[1, 0, :] = np.nan
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
    for m, r, c in np.ndindex(maps.shape):
        nine = np.sort(padded[m, r : r + 3, c : c + 3].ravel())
        assert np.array_equal(_median3x3(maps)[m, r, c], nine[4], equal_nan=True)


def test_neighbour_positions_find_every_neighbour_a_binary_search_finds():
    rng = np.random.default_rng(4)
    for h, w in ((1, 1), (1, 9), (6, 2), (15, 17)):
        index = np.flatnonzero(rng.random(h * w) < 0.5)
        if not index.size:
            continue
        positions = neighbour_positions(index, w)
        assert len(positions) == 8
        for (dr, dc), pos in positions.items():
            target = index + dr * w + dc
            expected = np.minimum(np.searchsorted(index, target), index.size - 1)
            hit = index[expected] == target
            assert np.array_equal(index[pos] == target, hit)
            assert np.array_equal(pos[hit], expected[hit])


def test_region_statistics_brightest_is_first_highest_pixel_of_each_region():
    """Per region id (those with pixels, in id order): the list position of the highest value, the first one on a
    tie; counts, net signal and noise from the pixels' excess over the tile level."""
    from braggflow.find.peaks import _region_statistics

    final = np.array([2, 0, 2, 2, 0, 4, 4, 0])
    values = np.array([5.0, 3.0, 7.0, 7.0, 3.0, 1.0, 2.0, 2.5])
    level = np.full(final.size, 1.0)
    stats = _region_statistics(final, 5, values, level, np.full(final.size, 2.0), 1.0)
    np.testing.assert_array_equal(stats["brightest"], [1, 2, 6])  # regions 0, 2, 4; regions 1 and 3 are empty
    np.testing.assert_array_equal(stats["npix"], [3, 0, 3, 0, 2])
    np.testing.assert_allclose(stats["signal"], [2 + 2 + 1.5, 0, 4 + 6 + 6, 0, 0 + 1])
    np.testing.assert_allclose(stats["noise"] ** 2, [3 * 4 + 5.5, 0, 3 * 4 + 16, 0, 2 * 4 + 1])


def test_a_thresholded_frame_is_told_by_its_good_pixels():
    """The zeros under the mask do not count: a dense frame with a masked band of zeros is not thresholded."""
    from braggflow.find.background import is_sparse

    rng = np.random.default_rng(5)
    frame = rng.normal(20.0, 3.0, (140, 210)).astype(np.float32)
    frame[:, :150] = 0  # 5/7 of the frame stored as 0
    band = np.zeros(frame.shape, bool)
    band[:, :150] = True
    assert is_sparse(frame) and is_sparse(frame, np.zeros(frame.shape, bool))
    assert not is_sparse(frame, band)  # only data left
    assert is_sparse(frame, ~band)  # only zeros left: nothing stored above a threshold
    assert not is_sparse(frame, np.ones(frame.shape, bool))  # no good pixel
    assert not is_sparse(frame, fraction=0.75) and is_sparse(frame, fraction=0.7)  # zeros: 5/7 of the sample
    assert is_sparse(frame.astype(np.int32)) and not is_sparse(np.where(frame > 0, 1.0, 0.0).astype(np.float32))
