"""The per-frame pipeline's column path: the finder's columns handed through locate (locate_columns) and integrate
(integrate_columns) give the tables that the table-in, table-out stages give, and analyse_frame's table is the one
those stages compose."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from braggflow.find import find_peaks
from braggflow.find.peaks import FoundPeaks
from braggflow.find.regions import region_centroids
from braggflow.integrate import integrate, integrate_columns
from braggflow.locate import locate
from braggflow.locate._locate import locate_columns
from braggflow.pipeline import analyse_frame, prepare
from braggflow.pipeline.config import Config
from braggflow.schema import COLUMNS, conform, conformed_columns, new_peak_columns, table_from_columns
from braggflow.simulate.frames import simulate_series


@pytest.fixture(scope="module")
def scene():
    """One simulated 256 x 256 frame (25 peaks, some in pairs, a detector gap, hot and dead pixels) and its peaks."""
    series = simulate_series(n_frames=1, seed=3, shape=(256, 256), n_peaks=25, pairs=0.3)
    frame = series.frames[0].astype(np.float64)
    mask = series.mask
    found = find_peaks(frame, mask=mask)
    saturated = frame >= np.sort(frame.ravel())[-3]  # the three highest pixels, as if saturated
    return frame, mask, saturated, found


def _equal_columns(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype, name
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        else:
            assert pd.Series(x).equals(pd.Series(y)), name


def test_found_peaks_from_columns_build_the_table_of_those_columns_when_read(scene):
    """The finder's FoundPeaks holds columns: its length and columns need no table, and the table read from it is
    the table of the columns; a FoundPeaks made with a table gives that table's columns."""
    frame, mask, _, found = scene
    n = len(found)
    assert n >= 20 and "table" not in vars(found)
    columns = found.columns()
    assert list(columns) == list(COLUMNS) and len(columns["row"]) == n
    table = found.table
    assert "table" in vars(found) and found.table is table and len(found) == n
    pd.testing.assert_frame_equal(table, table_from_columns(columns, n))
    _equal_columns(found.columns(), conformed_columns(table))
    plain = FoundPeaks(table, found.labels, found.regions)
    assert len(plain) == n
    _equal_columns(plain.columns(), conformed_columns(table))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        found.nothing  # noqa: B018


def test_new_peak_columns_are_the_columns_of_new_peak_table():
    n = 4
    values = dict(row=np.arange(n, dtype=float), npix=np.arange(n, dtype=np.int32), method=["com", "nn", "com", "nn"],
                  flags=[0, 1, 2, 3])
    _equal_columns(new_peak_columns(n, **values), conformed_columns(table_from_columns(new_peak_columns(n, **values),
                                                                                      n)))
    from braggflow.schema import new_peak_table

    _equal_columns(new_peak_columns(n, **values), conformed_columns(new_peak_table(n, **values)))
    with pytest.raises(KeyError, match="not a peak-table column"):
        new_peak_columns(1, rows=[1.0])
    with pytest.raises(ValueError, match="has 2 values, expected 3"):
        new_peak_columns(3, row=[1.0, 2.0])


@pytest.mark.parametrize("options", [{"method": "com"}, {"method": "gauss", "deblend": True},
                                     {"method": "com", "saturated_peaks": "method", "extended_peaks": "patch"}])
def test_locate_columns_give_the_table_locate_gives(scene, options):
    frame, mask, saturated, found = scene
    common = dict(mask=mask, labels=found.labels, regions=found.regions, saturated=saturated, **options)
    expected = locate(frame, found.table, **common)
    columns, n = locate_columns(frame, found.columns(), len(found), **common)
    assert n == len(expected)
    pd.testing.assert_frame_equal(table_from_columns(columns, n), expected, check_exact=True)
    for name, col in COLUMNS.items():  # cast as a table holds them: the next stage reads those values
        assert str(columns[name].dtype) == col.dtype


def test_locate_columns_of_no_peak_and_unknown_options(scene):
    frame, _, _, found = scene
    empty = new_peak_columns(0)
    columns, n = locate_columns(frame, empty, 0)
    assert n == 0
    pd.testing.assert_frame_equal(table_from_columns(columns, 0), locate(frame, table_from_columns(empty, 0)))
    from braggflow.errors import BraggflowError

    with pytest.raises(BraggflowError, match="method must be one of"):
        locate_columns(frame, found.columns(), len(found), method="median")
    with pytest.raises(BraggflowError, match="extended_peaks must be one of"):
        locate_columns(frame, found.columns(), len(found), extended_peaks="whole")
    # the deprecated name is warned at the caller's line, before the other options are checked
    with pytest.warns(DeprecationWarning, match="braggnn") as record:
        with pytest.raises(BraggflowError, match="saturated_peaks must be one of"):
            locate_columns(frame, found.columns(), len(found), method="braggnn", saturated_peaks="clip")
    assert record[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="braggnn") as record:
        with pytest.raises(BraggflowError, match="saturated_peaks must be one of"):
            locate(frame, found.table, method="braggnn", saturated_peaks="clip")
    assert record[0].filename == __file__


