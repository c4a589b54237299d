"""The compiled summation windows (braggflow.integrate._kernels) against NumPy and known answers."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from braggflow.integrate import integrate
from braggflow.integrate._kernels import COUNTED_SPAN, _median, pairwise_plan, pairwise_sum
from braggflow.schema import new_peak_table

# the module (its name ``integrate`` is also the function's)
integrate_module = importlib.import_module("braggflow.integrate")


@pytest.mark.parametrize("count", [0, 1, 7, 8, 121, 128, 129, 289, 729, 2209, 18225])
def test_pairwise_sum_equals_numpy_sum_bit_for_bit(count):
    rng = np.random.default_rng(count)
    plan = pairwise_plan(count)
    partial = np.empty(len(plan))
    for _ in range(50):
        values = rng.standard_normal(count) * 10.0 ** rng.uniform(-3, 6)
        values[rng.random(count) < 0.5] = 0.0  # the masked pixels of a window
        assert pairwise_sum(values, plan, partial) == values.sum()


def test_pairwise_plan_covers_every_value_once():
    plan = pairwise_plan(1000)
    blocks = plan[plan[:, 0] >= 0]
    covered = np.concatenate([np.arange(start, start + length) for start, length in blocks])
    np.testing.assert_array_equal(covered, np.arange(1000))
    assert (blocks[:, 1] <= 128).all()
    assert (plan[:, 0] < 0).sum() == len(blocks) - 1  # a binary tree: one addition fewer than leaves


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_equals_the_mean_of_the_sorted_middle_values(dtype):
    """Counts (counted), counts spanning more than the bins, negative integers, one value many times
    (all counted), and non-integers (selected)."""
    rng = np.random.default_rng(3)
    bins = np.empty((4, COUNTED_SPAN), dtype=np.int64)
    for trial in range(1000):
        count = int(rng.integers(1, 300))
        kind = trial % 5
        if kind == 0:
            values = rng.standard_normal(count)
        elif kind == 1:
            values = rng.poisson(rng.uniform(0.1, 30.0), count)
        elif kind == 2:  # just inside and beyond the counted span
            values = rng.integers(0, COUNTED_SPAN + int(rng.integers(-2, 3)), count) + 1e6
        elif kind == 3:
            values = rng.integers(-40, 3, count)
        else:
            values = np.full(count, -7.0)
        values = values.astype(dtype)
        kept = values.copy()
        lower, upper = np.empty(count, dtype), np.empty(count, dtype)
        ordered = np.sort(values)
        expected = 0.5 * (np.float64(ordered[(count - 1) // 2]) + np.float64(ordered[count // 2]))
        assert _median(values, count, lower, upper, bins) == expected
        np.testing.assert_array_equal(values, kept)  # the values are left as they are


def _frame(dtype=np.float32, seed=0):
    """A Poisson frame (background 20 counts) with labelled spots, some touching each other, at the
    edges, over masked pixels and saturated; the peak table at each region's highest pixel."""
    rng = np.random.default_rng(seed)
    shape = (120, 150)
    rr, cc = np.indices(shape)
    centres = [(30.2, 40.7), (33.0, 45.1), (2.0, 75.0), (60.0, 1.0), (118.0, 149.0), (80.4, 100.3), (90.0, 30.0),
               (50.0, 120.0)]
    expected = np.full(shape, 20.0)
    for r, c in centres:
        expected += 800.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.3**2))
    frame = rng.poisson(expected).astype(dtype)
    labels = np.zeros(shape, dtype=np.int32)
    table_rows, table_cols = [], []
    for k, (r, c) in enumerate(centres):
        near = (rr - r) ** 2 + (cc - c) ** 2 <= 2.5**2
        labels[near & (labels == 0)] = k + 1
        own = np.flatnonzero((labels == k + 1).ravel())
        top = own[np.argmax(frame.ravel()[own])]
        table_rows.append(top // shape[1])
        table_cols.append(top % shape[1])
    mask = np.zeros(shape, dtype=bool)
    mask[78:83, 102] = True  # through spot 6
    mask[:, 60] = True  # a gap column
    saturated = frame >= np.sort(frame.ravel())[-3]
    table = new_peak_table(len(centres), row=np.array(table_rows, float) + 0.3,
                           col=np.array(table_cols, float) - 0.2)
    return frame, labels, mask, saturated, table


def _array_path(monkeypatch, *args, **kwargs) -> pd.DataFrame:
    """integrate() with the compiled kernel turned off (the NumPy window arrays)."""
    with monkeypatch.context() as patch:
        patch.setattr(integrate_module, "_COMPILED_DTYPES", ())
        return integrate(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("with_mask", [True, False])
def test_compiled_windows_equal_the_array_path(monkeypatch, dtype, gain, with_mask):
    frame, labels, mask, saturated, table = _frame(dtype)
    kwargs = dict(mask=mask if with_mask else None, labels=labels, gain=gain, saturated=saturated)
    compiled = integrate(frame, table, **kwargs)
    arrays = _array_path(monkeypatch, frame, table, **kwargs)
    pd.testing.assert_frame_equal(compiled, arrays, check_exact=True)
    assert compiled["npix"].min() > 0
    assert (compiled["flags"].to_numpy() != table["flags"].to_numpy()).any()  # SATURATED, LOW_SNR ... were set


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN window
def test_window_with_a_non_finite_pixel_equals_the_array_path(monkeypatch):
    frame, labels, mask, saturated, table = _frame()
    frame[31, 38] = np.nan  # in the background of spots 1 and 2
    frame[91, 31] = np.inf  # in spot 7
    compiled = integrate(frame, table, mask=mask, labels=labels)
    arrays = _array_path(monkeypatch, frame, table, mask=mask, labels=labels)
    pd.testing.assert_frame_equal(compiled, arrays, check_exact=True)


def test_flat_frame_box_spot_known_sums():
    """A 3 x 3 region 100 counts above a flat 10: intensity 900 over the 5 x 5 grown region, background 10."""
    frame = np.full((40, 40), 10.0, dtype=np.float32)
    frame[19:22, 19:22] += 100.0
    labels = np.zeros(frame.shape, dtype=np.int32)
    labels[19:22, 19:22] = 1
    out = integrate(frame, new_peak_table(1, row=[20.0], col=[20.0]), labels=labels, gain=2.0)
    assert out["intensity"].iloc[0] == 900.0
    assert out["npix"].iloc[0] == 25
    assert out["background"].iloc[0] == 10.0
    assert out["peak_value"].iloc[0] == 110.0
    # no background scatter: the variance is gain x the positive excess only
    assert out["intensity_err"].iloc[0] == pytest.approx(np.sqrt(2.0 * 900.0), rel=1e-12)
