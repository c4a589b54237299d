"""Phase identification: observed lines or spots -> ranked phases, mixtures, per-peak hkl."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.phases.matching import (
    MatchOptions,
    PhaseMatch,
    combined_probability,
    contact_planes,
    match_phase,
    rank_key,
)
from braggflow.phases.structure import Phase

__all__ = ["Identification", "identify", "lines_from_peaks", "pattern_kind", "ring_share", "assign_peaks"]


@dataclass
class Identification:
    """Result of :func:`identify`.

    Attributes
    ----------
    ranked : pandas.DataFrame
        One row per candidate phase in the order of :func:`identify` (accepted
        phases first, in the order they were accepted): ``rank``, ``phase``,
        ``accepted``, ``score``, ``chance_probability``, ``significance``,
        ``n_matched``, ``n_expected``, ``refined``, ``a, b, c, alpha, beta, gamma``
        and ``*_err``, ``contact_plane``, ..., and the match of each phase on all
        observations: ``score_alone``, ``chance_probability_alone``,
        ``n_matched_alone``, ``n_expected_alone``.
    matches : dict of str -> PhaseMatch
        The match shown in ``ranked`` for each phase: accepted phases on the
        observations left to them when they were accepted, the others on the
        observations no accepted phase explains.
    alone : dict of str -> PhaseMatch
        Each phase matched on all observations.
    assignment : pandas.DataFrame
        The observations with ``phase`` (None: unexplained), ``h, k, l``, ``hkl``.
    unexplained : pandas.DataFrame
        Observations no accepted phase explains.
    mode : str
        "rings", "spots" or "gixd".
    mode_reason : str
        Why this mode ran (the option given, or what the automatic choice saw).
    options : MatchOptions
    record : dict
        Where :func:`~braggflow.phases.workflow.identify_results` recorded it
        (``number``, ``group``, ``earlier``); empty otherwise.
    """

    ranked: pd.DataFrame
    matches: dict
    assignment: pd.DataFrame
    unexplained: pd.DataFrame
    mode: str = "rings"
    options: MatchOptions = field(default_factory=MatchOptions)
    alone: dict = field(default_factory=dict)
    mode_reason: str = ""
    record: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-serialisable summary (mode, ranked table, unexplained lines)."""
        return {
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "ranked": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                       for row in self.ranked.to_dict(orient="records")],
            "unexplained": self.unexplained[[c for c in ("q", "q_err", "intensity") if c in self.unexplained]]
            .to_dict(orient="records"),
        }


def _powder_on_lines(spots: pd.DataFrame, phase: Phase, options: MatchOptions, q_range) -> PhaseMatch:
    """Powder hypothesis for grazing-incidence spots: the spots grouped into lines by q, every spot of a matched
    line paired with it (``pairs`` refer to the spots)."""
    lines = lines_from_peaks(spots)
    m = match_phase(lines, phase, options=options, q_range=q_range)
    if len(m.pairs):
        rows = []
        q = spots["q"].to_numpy(dtype=np.float64)
        inten = np.nan_to_num(spots["intensity"].to_numpy(dtype=np.float64)) if "intensity" in spots else None
        for row in m.pairs.to_dict(orient="records"):
            for label in lines.loc[row["obs"], "peaks"]:
                rows.append({**row, "obs": int(label), "q_obs": float(q[label]),
                             "intensity_obs": float(inten[label]) if inten is not None else float("nan")})
        m.pairs = pd.DataFrame(rows, columns=m.pairs.columns)
    return m


def _best_match(observed, phase, options, q_range, gixd):
    """Powder match, or (grazing incidence) the best of powder and every contact plane.

    Grazing incidence: the powder hypothesis matches the spots grouped into
    lines by q; a contact plane matches the spots in (q, polar angle), and its
    chance probability (that of the polar angles and the intensity order) is
    combined with that of the powder lines' positions, its evidence in q.  Each
    hypothesis' chance probability is then corrected for the number tried
    (Sidak), and the best by :func:`~braggflow.phases.matching.rank_key` is kept.
    """
    if not gixd:
        return match_phase(observed, phase, options=options, q_range=q_range)
    powder = _powder_on_lines(observed, phase, options, q_range)
    tried = [powder]
    if len(observed):
        for plane in contact_planes(phase, options.max_index):
            m = match_phase(observed, phase, options=options, q_range=q_range, contact_plane=plane)
            m.chance_probability = combined_probability(powder.p_positions, m.chance_probability)
            tried.append(m)
    for m in tried:
        p = min(1.0, float(m.chance_probability))
        m.chance_probability = float(-math.expm1(len(tried) * math.log1p(-p))) if p < 1 else 1.0
        m.significance = float(-math.log10(max(m.chance_probability, 1e-300)))
    return max(tried, key=_key)


