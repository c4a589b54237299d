"""Corrections: masks from flags, NaN and detector gaps; zeros and negatives are data."""

import numpy as np
import pytest

from braggflow.correct import (
    bin2x2,
    build_static_mask,
    correct_frame,
    correct_frame_saturation,
    detector_gap_mask,
    saturation_level,
)
from braggflow.errors import BraggflowError, InputFileError
from braggflow.pipeline.config import CorrectConfig


def test_flag_values_nan_and_real_zeros():
    frame = np.array([[0, -1, 5], [-2, 3, -3]], dtype=np.int32)
    out, mask = correct_frame(frame, config=CorrectConfig(detector=None))
    assert mask.tolist() == [[False, True, False], [True, False, False]]
    assert out[1, 2] == -3  # a negative value that is not a flag stays
    f = np.array([[np.nan, 1.0], [np.inf, -0.5]], dtype=np.float32)
    out, mask = correct_frame(f)
    assert mask.tolist() == [[True, False], [True, False]] and out[1, 1] == -0.5


def test_unsigned_frames_do_not_mask_saturated_as_flags():
    frame = np.array([[65535, 1]], dtype=np.uint16)
    _, mask = correct_frame(frame)
    assert not mask.any()
    assert saturation_level(np.dtype(np.uint16), None) == 65535
    assert saturation_level(np.dtype(np.float32), 14000) == 14000


def test_dark_flat_minval_binning():
    frame = np.full((4, 4), 10.0)
    dark = np.full((4, 4), 2.0)
    flat = np.ones((4, 4))
    flat[0, 0] = 2.0  # twice as sensitive
    out, mask = correct_frame(frame, dark=dark, flat=flat, config=CorrectConfig(minval=1.0))
    norm = flat.mean()
    assert out[1, 1] == pytest.approx(8.0 * norm)
    assert out[0, 0] == pytest.approx(8.0 / 2.0 * norm)
    binned, bmask = bin2x2(out, mask)
    assert binned.shape == (2, 2) and binned[1, 1] == pytest.approx(4 * 8.0 * norm)
    out2, _ = correct_frame(np.array([[0.5, 3.0]]), config=CorrectConfig(minval=1.0))
    assert out2.tolist() == [[0.0, 3.0]]


def test_pilatus_gaps_from_pyfai_by_shape():
    gaps = detector_gap_mask((1043, 981), "auto")
    assert gaps is not None and gaps.sum() == 73533
    assert detector_gap_mask((100, 100), "auto") is None
    m = build_static_mask((1043, 981), mask=np.eye(1043, 981, dtype=bool))
    assert m.sum() > gaps.sum()


def test_bad_input():
    with pytest.raises(BraggflowError, match="every pixel is NaN"):
        correct_frame(np.full((3, 3), np.nan))
    with pytest.raises(InputFileError, match="mask has shape"):
        correct_frame(np.zeros((3, 3)), mask=np.zeros((2, 2), bool))
    with pytest.raises(InputFileError, match="mask has shape"):
        build_static_mask((3, 3), mask=np.zeros((3, 4)))


def test_real_pilatus_gaps_are_zero(shared_data):
    from braggflow.io.frames import open_frames

    s = open_frames(str(shared_data / "giwaxs_gixsgui"))
    mask = build_static_mask(s.shape)
    frame = s[0]
    assert (frame[mask] == 0).all()  # the detector's gaps hold exactly 0
    _, m = correct_frame(frame, mask=mask)
    assert m.sum() == mask.sum() + (frame == -2).sum()


