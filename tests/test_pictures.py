"""Every picture kind: no text cut by the figure's edge, and the elements a reader needs (colour bar, legend
entries, axis labels with units, integer frame ticks, no offset text)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from braggflow.link import link
from braggflow.profiles.render import peak_profile
from braggflow.schema import Flag, new_peak_table
from braggflow.viz import animate, plot_frame, plot_remap, plot_series, plot_tracks, style, summed_image

SIZE = 96
UNIT = re.compile(r"\(([^()]+)\)$")


@pytest.fixture
def series(rng):
    """Five 96x96 frames with four drifting peaks (one flagged EDGE | SATURATED), and their table."""
    starts = np.array([[20.0, 20.0], [30.0, 70.0], [70.0, 25.0], [65.0, 65.0]])
    amplitude = np.array([2000.0, 800.0, 400.0, 5000.0])
    idx = np.arange(SIZE)
    frames, rows = [], []
    for t in range(5):
        frame = rng.poisson(2.0, (SIZE, SIZE)).astype(np.float32)
        for (r, c), a in zip(starts + t * np.array([0.5, -0.3]), amplitude):
            frame += a * peak_profile(idx, idx, row=r, col=c, sigma_row=1.2, sigma_col=1.2)
            rows.append((t, r, c, a))
        frames.append(frame)
    f, r, c, a = map(np.array, zip(*rows))
    flags = np.where(a == 400.0, int(Flag.EDGE | Flag.SATURATED), 0)
    return np.stack(frames), new_peak_table(len(f), frame=f, row=r, col=c, intensity=a, score=a / 10, flags=flags)


def _check_layout(fig):
    assert style.texts_outside(fig) == []


def _labels_have_units(ax, x_unit: str | None, y_unit: str | None):
    for label, unit in ((ax.get_xlabel(), x_unit), (ax.get_ylabel(), y_unit)):
        if unit is not None:
            assert UNIT.search(label) and UNIT.search(label).group(1) == unit, label


def _colourbar_label(fig) -> str:
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    return bars[0].get_ylabel()


def test_texts_outside_finds_a_cut_label():
    """The check itself: a y label pushed past the left edge is reported."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=100)  # no layout engine: the label is where it is put
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_ylabel("mean intensity (counts)")
    fig.subplots_adjust(left=0.0)
    assert "mean intensity (counts)" in style.texts_outside(fig)


def test_value_scale_and_plain_numbers():
    assert style.value_scale([1, 10, 1e4]) == "log"
    assert style.value_scale([2.0e4, 2.02e4]) == "linear"
    assert style.value_scale([-1, 1e4]) == "linear"
    fig = style.figure((4, 3), 80)
    ax = fig.add_subplot()
    ax.plot([0, 1], [20200.0, 20210.0])
    style.plain_numbers(ax, "y")
    fig.draw_without_rendering()
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_plot_frame_colourbar_legend_and_layout(series):
    frames, table = series
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, 45:50] = True
    fig = plot_frame(frames[2], table, frame_index=2, mask=mask, output=None, figsize=(4, 3.2), dpi=80)
    _check_layout(fig)
    assert _colourbar_label(fig) == "counts"
    ax = fig.axes[0]
    _labels_have_units(ax, "px", "px")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "flagged: edge, saturated" in labels and "masked" in labels


def test_animation_layout(series):
    frames, table = series
    norm = animate._draw.frame_norm([frames[0]])
    fig, *_ = animate._layout(frames[0], None, norm, table, 4, (4, 4), 80)
    _check_layout(fig)
    assert _colourbar_label(fig) == "counts"
    ax = fig.axes[0]
    _labels_have_units(ax, "px", "px")
    assert any(t.get_text().startswith("flagged: edge") for t in ax.get_legend().get_texts())


def test_plot_tracks_says_how_many_are_drawn(series):
    frames, table = series
    linked = link(table, search_range=2.0)
    fig = plot_tracks(summed_image(frames), linked, output=None, max_tracks=2, figsize=(4, 3.2), dpi=80)
    _check_layout(fig)
    assert fig.axes[0].get_title().startswith("2 of 4 tracks")
    assert _colourbar_label(fig) == "summed counts"


