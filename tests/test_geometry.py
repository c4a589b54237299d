"""Geometry: pyFAI-backed conversions, round trips, error propagation, grazing incidence, integration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from braggflow.errors import ConfigError, InputFileError
from braggflow.geometry import Geometry, GeometryConfig, add_geometry_columns
from braggflow.schema import new_peak_table

TILTED = GeometryConfig(distance_mm=200.0, beam_center_row=300.3, beam_center_col=250.7, pixel_size_mm=0.1,
                        energy_keV=20.0, rot1_deg=3.0, rot2_deg=-2.0, rot3_deg=10.0)
GI = GeometryConfig(distance_mm=300.0, beam_center_row=380.0, beam_center_col=150.0, pixel_size_mm=0.172,
                    wavelength_A=1.0, incidence_angle_deg=0.3)


def test_beam_centre_distance_and_round_trip(rng):
    geo = Geometry.from_config(TILTED)
    row, col = geo.beam_center
    assert row == pytest.approx(300.3, abs=1e-6) and col == pytest.approx(250.7, abs=1e-6)
    assert geo.distance_mm == pytest.approx(200.0, rel=1e-9)
    assert geo.wavelength_A == pytest.approx(12.398419843320026 / 20.0)
    tth, _ = geo.pixel_to_angles(np.array([300.3]), np.array([250.7]))
    assert tth[0] == pytest.approx(0.0, abs=1e-6)
    r = rng.uniform(0, 600, 500)
    c = rng.uniform(0, 500, 500)
    tth, eta = geo.pixel_to_angles(r, c)
    r2, c2 = geo.angles_to_pixel(tth, eta)
    np.testing.assert_allclose(r2, r, atol=1e-6)
    np.testing.assert_allclose(c2, c, atol=1e-6)


def test_untilted_closed_form_and_pixel_centre_convention():
    geo = Geometry.from_config(dict(distance_mm=100.0, beam_center_row=10.0, beam_center_col=20.0,
                                    pixel_size_mm=0.1, wavelength_A=1.0))
    # pixel centre index r sits at (r + 0.5) x pixel from the corner: poni1 = 10.5 pixels
    assert geo.poni["poni1"] == pytest.approx(10.5 * 1e-4)
    tth, eta = geo.pixel_to_angles(np.array([10.0, 10.0]), np.array([120.0, 20.0]))
    assert tth[0] == pytest.approx(np.degrees(np.arctan(100 * 0.1 / 100.0)))
    assert eta[0] == pytest.approx(0.0, abs=1e-9)
    q = geo.two_theta_to_q(tth)
    assert q[0] == pytest.approx(4 * np.pi * np.sin(np.radians(tth[0]) / 2))
    np.testing.assert_allclose(geo.q_to_two_theta(q), tth)


def test_dict_and_poni_round_trip(tmp_path):
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    geo = Geometry.from_config(TILTED)
    again = Geometry.from_dict(geo.to_dict())
    assert again == geo
    ai = AzimuthalIntegrator.sload(geo.poni)
    ai.save(str(tmp_path / "g.poni"))
    loaded = Geometry.from_poni(tmp_path / "g.poni")
    r, c = np.array([5.0, 400.0]), np.array([7.0, 300.0])
    np.testing.assert_allclose(loaded.pixel_to_angles(r, c), geo.pixel_to_angles(r, c), atol=1e-9)
    via_config = Geometry.from_config(GeometryConfig(poni=str(tmp_path / "g.poni"), incidence_angle_deg=0.2))
    assert via_config.incidence_angle_deg == 0.2


def test_bad_geometry_inputs(tmp_path):
    with pytest.raises(ConfigError, match="geometry.distance_mm is required"):
        Geometry.from_config(dict(beam_center_row=1, beam_center_col=1, pixel_size_mm=0.1, wavelength_A=1))
    with pytest.raises(ConfigError, match="wavelength_A or geometry.energy_keV"):
        Geometry.from_config(dict(distance_mm=100, beam_center_row=1, beam_center_col=1, pixel_size_mm=0.1))
    with pytest.raises(InputFileError, match="PONI file not found"):
        Geometry.from_poni(tmp_path / "missing.poni")
    (tmp_path / "bad.poni").write_text("this is not a poni file\n")
    with pytest.raises(InputFileError, match="bad.poni"):
        Geometry.from_poni(tmp_path / "bad.poni")
    with pytest.raises(ConfigError, match="incidence angle"):
        Geometry.from_config(TILTED).pixel_to_qxy_qz(np.array([1.0]), np.array([1.0]))


def test_columns_and_error_propagation(rng):
    geo = Geometry.from_config(TILTED)
    n = 50
    table = new_peak_table(n, row=rng.uniform(0, 600, n), col=rng.uniform(0, 500, n), row_err=0.2, col_err=0.3,
                           rc_cov=0.01)
    out = add_geometry_columns(table, geo)
    np.testing.assert_allclose(out["d"], 2 * np.pi / out["q"])
    np.testing.assert_allclose(out["d_err"], out["q_err"] * out["d"] / out["q"], rtol=1e-3)
    # Monte Carlo check of the propagated q error for one peak
    k = 7
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    draws = rng.multivariate_normal([table.row[k], table.col[k]], cov, size=4000)
    tth, _ = geo.pixel_to_angles(draws[:, 0], draws[:, 1])
    assert np.std(geo.two_theta_to_q(tth)) == pytest.approx(out["q_err"][k], rel=0.06)
    assert out["q_xy"].isna().all()  # no incidence angle: no q_xy/q_z
    with pytest.raises(ValueError, match="row"):
        add_geometry_columns(table.drop(columns=["row"]), geo)
    empty = add_geometry_columns(new_peak_table(0), geo)
    assert len(empty) == 0 and "q" in empty


def test_qxy_qz_match_pyfai_fiber_integrator():
    geo = Geometry.from_config(GI)
    shape = (400, 300)
    fi = geo.integrator_for(shape)
    rows, cols = np.indices(shape, dtype=np.float64)
    ref = {}
    for name in ("qip_A^-1", "qoop_A^-1"):
        unit = geo._fiber_unit(name)
        ref[name] = fi.array_from_unit(shape=shape, typ="center", unit=unit, scale=True)
    table = new_peak_table(shape[0] * shape[1], row=rows.ravel(), col=cols.ravel(), row_err=0.1, col_err=0.1)
    out = add_geometry_columns(table, geo)
    np.testing.assert_allclose(out["q_xy"].to_numpy().reshape(shape), ref["qip_A^-1"], atol=1e-6)
    np.testing.assert_allclose(out["q_z"].to_numpy().reshape(shape), ref["qoop_A^-1"], atol=1e-6)
    # above the horizon (towards row 0) q_z > 0; higher columns q_xy > 0; |q| is preserved
    assert out["q_z"][0] > 0 and out["q_xy"].to_numpy().reshape(shape)[100, 299] > 0
    np.testing.assert_allclose(np.hypot(out["q_xy"], out["q_z"]), out["q"], rtol=2e-3)


def _calibrant_frame(name, shape=(500, 500)):
    import pyFAI.calibrant

    geo = Geometry.from_config(dict(distance_mm=120.0, beam_center_row=250.0, beam_center_col=240.0,
                                    pixel_size_mm=0.2, wavelength_A=0.7))
    cal = pyFAI.calibrant.get_calibrant(name)
    cal.wavelength = 0.7e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = cal.fake_calibration_image(geo.integrator_for(shape), shape=shape, Imax=1000.0, Imin=10.0,
                                           resolution=0.15)
    frame = np.random.default_rng(7).poisson(frame).astype(np.float64)  # counting noise
    return geo, frame, cal


def test_azimuthal_ring_positions_on_pyfai_calibrant():
    from braggflow.geometry import azimuthal_profile, ring_positions

    geo, frame, cal = _calibrant_frame("CeO2")
    profile = azimuthal_profile(frame, geo)
    assert {"q", "intensity", "intensity_err", "count"} <= set(profile.columns)
    rings = ring_positions(profile, min_snr=5)
    q_true = 2 * np.pi / np.array(cal.dspacing)
    q_true = q_true[q_true < profile["q"].max() * 0.95]
    assert len(rings) >= 5
    for q, e in zip(rings["q"], rings["q_err"]):
        nearest = q_true[np.argmin(np.abs(q_true - q))]
        assert abs(q - nearest) < max(5 * e, 2e-3)


def test_remap_leaves_the_missing_wedge_empty():
    from braggflow.geometry import remap

    geo = Geometry.from_config(GI)
    frame = np.ones((400, 300))
    image, qz, qxy = remap(frame, geo, to="qxy-qz", npt=(80, 80))
    assert image.shape == (80, 80) and qz.shape == (80,) and qxy.shape == (80,)
    near_axis = np.abs(qxy) < 0.02
    high = qz > 0.5 * qz.max()
    assert np.isnan(image[np.ix_(high, near_axis)]).all()  # the wedge around q_xy = 0
    assert np.isfinite(image).mean() > 0.3
    polar, eta, tth = remap(frame, geo, to="polar", npt=(60, 90))
    assert polar.shape == (90, 60) and np.isfinite(polar).any()
    with pytest.raises(ConfigError):
        remap(frame, Geometry.from_config(TILTED), to="qxy-qz")
