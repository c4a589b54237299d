"""Phase identification: observed lines or spots -> ranked phases, mixtures, per-peak hkl."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.phases.matching import MatchOptions, PhaseMatch, contact_planes, match_phase
from braggflow.phases.structure import Phase

__all__ = ["Identification", "identify", "lines_from_peaks", "pattern_kind", "assign_peaks"]


@dataclass
class Identification:
    """Result of :func:`identify`.

    Attributes
    ----------
    ranked : pandas.DataFrame
        One row per candidate phase, best first: ``rank``, ``phase``, ``accepted``,
        ``score``, ``chance_probability``, ``significance``, ``n_matched``,
        ``n_expected``, ``a, b, c, alpha, beta, gamma`` and ``*_err``, ``contact_plane``, ...
    matches : dict of str -> PhaseMatch
        The match shown in ``ranked`` for each phase (accepted phases: on the lines
        left to them in the mixture search; others: on all lines).
    assignment : pandas.DataFrame
        The observations with ``phase`` (None: unexplained), ``h, k, l``, ``hkl``.
    unexplained : pandas.DataFrame
        Observations no accepted phase explains.
    mode : str
        "rings", "spots" or "gixd".
    """

    ranked: pd.DataFrame
    matches: dict
    assignment: pd.DataFrame
    unexplained: pd.DataFrame
    mode: str = "rings"
    options: MatchOptions = field(default_factory=MatchOptions)

    def to_json(self) -> dict:
        """A JSON-serialisable summary (ranked table, assignment counts, unexplained lines)."""
        return {
            "mode": self.mode,
            "ranked": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                       for row in self.ranked.to_dict(orient="records")],
            "unexplained": self.unexplained[[c for c in ("q", "q_err", "intensity") if c in self.unexplained]]
            .to_dict(orient="records"),
        }


def _best_match(observed, phase, options, q_range, gixd):
    """Powder match, or (grazing incidence) the best of powder and every contact plane."""
    best = match_phase(observed, phase, options=options, q_range=q_range)
    if gixd:
        for plane in contact_planes(phase, options.max_index):
            m = match_phase(observed, phase, options=options, q_range=q_range, contact_plane=plane)
            if (m.score, m.significance) > (best.score, best.significance):
                best = m
    return best


def identify(
    observed: pd.DataFrame,
    phases: list[Phase],
    *,
    options: MatchOptions | None = None,
    q_range: tuple[float, float] | None = None,
    p_max: float = 1e-3,
    max_phases: int | None = None,
    gixd: bool = False,
) -> Identification:
    """Rank candidate phases against observed lines and explain the pattern as a mixture.

    Each phase is matched to all observations (:func:`~braggflow.phases.matching.match_phase`);
    then, greedily, the best-scoring phase whose chance probability is below
    ``p_max`` is accepted, its matched observations are removed, and the others
    are matched again on what is left, until no phase qualifies.  Every
    observation is assigned to at most one phase.

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
    p_max : float
        Largest chance probability of an accepted phase.
    max_phases : int, optional
        Stop after this many accepted phases.
    gixd : bool
        Search contact planes (fibre texture) as well as the powder hypothesis.

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
    first = {p.name: _best_match(observed, p, options, q_range, gixd) for p in phases}
    accepted: list[tuple[str, PhaseMatch]] = []
    remaining = np.ones(len(observed), dtype=bool)
    current = dict(first)
    while True:
        candidates = [m for name, m in current.items() if name not in dict(accepted) and m.chance_probability < p_max]
        if not candidates or (max_phases is not None and len(accepted) >= max_phases):
            break
        best = max(candidates, key=lambda m: (m.score, m.significance))
        index = np.flatnonzero(remaining)
        # pairs refer to the rows passed in: map them back to the full observation table
        best.pairs = best.pairs.assign(obs=index[best.pairs["obs"].to_numpy()]) if len(best.pairs) else best.pairs
        accepted.append((best.phase, best))
        remaining[best.pairs["obs"].to_numpy(dtype=int)] = False
        if not remaining.any():
            break
        rest = observed[remaining].reset_index(drop=True)
        current = {p.name: _best_match(rest, p, options, q_range, gixd) for p in phases if p.name not in dict(accepted)}
    accepted_names = [n for n, _ in accepted]
    matches = {**first, **dict(accepted)}
    rows = []
    for order, name in enumerate(accepted_names + sorted((n for n in names if n not in accepted_names),
                                                         key=lambda n: (-first[n].score, -first[n].significance))):
        m = matches[name]
        rows.append({"rank": order + 1, "accepted": name in accepted_names, **m.summary()})
    ranked = pd.DataFrame(rows)
    assignment = observed.copy()
    assignment["phase"] = pd.Series([None] * len(observed), dtype="object")
    assignment["hkl"] = pd.Series([None] * len(observed), dtype="object")
    for col in ("h", "k", "l"):
        assignment[col] = pd.array([pd.NA] * len(observed), dtype="Int32")
    for name, m in accepted:
        for row in m.pairs.itertuples():
            assignment.loc[row.obs, ["phase", "hkl"]] = [name, row.hkl]
            assignment.loc[row.obs, ["h", "k", "l"]] = [row.h, row.k, row.l]
    unexplained = assignment[assignment["phase"].isna()].drop(columns=["phase", "hkl", "h", "k", "l"])
    mode = "gixd" if gixd else "rings"
    return Identification(ranked=ranked, matches=matches, assignment=assignment, unexplained=unexplained,
                          mode=mode, options=options)


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
    if len(t) < 4:
        return "spots"
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
    return "rings" if in_rings > 0.5 * len(t) else "spots"


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
