"""Phase identification: simulated calibrant frames, mixtures, refinement, GIXD contact planes, real GIWAXS frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from braggflow.geometry import Geometry
from braggflow.phases import MatchOptions, identify, load_phase, match_phase, reflections
from braggflow.phases.matching import poisson_binomial_sf
from braggflow.phases.workflow import identify_frame

PHASES = Path(__file__).parent / "data" / "phases"
CALIBRANTS = ["LaB6", "CeO2", "Si", "alpha_Al2O3"]


def _lines(phase, rng, *, scale=1.0, q_max=4.0, q_err=0.002, wavelength=0.7):
    refl = reflections(phase, q_max=q_max, wavelength=wavelength)
    q = refl["q"].to_numpy() / scale
    return pd.DataFrame({"q": q + rng.normal(0, q_err, len(q)), "q_err": q_err,
                         "intensity": refl["intensity"].to_numpy() * rng.lognormal(0, 0.1, len(q))})


def test_poisson_binomial_tail():
    p = np.array([0.1, 0.5, 0.3])
    assert poisson_binomial_sf(p, 0) == 1.0
    assert poisson_binomial_sf(p, 3) == pytest.approx(0.015)
    assert poisson_binomial_sf(p, 1) == pytest.approx(1 - 0.9 * 0.5 * 0.7)


@pytest.mark.parametrize("name", ["LaB6", "CeO2"])
def test_pyfai_calibrant_frames(name):
    """pyFAI's calibrant image generator: the right phase, a within 0.05% (positions only: equal heights)."""
    import pyFAI.calibrant

    geo = Geometry.from_config(dict(distance_mm=150.0, beam_center_row=200.0, beam_center_col=210.0,
                                    pixel_size_mm=0.15, wavelength_A=0.7))
    cal = pyFAI.calibrant.get_calibrant(name)
    cal.wavelength = 0.7e-10
    shape = (420, 420)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = cal.fake_calibration_image(geo.integrator_for(shape), shape=shape, Imax=1000.0, Imin=10.0,
                                           resolution=0.15)
    frame = np.random.default_rng(3).poisson(frame).astype(float)
    phases = [load_phase(PHASES / f"{n}.yaml") for n in CALIBRANTS]
    result = identify_frame(frame, geo, phases)
    best = result.ranked.iloc[0]
    assert best["phase"] == name and best["accepted"]
    assert best["chance_probability"] < 1e-3
    true_a = load_phase(PHASES / f"{name}.yaml").cell[0]
    assert abs(best["a"] / true_a - 1) < 5e-4
    assert not result.ranked.iloc[1:]["accepted"].any()


def test_mixture_with_random_lines(rng):
    """Two phases plus 20% random lines: both found, no false phase significant, every line used once."""
    lab6, ceo2 = load_phase(PHASES / "LaB6.yaml"), load_phase(PHASES / "CeO2.yaml")
    a = _lines(lab6, rng, q_max=3.6)
    b = _lines(ceo2, rng, q_max=3.6)
    b["intensity"] *= 0.6
    n_random = int(0.2 * (len(a) + len(b)))
    noise = pd.DataFrame({"q": rng.uniform(1.0, 3.6, n_random), "q_err": 0.002,
                          "intensity": rng.uniform(5, 60, n_random)})
    observed = pd.concat([a, b, noise], ignore_index=True).sample(frac=1, random_state=1).reset_index(drop=True)
    phases = [load_phase(PHASES / f"{n}.yaml") for n in CALIBRANTS] + [load_phase(PHASES / "PbBr2.yaml")]
    result = identify(observed, phases, options=MatchOptions(wavelength=0.7), q_range=(1.0, 3.6))
    accepted = set(result.ranked.loc[result.ranked["accepted"], "phase"])
    assert accepted == {"LaB6", "CeO2"}
    others = result.ranked[~result.ranked["accepted"]]
    assert (others["chance_probability"] > 1e-3).all()
    assigned = result.assignment.dropna(subset=["phase"])
    assert assigned.index.is_unique and len(result.unexplained) >= 0.5 * n_random


