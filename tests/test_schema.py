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
