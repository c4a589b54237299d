"""Phase identification on the real MAPbBr3 GIWAXS frame under every option: rings with the distance refined (six
candidates, and eleven with calibrants), spots, grazing-incidence spots, the mode said, two recorded runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from test_phases_matching import _assert_one_order, assert_errors_honest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.geometry import Geometry
from braggflow.io.results import read_group, read_peaks, recorded_groups
from braggflow.phases import MatchOptions, load_phase
from braggflow.phases.workflow import identify_frame

pytestmark = pytest.mark.realdata

runner = CliRunner()
PHASES = Path(__file__).parent / "data" / "phases"
FRAME = "S123_MABr_A2_00865-00000.tif"
GEOMETRY = dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0, pixel_size_mm=0.2,
                wavelength_A=0.6888, incidence_angle_deg=0.5, distance_err_mm=1.0)
GEOMETRY_OPTIONS = ["--distance", "809", "--distance-err", "1", "--beam-row", "1825.5", "--beam-col", "545",
                    "--pixel-size", "0.2", "--wavelength", "0.6888", "--incidence-angle", "0.5"]
CALIBRANTS = ["LaB6", "CeO2", "Si", "alpha_Al2O3", "ZnO"]
A_MAPBBR3 = 5.905  # Å, room-temperature cubic MAPbBr3


def _six(folder: Path) -> list[Path]:
    """The six candidates: MAPbBr3, the shared MAPbI3 CIF, MAPbCl3, CsPbBr3, PbBr2, PbI2."""
    return [PHASES / "MAPbBr3.yaml", folder / "MAPbI3.cif"] + [PHASES / f"{n}.yaml" for n in
                                                                ("MAPbCl3", "CsPbBr3", "PbBr2", "PbI2")]


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> Path:
    """'braggflow run' on the frame with the geometry of the data README (run once for the module)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    out = tmp_path_factory.mktemp("mapbbr3") / "r.h5"
    sets = [a for k, v in GEOMETRY.items() for a in ("--set", f"geometry.{k}={v}")]
    result = runner.invoke(app, ["run", str(SHARED_DATA / "gixd_mapbbr3" / FRAME), "-o", str(out), *sets])
    assert result.exit_code == 0, result.output
    assert len(read_peaks(out)) > 50
    return out


def _check_mapbbr3_first(ranked, *, a_tolerance: float) -> dict:
    """MAPbBr3 ranks first, is accepted alone, and its refined a has an honest error; returns its row."""
    best = ranked[0]
    assert best["phase"] == "MAPbBr3" and best["accepted"], [(r["phase"], r["accepted"]) for r in ranked]
    assert best["chance_probability"] < 1e-3
    assert sum(bool(r["accepted"]) for r in ranked) == 1
    assert best["refined"] and abs(best["a"] / A_MAPBBR3 - 1) < a_tolerance
    assert A_MAPBBR3 * 1.0 / 809.0 * 0.9 <= best["a_err"] < 0.02  # the distance uncertainty is in the error
    for row in ranked:  # no cell with a zero error unless exact: refined -> error > 0, else no error (None/NaN)
        err = row["a_err"]
        if row["refined"]:
            assert err is not None and err > 0, row
        else:
            assert err is None or math.isnan(err), row
    return best


@pytest.mark.parametrize("with_calibrants", [False, True], ids=["six", "eleven"])
def test_refined_distance_keeps_mapbbr3_first(shared_data, with_calibrants):
    """--refine-distance --distance-err 1: the distance prior holds, CsPbBr3 and LaB6 do not buy MAPbBr3's lines."""
    import fabio

    folder = shared_data / "gixd_mapbbr3"
    frame = fabio.open(str(folder / FRAME)).data.astype(float)
    paths = _six(folder) + ([PHASES / f"{n}.yaml" for n in CALIBRANTS] if with_calibrants else [])
    phases = [load_phase(p) for p in paths]
    assert len(phases) == (11 if with_calibrants else 6)
    result = identify_frame(frame, Geometry.from_config(GEOMETRY), phases,
                            options=MatchOptions(refine_distance=True))
    best = _check_mapbbr3_first(result.ranked.to_dict(orient="records"), a_tolerance=3e-3)
    assert abs(best["distance_mm"] - 809.0) < 3.0 and 0 < best["distance_err_mm"] <= 1.0
    assert best["n_matched"] >= 12
    ranked = result.ranked.set_index("phase")
    assert not ranked.loc["CsPbBr3", "accepted"]
    assert ranked.loc["CsPbBr3", "chance_probability_alone"] > 1e3 * best["chance_probability"]
    if with_calibrants:
        assert not ranked.loc["LaB6", "accepted"]
    _assert_one_order(result.ranked, 1e-3)
    for m in result.matches.values():
        assert_errors_honest(m)