def test_refinement_recovers_strained_cell(rng):
    ph = load_phase(PHASES / "PbI2.yaml")
    strained = ph.with_cell((4.558 * 1.004, 4.558 * 1.004, 6.986 * 0.995, 90, 90, 120))
    refl = reflections(strained, q_max=4.0, wavelength=0.7)
    observed = pd.DataFrame({"q": refl["q"] + rng.normal(0, 3e-4, len(refl)), "q_err": 3e-4,
                             "intensity": refl["intensity"]})
    m = match_phase(observed, ph, options=MatchOptions(wavelength=0.7, rel_tolerance=2e-4))
    a, c = m.cell[0], m.cell[2]
    assert abs(a - 4.558 * 1.004) < max(4 * m.cell_err[0], 1e-4)
    assert abs(c - 6.986 * 0.995) < max(4 * m.cell_err[2], 1e-4)
    assert m.cell[1] == m.cell[0] and m.cell[5] == pytest.approx(120)
    assert 0 < m.cell_err[0] < 0.005
    # the distance uncertainty enters the error bar
    m2 = match_phase(observed, ph, options=MatchOptions(wavelength=0.7, rel_tolerance=2e-4, distance_mm=500,
                                                        distance_err_mm=1.0))
    assert m2.cell_err[0] > a * 1.0 / 500 * 0.8


def test_gixd_contact_plane(rng):
    """Fibre-textured film with (1 1 0) parallel to the substrate: the contact plane is found."""
    ph = load_phase(PHASES / "CsPbBr3.yaml")
    from braggflow.phases.matching import _predicted_2d

    pred = _predicted_2d(ph, 3.5, (1, 1, 0), 1e-3, 0.5, 0.7)
    q, w = pred.positions(ph.cell)
    polar = pred.polar_angles(ph.cell, (1, 1, 0))
    keep = (w > 0.02 * w.max()) & (q > 0.8)
    q, polar, w = q[keep], polar[keep], w[keep]
    sign = np.where(rng.random(len(q)) < 0.5, -1, 1)
    spots = pd.DataFrame({"q": q, "q_err": 0.002, "intensity": w,
                          "q_xy": sign * q * np.sin(np.radians(polar)) + rng.normal(0, 0.002, len(q)),
                          "q_z": q * np.cos(np.radians(polar)) + rng.normal(0, 0.002, len(q))})
    result = identify(spots, [ph, load_phase(PHASES / "MAPbCl3.yaml")], options=MatchOptions(wavelength=0.7),
                      gixd=True)
    best = result.ranked.iloc[0]
    assert best["phase"] == "CsPbBr3" and best["accepted"]
    assert sorted(abs(int(x)) for x in best["contact_plane"].split()) == [0, 1, 1]


def test_pattern_kind_and_bad_tables():
    from braggflow.phases import pattern_kind

    eta = np.linspace(-170, -10, 40)
    ring = pd.DataFrame({"q": np.r_[np.full(20, 1.0), np.full(20, 2.0)], "eta": np.r_[eta[::2], eta[1::2]]})
    assert pattern_kind(ring) == "rings"
    spots = pd.DataFrame({"q": np.linspace(1, 3, 12), "eta": np.linspace(-90, 90, 12)})
    assert pattern_kind(spots) == "spots"
    with pytest.raises(ValueError, match="q"):
        pattern_kind(pd.DataFrame({"row": [1.0], "col": [2.0]}))
    from braggflow.errors import ConfigError

    with pytest.raises(ConfigError, match="no candidate phases"):
        identify(spots.assign(intensity=1.0), [])


def test_cli_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    import braggflow.cli.phases  # noqa: F401  (registers the commands)
    from braggflow.cli.app import app

    (tmp_path / "bad.cif").write_text("loop_ loop_ ;;\x00")
    frame = tmp_path / "f.npy"
    np.save(frame, np.zeros((10, 10)))
    runner = CliRunner()
    res = runner.invoke(app, ["identify", str(frame), "--cif", str(tmp_path / "bad.cif"), "--distance", "100"])
    assert res.exit_code == 2 and "bad.cif" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["identify", str(frame), "--phase", str(PHASES / "CeO2.yaml"), "--distance", "100",
                              "--beam-row", "5", "--beam-col", "5", "--pixel-size", "0.1"])
    assert res.exit_code == 2 and "wavelength" in res.output