def _key(m: PhaseMatch) -> tuple:
    return rank_key(m.score, m.chance_probability)


def identify(
    observed: pd.DataFrame,
    phases: list[Phase],
    *,
    options: MatchOptions | None = None,
    q_range: tuple[float, float] | None = None,
    p_max: float | None = None,
    max_phases: int | None = None,
    gixd: bool = False,
) -> Identification:
    """Rank candidate phases against observed lines and explain the pattern as a mixture.

    One ordering (:func:`~braggflow.phases.matching.rank_key`: lower chance
    probability first, then higher score) decides both the ranking and the
    acceptance.  Every phase is matched to the observations not yet explained;
    the first in that order is accepted when its chance probability is below
    ``p_max``, its matched observations are removed, and the others are matched
    again on what is left, until the first is not below ``p_max``.  The ranked
    table lists the accepted phases in the order they were accepted, then the
    others in the same order on what is left.  Every observation is assigned to
    at most one phase.

    Parameters
    ----------
    observed : pandas.DataFrame
        Lines (``q``, ``q_err``, ``intensity``) or, with ``gixd``, spots with
        ``q_xy``, ``q_z`` too.
    phases : list of Phase
    options : MatchOptions, optional
        Default: ``MatchOptions()``.
    q_range : (float, float), optional
        q range covered by the data, 1/Å.
    p_max : float, optional
        Largest chance probability of an accepted phase; default ``options.p_max`` (1e-3).
    max_phases : int, optional
        Stop after this many accepted phases.
    gixd : bool
        Search contact planes (fibre texture) as well as the powder hypothesis
        (for which the spots are grouped into lines by q).

    Returns
    -------
    identification : Identification

    Raises
    ------
    ConfigError
        Without candidate phases, or when the observations lack q / intensity.
    """
    if options is None:
        options = MatchOptions()
    if p_max is not None:
        options = replace(options, p_max=float(p_max))
    if not phases:
        raise ConfigError("no candidate phases given (use --cif FILE ... or --phase FILE ...)")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"candidate phase names must differ, got {names}")
    observed = observed.reset_index(drop=True)
    if q_range is None and len(observed):
        q = observed["q"].to_numpy()
        span = q.max() - q.min() if len(q) > 1 else q.max()
        q_range = (max(0.0, q.min() - 0.05 * span), q.max() + 0.05 * span)
    alone = {p.name: _best_match(observed, p, options, q_range, gixd) for p in phases}
    current = dict(alone)
    accepted: list[PhaseMatch] = []
    remaining = np.ones(len(observed), dtype=bool)
    while current:
        order = sorted(current.values(), key=_key, reverse=True)
        top = order[0]
        if top.chance_probability >= options.p_max or (max_phases is not None and len(accepted) >= max_phases):
            break
        index = np.flatnonzero(remaining)
        # pairs refer to the rows passed in: map them back to the full observation table
        if len(top.pairs):
            top.pairs = top.pairs.assign(obs=index[top.pairs["obs"].to_numpy(dtype=int)])
        accepted.append(top)
        remaining[top.pairs["obs"].to_numpy(dtype=int)] = False
        rest = observed[remaining].reset_index(drop=True)
        done = {m.phase for m in accepted}
        current = {p.name: _best_match(rest, p, options, q_range, gixd) for p in phases if p.name not in done}
    others = sorted(current.values(), key=_key, reverse=True)
    accepted_names = [m.phase for m in accepted]
    matches = {m.phase: m for m in accepted + others}
    rows = []
    for order, m in enumerate(accepted + others):
        a = alone[m.phase]
        rows.append({"rank": order + 1, "accepted": m.phase in accepted_names, **m.summary(),
                     "score_alone": round(float(a.score), 4), "chance_probability_alone": float(a.chance_probability),
                     "n_matched_alone": int(a.n_matched), "n_expected_alone": int(a.n_expected)})
    ranked = pd.DataFrame(rows)
    assignment = observed.copy()
    assignment["phase"] = pd.Series([None] * len(observed), dtype="object")
    assignment["hkl"] = pd.Series([None] * len(observed), dtype="object")
    for col in ("h", "k", "l"):
        assignment[col] = pd.array([pd.NA] * len(observed), dtype="Int32")
    for m in accepted:
        for row in m.pairs.itertuples():
            assignment.loc[row.obs, ["phase", "hkl"]] = [m.phase, row.hkl]
            assignment.loc[row.obs, ["h", "k", "l"]] = [row.h, row.k, row.l]
    unexplained = assignment[assignment["phase"].isna()].drop(columns=["phase", "hkl", "h", "k", "l"])
    mode = "gixd" if gixd else "rings"
    return Identification(ranked=ranked, matches=matches, assignment=assignment, unexplained=unexplained,
                          mode=mode, options=options, alone=alone)


