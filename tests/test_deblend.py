"""Deblending (braggflow.locate.deblend): a pair at 3 px split and located, single peaks left whole."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.find import find_peaks
from braggflow.integrate import integrate
from braggflow.locate import locate
from braggflow.locate.deblend import DEBLEND_THRESHOLD, RECOGNITION_THRESHOLD, find_blends, recognise_blends
from braggflow.profiles.render import peak_profile
from braggflow.schema import Flag
from braggflow.simulate.patches import simulate_patches


def _frame(peaks, shape=(96, 96), background=50.0, seed=0):
    rng = np.random.default_rng(seed)
    expected = np.full(shape, background)
    rr, cc = np.arange(shape[0]), np.arange(shape[1])
    for p in peaks:
        expected += p["flux"] * peak_profile(rr, cc, row=p["row"], col=p["col"], sigma_row=p["sr"],
                                             sigma_col=p["sc"], angle=p.get("angle", 0.0), eta=p.get("eta", 0.0))
    return rng.poisson(expected).astype(np.float32)


def test_pair_at_3px_is_split_and_located():
    # sigma 1.6 px: 3 px is below the Sparrow limit (2 sigma = 3.2 px), the sum of the two has no dip
    truth = [dict(row=40.3, col=40.6, sr=1.6, sc=1.6, flux=20000.0), dict(row=41.9, col=43.1, sr=1.6, sc=1.6,
                                                                           flux=14000.0)]
    assert abs(np.hypot(1.6, 2.5) - 3.0) < 0.05
    frame = _frame(truth, seed=1)
    found = find_peaks(frame)
    near = np.hypot(found.table["row"] - 41, found.table["col"] - 42) < 4
    assert near.sum() == 1  # the finder sees one peak
    out = locate(frame, found.table, labels=found.labels, regions=found.regions, deblend=True)
    blended = (out["flags"].to_numpy() & Flag.BLENDED) != 0
    assert blended.sum() == 2 and len(out) == len(found.table) + 1
    members = out[blended]
    for t in truth:
        d = np.hypot(members["row"] - t["row"], members["col"] - t["col"]).to_numpy()
        k = int(np.argmin(d))
        assert d[k] < 0.2
        assert 0.005 < members["row_err"].iloc[k] < 0.15
        assert abs(members["intensity"].iloc[k] / t["flux"] - 1) < 0.1
    integrated = integrate(frame, out, labels=found.labels, regions=found.regions)
    kept = integrated[blended]
    assert np.allclose(kept["intensity"], members["intensity"])  # the joint fit's intensities are kept
    assert np.all(kept["intensity_err"] > 0)


def test_single_peaks_are_not_split():
    truth = [dict(row=20.2, col=20.7, sr=1.2, sc=1.2, flux=30000.0),
             dict(row=20.5, col=70.1, sr=3.0, sc=1.1, angle=0.7, flux=40000.0),  # elongated, rotated
             dict(row=70.8, col=20.3, sr=1.5, sc=1.5, eta=0.6, flux=30000.0),  # pseudo-Voigt
             dict(row=70.1, col=70.4, sr=0.8, sc=0.8, flux=3000.0)]
    frame = _frame(truth, seed=2)
    found = find_peaks(frame)
    out = locate(frame, found.table, labels=found.labels, regions=found.regions, deblend=True)
    assert len(out) == len(found.table)
    assert not ((out["flags"].to_numpy() & Flag.BLENDED) != 0).any()


def test_false_split_rate_on_single_peaks():
    """Seeds apart from the calibration's (9100-9102) and the benchmarks'."""
    ps = simulate_patches(400, kind="mixed", seed=777, intensity=(500.0, 50000.0), background=(5.0, 100.0))
    single = ~ps.params["kind"].isin(["neighbour"]).to_numpy()
    res = find_blends(ps.data[single], ps.mask[single], threshold=DEBLEND_THRESHOLD)
    assert res.blended.mean() <= 0.015
    pairs = simulate_patches(100, kind="neighbour", seed=778, neighbour_distance=(4.0, 5.0),
                             neighbour_ratio=(0.5, 1.0), intensity=(5000.0, 50000.0), background=(5.0, 50.0))
    assert find_blends(pairs.data, pairs.mask).blended.mean() > 0.8


def test_several_blends_in_one_frame_each_keep_their_own_members():
    pairs = [((30.2, 30.4), (31.9, 32.9)), ((30.6, 80.1), (33.4, 80.9)), ((80.3, 50.2), (79.1, 52.9))]
    truth = [dict(row=r, col=c, sr=1.6, sc=1.6, flux=f)
             for pair in pairs for (r, c), f in zip(pair, (20000.0, 12000.0))]
    frame = _frame(truth, shape=(112, 112), seed=4)
    found = find_peaks(frame)
    out = locate(frame, found.table, labels=found.labels, regions=found.regions, deblend=True)
    members = out[(out["flags"].to_numpy() & Flag.BLENDED) != 0]
    assert len(members) == 6
    for t in truth:
        assert np.hypot(members["row"] - t["row"], members["col"] - t["col"]).min() < 0.25


def test_screen_sends_the_pairs_the_test_splits_and_few_single_peaks():
    """The screen (one Gaussian's deviance excess and residual bump) sends on every pair 2-5 px apart that the
    full test splits, and only a minority of single round Gaussian peaks."""
    pairs = simulate_patches(150, kind="neighbour", seed=781, neighbour_distance=(2.0, 5.0),
                             neighbour_ratio=(0.1, 1.0), intensity=(2000.0, 50000.0), background=(20.0, 80.0))
    full = find_blends(pairs.data, pairs.mask, screen=False)
    screened = find_blends(pairs.data, pairs.mask)
    assert full.blended.sum() > 75
    assert screened.screened[full.blended].mean() >= 0.97
    both = screened.screened & full.blended
    assert np.array_equal(screened.blended[both], full.blended[both])  # the same test where sent on
    single = simulate_patches(300, kind="isotropic", seed=782, pvoigt_fraction=0.0, intensity=(2000.0, 50000.0),
                              background=(20.0, 80.0))
    assert find_blends(single.data, single.mask).screened.mean() < 0.25


def test_neighbours_wings_are_fitted_for_separated_pairs():
    """Pairs 4.5-5.5 px apart that the finder separates: the blend test's joint fit takes the neighbour's wings,
    so the fainter member's centre is closer to the truth than the single Gaussian fit's, with no row added."""
    rng = np.random.default_rng(9)
    peaks, faint = [], []
    for k in range(16):
        r, c = 30 + 50 * (k // 4), 30 + 50 * (k % 4)
        a = rng.uniform(0, np.pi)
        d = rng.uniform(4.5, 5.5)
        peaks.append(dict(row=r, col=c, sr=1.1, sc=1.1, flux=40000.0))
        peaks.append(dict(row=r + d * np.cos(a), col=c + d * np.sin(a), sr=1.1, sc=1.1, flux=12000.0))
        faint.append((peaks[-1]["row"], peaks[-1]["col"]))
    frame = _frame(peaks, shape=(220, 220), seed=10)
    found = find_peaks(frame)
    assert len(found.table) >= 0.9 * len(peaks)  # the finder separates (nearly) every pair
    plain = locate(frame, found.table, method="gauss", labels=found.labels, regions=found.regions)
    joint = locate(frame, found.table, method="gauss", labels=found.labels, regions=found.regions, deblend=True)
    assert len(joint) == len(plain)
    assert not ((joint["flags"].to_numpy() & Flag.BLENDED) != 0).any()

    def faint_errors(table):
        pos = table[["row", "col"]].to_numpy()
        return np.array([np.min(np.hypot(*(pos - f).T)) for f in faint])

    before, after = faint_errors(plain), faint_errors(joint)
    found_faint = before < 1.0  # a region of its own
    assert found_faint.sum() >= 12
    assert np.median(after[found_faint]) < 0.8 * np.median(before[found_faint])


def _pair_patches(n, separation, *, sigma=1.2, flux=20000.0, background=20.0, seed=0, size=11):
    """``n`` patches of two equal round Gaussians ``separation`` px apart in a random direction about the centre."""
    rng = np.random.default_rng(seed)
    idx = np.arange(size)
    data = np.empty((n, size, size))
    for k in range(n):
        a = rng.uniform(0, np.pi)
        r0, c0 = size // 2 + rng.uniform(-0.5, 0.5, 2)
        dr, dc = 0.5 * separation * np.cos(a), 0.5 * separation * np.sin(a)
        mu = background + sum(flux * peak_profile(idx, idx, row=r0 + s * dr, col=c0 + s * dc, sigma_row=sigma,
                                                  sigma_col=sigma) for s in (-1, 1))
        data[k] = rng.poisson(mu)
    return data.astype(np.float32)


def test_equal_pair_at_1p5px_is_recognised_though_unresolved():
    # sigma 1.2 px: 1.5 px is well below the Sparrow limit (2.4 px), the pair is one round-ish blob
    data = _pair_patches(40, 1.5, seed=5)
    probable, drop = recognise_blends(data)
    assert probable.mean() >= 0.9
    assert np.all(drop[probable] > RECOGNITION_THRESHOLD)
    # a weaker decision than the split: everything split is recognised
    split = find_blends(data, screen=False).blended
    assert np.all(probable[split])


def test_recognition_false_alarms_on_single_gaussians():
    """500 single round Gaussians of the localization population (seed apart from the calibration's 9200-9600):
    <= 1 % recognised as blends."""
    ps = simulate_patches(500, kind="isotropic", seed=9701, pvoigt_fraction=0.0)
    probable, drop = recognise_blends(ps.data, ps.mask)
    assert probable.mean() <= 0.01
    assert np.isfinite(drop).mean() > 0.95  # the fits ran


def test_deblend_flags_probable_blends_it_does_not_split():
    """With the split's threshold out of reach, the unresolved pair of the 3 px test is flagged PROBABLE_BLEND
    (not BLENDED, no row added); single peaks and pairs the finder separated (a neighbour's remainder) are not."""
    from braggflow.locate.deblend import deblend

    truth = [dict(row=40.3, col=40.6, sr=1.6, sc=1.6, flux=20000.0), dict(row=41.9, col=43.1, sr=1.6, sc=1.6,
                                                                           flux=14000.0),
             dict(row=20.2, col=70.7, sr=1.2, sc=1.2, flux=30000.0),
             dict(row=70.5, col=70.1, sr=3.0, sc=1.1, angle=0.7, flux=40000.0)]
    frame = _frame(truth, seed=1)
    found = find_peaks(frame)
    out = deblend(frame, found.table, labels=found.labels, threshold=np.inf, screen=False)
    assert len(out) == len(found.table)
    f = out["flags"].to_numpy()
    assert not ((f & Flag.BLENDED) != 0).any()
    probable = (f & Flag.PROBABLE_BLEND) != 0
    pair = np.hypot(out["row"] - 41, out["col"] - 42).to_numpy() < 4
    assert probable[pair].all() and not probable[~pair].any()

    rng = np.random.default_rng(9)
    peaks = []
    for k in range(16):
        r, c = 30 + 50 * (k // 4), 30 + 50 * (k % 4)
        a, d = rng.uniform(0, np.pi), rng.uniform(4.5, 5.5)
        peaks += [dict(row=r, col=c, sr=1.1, sc=1.1, flux=40000.0),
                  dict(row=r + d * np.cos(a), col=c + d * np.sin(a), sr=1.1, sc=1.1, flux=12000.0)]
    frame = _frame(peaks, shape=(220, 220), seed=10)
    found = find_peaks(frame)
    out = deblend(frame, found.table, labels=found.labels, threshold=np.inf, screen=False)
    assert ((out["flags"].to_numpy() & Flag.PROBABLE_BLEND) != 0).mean() <= 0.1


def test_joint_fit_errors_match_the_scatter_of_the_members():
    """The joint fit's centre errors (square roots of the diagonal of the inverse Fisher information of all nine
    parameters: marginal, the correlation of the two centres included) equal the scatter of the fitted centres
    over repeated noise on a blend of the fit's own model (two Gaussians of one shape, 2.6 px apart)."""
    from braggflow.profiles.fitting import evaluate

    rng = np.random.default_rng(41)
    n, size = 500, 11
    truth = np.array([[4.2, 4.6, 5.4, 6.9, 1.3, 1.3, 20000.0, 9000.0, 50.0]])
    mu, _ = evaluate("gauss2", truth, size, jac=False)
    data = rng.poisson(np.repeat(mu, n, axis=0)).reshape(n, size, size).astype(float)
    test = find_blends(data, threshold=-np.inf, screen=False)
    p, ok = test.pair.params, test.pair.ok & test.pair.converged
    swapped = np.hypot(p[:, 0] - truth[0, 0], p[:, 1] - truth[0, 1]) > np.hypot(p[:, 2] - truth[0, 0],
                                                                               p[:, 3] - truth[0, 1])
    good = ok & ~swapped
    assert good.mean() > 0.95
    cov = test.pair.cov[good]
    for k in range(4):  # row1, col1, row2, col2
        scatter = np.std(p[good, k])
        reported = np.sqrt(np.median(cov[:, k, k]))
        assert abs(scatter / reported - 1) < 0.15, (k, scatter, reported)
    # the conditional errors (1 / sqrt(F_ii)), which leave out the other parameters' uncertainty, are too small
    # for the pair's centres: they are not what the fit reports
    fisher_row1 = 1.0 / np.linalg.inv(cov)[:, 0, 0]
    assert np.median(np.sqrt(fisher_row1)) < 0.9 * np.sqrt(np.median(cov[:, 0, 0]))


def test_screen_of_gauss_located_peaks_fits_only_the_amplitudes():
    """Where the start is the patch's own Gaussian fit, the screen's amplitude-only fit gives the statistics of
    the full Gaussian fit started from the same shape (intensity and background far off), and sends on the same
    patches (the few others: blends whose full fit moved to another maximum)."""
    from braggflow.locate.batchfit import fit_with_start
    from braggflow.locate.deblend import SCREEN_BUMP, SCREEN_EXCESS, screen_statistics

    ps = simulate_patches(300, kind="neighbour", seed=57)
    fit, _ = fit_with_start(ps.data, ps.mask, gain=1.0, profile="gauss")
    ok = fit.ok & fit.converged
    start = fit.params[ok]
    start[:, 4] *= 0.5  # intensity and background far from the fit's
    start[:, 5] = np.maximum(start[:, 5] * 1.5, 1.0)
    data, mask = ps.data[ok].astype(float), ps.mask[ok]
    full = screen_statistics(data, mask, start=start)
    held = screen_statistics(data, mask, start=start, shape_fitted=np.ones(len(start), dtype=bool))
    same = np.abs(held[0] - full[0]) < 2e-3  # deviance excess
    assert same.mean() > 0.9
    np.testing.assert_allclose(held[1][same], full[1][same], atol=0.25)  # bump: widths within the tolerance
    sent_full = ~((full[0] <= SCREEN_EXCESS) & (full[1] <= SCREEN_BUMP))
    sent_held = ~((held[0] <= SCREEN_EXCESS) & (held[1] <= SCREEN_BUMP))
    assert np.array_equal(sent_full[same], sent_held[same]) and np.mean(sent_full == sent_held) > 0.98
    assert 0 < sent_held.sum() < len(sent_held)


def test_a_peak_inside_two_regions_is_split_off_once():
    """A winged peak that the finder leaves inside two bright neighbours' regions (the cluster of
    ``simulate_series(seed=5)``: a pseudo-Voigt of sigma 1.7 px, eta 0.7, between Gaussians 4 and 6 px away) is
    the second member of both their blends; it becomes one row, the one fitted to its core, and the other
    neighbour keeps its own centre."""
    truth = [dict(row=40.2, col=44.5, sr=0.96, sc=0.96, flux=28000.0),
             dict(row=45.3, col=42.2, sr=0.96, sc=0.96, flux=24000.0),
             dict(row=39.5, col=40.5, sr=1.72, sc=1.72, eta=0.71, flux=7100.0)]
    hidden = np.array([39.5, 40.5])
    for seed in range(4):
        frame = _frame(truth, seed=20 + seed, background=20.0)
        found = find_peaks(frame)
        out = locate(frame, found.table, method="gauss", labels=found.labels, deblend=True)
        pos = out[["row", "col"]].to_numpy()
        near = np.hypot(*(pos - hidden).T) < 1.5
        assert near.sum() <= 1, out[["row", "col", "flags"]]
        # every row is one of the three peaks, within 1.5 px, and no peak has two rows
        d = np.hypot(pos[:, None, 0] - [p["row"] for p in truth], pos[:, None, 1] - [p["col"] for p in truth])
        assert (d.min(axis=1) < 1.5).all(), out[["row", "col", "flags"]]
        assert len(set(d.argmin(axis=1))) == len(out)


def test_deblend_with_the_located_patches_gives_the_same_table():
    """deblend(patches=...) with the patches the peaks were located in (those centred on the located pixel taken,
    the others cut again) gives the table that cutting every patch again gives; a row without a position too."""
    from braggflow.locate.deblend import deblend
    from braggflow.locate.methods import locate_cut

    rng = np.random.default_rng(12)
    peaks = []
    for k in range(12):
        r, c = 20 + 30 * (k // 4), 20 + 30 * (k % 4)
        peaks.append(dict(row=r + rng.uniform(-0.5, 0.5), col=c + rng.uniform(-0.5, 0.5), sr=1.4, sc=1.4,
                          flux=20000.0))
        if k % 2:  # a pair member 3 px away, inside the first's region
            peaks.append(dict(row=r + 3.0, col=c + 0.5, sr=1.4, sc=1.4, flux=9000.0))
    frame = _frame(peaks, shape=(110, 130), seed=13)
    found = find_peaks(frame)
    table = found.table
    located = locate(frame, table, method="gauss", labels=found.labels)
    _, patches = locate_cut(frame, table["row"].to_numpy(float), table["col"].to_numpy(float), "gauss", mask=None,
                            labels=found.labels, patch_size=11, gain=1.0, saturation=None)
    centre = np.stack([np.rint(located["row"]), np.rint(located["col"])], axis=1)
    assert 0 < np.any(patches.origin + 5 != centre, axis=1).sum() < len(located)  # both ways are exercised
    again = deblend(frame, located, labels=found.labels)
    reused = deblend(frame, located, labels=found.labels, patches=patches)
    assert ((again["flags"].to_numpy() & Flag.BLENDED) != 0).sum() >= 6
    assert reused.equals(again)
    located.loc[3, ["row", "col"]] = np.nan
    assert deblend(frame, located, labels=found.labels, patches=patches).equals(
        deblend(frame, located, labels=found.labels))


def test_a_split_row_keeps_the_other_columns_of_its_peak_and_the_input_table_is_left_alone():
    """The new member of a blend carries its peak's columns that the split does not set (file, frame, extra
    columns); locate's deblending is deblend() of its located table; the table given is not written."""
    from braggflow.locate.deblend import deblend

    truth = [dict(row=40.3, col=40.6, sr=1.6, sc=1.6, flux=20000.0),
             dict(row=41.9, col=43.1, sr=1.6, sc=1.6, flux=14000.0),
             dict(row=20.2, col=70.7, sr=1.2, sc=1.2, flux=30000.0)]
    frame = _frame(truth, seed=1)
    found = find_peaks(frame)
    table = found.table.assign(frame_in_file=np.arange(len(found.table)) + 7, source_file="run_01.h5",
                               note=[f"peak {k}" for k in range(len(found.table))])
    before = table.copy()
    out = locate(frame, table, method="gauss", labels=found.labels, deblend=True)
    pd.testing.assert_frame_equal(table, before)
    assert len(out) == len(table) + 1
    blended = np.flatnonzero((out["flags"].to_numpy() & Flag.BLENDED) != 0)
    assert blended.size == 2 and blended[-1] == len(table)
    peak = blended[0]
    for name in ("frame_in_file", "source_file", "note", "npix", "score", "method"):
        assert out[name].iloc[-1] == out[name].iloc[peak], name
    assert out["source_file"].dtype == "category" and out["note"].tolist()[-1] == f"peak {peak}"
    located = locate(frame, table, method="gauss", labels=found.labels)
    pd.testing.assert_frame_equal(deblend(frame, located, labels=found.labels), out)


def test_nearest_other_peak_is_the_k_d_trees():
    """A new member's distance to the nearest peak other than its own row is the one a k-d tree's two nearest
    neighbours give (the second where the first is the own row), the table's NaN rows left out."""
    from scipy.spatial import cKDTree

    from braggflow.locate.deblend import _nearest_other

    rng = np.random.default_rng(21)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        row, col = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
        row[rng.random(n) < 0.1] = np.nan
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size < 2:
            continue
        own = rng.choice(finite, size=int(rng.integers(1, 5)))
        position = np.stack([row[own], col[own]], axis=1) + rng.normal(0, 2, (own.size, 2))
        dist, nearest = cKDTree(np.stack([row[finite], col[finite]], axis=1)).query(position, k=2)
        expected = np.where(finite[nearest[:, 0]] == own, dist[:, 1], dist[:, 0])
        np.testing.assert_allclose(_nearest_other(position, row, col, own), expected, rtol=1e-12)
    assert _nearest_other(np.array([[1.0, 1.0]]), np.array([1.0, np.nan]), np.array([1.0, 5.0]),
                          np.array([0])) == np.inf