def test_refined_distance_from_the_command_line_with_a_folder_of_candidates(shared_data, tmp_path):
    """The eleven candidates as the folder of structure files plus the shared CIF, after the frame."""
    folder = shared_data / "gixd_mapbbr3"
    out = tmp_path / "ranked.json"
    result = runner.invoke(app, ["identify", str(folder / FRAME), str(PHASES), str(folder / "MAPbI3.cif"),
                                 *GEOMETRY_OPTIONS, "--refine-distance", "--json", str(out)])
    assert result.exit_code == 0, result.output
    ranked = json.loads(out.read_text())["0"]["ranked"]
    assert sorted(r["phase"] for r in ranked) == sorted(
        ["MAPbBr3", "MAPbI3", "MAPbCl3", "CsPbBr3", "PbBr2", "PbI2", *CALIBRANTS])
    best = _check_mapbbr3_first(ranked, a_tolerance=3e-3)
    assert abs(best["distance_mm"] - 809.0) < 3.0
    assert "d=" in result.output and "rings matching (a frame" in " ".join(result.output.split())


@pytest.mark.parametrize("options", [["--spots"], ["--gixd", "--spots"], ["--gixd"]],
                         ids=["spots", "gixd-spots", "gixd-auto"])
def test_spot_matching_ranks_mapbbr3_first(shared_data, results_file, tmp_path, options):
    """--spots and --gixd: MAPbBr3 first and accepted, one order for ranking and acceptance, the mode said."""
    results = tmp_path / "r.h5"
    shutil.copy(results_file, results)
    out = tmp_path / "ranked.json"
    result = runner.invoke(app, ["identify", str(results), *map(str, _six(shared_data / "gixd_mapbbr3")),
                                 *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    frame = json.loads(out.read_text())["0"]
    mode = "gixd" if "--gixd" in options else "spots"
    assert frame["mode"] == mode and frame["mode_reason"].startswith(options[0])
    assert f"{mode} matching ({options[0]}" in " ".join(result.output.split())
    best = _check_mapbbr3_first(frame["ranked"], a_tolerance=5e-3)
    assert best["n_matched"] >= 4
    import pandas as pd

    ranked = pd.DataFrame(frame["ranked"]).fillna(float("nan"))
    _assert_one_order(ranked, 1e-3)
    peaks = read_peaks(results)
    assert (peaks["phase"] == "MAPbBr3").sum() >= 0.5 * len(peaks)


def test_two_identifications_leave_two_records(results_file, shared_data, tmp_path):
    """Auto mode (rings, said with what it saw), then --spots: both recorded, the second current, the output
    says so, and the peak columns hold the second."""
    results = tmp_path / "r.h5"
    shutil.copy(results_file, results)
    candidates = list(map(str, _six(shared_data / "gixd_mapbbr3")))
    first = runner.invoke(app, ["identify", str(results), *candidates])
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert "rings matching (auto: " in text and "peaks lie on rings" in text
    assert "identification 1 recorded" in text
    second = runner.invoke(app, ["identify", str(results), *candidates, "--spots"])
    assert second.exit_code == 0, second.output
    text = " ".join(second.output.split())
    assert "an earlier identification exists: 1" in text and "now hold identification 2" in text
    records = recorded_groups(results, "phases")
    assert sorted(records) == [1, 2]
    assert records[1]["mode"] == "rings" and records[2]["mode"] == "spots"
    assert json.loads(records[2]["accepted"]) == {"0": ["MAPbBr3"]}
    tables, attrs = read_group(results, "phases")
    assert attrs["current"] == 2 and tables["frame_0"].iloc[0]["phase"] == "MAPbBr3"
    first_table, _ = read_group(results, "phases_1")
    assert first_table["frame_0"].iloc[0]["phase"] == "MAPbBr3"
    assert (read_peaks(results)["phase"] == "MAPbBr3").any()
