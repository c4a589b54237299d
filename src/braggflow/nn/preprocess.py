"""Patch normalisation for the networks (NumPy only, vectorised over patches).

Two input kinds:

``minmax``
    The published BraggNN recipe: each patch rescaled to [0, 1] by its own
    minimum and maximum.  Masked (or non-finite) pixels are first replaced by
    the patch's background level, so they neither become the minimum nor the
    maximum.
``robust``
    braggflow's ``locnet`` input: the background (median of the unmasked
    border pixels) is subtracted, the result divided by the peak amplitude
    (largest background-subtracted value in the central 3 x 3 pixels) and
    clipped; masked pixels are 0 in this plane and 1 in a second (mask)
    plane; two scalars carry the photon level (log10 of the amplitude and of
    the background, in photons), which the network needs to predict its
    own uncertainty.
"""

from __future__ import annotations

import numpy as np

from braggflow.windows import check_patch_stack, patch_background

__all__ = [
    "check_patches",
    "minmax_normalise",
    "robust_features",
    "patch_snr_width",
    "N_SCALARS",
]

N_SCALARS = 2
_CLIP = (-3.0, 3.0)


def check_patches(data, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate patches and combine the mask with non-finite pixels.

    Parameters
    ----------
    data : (N, s, s) array_like of float
        Patches (counts).  ``s`` odd.  A single (s, s) patch is a stack of one.
    mask : (N, s, s) array_like of bool, optional
        True marks an unusable pixel.

    Returns
    -------
    data : (N, s, s) ndarray of float32
        Non-finite pixels set to 0.
    mask : (N, s, s) ndarray of bool
        The given mask OR the non-finite pixels.

    Raises
    ------
    BraggflowError
        If ``data`` is not (N, s, s) with odd s >= 3, or ``mask`` has another
        shape.
    """
    data, mask = check_patch_stack(data, mask, dtype=np.float32, odd=True)
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, np.float32(0), data)
    return data, mask


def minmax_normalise(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The published BraggNN input: each patch min-max scaled to [0, 1].

    Parameters
    ----------
    data : (N, s, s) ndarray of float
    mask : (N, s, s) ndarray of bool

    Returns
    -------
    x : (N, 1, s, s) ndarray of float32
        Constant patches give all zeros.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022).
    """
    n, s, _ = data.shape
    if mask.any():
        bg = patch_background(data, mask).astype(np.float32)
        data = np.where(mask, bg[:, None, None], data)
    lo = data.min(axis=(1, 2), keepdims=True)
    hi = data.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    x = (data - lo) / np.where(span > 0, span, 1.0)
    return x.astype(np.float32, copy=False).reshape(n, 1, s, s)


def robust_features(data: np.ndarray, mask: np.ndarray, *, gain: float = 1.0) -> np.ndarray:
    """The ``locnet`` input features.

    Parameters
    ----------
    data : (N, s, s) ndarray of float
        Patches in detector counts (ADU).
    mask : (N, s, s) ndarray of bool
        True = unusable pixel.
    gain : float
        ADU per photon; counts are divided by it so the scalars are photons.

    Returns
    -------
    features : (N, 2 s^2 + N_SCALARS) ndarray of float32
        The normalised plane ``clip((data - background) / amplitude, -3, 3)``
        (masked pixels 0), the mask plane (1.0 = masked), then
        ``(log10(amplitude) - 2) / 2`` and ``log10(background + 1) - 1``
        (photons).
    """
    n, s, _ = data.shape
    ss = s * s
    bg = patch_background(data, mask).astype(np.float32)
    x = data - bg[:, None, None]
    has_mask = bool(mask.any())
    if has_mask:
        np.copyto(x, 0.0, where=mask)
    c = s // 2
    amp = np.maximum.reduce([x[:, c + i, c + j] for i in (-1, 0, 1) for j in (-1, 0, 1)])
    amp = np.maximum(amp, np.float32(gain))  # at least one photon
    x *= (np.float32(1.0) / amp)[:, None, None]
    np.clip(x, _CLIP[0], _CLIP[1], out=x)
    out = np.empty((n, 2 * ss + N_SCALARS), np.float32)
    out[:, :ss] = x.reshape(n, ss)
    if has_mask:
        out[:, ss : 2 * ss] = mask.reshape(n, ss)
    else:
        out[:, ss : 2 * ss] = 0.0
    out[:, -2] = (np.log10(amp / np.float32(gain)) - 2.0) / 2.0
    out[:, -1] = np.log10(np.maximum(bg / np.float32(gain), 0.0) + 1.0) - 1.0
    return out


def patch_snr_width(data: np.ndarray, mask: np.ndarray, *, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Quick per-patch SNR and width estimates (for error calibration).

    Parameters
    ----------
    data : (N, s, s) ndarray of float
        Patches, ADU.
    mask : (N, s, s) ndarray of bool
    gain : float
        ADU per photon.

    Returns
    -------
    snr : (N,) ndarray of float64
        Background-subtracted sum of the unmasked pixels within radius
        ``s/2`` of the centre over its Poisson error ``sqrt(sum(counts))``
        (photons); >= 0.
    width : (N,) ndarray of float64
        RMS radius of the positive background-subtracted signal per axis,
        ``sqrt((var_row + var_col) / 2)``, px.
    """
    n, s, _ = data.shape
    counts = data.astype(np.float64) / gain
    bg = patch_background(counts, mask)
    r = np.arange(s) - s // 2
    rr, cc = np.meshgrid(r, r, indexing="ij")
    inside = (rr**2 + cc**2 <= (s / 2) ** 2)[None] & ~mask
    net = np.where(inside, counts - bg[:, None, None], 0.0)
    total = np.where(inside, np.maximum(counts, 0.0), 0.0).sum(axis=(1, 2))
    signal = net.sum(axis=(1, 2))
    snr = np.maximum(signal, 0.0) / np.sqrt(np.maximum(total, 1.0))
    w = np.maximum(net, 0.0)
    wsum = np.maximum(w.sum(axis=(1, 2)), 1e-12)
    mr = (w * rr).sum(axis=(1, 2)) / wsum
    mc = (w * cc).sum(axis=(1, 2)) / wsum
    vr = (w * rr**2).sum(axis=(1, 2)) / wsum - mr**2
    vc = (w * cc**2).sum(axis=(1, 2)) / wsum - mc**2
    width = np.sqrt(np.maximum((vr + vc) / 2.0, 0.0))
    return snr, width