def test_real_pilatus_module_edge_pixels_are_masked_by_the_gap_margin(shared_data):
    """The pixels beside a Pilatus module gap read ~1.2 x their neighbours; the default run masks them,
    and no peak is left sitting on a gap edge."""
    from scipy import ndimage

    from braggflow.io.frames import open_frames
    from braggflow.pipeline import run
    from braggflow.pipeline.config import Config

    s = open_frames(str(shared_data / "giwaxs_gixsgui"))
    gaps = build_static_mask(s.shape)
    grown = build_static_mask(s.shape, gap_margin=1)
    edge = grown & ~gaps
    assert edge.sum() > 0 and (grown == ndimage.binary_dilation(gaps, structure=np.ones((3, 3), bool))).all()
    mean = np.mean([np.asarray(s[i], float) for i in range(len(s))], axis=0)
    beside = ndimage.binary_dilation(grown, structure=np.ones((3, 3), bool)) & ~grown  # one pixel further in
    lit = mean > 50
    assert np.median(mean[edge & lit]) > 1.1 * np.median(mean[beside & lit])
    on_edge = {}
    for margin in (0, 1):
        table = run(s, config=Config(correct={"gap_margin": margin}))
        rows = np.rint(table["row"].to_numpy(na_value=0.0)).astype(int).clip(0, s.shape[0] - 1)
        cols = np.rint(table["col"].to_numpy(na_value=0.0)).astype(int).clip(0, s.shape[1] - 1)
        on_edge[margin] = int(ndimage.binary_dilation(gaps, iterations=2)[rows, cols].sum())
    assert on_edge[0] >= 20 and on_edge[1] <= on_edge[0] // 5


@pytest.mark.parametrize("dtype", [np.complex64, "U4", object])
def test_frames_that_are_not_real_numbers_are_refused(dtype):
    """Complex frames would silently lose their imaginary part; strings and objects are no counts."""
    frame = np.ones((8, 8)).astype(dtype)
    with pytest.raises(BraggflowError, match="is not a real number type"):
        correct_frame(frame, name="frame 3")


def test_correct_frame_zeroes_masked_pixels_and_refuses_a_frame_with_none_left():
    frame = np.arange(1, 17, dtype=np.int32).reshape(4, 4)
    frame[0, 1] = -2  # a flag value: masked in this frame only
    static = np.zeros((4, 4), bool)
    static[3, 3] = True
    out, bad = correct_frame(frame, mask=static)
    assert bad.sum() == 2 and bad[0, 1] and bad[3, 3] and out[0, 1] == 0 and out[3, 3] == 0
    assert out[~bad].tolist() == frame[~bad].astype(np.float32).tolist() and not static[0, 1]
    out, bad = correct_frame(frame.astype(np.uint16), mask=None)  # nothing to mask: the frame as it is
    assert not bad.any() and out.tolist() == frame.astype(np.uint16).astype(np.float32).tolist()
    with pytest.raises(BraggflowError, match="every pixel is masked"):
        correct_frame(frame, mask=np.ones((4, 4), bool))


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint32, np.int64, np.float32])
@pytest.mark.parametrize("binning", [1, 2])
def test_correct_frame_saturation_is_correct_frame_and_saturated_pixels(dtype, binning):
    """One read of the frame (integer frames) gives what the two functions give; other frames go through them."""
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 1000, (6, 8)).astype(dtype)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 3000.0
    frame[2, 5] = top  # saturated
    if np.dtype(dtype).kind == "i":
        frame[1, 1], frame[4, 6] = -1, -2  # Pilatus flags
    static = np.zeros(frame.shape, bool)
    static[5, 0] = True
    level = saturation_level(frame.dtype, None if np.dtype(dtype).kind in "iu" else 3000.0)
    config = CorrectConfig(detector=None, binning=binning)
    out, bad, saturated = correct_frame_saturation(frame, saturation=level, mask=static, config=config)
    expected_bad = static | (frame == -1) | (frame == -2)
    expected_out = np.where(expected_bad, 0, frame).astype(np.float32)
    expected_saturated = frame >= level
    if binning == 2:
        expected_out, expected_bad = bin2x2(expected_out, expected_bad)
        expected_saturated = expected_saturated.reshape(3, 2, 4, 2).any(axis=(1, 3))
    assert out.dtype == np.float32 and np.array_equal(out, expected_out) and np.array_equal(bad, expected_bad)
    assert np.array_equal(saturated, expected_saturated) and saturated.sum() == 1
    assert not static[1, 1]  # the static mask is left as it was
    # NumPy's own type objects (with a compiled function's equal copies, ufunc.at on the values is ~20 x slower)
    assert out.dtype is np.dtype(np.float32) and bad.dtype is np.dtype(bool)
    # below the saturation level, or without one: none
    assert correct_frame_saturation(frame, saturation=2.0 * float(top), mask=static, config=config)[2] is None
    assert correct_frame_saturation(frame, saturation=np.inf, mask=static, config=config)[2] is None
    with pytest.raises(BraggflowError, match="frame 7: every pixel is masked"):
        correct_frame_saturation(frame, saturation=level, mask=np.ones(frame.shape, bool), name="frame 7")
