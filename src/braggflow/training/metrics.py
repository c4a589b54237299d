"""One-to-one detection metrics of a feature detector on frames with known features.

A detection (one row of a feature table: ``kind``, a confidence, ``q``, ``chi``
and optionally its box ``chi_lo``, ``chi_hi``) and a true feature (a truth
table row: ``kind``, ``q``, ``chi``, ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``,
``visible``, as :func:`braggflow.simulate.gixd.simulate_gixd_frame` and
:func:`braggflow.training.labels.read_labels` give) can be matched when

- ``|q_det - q_true| <= max(q_width / 2, q_tol_min)`` with ``q_width = q_hi - q_lo``
  (the true feature's full radial extent; default ``q_tol_min`` 0.01 1/Å), and
- the chi distance is at most ``max(chi_width / 2, chi_tol_min)`` with
  ``chi_width = chi_hi - chi_lo`` (default ``chi_tol_min`` 2 deg).  The chi
  distance is the angle between the centres (wrapped to +-180 deg), except when
  either feature is a ring: then it is the gap between the two chi ranges, 0
  when they overlap (a ring's centre chi is only a point of the arc the detector
  sees);
- and, by default, both are of the same kind.

The cost of a pair is the normalised distance
``sqrt((dq / q_tol)^2 + (dchi / chi_tol)^2)`` (0 to sqrt 2).  Detections and true
features are matched one to one by the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`): the most pairs within tolerance,
and among those the smallest summed cost.  Only visible true features are
matched; a detection left unmatched that lies within tolerance of a true feature
too weak to count (``visible`` False) is ignored (neither true nor false); any
other unmatched detection is a false positive, a visible true feature left
unmatched a false negative.

Average precision (:func:`average_precision`) is over the detections' confidence:
at every confidence level the detections at or above it are matched anew (so each
point of the precision-recall curve is the one-to-one matching of that set), the
curve is made monotone (the precision at recall r is the largest precision at
any recall >= r) and integrated over recall at every point where recall changes
(the all-point interpolation of PASCAL VOC 2010-2012: Everingham et al., Int. J.
Comput. Vis. 88, 303 (2010)).  Recall that the detections never reach adds
nothing, so AP is at most the recall of the whole detection set.

The measures (one-to-one precision, recall, F1, AP) are those reported for
grazing-incidence feature detectors (mlgidDETECT; the task: Starostin, Pithan et
al., npj Comput. Mater. 8, 101 (2022)); the tolerances and the ring rule above
are braggflow's own, so figures from other matchings are not directly comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["Q_TOL_MIN", "CHI_TOL_MIN", "FeatureMatch", "match_tolerances", "match_costs", "match_features",
           "precision_recall_curve", "average_precision", "detection_metrics", "visibility_classes",
           "recall_by"]

Q_TOL_MIN = 0.01
"""Smallest radial tolerance of a match, 1/Å."""

CHI_TOL_MIN = 2.0
"""Smallest azimuthal tolerance of a match, deg."""

_NO_MATCH = 1e6  # cost of a pair out of tolerance: larger than any sum of in-tolerance costs (each <= sqrt 2)


@dataclass
class FeatureMatch:
    """One-to-one matching of one frame's detections and true features.

    Attributes
    ----------
    status : (n_pred,) ndarray of int
        1 true positive, 0 false positive, -1 ignored (unmatched, within
        tolerance of a true feature too weak to count).
    truth_index : (n_pred,) ndarray of int
        Row position in the truth table of each detection's match, -1 if none.
    found : (n_truth,) ndarray of bool
        True features matched by a detection (always False for invisible ones).
    cost : (n_pred,) ndarray
        Normalised distance of each matched pair, NaN for unmatched detections.
    """

    status: np.ndarray
    truth_index: np.ndarray
    found: np.ndarray
    cost: np.ndarray

    @property
    def tp(self) -> int:
        """Number of true positives."""
        return int(np.sum(self.status == 1))

    @property
    def fp(self) -> int:
        """Number of false positives."""
        return int(np.sum(self.status == 0))


def _column(table: pd.DataFrame, name: str, what: str) -> np.ndarray:
    if name not in table.columns:
        raise ValueError(f"{what} table has no column {name!r} (columns: {', '.join(map(str, table.columns))})")
    return table[name].to_numpy()


def match_tolerances(truth: pd.DataFrame, *, q_tol_min: float = Q_TOL_MIN,
                     chi_tol_min: float = CHI_TOL_MIN) -> tuple[np.ndarray, np.ndarray]:
    """Radial and azimuthal match tolerances of true features.

    Parameters
    ----------
    truth : pandas.DataFrame
        ``q_lo``, ``q_hi`` (1/Å), ``chi_lo``, ``chi_hi`` (deg) of each true feature.
    q_tol_min, chi_tol_min : float
        Smallest tolerances (1/Å, deg).

    Returns
    -------
    q_tol : (n_truth,) ndarray
        ``max((q_hi - q_lo) / 2, q_tol_min)``, 1/Å.
    chi_tol : (n_truth,) ndarray
        ``max((chi_hi - chi_lo) / 2, chi_tol_min)``, deg.

    Raises
    ------
    ValueError
        If a column is missing or a minimum tolerance is not positive.
    """
    if not q_tol_min > 0 or not chi_tol_min > 0:
        raise ValueError(f"q_tol_min ({q_tol_min}) and chi_tol_min ({chi_tol_min}) must be > 0")
    q_w = _column(truth, "q_hi", "truth").astype(float) - _column(truth, "q_lo", "truth").astype(float)
    chi_w = _column(truth, "chi_hi", "truth").astype(float) - _column(truth, "chi_lo", "truth").astype(float)
    return np.maximum(np.nan_to_num(q_w / 2), q_tol_min), np.maximum(np.nan_to_num(chi_w / 2), chi_tol_min)


def _wrap(d: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-180, 180) deg."""
    return (np.asarray(d, dtype=float) + 180.0) % 360.0 - 180.0


