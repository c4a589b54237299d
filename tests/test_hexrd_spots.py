"""HEXRD spots: one measured spot listed for two grains is flagged once."""

from __future__ import annotations

import pandas as pd


def test_hexrd_repeats_flag_the_later_row_of_one_measured_spot():
    """Rows 0.3 px and 0.5 deg apart are one measured spot (the later flagged); 2 deg apart, two."""
    from braggflow.io.hexrd import _repeats

    spots = pd.DataFrame({"row": [10.0, 10.3, 10.0, 50.0], "col": [20.0, 20.0, 20.1, 50.0],
                          "omega": [1.0, 1.5, 3.0, 1.0]})
    assert _repeats(spots).tolist() == [False, True, False, False]
    assert _repeats(spots.iloc[:1]).tolist() == [False]
