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


def _frames_table_by_pandas(rows) -> pd.DataFrame:
    """The frames table as pd.DataFrame(rows) gives its columns, cast to the schema (the reference)."""
    from braggflow.schema import _cast_values, _column_values

    df = pd.DataFrame(rows)
    out = {}
    for name, col in FRAME_COLUMNS.items():
        if name not in df:
            out[name] = _column_values(col, len(df))
        elif col.dtype == "category":
            out[name] = _cast_values(col, df[name])
        else:
            out[name] = df[name].to_numpy(dtype=col.dtype)
    return pd.DataFrame(out)


def test_frames_table_of_row_dicts_is_the_table_pandas_builds_from_them():
    """Rows as the pipeline gives them (Python and NumPy numbers, NaN, an unknown key), rows whose keys differ, rows
    with a learned frame class: each the table of pd.DataFrame(rows), dtypes and values (NaN included)."""
    plain = [{"frame": i, "omega": float("nan") if i % 2 else 0.5 * i, "n_peaks": 3 * i, "background": np.float32(1.25),
              "noise": np.float64(2.0), "saturated": np.int64(i), "zingers": 0, "hot_pixels": 20, "thresholded": False,
              "time": 0.01 * i, "hit": np.bool_(i > 2), "other": "x"} for i in range(6)]
    uneven = [{"frame": 0, "n_peaks": 2}, {"frame": 1, "n_peaks": 5, "latency": 0.25}]
    learned = [{"frame": 0, "frame_class": "spots", "p_spots": 0.9}, {"frame": 1, "frame_class": None, "p_spots": 0.1}]
    mixed = [{"frame": 0, "thresholded": True, "background": 2}, {"frame": 1, "thresholded": 0, "background": 2.5}]
    for rows in (plain, uneven, learned, mixed):
        expected = _frames_table_by_pandas(rows)
        pd.testing.assert_frame_equal(frames_table(rows), expected, check_exact=True)
        pd.testing.assert_frame_equal(frames_table(pd.DataFrame(rows)), expected, check_exact=True)
    with pytest.raises(ValueError, match="could not convert"):  # text is no noise level, either way
        frames_table([{"frame": 0, "noise": "high"}])


def test_cast_columns_cast_to_the_schema_and_keep_the_arrays_that_match():
    from braggflow.schema import cast_columns, conformed_columns

    n = 3
    columns = conformed_columns(new_peak_table(n, row=[1.0, 2.0, 3.0]))
    given = dict(columns, npix=np.array([1.0, 2.0, 3.0]), flags=np.array([1, 0, 2]), extra=np.arange(n))
    cast = cast_columns(given, n)
    assert list(cast) == list(given)
    assert cast["npix"].dtype == np.int64 and cast["npix"].tolist() == [1, 2, 3]
    assert cast["flags"].dtype == np.uint32 and cast["row"] is given["row"] and cast["extra"] is given["extra"]
    assert cast["method"] is given["method"]  # an extension array of the schema's dtype is kept too
    with pytest.raises(ValueError, match="schema's order"):
        cast_columns(dict(reversed(list(columns.items()))), n)
    with pytest.raises(ValueError, match="has 3 values, expected 2"):
        cast_columns(columns, 2)


def test_tables_built_here_hold_one_block_per_numpy_dtype_and_columns_replace_independently():
    t = new_peak_table(4, row=np.arange(4.0))
    numpy_dtypes = {col.dtype for col in COLUMNS.values() if col.dtype not in ("category", "Int32")}
    extension = sum(col.dtype in ("category", "Int32") for col in COLUMNS.values())
    assert t._mgr.nblocks == len(numpy_dtypes) + extension
    c = t.copy(deep=False)
    c["col"] = np.full(4, 7.0)
    assert np.isnan(t["col"]).all() and t["row"].tolist() == [0.0, 1.0, 2.0, 3.0] and (c["col"] == 7.0).all()
    f = frames_table([{"frame": 1}, {"frame": 2}])
    f["n_peaks"] = [3, 4]
    assert f["frame"].tolist() == [1, 2] and f["n_peaks"].tolist() == [3, 4]


def test_frames_table_of_a_frames_table_is_that_table_and_of_other_tables_is_rebuilt():
    t = frames_table([{"frame": 2, "n_peaks": 5}, {"frame": 3, "n_peaks": 0}])
    t["source_file"] = pd.Categorical(["a.h5", "b.h5"])
    same = frames_table(t)
    assert same is not t
    pd.testing.assert_frame_equal(same, t, check_exact=True)
    same["n_peaks"] = [1, 1]
    assert t["n_peaks"].tolist() == [5, 0]  # a new table: changing it leaves the one given
    odd = t.assign(extra=1.0).iloc[::-1]  # an extra column and the index 1, 0
    rebuilt = frames_table(odd)
    assert list(rebuilt.columns) == list(FRAME_COLUMNS) and rebuilt.index.tolist() == [0, 1]
    assert rebuilt["frame"].tolist() == [3, 2] and rebuilt["source_file"].tolist() == ["b.h5", "a.h5"]