def _range_gap(lo1, hi1, lo2, hi2) -> np.ndarray:
    """Angular gap between chi ranges [lo1, hi1] and [lo2, hi2] (broadcast), 0 when they overlap (deg)."""
    gaps = []
    for shift in (-360.0, 0.0, 360.0):
        a, b = lo2 + shift, hi2 + shift
        gaps.append(np.maximum(0.0, np.maximum(a - hi1, lo1 - b)))
    return np.minimum.reduce(gaps)


def match_costs(pred: pd.DataFrame, truth: pd.DataFrame, *, same_kind: bool = True, q_tol_min: float = Q_TOL_MIN,
                chi_tol_min: float = CHI_TOL_MIN) -> np.ndarray:
    """Normalised distances between detections and true features, infinite out of tolerance.

    Parameters
    ----------
    pred : pandas.DataFrame
        Detections: ``kind``, ``q`` (1/Å), ``chi`` (deg); ``chi_lo``, ``chi_hi``
        when present (a ring's chi range; otherwise its range is the point ``chi``).
    truth : pandas.DataFrame
        True features: ``kind``, ``q``, ``chi``, ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi``.
    same_kind : bool
        Only pairs of the same ``kind`` can match.
    q_tol_min, chi_tol_min : float
        Smallest tolerances (:func:`match_tolerances`).

    Returns
    -------
    cost : (n_pred, n_truth) ndarray
        ``sqrt((dq / q_tol)^2 + (dchi / chi_tol)^2)`` where ``|dq| <= q_tol`` and
        ``dchi <= chi_tol`` (and the kinds agree when ``same_kind``), ``inf`` elsewhere.

    Raises
    ------
    ValueError
        If a needed column is missing.
    """
    n, m = len(pred), len(truth)
    if n == 0 or m == 0:
        return np.full((n, m), np.inf)
    q_tol, chi_tol = match_tolerances(truth, q_tol_min=q_tol_min, chi_tol_min=chi_tol_min)
    qp, chip = _column(pred, "q", "detection").astype(float), _column(pred, "chi", "detection").astype(float)
    qt, chit = _column(truth, "q", "truth").astype(float), _column(truth, "chi", "truth").astype(float)
    kp, kt = _column(pred, "kind", "detection"), _column(truth, "kind", "truth")
    lo_p = pred["chi_lo"].to_numpy(dtype=float) if "chi_lo" in pred.columns else chip
    hi_p = pred["chi_hi"].to_numpy(dtype=float) if "chi_hi" in pred.columns else chip
    lo_p, hi_p = np.where(np.isfinite(lo_p), lo_p, chip), np.where(np.isfinite(hi_p), hi_p, chip)
    lo_t, hi_t = truth["chi_lo"].to_numpy(dtype=float), truth["chi_hi"].to_numpy(dtype=float)
    dq = np.abs(qp[:, None] - qt[None])
    dchi = np.abs(_wrap(chip[:, None] - chit[None]))
    ring = (kp[:, None] == "ring") | (kt[None] == "ring")
    dchi = np.where(ring, _range_gap(lo_p[:, None], hi_p[:, None], lo_t[None], hi_t[None]), dchi)
    ok = (dq <= q_tol[None]) & (dchi <= chi_tol[None])
    if same_kind:
        ok &= kp[:, None] == kt[None]
    cost = np.hypot(dq / q_tol[None], dchi / chi_tol[None])
    return np.where(ok, cost, np.inf)


