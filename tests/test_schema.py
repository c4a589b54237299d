"""The peak-table schema: the single source of truth, in sync with the README."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from braggflow.schema import (
    COLUMNS,
    FRAME_COLUMNS,
    Flag,
    conform,
    describe_flags,
    empty_peak_table,
    frames_table,
    new_peak_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _documented(text: str) -> dict:
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([^|]*) \| ([^|]*) \|$", text, flags=re.M)
    return {name: (dtype, unit.strip()) for name, dtype, unit, _ in rows if name != "column"}


def test_readme_tables_match_schema():
    text = README.read_text()
    peaks = text[text.index("## The peak table"):text.index("**The frames table**")]
    frames = text[text.index("**The frames table**"):text.index("## The command line")]
    assert _documented(peaks) == {c.name: (c.dtype, c.unit) for c in COLUMNS.values()}
    assert _documented(frames) == {c.name: (c.dtype, c.unit) for c in FRAME_COLUMNS.values()}
    for f in Flag:
        assert f"{f.name.lower()} {int(f)}" in text


def test_frames_table_has_every_column_with_its_dtype():
    t = frames_table([{"frame": 3, "n_peaks": 7, "unknown": 1}])
    assert list(t.columns) == list(FRAME_COLUMNS)
    assert t["frame"].tolist() == [3] and t["n_peaks"].tolist() == [7] and np.isnan(t["noise"]).all()
    for name, col in FRAME_COLUMNS.items():
        assert str(t[name].dtype) == col.dtype


def test_empty_and_new_tables_have_schema_dtypes():
    t = empty_peak_table()
    assert list(t.columns) == list(COLUMNS) and len(t) == 0
    for name, col in COLUMNS.items():
        assert str(t[name].dtype) == col.dtype
    n = new_peak_table(2, row=[1.5, 2.5], flags=[int(Flag.EDGE), 0])
    assert n["track_id"].tolist() == [-1, -1] and np.isnan(n["col"]).all()
    with pytest.raises(KeyError, match="not a peak-table column"):
        new_peak_table(1, rows=[1])


def test_conform_adds_missing_and_keeps_extra_columns():
    t = conform(pd.DataFrame({"row": [1, 2], "myextra": ["a", "b"]}))
    assert t["row"].dtype == np.float64 and t["myextra"].tolist() == ["a", "b"] and "col" in t
    assert describe_flags(int(Flag.EDGE | Flag.SATURATED)) == ["edge", "saturated"]


def test_new_table_equals_the_plain_pandas_construction_and_columns_replace_independently():
    """The table built from blocks is the one pd.DataFrame builds from the same columns, defaults included."""
    n = 5
    t = new_peak_table(n, row=np.arange(n, dtype=float), npix=np.arange(n), method=["com"] * n)
    plain = {}
    for name, col in COLUMNS.items():
        if name == "row":
            plain[name] = np.arange(n, dtype=float)
        elif name == "npix":
            plain[name] = np.arange(n, dtype=np.int64)
        elif name == "method":
            plain[name] = pd.Categorical(["com"] * n)
        elif col.dtype == "category":
            plain[name] = pd.Categorical([None] * n)
        elif col.dtype == "Int32":
            plain[name] = pd.array([pd.NA] * n, dtype="Int32")
        else:
            plain[name] = np.full(n, col.default, dtype=col.dtype)
    pd.testing.assert_frame_equal(t, pd.DataFrame(plain))
    # a conformed copy takes new columns without touching the table it came from
    c = conform(t)
    c["row"] = np.full(n, -1.0)
    c["flags"] = np.full(n, int(Flag.EDGE), dtype=np.uint32)
    assert t["row"].tolist() == list(range(n)) and (t["flags"] == 0).all()
    assert (c["row"] == -1.0).all() and conform(c)["flags"].dtype == np.uint32


def test_conform_rebuilds_a_table_whose_column_has_another_dtype():
    t = new_peak_table(3)
    t["npix"] = np.array([1.0, 2.0, 3.0])  # float where the schema says int64
    c = conform(t)
    assert c["npix"].dtype == np.int64 and c["npix"].tolist() == [1, 2, 3]
    assert [str(c[name].dtype) for name in COLUMNS] == [col.dtype for col in COLUMNS.values()]


def test_new_table_without_the_block_constructor_is_the_same(monkeypatch):
    """pandas before 2.3 has no ``create_dataframe_from_blocks``: the table comes from pd.DataFrame, unchanged."""
    import braggflow.schema as schema

    fast = new_peak_table(3, row=[1.0, 2.0, 3.0], method=["com", "nn", "com"])
    monkeypatch.setattr(schema, "_from_blocks", None)
    pd.testing.assert_frame_equal(new_peak_table(3, row=[1.0, 2.0, 3.0], method=["com", "nn", "com"]), fast)