def pattern_kind(table: pd.DataFrame, *, tolerance: float = 0.01, min_spread_deg: float = 30.0) -> str:
    """Whether a peak table looks like rings (powder) or spots, from how peaks spread in eta.

    Peaks are grouped by q (within ``tolerance`` relative); a group whose peaks
    cover more than ``min_spread_deg`` of eta with at least 4 peaks is a ring.
    The pattern is "rings" when ring groups hold most of the peaks.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``q`` and ``eta``.
    tolerance : float
    min_spread_deg : float

    Returns
    -------
    kind : {"rings", "spots"}
        "spots" when fewer than 4 peaks have q and eta.

    Raises
    ------
    ValueError
        If the table lacks q or eta.
    """
    in_rings, n = ring_share(table, tolerance=tolerance, min_spread_deg=min_spread_deg)
    if n < 4:
        return "spots"
    return "rings" if in_rings > 0.5 * n else "spots"


def ring_share(table: pd.DataFrame, *, tolerance: float = 0.01, min_spread_deg: float = 30.0) -> tuple[int, int]:
    """How many peaks lie on rings (see :func:`pattern_kind`), out of those with finite q and eta.

    Returns
    -------
    in_rings, n : int

    Raises
    ------
    ValueError
        If the table lacks q or eta.
    """
    for col in ("q", "eta"):
        if col not in table.columns:
            raise ValueError(
                f"peak table lacks {col!r}: run the geometry step first (braggflow run --poni/--set geometry...)"
            )
    t = table[np.isfinite(table["q"]) & np.isfinite(table["eta"])].sort_values("q")
    if len(t) == 0:
        return 0, 0
    q = t["q"].to_numpy()
    group = np.concatenate([[0], np.cumsum(np.diff(q) > tolerance * q[1:])])
    in_rings = 0
    for g in np.unique(group):
        eta = np.sort(t["eta"].to_numpy()[group == g])
        if len(eta) >= 4:
            gaps = np.diff(np.concatenate([eta, [eta[0] + 360]]))
            coverage = 360 - gaps.max()
            if coverage >= min_spread_deg:
                in_rings += len(eta)
    return in_rings, len(t)


def lines_from_peaks(table: pd.DataFrame, *, rel_tolerance: float = 2e-3) -> pd.DataFrame:
    """Group peaks of one pattern into powder lines by q (spot patterns, 1D matching).

    Parameters
    ----------
    table : pandas.DataFrame
        Peaks with ``q`` (and ``q_err``, ``intensity`` when present).
    rel_tolerance : float
        Peaks whose q differ by less than this (relative) join a line.

    Returns
    -------
    lines : pandas.DataFrame
        ``q`` (intensity-weighted mean), ``q_err`` (error of the mean, or the
        scatter when larger), ``intensity`` (sum), ``n_peaks``, ``peaks`` (list of row labels).

    Raises
    ------
    ValueError
        If the table lacks q.
    """
    if "q" not in table.columns:
        raise ValueError("peak table lacks 'q': run the geometry step first")
    t = table[np.isfinite(table["q"])].sort_values("q")
    if len(t) == 0:
        return pd.DataFrame({"q": [], "q_err": [], "intensity": [], "n_peaks": [], "peaks": []})
    q = t["q"].to_numpy()
    q_err = t["q_err"].to_numpy() if "q_err" in t.columns else np.full(len(q), np.nan)
    inten = t["intensity"].to_numpy() if "intensity" in t.columns else np.ones(len(q))
    inten = np.where(np.isfinite(inten) & (inten > 0), inten, 0.0)
    group = np.concatenate([[0], np.cumsum(np.diff(q) > rel_tolerance * q[1:])])
    rows = []
    labels = t.index.to_numpy()
    for g in np.unique(group):
        sel = group == g
        w = inten[sel] if inten[sel].sum() > 0 else np.ones(sel.sum())
        qm = float(np.average(q[sel], weights=w))
        e = q_err[sel]
        stat = float(np.sqrt(np.nansum((w / w.sum()) ** 2 * e ** 2))) if np.any(np.isfinite(e)) else 0.0
        scatter = (
            float(np.sqrt(np.average((q[sel] - qm) ** 2, weights=w) / max(1, sel.sum() - 1)))
            if sel.sum() > 1
            else 0.0
        )
        rows.append({"q": qm, "q_err": max(stat, scatter), "intensity": float(inten[sel].sum()),
                     "n_peaks": int(sel.sum()), "peaks": list(labels[sel])})
    return pd.DataFrame(rows)