def _assign(cost: np.ndarray, order: np.ndarray, method: str) -> np.ndarray:
    """Column matched to each row (-1 if none) of a cost matrix with inf out of tolerance."""
    match = np.full(cost.shape[0], -1)
    if cost.size == 0:
        return match
    if method == "hungarian":
        rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, _NO_MATCH))
        keep = np.isfinite(cost[rows, cols])
        match[rows[keep]] = cols[keep]
    else:  # greedy: by decreasing confidence, each detection takes the nearest free true feature
        free = np.ones(cost.shape[1], dtype=bool)
        for i in order:
            c = np.where(free, cost[i], np.inf)
            j = int(np.argmin(c))
            if np.isfinite(c[j]):
                match[i], free[j] = j, False
    return match


def match_features(pred: pd.DataFrame, truth: pd.DataFrame, *, confidence: str = "score",
                   same_kind: bool = True, method: str = "hungarian", q_tol_min: float = Q_TOL_MIN,
                   chi_tol_min: float = CHI_TOL_MIN) -> FeatureMatch:
    """Match one frame's detections to its true features one to one.

    Parameters
    ----------
    pred : pandas.DataFrame
        Detections (:func:`match_costs`), with the confidence column when
        ``method`` is ``"greedy"``.
    truth : pandas.DataFrame
        True features (:func:`match_costs`) with ``visible`` (bool; all visible
        when the column is absent).
    confidence : str
        Column of ``pred`` ordering the greedy matching.
    same_kind : bool
        Only detections and true features of the same ``kind`` match.
    method : {"hungarian", "greedy"}
        ``"hungarian"``: the most pairs within tolerance, then the smallest summed
        normalised distance (:func:`scipy.optimize.linear_sum_assignment`).
        ``"greedy"``: detections by decreasing confidence, each taking the
        nearest true feature still free (for comparison).
    q_tol_min, chi_tol_min : float
        Smallest tolerances (:func:`match_tolerances`).

    Returns
    -------
    FeatureMatch

    Raises
    ------
    ValueError
        If ``method`` is unknown or a needed column is missing.
    """
    if method not in ("hungarian", "greedy"):
        raise ValueError(f"method must be 'hungarian' or 'greedy', got {method!r}")
    n, m = len(pred), len(truth)
    visible = (truth["visible"].to_numpy(dtype=bool) if "visible" in truth.columns and m
               else np.ones(m, dtype=bool))
    cost = match_costs(pred, truth, same_kind=same_kind, q_tol_min=q_tol_min, chi_tol_min=chi_tol_min)
    order = (np.argsort(-_column(pred, confidence, "detection").astype(float), kind="stable")
             if method == "greedy" and n else np.arange(n))
    vis_idx = np.flatnonzero(visible)
    sub = _assign(cost[:, vis_idx], order, method)
    truth_index = np.where(sub >= 0, vis_idx[np.maximum(sub, 0)] if len(vis_idx) else -1, -1)
    status = (truth_index >= 0).astype(int)
    near_weak = np.isfinite(cost[:, ~visible]).any(axis=1) if n else np.zeros(0, dtype=bool)
    status[(truth_index < 0) & near_weak] = -1
    found = np.zeros(m, dtype=bool)
    found[truth_index[truth_index >= 0]] = True
    pair_cost = np.full(n, np.nan)
    ok = truth_index >= 0
    pair_cost[ok] = cost[np.flatnonzero(ok), truth_index[ok]]
    return FeatureMatch(status=status, truth_index=truth_index, found=found, cost=pair_cost)


def _frame_steps(pred: pd.DataFrame, truth: pd.DataFrame, confidence: str, **kw) -> tuple[np.ndarray, ...]:
    """Confidence levels of one frame and its true and counted detections at or above each (matched anew)."""
    if not len(pred):
        return np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    conf = _column(pred, confidence, "detection").astype(float)
    levels = np.unique(conf)[::-1]
    tp, counted = np.zeros(len(levels), dtype=int), np.zeros(len(levels), dtype=int)
    for k, level in enumerate(levels):
        mt = match_features(pred[conf >= level], truth, confidence=confidence, **kw)
        tp[k], counted[k] = mt.tp, mt.tp + mt.fp
    return levels, tp, counted


