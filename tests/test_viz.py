"""Pictures: each output is a valid image of the expected size and shows what it should."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from braggflow.errors import BraggflowError
from braggflow.link import link
from braggflow.profiles.render import peak_profile
from braggflow.schema import Flag, new_peak_table
from braggflow.viz import _draw, animate_series, frame_statistics, plot_frame, plot_series, plot_tracks, summed_image
from braggflow.viz.animate import ffmpeg_available

SIZE = 96
N_FRAMES = 5


@pytest.fixture
def series(rng):
    """Five 96x96 frames with four peaks drifting by (0.5, -0.3) px/frame, and their table."""
    starts = np.array([[20.0, 20.0], [30.0, 70.0], [70.0, 25.0], [65.0, 65.0]])
    amplitude = np.array([2000.0, 800.0, 400.0, 5000.0])
    idx = np.arange(SIZE)
    frames, rows = [], []
    for t in range(N_FRAMES):
        frame = rng.poisson(2.0, (SIZE, SIZE)).astype(np.float32)
        for (r, c), a in zip(starts + t * np.array([0.5, -0.3]), amplitude):
            frame += a * peak_profile(idx, idx, row=r, col=c, sigma_row=1.2, sigma_col=1.2)
            rows.append((t, r, c, a))
        frames.append(frame)
    f, r, c, a = map(np.array, zip(*rows))
    flags = np.where(a == 400.0, int(Flag.EDGE), 0)
    table = new_peak_table(len(f), frame=f, row=r, col=c, intensity=a, score=a / 10, flags=flags)
    return np.stack(frames), table


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _has_colour(pixels, hex_colour, tol=30):
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels.astype(int) - target).max(axis=-1) <= tol).any())


def test_plot_frame_png_size_mask_and_markers(series, tmp_path):
    frames, table = series
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, 45:50] = True  # a module gap
    out = plot_frame(frames[2], table, frame_index=2, mask=mask, output=tmp_path / "f.png", figsize=(4, 3), dpi=80)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (320, 240)
    pixels = _pixels(out)
    assert _has_colour(pixels, _draw.MASK_COLOUR, tol=10)
    assert _has_colour(pixels, _draw.PEAK_COLOUR, tol=40)
    assert _has_colour(pixels, _draw.FLAGGED_COLOUR, tol=40)
    # without a mask and with no flagged peak the blue and amber are absent
    clean = table[table["flags"] == 0]
    out2 = plot_frame(frames[2], clean, frame_index=2, output=tmp_path / "g.png", figsize=(4, 3), dpi=80,
                      size_by="score")
    pixels2 = _pixels(out2)
    assert not _has_colour(pixels2, _draw.MASK_COLOUR, tol=10)
    assert not _has_colour(pixels2, _draw.FLAGGED_COLOUR, tol=10)


def test_marker_sizes_grow_with_value():
    sizes = _draw.marker_sizes(np.array([1.0, 100.0, 10000.0, np.nan]), limits=(1.0, 10000.0))
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes[3] == sizes[0]


def test_plot_frame_rejects_bad_input(series, tmp_path):
    frames, table = series
    with pytest.raises(BraggflowError, match="2D"):
        plot_frame(frames, table, output=tmp_path / "x.png")
    with pytest.raises(BraggflowError, match="mask"):
        plot_frame(frames[0], table, mask=np.zeros((3, 3), bool), output=tmp_path / "x.png")
    with pytest.raises(BraggflowError, match="size_by"):
        plot_frame(frames[0], table, size_by="d_spacing", output=tmp_path / "x.png")
    with pytest.raises(BraggflowError, match="does not exist"):
        plot_frame(frames[0], table, output=tmp_path / "missing" / "x.png")
    assert plot_frame(frames[0], None, output=None).get_size_inches().tolist() == [7.0, 6.0]


def test_animate_series_gif(series, tmp_path):
    frames, table = series
    out = animate_series(frames, table, output=tmp_path / "a.gif", fps=4, figsize=(3, 3), dpi=60)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.size == (180, 180)
        assert im.n_frames == N_FRAMES
        assert im.info["duration"] == 250
    sub = animate_series(frames, table, output=tmp_path / "b.gif", indices=[4, 0], figsize=(3, 3), dpi=60)
    with Image.open(sub) as im:
        assert im.n_frames == 2
    with pytest.raises(BraggflowError, match=".gif or .mp4"):
        animate_series(frames, table, output=tmp_path / "a.avi")
    with pytest.raises(BraggflowError, match="outside"):
        animate_series(frames, table, output=tmp_path / "c.gif", indices=[9])


def test_animate_series_mp4(series, tmp_path):
    frames, table = series
    if not ffmpeg_available():
        with pytest.raises(BraggflowError, match="ffmpeg"):
            animate_series(frames, table, output=tmp_path / "a.mp4")
        pytest.skip("ffmpeg is not on PATH: MP4 output not testable here")
    out = animate_series(frames, table, output=tmp_path / "a.mp4", figsize=(3, 3), dpi=64)
    header = out.read_bytes()[:12]
    assert header[4:8] == b"ftyp"


def test_plot_tracks_over_summed_image(series, tmp_path):
    frames, table = series
    total = summed_image(frames)
    np.testing.assert_allclose(total, frames.astype(np.float64).sum(axis=0))
    linked = link(table, search_range=2.0)
    assert linked["track_id"].nunique() == 4
    out = plot_tracks(total, linked, output=tmp_path / "t.png", figsize=(5, 4), dpi=50)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (250, 200)
    fig = plot_tracks(total, linked, output=None)
    assert fig.axes[0].get_title().startswith("4 tracks")
    with pytest.raises(BraggflowError, match="track_id"):
        plot_tracks(total, table.drop(columns="track_id"), output=tmp_path / "u.png")


def test_frame_statistics_and_series_plot(series, tmp_path, rng):
    frames, table = series
    found = table.copy()
    found["row"] += 0.3  # every peak off by 0.3 px ...
    found = found[~((found["frame"] == 3) & (found["intensity"] == 800.0))]  # ... and one missed on frame 3
    stats = frame_statistics(found, reference=table, n_frames=N_FRAMES + 1)
    assert stats["n_peaks"].tolist() == [4, 4, 4, 3, 4, 0]
    np.testing.assert_allclose(stats["mean_error"].iloc[:5], 0.3)
    assert stats["recall"].iloc[3] == pytest.approx(0.75)
    np.testing.assert_allclose(stats["mean_intensity"].iloc[0], table[table["frame"] == 0]["intensity"].mean())
    assert np.isnan(stats["mean_intensity"].iloc[5]) and np.isnan(stats["recall"].iloc[5])
    far = frame_statistics(found, reference=table, max_distance=0.2)
    assert (far["n_matched"] == 0).all()
    out = plot_series(found, reference=table, output=tmp_path / "s.png", figsize=(6, 5), dpi=50)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (300, 250)
    out = plot_series(found, output=tmp_path / "s2.png", dpi=40)
    with Image.open(out) as im:
        assert im.size == (280, 200)


def test_large_sparse_frame_keeps_single_pixel_peaks_visible(tmp_path):
    import matplotlib

    frame = np.zeros((2048, 2048), np.float32)
    frame[::7, ::5] = 1.0  # faint sparse pixels set the low end of the colour scale
    frame[1000, 1500] = 5000.0  # one bright pixel, 1/20 of a screen pixel at this size
    out = plot_frame(frame, None, output=tmp_path / "big.png", figsize=(3, 3), dpi=50)
    top = matplotlib.colormaps[_draw.CMAP](1.0)
    top_hex = "#" + "".join(f"{int(round(255 * v)):02x}" for v in top[:3])
    pixels = _pixels(out)
    assert _has_colour(pixels[:, :110], top_hex, tol=20)  # in the image, left of the colour bar


def test_plot_frame_region(series, tmp_path):
    frames, table = series
    fig = plot_frame(frames[0], table, frame_index=0, region=(10, 40, 5, 45), output=None)
    ax = fig.axes[0]
    assert ax.get_xlim() == (4.5, 44.5) and ax.get_ylim() == (39.5, 9.5)
    assert len(ax.collections[0].get_offsets()) == 1  # only the peak at (20, 20) is inside
    truth = table.assign(row=table["row"] + 0.2)
    fig = plot_frame(frames[0], table, frame_index=0, reference=truth, output=None)
    assert len(fig.axes[0].collections) == 2
    np.testing.assert_allclose(fig.axes[0].collections[1].get_offsets()[:, 1], truth[truth["frame"] == 0]["row"])
    with pytest.raises(BraggflowError, match="region"):
        plot_frame(frames[0], table, region=(50, 40, 0, 10), output=None)


def test_plot_frame_command_draws_the_learned_features_of_a_run(tmp_path):
    """braggflow run --finder learned, then plot frame: the features' extents outlined in their kinds' colours with
    the run's geometry; --no-features marks them with circles at their centres (fewer pixels of those colours)."""
    import tifffile
    from typer.testing import CliRunner

    from braggflow.cli import app
    from braggflow.cli.series import _stored_geometry
    from braggflow.geometry import Geometry
    from braggflow.io.results import read_peaks
    from braggflow.nn.detector import list_detectors
    from braggflow.simulate.gixd import detector_image, detector_setup, simulate_gixd_frame
    from braggflow.viz import style

    if not list_detectors():
        pytest.skip("no shipped detector in the MANIFEST")
    geometry = dict(distance_mm=250.0, beam_center_row=1000.5, beam_center_col=300.0, pixel_size_mm=0.2,
                    wavelength_A=1.0, incidence_angle_deg=0.3)
    setup = detector_setup(Geometry.from_config(geometry), (1024, 1024))
    image, mask = detector_image(simulate_gixd_frame(34, setup), (1024, 1024))  # a ring, arcs and spots
    tifffile.imwrite(tmp_path / "frame.tif", image.astype(np.float32))
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(tmp_path / "frame.tif"), "-o", str(tmp_path / "out.h5"), "--finder",
                              "learned", "--mask", str(tmp_path / "mask.tif"), "--distance", "250", "--beam-row",
                              "1000.5", "--beam-col", "300", "--pixel-size", "0.2", "--wavelength", "1.0",
                              "--incidence-angle", "0.3"])
    assert res.exit_code == 0, res.output
    stored = _stored_geometry(tmp_path / "out.h5")
    assert stored is not None and stored.incidence_angle_deg == pytest.approx(0.3)
    kinds = read_peaks(tmp_path / "out.h5")["kind"].astype(str).value_counts()
    fig = plot_frame(image, read_peaks(tmp_path / "out.h5"), frame_index=0, geometry=stored, output=None)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [x for x in legend if "(" in x] == [f"{k} ({kinds[k]})" for k in ("ring", "arc", "spot") if k in kinds]
    coloured = {}
    for flag in ("--features", "--no-features"):
        out = tmp_path / f"{flag}.png"
        res = runner.invoke(app, ["plot", "frame", str(tmp_path / "out.h5"), "-o", str(out), flag, "--dpi", "60"])
        assert res.exit_code == 0, res.output
        pixels = _pixels(out).astype(int)
        coloured[flag] = sum(int((np.abs(pixels - np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)])).max(axis=-1)
                                  <= 12).sum()) for c in style.FEATURE_COLOURS.values())
    assert coloured["--features"] > coloured["--no-features"] > 0
