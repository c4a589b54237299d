"""Simulated peak patches with ground truth, for testing localizers and training BraggNN.

Each patch holds one peak (plus, for some kinds, a neighbour, an edge or masked
pixels) rendered with the profile of
:func:`braggflow.profiles.render.peak_profile` (closed-form pixel integrals for
axis-aligned peaks, sub-pixel supersampling for rotated ones, vectorised over
patches), on a flat or sloped background, with Poisson noise through the gain
and optional Gaussian read noise.  Masked pixels are replaced by the patch's
local background estimate exactly as :func:`braggflow.locate.extract_patches`
does, so simulated patches look like extracted ones.

Units: intensity and background in counts (ADU); photons = counts / gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError
from braggflow.profiles.axis import render_profile
from braggflow.profiles.fisher import crlb_from_profile, profile_and_centre_derivatives
from braggflow.windows import check_patch_size, patch_background

__all__ = ["KINDS", "PatchSet", "simulate_patches"]

KINDS = ("isotropic", "elongated", "broad", "neighbour", "edge", "masked")
"""Patch kinds; ``"mixed"`` draws each patch's kind uniformly from these."""


@dataclass
class PatchSet:
    """Simulated patches and their ground truth.

    Attributes
    ----------
    data : (N, s, s) ndarray of float32
        Pixel values, counts; masked pixels hold the local background estimate.
    mask : (N, s, s) ndarray of bool
        True = unusable pixel (beyond a detector edge, or masked).
    row, col : (N,) ndarray of float64
        True centre of the (central) peak in patch coordinates, px (the centre
        pixel is (s // 2, s // 2)).
    params : pandas.DataFrame
        One row per patch: intensity (counts), background (counts/px at the
        centre), sigma_row, sigma_col (px, along the peak's own axes), angle
        (rad), eta, kind (category), snr (intensity / sqrt(intensity + 4 pi
        sigma_row sigma_col background), photons), crlb_row, crlb_col (px, for
        the isolated peak with the patch's mask, flat background), saturated
        (bool), neighbour_row, neighbour_col (px, patch coordinates),
        neighbour_intensity (counts), neighbour_sigma (px, round) of the
        second peak of the neighbour kind (NaN for the other kinds).
    """

    data: np.ndarray
    mask: np.ndarray
    row: np.ndarray
    col: np.ndarray
    params: pd.DataFrame

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> PatchSet:
        """A subset of the patches (slice, integer array or boolean array)."""
        index = np.arange(len(self))[index]
        return PatchSet(self.data[index], self.mask[index], self.row[index], self.col[index],
                        self.params.iloc[index].reset_index(drop=True))


def _range(name: str, value, *, positive: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(value), float(value)) if np.ndim(value) == 0 else (float(value[0]), float(value[1]))
    except (TypeError, ValueError, IndexError):
        raise BraggflowError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if not lo <= hi or (positive and lo <= 0) or lo < 0:
        raise BraggflowError(
            f"{name} must be a (low, high) range with 0 {'<' if positive else '<='} low <= high, got {value!r}"
        )
    return lo, hi


