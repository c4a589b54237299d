"""Phases: CIF/YAML reading (gemmi), reflection lists checked against pyFAI's calibrant files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braggflow.errors import ConfigError, InputFileError
from braggflow.phases import load_cif, load_phase, reflections

PHASES = Path(__file__).parent / "data" / "phases"

CIF_NO_SYMOPS = """data_mapbbr3
_cell_length_a 5.93
_cell_length_b 5.93
_cell_length_c 5.93
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'P m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Pb1 Pb 0 0 0 1
Br1 Br 0.5 0 0 1
C1 C 0.5 0.5 0.5 1
N1 N 0.5 0.5 0.5 1
"""


@pytest.mark.parametrize("name", ["LaB6", "CeO2", "Si", "alpha_Al2O3"])
def test_reflections_match_pyfai_calibrant_files(name):
    import pyFAI.calibrant

    cal = pyFAI.calibrant.get_calibrant(name)
    d_ref = np.array(cal.dspacing)
    d_ref = d_ref[d_ref > 1.0]
    refl = reflections(load_phase(PHASES / f"{name}.yaml"), d_min=1.0)
    d_ours = refl["d"].to_numpy()
    # every calibrant line is predicted, and every predicted line of visible intensity is a calibrant line
    assert np.all(np.min(np.abs(d_ref[:, None] - d_ours[None, :]), axis=1) < 2e-4)
    visible = d_ours[refl["intensity"].to_numpy() > 0.5]
    assert np.all(np.min(np.abs(visible[:, None] - d_ref[None, :]), axis=1) < 2e-4)
    if name == "alpha_Al2O3":
        return  # pyFAI's file gives 12 for (1 0 -2) of R-3c; the Laue group -3m gives 6 (as in powder databases)
    # multiplicities from the .D file (first lines)
    text = Path(pyFAI.calibrant.__file__).parent.joinpath("resources", "calibration", f"{name}.D").read_text()
    for line in [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")][:5]:
        d = float(line.split("#")[0])
        mult = int(line.split(")")[1].split()[0])
        rows = refl[np.abs(refl["d"] - d) < 1e-4]
        if len(rows):
            assert mult in set(rows["multiplicity"]) or mult == rows["multiplicity"].sum()


def test_structure_factors_and_intensities():
    ph = load_phase(PHASES / "MAPbBr3.yaml")
    refl = reflections(ph, q_max=3.5, wavelength=0.6888)
    by = {(r.h, r.k, r.l): r for r in refl.itertuples()}
    # F(111) = f_Pb - 3 f_Br - f_MA is weak, F(200) = f_Pb + 3 f_Br + f_MA strong
    assert by[(1, 1, 1)].F2 < 0.1 * by[(0, 2, 0)].F2
    assert refl["intensity"].max() == pytest.approx(100.0)
    assert by[(0, 1, 0)].multiplicity == 6 and by[(1, 1, 1)].multiplicity == 8
    cs_refl = reflections(load_phase(PHASES / "CsPbBr3.yaml"), q_max=3.5, wavelength=0.6888)
    cs = {(r.h, r.k, r.l): r for r in cs_refl.itertuples()}
    assert cs[(1, 1, 1)].F2 > 3 * by[(1, 1, 1)].F2  # Cs (Z = 55) on 1b makes (111) strong


def test_cif_without_symmetry_operators_equals_yaml(tmp_path):
    path = tmp_path / "mapbbr3.cif"
    path.write_text(CIF_NO_SYMOPS)
    from_cif = reflections(load_cif(path), q_max=3.0, wavelength=0.7)
    from_yaml = reflections(load_phase(PHASES / "MAPbBr3.yaml"), q_max=3.0, wavelength=0.7)
    np.testing.assert_allclose(from_cif["d"], from_yaml["d"])
    np.testing.assert_allclose(from_cif["intensity"], from_yaml["intensity"], rtol=1e-6)


def test_bad_phase_files(tmp_path):
    (tmp_path / "junk.cif").write_bytes(b"\x00\x01 not a cif at all ;;; \n loop_ loop_")
    with pytest.raises(InputFileError, match="junk.cif"):
        load_cif(tmp_path / "junk.cif")
    (tmp_path / "nocell.cif").write_text(
        CIF_NO_SYMOPS.split("_cell_length_a")[0] + CIF_NO_SYMOPS.split("_cell_angle_gamma 90\n")[1]
    )
    with pytest.raises(InputFileError, match="no unit cell"):
        load_cif(tmp_path / "nocell.cif")
    with pytest.raises(InputFileError, match="not found"):
        load_phase(tmp_path / "missing.cif")
    (tmp_path / "p.yaml").write_text(
        "name: X\nspace_group: P n m a\ncell: {a: 5}\natoms: [{element: Pb, xyz: [0, 0, 0]}]\n"
    )
    with pytest.raises(ConfigError, match="cell.b is required"):
        load_phase(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="d_min"):
        reflections(load_phase(PHASES / "CeO2.yaml"))


def test_shared_mapbi3_cif(shared_data):
    ph = load_cif(shared_data / "gixd_mapbbr3" / "MAPbI3.cif")
    assert ph.system == "cubic" and ph.cell[0] == pytest.approx(6.3026)
    refl = reflections(ph, q_max=2.5, wavelength=0.6888)
    assert refl.iloc[0][["h", "k", "l"]].abs().sum() == 1
