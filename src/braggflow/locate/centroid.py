"""Background-subtracted centre of mass of peak patches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from braggflow.errors import BraggflowError
from braggflow.locate.patches import patch_background, select_central_component
from braggflow.windows import check_patch_stack, grow8

__all__ = ["LocateResult", "centroid_patches", "as_patch_arrays"]


@dataclass
class LocateResult:
    """Sub-pixel centres of N patches, in PATCH coordinates.

    Patch pixel [i, j] has its centre at (row, col) = (i, j); the centre pixel of
    an (s, s) patch is (s // 2, s // 2).

    Attributes
    ----------
    row, col : (N,) ndarray of float64
        Peak centre, px (NaN where the method failed).
    row_err, col_err : (N,) ndarray of float64
        1-sigma uncertainties, px.
    rc_cov : (N,) ndarray of float64
        Row-col covariance of the centre, px^2.
    sigma_row, sigma_col : (N,) ndarray of float64
        Peak widths (Gaussian sigma or equivalent), px.
    failed : (N,) ndarray of bool
        True where the method failed (positions NaN).
    intensity : (N,) ndarray of float64
        Integrated intensity above background, counts (NaN where unknown).
    background : (N,) ndarray of float64
        Background level, counts/px.
    """

    row: np.ndarray
    col: np.ndarray
    row_err: np.ndarray
    col_err: np.ndarray
    rc_cov: np.ndarray
    sigma_row: np.ndarray
    sigma_col: np.ndarray
    failed: np.ndarray
    intensity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    background: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls, n: int) -> LocateResult:
        """A result of ``n`` failed (all-NaN) entries."""
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        return cls(nan(), nan(), nan(), nan(), np.zeros(n), nan(), nan(), np.ones(n, dtype=bool), nan(), nan())


def as_patch_arrays(data, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate patches: (N, s, s) float64 data and bool mask (non-finite pixels masked).

    See :func:`braggflow.windows.check_patch_stack`.
    """
    return check_patch_stack(data, mask, dtype=float)


def peak_region(data: np.ndarray, mask: np.ndarray, background: np.ndarray, *, gain: float = 1.0,
                nsigma: float = 2.0) -> np.ndarray:
    """The central peak's pixels: the central component above ``background + nsigma``
    Poisson sigma, grown by one pixel (8-neighbours), usable pixels only.

    Patches where no pixel passes get all their usable pixels.
    """
    noise = np.sqrt(gain * np.maximum(background, gain))
    sig = (data - background[:, None, None] > nsigma * noise[:, None, None]) & ~mask
    keep, _, keep_label = select_central_component(sig)
    region = grow8(keep) & ~mask
    none = keep_label == 0
    region[none] = ~mask[none]
    return region


def _mirror_sources(w0: np.ndarray, flat_mask: np.ndarray, rr: np.ndarray, cc: np.ndarray, s: int):
    """Symmetric completion of patches with masked pixels (see :func:`centroid_patches`).

    Four times: a masked pixel takes the weight of its mirror pixel through
    the current centre when that one is usable.  ``w0`` and ``flat_mask`` are
    (M, s * s), ``rr``, ``cc`` the (s * s,) pixel coordinates.  Returns the
    weights, their total (NaN where not positive), the centre, and the pixel
    each weight is read from after the last centre.
    """
    m, size = w0.shape
    base = (np.arange(m) * size)[:, None]
    axis = np.arange(s, dtype=float)
    pixel = np.arange(size)
    w = w0.copy()
    total, row, col = np.empty(m), np.empty(m), np.empty(m)
    source = np.broadcast_to(pixel, (m, size)).copy()
    # a patch whose sources stay the same is done: the next step would give it the same weights and centre
    active = np.arange(m)
    for step in range(5):
        wa = w0[active] if step == 0 else w0.reshape(-1)[base[active] + source[active]]
        ta = wa.sum(axis=1)
        ta = np.where(~(ta > 0), np.nan, ta)
        ra = (wa * rr).sum(axis=1) / ta
        ca = (wa * cc).sum(axis=1) / ta
        w[active], total[active], row[active], col[active] = wa, ta, ra, ca
        # the mirror of pixel (i, j) through the centre is (2 row - i, 2 col - j), rounded; separable in i and j
        mr = np.rint(2 * np.nan_to_num(ra, nan=s // 2)[:, None] - axis).astype(np.int64)
        mc = np.rint(2 * np.nan_to_num(ca, nan=s // 2)[:, None] - axis).astype(np.int64)
        k = len(active)
        inside = (((mr >= 0) & (mr < s))[:, :, None] & ((mc >= 0) & (mc < s))[:, None, :]).reshape(k, size)
        mirror = np.where(inside, (mr[:, :, None] * s + mc[:, None, :]).reshape(k, size), 0)
        fm = flat_mask[active]
        usable = inside & ~fm.reshape(-1)[base[:k] + mirror]
        new = np.where(fm & usable, mirror, pixel)
        changed = (new != source[active]).any(axis=1)
        source[active] = new
        active = active[changed]
        if not active.size:
            break
    return w, total, row, col, source


def _moments(w, var0, dr, dc, lever_r, lever_c, total) -> tuple[np.ndarray, ...]:
    """Row and col variances, covariance of the centre and second moments, per patch (rows of (N, s * s) arrays)."""
    return ((var0 * lever_r**2).sum(axis=1) / total**2, (var0 * lever_c**2).sum(axis=1) / total**2,
            (var0 * lever_r * lever_c).sum(axis=1) / total**2, (w * dr * dr).sum(axis=1) / total,
            (w * dc * dc).sum(axis=1) / total)


#: Threshold of the central peak region, Poisson sigma of the background.
_NSIGMA = 2.0
#: Whether :func:`centroid_patches` runs the compiled kernel (:mod:`braggflow.locate._kernels`); the array
#: path (the reference of the tests) otherwise.
_COMPILED = True


def _weights(data: np.ndarray, region: np.ndarray, background: np.ndarray, gain: float) -> tuple[np.ndarray, ...]:
    """Centroid weights ``max(data - background, 0)`` and pixel variances ``gain * max(data, 0)`` over
    ``region`` (0 elsewhere), as (N, s * s) arrays."""
    n = len(data)
    w = np.where(region, np.maximum(data - background[:, None, None], 0.0), 0.0).reshape(n, -1)
    # the region holds usable (finite) pixels only: the others are 0 by the where
    var0 = np.where(region, gain * np.maximum(data, 0.0), 0.0).reshape(n, -1)
    return w, var0


def centroid_patches(data, mask=None, *, gain: float = 1.0, background=None) -> LocateResult:
    """Background-subtracted centre of mass of each patch.

    The background is the median of the usable border pixels
    (:func:`~braggflow.locate.patches.patch_background`).  The centroid is taken
    over the central peak region (pixels above background + 2 Poisson sigma,
    connected to the centre, grown by one pixel) with weights
    ``max(data - background, 0)``.  Masked pixels (detector edges, gaps, removed
    neighbours) would pull the centroid away from them; they take the weight of
    their mirror pixel through the current centre when that one is usable
    (symmetric completion, iterated four times).  Errors propagate Poisson noise
    through the detector gain (variance of a pixel = ``gain * data``; a pixel
    copied into masked ones counts with its summed lever arm), ignoring the
    uncertainty of the background and of the region; widths are the
    background-subtracted second moments corrected for pixel integration
    (``sigma^2 = m2 - 1/12``).

    Parameters
    ----------
    data : (N, s, s) array_like
        Patches, counts.
    mask : (N, s, s) array_like of bool, optional
        True = unusable pixel.
    gain : float
        Detector gain, counts (ADU) per photon.
    background : (N,) array_like of float, optional
        Each patch's border median when already known, counts/px (the
        ``background`` of :func:`~braggflow.locate.patches.extract_patches`,
        whose masked pixels hold it): it is then not taken again.

    Returns
    -------
    result : LocateResult
        Patch coordinates; ``failed`` where no positive signal is left (row, col NaN).

    Raises
    ------
    BraggflowError
        If the patches are not an (N, s, s) stack, ``mask`` has another shape
        or ``background`` is not one value per patch.

    Notes
    -----
    A compiled loop over patches (:func:`braggflow.locate._kernels.centroid_windows`,
    the same values as the array path bit for bit) takes every patch's region,
    centre and moments; the symmetric completion (vectorised) then runs on
    the patches that have masked pixels only.  float32 patches with their
    ``background`` given are read as they are (each value taken to float64
    where it is used), not copied to float64.
    """
    # float32 patches with their background known (the locate stage's): the compiled loop reads them as they are
    # (each value taken to float64 as it is used, the same values) instead of a float64 copy
    narrow = (_COMPILED and background is not None and isinstance(data, np.ndarray) and data.dtype == np.float32
              and data.flags.c_contiguous)
    data, mask = check_patch_stack(data, mask, dtype=np.float32) if narrow else as_patch_arrays(data, mask)
    n, s = data.shape[0], data.shape[-1]
    if n == 0:
        return LocateResult.empty(0)
    if background is None:
        bg = patch_background(data, mask)
    else:
        bg = np.array(background, dtype=np.float64)  # a copy: the result holds it
        if bg.shape != (n,):
            raise BraggflowError(f"background has shape {bg.shape}, expected one value per patch ({n},)")
    flat_mask = mask.reshape(n, -1)
    rr, cc = (g.reshape(-1).astype(float) for g in np.indices((s, s)))
    if _COMPILED:
        from braggflow.integrate._kernels import pairwise_plan
        from braggflow.locate._kernels import centroid_windows

        region, total, row, col, row_var, col_var, rc_cov, m2r, m2c = centroid_windows(
            np.ascontiguousarray(data), np.ascontiguousarray(mask), bg, float(gain), _NSIGMA, pairwise_plan(s * s))
    else:
        region = peak_region(data, mask, bg, gain=gain, nsigma=_NSIGMA)
        w, var0 = _weights(data, region, bg, gain)
        total = w.sum(axis=1)
        total = np.where(~(total > 0), np.nan, total)
        row = (w * rr).sum(axis=1) / total
        col = (w * cc).sum(axis=1) / total
        dr = rr[None, :] - row[:, None]
        dc = cc[None, :] - col[:, None]
        row_var, col_var, rc_cov, m2r, m2c = _moments(w, var0, dr, dc, dr, dc, total)
    masked = np.flatnonzero(flat_mask.any(axis=1))
    if masked.size:  # symmetric completion: centres and moments of the patches with masked pixels again
        w, var0 = _weights(data[masked].astype(np.float64, copy=False), region[masked], bg[masked], gain)
        if _COMPILED:
            from braggflow.integrate._kernels import pairwise_plan
            from braggflow.locate._kernels import mirror_sources

            wm, total[masked], row[masked], col[masked], source = mirror_sources(
                w, np.ascontiguousarray(flat_mask[masked]), s, pairwise_plan(s * s))
        else:
            wm, total[masked], row[masked], col[masked], source = _mirror_sources(w, flat_mask[masked], rr, cc, s)
        drm = rr[None, :] - row[masked][:, None]
        dcm = cc[None, :] - col[masked][:, None]
        # a pixel's lever arm is its distance from the centre, plus those of the masked pixels that copy it
        into = (np.arange(masked.size)[:, None] * (s * s) + source).reshape(-1)
        lever_r = np.bincount(into, weights=drm.reshape(-1), minlength=into.size).reshape(-1, s * s)
        lever_c = np.bincount(into, weights=dcm.reshape(-1), minlength=into.size).reshape(-1, s * s)
        moments = _moments(wm, var0, drm, dcm, lever_r, lever_c, total[masked])
        for full, part in zip((row_var, col_var, rc_cov, m2r, m2c), moments):
            full[masked] = part
    failed = np.isnan(total)
    floor = 1e-3
    return LocateResult(
        row=row,
        col=col,
        row_err=np.sqrt(row_var),
        col_err=np.sqrt(col_var),
        rc_cov=np.where(failed, np.nan, rc_cov),
        sigma_row=np.sqrt(np.maximum(m2r - 1.0 / 12.0, floor)),
        sigma_col=np.sqrt(np.maximum(m2c - 1.0 / 12.0, floor)),
        failed=failed,
        intensity=np.where(failed, np.nan, total),
        background=bg,
    )
