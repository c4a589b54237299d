"""Label files of grazing-incidence features: round trip from a simulated frame's truth, errors naming the line and
column, pixel centres through a geometry, and fine-tuning the detector on labelled frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from braggflow.errors import ConfigError, InputFileError
from braggflow.geometry import Geometry
from braggflow.simulate.gixd import detector_setup, simulate_gixd_frame
from braggflow.training.labels import (
    COVERAGE_SLACK,
    LabelledFrame,
    coverage_counts,
    detector_loss,
    fine_tune_detector,
    labels_from_truth,
    read_labels,
    tune_label_thresholds,
    write_labels,
)

GEOMETRY = dict(distance_mm=300.0, beam_center_row=1000.0, beam_center_col=500.0, pixel_size_mm=0.172,
                wavelength_A=1.0, incidence_angle_deg=0.3)


@pytest.fixture(scope="module")
def setup():
    """A Pilatus-1M-sized detector with the beam near its bottom edge."""
    return detector_setup(Geometry.from_config(GEOMETRY), (1043, 981))


@pytest.fixture(scope="module")
def frames(setup):
    """Simulated polar frames with at least two visible features each."""
    out = []
    for seed in range(60):
        fr = simulate_gixd_frame(seed, setup)
        if fr.truth["visible"].sum() >= 2:
            out.append(fr)
        if len(out) == 6:
            break
    assert len(out) == 6
    return out


@pytest.mark.parametrize("index", range(6))
def test_labels_from_a_simulated_truth_round_trip(frames, tmp_path, index):
    fr = frames[index]
    path = write_labels(labels_from_truth(fr.truth, frame="sim_000.tif"), tmp_path / "labels.csv",
                        comment="simulated frame, seed 0\ngeometry: test setup")
    assert path.read_text().startswith("# simulated frame")
    back = read_labels(path)
    extent = (fr.truth["chi_hi"] > fr.truth["chi_lo"]).to_numpy()
    assert not fr.truth["visible"].to_numpy(bool)[~extent].any()  # features left out are never visible
    truth = fr.truth[extent]
    assert len(back) == len(truth) and back["visible"].sum() == fr.truth["visible"].sum()
    assert list(back["kind"]) == list(truth["kind"])
    for col in ("q_lo", "q_hi", "chi_lo", "chi_hi"):
        np.testing.assert_allclose(back[col], truth[col], atol=2e-6)
    np.testing.assert_array_equal(back["visible"], truth["visible"].to_numpy(bool))
    assert set(back["frame"]) == {"sim_000.tif"}
    assert len(read_labels(path, frame="elsewhere/sim_000.tif")) == len(back)
    assert len(read_labels(path, frame="other.tif")) == 0


def test_ring_without_chi_width_spans_the_circle_and_pixel_centres_use_the_geometry(tmp_path):
    geometry = Geometry.from_config(GEOMETRY)
    tth, eta = geometry.pixel_to_angles(np.array([700.0]), np.array([650.0]))
    q_expected = float(geometry.two_theta_to_q(tth)[0])
    path = tmp_path / "l.csv"
    path.write_text("kind,row,col,q,chi,q_width,chi_width\n"
                    "ring,,,1.5,-90,0.05,\n"
                    "spot,700,650,,,0.03,4\n")
    labels = read_labels(path, geometry=geometry)
    assert (labels.loc[0, "chi_lo"], labels.loc[0, "chi_hi"]) == (-180.0, 180.0)
    assert labels.loc[1, "q"] == pytest.approx(q_expected)
    assert labels.loc[1, "chi"] == pytest.approx(float(eta[0]))
    assert labels.loc[1, "chi_hi"] - labels.loc[1, "chi_lo"] == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="line 3: the centre is given as row, col"):
        read_labels(path)


@pytest.mark.parametrize("body, message", [
    ("spot,1.2,-90,0.03,5\nblob,1.3,-80,0.03,5\n", r"line 3, column kind: 'blob'"),
    ("spot,1.2,-90,0.03,5\narc,1.3,-80,-0.03,5\n", r"line 3, column q_width: '-0.03' must be > 0"),
    ("spot,1.2,-90,0.03,5\narc,abc,-80,0.03,5\n", r"line 3, column q: 'abc' is not a number"),
    ("spot,1.2,-190,0.03,5\n", r"line 2, column chi: -190.0 is outside"),
    ("arc,1.2,-90,0.03,\n", r"line 2, column chi_width: empty, but only a ring"),
    ("spot,1.2,-90,0.03\n", r"line 2: 4 values for 5 columns"),
])
def test_a_bad_label_file_names_the_line_and_column(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text("kind,q,chi,q_width,chi_width\n" + body)
    with pytest.raises(InputFileError, match=message) as err:
        read_labels(path)
    assert str(path) in str(err.value)


def test_a_label_file_without_needed_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("kind,q,chi,width\nspot,1,2,3\n")
    with pytest.raises(InputFileError, match="unknown column"):
        read_labels(path)
    path.write_text("kind,q,q_width\nspot,1,2\n")
    with pytest.raises(InputFileError, match="q and chi, or row and col"):
        read_labels(path)
    with pytest.raises(InputFileError, match="not found"):
        read_labels(tmp_path / "missing.csv")


def test_fine_tuning_on_labelled_frames_lowers_their_loss(frames, tmp_path):
    """A few epochs from the shipped model on six labelled simulated frames lower the loss on those frames."""
    pytest.importorskip("torch")
    from braggflow.nn.detector import list_detectors, load_detector

    if not list_detectors():
        pytest.skip("no shipped detector in the MANIFEST")
    labelled = []
    for i, fr in enumerate(frames):
        path = write_labels(labels_from_truth(fr.truth), tmp_path / f"f{i}.csv")
        labelled.append(LabelledFrame(image=fr.image, q=fr.grid.q, chi=fr.grid.chi, truth=read_labels(path)))
    start = load_detector(backend="torch")
    before = detector_loss(start, labelled)
    out = tmp_path / "tuned.pt"
    detector, metrics = fine_tune_detector(start, labelled, out, epochs=4, lr=1e-3, batch_size=3, patience=2,
                                           log=lambda line: None)
    after = detector_loss(detector, labelled)
    assert metrics["initial_val_loss"] == pytest.approx(before, rel=1e-3)
    assert after < 0.9 * before
    assert metrics["best_val_loss"] == pytest.approx(after, rel=1e-3)
    assert metrics["thresholds"] == detector.thresholds and 0 <= metrics["coverage_f1"] <= 1
    reloaded = load_detector(str(out))  # the checkpoint holds the best weights
    assert detector_loss(reloaded, labelled) == pytest.approx(after, rel=1e-3)


def test_coverage_counts_of_known_detections(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("kind,q,chi,q_width,chi_width,visible\n"
                    "ring,1.0,-100,0.1,120,true\n"
                    "spot,2.0,-90,0.04,10,true\n"
                    "arc,3.0,-90,0.1,20,false\n")
    truth = read_labels(path)
    pred = pd.DataFrame(dict(q=[1.0, 1.05 + COVERAGE_SLACK - 1e-6, 1.0, 2.5, 3.0],
                             eta=[-100.0, -150.0, -30.0, -90.0, -90.0]))
    # the ring found twice (the second inside its widened q range), one detection outside the ring's chi range,
    # one on nothing, one only on a feature too weak to count; the spot not found
    assert coverage_counts(pred, truth) == (1, 2, 2, 4)


def test_tuned_thresholds_do_not_lower_the_coverage_f1(frames):
    pytest.importorskip("torch")
    from braggflow.nn.detector import contrast_image, decode, list_detectors, load_detector

    if not list_detectors():
        pytest.skip("no shipped detector in the MANIFEST")
    detector = load_detector()
    labelled = [LabelledFrame(image=fr.image, q=fr.grid.q, chi=fr.grid.chi, truth=fr.truth) for fr in frames]

    def f1(thresholds):
        total = np.zeros(4)
        for fr in labelled:
            out = detector.raw(contrast_image(fr.image)[None])[0]
            total += coverage_counts(decode(out, np.isfinite(fr.image), fr.q, fr.chi, thresholds), fr.truth)
        p, r = total[2] / max(total[3], 1), total[0] / max(total[1], 1)
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    start = {"ring": 0.4, "arc": 0.15, "spot": 0.15}
    thresholds, best = tune_label_thresholds(detector, labelled, start=start)
    assert best == pytest.approx(f1(thresholds))
    assert best >= f1(start)
    assert set(thresholds) == {"ring", "arc", "spot"}


def test_fine_tuning_refuses_bad_options():
    with pytest.raises(ConfigError, match="patience must be >= 1"):
        fine_tune_detector(None, [LabelledFrame(np.zeros((256, 256)), np.arange(256.0), np.arange(256.0),
                                                pd.DataFrame())], patience=0)
    with pytest.raises(ConfigError, match="at least one labelled frame"):
        fine_tune_detector(None, [])


# ---------------------------------------------------------------- hand labels of the Pilatus GIWAXS series
LABEL_DIR = Path(__file__).parent / "data" / "giwaxs_labels"


def _bench_pilatus():
    """bench/detect_pilatus.py as a module (the series' geometry, frames and coverage table)."""
    spec = importlib.util.spec_from_file_location("detect_pilatus", REPO / "bench" / "detect_pilatus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pilatus_label_file_reads_and_its_picture_is_small():
    labels = read_labels(LABEL_DIR / "giwaxs_gixsgui_labels.csv")
    assert set(labels["frame"]) == {"giwaxs1_s087_000.tif", "giwaxs1_s087_008.tif", "giwaxs1_s087_016.tif"}
    assert set(labels["kind"]) == {"ring", "spot"} and labels["visible"].all()
    assert (LABEL_DIR / "giwaxs_gixsgui_labels.png").stat().st_size < 300_000


def test_pilatus_labels_lie_on_signal_of_their_frames(shared_data):
    """Each label's centre is a seen bin of its remapped frame, and brighter than the bins just beside it in q."""
    from braggflow.nn.detector import polar_image

    bench = _bench_pilatus()
    labels = read_labels(bench.LABELS)
    for name in bench.FRAMES:
        frame, mask = bench.load(name)
        image, q, chi = polar_image(frame, bench.geometry(name), mask=mask)
        for r in labels[labels["frame"] == name].itertuples():
            rows = (chi >= r.chi_lo) & (chi <= r.chi_hi)
            with np.errstate(all="ignore"):
                profile = np.nanmean(image[rows], axis=0)
            centre = profile[np.argmin(abs(q - r.q))]
            # the median of the bins beside the extent: robust to the narrow reflected beam next to the spots
            outside = np.nanmedian(profile[(abs(q - r.q) > r.q_width / 2) & (abs(q - r.q) < r.q_width)])
            assert np.isfinite(centre) and centre > 1.1 * outside, (name, r.kind)


def test_learned_finder_covers_the_pilatus_hand_labels(shared_data):
    """The learned finder (braggflow run's per-frame pipeline) on the three hand-labelled frames: measured with the
    shipped model 6 of the 6 labels found with 9 of its 18 detections inside a label (bench/detect_pilatus.py;
    the others lie on the bright gap edge at q = 0.77 1/A, docs/detector.md); the bars, 5 of 6 and precision
    0.4, leave one label and two detections of margin."""
    bench = _bench_pilatus()
    sums = bench.coverage_table()
    learned = sums["learned"]
    assert learned["n_true"] == 6
    assert learned["found"] >= 5
    assert learned["inside"] / learned["n_pred"] >= 0.4


def test_train_detector_command_fine_tunes_on_labelled_frames(frames, setup, tmp_path):
    """braggflow train-detector --labels: simulated frames drawn on their detector, their truth as one label file."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from braggflow.cli import app
    from braggflow.nn.detector import list_detectors
    from braggflow.simulate.gixd import detector_image

    if not list_detectors():
        pytest.skip("no shipped detector in the MANIFEST")
    names, tables = [], []
    for i, fr in enumerate(frames[:2]):
        image, _ = detector_image(fr, setup.shape)
        names.append(tmp_path / f"sim_{i}.npy")
        np.save(names[-1], image[None].astype(np.float32))
        tables.append(labels_from_truth(fr.truth, frame=names[-1].name))
    write_labels(pd.concat(tables), tmp_path / "labels.csv")
    geo = ["--distance", "300", "--beam-row", "1000", "--beam-col", "500", "--pixel-size", "0.172", "--wavelength",
           "1.0"]
    runner = CliRunner()
    args = ["train-detector", "--labels", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "t.pt"), "--epochs", "2",
            *geo]
    result = runner.invoke(app, [*args, "--frames", str(names[0]), "--frames", str(names[1])])
    assert result.exit_code == 0, result.output
    assert "sim_0.npy: " in result.output and "loss on the labelled frames" in result.output
    assert (tmp_path / "t.pt").is_file()
    result = runner.invoke(app, [*args, "--frames", str(names[0])])
    assert result.exit_code != 0 and "sim_1.npy not given with --frames" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "--labels needs the labelled frames" in result.output
