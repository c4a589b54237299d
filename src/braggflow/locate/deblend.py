"""Deblending: one region tried with one and with two peak components, the data choose.

Each peak's patch (other peaks' pixels removed, as for every localizer) is
fitted twice by Poisson maximum likelihood, all patches at once
(:mod:`braggflow.profiles.fitting`):

- one component: the rotated elliptical pseudo-Voigt (8 parameters), which
  describes round, elongated and Lorentzian-winged single peaks;
- two components: two pixel-integrated Gaussians of one shape (9
  parameters: two centres, sigma_row, sigma_col, two intensities,
  background), started from the patch's second moments (two centres
  ``+-sqrt(lambda_max - lambda_min)`` along the major axis).

Only likely blends have the two fits: a screen fits one axis-aligned
Gaussian to every patch (the cheapest model; for a peak located by the
Gaussian fit, whose centre and widths are already that fit's, only its
intensity and background, :func:`~braggflow.profiles.fitting.fit_amplitudes`)
and sends on the patches whose deviance exceeds its degrees of freedom by
more than :data:`SCREEN_EXCESS` standard deviations, or whose residual holds
a bump (the residual correlated with the fitted Gaussian, a matched filter)
above :data:`SCREEN_BUMP` standard deviations (:func:`screen_statistics`);
``bench/deblend.py --parts screen`` measures how many of the blends the test
would split it sends on.  Of those, the two-component fit runs first, and
the one-component fit only where the pair lowers the screen Gaussian's
deviance by enough to pass (the pseudo-Voigt holds that Gaussian, so its
drop can only be smaller).

The region is a blend when the two-component fit lowers the Poisson deviance
by more than :data:`DEBLEND_THRESHOLD` (a likelihood-ratio test; the two
models are not nested, so the threshold is calibrated on simulated single
peaks rather than taken from a chi^2 table: ``bench/deblend.py
--calibrate``), both components lie in the patch, at least 1 px apart, with
positive intensities, and the new member is not within 2.5 px of another peak of
the table (a neighbour the finder already separated leaves its wings in the
patch: they are not a second peak; the peak's row then takes the centre and
errors of the joint fit's own member, which the neighbour's wings do not pull
as they pull a single fit), nor within 4 px of a better-located new member of
another blend (a peak that the finder left inside two found peaks' regions is
the second member of both blends, fitted from its wings where its core is
masked; the other blend's row is then treated as a neighbour's remainder).
Both members then get their own centre, errors (inverse Fisher information of
the joint fit), intensity and error, and the flag
``BLENDED``; the second member is a new row of the table.

A weaker decision, :func:`recognise_blends`, says which patches probably
hold a blend (their one-peak errors not to be trusted) at the false-alarm
rate of 1 % per single-peak kind (:data:`RECOGNITION_THRESHOLD`), every patch
tested, without the split's geometric conditions.

References
----------
Stetson, PASP 99, 191 (1987) (DAOPHOT: grouping and simultaneous fits);
Mortensen et al., Nat. Methods 7, 377 (2010).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.locate.batchfit import fit_with_start
from braggflow.locate.centroid import as_patch_arrays
from braggflow.locate.patches import Patches, check_patch_arrays, patches_at
from braggflow.profiles._arrays import nan_to_num, starting_widths
from braggflow.profiles.fitting import (
    PARAMETERS,
    BatchFit,
    fit_amplitudes,
    fit_profiles,
    residual_bumps,
    start_parameters,
)
from braggflow.schema import Flag, conform, conformed_columns, table_from_columns

__all__ = ["DEBLEND_THRESHOLD", "RECOGNITION_THRESHOLD", "SCREEN_EXCESS", "SCREEN_BUMP", "BlendTest", "find_blends",
           "deblend", "deblend_columns", "recognise_blends", "screen_statistics"]

#: Deviance drop (one component minus two) above which a region is split: the 99.5th percentile over single
#: round Gaussian, pseudo-Voigt and elongated rotated peaks (2,000 simulated, seeds 9100-9102, flux 500-50,000
#: photons, background 5-100 photons/px), so that <= 1 % of single peaks are split.  ``bench/deblend.py
#: --calibrate`` measures it.
DEBLEND_THRESHOLD = 12.0
#: Deviance drop (one component minus two) above which a patch is recognised as a probable blend
#: (:func:`recognise_blends`; its one-peak errors not to be trusted), whether or not it is split.  The 99th
#: percentiles over single peaks of the localization benchmark's population (``simulate_patches``: flux 500-50,000,
#: background 1-200 photons/px, sigma 0.5-3 px; 1,474 round and 1,526 pseudo-Voigt of seed 9200, 1,000 elongated
#: rotated of seed 9300, apart from every benchmark's) are 9.99, 9.53 and 7.75; the largest, rounded up by one for
#: the counting noise of 1 % of ~1,500 peaks (15 +- 4), keeps each kind's false alarms below 1 % (0.75, 0.59 and
#: 0.2 % there).  ``bench/deblend.py --parts recognise`` measures it, ``bench/localize.py --only-blends`` the
#: blends it recognises.
RECOGNITION_THRESHOLD = 11.0
#: Deviance excess of the one-Gaussian fit (:func:`screen_statistics`) above which a patch is sent to the two
#: fits of the test.
SCREEN_EXCESS = 3.0
#: Residual bump significance (:func:`screen_statistics`) above which a patch is sent to the two fits.
SCREEN_BUMP = 3.0
_MIN_SEPARATION = 1.0  # px
_NEIGHBOUR_DISTANCE = 2.5  # px: a second member this close to another peak of the table is that peak
#: px: two blends' second members this close are one peak that the finder left in both their regions (fitted from
#: its wings in the patch where its core is the other region, masked, such a member lies 2.5-3.5 px from the one
#: fitted to its core on simulate_series frames)
_DUPLICATE_DISTANCE = 4.0
#: Deviance below the decision's threshold at which the screen's Gaussian, against the two components, leaves out
#: the one-component fit (the pseudo-Voigt's deviance exceeded that Gaussian's by at most 0.05 on the 1,101
#: peaks of 12 pinned frames: the margin covers the two models' pixel integrals).
_SKIP_MARGIN = 1.0
_SINGLE_SUPERSAMPLE = 2  # sub-pixels per axis of the one-component fit (the thresholds were calibrated with it)


class BlendTest:
    """The one- and two-component fits of N patches and the decision.

    Attributes
    ----------
    single, pair : BatchFit
        The fits (patch coordinates; intensities in counts).
    drop : (N,) ndarray
        Deviance of ``single`` minus that of ``pair`` (NaN where a fit failed).
    blended : (N,) ndarray of bool
        The patches split into two peaks.
    screened : (N,) ndarray of bool
        The patches the screen sent to the two fits (the others have NaN fits and drop).
    """

    def __init__(self, single: BatchFit, pair: BatchFit, drop: np.ndarray, blended: np.ndarray,
                 screened: np.ndarray):
        self.single, self.pair, self.drop, self.blended, self.screened = single, pair, drop, blended, screened


def _pair_start(data, mask, background, intensity) -> np.ndarray:
    """Two-Gaussian starts from the second moments of each patch above the one-peak fit's ``background``, the
    fit's ``intensity`` shared (counts; (N,) each), (N, 9)."""
    s = data.shape[-1]
    bg = nan_to_num(background, nan=0.0)
    inten = nan_to_num(intensity, nan=0.0)
    w = np.where(mask, 0.0, np.maximum(data - bg[:, None, None], 0.0))
    total = np.maximum(w.sum(axis=(1, 2)), 1e-9)
    rr, cc = np.indices((s, s), dtype=float)
    r0 = (w * rr).sum(axis=(1, 2)) / total
    c0 = (w * cc).sum(axis=(1, 2)) / total
    off_r, off_c = rr - r0[:, None, None], cc - c0[:, None, None]  # each pixel from the centroid
    vrr = (w * off_r**2).sum(axis=(1, 2)) / total
    vcc = (w * off_c**2).sum(axis=(1, 2)) / total
    vrc = (w * off_r * off_c).sum(axis=(1, 2)) / total
    half_diff = np.sqrt(0.25 * (vrr - vcc) ** 2 + vrc**2)
    lam_max = 0.5 * (vrr + vcc) + half_diff
    lam_min = np.maximum(0.5 * (vrr + vcc) - half_diff, 0.09)
    theta = 0.5 * np.arctan2(2.0 * vrc, vrr - vcc)  # major axis from the row axis
    d = np.clip(np.sqrt(np.maximum(lam_max - lam_min, 0.0)), 0.75, s / 3)
    dr, dc = d * np.cos(theta), d * np.sin(theta)
    sig = np.sqrt(lam_min)
    half = np.where(inten > 0, inten, total) / 2
    return np.stack([r0 - dr, c0 - dc, r0 + dr, c0 + dc, sig, sig, half, half, np.maximum(bg, 0.0)], axis=1)