def _loguniform(rng, lohi, n):
    lo, hi = lohi
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def simulate_patches(
    n: int,
    *,
    size: int = 11,
    kind: str = "isotropic",
    seed: int = 0,
    intensity=(500.0, 50000.0),
    background=(1.0, 200.0),
    sigma=(0.5, 3.0),
    eta=(0.0, 1.0),
    gain: float = 1.0,
    read_noise: float = 0.0,
    pvoigt_fraction: float = 0.5,
    axis_ratio=(1.0, 4.0),
    broad_sigma=(2.0, 4.0),
    neighbour_distance=(2.0, 6.0),
    neighbour_ratio=(0.1, 1.0),
    mask_fraction=(0.02, 0.15),
    edge_distance=None,
    slope: float = 0.0,
    saturation: float | None = None,
    noise: bool = True,
) -> PatchSet:
    """Simulate ``n`` patches of one peak each, with ground truth.

    Parameters
    ----------
    n : int
        Number of patches.
    size : int
        Patch side s, odd, px.
    kind : str
        ``"isotropic"`` (round Gaussian and pseudo-Voigt peaks), ``"elongated"``
        (rotated, axis ratio up to ``axis_ratio[1]``), ``"broad"`` (sigma in
        ``broad_sigma``), ``"neighbour"`` (a second peak ``neighbour_distance``
        px away; the truth is the peak nearest the centre pixel), ``"edge"``
        (a detector edge 2 .. s//2 px from the centre pixel; pixels beyond it
        masked), ``"masked"`` (a random ``mask_fraction`` of pixels masked) or
        ``"mixed"`` (each patch's kind drawn uniformly from these six).
    seed : int
        Seed of the random generator; the same arguments and seed give the
        same patches.
    intensity : (low, high)
        Integrated intensity range, counts; drawn log-uniformly.
    background : (low, high)
        Background range, counts/px; drawn log-uniformly.
    sigma : (low, high)
        Gaussian sigma range, px (uniform).
    eta : (low, high)
        Lorentzian fraction range of the pseudo-Voigt peaks.
    gain : float
        Counts (ADU) per photon; the noise is Poisson in photons.
    read_noise : float
        Gaussian read noise, counts rms.
    pvoigt_fraction : float
        Fraction of peaks that are pseudo-Voigt (the others are Gaussian).
    axis_ratio, broad_sigma, neighbour_distance, neighbour_ratio, mask_fraction : (low, high)
        Ranges for the elongated, broad, neighbour (distance px, intensity ratio
        of the neighbour) and masked kinds.
    edge_distance : (low, high), optional
        Distance of the detector edge from the centre pixel for the edge kind,
        whole px (uniform; the first masked row/column is at this distance);
        default ``(2, s // 2)`` (``(1, 1)`` for s = 3), so the edge always cuts the patch.  Larger
        patches that are later cut down (training) pass the final patch's
        range.
    slope : float
        Largest background gradient, as a fraction of the background per px
        (random direction); 0 gives flat backgrounds.
    saturation : float, optional
        Counts at which pixels clip (``params.saturated`` marks the patches).
    noise : bool
        False gives the noiseless expected counts (for tests).

    Returns
    -------
    patches : PatchSet
        The true centre of the central peak is uniform within +-0.5 px of the
        centre pixel (+-1 px for the edge and neighbour kinds).

    Raises
    ------
    BraggflowError
        If ``kind`` is unknown, ``size`` is not odd, or a range is invalid.
    """
    size = check_patch_size(size)
    ranges = _validated_ranges(n, size, kind, gain, read_noise, intensity=intensity, background=background,
                               sigma=sigma, eta=eta, axis_ratio=axis_ratio, broad_sigma=broad_sigma,
                               neighbour_distance=neighbour_distance, neighbour_ratio=neighbour_ratio,
                               mask_fraction=mask_fraction, edge_distance=edge_distance)
    rng = np.random.default_rng(seed)
    p = _draw_peaks(rng, n, size, kind, ranges, pvoigt_fraction=pvoigt_fraction, slope=slope)
    _put_nearest_peak_first(p, size // 2)
    prof, dpos = profile_and_centre_derivatives(size, p["row"], p["col"], p["sr"], p["sc"], p["ang"], p["et"])
    mu = _expected_counts(size, p, prof)
    if noise:
        counts = gain * rng.poisson(mu / gain).astype(float)
        if read_noise > 0:
            counts += rng.normal(0.0, read_noise, counts.shape)
    else:
        counts = mu
    saturated = np.zeros(n, dtype=bool)
    if saturation is not None:
        saturated = (counts >= saturation).any(axis=(1, 2))
        counts = np.minimum(counts, saturation)
    mask = _patch_masks(size, p)
    data = counts.astype(np.float32)
    if mask.any():
        local = patch_background(data, mask).astype(np.float32)
        data = np.where(mask, local[:, None, None], data)
    cr, cc_ = crlb_from_profile(prof, dpos, intensity=p["inten"], background=p["bg"], gain=gain,
                                read_noise=read_noise, mask=mask)
    return PatchSet(data=data, mask=mask, row=p["row"], col=p["col"], params=_truth_table(p, gain, saturated, cr, cc_))


def _validated_ranges(n, size, kind, gain, read_noise, **ranges) -> dict[str, tuple[float, float]]:
    """Check the arguments of :func:`simulate_patches`; its ranges as (low, high) tuples (``edge_distance`` resolved).

    Raises
    ------
    BraggflowError
        Naming the first invalid argument.
    """
    if kind != "mixed" and kind not in KINDS:
        raise BraggflowError(f"kind must be one of {', '.join(map(repr, KINDS + ('mixed',)))}, got {kind!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise BraggflowError(f"n (number of patches) must be a non-negative integer, got {n!r}")
    if not gain > 0 or read_noise < 0:
        raise BraggflowError(f"gain must be > 0 and read_noise >= 0, got gain={gain!r}, read_noise={read_noise!r}")
    out = {}
    for name in ("intensity", "background", "sigma", "axis_ratio", "broad_sigma", "neighbour_ratio"):
        out[name] = _range(name, ranges[name], positive=True)
    for name in ("eta", "neighbour_distance", "mask_fraction"):
        out[name] = _range(name, ranges[name])
    if out["eta"][1] > 1:
        raise BraggflowError(f"eta must lie in [0, 1], got {ranges['eta']!r}")
    edge_distance = ranges["edge_distance"]
    edge = (min(2, size // 2), size // 2) if edge_distance is None else _range("edge_distance", edge_distance)
    if not 1 <= edge[0] <= edge[1] <= size // 2:
        raise BraggflowError(f"edge_distance must be a (low, high) range with 1 <= low <= high <= {size // 2} "
                             f"(half the patch side), got {edge_distance!r}")
    out["edge_distance"] = edge
    return out


def _draw_peaks(rng, n: int, size: int, kind: str, r: dict, *, pvoigt_fraction: float,
                slope: float) -> dict[str, np.ndarray]:
    """Every random parameter of ``n`` patches, drawn in a fixed order.

    Every kind's extras are drawn for all patches, so each patch depends only
    on (seed, index order).  Keys: ``kinds``, ``inten``, ``bg``, ``sr``, ``sc``,
    ``ang``, ``et``, ``row``, ``col`` (the central peak), ``nrow``, ``ncol``,
    ``ninten``, ``nb_sigma``, ``nb_eta`` (the neighbour kind's second peak),
    ``edge_side``, ``edge_pos``, ``mfrac``, ``mrand``, ``slope_mag``, ``slope_phi``.
    """
    h = size // 2
    kinds = np.array(KINDS)[rng.integers(0, len(KINDS), n)] if kind == "mixed" else np.full(n, kind)
    inten = _loguniform(rng, r["intensity"], n)
    bg = _loguniform(rng, r["background"], n)
    sr = rng.uniform(*r["sigma"], n)
    sc = sr.copy()
    broad = kinds == "broad"
    sr[broad] = sc[broad] = rng.uniform(*r["broad_sigma"], broad.sum())
    ang = np.zeros(n)
    elong = kinds == "elongated"
    ratio = rng.uniform(max(r["axis_ratio"][0], 1.0), max(r["axis_ratio"][1], 1.0), n)
    sc[elong] = np.maximum(sr[elong] / ratio[elong], min(r["sigma"][0], 0.5))
    ang[elong] = rng.uniform(0.0, np.pi, elong.sum())
    et = np.where(rng.uniform(size=n) < pvoigt_fraction, rng.uniform(*r["eta"], n), 0.0)
    wide = (kinds == "edge") | (kinds == "neighbour")
    half = np.where(wide, 1.0, 0.5)
    row = h + rng.uniform(-1, 1, n) * half
    col = h + rng.uniform(-1, 1, n) * half
    nb_dist = rng.uniform(*r["neighbour_distance"], n)
    nb_phi = rng.uniform(0, 2 * np.pi, n)
    nb_ratio = _loguniform(rng, r["neighbour_ratio"], n)
    nb_sigma = rng.uniform(*r["sigma"], n)
    nb_eta = np.where(rng.uniform(size=n) < pvoigt_fraction, rng.uniform(*r["eta"], n), 0.0)
    edge_lo, edge_hi = r["edge_distance"]
    return {
        "kinds": kinds, "inten": inten, "bg": bg, "sr": sr, "sc": sc, "ang": ang, "et": et, "row": row, "col": col,
        "nrow": row + nb_dist * np.cos(nb_phi), "ncol": col + nb_dist * np.sin(nb_phi), "ninten": inten * nb_ratio,
        "nb_sigma": nb_sigma, "nb_eta": nb_eta,
        "edge_side": rng.integers(0, 4, n), "edge_pos": rng.integers(int(edge_lo), int(edge_hi) + 1, n),
        "mfrac": rng.uniform(*r["mask_fraction"], n), "mrand": rng.uniform(size=(n, size, size)),
        "slope_mag": rng.uniform(0, slope, n), "slope_phi": rng.uniform(0, 2 * np.pi, n),
    }


def _put_nearest_peak_first(p: dict[str, np.ndarray], h: int) -> None:
    """The neighbour kind: the truth is the peak nearest the centre pixel (swap the two where needed; in place)."""
    nb = p["kinds"] == "neighbour"
    row, col, nrow, ncol = p["row"], p["col"], p["nrow"], p["ncol"]
    swap = nb & ((nrow - h) ** 2 + (ncol - h) ** 2 < (row - h) ** 2 + (col - h) ** 2)
    for a, b in (("row", "nrow"), ("col", "ncol"), ("inten", "ninten"), ("sr", "nb_sigma"), ("et", "nb_eta")):
        a_sw = p[a][swap].copy()
        p[a][swap] = p[b][swap]
        p[b][swap] = a_sw
    p["sc"][nb] = p["sr"][nb]


def _expected_counts(size: int, p: dict[str, np.ndarray], prof: np.ndarray) -> np.ndarray:
    """(N, s, s) expected counts: the central peak's profile ``prof``, a tilted background and the neighbour."""
    h = size // 2
    rr, cc = np.indices((size, size), dtype=float)
    tilt = np.cos(p["slope_phi"])[:, None, None] * (rr - h) + np.sin(p["slope_phi"])[:, None, None] * (cc - h)
    plane = 1.0 + p["slope_mag"][:, None, None] * tilt
    mu = p["inten"][:, None, None] * prof + p["bg"][:, None, None] * np.maximum(plane, 0.0)
    nb = p["kinds"] == "neighbour"
    if nb.any():  # neighbours are round
        mu[nb] += p["ninten"][nb, None, None] * render_profile(size, p["nrow"][nb], p["ncol"][nb], p["nb_sigma"][nb],
                                                               p["nb_sigma"][nb], 0.0, p["nb_eta"][nb])
    return mu


def _patch_masks(size: int, p: dict[str, np.ndarray]) -> np.ndarray:
    """(N, s, s) masks: a detector edge for the edge kind, random pixels for the masked kind."""
    h = size // 2
    rr, cc = np.indices((size, size), dtype=float)
    n = len(p["kinds"])
    mask = np.zeros((n, size, size), dtype=bool)
    edge = p["kinds"] == "edge"
    if edge.any():
        pos = p["edge_pos"][:, None, None]
        side = p["edge_side"][:, None, None]
        beyond = [rr[None] <= h - pos, rr[None] >= h + pos, cc[None] <= h - pos]
        cut = np.select([side == 0, side == 1, side == 2], beyond, cc[None] >= h + pos)
        mask |= cut & edge[:, None, None]
    masked = p["kinds"] == "masked"
    if masked.any():
        mask |= (p["mrand"] < p["mfrac"][:, None, None]) & masked[:, None, None]
    return mask


def _truth_table(p: dict[str, np.ndarray], gain: float, saturated: np.ndarray, crlb_row, crlb_col) -> pd.DataFrame:
    """The ground truth of each patch (``PatchSet.params``)."""
    nb = p["kinds"] == "neighbour"
    inten, bg, sr, sc = p["inten"], p["bg"], p["sr"], p["sc"]
    snr = (inten / gain) / np.sqrt(inten / gain + 4 * np.pi * sr * sc * bg / gain)
    return pd.DataFrame(
        {
            "intensity": inten,
            "background": bg,
            "sigma_row": sr,
            "sigma_col": sc,
            "angle": p["ang"],
            "eta": p["et"],
            "kind": pd.Categorical(p["kinds"], categories=list(KINDS)),
            "snr": snr,
            "crlb_row": crlb_row,
            "crlb_col": crlb_col,
            "saturated": saturated,
            # the other peak of the neighbour kind (NaN for the other kinds)
            "neighbour_row": np.where(nb, p["nrow"], np.nan),
            "neighbour_col": np.where(nb, p["ncol"], np.nan),
            "neighbour_intensity": np.where(nb, p["ninten"], np.nan),
            "neighbour_sigma": np.where(nb, p["nb_sigma"], np.nan),
        }
    )
