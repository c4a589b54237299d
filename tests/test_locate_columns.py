"""The locate stage's tables read and built as column arrays (braggflow.schema.conformed_columns,
table_from_columns), positions checked as arrays, and the located patches' border median handed to the fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError
from braggflow.locate.methods import locate_patches
from braggflow.locate.patches import check_patch_arrays, check_patch_inputs, patch_background
from braggflow.schema import COLUMNS, conform, conformed_columns, new_peak_table, table_from_columns
from braggflow.simulate.patches import simulate_patches


def test_columns_read_and_built_again_give_the_conformed_table_and_share_no_memory():
    """table_from_columns(conformed_columns(t)) is conform(t): for a conformed table, and for one with a column of
    another dtype, a missing column, an extra column and an index other than 0..n-1; the built table owns its
    arrays (numeric and categorical), so writing into it leaves the source as it was."""
    n = 4
    conformed = new_peak_table(n, row=np.arange(n, dtype=float), method=["com", "gauss", "com", "nn"],
                               source_file=["a.h5"] * n)
    odd = conformed.drop(columns="snr").assign(npix=np.arange(n, dtype=float), extra=list("wxyz"))
    odd.index = [10, 11, 12, 13]
    for table in (conformed, odd):
        columns = conformed_columns(table)
        assert list(columns)[:len(COLUMNS)] == list(COLUMNS)
        built = table_from_columns(columns, n)
        pd.testing.assert_frame_equal(built, conform(table))
    built = table_from_columns(conformed_columns(conformed), n)
    built.loc[0, "row"] = -5.0
    built.loc[1, "method"] = "nn"
    assert conformed["row"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert conformed["method"].tolist() == ["com", "gauss", "com", "nn"]


def test_table_from_columns_casts_to_the_schema_and_rejects_columns_out_of_order():
    n = 3
    columns = conformed_columns(new_peak_table(n))
    columns["npix"] = np.array([1.0, 2.0, 3.0])  # float where the schema says int64
    built = table_from_columns(columns, n)
    assert built["npix"].dtype == np.int64 and built["npix"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="expected 3"):
        table_from_columns({**columns, "row": np.zeros(2)}, n)
    shuffled = dict(reversed(list(columns.items())))
    with pytest.raises(ValueError, match="schema's order"):
        table_from_columns(shuffled, n)


def test_positions_as_arrays_are_checked_as_a_table_is():
    """check_patch_arrays takes a table's row and col as arrays and checks what check_patch_inputs checks."""
    frame = np.zeros((20, 30), dtype=np.float32)
    table = pd.DataFrame({"row": [3.2, 10.0], "col": [4.0, 25.7]})
    _, rows, cols, size = check_patch_arrays(frame, table["row"], table["col"], size=7)
    _, rows_t, cols_t, size_t = check_patch_inputs(frame, table, size=7)
    assert np.array_equal(rows, rows_t) and np.array_equal(cols, cols_t) and size == size_t == 7
    with pytest.raises(BraggflowError, match="finite"):
        check_patch_arrays(frame, [3.0, np.nan], [4.0, 5.0], size=7)
    with pytest.raises(BraggflowError, match="mask has shape"):
        check_patch_arrays(frame, rows, cols, size=7, mask=np.zeros((20, 31), dtype=bool))
    with pytest.raises(BraggflowError, match="odd"):
        check_patch_arrays(frame, rows, cols, size=6)


@pytest.mark.parametrize("method", ["gauss", "pvoigt"])
def test_fits_given_the_patches_border_median_are_the_fits_that_take_it(method):
    """The located patches' border median (Patches.background, over the pixels they removed) given to the fits
    starts them from the same moments: the same centres bit for bit; a different level starts them elsewhere."""
    ps = simulate_patches(60, kind="isotropic", seed=41)
    data = np.asarray(ps.data, dtype=np.float32)
    level = patch_background(data, ps.mask)
    plain = locate_patches(data, ps.mask, method=method)
    given = locate_patches(data, ps.mask, method=method, background=level)
    for name in ("row", "col", "row_err", "sigma_row", "intensity", "failed"):
        assert np.array_equal(getattr(given, name), getattr(plain, name), equal_nan=name != "failed"), name
    shifted = locate_patches(data, ps.mask, method=method, background=level + 5.0)
    assert not np.array_equal(shifted.row, plain.row, equal_nan=True)


def test_columns_without_pandas_column_accessor_are_the_same_arrays(monkeypatch):
    """Without pandas' private column accessor the columns come through iloc: NumPy arrays for the numeric
    columns, extension arrays for the others, the same values."""
    table = new_peak_table(3, row=[1.0, 2.0, 3.0], npix=[4, 5, 6], method=["com", "gauss", "com"])
    fast = conformed_columns(table)
    monkeypatch.delattr(pd.DataFrame, "_get_column_array")
    slow = conformed_columns(table)
    assert list(slow) == list(fast)
    for name, values in slow.items():
        assert type(values) is type(fast[name]) and values.dtype == fast[name].dtype, name
    assert isinstance(slow["row"], np.ndarray) and slow["npix"].tolist() == [4, 5, 6]
    pd.testing.assert_frame_equal(table_from_columns(slow, 3), table)
