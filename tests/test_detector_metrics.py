"""One-to-one detection metrics (training.metrics) on hand-made frames with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from braggflow.training.metrics import (
    average_precision,
    detection_metrics,
    match_costs,
    match_features,
    precision_recall_curve,
    recall_by,
    visibility_classes,
)


def truth_table(rows):
    """True features from (kind, q, chi, q_width, chi_width[, visible, snr]) tuples."""
    out = []
    for r in rows:
        kind, q, chi, qw, cw = r[:5]
        out.append(dict(kind=kind, q=q, chi=chi, q_lo=q - qw / 2, q_hi=q + qw / 2, chi_lo=chi - cw / 2,
                        chi_hi=chi + cw / 2, visible=r[5] if len(r) > 5 else True, snr=r[6] if len(r) > 6 else 10.0))
    return pd.DataFrame(out)


def detections(rows):
    """Detections from (kind, q, chi, score[, chi_lo, chi_hi]) tuples."""
    out = []
    for r in rows:
        kind, q, chi, score = r[:4]
        lo, hi = (r[4], r[5]) if len(r) > 4 else (chi - 1.0, chi + 1.0)
        out.append(dict(kind=kind, q=q, chi=chi, score=score, chi_lo=lo, chi_hi=hi))
    return pd.DataFrame(out, columns=["kind", "q", "chi", "score", "chi_lo", "chi_hi"])


TRUE4 = truth_table([("spot", 1.0, -80, 0.04, 10), ("spot", 1.5, -60, 0.04, 10), ("arc", 2.0, -120, 0.05, 30),
                     ("ring", 2.5, -90, 0.03, 160)])


def perfect(scores=(0.9, 0.8, 0.7, 0.6)):
    return detections([(k, q, c, s) for (k, q, c), s in zip(TRUE4[["kind", "q", "chi"]].itertuples(index=False),
                                                            scores)])


def test_perfect_detections_give_ap_one():
    m = detection_metrics([(perfect(), TRUE4)])
    assert m.loc["all", "ap"] == pytest.approx(1.0)
    assert m.loc["all", ["precision", "recall", "f1"]].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert m.loc["all", "fp_per_frame"] == 0
    assert m.loc["spot", "true"] == 2 and m.loc["spot", "tp"] == 2


def test_top_false_positive_lowers_ap_to_n_over_n_plus_one():
    # N = 4 true detections below one false one: precision k / (k + 1) at recall k / N, so the
    # interpolated precision is N / (N + 1) everywhere and AP = 4 / 5
    pred = pd.concat([perfect(), detections([("spot", 3.5, 40, 0.95)])], ignore_index=True)
    m = detection_metrics([(pred, TRUE4)])
    assert m.loc["all", "ap"] == pytest.approx(4 / 5)
    assert m.loc["all", "fp"] == 1 and m.loc["all", "precision"] == pytest.approx(0.8)
    # the same false detection ranked last costs no AP
    pred.loc[len(pred) - 1, "score"] = 0.1
    assert detection_metrics([(pred, TRUE4)]).loc["all", "ap"] == pytest.approx(1.0)


def test_half_recall_gives_ap_one_half():
    pred = perfect().iloc[[0, 1]]
    m = detection_metrics([(pred, TRUE4)])
    assert m.loc["all", "recall"] == pytest.approx(0.5)
    assert m.loc["all", "ap"] == pytest.approx(0.5)


def test_curve_pools_frames_by_confidence():
    # frame 1: a true detection at 0.9; frame 2: a false one at 0.8 and a true one at 0.7
    t1 = truth_table([("spot", 1.0, -80, 0.04, 10)])
    t2 = truth_table([("spot", 2.0, -80, 0.04, 10)])
    p1 = detections([("spot", 1.0, -80, 0.9)])
    p2 = detections([("spot", 3.0, 0, 0.8), ("spot", 2.0, -80, 0.7)])
    curve = precision_recall_curve([(p1, t1), (p2, t2)])
    assert curve["confidence"].tolist() == [0.9, 0.8, 0.7]
    assert curve["precision"].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert curve["recall"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert average_precision(curve) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_detection_between_two_features_matches_one_only():
    truth = truth_table([("spot", 1.00, -80, 0.04, 10), ("spot", 1.02, -80, 0.04, 10)])
    pred = detections([("spot", 1.009, -80, 0.9)])  # within 0.02 of both, nearer the first
    mt = match_features(pred, truth)
    assert mt.tp == 1 and mt.found.tolist() == [True, False]
    assert mt.truth_index.tolist() == [0]
    m = detection_metrics([(pred, truth)])
    assert m.loc["all", "recall"] == pytest.approx(0.5) and m.loc["all", "fn"] == 1


def test_hungarian_finds_more_pairs_than_greedy():
    # the confident detection lies nearer A but also within B's tolerance; the second only within A's
    truth = truth_table([("spot", 1.000, -80, 0.04, 10), ("spot", 1.030, -80, 0.04, 10)])
    pred = detections([("spot", 1.012, -80, 0.9), ("spot", 0.985, -80, 0.5)])
    greedy = match_features(pred, truth, method="greedy")
    hungarian = match_features(pred, truth)
    assert greedy.tp == 1 and greedy.truth_index.tolist() == [0, -1]
    assert hungarian.tp == 2 and hungarian.truth_index.tolist() == [1, 0]
    m = detection_metrics([(pred, truth)])
    assert m.loc["all", "recall"] == 1.0
    assert detection_metrics([(pred, truth)], method="greedy").loc["all", "recall"] == 0.5


def test_tolerance_is_half_width_with_a_floor():
    truth = truth_table([("spot", 1.0, -80, 0.004, 1.0)])  # narrow: the floors 0.01 1/Å and 2 deg apply
    for dq, dchi, ok in [(0.009, 0, True), (0.011, 0, False), (0, 1.9, True), (0, 2.1, False)]:
        assert match_features(detections([("spot", 1.0 + dq, -80 + dchi, 0.5)]), truth).tp == int(ok)
    wide = truth_table([("arc", 1.0, -80, 0.1, 40)])  # half-widths 0.05 1/Å, 20 deg
    for dq, dchi, ok in [(0.049, 0, True), (0.051, 0, False), (0, 19.5, True), (0, 20.5, False)]:
        assert match_features(detections([("arc", 1.0 + dq, -80 + dchi, 0.5)]), wide).tp == int(ok)
    cost = match_costs(detections([("arc", 1.03, -68, 0.5)]), wide)
    assert cost[0, 0] == pytest.approx(np.hypot(0.03 / 0.05, 12 / 20))


def test_chi_distance_wraps_and_rings_match_by_chi_range():
    arc = truth_table([("arc", 1.0, 178, 0.04, 10)])
    assert match_features(detections([("arc", 1.0, -179, 0.5)]), arc).tp == 1  # 3 deg apart across +-180
    ring = truth_table([("ring", 2.0, -135, 0.04, 70)])  # seen from -170 to -100 deg: tolerance 35 deg
    far_centre = detections([("ring", 2.0, -30, 0.5, -120, 60)])  # centres 105 deg apart, ranges overlap
    assert match_features(far_centre, ring).tp == 1
    apart = detections([("ring", 2.0, 30, 0.5, 0, 60)])  # 100 deg between the ranges
    assert match_features(apart, ring).tp == 0


def test_invisible_features_are_neither_found_nor_false():
    truth = truth_table([("spot", 1.0, -80, 0.04, 10), ("spot", 2.0, -80, 0.04, 10, False)])
    pred = detections([("spot", 1.0, -80, 0.9), ("spot", 2.0, -80, 0.8), ("spot", 3.0, -80, 0.7)])
    mt = match_features(pred, truth)
    assert mt.status.tolist() == [1, -1, 0]
    m = detection_metrics([(pred, truth)])
    assert (m.loc["all", "true"], m.loc["all", "tp"], m.loc["all", "fp"]) == (1, 1, 1)


def test_ignored_top_detection_costs_no_ap():
    truth = pd.concat([TRUE4, truth_table([("spot", 3.0, 40, 0.04, 10, False)])], ignore_index=True)
    pred = pd.concat([perfect(), detections([("spot", 3.0, 40, 0.99)])], ignore_index=True)
    m = detection_metrics([(pred, truth)])
    assert m.loc["all", "fp"] == 0 and m.loc["all", "true"] == 4
    assert m.loc["all", "ap"] == pytest.approx(1.0)


def test_kinds_must_agree_unless_asked():
    truth = truth_table([("arc", 1.0, -80, 0.04, 20)])
    pred = detections([("spot", 1.0, -80, 0.9)])
    assert match_features(pred, truth).tp == 0
    assert match_features(pred, truth, same_kind=False).tp == 1
    m = detection_metrics([(pred, truth)], same_kind=False)
    assert m.loc["arc", "recall"] == 1.0 and m.loc["spot", "fp"] == 0 and m.loc["all", "ap"] == 1.0


def test_thresholds_count_only_confident_detections():
    m = detection_metrics([(perfect(), TRUE4)], threshold={"spot": 0.85, "arc": 0.5, "ring": 0.5})
    assert m.loc["spot", "tp"] == 1 and m.loc["all", "recall"] == pytest.approx(0.75)
    assert m.loc["all", "ap"] == pytest.approx(1.0)  # AP takes every detection given


def test_visibility_tertiles_and_recall_by():
    labels, edges = visibility_classes(np.arange(1, 10))
    assert labels.tolist() == ["weak"] * 3 + ["medium"] * 3 + ["strong"] * 3
    assert edges == pytest.approx([1 + 8 / 3, 1 + 16 / 3])
    truth = TRUE4.assign(visibility=["strong", "weak", "weak", "strong"])
    r = recall_by([(perfect().iloc[[0, 1, 3]], truth)], "visibility")
    assert r.loc["strong", "recall"] == 1.0 and r.loc["weak", "recall"] == 0.5
    assert recall_by([(perfect(), TRUE4)], "kind")["true"].to_dict() == {"arc": 1, "ring": 1, "spot": 2}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="method"):
        match_features(perfect(), TRUE4, method="nearest")
    with pytest.raises(ValueError, match="'chi'"):
        match_costs(perfect().drop(columns="chi"), TRUE4)
    with pytest.raises(ValueError, match="edges"):
        visibility_classes([1.0, 2.0], edges=[3.0, 1.0])
    empty = precision_recall_curve([(perfect(), TRUE4.iloc[:0])])
    assert np.isnan(average_precision(empty))


def test_simulated_truth_as_detections_scores_perfectly():
    from braggflow.simulate.gixd import random_setups, simulate_gixd_frame

    setup = random_setups(1, 5)[0]
    frames = [simulate_gixd_frame(np.random.default_rng([5, i]), setup) for i in range(3)]
    pairs = []
    for fr in frames:
        vis = fr.truth[fr.truth["visible"].to_numpy(dtype=bool)]
        pairs.append((vis.assign(score=vis["snr"] / (1 + vis["snr"])), fr.truth))
    n_true = sum(len(p) for p, _ in pairs)
    assert n_true > 0
    m = detection_metrics(pairs)
    assert (m.loc["all", "true"], m.loc["all", "tp"], m.loc["all", "fp"]) == (n_true, n_true, 0)
    assert m.loc["all", "ap"] == pytest.approx(1.0)
    # a detection moved by more than its feature's q tolerance no longer matches that feature
    for p, t in pairs:
        own = t.index.get_indexer(p.index)
        mt = match_features(p.assign(q=p["q"] + np.maximum((p["q_hi"] - p["q_lo"]) / 2, 0.01) + 0.001), t)
        assert not np.any(mt.truth_index == own)
        assert match_features(p.assign(q=p["q"] + 0.5 * np.minimum((p["q_hi"] - p["q_lo"]) / 2, 0.01)),
                              t).tp == len(p)