def assign_peaks(table: pd.DataFrame, result: Identification, *, lines: pd.DataFrame | None = None,
                 n_sigma: float | None = None) -> pd.DataFrame:
    """Fill ``phase``, ``h``, ``k``, ``l`` of a peak table from an identification.

    Spots (``lines`` given, from :func:`lines_from_peaks`): each peak takes the
    assignment of its line.  Rings (``lines`` None): a peak takes the phase and
    hkl of the matched line nearest in q within ``n_sigma`` combined errors.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table with ``q``.
    result : Identification
    lines : pandas.DataFrame, optional
        The observations passed to :func:`identify` when they were built from
        this table's peaks; must have the ``peaks`` column.
    n_sigma : float, optional
        Default: the identification's option.

    Returns
    -------
    table : pandas.DataFrame
        A copy with ``phase`` (category), ``h``, ``k``, ``l`` (Int32).
    """
    out = table.copy()
    phase = np.array([None] * len(out), dtype=object)
    hkl = np.full((len(out), 3), -(10 ** 6), dtype=np.int64)
    pos = {label: i for i, label in enumerate(out.index)}
    assignment = result.assignment
    if lines is not None and "peaks" in lines.columns:
        for i, row in assignment.iterrows():
            if row["phase"] is None or (isinstance(row["phase"], float) and np.isnan(row["phase"])):
                continue
            for label in lines.loc[i, "peaks"]:
                phase[pos[label]] = row["phase"]
                hkl[pos[label]] = [row["h"], row["k"], row["l"]]
    elif "q" in out.columns and len(out):
        n_sigma = n_sigma if n_sigma is not None else result.options.n_sigma
        done = assignment[assignment["phase"].notna()]
        if len(done):
            q = out["q"].to_numpy(dtype=np.float64)
            q_err = out["q_err"].to_numpy(dtype=np.float64) if "q_err" in out.columns else np.zeros(len(q))
            lq = done["q"].to_numpy()
            lerr = done["q_err"].to_numpy() if "q_err" in done.columns else np.zeros(len(lq))
            rel = result.options.rel_tolerance
            tol = n_sigma * np.sqrt(np.nan_to_num(q_err)[:, None] ** 2 + lerr[None, :] ** 2 + (rel * lq[None, :]) ** 2)
            # ring arcs' centroids lie inside the ring: allow one FWHM when the line has one
            if "fwhm" in done.columns:
                tol = np.maximum(tol, done["fwhm"].to_numpy()[None, :])
            dist = np.abs(q[:, None] - lq[None, :]) / tol
            best = np.argmin(dist, axis=1)
            ok = dist[np.arange(len(q)), best] <= 1
            for r in np.flatnonzero(ok):
                row = done.iloc[best[r]]
                phase[r] = row["phase"]
                hkl[r] = [row["h"], row["k"], row["l"]]
    out["phase"] = pd.Categorical(phase)
    for k, name in enumerate(("h", "k", "l")):
        out[name] = pd.array([int(v) if v != -(10 ** 6) else pd.NA for v in hkl[:, k]], dtype="Int32")
    return out


def with_options(options: MatchOptions, **changes) -> MatchOptions:
    """A copy of ``options`` with fields changed (None values ignored)."""
    return replace(options, **{k: v for k, v in changes.items() if v is not None})
