"""Profile-fitted intensities: the integral over the plane of a peak profile fitted to each peak's window.

Summation over the finder's region misses the part of a peak outside it:
little for a Gaussian, a few per cent for a Moffat (r^-5 wings, like a
detector's point-spread function), a quarter for a pseudo-Voigt (r^-3).
Profile fitting (Diamond 1969; Kabsch's XDS; DIALS fits by default) measures
the whole peak, the wings beyond the window included, by the fitted model.

One model describes every kind: the rotated elliptical pseudo-Voigt-Moffat
of :mod:`braggflow.profiles.fitting` (``"pvmoffat"``),
``(1 - eta) G + eta M`` with a Gaussian core ``G`` and a Moffat wing ``M`` of
exponent beta from 1.5 to 10 (``beta = 1.5`` is the pseudo-Voigt's
Lorentzian, the heaviest wing allowed; ``eta = 0`` a Gaussian; ``eta = 1``,
``beta = 2.5`` a Moffat peak; rotation and two widths an elongated peak).
Each peak is fitted in a square window around its located centre (15 x 15
px, larger for regions that do not fit: :data:`WINDOW_HALVES`) with the
pixels of other peaks (grown by one pixel), masked and saturated pixels left
out.  The background is a free parameter of the fit, started at the table's
level: the window reaches far enough from the peak (7 px) for its outer
pixels to measure it.  The fits run compiled (:mod:`braggflow.profiles`).

How much wing a peak has is decided as profile fitting in crystallography
decides it (Kabsch 2010; DIALS): from the strong peaks, whose data can tell,
for the weak ones, whose data cannot.

1. Every peak is fitted by the rotated Gaussian (the profile with ``eta = 0``),
   started from the table's centre, widths, summed intensity and background.
2. A *strong* peak (signal-to-noise ratio of that fit above
   :data:`STRONG_SNR`, and no other peak's pixels within
   :data:`CROWDED_RADIUS` of its centre: a neighbour's light looks like a
   wing; crowded peaks count as weak unless fewer than
   :data:`REFERENCE_PEAKS` strong peaks are uncrowded) whose data may show a
   wing (Rao's score statistic for eta at the Gaussian's solution above
   :data:`WING_SCORE`, below the likelihood-ratio threshold; the others get
   no wing without a fit)
   is fitted by the full profile as well, from the first
   of :data:`WING_STARTS` and, when it has a wing, from the others too (the
   likelihood of a wing has several minima: one broad Moffat can take core
   and wings), the best kept; it keeps a wing when the wing lowers the
   Poisson deviance by more than :data:`WING_THRESHOLD` (a likelihood-ratio
   test; a Gaussian's free wing would only add variance).
3. The reference wing is the strong peaks' median ``eta`` (0 for those
   without a wing) and median exponent (of those with one), with the spread of
   ``eta`` among them less the fits' own noise.  With it (at least
   :data:`REFERENCE_PEAKS` strong peaks), a strong peak with a wing is
   refitted with its exponent held at the reference (a free exponent,
   extrapolated past the window, moves the intensity more than the data
   determine it), and a weak peak, or a strong one without a wing of its
   own where the reference has one, is fitted with the reference wing held;
   too few strong peaks, and each peak's own fit (step 2) is used.

The intensity is the fitted ``I`` (the model's integral over the plane) and
its error the square root of its variance from the inverse Fisher
information of the fit that gave it (Poisson noise, counts through
``gain``), the held wing parameters known, plus, for a peak given the
reference ``eta``, the intensity's sensitivity to ``eta`` (from the Fisher
information of all parameters) times the spread of ``eta`` among the strong
peaks.  A peak the model does not describe keeps the summed intensity and is
flagged ``SUMMED``: the fit failed, did not converge, moved the centre by
more than 2 px, its deviance exceeds the number of degrees of freedom by
more than 6 of its standard deviations (a poor fit), or its region does not
fit the largest window.

References
----------
Diamond, Acta Cryst. A25, 43 (1969); Kabsch, Acta Cryst. D66, 125 (2010)
(XDS); Winter et al., Acta Cryst. D74, 85 (2018) (DIALS); International
Tables for Crystallography F, 11.2.6.6 (summation against profile fitting);
Wilks, Ann. Math. Stat. 9, 60 (1938) (the likelihood-ratio test); Rao, Proc.
Camb. Phil. Soc. 44, 50 (1948) (the score test).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from braggflow.profiles._arrays import nan_to_num, starting_widths
from braggflow.profiles.fitting import fit_profiles, information, start_parameters, wing_scores
from braggflow.windows import cut_windows, grow8

__all__ = ["PROFILE_MODEL", "WINDOW_HALVES", "WING_THRESHOLD", "WING_SCORE", "WING_STARTS", "STRONG_SNR",
           "REFERENCE_PEAKS", "CROWDED_RADIUS", "profile_intensities"]

#: The profile fitted to every peak (see :mod:`braggflow.profiles.fitting`).
PROFILE_MODEL = "pvmoffat"
#: Half-sizes of the fit windows, px: a peak's region must lie inside, one pixel from the edge.
WINDOW_HALVES = (7, 10, 16, 24, 32)
_MAX_SHIFT = 2.0  # px, largest move of the centre from the located one
_DEVIANCE_SIGMAS = 6.0
_SUPERSAMPLE = 1  # pixel centres with the box-convolved precision
_ETA, _T, _INTENSITY = 5, 6, 7  # columns of the wing fraction, exponent and intensity in the parameters
#: Deviance drop (rotated Gaussian minus the full profile) above which a peak is given its wing.
WING_THRESHOLD = 6.0
#: Starting wing fraction and exponent 1 / beta of the full fit (each tried, the best kept): beta 2 and the
#: pseudo-Voigt's Lorentzian.
WING_STARTS = ((0.3, 0.5), (0.5, 2.0 / 3.0))
_WING_EXPONENTS = sorted({t for _, t in WING_STARTS})  # the exponents the wing score tries
#: Rao's score statistic for a wing at the rotated Gaussian's solution below which a strong peak is given no
#: wing without fitting one (the likelihood-ratio test's threshold corresponds to a score of about 2.4; a
#: Gaussian peak's score exceeds 2 in ~2 % of cases).
WING_SCORE = 2.0
#: Signal-to-noise ratio (of the Gaussian fit's intensity) of a strong peak, whose own fit gives its shape.
STRONG_SNR = 50.0
#: Strong peaks needed for a reference shape.
REFERENCE_PEAKS = 5
#: Distance (px) from a peak's centre within which another peak's pixels (grown by one) make it crowded: a strong
#: crowded peak does not give the reference shape and is fitted with it (when enough strong peaks are not crowded).
CROWDED_RADIUS = 6.0


def profile_intensities(frame, rows, cols, *, ids, sigma_row, sigma_col, summed, background, background_var=None,
                        mask=None, labels=None, saturated=None, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Fit the profile to each peak and return its integral and error.

    Parameters
    ----------
    frame : (H, W) ndarray
        Corrected frame, counts.
    rows, cols : (N,) ndarray of float
        Located centres, px (finite).
    ids : (N,) ndarray of int
        Each peak's label in ``labels``.
    sigma_row, sigma_col : (N,) ndarray of float
        Width estimates for the start, px (NaN: 1 px).
    summed : (N,) ndarray of float
        Summed intensities, counts (the start).
    background : (N,) ndarray of float
        Background level where the fit starts, counts/px.
    background_var : (N,) ndarray of float, optional
        Variance of ``background`` (counts^2): given, the fit's background is
        tied to ``background`` by a Gaussian prior of that variance
        (``background_prior`` of :func:`~braggflow.profiles.fitting.fit_profiles`);
        None (default): fitted freely.
    mask, labels, saturated : (H, W) ndarray, optional
        Bad pixels, the finder's label image, saturated pixels.
    gain : float
        Counts (ADU) per photon.

    Returns
    -------
    result : dict of (N,) ndarray
        ``intensity``, ``intensity_err`` (counts; NaN where not described),
        ``described`` (bool: the profile describes the peak), ``eta``, ``beta``
        (the wing fraction and exponent of the fit used; beta NaN without a
        wing), ``strong`` (bool: signal-to-noise ratio above
        :data:`STRONG_SNR` and not crowded: the peaks whose own fit gives
        their shape), ``reference`` (bool: fitted with the reference
        wing exponent), ``drop`` (the deviance drop of the wing, NaN where
        not tested), ``t``, ``eta_err``, ``t_err`` (1 / beta and the own fit's
        errors).
    """
    n = len(rows)
    out = dict(intensity=np.full(n, np.nan), intensity_err=np.full(n, np.nan), described=np.zeros(n, dtype=bool),
               eta=np.full(n, np.nan), beta=np.full(n, np.nan), drop=np.full(n, np.nan),
               strong=np.zeros(n, dtype=bool), reference=np.zeros(n, dtype=bool), t=np.full(n, np.nan),
               eta_err=np.full(n, np.nan), t_err=np.full(n, np.nan))
    if n == 0:
        return out
    ri = np.rint(rows).astype(np.intp)
    ci = np.rint(cols).astype(np.intp)
    todo = np.arange(n)
    levels = []
    for level, half in enumerate(WINDOW_HALVES):
        if todo.size == 0:
            break
        last = level == len(WINDOW_HALVES) - 1
        lab = None if labels is None else cut_windows(labels, ri[todo], ci[todo], half, 0)
        if lab is not None:
            own = lab == ids[todo][:, None, None]
            larger = (own & _window_masks(half)[0]).any(axis=(1, 2))
            if larger.any() and not last:
                here = todo[~larger]
                lab = lab[~larger]
                todo_next = todo[larger]
            elif larger.any():
                here, lab, todo_next = todo[~larger], lab[~larger], np.zeros(0, dtype=np.intp)
            else:
                here, todo_next = todo, np.zeros(0, dtype=np.intp)
        else:
            here, todo_next = todo, np.zeros(0, dtype=np.intp)
        if here.size:
            levels.append(_Level.cut(frame, here, ri, ci, rows, cols, half, lab, ids, sigma_row, sigma_col, summed,
                                     background, background_var, mask, saturated, gain))
        todo = todo_next
    for lv in levels:  # the rotated Gaussian of every peak
        lv.fit_gaussian(gain)
    # the strong peaks without a close neighbour give the shape (a neighbour's light looks like a wing), unless
    # fewer than REFERENCE_PEAKS are such
    if sum(int((lv.strong & ~lv.crowded).sum()) for lv in levels) >= REFERENCE_PEAKS:
        for lv in levels:
            lv.strong = lv.strong & ~lv.crowded
    for lv in levels:  # the free profile of the strong ones that may have a wing
        out["strong"][lv.here] = lv.strong
        screen = np.zeros(len(lv.here), dtype=bool)
        strong = np.flatnonzero(lv.strong)
        screen[strong] = lv.wing_score(strong, gain) > WING_SCORE
        lv.no_wing(lv.strong & ~screen, out)
        lv.fit_free(screen, gain, out)
    shape = _reference_shape(out)
    for lv in levels:
        if shape is None:  # too few strong peaks: each weak peak's own profile, its wing chosen by the data
            lv.fit_free(~lv.strong, gain, out)
        else:
            lv.fit_reference(*shape, gain, out)
    out["beta"] = 1.0 / out["t"]
    return out


