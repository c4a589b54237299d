"""find.method learned: the grazing-incidence detector inside ``braggflow run`` (simulated frames with known
features, an empty frame, band intensities against a closed form, the missing incidence angle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.errors import ConfigError
from braggflow.geometry import Geometry
from braggflow.nn.detector import DEFAULT_DETECTOR, list_detectors
from braggflow.pipeline import prepare, process_frame
from braggflow.pipeline.config import Config
from braggflow.pipeline.learned import PolarLookup, QxyQz, band_intensity, learned_peaks
from braggflow.simulate.gixd import detector_image, detector_setup, simulate_gixd_frame

GEOMETRY = dict(distance_mm=250.0, beam_center_row=1000.5, beam_center_col=300.0, pixel_size_mm=0.2,
                wavelength_A=1.0, incidence_angle_deg=0.3)
SHAPE = (1024, 1024)
SEED = 34  # a frame of this setup with a powder ring, fibre-texture arcs and spots (all three kinds found)
runner = CliRunner()

pytestmark = pytest.mark.skipif(not list_detectors(), reason="no shipped detector in the MANIFEST")


@pytest.fixture(scope="module")
def simulated():
    setup = detector_setup(Geometry.from_config(GEOMETRY), SHAPE)
    frame = simulate_gixd_frame(SEED, setup)
    image, mask = detector_image(frame, SHAPE)
    return frame, image.astype(np.float32), mask


@pytest.fixture(scope="module")
def config():
    return Config.model_validate({"geometry": GEOMETRY, "find": {"method": "learned"}})


def _inside_truth(table: pd.DataFrame, truth: pd.DataFrame, slack: float = 0.02) -> np.ndarray:
    """Whether each row's (q, eta) lies in a visible true feature's extent (radial box + slack, chi range)."""
    t = truth[truth["visible"]]
    q, chi = table["q"].to_numpy()[:, None], table["eta"].to_numpy()[:, None]
    ok = ((q >= t["q_lo"].to_numpy()[None] - slack) & (q <= t["q_hi"].to_numpy()[None] + slack)
          & (chi >= t["chi_lo"].to_numpy()[None]) & (chi <= t["chi_hi"].to_numpy()[None]))
    return ok.any(1)


def test_learned_finder_reports_a_ring_an_arc_and_a_spot_with_extents(simulated, config):
    frame, image, mask = simulated
    table = process_frame(image, config=config, context=prepare(config, shape=SHAPE, mask=mask))
    assert set(table["kind"].astype(str)) == {"ring", "arc", "spot"}
    assert (table["method"].astype(str) == DEFAULT_DETECTOR).all()
    assert ((table["confidence"] > 0) & (table["confidence"] <= 1)).all()
    assert (table["q_width"] > 0).all() and (table["chi_width"] > 0).all()
    inside = _inside_truth(table, frame.truth)
    for kind in ("ring", "arc", "spot"):
        assert inside[(table["kind"] == kind).to_numpy()].any(), kind  # each kind on a true feature
    ring = table[table["kind"] == "ring"].iloc[0]
    assert ring["chi_width"] > 300  # the ring's whole seen chi range
    wide = table[table["kind"] != "spot"]
    assert (wide["intensity_err"] > 0).all() and (wide["npix"] > 0).all()
    assert np.allclose(wide["score"], wide["intensity"] / wide["intensity_err"])
    assert np.allclose(wide["d"], 2 * np.pi / wide["q"])
    on = wide[np.isfinite(wide["row"])]
    assert len(on) and np.isfinite(on[["q_xy", "q_z"]].to_numpy()).all()
    # the centre's detector pixel maps back to the feature's q and chi
    g = Geometry.from_config(GEOMETRY)
    tth, eta = g.pixel_to_angles(on["row"].to_numpy(), on["col"].to_numpy())
    np.testing.assert_allclose(g.two_theta_to_q(tth), on["q"], atol=1e-6)
    np.testing.assert_allclose(eta, on["eta"], atol=1e-6)


def test_learned_finder_finds_nothing_on_frames_without_features(config):
    setup = detector_setup(Geometry.from_config(GEOMETRY), SHAPE)
    frame = simulate_gixd_frame(0, setup)  # seed 0: background and artefacts only
    assert len(frame.truth) == 0
    image, mask = detector_image(frame, SHAPE)
    table = process_frame(image.astype(np.float32), config=config, context=prepare(config, shape=SHAPE, mask=mask))
    assert len(table) == 0
    flat = np.random.default_rng(1).poisson(50.0, SHAPE).astype(np.float32)
    assert len(process_frame(flat, config=config, context=prepare(config, shape=SHAPE))) == 0
    # the frame's learned class: empty, for the simulated frame and for flat noise
    for img, msk in ((image.astype(np.float32), mask), (flat, None)):
        row = {}
        table = learned_peaks(img, mask=msk, context=prepare(config, shape=SHAPE, mask=msk), config=config,
                              frame_row=row)
        assert len(table) == 0 and row["frame_class"] == "empty", row
        assert row["p_empty"] > 0.5 and max(row["p_spots"], row["p_arcs"], row["p_rings"]) < 0.5, row


def test_frame_class_of_a_frame_with_rings_arcs_and_spots(simulated, config):
    frame, image, mask = simulated
    kinds = frame.truth.loc[frame.truth["visible"], "kind"].value_counts()
    assert set(kinds.index) == {"ring", "arc", "spot"} and kinds["spot"] > kinds["arc"] + kinds["ring"]
    row = {}
    learned_peaks(image, mask=mask, context=prepare(config, shape=SHAPE, mask=mask), config=config, frame_row=row)
    # mostly spots (16 of its 20 labelled features; one weak ring, three arcs): the spot class, not empty
    assert row["frame_class"] == "spots" and row["p_spots"] > 0.5 and row["p_empty"] < 0.5, row


def test_polar_lookup_matches_the_remap(simulated):
    from braggflow.geometry.remap import remap

    _, image, mask = simulated
    g = Geometry.from_config(GEOMETRY)
    expected, chi, q = remap(image, g, to="q", mask=mask, npt=(256, 256))
    got, counts, npix = PolarLookup.build(g, SHAPE, mask).rebin(image)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    same = np.isclose(got, expected, rtol=1e-6) | np.isnan(got)
    assert same.mean() > 0.995  # the rest: pixels on a bin edge, which pyFAI places in float32
    np.testing.assert_allclose(got, expected, rtol=0.05, equal_nan=True)
    assert int(npix.sum()) == int((~mask).sum())
    np.testing.assert_allclose(counts.sum(), image[~mask].astype(np.float64).sum(), rtol=1e-9)


def test_rebin_leaves_out_the_frames_bad_pixels_as_a_lookup_built_with_them_masked(simulated):
    _, image, mask = simulated
    g = Geometry.from_config(GEOMETRY)
    bad = np.zeros(SHAPE, dtype=bool)
    bad[::37, ::11] = True  # a sparse set of bad pixels beyond the static mask (saturated, say)
    frame = image.copy()
    frame[5, 7] = np.nan  # and a non-finite one
    lookup = PolarLookup.build(g, SHAPE, mask)
    got, counts, npix = lookup.rebin(frame, bad)
    full = mask | bad
    full[5, 7] = True
    expected, counts_e, npix_e = PolarLookup.build(g, SHAPE, full).rebin(np.nan_to_num(frame))
    # the same bins either way (the lookup built with more pixels masked keeps the static mask's grid)
    np.testing.assert_array_equal(npix, npix_e)
    np.testing.assert_allclose(counts, counts_e, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)


def test_cached_qxy_qz_match_the_geometry():
    g = Geometry.from_config(GEOMETRY)
    rng = np.random.default_rng(3)
    row, col = rng.uniform(-0.5, SHAPE[0] - 0.5, 500), rng.uniform(-0.5, SHAPE[1] - 0.5, 500)
    q_xy, q_z = QxyQz(g)(np.r_[row, np.nan], np.r_[col, 3.0])
    assert np.isnan(q_xy[-1]) and np.isnan(q_z[-1])
    q_xy, q_z = q_xy[:-1], q_z[:-1]
    exact_xy, exact_z = g.pixel_to_qxy_qz(row, col)
    np.testing.assert_allclose(q_xy, exact_xy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(q_z, exact_z, rtol=1e-12, atol=1e-12)


def test_band_intensity_recovers_the_net_counts_and_its_poisson_error():
    q = np.linspace(0.5, 3.0, 100)
    chi = np.linspace(-179, 179, 180)
    npix = np.full((180, 100), 4)
    counts = 10.0 * npix  # 10 counts per pixel of background
    box = (q >= 1.5) & (q <= 1.6)
    rows = (chi >= -60) & (chi <= -30)
    counts[np.ix_(rows, box)] += 25.0  # 25 net counts in each bin of the box
    boxes = pd.DataFrame(dict(q_lo=[1.5], q_hi=[1.6], chi_lo=[-60.0], chi_hi=[-30.0]))
    inten, err, bg = band_intensity(counts, npix, q, chi, boxes, gain=1.0)
    n_bins = box.sum() * rows.sum()
    assert inten[0] == pytest.approx(25.0 * n_bins)
    assert bg[0] == pytest.approx(10.0)
    s, n = counts[np.ix_(rows, box)].sum(), npix[np.ix_(rows, box)].sum()
    band = (((q >= 1.5 - 0.05) & (q < 1.5)) | ((q > 1.6) & (q <= 1.65)))
    m = npix[np.ix_(rows, band)].sum()
    assert err[0] == pytest.approx(np.sqrt(s + n**2 * 10.0 * m / m**2))


def test_learned_finder_needs_an_incidence_angle(simulated):
    _, image, _ = simulated
    no_incidence = {k: v for k, v in GEOMETRY.items() if k != "incidence_angle_deg"}
    cfg = Config.model_validate({"geometry": no_incidence, "find": {"method": "learned"}})
    with pytest.raises(ConfigError, match="incidence angle"):
        process_frame(image, config=cfg)
    cfg = Config.model_validate({"find": {"method": "learned"}})
    with pytest.raises(ConfigError, match="incidence angle"):
        process_frame(image, config=cfg)


def test_run_finder_learned_writes_the_features(simulated, tmp_path):
    import tifffile

    from braggflow.io.results import read_frames, read_peaks

    _, image, mask = simulated
    tifffile.imwrite(tmp_path / "frame.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    g = GEOMETRY
    args = ["run", str(tmp_path / "frame.tif"), "-o", str(tmp_path / "out.h5"), "--finder", "learned",
            "--mask", str(tmp_path / "mask.tif"), "--distance", str(g["distance_mm"]),
            "--beam-row", str(g["beam_center_row"]), "--beam-col", str(g["beam_center_col"]),
            "--pixel-size", str(g["pixel_size_mm"]), "--wavelength", str(g["wavelength_A"])]
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "incidence angle" in res.output
    res = runner.invoke(app, [*args, "--incidence-angle", str(g["incidence_angle_deg"])])
    assert res.exit_code == 0, res.output
    peaks = read_peaks(tmp_path / "out.h5")
    assert set(peaks["kind"].astype(str)) == {"ring", "arc", "spot"}
    assert np.isfinite(peaks["q_width"]).all() and np.isfinite(peaks["confidence"]).all()
    # the frame's learned class reaches the frames table (a mostly-spot frame: see the frame-class test)
    frames = read_frames(tmp_path / "out.h5")
    assert frames["frame_class"].astype(str).tolist() == ["spots"]
    p = frames[["p_empty", "p_spots", "p_arcs", "p_rings"]].to_numpy()
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all() and frames["p_spots"].iloc[0] > 0.5


def test_identify_chooses_ring_or_spot_matching_from_the_learned_frame_class():
    from braggflow.phases.workflow import matching_mode

    spread = pd.DataFrame(dict(q=np.repeat([1.0, 1.5], 10), eta=np.tile(np.linspace(-170, 170, 10), 2)))
    assert matching_mode(spread, "auto")[0] == "rings"  # without classes: the peaks lie on rings
    kind, reason = matching_mode(spread, "auto", frame_classes=dict(p_spots=0.9, p_arcs=0.2, p_rings=0.1))
    assert kind == "spots" and "learned frame class" in reason
    assert matching_mode(spread, "auto", frame_classes=dict(p_spots=0.6, p_arcs=0.7, p_rings=0.1))[0] == "rings"
    # the user's choice wins; NaN probabilities (no frame-class head) fall back to the peaks' spread
    assert matching_mode(spread, "rings", frame_classes=dict(p_spots=0.9, p_arcs=0.0, p_rings=0.0))[0] == "rings"
    assert matching_mode(spread, "auto", frame_classes=dict(p_spots=np.nan, p_arcs=np.nan, p_rings=np.nan))[0] \
        == "rings"