@pytest.mark.realdata
def test_real_gixd_mapbbr3(shared_data, tmp_path):
    """The real GIWAXS frame: MAPbBr3 first of six, p < 1e-3, a within 0.3% of 5.905 Å incl. the distance error."""
    import fabio

    folder = shared_data / "gixd_mapbbr3"
    frame = fabio.open(str(folder / "S123_MABr_A2_00865-00000.tif")).data.astype(float)
    geo = Geometry.from_config(dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0,
                                    pixel_size_mm=0.2, wavelength_A=0.6888, incidence_angle_deg=0.5,
                                    distance_err_mm=1.0))
    phases = [load_phase(PHASES / "MAPbBr3.yaml"), load_phase(folder / "MAPbI3.cif"),
              load_phase(PHASES / "MAPbCl3.yaml"), load_phase(PHASES / "CsPbBr3.yaml"),
              load_phase(PHASES / "PbBr2.yaml"), load_phase(PHASES / "PbI2.yaml")]
    result = identify_frame(frame, geo, phases)
    best = result.ranked.iloc[0]
    assert best["phase"] == "MAPbBr3" and best["accepted"]
    assert best["chance_probability"] < 1e-3
    assert abs(best["a"] / 5.905 - 1) < 3e-3
    assert best["a_err"] >= 5.905 * 1.0 / 809.0 * 0.9  # the distance uncertainty is in the error bar
    assert best["a_err"] < 0.02
    cs = result.ranked.set_index("phase").loc["CsPbBr3"]
    assert cs["score"] < 0.5 * best["score"]  # intensities tell Cs from MA
    assert result.ranked["accepted"].sum() == 1
    from braggflow.viz.phases import plot_identification

    plot_identification(result, tmp_path / "id.png")
    assert (tmp_path / "id.png").stat().st_size > 1000


@pytest.mark.realdata
def test_run_then_identify_from_the_command_line(shared_data, tmp_path):
    """End to end: 'braggflow run' with a geometry, then 'braggflow identify' on its results file."""
    from typer.testing import CliRunner

    import braggflow.cli.core  # noqa: F401  (registers 'run')
    import braggflow.cli.phases  # noqa: F401  (registers 'identify')
    from braggflow.cli.app import app
    from braggflow.io.results import read_group, read_peaks

    folder = shared_data / "gixd_mapbbr3"
    results = tmp_path / "r.h5"
    geometry = dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0, pixel_size_mm=0.2,
                    wavelength_A=0.6888, incidence_angle_deg=0.5, distance_err_mm=1.0)
    sets = [arg for k, v in geometry.items() for arg in ("--set", f"geometry.{k}={v}")]
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(folder / "S123_MABr_A2_00865-00000.tif"), "-o", str(results), *sets])
    assert res.exit_code == 0, res.output
    peaks = read_peaks(results)
    assert len(peaks) > 50 and np.isfinite(peaks["q"]).all() and np.isfinite(peaks["q_z"]).all()
    candidates = ["MAPbBr3", "CsPbBr3", "MAPbCl3", "PbBr2", "PbI2"]
    args = [a for name in candidates for a in ("--phase", str(PHASES / f"{name}.yaml"))]
    res = runner.invoke(app, ["identify", str(results), *args, "--cif", str(folder / "MAPbI3.cif"),
                              "--json", str(tmp_path / "ranked.json")])
    assert res.exit_code == 0, res.output
    tables, _ = read_group(results, "phases")
    ranked = next(t for t in tables.values() if "chance_probability" in t.columns)
    assert ranked.iloc[0]["phase"] == "MAPbBr3" and ranked.iloc[0]["chance_probability"] < 1e-3
    assert (tmp_path / "ranked.json").stat().st_size > 100