def precision_recall_curve(pairs, *, confidence: str = "score", **kw) -> pd.DataFrame:
    """Precision and recall of the one-to-one matching at every confidence level, pooled over frames.

    Parameters
    ----------
    pairs : iterable of (pred, truth)
        One (detections, true features) pair of DataFrames per frame, as
        :func:`match_features` takes them.
    confidence : str
        Column of the detections' confidence.
    **kw
        ``same_kind``, ``method``, ``q_tol_min``, ``chi_tol_min`` of :func:`match_features`.

    Returns
    -------
    curve : pandas.DataFrame
        One row per distinct confidence level, decreasing: ``confidence``,
        ``tp``, ``fp`` (detections at or above it, matched frame by frame),
        ``precision``, ``recall``; ``curve.attrs["n_true"]`` is the number of
        visible true features.
    """
    events, n_true = [], 0
    for pred, truth in pairs:
        n_true += int(truth["visible"].to_numpy(dtype=bool).sum()) if "visible" in truth.columns else len(truth)
        levels, tp, counted = _frame_steps(pred, truth, confidence, **kw)
        # each level adds the frame's increase in true positives and counted detections
        events.append(pd.DataFrame(dict(confidence=levels, tp=np.diff(tp, prepend=0),
                                        n=np.diff(counted, prepend=0))))
    ev = pd.concat(events) if events else pd.DataFrame(dict(confidence=[], tp=[], n=[]))
    ev = ev.groupby("confidence", sort=True)[["tp", "n"]].sum().iloc[::-1]
    tp, n = np.cumsum(ev["tp"].to_numpy()), np.cumsum(ev["n"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = pd.DataFrame(dict(confidence=ev.index.to_numpy(dtype=float), tp=tp, fp=n - tp,
                                  precision=np.where(n > 0, tp / np.maximum(n, 1), 1.0),
                                  recall=tp / n_true if n_true else np.full(len(tp), np.nan)))
    curve.attrs["n_true"] = n_true
    return curve


def average_precision(curve: pd.DataFrame) -> float:
    """Area under the interpolated precision-recall curve (all-point, PASCAL VOC 2010-2012).

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`precision_recall_curve` (``precision``, ``recall`` by decreasing confidence).

    Returns
    -------
    ap : float
        ``sum_k (r_k - r_{k-1}) p_interp(r_k)`` with ``p_interp(r)`` the largest
        precision at recall >= r, ``r_0 = 0``; NaN without visible true features,
        0 without detections.
    """
    if not curve.attrs.get("n_true", 1):
        return float("nan")
    if not len(curve):
        return 0.0
    r = np.concatenate([[0.0], curve["recall"].to_numpy(dtype=float)])
    p = np.concatenate([[0.0], curve["precision"].to_numpy(dtype=float)])
    p_interp = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum(np.diff(r) * p_interp[1:]))


def detection_metrics(pairs, *, classes=("ring", "arc", "spot"), confidence: str = "score",
                      threshold: dict | float | None = None, **kw) -> pd.DataFrame:
    """Precision, recall, F1, false positives per frame and AP, per class and over all classes.

    Parameters
    ----------
    pairs : sequence of (pred, truth)
        One pair of DataFrames per frame (:func:`match_features`).
    classes : sequence of str
        Kinds reported one by one.
    confidence : str
        Column of the detections' confidence.
    threshold : float or dict, optional
        Smallest confidence (per class when a dict) of the detections counted in
        precision, recall, F1 and false positives per frame; AP uses every
        detection given.
    **kw
        ``same_kind``, ``method``, ``q_tol_min``, ``chi_tol_min`` of :func:`match_features`.

    Returns
    -------
    metrics : pandas.DataFrame
        Index: the classes and ``all`` (every kind together, one confidence
        ranking); columns ``true``, ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, ``fp_per_frame``, ``ap``.  With ``same_kind`` False
        a class's row takes the true features of that class (``tp``, ``fn``,
        recall: found by a detection of any kind) and the detections of that
        kind (``fp``, precision), and its ``ap`` is NaN (AP only for ``all``).
    """
    pairs = list(pairs)
    n_frames = len(pairs)

    def kept(pred):
        if threshold is None or not len(pred):
            return pred
        conf = pred[confidence].to_numpy(dtype=float)
        if isinstance(threshold, dict):
            t = np.array([threshold.get(k, 0.0) for k in pred["kind"]], dtype=float)
        else:
            t = float(threshold)
        return pred[conf >= t]

    same_kind = kw.get("same_kind", True)
    rows = {}
    for c in (*classes, "all"):
        sel = []
        tp = fp = fn = n_true = 0
        for pred, truth in pairs:
            is_c = truth["kind"].to_numpy() == c if c != "all" else np.ones(len(truth), dtype=bool)
            vis = truth["visible"].to_numpy(dtype=bool) if "visible" in truth.columns else np.ones(len(truth), bool)
            if same_kind or c == "all":
                p, t = (pred, truth) if c == "all" else (pred[pred["kind"].to_numpy() == c], truth[is_c])
                sel.append((p, t))
                mt = match_features(kept(p), t, confidence=confidence, **kw)
                tp, fp = tp + mt.tp, fp + mt.fp
                fn += int(np.sum(vis[is_c] & ~mt.found))
            else:  # one matching over every kind; this class's true features and this kind's detections
                p = kept(pred)
                mt = match_features(p, truth, confidence=confidence, **kw)
                tp += int(np.sum(mt.found & is_c))
                fn += int(np.sum(vis & is_c & ~mt.found))
                fp += int(np.sum((mt.status == 0) & (p["kind"].to_numpy() == c))) if len(p) else 0
            n_true += int(np.sum(vis & is_c))
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / n_true if n_true else float("nan")
        ap = (average_precision(precision_recall_curve(sel, confidence=confidence, **kw)) if sel
              else float("nan"))
        rows[c] = dict(true=n_true, tp=tp, fp=fp, fn=fn, precision=prec, recall=rec,
                       f1=2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan"),
                       fp_per_frame=fp / n_frames if n_frames else float("nan"), ap=ap)
    return pd.DataFrame.from_dict(rows, orient="index")


def visibility_classes(snr, edges=None) -> tuple[np.ndarray, np.ndarray]:
    """Visibility class of true features from their integrated signal-to-noise ratio.

    Parameters
    ----------
    snr : (n,) array_like
        Integrated (matched-filter) signal-to-noise ratio of each true feature
        (the truth table's ``snr``).
    edges : (2,) array_like, optional
        SNR bounds between weak and medium and between medium and strong.
        Default: the tertiles (1/3 and 2/3 quantiles) of ``snr``.

    Returns
    -------
    labels : (n,) ndarray of str
        ``"weak"`` (``snr < edges[0]``), ``"medium"``, ``"strong"`` (``snr >= edges[1]``).
    edges : (2,) ndarray

    Raises
    ------
    ValueError
        If ``edges`` is not two increasing values or ``snr`` is empty without ``edges``.
    """
    snr = np.asarray(snr, dtype=float)
    if edges is None:
        if not len(snr):
            raise ValueError("snr is empty: give the visibility edges")
        edges = np.quantile(snr, [1 / 3, 2 / 3])
    edges = np.asarray(edges, dtype=float)
    if edges.shape != (2,) or not edges[0] <= edges[1]:
        raise ValueError(f"edges must be two increasing SNR values, got {edges}")
    labels = np.where(snr < edges[0], "weak", np.where(snr < edges[1], "medium", "strong"))
    return labels, edges


def recall_by(pairs, column: str, *, visible_only: bool = True, **kw) -> pd.DataFrame:
    """Recall of the one-to-one matching grouped by a column of the truth tables.

    Parameters
    ----------
    pairs : iterable of (pred, truth)
        One pair of DataFrames per frame (:func:`match_features`); ``truth`` holds ``column``.
    column : str
        Truth column to group by (``kind``, or a visibility class from
        :func:`visibility_classes` added by the caller).
    visible_only : bool
        Count only visible true features (those that can be found).
    **kw
        ``confidence``, ``same_kind``, ``method``, ``q_tol_min``, ``chi_tol_min``
        of :func:`match_features`.

    Returns
    -------
    recall : pandas.DataFrame
        Index: the column's values; columns ``true``, ``found``, ``recall``.
    """
    parts = []
    for pred, truth in pairs:
        mt = match_features(pred, truth, **kw)
        vis = (truth["visible"].to_numpy(dtype=bool) if visible_only and "visible" in truth.columns
               else np.ones(len(truth), dtype=bool))
        parts.append(pd.DataFrame({column: _column(truth, column, "truth")[vis], "found": mt.found[vis]}))
    table = pd.concat(parts) if parts else pd.DataFrame({column: [], "found": []})
    out = table.groupby(column)["found"].agg(true="size", found="sum")
    out["found"] = out["found"].astype(int)
    out["recall"] = out["found"] / out["true"]
    return out
