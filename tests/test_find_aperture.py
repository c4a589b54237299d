"""The finder's faint-spot test (matched-filter sums under Poisson statistics), its split and its background moments."""

import numpy as np
import pytest
from scipy import stats

from braggflow.find import FindConfig, estimate_background, find_peaks
from braggflow.find.aperture import matched_weights, weighted_poisson_significance
from braggflow.find.split import steepest_ascent_basins
from braggflow.profiles.render import peak_profile
from braggflow.simulate.frames import match_peaks


@pytest.mark.parametrize("lam", [0.3, 1.0, 3.0, 20.0])
def test_saddlepoint_tail_matches_the_exact_poisson_tail(lam):
    # equal weights: the sum of 9 pixels is Poisson(9 lam); half a count of continuity correction for the lattice
    n = np.arange(int(9 * lam) + 2, int(9 * lam + 9 * np.sqrt(9 * lam)) + 12)
    z = weighted_poisson_significance(n - 0.5, np.ones((n.size, 9)), np.full(n.size, lam))
    exact = stats.norm.isf(stats.poisson.sf(n - 1, 9 * lam))
    within = (exact > 3) & (exact < 7)
    assert within.sum() >= 3
    assert np.abs(z - exact)[within].max() < 0.03


def test_saddlepoint_tail_of_the_matched_filter_against_monte_carlo(rng):
    w = matched_weights()
    assert w.sum() == pytest.approx((2 * stats.norm.cdf(2.5) - 1) ** 2) and w.reshape(5, 5)[2, 2] == w.max()
    x = rng.poisson(1.0, size=(1_000_000, 25)).astype(np.float32) @ w.astype(np.float32)
    level = np.quantile(x, 1 - stats.norm.sf(4.0))  # the sum that a 4 sigma event passes
    z = weighted_poisson_significance(np.array([level]), w[None], np.array([1.0]))[0]
    assert z == pytest.approx(4.0, abs=0.08)
    assert weighted_poisson_significance(np.array([0.5]), w[None], np.array([1.0]))[0] == -np.inf  # below the mean


@pytest.mark.parametrize("lam", [1.0, 3.0, 30.0])
def test_no_false_peaks_on_poisson_noise(rng, lam):
    # 4 Mpx of pure noise; at aperture_sigma 5.5 the expected number of false peaks is ~0.08
    f = rng.poisson(lam, size=(2048, 2048)).astype(np.float32)
    assert len(find_peaks(f)) == 0


def _faint_frame(rng, n=60, flux=80.0, sigma=1.2, bg=2.0, shape=(768, 768)):
    rows = rng.uniform(20, shape[0] - 20, n)
    cols = rng.uniform(20, shape[1] - 20, n)
    lam = np.full(shape, bg)
    r_all, c_all = np.arange(shape[0]), np.arange(shape[1])
    for r, c in zip(rows, cols):
        r0, c0 = int(r) - 8, int(c) - 8
        lam[r0 : r0 + 17, c0 : c0 + 17] += flux * peak_profile(r_all[r0 : r0 + 17], c_all[c0 : c0 + 17], row=r,
                                                                  col=c, sigma_row=sigma, sigma_col=sigma)
    truth = {"frame": np.zeros(n, dtype=int), "row": rows, "col": cols}
    import pandas as pd

    return rng.poisson(lam).astype(np.float32), pd.DataFrame(truth)


def test_faint_spots_on_a_weak_background_are_found(rng):
    # 80 photons, sigma 1.2 px, on 2 photons/px: the brightest pixel is ~4 sigma, under the 5 sigma threshold
    f, truth = _faint_frame(rng)
    scores, strong = {}, set()
    for name, config in (("off", FindConfig(aperture_sigma=None)), ("on", FindConfig())):
        found = find_peaks(f, config=config)
        m = match_peaks(found.table.assign(frame=0), truth, max_distance=2.0)
        hit = m["found_index"].to_numpy() >= 0
        scores[name] = (hit.mean(), hit.sum() / max(len(found), 1))
        table, labels = found.table, found.labels
        if name == "off":
            strong = set(zip(table["row"], table["col"]))
        else:
            assert set(np.unique(labels)) == set(range(len(table) + 1))
            weak = [(r, c) not in strong for r, c in zip(table["row"], table["col"])]
            assert sum(weak) >= 10
            for k in np.flatnonzero(weak):  # an aperture peak's region is its 3 x 3 aperture
                r, c = int(table["row"].iloc[k]), int(table["col"].iloc[k])
                assert (labels[r - 1 : r + 2, c - 1 : c + 2] == k + 1).all()
    assert scores["off"][0] < 0.7
    assert scores["on"][0] >= 0.95 and scores["on"][1] >= 0.95