@pytest.mark.parametrize("options", [{}, {"method": "profile"}, {"radius": 3.0}])
def test_integrate_columns_give_the_table_integrate_gives(scene, options):
    frame, mask, saturated, found = scene
    located = locate(frame, found.table, mask=mask, labels=found.labels, regions=found.regions, method="gauss",
                     deblend=True)
    common = dict(mask=mask, labels=found.labels, regions=found.regions, saturated=saturated, **options)
    expected = integrate(frame, located, **common)
    columns = integrate_columns(frame, conformed_columns(located), len(located), **common)
    pd.testing.assert_frame_equal(table_from_columns(columns, len(located)), expected, check_exact=True)
    # the columns it does not fill are the arrays given
    given = conformed_columns(located)
    assert integrate_columns(frame, given, len(located), **common)["row"] is given["row"]


def test_integrate_columns_cast_what_they_are_given_and_refuse_an_unknown_method(scene):
    frame, mask, _, found = scene
    columns = found.columns()
    as_float = dict(columns, npix=columns["npix"].astype(float))  # a table would hold int64 there
    out = integrate_columns(frame, as_float, len(found), mask=mask, labels=found.labels)
    ref = integrate_columns(frame, columns, len(found), mask=mask, labels=found.labels)
    _equal_columns(out, ref)
    from braggflow.errors import BraggflowError

    with pytest.raises(BraggflowError, match="'sum' or 'profile'"):
        integrate_columns(frame, columns, len(found), labels=found.labels, method="fit")
    assert integrate_columns(frame, new_peak_columns(0), 0)["row"].size == 0


@pytest.mark.parametrize("sections", [{}, {"locate": {"method": "gauss", "deblend": True},
                                           "integrate": {"method": "profile"}}])
def test_analyse_frame_table_is_the_one_the_table_stages_compose(scene, sections):
    """find_peaks -> locate -> integrate -> frame and omega set -> conform, each stage given and giving a table."""
    frame, _, _, _ = scene
    raw = np.asarray(frame, dtype=np.uint32)
    config = Config(**sections)
    context = prepare(config, shape=raw.shape, dtype=raw.dtype)
    result = analyse_frame(raw, config=config, context=context, frame_index=7, omega=12.5)
    from braggflow.correct import correct_frame_saturation

    c, lc, ic = config.correct, config.locate, config.integrate
    corrected, mask, saturated = correct_frame_saturation(raw, saturation=context.saturation, mask=context.mask,
                                                          config=c)
    found = find_peaks(corrected, mask=mask, config=config.find, gain=c.gain)
    table = locate(corrected, found.table, method=lc.method, mask=mask, labels=found.labels, regions=found.regions,
                   saturated=saturated, patch_size=lc.patch_size, gain=c.gain, deblend=lc.deblend)
    table = integrate(corrected, table, mask=mask, labels=found.labels, regions=found.regions, gain=c.gain,
                      saturated=saturated, method=ic.method)
    table["frame"] = np.int64(7)
    table["omega"] = 12.5
    pd.testing.assert_frame_equal(result.table, conform(table), check_exact=True)
    assert result.row["n_peaks"] == len(table) > 0


def test_grown_regions_are_scipy_binary_dilations():
    """Regions grown by shifts are the binary dilation by a 3 x 3 square, at the image edges too, image by image
    in a stack; integer codes grow bit by bit."""
    from braggflow.windows import grow8

    rng = np.random.default_rng(5)
    square = np.ones((3, 3), dtype=bool)
    for _ in range(300):
        h, w = rng.integers(1, 14, size=2)
        image = rng.random((h, w)) < rng.uniform(0.02, 0.5)
        assert np.array_equal(grow8(image), ndimage.binary_dilation(image, structure=square))
    stack = rng.random((4, 9, 7)) < 0.1
    assert np.array_equal(grow8(stack), np.stack([ndimage.binary_dilation(p, structure=square) for p in stack]))
    codes = stack.view(np.uint8) | ((rng.random((4, 9, 7)) < 0.1).view(np.uint8) << 1)
    grown = grow8(codes)
    for bit in (1, 2):
        expected = np.stack([ndimage.binary_dilation((p & bit) > 0, structure=square) for p in codes])
        assert np.array_equal((grown & bit) > 0, expected)


def test_region_centroid_of_a_symmetric_spot_is_its_centre():
    """A 3 x 3 plateau over a flat background, grown by one pixel: the centroid is the plateau's centre."""
    from braggflow.find.background import Background
    from braggflow.find.regions import Regions

    frame = np.full((20, 20), 10.0)
    frame[8:11, 5:8] = 110.0
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[8:11, 5:8] = 1
    tiles = Background(level=np.full((1, 1), 10.0), noise=np.full((1, 1), 3.0), tile=64, shape=(20, 20))
    regions = Regions(np.array([8]), np.array([5]), np.array([3]), np.array([3]), np.array([900.0]), np.array([3.0]),
                      background=tiles)
    out = region_centroids(frame, labels, regions, np.array([0]))
    assert out["row"][0] == pytest.approx(9.0) and out["col"][0] == pytest.approx(6.0)
    # second moment of a uniform 3 x 3 square: (1 + 0 + 1) / 3 px^2 along each axis
    assert out["sigma_row"][0] == pytest.approx(np.sqrt(2 / 3)) and out["rc_cov"][0] == pytest.approx(0.0)
