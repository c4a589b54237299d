"""braggflow identify on small simulated results files: candidates as users pass them, recorded identifications,
the matching mode said, and a file without peaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.io.results import read_group, read_peaks, recorded_groups, write_group
from braggflow.simulate.frames import simulate_series, write_nexus

runner = CliRunner()
PHASES = Path(__file__).parent / "data" / "phases"
GEOMETRY = {"distance_mm": 100.0, "beam_center_row": 64.0, "beam_center_col": 64.0, "pixel_size_mm": 0.1,
            "wavelength_A": 0.7, "incidence_angle_deg": 0.3, "distance_err_mm": 0.5}


def _run(source: Path, out: Path) -> None:
    sets = [a for k, v in GEOMETRY.items() for a in ("--set", f"geometry.{k}={v}")]
    result = runner.invoke(app, ["run", str(source), "-o", str(out), "--method", "com", *sets])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A results file with peaks, one without, and folders of structure files."""
    d = tmp_path_factory.mktemp("identify")
    write_nexus(d / "sim.h5", simulate_series(1, shape=(128, 128), n_peaks=12, seed=4))
    _run(d / "sim.h5", d / "res.h5")
    np.save(d / "zeros.npy", np.zeros((1, 64, 64)))
    _run(d / "zeros.npy", d / "nopeaks.h5")
    cifs = d / "cifs"
    cifs.mkdir()
    for name in ("Si", "CeO2", "LaB6"):
        shutil.copy(PHASES / f"{name}.yaml", cifs / f"{name}.yaml")
    (cifs / "notes.txt").write_text("not a structure\n")
    (cifs / "phase10.cif").write_text(_cubic_cif("phase10", 4.0))
    (cifs / "phase2.cif").write_text(_cubic_cif("phase2", 4.5))
    (d / "nothing_here").mkdir()
    return d


def _cubic_cif(name: str, a: float) -> str:
    return (f"data_{name}\n_cell_length_a {a}\n_cell_length_b {a}\n_cell_length_c {a}\n_cell_angle_alpha 90\n"
            "_cell_angle_beta 90\n_cell_angle_gamma 90\n_space_group_name_H-M_alt 'P m -3 m'\n"
            "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
            "_atom_site_fract_z\nCu1 Cu 0 0 0\n")


def _identify(files, tmp_path, *args):
    """identify on a copy of the results file with --spots; returns the CLI result and the ranked phases."""
    results = tmp_path / "res.h5"
    if not results.exists():
        shutil.copy(files / "res.h5", results)
    out = tmp_path / "ranked.json"
    result = runner.invoke(app, ["identify", str(results), *[str(a) for a in args], "--spots", "--json", str(out)])
    assert result.exit_code == 0, result.output
    ranked = json.loads(out.read_text())["0"]["ranked"]
    return result, [row["phase"] for row in ranked]


def test_candidates_after_the_results_file(files, tmp_path):
    """What the shell passes for 'cifs/*.cif cifs/*.yaml': files after the results file."""
    cifs = files / "cifs"
    names = sorted(cifs.glob("*.cif")) + sorted(cifs.glob("*.yaml"))
    _, ranked = _identify(files, tmp_path, *names)
    assert sorted(ranked) == ["CeO2", "LaB6", "Si", "phase10", "phase2"]


def test_candidates_from_a_folder_and_a_quoted_pattern(files, tmp_path):
    cifs = files / "cifs"
    for args in ([cifs], ["--cif", cifs], ["--cif", f"{cifs}/*.cif", "--phase", f"{cifs}/*.yaml"],
                 [f"{cifs}/*.cif", "--phase", PHASES / "Si.yaml"]):
        _, ranked = _identify(files, tmp_path, *args)
        expected = {"phase10", "phase2"} | ({"Si"} if args[-1] == PHASES / "Si.yaml" else {"CeO2", "LaB6", "Si"})
        assert sorted(ranked) == sorted(expected), args


def test_folder_order_is_natural(files):
    from braggflow.phases.workflow import candidate_files

    listed = [p.name for p in candidate_files([files / "cifs"])]
    assert listed == ["CeO2.yaml", "LaB6.yaml", "Si.yaml", "phase2.cif", "phase10.cif"]  # as natsort orders them
    # a file named twice (in the folder and on its own) is read once
    assert len(candidate_files([files / "cifs", files / "cifs" / "Si.yaml"])) == 5


def _one_error(result, *expected):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_pattern_matching_nothing_and_empty_folder_are_errors(files):
    res = files / "res.h5"
    _one_error(runner.invoke(app, ["identify", str(res), f"{files}/cifs/*.xyz"]), "*.xyz", "matches no file")
    _one_error(runner.invoke(app, ["identify", str(res), "--cif", f"{files}/nothing_here"]), "nothing_here",
               "no structure file")
    _one_error(runner.invoke(app, ["identify", str(res), f"{files}/cifs/missing.cif"]), "missing.cif")