def test_plot_series_with_reference(series, rng):
    frames, table = series
    table = table.assign(intensity=table["intensity"] * 10 + 2.0e4)  # a narrow range far from 0
    reference = table[["frame", "row", "col"]].copy()
    reference["row"] += rng.normal(0, 0.2, len(reference))
    fig = plot_series(table, reference=reference, output=None, figsize=(5, 5), dpi=80)
    _check_layout(fig)
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert any(ax.get_ylabel() == "mean intensity (counts)" for ax in axes)
    assert any(ax.get_ylabel() == "position error (px)" for ax in axes)
    for ax in axes:
        assert ax.yaxis.get_offset_text().get_text() == ""
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    assert any("matched fraction" in t.get_text() for t in legend.get_texts())
    bottom = fig.axes[2]
    assert bottom.get_xlabel() == "frame"
    ticks = bottom.get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    count_ticks = fig.axes[0].get_yticks()
    assert np.allclose(count_ticks, np.round(count_ticks))


def test_plot_series_of_a_rotation_series_has_omega_on_x(series):
    _, table = series
    table = table.assign(omega=-115.0 + table["frame"] + 0.5)
    fig = plot_series(table, output=None, figsize=(5, 4), dpi=80)
    _check_layout(fig)
    assert fig.axes[-1].get_xlabel() == "ω (deg)"
    lines = fig.axes[0].get_lines()[0]
    assert np.allclose(lines.get_xdata(), -114.5 + np.arange(5))
    assert fig.get_suptitle() == "20 peaks in 5 frames"


def test_plot_series_breaks_its_lines_across_an_unrecorded_wedge(series):
    """Two omega wedges (-115..-113 and 65..66): the curve is not joined across the gap."""
    _, table = series
    omega = np.where(table["frame"] < 3, -114.5 + table["frame"], 65.5 + table["frame"] - 3)
    fig = plot_series(table.assign(omega=omega), output=None, figsize=(5, 4), dpi=80)
    x = fig.axes[0].get_lines()[0].get_xdata()
    assert np.isnan(x).sum() == 1 and np.allclose(x[~np.isnan(x)], [-114.5, -113.5, -112.5, 65.5, 66.5])
    assert fig.get_suptitle() == "20 peaks in 5 frames"


@pytest.mark.parametrize("to, labels", [("qxy-qz", ("q_xy (1/Å)", "q_z (1/Å)")), ("q", ("q (1/Å)", "η (deg)")),
                                        ("polar", ("2θ (deg)", "η (deg)"))])
def test_plot_remap(to, labels, rng):
    axis0 = np.linspace(0.0, 3.0, 60) if to == "qxy-qz" else np.linspace(-180, 180, 60)
    axis1 = np.linspace(-1.5, 3.0, 80) if to == "qxy-qz" else np.linspace(0.2, 4.0, 80)
    image = rng.gamma(2.0, 50.0, (60, 80)) * np.exp(rng.normal(0, 1.5, (60, 80)))  # spans several decades
    image[:5, :10] = np.nan  # the missing wedge
    fig = plot_remap(image, axis0, axis1, to=to, output=None, figsize=(5, 4), dpi=80)
    _check_layout(fig)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == labels
    assert _colourbar_label(fig) == "intensity (counts/px)"
    assert ax.get_title()
    assert (ax.get_aspect() == 1.0) == (to == "qxy-qz")
    assert ax.images[0].norm.__class__.__name__ == "LogNorm"
    assert ax.images[0].get_cmap().name.startswith(style.IMAGE_CMAP)


