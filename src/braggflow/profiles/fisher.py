"""Fisher information of a pixel-integrated peak's centre: the shared core of the Cramér-Rao bound.

Used by :func:`braggflow.locate.crlb` and by the patch simulator, which stores
each simulated peak's bound.

References
----------
Mortensen, Churchman, Spudich & Flyvbjerg, Nat. Methods 7, 377 (2010).
"""

from __future__ import annotations

import numpy as np

from braggflow.profiles.axis import axis_profile, broadcast_peaks, split_rotated, supersampled_profile

__all__ = ["crlb_from_profile", "profile_and_centre_derivatives"]


def profile_and_centre_derivatives(size: int, row, col, sigma_row, sigma_col, angle, eta):
    """Unit-integral pixel profiles (N, s, s) and their derivatives with respect to
    the centre row and col (2, N, s, s): closed form for axis-aligned peaks,
    supersampled analytic derivatives for rotated ones."""
    row, col, sr, sc, ang, et = broadcast_peaks(row, col, sigma_row, sigma_col, angle, eta)
    n = row.size
    prof = np.empty((n, size, size))
    deriv = np.empty((2, n, size, size))
    rot, sr_a, sc_a = split_rotated(ang, sr, sc)
    ax = ~rot
    if ax.any():
        p, d = axis_profile(size, row[ax], col[ax], sr_a[ax], sc_a[ax], et[ax], jac=True)
        prof[ax] = p
        deriv[:, ax] = d[:2]
    if rot.any():
        p, d = supersampled_profile(size, row[rot], col[rot], sr[rot], sc[rot], ang[rot], et[rot], jac=True)
        prof[rot] = p
        deriv[:, rot] = d
    return prof, deriv


def _scaled_inverse(fisher: np.ndarray) -> np.ndarray:
    """Inverse of stacked (N, P, P) information matrices, Jacobi-scaled for conditioning
    (a background of 0 makes the background's information huge); singular -> NaN."""
    d = np.sqrt(np.abs(np.einsum("nii->ni", fisher)))
    d = np.where(d > 0, d, 1.0)
    scaled = fisher / (d[:, :, None] * d[:, None, :])
    cov = np.full_like(fisher, np.nan)
    ok = np.linalg.cond(scaled) < 1e12
    if ok.any():
        cov[ok] = np.linalg.inv(scaled[ok]) / (d[ok][:, :, None] * d[ok][:, None, :])
    return cov


def crlb_from_profile(prof, dpos, *, intensity, background, gain=1.0, read_noise=0.0, mask=None):
    """:func:`crlb` from precomputed profiles (N, s, s) and centre derivatives (2, N, s, s)."""
    n = len(prof)
    i3 = np.broadcast_to(np.asarray(intensity, dtype=float), (n,))[:, None, None] / gain
    bg = np.broadcast_to(np.asarray(background, dtype=float), (n,))
    mu = i3 * prof + bg[:, None, None] / gain
    var = np.maximum(mu + (read_noise / gain) ** 2, 1e-12)
    grads = np.stack([i3 * dpos[0], i3 * dpos[1], prof / gain, np.ones_like(prof) / gain])  # d mu / d theta, photons
    weight = 1.0 / var
    if mask is not None:
        weight = weight * ~np.broadcast_to(np.asarray(mask, dtype=bool), weight.shape)
    fisher = np.einsum("inrc,jnrc,nrc->nij", grads, grads, weight)
    cov = _scaled_inverse(fisher)
    out_r = np.sqrt(np.maximum(cov[:, 0, 0], 0.0)).reshape(n)
    out_c = np.sqrt(np.maximum(cov[:, 1, 1], 0.0)).reshape(n)
    return out_r, out_c
