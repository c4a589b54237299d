"""Integration windows hold the whole region: arcs whose centroid lies off the arc, regions larger than a window."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from braggflow.integrate import MAX_REGION_HALF, integrate
from braggflow.schema import new_peak_table

BACKGROUND = 10.0


def _arc_frame():
    """A flat frame with a quarter ring (radius 200 px, 5 px wide; label 1) and a compact spot (label 2).

    Returns the frame, the labels and the peak table: the arc at its count-weighted centroid, the
    spot at its brightest pixel.
    """
    shape = (480, 480)
    rr, cc = np.indices(shape)
    dist = np.hypot(rr - 460.0, cc - 20.0)
    arc = (np.abs(dist - 200.0) <= 2.5) & (rr <= 460) & (cc >= 20)
    frame = np.full(shape, BACKGROUND, dtype=np.float32)
    frame[arc] += (40.0 + 20.0 * np.cos(cc[arc] / 30.0)).astype(np.float32)
    spot = (slice(99, 102), slice(399, 402))
    frame[spot] += np.float32(500.0)
    frame[100, 400] += np.float32(300.0)
    labels = np.zeros(shape, dtype=np.int32)
    labels[arc] = 1
    labels[spot] = 2
    net = np.where(arc, frame - BACKGROUND, 0.0)
    centroid = ((net * rr).sum() / net.sum(), (net * cc).sum() / net.sum())
    table = new_peak_table(2, row=[centroid[0], 100.0], col=[centroid[1], 400.0])
    return frame, labels, table, arc


def _grown(region: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The region grown by one pixel (8-neighbours), not into other regions: integrate's signal pixels."""
    return ndimage.binary_dilation(region, structure=np.ones((3, 3), bool)) & ((labels == 0) | region)


def test_arc_whose_centroid_lies_off_the_arc_is_integrated_whole():
    frame, labels, table, arc = _arc_frame()
    row, col = np.rint(table.loc[0, ["row", "col"]].to_numpy(float)).astype(int)
    # the centroid lies inside the ring, off the arc: the first window around it (17 x 17 px) holds none of it
    assert labels[row, col] == 0 and np.hypot(*(np.argwhere(arc) - [row, col]).T).min() > 10
    assert arc.sum() > 1000 and max(np.ptp(np.argwhere(arc), axis=0)) > 2 * MAX_REGION_HALF
    out = integrate(frame, table, labels=labels)
    signal = _grown(arc, labels)
    assert out.loc[0, "npix"] == signal.sum()
    assert out.loc[0, "background"] == BACKGROUND
    net = frame.astype(np.float64) - BACKGROUND
    assert out.loc[0, "intensity"] == pytest.approx(net[arc].sum(), rel=1e-12)
    assert out.loc[0, "intensity"] == pytest.approx(net[signal].sum(), rel=1e-12)  # the rim adds nothing
    assert out.loc[0, "peak_value"] == frame[arc].max()
    assert np.isfinite(out.loc[0, "intensity_err"]) and out.loc[0, "intensity_err"] > 0
    # the compact spot keeps its own window: its 3 x 3 pixels grown by one
    assert out.loc[1, "npix"] == 25
    assert out.loc[1, "intensity"] == pytest.approx(net[labels == 2].sum(), rel=1e-12)


def test_boxes_from_the_finder_regions_give_the_same_result():
    frame, labels, table, arc = _arc_frame()
    boxes = [ndimage.find_objects(labels)[k] for k in range(2)]
    regions = SimpleNamespace(top=np.array([b[0].start for b in boxes]), left=np.array([b[1].start for b in boxes]),
                              height=np.array([b[0].stop - b[0].start for b in boxes]),
                              width=np.array([b[1].stop - b[1].start for b in boxes]))
    plain = integrate(frame, table, labels=labels)
    boxed = integrate(frame, table, labels=labels, regions=regions)
    for name in ("npix", "intensity", "intensity_err", "background", "peak_value", "snr", "flags"):
        np.testing.assert_array_equal(boxed[name].to_numpy(), plain[name].to_numpy(), err_msg=name)


def test_arc_cut_by_the_frame_edge_and_the_mask():
    frame, labels, table, arc = _arc_frame()
    mask = np.zeros(frame.shape, bool)
    mask[300:310, :] = True  # a gap across the arc
    frame, labels, mask, arc = frame[:, 30:], labels[:, 30:], mask[:, 30:], arc[:, 30:]  # the arc's end leaves
    table = table.assign(col=table["col"] - 30)
    out = integrate(frame, table, labels=labels, mask=mask)
    signal = _grown(arc, labels) & ~mask
    assert out.loc[0, "npix"] == signal.sum()
    assert out.loc[0, "intensity"] == pytest.approx((frame[arc & ~mask].astype(np.float64) - BACKGROUND).sum(),
                                                    rel=1e-12)


@pytest.mark.realdata
def test_mapbbr3_default_run_has_no_row_without_pixels(shared_data):
    from braggflow.pipeline import run
    from braggflow.pipeline.config import Config

    table = run(shared_data / "gixd_mapbbr3" / "S123_MABr_A2_00865-00000.tif", config=Config())
    assert len(table) > 20
    assert (table["npix"] >= 1).all()
    assert np.isfinite(table["intensity"]).all() and np.isfinite(table["peak_value"]).all()
    assert (table["method"] == "region").any()  # the arcs located by their region's centroid are among them


def test_integrate_returns_a_new_table_of_schema_dtypes_and_leaves_its_input():
    """The written columns keep their schema dtypes, the other columns their values, and the input table is not
    changed (the output is a copy)."""
    from braggflow.schema import COLUMNS

    frame, labels, table, _ = _arc_frame()
    table["score"] = [0.25, 0.75]
    before = table.copy(deep=True)
    out = integrate(frame, table, labels=labels)
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(table, before, check_exact=True)
    for name in ("intensity", "intensity_err", "background", "snr", "peak_value", "npix", "flags"):
        assert str(out[name].dtype) == COLUMNS[name].dtype
    assert out["score"].tolist() == [0.25, 0.75] and out["row"].tolist() == table["row"].tolist()
    assert out.loc[1, "npix"] == 25 and out.loc[1, "peak_value"] == frame[100, 400]  # the 3 x 3 spot grown by one
    assert (out["intensity"] > 0).all() and (out["background"] == BACKGROUND).all()