def test_remap_command_writes_the_picture(tmp_path):
    """braggflow remap -o X.png: the picture of a simulated frame with a known geometry."""
    from typer.testing import CliRunner

    from braggflow.cli import app

    frame = np.random.default_rng(1).poisson(5.0, (128, 128)).astype(np.float32)
    np.save(tmp_path / "f.npy", frame[None])
    result = CliRunner().invoke(app, ["remap", str(tmp_path / "f.npy"), "-o", str(tmp_path / "m.png"), "--to",
                                      "qxy-qz", "--npt", "64", "--distance", "100", "--beam-row", "120",
                                      "--beam-col", "64", "--pixel-size", "0.1", "--wavelength", "1.0",
                                      "--incidence-angle", "0.2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.png").stat().st_size > 5000


def test_miller_labels():
    from braggflow.viz.phases import miller_label

    assert miller_label("0 1 0") == "(010)"
    assert miller_label("1 2 1;2 1 1") == "(121)"
    assert miller_label("1 -1 10") == "(1 -1 10)"
    assert miller_label((2, 0, 0)) == "(200)"


@pytest.mark.realdata
def test_identification_plot(shared_data):
    """The MAPbBr3 frame's identification: (hkl) labels, a legend of the line colours, a y unit, nothing cut."""
    from pathlib import Path

    import fabio

    from braggflow.geometry import Geometry
    from braggflow.phases import load_phase
    from braggflow.phases.workflow import identify_frame
    from braggflow.viz.phases import plot_identification

    phases_dir = Path(__file__).parent / "data" / "phases"
    frame = fabio.open(str(shared_data / "gixd_mapbbr3" / "S123_MABr_A2_00865-00000.tif")).data.astype(float)
    geo = Geometry.from_config(dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0,
                                    pixel_size_mm=0.2, wavelength_A=0.6888, incidence_angle_deg=0.5))
    result = identify_frame(frame, geo, [load_phase(phases_dir / "MAPbBr3.yaml"),
                                         load_phase(phases_dir / "CsPbBr3.yaml")])
    fig = plot_identification(result)
    _check_layout(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(re.fullmatch(r"\(\d{3}\)", t) for t in texts) and not any(re.fullmatch(r"\d \d \d", t) for t in texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"predicted, matched", "predicted, expected, not found", "predicted, too weak to expect"} <= set(legend)
    assert "counts/px" in fig.axes[0].get_ylabel()
    assert fig.axes[-1].get_xlabel() == "q (1/Å)" or any(ax.get_xlabel() == "q (1/Å)" for ax in fig.axes)


def test_frame_statistics_table_is_unchanged_by_the_omega_axis(series):
    _, table = series
    from braggflow.viz import frame_statistics

    stats = frame_statistics(table.assign(omega=table["frame"] * 1.0))
    assert list(stats["n_peaks"]) == [4] * 5
    assert isinstance(stats, pd.DataFrame)


# ---------------------------------------------------------------- learned features (kind, extent in q and chi)
FEATURE_GEOMETRY = dict(distance_mm=150.0, beam_center_row=230.0, beam_center_col=128.0, pixel_size_mm=0.172,
                        wavelength_A=1.0, incidence_angle_deg=0.3)


@pytest.fixture
def learned():
    """A 240 x 256 frame with the beam near its bottom edge, and a ring, an arc and a spot of the learned finder (the
    columns of a peak table: kind, q, eta, q_width, chi_width, row, col)."""
    from braggflow.geometry import Geometry

    geometry = Geometry.from_config(FEATURE_GEOMETRY)
    q = np.array([1.0, 1.6, 2.2])
    eta = np.array([-90.0, -120.0, -70.0])
    tth = geometry.q_to_two_theta(q)
    row, col = geometry.angles_to_pixel(tth, eta)
    table = pd.DataFrame(dict(frame=0, kind=["ring", "arc", "spot"], q=q, eta=eta, q_width=[0.1, 0.08, 0.05],
                              chi_width=[360.0, 30.0, 6.0], row=row, col=col, intensity=1.0, flags=0))
    rows, cols = np.indices((240, 256))
    t, _ = geometry.pixel_to_angles(rows, cols)
    qpix = geometry.two_theta_to_q(t)
    frame = 5.0 + 200.0 * np.exp(-0.5 * ((qpix - 1.0) / 0.02) ** 2)
    return frame, table, geometry


def _collections_by_colour(ax) -> dict:
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_hex

    return {to_hex(c.get_colors()[0]): c for c in ax.collections if isinstance(c, LineCollection)}


def test_plot_frame_draws_learned_features_as_their_extents_on_the_detector(learned):
    frame, table, geometry = learned
    mask = np.zeros(frame.shape, bool)
    mask[:, 120:125] = True
    fig = plot_frame(frame, table, frame_index=0, geometry=geometry, mask=mask, output=None, figsize=(4.5, 4), dpi=80)
    _check_layout(fig)
    ax = fig.axes[0]
    _labels_have_units(ax, "px", "px")
    drawn = _collections_by_colour(ax)
    assert set(drawn) == set(style.FEATURE_COLOURS.values())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["masked", "ring (1)", "arc (1)", "spot (1)"]
    assert ax.get_title() == "3 learned features, frame 0"
    # the spot's outline, taken back through the geometry, is the edge of its (q, chi) extent
    (outline,) = drawn[style.FEATURE_COLOURS["spot"]].get_segments()
    tth, chi = geometry.pixel_to_angles(outline[:, 1], outline[:, 0])
    q = geometry.two_theta_to_q(tth)
    assert q.min() == pytest.approx(2.175, abs=1e-6) and q.max() == pytest.approx(2.225, abs=1e-6)
    assert chi.min() == pytest.approx(-73.0, abs=1e-6) and chi.max() == pytest.approx(-67.0, abs=1e-6)
    # the ring's band: its inner and outer edges are circles about the beam centre
    (ring,) = drawn[style.FEATURE_COLOURS["ring"]].get_segments()
    on = np.isfinite(ring).all(1)
    radius = np.hypot(ring[on, 0] - 128.0, ring[on, 1] - 230.0)
    inner = 150.0 * np.tan(geometry.q_to_two_theta(np.array([0.95]))[0] * np.pi / 180) / 0.172
    assert radius.min() == pytest.approx(inner, rel=1e-3)


def test_plot_frame_without_a_geometry_marks_learned_features_by_kind(learned):
    frame, table, _ = learned
    fig = plot_frame(frame, table, output=None, figsize=(4.5, 4), dpi=80)
    _check_layout(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ring (1)", "arc (1)", "spot (1)"]
    assert not _collections_by_colour(ax)


@pytest.mark.parametrize("to", ["q", "qxy-qz", "polar"])
def test_plot_remap_draws_learned_features_in_q_space(learned, to):
    from braggflow.geometry.remap import remap

    frame, table, geometry = learned
    image, axis0, axis1 = remap(frame, geometry, to=to, npt=(100, 100))
    fig = plot_remap(image, axis0, axis1, to=to, features=table, geometry=geometry, output=None, figsize=(5.5, 4),
                     dpi=80)
    _check_layout(fig)
    ax = fig.axes[0]
    names = {"q": ("q (1/Å)", "η (deg)"), "qxy-qz": ("q_xy (1/Å)", "q_z (1/Å)"), "polar": ("2θ (deg)", "η (deg)")}
    assert (ax.get_xlabel(), ax.get_ylabel()) == names[to]
    assert _colourbar_label(fig) == "intensity (counts/px)"
    assert (ax.get_aspect() == 1.0) == (to == "qxy-qz")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ring (1)", "arc (1)", "spot (1)"]
    (arc,) = _collections_by_colour(ax)[style.FEATURE_COLOURS["arc"]].get_segments()
    if to == "q":  # the arc's extent is the rectangle q 1.56-1.64, chi -135 to -105
        assert (arc[:, 0].min(), arc[:, 0].max()) == pytest.approx((1.56, 1.64))
        assert (arc[:, 1].min(), arc[:, 1].max()) == pytest.approx((-135.0, -105.0))
    elif to == "qxy-qz":  # |q| = sqrt(q_xy^2 + q_z^2) stays within the arc's q range
        size = np.hypot(arc[:, 0], arc[:, 1])
        assert size.min() == pytest.approx(1.56, abs=2e-3) and size.max() == pytest.approx(1.64, abs=2e-3)
    else:
        tth = geometry.q_to_two_theta(np.array([1.56, 1.64]))
        assert (arc[:, 0].min(), arc[:, 0].max()) == pytest.approx(tuple(tth))


def test_feature_pictures_refuse_missing_extents_and_geometry(learned):
    from braggflow.errors import BraggflowError

    frame, table, geometry = learned
    image = np.ones((10, 10))
    with pytest.raises(BraggflowError, match="needs the detector geometry"):
        plot_remap(image, np.linspace(0, 3, 10), np.linspace(-1, 1, 10), to="qxy-qz", features=table, output=None)
    with pytest.raises(BraggflowError, match="no extent"):
        plot_remap(image, np.linspace(-180, 180, 10), np.linspace(0, 3, 10), to="q",
                   features=table.drop(columns=["q_width"]), output=None)


def test_remap_command_draws_features_on_pictures_only(tmp_path, learned):
    from typer.testing import CliRunner

    from braggflow.cli import app

    frame, table, _ = learned
    np.save(tmp_path / "f.npy", frame[None].astype(np.float32))
    table.to_csv(tmp_path / "features.csv", index=False)
    geo = ["--distance", "150", "--beam-row", "230", "--beam-col", "128", "--pixel-size", "0.172", "--wavelength",
           "1.0", "--incidence-angle", "0.3", "--npt", "64", "--features", str(tmp_path / "features.csv")]
    result = CliRunner().invoke(app, ["remap", str(tmp_path / "f.npy"), "-o", str(tmp_path / "m.png"), *geo])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["remap", str(tmp_path / "f.npy"), "-o", str(tmp_path / "m.npz"), *geo])
    assert result.exit_code != 0 and "--features draws on a picture" in result.output