@functools.lru_cache(maxsize=len(WINDOW_HALVES))
def _window_masks(half: int) -> tuple[np.ndarray, np.ndarray]:
    """The (w, w) pixels of a window of half-size ``half`` on its edge, and those within :data:`CROWDED_RADIUS`
    of its centre (made once per size; not to be changed)."""
    edge = np.zeros((2 * half + 1, 2 * half + 1), dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    offs = np.arange(-half, half + 1) ** 2
    return edge, (offs[:, None] + offs[None, :]) <= CROWDED_RADIUS**2


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1D array by one sort, without its overhead: the middle value, or the two middle ones'
    sum over 2, each sum started at 0.0 as NumPy's mean starts it (so that -0.0 gives 0.0); NaN for an empty
    array or one holding a NaN."""
    ordered = np.sort(values)
    if ordered.size == 0 or np.isnan(ordered[-1]):
        return float("nan")
    h = ordered.size // 2
    return float(0.0 + ordered[h]) if ordered.size % 2 else float((0.0 + ordered[h - 1] + ordered[h]) / 2.0)


def _spread(values: np.ndarray) -> float:
    """Half the 16-84 % range (a standard deviation robust to outliers); 0 for fewer than two values, NaN for
    values holding a NaN.  The percentiles are ``np.percentile``'s (linear interpolation) by one sort, without
    its overhead: the same values to the last bit."""
    if values.size < 2:
        return 0.0
    ordered = np.sort(values)
    if np.isnan(ordered[-1]):
        return float("nan")
    return float((_sorted_quantile(ordered, 84 / 100) - _sorted_quantile(ordered, 16 / 100)) / 2)


def _sorted_quantile(ordered: np.ndarray, q: float) -> float:
    """The quantile ``q`` (0-1) of the sorted values ``ordered`` (no NaN) as ``np.quantile`` interpolates it
    (method "linear": ``a + (b - a) g``, or ``b - (b - a) (1 - g)`` for a fraction ``g >= 0.5``)."""
    at = (ordered.size - 1) * q
    if at >= ordered.size - 1:
        return ordered[-1]
    below = np.floor(at)
    gamma = at - below
    a, b = ordered[int(below)], ordered[int(below) + 1]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _better(a, b):
    """Per patch, the fit of ``a`` and ``b`` (same model and patches) with the lower deviance among the usable."""
    use_b = b.ok & (~a.ok | (b.deviance < a.deviance))
    return dataclasses.replace(_choose(~use_b, a, b), iterations=a.iterations + b.iterations)


def _reference_shape(out):
    """The wing of the strong peaks: eta and t = 1 / beta (medians; eta 0 for the peaks without a wing, t of
    those with one) and the covariance (2, 2) of their spread among the peaks less the fits' own noise; None
    when fewer than :data:`REFERENCE_PEAKS` peaks are strong and described."""
    strong = out["described"] & out["strong"]
    if strong.sum() < REFERENCE_PEAKS:
        return None
    eta = out["eta"][strong]
    winged = strong & (out["eta"] > 0)
    t = out["t"][winged]
    shape = (_median(eta), _median(t) if t.size else 0.5)
    var_eta = max(_spread(eta) ** 2 - _median(out["eta_err"][strong] ** 2), 0.0)
    return shape, np.diag([var_eta, 0.0])


def _prior_weight(var, gain) -> np.ndarray:
    """1 / variance (photons^-2) of a background measurement of variance ``var`` (counts^2); 0 where none."""
    var = np.asarray(var, dtype=float)
    good = np.isfinite(var) & (var > 0)
    return np.where(good, gain * gain / np.where(good, var, 1.0), 0.0)


def _shape_sensitivity(fit, win, good, gain, prior, held) -> np.ndarray:
    """d intensity / d (held parameters) of fits with those parameters held, the others following (counts),
    (N, len(held)).

    From the expected Fisher information ``F`` of all parameters at the
    solution: the free parameters move by ``-F_ff^-1 F_fh`` per unit change of
    the held ones ``h``."""
    p = fit.params.copy()
    p[:, -2:] /= gain
    weight = None if prior is None else _prior_weight(prior[1], gain)
    fisher, _ = information(PROFILE_MODEL, win / gain, good, np.nan_to_num(p), supersample=_SUPERSAMPLE,
                            background_weight=weight)
    free = [i for i in range(p.shape[1]) if i not in held]
    ff = fisher[:, free][:, :, free]
    fh = fisher[:, free][:, :, list(held)]
    out = np.zeros((len(p), len(held)))
    ok = fit.ok & np.all(np.isfinite(ff), axis=(1, 2)) & np.all(np.isfinite(fh), axis=(1, 2))
    if ok.any():
        d = -np.linalg.solve(ff[ok] + 1e-12 * np.eye(len(free)), fh[ok])
        out[ok] = d[:, free.index(_INTENSITY), :] * gain
    return out


class _Level:
    """The windows of one size (half-size ``half``) and the fits in them."""

    @classmethod
    def cut(cls, frame, here, ri, ci, rows, cols, half, lab, ids, sigma_row, sigma_col, summed, background,
            background_var, mask, saturated, gain):
        """Cut the windows of the peaks ``here`` (other peaks' pixels, masked and saturated ones left out)."""
        lv = cls()
        win = cut_windows(frame, ri[here], ci[here], half, 0).astype(float)
        if mask is not None:
            bad = cut_windows(mask, ri[here], ci[here], half, True)
        else:
            offs = np.arange(-half, half + 1)
            rr = ri[here][:, None, None] + offs[None, :, None]
            cc = ci[here][:, None, None] + offs[None, None, :]
            bad = (rr < 0) | (rr >= frame.shape[0]) | (cc < 0) | (cc >= frame.shape[1])
        bad = bad | ~np.isfinite(win)
        lv.crowded = np.zeros(len(here), dtype=bool)
        if lab is not None:
            not_own = lab != ids[here][:, None, None]
            others = grow8((lab > 0) & not_own) & not_own
            bad |= others
            lv.crowded = (others & _window_masks(half)[1]).any(axis=(1, 2))
        if saturated is not None:
            bad |= cut_windows(saturated, ri[here], ci[here], half, False)
        lv.here, lv.win, lv.good = here, np.where(bad, 0.0, win), ~bad
        lv.r0 = rows[here] - ri[here] + half
        lv.c0 = cols[here] - ci[here] + half
        lv.sr = starting_widths(sigma_row[here], 0.4, half / 2)
        lv.sc = starting_widths(sigma_col[here], 0.4, half / 2)
        lv.b0 = np.maximum(nan_to_num(background[here], nan=0.0), 0.0)
        lv.i0 = np.maximum(nan_to_num(summed[here], nan=0.0), 10.0 * gain)
        lv.prior = None if background_var is None else (lv.b0, background_var[here])
        return lv

    def _prior(self, sel):
        return None if self.prior is None else (self.prior[0][sel], self.prior[1][sel])

    def _fit(self, sel, start, gain, held=()):
        hold = np.zeros(start.shape[1], dtype=bool)
        hold[list(held)] = True
        return fit_profiles(self.win[sel], self.good[sel], start, model=PROFILE_MODEL, gain=gain,
                            supersample=_SUPERSAMPLE, background_prior=self._prior(sel), hold=hold)

    def fit_gaussian(self, gain) -> None:
        """The rotated Gaussian (the profile with eta = 0 held), started from the table's moments."""
        start = start_parameters("rgauss", self.r0, self.c0, self.sr, self.sc, self.i0, self.b0,
                                 supersample=_SUPERSAMPLE)
        self.gfit = _as_profile(fit_profiles(self.win, self.good, start, model="rgauss", gain=gain,
                                             supersample=_SUPERSAMPLE, background_prior=self.prior))
        start = _as_profile_params(start)
        self.start = np.where(self.gfit.ok[:, None], self.gfit.params, start)
        err = self.gfit.error("intensity")
        self.wing = np.zeros(len(self.here), dtype=bool)
        self.strong = self.gfit.ok & (self.gfit.column("intensity") > STRONG_SNR * np.where(err > 0, err, np.inf))

    def wing_score(self, sel, gain) -> np.ndarray:
        """Rao's score statistic for a wing at the rotated Gaussian's solution of the peaks ``sel``, (len(sel),):
        the derivative of the log-likelihood by eta at eta = 0 over its standard deviation (the efficient
        information, the other parameters free), the largest over the exponents of :data:`WING_STARTS`; about
        N(0, 1) for a Gaussian peak, large for a peak with a wing (Rao, Proc. Camb. Phil. Soc. 44, 50, 1948)."""
        p = nan_to_num(self.gfit.params[sel])
        photons = self.win[sel]
        if gain != 1.0:  # x / 1 is x
            p[:, -2:] /= gain
            photons = photons / gain
        weight = None if self.prior is None else _prior_weight(self.prior[1][sel], gain)
        z, finite = wing_scores(photons, self.good[sel], p, _WING_EXPONENTS, supersample=_SUPERSAMPLE,
                                background_weight=weight)
        ok = self.gfit.ok[sel] & finite
        return np.where(ok, z.max(axis=1), np.inf) if len(p) else np.zeros(0)

    def no_wing(self, mask, out) -> None:
        """The rotated Gaussian's intensity for the selected peaks (no wing)."""
        sel = np.flatnonzero(mask)
        g = _subset(self.gfit, sel)
        self._write(sel, g, 7, out, err=g.error("intensity"))
        out["eta"][self.here[sel]] = 0.0
        out["eta_err"][self.here[sel]] = 0.0

    def fit_free(self, mask, gain, out) -> None:
        """Each selected peak's own profile (best of :data:`WING_STARTS`), its wing kept when it lowers the
        deviance by more than :data:`WING_THRESHOLD`, else the rotated Gaussian."""
        sel = np.flatnonzero(mask)
        if sel.size == 0:
            return
        start = self.start[sel].copy()
        start[:, _ETA], start[:, _T] = WING_STARTS[0]
        fit = self._fit(sel, start, gain)
        g = _subset(self.gfit, sel)
        drop = np.where(g.ok & fit.ok, g.deviance - fit.deviance, np.where(fit.ok, np.inf, -np.inf))
        again = np.flatnonzero(drop > WING_THRESHOLD)  # a wing: its likelihood may have several minima
        for eta, t in WING_STARTS[1:]:
            if again.size == 0:
                break
            start2 = start[again]
            start2[:, _ETA], start2[:, _T] = eta, t
            best = _better(_subset(fit, again), self._fit(sel[again], start2, gain))
            fit = _assign(fit, again, best)
        drop = np.where(g.ok & fit.ok, g.deviance - fit.deviance, np.where(fit.ok, np.inf, -np.inf))
        wing = drop > WING_THRESHOLD
        chosen = _choose(wing, fit, g)
        self._write(sel, chosen, 9, out, err=np.where(wing, fit.error("intensity"), g.error("intensity")))
        idx = self.here[sel]
        out["drop"][idx] = drop
        out["eta"][idx] = np.where(wing, fit.column("eta"), 0.0)
        out["t"][idx] = np.where(wing, fit.column("t"), np.nan)
        out["eta_err"][idx] = np.where(wing, fit.error("eta"), 0.0)
        out["t_err"][idx] = np.where(wing, fit.error("t"), np.nan)
        self.wing[sel] = wing

    def fit_reference(self, shape, shape_cov, gain, out) -> None:
        """With the strong peaks' wing (eta, t): each strong peak with a wing of its own refitted with t held
        at the reference, each weak peak (and each strong one without a wing where the reference has one) with
        eta and t held, the spread of eta among the strong peaks added to its error."""
        own = self.strong & self.wing
        borrowed = ~self.strong | (self.strong & ~self.wing & (shape[0] > 0))
        for sel, held in ((np.flatnonzero(own), (_T,)), (np.flatnonzero(borrowed), (_ETA, _T))):
            if sel.size == 0:
                continue
            if len(held) == 2 and shape[0] == 0.0:  # no wing: the rotated Gaussian is that fit
                fit = _subset(self.gfit, sel)
            else:
                start = self.start[sel].copy()
                start[:, _ETA] = shape[0] if len(held) == 2 else out["eta"][self.here[sel]]
                start[:, _T] = shape[1]
                fit = self._fit(sel, start, gain, held=held)
            err = fit.error("intensity")
            index = [h - _ETA for h in held]
            cov = shape_cov[index][:, index]
            if np.any(cov != 0):
                grad = _shape_sensitivity(fit, self.win[sel], self.good[sel], gain, self._prior(sel), held)
                err = np.sqrt(err * err + np.einsum("ni,ij,nj->n", grad, cov, grad))
            self._write(sel, fit, 9 - len(held), out, err=err)
            idx = self.here[sel]
            out["eta"][idx] = fit.column("eta")
            out["t"][idx] = shape[1]
            out["reference"][idx] = True

    def _write(self, sel, fit, npar, out, err) -> None:
        """Intensity and error of a fit where the profile describes the peak (see the module docstring)."""
        inten = fit.column("intensity")
        dof = np.maximum(fit.npix - npar, 1)
        shift = np.hypot(fit.column("row") - self.r0[sel], fit.column("col") - self.c0[sel])
        described = (fit.ok & fit.converged & (inten > 0) & (err > 0) & (shift < _MAX_SHIFT)
                     & (fit.deviance < dof + _DEVIANCE_SIGMAS * np.sqrt(2.0 * dof)))
        idx = self.here[sel]
        out["intensity"][idx] = np.where(described, inten, np.nan)
        out["intensity_err"][idx] = np.where(described, err, np.nan)
        out["described"][idx] = described


def _as_profile_params(p: np.ndarray) -> np.ndarray:
    """Parameters of the rotated Gaussian (N, 7) as the profile's (N, 9): eta = 0, t = 0.5."""
    return np.concatenate([p[:, :5], np.zeros((len(p), 1)), np.full((len(p), 1), 0.5), p[:, 5:]], axis=1)


def _as_profile(fit):
    """A rotated-Gaussian BatchFit as the profile's with eta = 0 and t held (zero variance)."""
    cov = np.zeros((len(fit), 9, 9))
    for rows, from_rows in ((slice(0, 5), slice(0, 5)), (slice(_INTENSITY, 9), slice(5, 7))):
        cov[:, rows, :5] = fit.cov[:, from_rows, :5]
        cov[:, rows, _INTENSITY:] = fit.cov[:, from_rows, 5:]
    return type(fit)(model=PROFILE_MODEL, params=_as_profile_params(fit.params), cov=cov, deviance=fit.deviance,
                     npix=fit.npix, iterations=fit.iterations, ok=fit.ok, converged=fit.converged)


def _subset(fit, sel):
    """The patches ``sel`` of a BatchFit."""
    return type(fit)(model=fit.model, params=fit.params[sel], cov=fit.cov[sel], deviance=fit.deviance[sel],
                     npix=fit.npix[sel], iterations=fit.iterations[sel], ok=fit.ok[sel], converged=fit.converged[sel])


def _assign(fit, sel, part):
    """A copy of ``fit`` with the patches ``sel`` replaced by those of ``part``."""
    arrays = {}
    for name in ("params", "cov", "deviance", "npix", "iterations", "ok", "converged"):
        v = getattr(fit, name).copy()
        v[sel] = getattr(part, name)
        arrays[name] = v
    return type(fit)(model=fit.model, **arrays)


def _choose(use_a, a, b):
    """Per patch, fit ``a`` where ``use_a``, else ``b`` (same model and patches)."""
    def pick(x, y):
        return np.where(use_a.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)

    return type(a)(model=a.model, params=pick(a.params, b.params), cov=pick(a.cov, b.cov),
                   deviance=pick(a.deviance, b.deviance), npix=a.npix, iterations=a.iterations,
                   ok=pick(a.ok, b.ok), converged=pick(a.converged, b.converged))
