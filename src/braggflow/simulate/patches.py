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

    def __getitem__(self, index) -> "PatchSet":
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
        raise BraggflowError(f"{name} must be a (low, high) range with 0 {'<' if positive else '<='} low <= high, got {value!r}")
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
    if kind != "mixed" and kind not in KINDS:
        raise BraggflowError(f"kind must be one of {', '.join(map(repr, KINDS + ('mixed',)))}, got {kind!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise BraggflowError(f"n (number of patches) must be a non-negative integer, got {n!r}")
    if not gain > 0 or read_noise < 0:
        raise BraggflowError(f"gain must be > 0 and read_noise >= 0, got gain={gain!r}, read_noise={read_noise!r}")
    intensity = _range("intensity", intensity, positive=True)
    background = _range("background", background, positive=True)
    sigma = _range("sigma", sigma, positive=True)
    eta = _range("eta", eta)
    if eta[1] > 1:
        raise BraggflowError(f"eta must lie in [0, 1], got {eta!r}")
    axis_ratio = _range("axis_ratio", axis_ratio, positive=True)
    broad_sigma = _range("broad_sigma", broad_sigma, positive=True)
    neighbour_distance = _range("neighbour_distance", neighbour_distance)
    neighbour_ratio = _range("neighbour_ratio", neighbour_ratio, positive=True)
    mask_fraction = _range("mask_fraction", mask_fraction)
    edge_lo, edge_hi = (min(2, size // 2), size // 2) if edge_distance is None else _range("edge_distance", edge_distance)
    if not 1 <= edge_lo <= edge_hi <= size // 2:
        raise BraggflowError(f"edge_distance must be a (low, high) range with 1 <= low <= high <= {size // 2} "
                             f"(half the patch side), got {edge_distance!r}")

    rng = np.random.default_rng(seed)
    h = size // 2
    kinds = np.array(KINDS)[rng.integers(0, len(KINDS), n)] if kind == "mixed" else np.full(n, kind)
    inten = _loguniform(rng, intensity, n)
    bg = _loguniform(rng, background, n)
    sr = rng.uniform(*sigma, n)
    sc = sr.copy()
    broad = kinds == "broad"
    sr[broad] = sc[broad] = rng.uniform(*broad_sigma, broad.sum())
    ang = np.zeros(n)
    elong = kinds == "elongated"
    ratio = rng.uniform(max(axis_ratio[0], 1.0), max(axis_ratio[1], 1.0), n)
    sc[elong] = np.maximum(sr[elong] / ratio[elong], min(sigma[0], 0.5))
    ang[elong] = rng.uniform(0.0, np.pi, elong.sum())
    et = np.where(rng.uniform(size=n) < pvoigt_fraction, rng.uniform(*eta, n), 0.0)
    wide = (kinds == "edge") | (kinds == "neighbour")
    half = np.where(wide, 1.0, 0.5)
    row = h + rng.uniform(-1, 1, n) * half
    col = h + rng.uniform(-1, 1, n) * half
    # draw every kind's extras for all patches so each patch depends only on (seed, index order)
    nb_dist = rng.uniform(*neighbour_distance, n)
    nb_phi = rng.uniform(0, 2 * np.pi, n)
    nb_ratio = _loguniform(rng, neighbour_ratio, n)
    nb_sigma = rng.uniform(*sigma, n)
    nb_eta = np.where(rng.uniform(size=n) < pvoigt_fraction, rng.uniform(*eta, n), 0.0)
    edge_side = rng.integers(0, 4, n)
    edge_pos = rng.integers(int(edge_lo), int(edge_hi) + 1, n)
    mfrac = rng.uniform(*mask_fraction, n)
    mrand = rng.uniform(size=(n, size, size))
    slope_mag = rng.uniform(0, slope, n)
    slope_phi = rng.uniform(0, 2 * np.pi, n)

    # the neighbour kind: the truth is the peak nearest the centre pixel
    nb = kinds == "neighbour"
    nrow = row + nb_dist * np.cos(nb_phi)
    ncol = col + nb_dist * np.sin(nb_phi)
    swap = nb & ((nrow - h) ** 2 + (ncol - h) ** 2 < (row - h) ** 2 + (col - h) ** 2)
    ninten = inten * nb_ratio
    for a, b in ((row, nrow), (col, ncol), (inten, ninten), (sr, nb_sigma), (et, nb_eta)):
        a_sw = a[swap].copy()
        a[swap] = b[swap]
        b[swap] = a_sw
    sc[nb] = sr[nb]
    nb_sc = nb_sigma  # neighbours are round

    prof, dpos = profile_and_centre_derivatives(size, row, col, sr, sc, ang, et)
    rr, cc = np.indices((size, size), dtype=float)
    plane = 1.0 + slope_mag[:, None, None] * (np.cos(slope_phi)[:, None, None] * (rr - h) + np.sin(slope_phi)[:, None, None] * (cc - h))
    mu = inten[:, None, None] * prof + bg[:, None, None] * np.maximum(plane, 0.0)
    if nb.any():
        mu[nb] += ninten[nb, None, None] * render_profile(size, nrow[nb], ncol[nb], nb_sigma[nb], nb_sc[nb], 0.0, nb_eta[nb])
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

    mask = np.zeros((n, size, size), dtype=bool)
    edge = kinds == "edge"
    if edge.any():
        beyond_hi_r = rr[None] >= h + edge_pos[:, None, None]
        beyond_lo_r = rr[None] <= h - edge_pos[:, None, None]
        beyond_hi_c = cc[None] >= h + edge_pos[:, None, None]
        beyond_lo_c = cc[None] <= h - edge_pos[:, None, None]
        side = edge_side[:, None, None]
        cut = np.select([side == 0, side == 1, side == 2], [beyond_lo_r, beyond_hi_r, beyond_lo_c], beyond_hi_c)
        mask |= cut & edge[:, None, None]
    masked = kinds == "masked"
    if masked.any():
        mask |= (mrand < mfrac[:, None, None]) & masked[:, None, None]
    data = counts.astype(np.float32)
    if mask.any():
        local = patch_background(data, mask).astype(np.float32)
        data = np.where(mask, local[:, None, None], data)

    cr, cc_ = crlb_from_profile(prof, dpos, intensity=inten, background=bg, gain=gain, read_noise=read_noise, mask=mask)
    snr = (inten / gain) / np.sqrt(inten / gain + 4 * np.pi * sr * sc * bg / gain)
    params = pd.DataFrame(
        {
            "intensity": inten,
            "background": bg,
            "sigma_row": sr,
            "sigma_col": sc,
            "angle": ang,
            "eta": et,
            "kind": pd.Categorical(kinds, categories=list(KINDS)),
            "snr": snr,
            "crlb_row": cr,
            "crlb_col": cc_,
            "saturated": saturated,
            # the other peak of the neighbour kind (NaN for the other kinds)
            "neighbour_row": np.where(nb, nrow, np.nan),
            "neighbour_col": np.where(nb, ncol, np.nan),
            "neighbour_intensity": np.where(nb, ninten, np.nan),
            "neighbour_sigma": np.where(nb, nb_sigma, np.nan),
        }
    )
    return PatchSet(data=data, mask=mask, row=row, col=col, params=params)
