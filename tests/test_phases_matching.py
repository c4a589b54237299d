"""Phase matching on simulated lines and spots: the distance prior, when a cell counts as refined, one order for
ranking and acceptance, and the powder hypothesis of grazing-incidence spots."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from braggflow.phases import MatchOptions, identify, load_phase, match_phase, reflections
from braggflow.phases.matching import _q_obs_at_distance, combined_probability

PHASES = Path(__file__).parent / "data" / "phases"


def _lines(phase, rng, *, q_max=4.0, q_err=0.002, wavelength=0.7, spread=0.1):
    refl = reflections(phase, q_max=q_max, wavelength=wavelength)
    return pd.DataFrame({"q": refl["q"].to_numpy() + rng.normal(0, q_err, len(refl)), "q_err": q_err,
                         "intensity": refl["intensity"].to_numpy() * rng.lognormal(0, spread, len(refl))})


def assert_errors_honest(match):
    """Free cell parameters: a positive finite error when refined, NaN when not; the others tied to a free one
    (same error) or fixed by symmetry (exactly 0)."""
    errors = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), match.cell_err))
    free = [errors[n] for n in match.free_parameters]
    for e in free:
        assert (0 < e < math.inf) if match.refined else math.isnan(e), (match.phase, e)
    for name, e in errors.items():
        if name not in match.free_parameters:
            assert e == 0 or any(e == f or (math.isnan(e) and math.isnan(f)) for f in free), (match.phase, name, e)


def test_distance_prior_pulls_the_distance_and_costs_the_match(rng):
    """Lines measured 3 mm further than the stated 809 mm, with the cell held: a tight prior keeps the distance
    near 809 mm, a loose one lets it go to 812 mm, and the chance probability pays exp(z^2 / 2)."""
    ceo2 = load_phase(PHASES / "CeO2.yaml")
    refl = reflections(ceo2, q_max=4.5, wavelength=0.7)
    q = _q_obs_at_distance(refl["q"].to_numpy(), 0.7, 812.0, 809.0)
    observed = pd.DataFrame({"q": q + rng.normal(0, 2e-4, len(q)), "q_err": 2e-4, "intensity": refl["intensity"]})
    shifts = {}
    for sigma in (0.5, 20.0):
        options = MatchOptions(wavelength=0.7, distance_mm=809.0, distance_err_mm=sigma, refine_distance=True,
                               max_mismatch=1e-4, rel_tolerance=2e-3)
        m = match_phase(observed, ceo2, options=options)
        assert m.refined and m.n_matched == len(refl)
        z = (m.distance_mm - 809.0) / sigma
        expected = min(1.0, combined_probability(m.p_positions, m.p_intensity) * math.exp(z * z / 2))
        assert m.chance_probability == pytest.approx(expected, rel=1e-9)
        assert 0 < m.distance_err_mm < sigma * 1.01
        assert m.at_limit  # the cell, held within 1e-4, is pinned at its limit
        shifts[sigma] = m.distance_mm - 809.0
    assert shifts[20.0] == pytest.approx(3.0, abs=0.5)
    assert 0 < shifts[0.5] < 1.5  # within 3 prior errors, much less than the data alone ask


def test_the_distance_cannot_buy_a_phase_its_lines(rng):
    """MAPbBr3 lines (a = 5.9126 Å) at the stated distance: CsPbBr3 (a = 5.874 Å) searched within 0.2% finds no
    line at the nominal distance, so refining the distance (prior +-1 mm) gives it nothing."""
    ma = load_phase(PHASES / "MAPbBr3.yaml")
    observed = _lines(ma.with_cell((5.9126,) * 3 + (90.0,) * 3), rng, q_max=3.2, q_err=3e-4, wavelength=0.6888)
    options = MatchOptions(wavelength=0.6888, distance_mm=809.0, distance_err_mm=1.0, refine_distance=True,
                           max_mismatch=0.002)
    result = identify(observed, [load_phase(PHASES / "CsPbBr3.yaml"), ma], options=options)
    ranked = result.ranked.set_index("phase")
    assert list(result.ranked["phase"]) == ["MAPbBr3", "CsPbBr3"] and ranked.loc["MAPbBr3", "accepted"]
    assert ranked.loc["CsPbBr3", "n_matched_alone"] == 0 and ranked.loc["CsPbBr3", "chance_probability_alone"] == 1
    assert abs(ranked.loc["MAPbBr3", "distance_mm"] - 809.0) < 3.0


def test_cell_is_refined_only_from_more_lines_than_free_parameters(rng):
    pbi2 = load_phase(PHASES / "PbI2.yaml")  # hexagonal: a and c free
    full = _lines(pbi2, rng, q_err=3e-4)
    m = match_phase(full, pbi2, options=MatchOptions(wavelength=0.7))
    assert m.refined and m.n_fit > 2 and not m.at_limit
    assert_errors_honest(m)
    assert m.cell_err[1] == m.cell_err[0] and m.cell_err[5] == 0
    two = full.nlargest(2, "intensity")
    m2 = match_phase(two, pbi2, options=MatchOptions(wavelength=0.7))
    assert m2.n_pairs == 2 and not m2.refined
    assert_errors_honest(m2)
    assert all(math.isnan(e) for e in (m2.cell_err[0], m2.cell_err[1], m2.cell_err[2]))
    assert m2.summary()["refined"] is False and math.isnan(m2.summary()["a_err"])
    si = load_phase(PHASES / "Si.yaml")  # cubic: one line is not enough, two are
    one = _lines(si, rng, q_err=3e-4).nlargest(2, "intensity")
    assert not match_phase(one.iloc[:1], si, options=MatchOptions(wavelength=0.7)).refined
    m3 = match_phase(one, si, options=MatchOptions(wavelength=0.7))
    assert m3.refined and 0 < m3.cell_err[0] < 0.01
    none = match_phase(one.assign(q=one["q"] * 0.5), si, options=MatchOptions(wavelength=0.7))
    assert none.n_pairs == 0 and not none.refined and math.isnan(none.cell_err[0])


def _assert_one_order(ranked: pd.DataFrame, p_max: float) -> None:
    """Accepted phases lead and are below p_max; the others are not, ordered by chance probability then score."""
    accepted = ranked["accepted"].to_numpy()
    n = int(accepted.sum())
    assert accepted[:n].all() and not accepted[n:].any()
    assert (ranked["chance_probability"][:n] < p_max).all()
    rest = ranked.iloc[n:]
    assert (rest["chance_probability"] >= p_max).all()
    keys = list(zip(rest["chance_probability"], -rest["score"]))
    assert keys == sorted(keys)
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))


def test_one_order_for_ranking_and_acceptance(rng):
    """A mixture with random lines: accepted phases come first and only they are below p_max."""
    lab6, ceo2 = load_phase(PHASES / "LaB6.yaml"), load_phase(PHASES / "CeO2.yaml")
    a, b = _lines(lab6, rng, q_max=5.0), _lines(ceo2, rng, q_max=5.0)
    noise = pd.DataFrame({"q": rng.uniform(1.0, 5.0, 8), "q_err": 0.002, "intensity": rng.uniform(5, 60, 8)})
    observed = pd.concat([a, b, noise], ignore_index=True).sample(frac=1, random_state=2).reset_index(drop=True)
    phases = [load_phase(PHASES / f"{n}.yaml") for n in ("Si", "alpha_Al2O3", "ZnO", "LaB6", "CeO2", "PbBr2")]
    result = identify(observed, phases, options=MatchOptions(wavelength=0.7), q_range=(1.0, 5.0))
    assert set(result.ranked.loc[result.ranked["accepted"], "phase"]) == {"LaB6", "CeO2"}
    _assert_one_order(result.ranked, 1e-3)


def test_intensities_tell_apart_phases_with_the_same_lines(rng):
    """MAPbBr3 lines with its intensities (a = 5.9126 Å): CsPbBr3 reaches the same positions within its 1% search
    but not the intensities (strong (111)); MAPbBr3 ranks first and alone is accepted."""
    ma, cs = load_phase(PHASES / "MAPbBr3.yaml"), load_phase(PHASES / "CsPbBr3.yaml")
    observed = _lines(ma.with_cell((5.9126,) * 3 + (90.0,) * 3), rng, q_max=3.5, q_err=5e-4, wavelength=0.6888,
                      spread=0.2)
    observed = observed[observed["intensity"] > 2].reset_index(drop=True)
    result = identify(observed, [cs, ma], options=MatchOptions(wavelength=0.6888))
    ranked = result.ranked.set_index("phase")
    assert result.ranked.iloc[0]["phase"] == "MAPbBr3" and ranked.loc["MAPbBr3", "accepted"]
    assert not ranked.loc["CsPbBr3", "accepted"]
    assert ranked.loc["CsPbBr3", "chance_probability_alone"] > ranked.loc["MAPbBr3", "chance_probability"]
    assert ranked.loc["CsPbBr3", "score_alone"] < 0.5 * ranked.loc["MAPbBr3", "score"]
    _assert_one_order(result.ranked, 1e-3)


def test_gixd_powder_spots_are_matched_as_lines(rng):
    """Spots scattered along the rings of an untextured film: the powder hypothesis (spots grouped into lines)
    wins over every contact plane and explains every spot."""
    ceo2 = load_phase(PHASES / "CeO2.yaml")
    refl = reflections(ceo2, q_max=5.0, wavelength=0.7)
    rows = []
    for q, inten in zip(refl["q"], refl["intensity"]):
        for _ in range(6):
            polar = rng.uniform(5, 85)
            qq = q + rng.normal(0, 5e-4)
            rows.append({"q": qq, "q_err": 5e-4, "intensity": inten / 6 * rng.lognormal(0, 0.5),
                         "q_xy": qq * math.sin(math.radians(polar)), "q_z": qq * math.cos(math.radians(polar))})
    spots = pd.DataFrame(rows)
    result = identify(spots, [ceo2, load_phase(PHASES / "Si.yaml")], options=MatchOptions(wavelength=0.7), gixd=True)
    best = result.ranked.iloc[0]
    assert best["phase"] == "CeO2" and best["accepted"] and best["contact_plane"] == "random"
    assert len(result.unexplained) == 0 and result.assignment["phase"].eq("CeO2").all()
    assert best["refined"] and best["a_err"] > 0
