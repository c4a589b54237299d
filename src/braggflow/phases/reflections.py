"""Reflection lists of a phase: hkl, d, q, multiplicity, |F|^2 and powder intensity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.geometry.core import HC_KEV_ANGSTROM
from braggflow.phases.structure import Phase, metric_inverse

__all__ = ["reflections", "powder_lines", "lorentz_polarization", "symmetry_equivalents"]



def lorentz_polarization(two_theta) -> np.ndarray:
    """Powder Lorentz-polarisation factor for an unpolarised beam.

    ``LP = (1 + cos^2 2theta) / (sin^2 theta cos theta)``: the intensity per
    unit length of a Debye-Scherrer ring, i.e. what an azimuthally averaged,
    solid-angle corrected profile measures.

    Parameters
    ----------
    two_theta : array_like, deg

    Returns
    -------
    lp : ndarray

    References
    ----------
    Warren, B. E., X-ray Diffraction (Dover, 1990), ch. 4.
    """
    t = np.radians(np.asarray(two_theta, dtype=np.float64))
    th = t / 2
    with np.errstate(divide="ignore"):
        return (1 + np.cos(t) ** 2) / (np.sin(th) ** 2 * np.cos(th))


def symmetry_equivalents(phase: Phase, hkl) -> np.ndarray:
    """All distinct reflections equivalent to ``hkl`` under the Laue group (with Friedel mates).

    Parameters
    ----------
    phase : Phase
    hkl : (3,) array_like of int

    Returns
    -------
    equivalents : (m, 3) ndarray of int
        m is the powder multiplicity.
    """
    rots = _laue_rotations(phase)
    h = np.asarray(hkl, dtype=np.int64)
    eq = np.einsum("i,nij->nj", h, rots)
    eq = np.concatenate([eq, -eq])
    return np.unique(eq, axis=0)


def _laue_rotations(phase: Phase) -> np.ndarray:
    ops = phase.spacegroup.operations()
    den = ops.sym_ops[0].DEN
    # reciprocal-space action: h' = h R (row vector times the real-space rotation)
    return np.array([np.array(op.rot, dtype=np.int64) // den for op in ops.sym_ops])


def reflections(
    phase: Phase,
    *,
    d_min: float | None = None,
    q_max: float | None = None,
    wavelength: float | None = None,
    anomalous: bool = True,
) -> pd.DataFrame:
    """Symmetry-unique reflections of a phase with structure factors and powder intensities.

    Systematic absences (from the space group) are left out; so are
    reflections whose |F|^2 is below 1e-6 of the strongest.

    Parameters
    ----------
    phase : Phase
    d_min : float, optional
        Smallest d-spacing, Å.
    q_max : float, optional
        Largest q, 1/Å (``d_min = 2 pi / q_max``); one of d_min / q_max is required.
    wavelength : float, optional
        Å; when given, two_theta and the Lorentz-polarised intensity are filled
        and, with ``anomalous``, the real dispersion correction f' (Cromer-Liberman)
        is included in |F|^2.  Reflections beyond 2 theta = 180 deg are dropped.
    anomalous : bool

    Returns
    -------
    refl : pandas.DataFrame
        Sorted by d (largest first): ``h, k, l`` (int), ``d`` (Å), ``q`` (1/Å),
        ``multiplicity``, ``F2`` (|F|^2, electrons^2 per cell), ``two_theta`` (deg,
        NaN without wavelength), ``intensity`` (m |F|^2 LP, or m |F|^2 without
        wavelength; scaled to 100 for the strongest).

    Raises
    ------
    ConfigError
        If neither d_min nor q_max is given, or they are not positive.
    """
    import gemmi

    if d_min is None and q_max is None:
        raise ConfigError("reflections need d_min (Å) or q_max (1/Å)")
    if d_min is None:
        if not q_max > 0:
            raise ConfigError(f"q_max must be positive, got {q_max}")
        d_min = 2 * math.pi / q_max
    elif q_max is not None:
        d_min = max(d_min, 2 * math.pi / q_max)
    if not d_min > 0:
        raise ConfigError(f"d_min must be positive, got {d_min}")
    if wavelength is not None:
        d_min = max(d_min, wavelength / 2 * (1 + 1e-9))
    st = phase.structure
    sg = phase.spacegroup
    hkl = np.asarray(gemmi.make_miller_array(st.cell, sg, d_min, 0.0, unique=True), dtype=np.int64)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    cols = ["h", "k", "l", "d", "q", "multiplicity", "F2", "two_theta", "intensity"]
    if len(hkl) == 0:
        return pd.DataFrame({c: [] for c in cols})
    ops = sg.operations()
    hkl = hkl[~np.array([ops.is_systematically_absent(list(map(int, h))) for h in hkl], dtype=bool)]
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    if wavelength is not None and anomalous:
        energy_ev = HC_KEV_ANGSTROM / wavelength * 1000
        for el in {site.element.name for site in st.sites}:
            element = gemmi.Element(el)
            fprime, _ = gemmi.cromer_liberman(z=element.atomic_number, energy=energy_ev)
            calc.addends.set(element, fprime)
    f = np.array([calc.calculate_sf_from_small_structure(st, list(map(int, h))) for h in hkl])
    f2 = np.abs(f) ** 2
    d = 1 / np.sqrt(np.einsum("ni,ij,nj->n", hkl, metric_inverse(phase.cell), hkl))
    rots = _laue_rotations(phase)
    mult = np.empty(len(hkl), dtype=np.int64)
    for i, h in enumerate(hkl):
        eq = np.einsum("i,nij->nj", h, rots)
        mult[i] = len(np.unique(np.concatenate([eq, -eq]), axis=0))
    if wavelength is not None:
        two_theta = np.degrees(2 * np.arcsin(wavelength / (2 * d)))
        intensity = mult * f2 * lorentz_polarization(two_theta)
    else:
        two_theta = np.full(len(d), np.nan)
        intensity = mult * f2
    keep = f2 > 1e-6 * f2.max()
    out = pd.DataFrame({
        "h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2], "d": d, "q": 2 * np.pi / d, "multiplicity": mult,
        "F2": f2, "two_theta": two_theta, "intensity": intensity,
    })[keep]
    out["intensity"] = 100 * out["intensity"] / out["intensity"].max()
    return out.sort_values(["d", "h", "k", "l"], ascending=[False, False, False, False]).reset_index(drop=True)


def powder_lines(refl: pd.DataFrame, *, resolution: float) -> pd.DataFrame:
    """Merge reflections closer in q than ``resolution`` into powder lines.

    Parameters
    ----------
    refl : pandas.DataFrame
        From :func:`reflections`.
    resolution : float
        1/Å; reflections within this distance of the previous one join its line.

    Returns
    -------
    lines : pandas.DataFrame
        Sorted by q: ``q`` (intensity-weighted mean, 1/Å), ``d`` (Å), ``intensity``
        (sum), ``h, k, l`` (of the strongest member), ``hkl`` (all members as
        text, strongest first), ``n_reflections``.
    """
    cols = ["q", "d", "intensity", "h", "k", "l", "hkl", "n_reflections"]
    if len(refl) == 0:
        return pd.DataFrame({c: [] for c in cols})
    r = refl.sort_values("q").reset_index(drop=True)
    q = r["q"].to_numpy()
    group = np.concatenate([[0], np.cumsum(np.diff(q) > resolution)])
    rows = []
    for g in np.unique(group):
        m = r[group == g]
        w = m["intensity"].to_numpy()
        qm = float(np.average(m["q"], weights=w)) if w.sum() > 0 else float(m["q"].mean())
        m = m.sort_values("intensity", ascending=False)
        top = m.iloc[0]
        rows.append({
            "q": qm, "d": 2 * np.pi / qm, "intensity": float(w.sum()), "h": int(top.h), "k": int(top.k),
            "l": int(top.l),
            "hkl": ";".join(f"{int(a)} {int(b)} {int(c)}" for a, b, c in m[["h", "k", "l"]].to_numpy()),
            "n_reflections": len(m),
        })
    return pd.DataFrame(rows, columns=cols)