def _linear_fit(data, mask, start, gain, iterations: int = 6) -> BatchFit:
    """Poisson fits of the intensity and background of axis-aligned Gaussians whose centre and widths are held
    at ``start`` (N, 6; counts), all patches at once: Fisher scoring of the two linear parameters
    (:func:`braggflow.profiles.fitting.fit_amplitudes`); a :class:`BatchFit` of model ``"gauss"`` (counts;
    covariance NaN; ``ok`` where the intensity is positive and the deviance finite)."""
    n = data.shape[0]
    p = np.array(start, dtype=float, copy=True)
    valid = np.all(np.isfinite(p), axis=1) & (p[:, 2] > 0) & (p[:, 3] > 0)
    p[~valid] = [data.shape[-1] // 2, data.shape[-1] // 2, 1.0, 1.0, 1.0, 0.0]
    good = ~mask
    inten, bg, deviance = fit_amplitudes(data, good, p, gain=gain, iterations=iterations)
    params = np.column_stack([p[:, :4], inten, bg])
    npix = good.reshape(n, -1).sum(axis=1)
    ok = valid & np.isfinite(deviance) & (inten > 1e-9 * gain) & (npix > 6)
    params[~ok] = np.nan
    return BatchFit(model="gauss", params=params, cov=np.full((n, 6, 6), np.nan), deviance=deviance,
                    npix=npix, iterations=np.full(n, iterations), ok=ok, converged=ok.copy())


def screen_statistics(data, mask, *, gain: float = 1.0, start=None, shape_fitted=None):
    """The screen's statistics of each patch from one axis-aligned Gaussian fit: the deviance excess and the
    largest matched-filter significance of the residual.

    ``excess = (D - dof) / sqrt(2 dof)``: the Poisson deviance ``D`` of the
    Gaussian fit against its degrees of freedom (about N(0, 1) for a single
    Gaussian peak); ``bump``: the residual ``y - mu`` correlated with the
    fitted Gaussian centred on each pixel, over its standard deviation
    (``sqrt(sum g^2 mu)``), the largest over the patch (a second peak the
    fit left out; about 2-3 for a single peak, the largest of ~100
    correlated normal deviates).

    Parameters
    ----------
    data : (N, s, s) ndarray
        Patches, counts.
    mask : (N, s, s) ndarray of bool
        True = pixel left out.
    gain : float
        Counts (ADU) per photon.
    start : (N, 6) ndarray, optional
        Where the Gaussian fit starts (row, col, sigma_row, sigma_col in patch px, intensity, background in
        counts; a located peak's values); default: the patch's moments.
    shape_fitted : (N,) array_like of bool, optional
        Patches whose ``start`` centre and widths are already those of a Poisson fit of this Gaussian (a peak
        located by ``"gauss"``): only their intensity and background are fitted (:func:`_linear_fit`, the
        shape held), which is the full fit where the located patch is this one and a deviance a little above
        it (more patches sent) where it is shifted by a pixel.  Needs ``start``.

    Returns
    -------
    excess, bump : (N,) ndarray
        NaN where the Gaussian fit failed.
    fit : braggflow.profiles.fitting.BatchFit
        The Gaussian fit (patch coordinates; counts; the covariance NaN for the ``shape_fitted`` patches).
    """
    n, s = data.shape[0], data.shape[-1]
    if start is None:
        fit, _ = fit_with_start(data, mask, gain=gain, profile="gauss")
    elif shape_fitted is None or not np.any(shape_fitted):
        fit = fit_profiles(data, ~mask, start, model="gauss", gain=gain)
    else:
        known = np.asarray(shape_fitted, dtype=bool)
        every = known.all()
        fit = (_linear_fit(data, mask, start, gain) if every
               else _linear_fit(data[known], mask[known], start[known], gain))
        if not every:
            rest = fit_profiles(data[~known], ~mask[~known], start[~known], model="gauss", gain=gain)
            fit = _interleave(fit, known, rest)
    p = nan_to_num(fit.params)
    y = np.maximum(data, 0.0).reshape(n, s * s)
    if gain != 1.0:  # x / 1 is x
        p[:, 4:] /= gain
        y = y / gain
    y = np.ascontiguousarray(y)
    good = np.ascontiguousarray(~mask.reshape(n, s * s))
    bump = residual_bumps(y, good, p, s, 0.5, s / 4)
    dof = np.maximum(fit.npix - 6, 1)
    excess = (fit.deviance - dof) / np.sqrt(2.0 * dof)
    bad = ~fit.ok
    return np.where(bad, np.nan, excess), np.where(bad, np.nan, bump), fit


def find_blends(data, mask=None, *, gain: float = 1.0, threshold: float = DEBLEND_THRESHOLD,
                screen: bool = True, start=None, shape_fitted=None) -> BlendTest:
    """Fit one and two components to each patch and decide which patches hold a blend.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts, the peak near the centre.
    mask : (N, s, s) array_like of bool, optional
        True = pixel left out.
    gain : float
        Counts (ADU) per photon.
    threshold : float
        Deviance drop above which a patch is a blend.
    screen : bool
        Fit the two models only to the patches that the screen
        (:func:`screen_statistics`) sends: deviance excess above
        :data:`SCREEN_EXCESS` or residual bump above :data:`SCREEN_BUMP`; the
        others are single peaks (NaN drop).  Of those sent, the one-component
        fit is left out where the two components lower the deviance of the
        screen's Gaussian by no more than the smaller of ``threshold`` and
        :data:`RECOGNITION_THRESHOLD` less :data:`_SKIP_MARGIN` (NaN drop: the
        pseudo-Voigt, which holds the Gaussian, fits at least as well, so its
        drop is smaller still).  False: every patch, both fits.
    start : (N, 6) ndarray, optional
        Start of the screen's Gaussian fit (see :func:`screen_statistics`).
    shape_fitted : (N,) array_like of bool, optional
        The patches whose ``start`` is a Gaussian fit's (see :func:`screen_statistics`).

    Returns
    -------
    test : BlendTest
        ``screened`` (N,) bool: the patches sent on by the screen (they had the two-component fit).
    """
    data, mask = as_patch_arrays(data, mask)
    n, s = data.shape[0], data.shape[-1]
    if screen and n:
        excess, bump, gfit = screen_statistics(data, mask, gain=gain, start=start, shape_fitted=shape_fitted)
        sent = np.flatnonzero(~((excess <= SCREEN_EXCESS) & (bump <= SCREEN_BUMP)))  # NaN (failed fit): sent
        g = _take(gfit, sent)
        ok = g.ok
    else:
        sent = np.arange(n)
        ok = np.zeros(n, dtype=bool)
        g = None
    # where the screen's Gaussian failed (or without the screen), the pseudo-Voigt from the moments, which then
    # starts the pair
    moments = np.flatnonzero(~ok)
    rest = (fit_with_start(data[sent[moments]], mask[sent[moments]], gain=gain, profile="pvoigt",
                           supersample=_SINGLE_SUPERSAMPLE)[0]
            if moments.size else _empty_fit("pvoigt"))
    level, inten = (np.full(len(sent), np.nan) if g is None else g.column(k).copy() for k in ("background",
                                                                                           "intensity"))
    level[moments], inten[moments] = rest.column("background"), rest.column("intensity")
    sent_data, sent_mask = data[sent], mask[sent]
    sent_good = ~sent_mask
    pair = fit_profiles(sent_data, sent_good, _pair_start(sent_data, sent_mask, level, inten), model="gauss2",
                        gain=gain)
    single = _scatter(rest, moments, len(sent))
    if g is not None and ok.any():
        # the pseudo-Voigt from the screen's Gaussian, left out where even the Gaussian's drop cannot pass
        bound = np.where(pair.ok, g.deviance - pair.deviance, np.inf)
        need = np.flatnonzero(ok & ~(bound <= min(threshold, RECOGNITION_THRESHOLD) - _SKIP_MARGIN))
        fitted = fit_profiles(sent_data[need], sent_good[need],
                              start_parameters("pvoigt", *g.params[need].T, supersample=_SINGLE_SUPERSAMPLE),
                              model="pvoigt", gain=gain, supersample=_SINGLE_SUPERSAMPLE)
        for name in ("params", "cov", "deviance", "npix", "iterations", "ok", "converged"):
            getattr(single, name)[need] = getattr(fitted, name)
    drop = np.where(single.ok & pair.ok, single.deviance - pair.deviance, np.nan)
    p = pair.params
    inside = np.all((p[:, :4] > -0.5) & (p[:, :4] < s - 0.5), axis=1)
    apart = np.hypot(p[:, 0] - p[:, 2], p[:, 1] - p[:, 3]) >= _MIN_SEPARATION
    blended = (drop > threshold) & inside & apart & (p[:, 6] > 0) & (p[:, 7] > 0)
    screened = np.zeros(n, dtype=bool)
    screened[sent] = True
    return BlendTest(_scatter(single, sent, n), _scatter(pair, sent, n), _spread(drop, sent, n, np.nan),
                     _spread(np.asarray(blended, dtype=bool), sent, n, False), screened)


def recognise_blends(data, mask=None, *, gain: float = 1.0, threshold: float = RECOGNITION_THRESHOLD):
    """Which patches probably hold an unresolved blend: two components lower the Poisson deviance by more than
    ``threshold``, without the geometric conditions of a split.

    Recognising a blend is a weaker decision than splitting it (:func:`find_blends`): the peak's one-peak
    centre error is not to be trusted and it belongs in a joint fit, even where the two components are not
    placed well enough to become two rows.  Every patch has both fits (no screen: the screen's misses would
    be missed blends).  The statistic is the one :func:`find_blends` splits on (one rotated pseudo-Voigt
    against two Gaussians of one shape); its threshold :data:`RECOGNITION_THRESHOLD` keeps the false alarms on
    single peaks of each kind (round, pseudo-Voigt, elongated) below 1 % rather than the split's 0.5 %.

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts, the peak near the centre.
    mask : (N, s, s) array_like of bool, optional
        True = pixel left out.
    gain : float
        Counts (ADU) per photon.
    threshold : float
        Deviance drop above which a patch is recognised as a blend.

    Returns
    -------
    probable : (N,) ndarray of bool
        True where the patch probably holds two peaks (False where a fit failed).
    drop : (N,) ndarray
        The deviance drop, one component minus two (NaN where a fit failed).

    Notes
    -----
    On the localization benchmark's unresolved neighbours (closer than the Sparrow limit, neighbour flux
    0.1-1 x the peak's) about 60 % are recognised at 1 % false alarms: the rest are not separable from one
    (elliptical, winged) peak at their noise.  Fitting the noiseless blends with one pseudo-Voigt leaves a
    deviance (the test's non-centrality) above 10 for only 70 % of them and above 2 for 84 %; the
    Neyman-Pearson test of each blend against its nearest single pseudo-Voigt, parameters known, would detect
    77 % at 1 % false alarms (``bench/localize.py``'s blend table).

    References
    ----------
    Stetson, PASP 99, 191 (1987); Wilks, Ann. Math. Stat. 9, 60 (1938) (the likelihood-ratio statistic).
    """
    test = find_blends(data, mask, gain=gain, threshold=np.inf, screen=False)
    drop = test.drop
    return drop > threshold, drop  # NaN: False


def _spread(values, rows, n, fill):
    """(n,) array of ``fill`` with ``values`` at ``rows``."""
    out = np.full(n, fill, dtype=np.asarray(values).dtype)
    out[rows] = values
    return out


def _empty_fit(model: str) -> BatchFit:
    """An empty BatchFit of ``model``."""
    npar = len(PARAMETERS[model])
    return BatchFit(model=model, params=np.zeros((0, npar)), cov=np.zeros((0, npar, npar)), deviance=np.zeros(0),
                    npix=np.zeros(0, dtype=np.int64), iterations=np.zeros(0, dtype=np.int64),
                    ok=np.zeros(0, dtype=bool), converged=np.zeros(0, dtype=bool))


def _interleave(a: BatchFit, where_a: np.ndarray, b: BatchFit) -> BatchFit:
    """One BatchFit of N patches: those of ``a`` where ``where_a`` (N,) bool, those of ``b`` elsewhere, each in
    its order (same model)."""
    where_b = ~where_a
    fields = {}
    for k in ("params", "cov", "deviance", "npix", "iterations", "ok", "converged"):
        va, vb = getattr(a, k), getattr(b, k)
        out = np.empty((where_a.size,) + va.shape[1:], dtype=np.result_type(va, vb))
        out[where_a], out[where_b] = va, vb
        fields[k] = out
    return BatchFit(model=a.model, **fields)


def _take(fit: BatchFit, rows) -> BatchFit:
    """The patches ``rows`` of ``fit``."""
    return BatchFit(model=fit.model, **{k: getattr(fit, k)[rows] for k in
                                        ("params", "cov", "deviance", "npix", "iterations", "ok", "converged")})


def _scatter(fit: BatchFit, rows, n) -> BatchFit:
    """A BatchFit of ``n`` patches holding ``fit`` at ``rows`` (NaN parameters, not ok elsewhere)."""
    npar = fit.params.shape[1]
    params = np.full((n, npar), np.nan)
    cov = np.full((n, npar, npar), np.nan)
    params[rows], cov[rows] = fit.params, fit.cov
    return BatchFit(model=fit.model, params=params, cov=cov, deviance=_spread(fit.deviance, rows, n, np.nan),
                    npix=_spread(fit.npix, rows, n, 0), iterations=_spread(fit.iterations, rows, n, 0),
                    ok=_spread(fit.ok, rows, n, False), converged=_spread(fit.converged, rows, n, False))


def _neighbour_refit(columns, rows, p, cov, origin, first) -> dict[str, np.ndarray]:
    """The position columns of the table ``columns`` (name to (N,) array) with the ``rows`` whose second
    component is another peak's remainder given the centre and errors of their first component (the joint fit
    took the neighbour's wings, which bias a single fit); new arrays."""
    m = first
    r_i, c_i = 2 * m, 2 * m + 1
    idx = np.arange(len(rows))
    values = dict(row=p[idx, r_i] + origin[:, 0], col=p[idx, c_i] + origin[:, 1],
                  row_err=np.sqrt(cov[idx, r_i, r_i]), col_err=np.sqrt(cov[idx, c_i, c_i]), rc_cov=cov[idx, r_i, c_i])
    changed = {}
    for name, v in values.items():
        column = np.array(columns[name], dtype=float)
        column[rows] = v
        changed[name] = column
    return changed


def _located_start(sigma_row, sigma_col, background, patches, rows, cols) -> np.ndarray:
    """The screen's Gaussian start from located peaks' ``sigma_row``, ``sigma_col`` (px) and ``background``
    (counts; (N,) each, NaN where unknown), (N, 6): centre and widths (1 px where unknown) in patch px, the patch's
    sum above that background (or the patch's median) and that background, counts."""
    origin = patches.origin.astype(float)
    data, good = patches.data, ~patches.mask
    level = np.array(background, dtype=float)
    unknown = ~np.isfinite(level)
    if unknown.any():
        level[unknown] = np.median(data[unknown].reshape(int(unknown.sum()), -1), axis=1)
    level = np.maximum(level, 0.0)
    inten = np.maximum(np.where(good, data - level[:, None, None], 0.0).sum(axis=(1, 2)), 1.0)
    size = data.shape[-1]
    width = (starting_widths(np.asarray(w, dtype=float), 0.3, size / 2) for w in (sigma_row, sigma_col))
    return start_parameters("gauss", rows - origin[:, 0], cols - origin[:, 1], *width, inten, level)


def _flag_probable(columns, test: BlendTest, placed, origin, rows, cols) -> np.ndarray:
    """The ``flags`` of the table ``columns`` (a copy) with ``PROBABLE_BLEND`` on the peaks whose drop exceeds
    :data:`RECOGNITION_THRESHOLD` but which are not split, unless the pair's component farther from the peak is
    within 2.5 px of another peak of the table (that peak's remainder, not a blend)."""
    local = np.flatnonzero((test.drop > RECOGNITION_THRESHOLD) & ~test.blended)  # NaN: False
    flags = np.array(columns["flags"], dtype=np.uint32)
    if local.size == 0:
        return flags
    p = test.pair.params[local]
    o = origin[local].astype(float)
    centre = np.stack([rows[local], cols[local]], axis=1) - o
    far = np.where(np.hypot(p[:, 0] - centre[:, 0], p[:, 1] - centre[:, 1])
                   > np.hypot(p[:, 2] - centre[:, 0], p[:, 3] - centre[:, 1]), 0, 1)
    pos = np.stack([p[np.arange(local.size), 2 * far], p[np.arange(local.size), 2 * far + 1]], axis=1) + o
    others = np.stack([columns["row"], columns["col"]], axis=1)
    d = np.hypot(pos[:, None, 0] - others[None, :, 0], pos[:, None, 1] - others[None, :, 1])
    d[np.arange(local.size), placed[local]] = np.inf  # the peak itself
    keep = ~(np.nanmin(d, axis=1) < _NEIGHBOUR_DISTANCE) if len(others) > 1 else np.ones(local.size, dtype=bool)
    flags[placed[local[keep]]] |= np.uint32(Flag.PROBABLE_BLEND)
    return flags


def deblend(frame: np.ndarray, table: pd.DataFrame, *, mask: np.ndarray | None = None,
            labels: np.ndarray | None = None, patch_size: int = 11, gain: float = 1.0,
            threshold: float = DEBLEND_THRESHOLD, screen: bool = True, patches=None) -> pd.DataFrame:
    """Split the peaks of ``table`` whose patch holds two peaks into two rows.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    table : pandas.DataFrame
        Peak table with ``row``, ``col`` (px; a located or brightest-pixel
        centre).
    mask : (H, W) ndarray of bool, optional
        True = bad pixel.
    labels : (H, W) ndarray of int, optional
        The finder's label image (label k is table row k - 1): other peaks'
        pixels are removed from each patch.
    patch_size : int
        Patch side, odd, px.
    gain : float
        Counts (ADU) per photon.
    threshold : float
        Deviance drop above which a region is split (:data:`DEBLEND_THRESHOLD`).
    screen : bool
        Test only the peaks the screen sends (see :func:`find_blends`); False: every peak.
    patches : braggflow.locate.patches.Patches, optional
        Patches of the rows of ``table`` already cut with the same ``frame``,
        ``mask``, ``labels`` and ``patch_size`` (row k's patch for label k + 1;
        those :func:`braggflow.locate.locate` located the peaks in): a row
        whose ``row``, ``col`` round to its patch's centre pixel uses it, the
        others are cut again.

    Returns
    -------
    table : pandas.DataFrame
        A conformed copy.  Each blend's row holds the member nearer the old
        centre, and a new row (appended at the end, in the order of the
        blends) the other: ``row``, ``col``, ``row_err``, ``col_err``,
        ``rc_cov``, ``sigma_row``, ``sigma_col`` (px), ``intensity``,
        ``intensity_err``, ``background`` (counts) from the joint fit, and
        the flag ``BLENDED``.  A row whose second component is another
        peak's remainder (within 2.5 px of it, or within 4 px of a better-located
        second member of another blend) takes the joint fit's centre and errors
        of its own member, without a flag.  Other rows are
        unchanged.  The appended rows have no region in ``labels``.

    Raises
    ------
    BraggflowError
        If the inputs are inconsistent (see :func:`braggflow.locate.extract_patches`).
    """
    n = len(table)
    if n == 0:
        return conform(table)
    columns, n = deblend_columns(frame, conformed_columns(table), n, mask=mask, labels=labels, patch_size=patch_size,
                                 gain=gain, threshold=threshold, screen=screen, patches=patches)
    return table_from_columns(columns, n)


def deblend_columns(frame: np.ndarray, columns: dict, n: int, *, mask: np.ndarray | None = None,
                    labels: np.ndarray | None = None, patch_size: int = 11, gain: float = 1.0,
                    threshold: float = DEBLEND_THRESHOLD, screen: bool = True, patches=None) -> tuple[dict, int]:
    """:func:`deblend` on a peak table given as column arrays (a stage that builds its table once).

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    columns : dict of str to array
        The table's columns as :func:`braggflow.schema.conformed_columns` returns them (every schema column with
        its dtype, then any extra columns), ``n`` values each; read, never written.
    n : int
        Rows of the table, >= 1.
    mask, labels, patch_size, gain, threshold, screen, patches
        As :func:`deblend` takes them.

    Returns
    -------
    columns : dict of str to array
        The columns of the table :func:`deblend` returns, in the same order (for
        :func:`braggflow.schema.table_from_columns`): new arrays where changed or grown, the given arrays where
        unchanged.
    n : int
        Its rows: ``n`` plus one per blend split.

    Raises
    ------
    BraggflowError
        If the inputs are inconsistent (see :func:`braggflow.locate.extract_patches`).
    """
    row, col = columns["row"], columns["col"]
    placed = np.flatnonzero(np.isfinite(row) & np.isfinite(col))
    whole = placed.size == n

    def located(name):
        """The column ``name`` of the placed rows."""
        return columns[name] if whole else columns[name][placed]

    frame, rows, cols, size = check_patch_arrays(frame, located("row"), located("col"), size=patch_size, mask=mask,
                                                 labels=labels)
    relabel = None
    if labels is not None and not whole:  # label k + 1 is row k of the whole table
        relabel = np.zeros(n + 1, dtype=np.int32)
        relabel[1:] = n + 1
        relabel[placed + 1] = np.arange(1, placed.size + 1, dtype=np.int32)
    patches = _patches(frame, rows, cols, placed, n, size, mask, labels, relabel, patches)
    test = find_blends(patches.data, patches.mask, gain=gain, threshold=threshold, screen=screen,
                       start=_located_start(located("sigma_row"), located("sigma_col"), located("background"),
                                            patches, rows, cols),
                       shape_fitted=_gauss_located(located("method"), located("sigma_row"), located("sigma_col")))
    flags = _flag_probable(columns, test, placed, patches.origin, rows, cols)
    changed = {"flags": flags}  # the columns written
    local = np.flatnonzero(test.blended)
    if local.size == 0:
        return {**columns, **changed}, n
    hit = placed[local]
    p, cov = test.pair.params[local], test.pair.cov[local]
    origin = patches.origin[local].astype(float)
    centre = np.stack([rows[local], cols[local]], axis=1) - origin
    d1 = np.hypot(p[:, 0] - centre[:, 0], p[:, 1] - centre[:, 1])
    d2 = np.hypot(p[:, 2] - centre[:, 0], p[:, 3] - centre[:, 1])
    first = np.where(d1 <= d2, 0, 1)
    members = []
    take = np.arange(hit.size)
    # a second member next to another peak of the table is that peak's remainder (its region removed from the
    # patch, its wings not), not a blend; and a peak the finder left in two peaks' regions is the second member
    # of both blends: the better located of the two is kept
    second = np.where(first == 0, 1, 0)
    new_pos = np.stack([p[take, 2 * second], p[take, 2 * second + 1]], axis=1) + origin
    keep = ~(_nearest_other(new_pos, row, col, hit) < _NEIGHBOUR_DISTANCE)
    variance = cov[take, 2 * second, 2 * second] + cov[take, 2 * second + 1, 2 * second + 1]
    keep &= _distinct_members(new_pos, variance, keep)
    if not keep.all():  # the joint fit took another peak's light: its first member is the better centre
        changed.update(_neighbour_refit(columns, hit[~keep], p[~keep], cov[~keep], origin[~keep], first[~keep]))
        hit, local, p, cov, origin, first, take = (hit[keep], local[keep], p[keep], cov[keep], origin[keep],
                                                   first[keep], np.arange(int(keep.sum())))
        if hit.size == 0:
            return {**columns, **changed}, n
    for k in (0, 1):
        m = np.where(first == 0, k, 1 - k)  # member index: 0 keeps the row, 1 the new row
        r_i, c_i, i_i = 2 * m, 2 * m + 1, 6 + m
        members.append(dict(
            row=p[take, r_i] + origin[:, 0], col=p[take, c_i] + origin[:, 1],
            row_err=np.sqrt(cov[take, r_i, r_i]), col_err=np.sqrt(cov[take, c_i, c_i]), rc_cov=cov[take, r_i, c_i],
            sigma_row=p[:, 4], sigma_col=p[:, 5], intensity=p[take, i_i], intensity_err=np.sqrt(cov[take, i_i, i_i]),
            background=p[:, 8]))
    members[0]["snr"] = members[0]["intensity"] / members[0]["intensity_err"]
    members[1]["snr"] = members[1]["intensity"] / members[1]["intensity_err"]
    return _append_members(columns, n, hit, members, changed)


def _patches(frame, rows, cols, placed, n, size, mask, labels, relabel, given):
    """The patches of the ``placed`` rows (of ``n``) centred on ``rint(rows, cols)``: those of ``given`` (the
    patches of all ``n`` rows, or None) where centred on the same pixel, the others cut (:func:`patches_at`)."""
    if given is None or len(given.data) != n or given.data.shape[-1] != size:
        return patches_at(frame, rows, cols, size=size, mask=mask, labels=labels, relabel=relabel)
    h = size // 2
    centre = np.stack([np.rint(rows), np.rint(cols)], axis=1).astype(np.int64)
    recut = np.flatnonzero(np.any(given.origin[placed] + h != centre, axis=1))
    data, removed, origin = given.data[placed], given.mask[placed], given.origin[placed]
    if recut.size:
        lut = None
        if labels is not None:  # the recut rows are labels 1..m, every other peak one shared label
            lut = np.full(n + 1, n + 1, dtype=np.int32)
            lut[0] = 0
            lut[placed[recut] + 1] = np.arange(1, recut.size + 1, dtype=np.int32)
        cut = patches_at(frame, rows[recut], cols[recut], size=size, mask=mask, labels=labels, relabel=lut)
        data[recut], removed[recut], origin[recut] = cut.data, cut.mask, cut.origin
    return Patches(data=data, mask=removed, origin=origin, flags=given.flags[placed])


def _nearest_other(position, row, col, own) -> np.ndarray:
    """The distance from each ``position`` (M, 2; frame px) to the nearest peak of the table (``row``, ``col``,
    (N,) px; the finite ones) other than its own row ``own`` (M,), px; inf where there is none.  The Euclidean
    distance as a k-d tree measures it (the root of the summed squares)."""
    finite = np.flatnonzero(np.isfinite(row) & np.isfinite(col))
    dr = position[:, 0, None] - row[finite]
    dc = position[:, 1, None] - col[finite]
    dist = np.sqrt(dr * dr + dc * dc)
    dist[finite[None, :] == own[:, None]] = np.inf
    return dist.min(axis=1, initial=np.inf)


def _distinct_members(position, variance, candidate) -> np.ndarray:
    """Which ``candidate`` new members are not within :data:`_DUPLICATE_DISTANCE` of a better-located candidate,
    (N,) bool.

    ``position`` is (N, 2) frame px, ``variance`` (N,) the member's ``row_err**2 + col_err**2`` (px^2; NaN
    counts as the worst).  A peak that the finder left inside two found peaks' regions is the second member
    of both their blends: from the patch that holds its core it is located well, from the other (its core
    masked as the first peak's region) it is a fit of its wings, placed 2.5-3.5 px off and with an error
    ten times larger.  Greedy in order of the error: a candidate is kept unless a kept one lies within the distance.
    """
    distinct = np.zeros(len(position), dtype=bool)
    index = np.flatnonzero(candidate)
    if index.size < 2:
        distinct[index] = True
        return distinct
    order = index[np.argsort(nan_to_num(variance[index], nan=np.inf), kind="stable")]
    p = position[order]
    # apart[i, j]: candidate j (in that order) is at least the distance from candidate i (False where NaN)
    apart = np.hypot(p[None, :, 0] - p[:, None, 0], p[None, :, 1] - p[:, None, 1]) >= _DUPLICATE_DISTANCE
    kept = np.zeros(order.size, dtype=bool)
    kept[0] = True
    for i in range(1, order.size):
        kept[i] = apart[i, kept].all()
    distinct[order[kept]] = True
    return distinct


def _gauss_located(method, sigma_row, sigma_col) -> np.ndarray:
    """The peaks located by the Gaussian fit (their ``method`` "gauss", finite widths): their centre and widths
    are that fit's, (N,) bool."""
    if isinstance(method.dtype, pd.CategoricalDtype):  # the codes, not an object array of names
        categories = method.categories
        gauss = (method.codes == categories.get_loc("gauss")) if "gauss" in categories else False
    else:
        gauss = np.asarray(method) == "gauss"
    return gauss & np.isfinite(sigma_row) & np.isfinite(sigma_col)


def _append_members(columns, n, hit, members, changed) -> tuple[dict, int]:
    """The table ``columns`` (``n`` rows) with the ``changed`` columns (name to (n,) array; ``flags`` among them),
    the rows ``hit`` given the columns of ``members[0]`` and the rows of ``members[1]`` appended (each new row
    otherwise a copy of its blend's row), all flagged ``BLENDED``; and its rows."""
    order = np.concatenate([np.arange(n), hit])
    grown = {name: np.asarray(column)[order] for name, column in changed.items()}
    for name in members[0]:
        column = grown[name] if name in grown else np.asarray(columns[name], dtype=float)[order]
        column[hit] = members[0][name]
        column[n:] = members[1][name]
        grown[name] = column
    flags = grown["flags"]
    flags[hit] |= np.uint32(Flag.BLENDED)
    flags[n:] |= np.uint32(Flag.BLENDED)
    return {name: grown[name] if name in grown else _take_rows(values, order)
            for name, values in columns.items()}, len(order)


def _take_rows(values, order):
    """The entries ``order`` of a column (NumPy or pandas extension array)."""
    return values[order] if isinstance(values, np.ndarray) else values.take(order)
