"""The compiled centroids (braggflow.locate._kernels) against the array path and known answers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from braggflow.integrate._kernels import pairwise_plan
from braggflow.locate._kernels import centroid_windows
from braggflow.schema import Flag

# the module itself, for its switch between the compiled and the array path
centroid = importlib.import_module("braggflow.locate.centroid")


def _patches(size: int, n: int = 300, seed: int = 0):
    """Poisson patches of Gaussian spots (flux 50-5,000, sigma 0.7-2 px, off-centre by up to 1.5 px) on a
    background of 1-50, some with a neighbour, masked pixels, a masked column or a NaN pixel, some flat."""
    rng = np.random.default_rng(seed)
    rr, cc = np.indices((size, size))
    h = size // 2
    data = np.empty((n, size, size))
    for k in range(n):
        r0, c0 = h + rng.uniform(-1.5, 1.5, 2)
        sigma = rng.uniform(0.7, 2.0)
        flux = 0.0 if k % 17 == 0 else 10 ** rng.uniform(1.7, 3.7)
        model = rng.uniform(1, 50) + flux / (2 * np.pi * sigma**2) * np.exp(
            -((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * sigma**2))
        if k % 5 == 0:  # a neighbour in the corner
            model += 300.0 * np.exp(-((rr - 1) ** 2 + (cc - size + 2) ** 2) / 2.0)
        data[k] = rng.poisson(model) if flux else 10.0  # flat: no signal left, the centroid fails
    mask = np.zeros(data.shape, dtype=bool)
    mask[::4, 0, :] = True  # the patch's top row masked
    mask[1::7, :, h + 2] = True  # a gap column beside the peak
    mask[2::9] |= rng.random((len(mask[2::9]), size, size)) < 0.05
    data[3::11, h, h - 1] = np.nan
    return data, mask


def _array_path(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(centroid, "_COMPILED", False)
        return centroid.centroid_patches(*args, **kwargs)


@pytest.mark.parametrize("size", [7, 11, 15])
@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_compiled_centroids_equal_the_array_path(monkeypatch, size, gain):
    data, mask = _patches(size)
    compiled = centroid.centroid_patches(data, mask, gain=gain)
    arrays = _array_path(monkeypatch, data, mask, gain=gain)
    for name in ("row", "col", "row_err", "col_err", "rc_cov", "sigma_row", "sigma_col", "failed", "intensity",
                 "background"):
        np.testing.assert_array_equal(getattr(compiled, name), getattr(arrays, name), err_msg=name)
    assert compiled.failed.any() and not compiled.failed.all()  # the empty patches fail, the others do not


def test_compiled_centroids_of_float32_patches_with_a_given_background(monkeypatch):
    data, mask = _patches(11, seed=4)
    data = data.astype(np.float32)
    background = np.full(len(data), 20.0)
    compiled = centroid.centroid_patches(data, mask, background=background)
    arrays = _array_path(monkeypatch, data, mask, background=background)
    np.testing.assert_array_equal(compiled.row, arrays.row)
    np.testing.assert_array_equal(compiled.col_err, arrays.col_err)
    np.testing.assert_array_equal(compiled.sigma_row, arrays.sigma_row)


def test_region_is_the_central_component_grown_by_one_pixel():
    """Two separate blobs: the region holds the one at the centre, grown by one pixel, not the other."""
    data = np.full((1, 11, 11), 10.0)
    data[0, 4:7, 4:7] = 200.0  # the central peak, 3 x 3
    data[0, 0:2, 9:11] = 300.0  # a brighter one in the corner
    mask = np.zeros(data.shape, dtype=bool)
    mask[0, 3, 3] = True  # unusable: not in the grown region
    plan = pairwise_plan(121)
    region, total, row, col, *_ = centroid_windows(data, mask, np.array([10.0]), 1.0, 2.0, plan)
    expected = np.zeros((11, 11), dtype=bool)
    expected[3:8, 3:8] = True
    expected[3, 3] = False
    np.testing.assert_array_equal(region[0], expected)
    assert total[0] == 9 * 190.0
    assert row[0] == 5.0 and col[0] == 5.0


@pytest.mark.parametrize("side", [11, 67])  # rows of flag words, and the flood fill beyond 64 px
def test_region_follows_a_winding_component(side):
    """A spiral above the threshold from the centre outwards, its turns one pixel apart (8-connected only
    along the spiral), is taken whole, grown by one pixel."""
    h = side // 2
    data = np.full((1, side, side), 10.0)
    spiral = np.zeros((side, side), dtype=bool)
    r, c = h, h
    spiral[r, c] = True
    step = 1
    for k in range(2 * h):  # right, down, left, up, ... with arms of 2, 2, 4, 4, ... px, two px apart
        dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[k % 4]
        for _ in range(2 * step):
            if 0 < r + dr < side - 1 and 0 < c + dc < side - 1:
                r, c = r + dr, c + dc
                spiral[r, c] = True
        step += k % 2
    data[0][spiral] = 100.0
    assert spiral.sum() > side  # it winds: the turns hold more pixels than a straight line across
    mask = np.zeros(data.shape, dtype=bool)
    region, total, *_ = centroid_windows(data, mask, np.array([10.0]), 1.0, 2.0, pairwise_plan(side * side))
    from scipy import ndimage

    expected = ndimage.binary_dilation(spiral, structure=np.ones((3, 3), bool))
    np.testing.assert_array_equal(region[0], expected)
    assert total[0] == 90.0 * spiral.sum()


def test_symmetric_spot_known_centre_and_width():
    """A noiseless Gaussian sampled at pixel centres about (5, 5): the centroid is
    the centre and the second moment that of the kept pixels."""
    rr, cc = np.indices((11, 11))
    sigma = 1.2
    spot = 1000.0 * np.exp(-((rr - 5.0) ** 2 + (cc - 5.0) ** 2) / (2 * sigma**2))
    data = (5.0 + spot)[None]
    result = centroid.centroid_patches(data, gain=1.0, background=[5.0])
    assert result.row[0] == pytest.approx(5.0, abs=1e-12)
    assert result.col[0] == pytest.approx(5.0, abs=1e-12)
    region = spot > 2.0 * np.sqrt(5.0)
    from scipy import ndimage

    region = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool))
    w = np.where(region, spot, 0.0)
    m2 = (w * (rr - 5.0) ** 2).sum() / w.sum()
    assert result.sigma_row[0] == pytest.approx(np.sqrt(m2 - 1.0 / 12.0), rel=1e-12)


def test_compiled_symmetric_completion_equals_the_array_loop():
    """Weights, centres and the pixel each weight is read from, for patches with masked pixels."""
    from braggflow.locate._kernels import mirror_sources

    data, mask = _patches(11, seed=7)
    data = np.where(mask, 0.0, np.nan_to_num(data))
    keep = mask.reshape(len(mask), -1).any(axis=1)
    w0 = np.maximum(data - 20.0, 0.0).reshape(len(data), -1)[keep]
    flat_mask = mask.reshape(len(mask), -1)[keep]
    rr, cc = (g.reshape(-1).astype(float) for g in np.indices((11, 11)))
    expected = centroid._mirror_sources(w0, flat_mask, rr, cc, 11)
    got = mirror_sources(w0, flat_mask, 11, pairwise_plan(121))
    for e, g, name in zip(expected, got, ("w", "total", "row", "col", "source")):
        np.testing.assert_array_equal(g, e, err_msg=name)
    assert (got[4] != np.arange(121)).any(axis=1).mean() > 0.5  # most masked pixels took a mirror's weight


patches_module = importlib.import_module("braggflow.locate.patches")


def _labelled_frame(dtype, seed=0):
    """A Poisson frame with spots (some touching, at the edges and corners, under masked pixels, over a NaN,
    saturated), their labels and the centres; one spot ringed by masked pixels (no usable border pixel),
    one with only two usable border pixels."""
    rng = np.random.default_rng(seed)
    shape = (70, 90)
    rr, cc = np.indices(shape)
    centres = [(20, 30), (22, 34), (1, 45), (35, 0), (69, 89), (50, 60), (10, 75), (60, 20), (40, 40)]
    expected = np.full(shape, 12.0)
    for r, c in centres:
        expected += 900.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.2**2))
    frame = rng.poisson(expected).astype(dtype)
    labels = np.zeros(shape, dtype=np.int32)
    for k, (r, c) in enumerate(centres):
        near = (rr - r) ** 2 + (cc - c) ** 2 <= 2.3**2
        labels[near & (labels == 0)] = k + 1
    mask = np.zeros(shape, dtype=bool)
    mask[48:53, 58] = True  # through spot 6
    mask[:, 70] = True  # a gap column
    ring = (np.abs(rr - 10) == 5) & (np.abs(cc - 75) <= 5) | (np.abs(cc - 75) == 5) & (np.abs(rr - 10) <= 5)
    mask |= ring  # spot 7: no usable border pixel of its 11 x 11 patch
    border = (np.maximum(np.abs(rr - 60), np.abs(cc - 20)) == 5)
    mask |= border & ~((rr == 55) & (cc <= 16))  # spot 8: two usable border pixels (55, 15), (55, 16)
    if frame.dtype.kind == "f":
        frame[21, 28] = np.nan
    return frame, mask, labels, np.array(centres, dtype=float)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("saturation", [None, 700, np.float64(700.3)])
def test_compiled_patches_equal_the_array_path(monkeypatch, dtype, with_mask, saturation):
    frame, mask, labels, centres = _labelled_frame(dtype)
    relabels = [None, np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])]  # the first two peaks' labels swapped
    for relabel in relabels:
        kwargs = dict(size=11, mask=mask if with_mask else None, labels=labels, relabel=relabel, saturation=saturation)
        compiled = patches_module.patches_at(frame, centres[:, 0], centres[:, 1], **kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(patches_module, "_COMPILED", False)
            arrays = patches_module.patches_at(frame, centres[:, 0], centres[:, 1], **kwargs)
        for name in ("data", "mask", "origin", "flags", "background", "own", "counts"):
            got, want = getattr(compiled, name), getattr(arrays, name)
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)
    flags = compiled.flags
    for bit in (Flag.EDGE, Flag.OVERLAPPING):
        assert (flags & np.uint32(bit)).any() and not (flags & np.uint32(bit)).all()
    if with_mask:
        assert flags[6] & np.uint32(Flag.BAD_BACKGROUND)  # the masked ring: no border pixel left
    if saturation is not None:
        assert (flags & np.uint32(Flag.SATURATED)).any()
