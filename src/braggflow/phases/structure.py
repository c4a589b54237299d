"""Crystal phases: read from a CIF (gemmi) or from a small YAML definition.

A YAML phase file looks like::

    name: MAPbBr3
    space_group: P m -3 m          # Hermann-Mauguin symbol (or number)
    cell: {a: 5.93}                # missing lengths/angles follow from the crystal system
    atoms:                         # fractional coordinates; one line per site
      - {label: Pb1, element: Pb, xyz: [0, 0, 0]}
      - {label: Br1, element: Br, xyz: [0.5, 0, 0], b_iso: 3.0}
      - {label: C1, element: C, xyz: [0.5, 0.5, 0.5], occ: 1.0}
    reference: where the structure comes from

Occupancies are chemical (1 = site fully occupied), as in a CIF; symmetry
comes from the space group, so no symmetry-operator list is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braggflow.errors import ConfigError, InputFileError

__all__ = ["Phase", "load_cif", "load_phase_yaml", "load_phase", "crystal_system"]

_B_DEFAULT = 1.0  # Å^2, isotropic displacement used when a structure gives none


def crystal_system(number: int) -> str:
    """Crystal system of a space-group number (1-230).

    Returns
    -------
    system : {"triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"}
    """
    for limit, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                        (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if number <= limit:
            return name
    raise ValueError(f"space group number {number} outside 1-230")


@dataclass(frozen=True)
class Phase:
    """A crystal phase: cell, space group and atoms (a gemmi ``SmallStructure``).

    Attributes
    ----------
    name : str
    structure : gemmi.SmallStructure
        With crystallographic occupancies (gemmi's convention for structure factors).
    source : str
        File the phase was read from ("" when built in memory).
    reference : str
        Where the structure comes from.
    """

    name: str
    structure: Any = field(repr=False, compare=False)
    source: str = ""
    reference: str = ""

    @property
    def cell(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, alpha, beta, gamma) in Å and deg."""
        c = self.structure.cell
        return (c.a, c.b, c.c, c.alpha, c.beta, c.gamma)

    @property
    def spacegroup(self):
        """gemmi.SpaceGroup."""
        return self.structure.spacegroup

    @property
    def system(self) -> str:
        """Crystal system (from the space-group number)."""
        return crystal_system(self.spacegroup.number)

    def free_cell_parameters(self) -> list[str]:
        """Names of the independent cell parameters of this crystal system.

        Returns
        -------
        names : list of str
            e.g. ``["a"]`` for cubic, ``["a", "c"]`` for tetragonal/hexagonal.
        """
        system = self.system
        if system == "cubic":
            return ["a"]
        if system in ("tetragonal", "hexagonal"):
            return ["a", "c"]
        if system == "trigonal":
            return ["a", "alpha"] if self.spacegroup.hm.startswith("R") and self.spacegroup.ext == "R" else ["a", "c"]
        if system == "orthorhombic":
            return ["a", "b", "c"]
        if system == "monoclinic":
            axis = self.spacegroup.monoclinic_unique_axis()
            return ["a", "b", "c", {"a": "alpha", "b": "beta", "c": "gamma"}[axis]]
        return ["a", "b", "c", "alpha", "beta", "gamma"]

    def cell_from_free(self, values: dict[str, float]) -> tuple[float, ...]:
        """Full cell from the free parameters (the others follow from the crystal system).

        Parameters
        ----------
        values : dict of str -> float
            Free parameters (Å, deg); missing ones keep their current value.

        Returns
        -------
        cell : (a, b, c, alpha, beta, gamma)
        """
        a, b, c, al, be, ga = self.cell
        v = {"a": a, "b": b, "c": c, "alpha": al, "beta": be, "gamma": ga}
        v.update(values)
        system = self.system
        if system == "cubic":
            v["b"] = v["c"] = v["a"]
        elif system in ("tetragonal", "hexagonal") or (system == "trigonal" and "c" in self.free_cell_parameters()):
            v["b"] = v["a"]
        elif system == "trigonal":
            v["b"] = v["c"] = v["a"]
            v["beta"] = v["gamma"] = v["alpha"]
        return (v["a"], v["b"], v["c"], v["alpha"], v["beta"], v["gamma"])

    def with_cell(self, cell) -> Phase:
        """A copy with another unit cell (same atoms in fractional coordinates).

        Returns
        -------
        phase : Phase
        """
        import gemmi

        st = gemmi.SmallStructure()
        st.name = self.structure.name
        st.cell = gemmi.UnitCell(*cell)
        _set_spacegroup(st, self.spacegroup)
        for site in self.structure.sites:
            st.add_site(site.clone())
        return Phase(self.name, st, self.source, self.reference)


def _set_spacegroup(st, sg) -> None:
    st.spacegroup_hm = sg.xhm()
    st.spacegroup_hall = sg.hall
    st.determine_and_set_spacegroup("H")
    st.setup_cell_images()


def _finish(st, name: str, source: str, reference: str = "") -> Phase:
    import gemmi

    if st.cell.a <= 1.0 or st.cell.b <= 1.0 or st.cell.c <= 1.0 or st.cell.volume <= 1.0:
        raise InputFileError(f"{source}: no unit cell (_cell_length_a/b/c and angles are required)")
    sg = st.spacegroup
    if sg is None:
        # symmetry operators / Hall symbol / number, whichever the CIF has
        try:
            st.determine_and_set_spacegroup("SHN")
            sg = st.spacegroup
        except Exception:  # gemmi raises RuntimeError for inconsistent data
            sg = None
    if sg is None:
        raise InputFileError(
            f"{source}: no space group "
            "(give _space_group_name_H-M_alt, _space_group_IT_number or symmetry operators)"
        )
    _set_spacegroup(st, sg)
    if len(st.sites) == 0:
        raise InputFileError(f"{source}: no atom sites (_atom_site_fract_x/y/z)")
    for site in st.sites:
        if site.element == gemmi.Element("X"):
            raise InputFileError(f"{source}: atom site {site.label!r} has no known element")
        if site.u_iso == 0 and not site.aniso.nonzero():
            site.u_iso = _B_DEFAULT / (8 * math.pi ** 2)
    st.change_occupancies_to_crystallographic()
    return Phase(name=name, structure=st, source=source, reference=reference)


def load_cif(path: str | Path, *, name: str | None = None, block: str | None = None) -> Phase:
    """Read a crystal structure from a CIF with gemmi.

    The space group comes from its name or number (or, failing those, from the
    symmetry operators), so CIFs without a symmetry-operator loop work.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Phase name; default: the file's stem.
    block : str, optional
        Data block name; default: the first block with atom sites.

    Returns
    -------
    phase : Phase

    Raises
    ------
    InputFileError
        If the file is missing, is not a CIF, or lacks a cell, space group or atoms.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: CIF file not found")
    try:
        doc = gemmi.cif.read(str(path))
    except Exception as exc:  # gemmi raises ValueError / RuntimeError with the parser's message
        raise InputFileError(
            f"{path}: not a readable CIF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    blocks = [b for b in doc if block is None or b.name == block]
    blocks = [b for b in blocks if b.find_value("_cell_length_a") is not None or b.find_loop("_atom_site_fract_x")]
    if not blocks:
        missing = "data block " + repr(block) if block else "data block with a unit cell or atom sites"
        raise InputFileError(f"{path}: no {missing}")
    blk = blocks[0]
    if blk.find_value("_cell_length_a") is None:
        raise InputFileError(f"{path}: no unit cell (_cell_length_a is missing)")
    try:
        st = gemmi.make_small_structure_from_block(blk)
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read the structure ({exc})") from None
    return _finish(st, name or path.stem, str(path))


_SYSTEM_DEFAULTS = {
    "cubic": ("a", "a", "a", 90, 90, 90),
    "tetragonal": ("a", "a", "c", 90, 90, 90),
    "hexagonal": ("a", "a", "c", 90, 90, 120),
    "trigonal": ("a", "a", "c", 90, 90, 120),
    "orthorhombic": ("a", "b", "c", 90, 90, 90),
    "monoclinic": ("a", "b", "c", 90, "beta", 90),
    "triclinic": ("a", "b", "c", "alpha", "beta", "gamma"),
}


def load_phase_yaml(path: str | Path) -> Phase:
    """Read a phase defined in a small YAML file (see the module docstring).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    phase : Phase

    Raises
    ------
    InputFileError
        If the file is missing or not YAML.
    ConfigError
        If a required key (space_group, cell values, atoms) is missing or invalid.
    """
    import gemmi

    path = Path(path)
    data = _read_phase_mapping(path)
    sg = _yaml_spacegroup(path, data["space_group"])
    cell = _yaml_cell(path, data["cell"], sg)
    st = gemmi.SmallStructure()
    st.name = str(data.get("name", path.stem))
    st.cell = gemmi.UnitCell(*cell)
    _set_spacegroup(st, sg)
    atoms = data["atoms"]
    if not isinstance(atoms, list) or not atoms:
        raise ConfigError(f"{path}: atoms must be a non-empty list")
    for i, atom in enumerate(atoms):
        st.add_site(_yaml_site(path, i, atom))
    return _finish(st, st.name, str(path), str(data.get("reference", "")))


def _read_phase_mapping(path: Path) -> dict:
    """The YAML phase file as a mapping that has the keys space_group, cell and atoms."""
    import yaml

    if not path.is_file():
        raise InputFileError(f"{path}: phase file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputFileError(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a text file (a phase file is YAML text)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with space_group, cell and atoms")
    for key in ("space_group", "cell", "atoms"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    return data


def _yaml_spacegroup(path: Path, sg_key):
    """gemmi space group of a YAML ``space_group`` value (a number or a Hermann-Mauguin symbol)."""
    import gemmi

    try:
        if isinstance(sg_key, int):
            sg = gemmi.find_spacegroup_by_number(int(sg_key))
        else:
            sg = gemmi.find_spacegroup_by_name(str(sg_key))
    except (ValueError, RuntimeError):
        sg = None
    if sg is None:
        raise ConfigError(f"{path}: unknown space group {sg_key!r}")
    return sg


def _cell_template(sg) -> tuple[str, tuple]:
    """Crystal system of a space group and, per cell slot, a fixed value or the slot it copies."""
    system = crystal_system(sg.number)
    if system == "trigonal" and sg.ext == "R":
        template: tuple = ("a", "a", "a", "alpha", "alpha", "alpha")
    else:
        template = _SYSTEM_DEFAULTS[system]
    return system, template


def _yaml_cell(path: Path, cell_in, sg) -> list[float]:
    """The six cell parameters (a, b, c, alpha, beta, gamma) from a YAML ``cell`` mapping or list."""
    system, template = _cell_template(sg)
    if isinstance(cell_in, (list, tuple)):
        if len(cell_in) != 6:
            raise ConfigError(f"{path}: cell as a list needs 6 values (a, b, c, alpha, beta, gamma)")
        cell_in = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), cell_in))
    if not isinstance(cell_in, dict):
        raise ConfigError(f"{path}: cell must be a mapping like {{a: 5.93}} or a list of 6 values")
    cell = []
    for slot, default in zip(("a", "b", "c", "alpha", "beta", "gamma"), template):
        if slot in cell_in:
            value = cell_in[slot]
        elif isinstance(default, str):
            if default not in cell_in:
                raise ConfigError(f"{path}: cell.{default} is required for a {system} cell")
            value = cell_in[default]
        else:
            value = default
        cell.append(_positive_cell_value(path, slot, value))
    return cell


def _positive_cell_value(path: Path, slot: str, value) -> float:
    """``value`` as a float, checked to be a positive number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: cell.{slot} must be a number, got {value!r}") from None
    if not value > 0:
        raise ConfigError(f"{path}: cell.{slot} must be positive, got {value}")
    return value


def _yaml_site(path: Path, i: int, atom):
    """gemmi site of the YAML entry ``atoms[i]``."""
    import gemmi

    if not isinstance(atom, dict) or "element" not in atom or "xyz" not in atom:
        raise ConfigError(f"{path}: atoms[{i}] needs 'element' and 'xyz'")
    site = gemmi.SmallStructure.Site()
    site.label = str(atom.get("label", f"{atom['element']}{i + 1}"))
    site.type_symbol = str(atom["element"])
    site.element = gemmi.Element(str(atom["element"]))
    if site.element == gemmi.Element("X"):
        raise ConfigError(f"{path}: atoms[{i}] has unknown element {atom['element']!r}")
    xyz = atom["xyz"]
    if not (isinstance(xyz, (list, tuple)) and len(xyz) == 3):
        raise ConfigError(f"{path}: atoms[{i}].xyz must be 3 fractional coordinates")
    site.fract = gemmi.Fractional(*[float(_fraction(v)) for v in xyz])
    site.occ = float(atom.get("occ", 1.0))
    site.u_iso = float(atom.get("b_iso", _B_DEFAULT)) / (8 * math.pi ** 2)
    return site


def _fraction(value) -> float:
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/")
        return float(num) / float(den)
    return float(value)


def load_phase(path: str | Path) -> Phase:
    """Read a phase from a CIF (``.cif``) or a YAML definition (``.yaml``/``.yml``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    phase : Phase

    Raises
    ------
    InputFileError, ConfigError
        See :func:`load_cif` and :func:`load_phase_yaml`.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_phase_yaml(path)
    return load_cif(path)


def metric_inverse(cell) -> np.ndarray:
    """Reciprocal metric tensor G* (1/Å^2) of a cell, so that 1/d^2 = h G* h^T.

    Parameters
    ----------
    cell : (a, b, c, alpha, beta, gamma), Å and deg

    Returns
    -------
    gstar : (3, 3) ndarray
    """
    a, b, c, al, be, ga = cell
    ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
    g = np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]])
    return np.linalg.inv(g)