def test_aperture_leaves_out_masked_pixels(rng):
    f, truth = _faint_frame(rng, n=20)
    mask = np.zeros(f.shape, dtype=bool)
    mask[:, 380:387] = True  # a module gap
    f[mask] = 0
    found = find_peaks(f, mask=mask)
    assert not (found.labels[mask] > 0).any()
    in_gap = mask[np.rint(truth["row"]).astype(int), np.rint(truth["col"]).astype(int)]
    m = match_peaks(found.table.assign(frame=0), truth[~in_gap], max_distance=2.0)
    assert (m["found_index"] >= 0).mean() >= 0.85  # spots beside the gap lose part of their counts


def test_background_moments_are_unbiased_for_few_photons(rng):
    f = rng.poisson(2.5, size=(1024, 1024)).astype(np.float32)
    bg = estimate_background(f)
    assert np.median(bg.level) == 2.0  # the median of Poisson(2.5) counts
    assert np.abs(bg.mean - 2.5).max() < 0.25 and abs(np.median(bg.mean) - 2.5) < 0.02
    assert abs(np.median(bg.variance) - 2.5) < 0.1


def _saddles_by_union_find(img):
    """Position -> (peak - saddle) of every maximum of ``img`` that merges into a higher one above 0 (reference).

    Pixels are added in descending order and joined to their 8-neighbours with a union-find; when two regions
    meet, the one with the lower maximum dies at the current pixel (elder rule).
    """
    h, w = img.shape
    flat = img.ravel()
    order = np.lexsort((-np.arange(flat.size), flat))[::-1]  # descending; ties: smaller index first
    parent = -np.ones(flat.size, dtype=int)
    top = {}
    deaths = {}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in order:
        if flat[p] <= 0:
            break
        parent[p] = p
        top[p] = p
        r, c = divmod(int(p), w)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < h and 0 <= cc < w and parent[rr * w + cc] >= 0:
                    a, b = find(p), find(rr * w + cc)
                    if a != b:
                        ta, tb = top[a], top[b]
                        young, old = (ta, tb) if (flat[ta], -ta) < (flat[tb], -tb) else (tb, ta)
                        if young != p:
                            deaths[int(young)] = float(flat[young] - flat[p])
                        parent[a] = b
                        top[b] = old
    return deaths


def test_split_persistence_matches_a_pixel_union_find():
    # three overlapping spots above a flat background: the persistence of each split-off maximum is exact
    rr, cc = np.mgrid[:40, :40]
    img = (900 * np.exp(-((rr - 20.2) ** 2 + (cc - 14.1) ** 2) / 8.0)
           + 500 * np.exp(-((rr - 19.7) ** 2 + (cc - 22.3) ** 2) / 6.0)
           + 300 * np.exp(-((rr - 27.4) ** 2 + (cc - 18.6) ** 2) / 5.0) + 100.0)
    config = FindConfig(method="persistence", min_persistence=1e-9, min_size=1, aperture_sigma=None, noise=1.0)
    found = find_peaks(img.astype(np.float32), config=config, gain=1e-4)
    level = found.background.level[0, 0] + 3.0 * found.background.noise[0, 0]  # the persistence method's base
    deaths = _saddles_by_union_find(np.where(img.astype(np.float32) > level, img.astype(np.float32), 0.0))
    assert len(deaths) == 2
    table = found.table
    pos = (table["row"] * 40 + table["col"]).astype(int).to_numpy()
    for p, d in deaths.items():
        assert p in pos
        assert table["score"].to_numpy()[list(pos).index(p)] == pytest.approx(d, rel=1e-6)
    assert len(table) == 3


def test_steepest_ascent_reaches_each_local_maximum():
    img = np.array([[1, 2, 3, 2, 5, 6],
                    [1, 2, 9, 2, 5, 7],
                    [1, 1, 2, 2, 4, 4]], dtype=float)
    flat = np.flatnonzero(img >= 2)
    root = steepest_ascent_basins(img.shape[1], flat, img.ravel()[flat], np.ones(flat.size, dtype=int))
    tops = set(flat[np.unique(root)].tolist())
    assert tops == {1 * 6 + 2, 1 * 6 + 5}  # the 9 and the 7
    assert flat[root[list(flat).index(0 * 6 + 4)]] == 1 * 6 + 5  # the 5 climbs to the 7