def test_spots_on_a_file_without_peaks_say_there_is_nothing_to_match(files):
    results = files / "nopeaks.h5"
    assert len(read_peaks(results)) == 0
    for option in ("--spots", "--gixd"):
        result = runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), option])
        _one_error(result, "nopeaks.h5", "0 peaks", "nothing to match", option)


def test_identify_table_without_peaks_raises_a_config_error():
    import pandas as pd

    from braggflow.errors import ConfigError
    from braggflow.geometry import Geometry
    from braggflow.phases import identify_table, load_phase

    empty = pd.DataFrame({"row": pd.Series([], dtype=float), "col": pd.Series([], dtype=float)})
    with pytest.raises(ConfigError, match="0 peaks"):
        identify_table(empty, [load_phase(PHASES / "Si.yaml")], geometry=Geometry.from_config(GEOMETRY), mode="spots")


def test_each_identification_is_recorded_and_the_output_says_so(files, tmp_path):
    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    first = runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), "--spots"])
    assert first.exit_code == 0, first.output
    assert "identification 1 recorded" in first.output and "earlier identification" not in first.output
    second = runner.invoke(app, ["identify", str(results), str(PHASES / "CeO2.yaml"), str(PHASES / "LaB6.yaml"),
                                 "--gixd"])
    assert second.exit_code == 0, second.output
    text = " ".join(second.output.split())
    assert "identification 2 recorded" in text
    assert "an earlier identification exists: 1" in text and "now hold identification 2" in text
    records = recorded_groups(results, "phases")
    assert sorted(records) == [1, 2]
    assert json.loads(records[1]["candidates"]) == ["Si"] and json.loads(records[2]["candidates"]) == ["CeO2", "LaB6"]
    assert json.loads(records[1]["options"])["mode"] == "spots" and json.loads(records[2]["options"])["gixd"]
    assert json.loads(records[2]["candidate_files"])[0].endswith("CeO2.yaml")
    tables, attrs = read_group(results, "phases")
    assert attrs["current"] == 2 and attrs["record"] == "phases_2"
    assert set(tables["frame_0"]["phase"]) == {"CeO2", "LaB6"}
    old, _ = read_group(results, "phases_1")
    assert list(old["frame_0"]["phase"]) == ["Si"]


def test_an_identification_without_a_record_number_is_kept(files, tmp_path):
    """A /entry/phases group written without a record number becomes record 1."""
    import pandas as pd

    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    write_group(results, "phases", tables={"frame_0": pd.DataFrame({"phase": ["X"], "score": [0.5]})},
                attrs={"mode": "rings"})
    result = runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), "--spots"])
    assert result.exit_code == 0, result.output
    assert "an earlier identification exists: 1" in " ".join(result.output.split())
    assert sorted(recorded_groups(results, "phases")) == [1, 2]
    assert list(read_group(results, "phases_1")[0]["frame_0"]["phase"]) == ["X"]


def test_records_survive_a_resumed_run(files, tmp_path):
    """Later snapshots of the results file keep every record (flat groups of tables)."""
    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    for _ in range(2):
        assert runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), "--spots"]).exit_code == 0
    from braggflow.io.writer import _copy_groups

    kept = _copy_groups(results)
    assert {"phases", "phases_1", "phases_2"} <= set(kept)


@pytest.mark.parametrize("options, mode, reason", [
    (["--spots"], "spots", "--spots"),
    (["--gixd"], "gixd", "--gixd"),
    (["--gixd", "--spots"], "gixd", "--gixd"),
    ([], None, "auto: "),
])
def test_the_mode_that_ran_is_said(files, tmp_path, options, mode, reason):
    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    frame = json.loads(out.read_text())["0"]
    assert frame["mode_reason"].startswith(reason)
    if mode:
        assert frame["mode"] == mode
    assert f"{frame['mode']} matching ({reason}" in " ".join(result.output.split())


def test_gixd_with_rings_or_on_a_frame_is_an_error(files):
    _one_error(runner.invoke(app, ["identify", str(files / "res.h5"), str(PHASES / "Si.yaml"), "--gixd", "--rings"]),
               "--gixd", "--rings")
    frame = files / "zeros.npy"
    geometry = ["--distance", "100", "--beam-row", "32", "--beam-col", "32", "--pixel-size", "0.1", "--wavelength",
                "0.7", "--incidence-angle", "0.3"]
    _one_error(runner.invoke(app, ["identify", str(frame), str(PHASES / "Si.yaml"), "--gixd", *geometry]),
               "--gixd", "zeros.npy")


def test_refine_distance_needs_a_distance_error(files, tmp_path):
    results = tmp_path / "res.h5"
    shutil.copy(files / "res.h5", results)
    _one_error(runner.invoke(app, ["identify", str(results), str(PHASES / "Si.yaml"), "--refine-distance",
                                   "--distance-err", "0"]), "--refine-distance", "--distance-err")
