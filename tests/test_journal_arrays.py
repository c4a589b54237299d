"""A journal batch's arrays of several frames' peak tables: text of categories, frames, defaults left out."""

from __future__ import annotations

import numpy as np

from braggflow.io.writer import _journal_arrays
from braggflow.locate.methods import method_column
from braggflow.schema import COLUMNS, conformed_columns, new_peak_table, table_from_columns


def _table(methods: list[str], categories: list[str], row0: float):
    n = len(methods)
    columns = conformed_columns(new_peak_table(n, row=row0 + np.arange(n, dtype=float)))
    codes = np.array([categories.index(m) for m in methods], dtype=np.int8)
    columns["method"] = method_column(codes, categories)
    return table_from_columns(columns, n)


def test_batch_arrays_hold_each_part_s_category_text_in_order():
    """Parts sharing one categories Index and a part with another ('region' added) give each row its own method;
    all-missing and all-default columns are left out, the frame column never."""
    shared = ["com", "gauss", "pvoigt", "nn"]
    tables = [_table(["com", "gauss"], shared, 0.0), _table(["region", "com", "region"], shared + ["region"], 10.0),
              _table([], shared, 0.0), _table(["nn"], shared, 20.0)]
    frames = np.array([4, 4, 5, 5, 5, 7])
    arrays = _journal_arrays(tables, COLUMNS, frame=frames)
    assert arrays["s:method"].tolist() == ["com", "gauss", "region", "com", "region", "nn"]
    assert not arrays["n:method"].any()
    assert arrays["v:frame"].tolist() == frames.tolist()
    assert arrays["v:row"].tolist() == [0.0, 1.0, 10.0, 11.0, 12.0, 20.0]
    for left_out in ("s:phase", "x:h", "v:col", "v:track_id", "v:flags"):
        assert left_out not in arrays
