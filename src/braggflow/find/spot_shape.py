"""Shape test of small events: a spot blurred to at least ``min_sigma`` against a zinger, by their likelihood ratio.

The ring test of :mod:`braggflow.find.zingers` compares the counts around an
event of 1-4 pixels with the least a spot of width ``min_sigma`` puts there.
It ignores how the counts lie inside the event: three or four pixels in a
chain (an S, an L, a line with dark flanks) are what a cosmic-ray track leaves,
while a spot's brightest pixels form a compact blob that falls off from its
centre.  This test weighs both at once.  Over the event's pixels ``E`` and the
ring of unmasked pixels touching them ``R``, with ``x`` the counts above the
tile background and ``v = noise^2 + gain max(x, 0)`` their variance, two
models are fitted by least squares:

* zinger: every event pixel free (fitted exactly), the ring at background:
  ``chi2_z = sum_R x^2 / v``;
* spot: ``A g`` with ``A >= 0`` and ``g`` a pixel-integrated Gaussian of
  width at least ``min_sigma``: round of ``1, 1.4, 2 x min_sigma``, or
  elongated (``2`` and ``3.5 x min_sigma`` along one of four directions,
  ``min_sigma`` across), its centre on a grid of a quarter pixel within 1 px
  of the event's centroid (:func:`spot_templates`).

The statistic is ``D = chi2_spot - chi2_z = sum_E x^2 / v - max_g (sum x g / v)^2 /
sum g^2 / v`` (:func:`shape_statistic`): the spot model has about as many free
parameters as a 4-pixel zinger (amplitude, centre, shape), so ``D`` is near 0
or negative for a spot and large for an event no blurred spot can draw.  An
event is a zinger when ``D > SHAPE_CHI2``.  Calibrated on simulated faint
round spots (width 0.7-1.5 px, 20-1000 photons, backgrounds of 1-20
photons/px, Poisson; 4,222 tested events of at most four pixels at such spots,
``bench/artefacts.py --shape-calibration``), 0.2 % (0.5 % of those narrower
than 0.85 px) of them reach ``D > 8``; of the 500 zinger events of ``bench/artefacts.py``
(1-4 pixels at 5-100 x the noise) 9 leave a false peak with the ring test alone
and 4 with this test as well: events at 5-6 x the noise in a 2 x 2 square, a
T, an S, an L of three pixels, which within the noise are what a faint spot
of width ``min_sigma`` looks like.

The test rests on the fact astronomy's cosmic-ray filters use: a cosmic ray is
sharper than the point-spread function allows (L.A.Cosmic [1]_ finds its edges
with a Laplacian); the zinger filters of tomography and diffraction codes
compare a pixel with the median of its neighbourhood by a fixed factor.  Here
the narrowest real spot is the reference, in a likelihood ratio.

References
----------
.. [1] P. G. van Dokkum, "Cosmic-ray rejection by Laplacian edge detection",
   PASP 113, 1420 (2001).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from braggflow.find._kernels import best_spot_fits, best_spot_fits_until

__all__ = ["SHAPE_CHI2", "WINDOW", "spot_templates", "shape_statistic", "prepare_shape_test"]

#: an event is a zinger when chi2 of the best spot exceeds chi2 of the zinger by more than this (None: no shape test)
SHAPE_CHI2: float | None = 8.0
#: side of the square window around the event's centroid that holds the event and its ring, px
WINDOW = 7
_HALF = WINDOW // 2
#: spot centres tried, px from the window's centre pixel (each axis)
_CENTRES = np.arange(-1.0, 1.0 + 1e-9, 0.25)
#: round spots tried, sigma in units of min_sigma
_ROUND = (1.0, 1.4, 2.0)
#: elongated spots tried: sigma along the long axis in units of min_sigma (min_sigma across), and the axis' angles
_LONG = (2.0, 3.5)
_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)
#: sub-samples per pixel side in the pixel integration of the templates
_SUB = 7
_WIN_DR, _WIN_DC = (a.ravel() for a in np.mgrid[-_HALF : _HALF + 1, -_HALF : _HALF + 1])


@lru_cache(maxsize=8)
def spot_templates(min_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-integrated Gaussian spots of width at least ``min_sigma`` on the window, and their squares.

    Parameters
    ----------
    min_sigma : float
        Width (Gaussian sigma) of the narrowest real spot, px.

    Returns
    -------
    templates : (WINDOW**2, T) ndarray
        Column ``t``: the share of a unit spot's counts in each window pixel
        (row-major), for every shape (round, then elongated) and centre of the
        grid; the window's centre pixel is (WINDOW // 2, WINDOW // 2).
    squares : (WINDOW**2, T) ndarray
        ``templates ** 2``.
    """
    sub = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    pix = np.arange(-_HALF, _HALF + 1, dtype=np.float64)
    y = pix[:, None, None, None] + sub[None, None, :, None]  # row of each sub-sample, (W, 1, S, 1)
    x = pix[None, :, None, None] + sub[None, None, None, :]  # column, (1, W, 1, S)
    shapes = [(a * min_sigma, a * min_sigma, 0.0) for a in _ROUND]
    shapes += [(m * min_sigma, min_sigma, np.deg2rad(t)) for m in _LONG for t in _ANGLES_DEG]
    columns = []
    for s_long, s_across, angle in shapes:
        cos, sin = np.cos(angle), np.sin(angle)
        for r0 in _CENTRES:
            for c0 in _CENTRES:
                along = (x - c0) * cos + (y - r0) * sin
                across = -(x - c0) * sin + (y - r0) * cos
                g = np.exp(-0.5 * ((along / s_long) ** 2 + (across / s_across) ** 2)) / (2 * np.pi * s_long * s_across)
                columns.append(g.mean(axis=(2, 3)).ravel())
    templates = np.ascontiguousarray(np.asarray(columns).T)
    return templates, templates**2


@lru_cache(maxsize=8)
def prepare_shape_test(min_sigma: float) -> None:
    """Build the templates of ``min_sigma`` and load the compiled template search, once per process.

    The first event the ring test leaves undecided would otherwise pay for
    both (~80 ms on a 2048 x 2048 series: the templates, and the search read
    from numba's cache) in the middle of a series; the finder calls this on
    the first frame with zinger candidates instead.

    Parameters
    ----------
    min_sigma : float
        Width of the narrowest real spot, px.
    """
    templates, squares = spot_templates(float(min_sigma))
    p = templates.shape[0]
    # one event with no usable pixel: the search's types as shape_statistic calls it, nothing to search
    best_spot_fits_until(np.zeros((1, p)), np.zeros((1, p)), templates, squares, np.zeros(1), 0.0, _CENTRES.size**2)


def shape_statistic(shape: tuple[int, int], value_at, bad_at, event_of: np.ndarray, event_flat: np.ndarray,
                    level_at, noise_at, *, n_events: int, min_sigma: float, gain: float = 1.0,
                    decided_at: float | None = None) -> np.ndarray:
    """``D = chi2_spot - chi2_zinger`` of events over their pixels and ring (the module's statistic).

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the image the flat indices run over, px.
    value_at : callable(flat_indices) -> ndarray
        Corrected counts of pixels.
    bad_at : callable(flat_indices) -> ndarray of bool, or None
        True = bad pixel (left out); None: no bad pixel.
    event_of : (M,) ndarray of int
        Event (0 to ``n_events - 1``) of each event pixel.
    event_flat : (M,) ndarray of int
        Flat index of each event pixel; an event's pixels lie within 2 px of
        their centroid (at most :data:`~braggflow.find.zingers.MAX_ZINGER_PIXELS`
        connected pixels).
    level_at, noise_at : callable(rows, cols) -> ndarray
        Background level (counts/px) and noise of one background pixel (counts).
    n_events : int
        Number of events.
    min_sigma : float
        Width of the narrowest real spot, px.
    gain : float
        Counts per photon (Poisson variance of the counts above background).
    decided_at : float, optional
        Only whether ``D > decided_at`` is wanted: an event's search over the
        templates (one shape's centres at a time) stops once a template
        brings ``D`` to ``decided_at`` or below (a spot), and such an event
        gets a ``D`` between its own and ``decided_at``; the others get their
        own ``D`` (:func:`braggflow.find._kernels.best_spot_fits_until`).

    Returns
    -------
    d : (n_events,) ndarray
        Large for a zinger; near 0 or negative for a spot.
    """
    h, w = shape
    rows, cols = np.divmod(event_flat, w)
    excess = np.asarray(value_at(event_flat), dtype=np.float64) - level_at(rows, cols)
    weight = np.clip(excess, 1e-9, None)  # the window's centre: the event's centroid, weighted by its excess
    total = np.bincount(event_of, weights=weight, minlength=n_events)
    centre_r = np.rint(np.bincount(event_of, weights=weight * rows, minlength=n_events) / total).astype(np.int64)
    centre_c = np.rint(np.bincount(event_of, weights=weight * cols, minlength=n_events) / total).astype(np.int64)
    # event pixels and their ring on the window (padded by one pixel for the dilation)
    event = np.zeros((n_events, WINDOW + 2, WINDOW + 2), dtype=bool)
    er, ec = rows - centre_r[event_of] + _HALF + 1, cols - centre_c[event_of] + _HALF + 1
    fits = (er >= 1) & (er <= WINDOW) & (ec >= 1) & (ec <= WINDOW)
    event[event_of[fits], er[fits], ec[fits]] = True
    near = np.zeros((n_events, WINDOW, WINDOW), dtype=bool)
    for dr in range(3):
        for dc in range(3):
            near |= event[:, dr : dr + WINDOW, dc : dc + WINDOW]
    event = event[:, 1:-1, 1:-1].reshape(n_events, -1)
    r, c = centre_r[:, None] + _WIN_DR, centre_c[:, None] + _WIN_DC
    use = near.reshape(n_events, -1) & (r >= 0) & (r < h) & (c >= 0) & (c < w)
    r, c = r[use], c[use]
    flat = r * w + c
    if bad_at is not None:
        good = ~np.asarray(bad_at(flat), dtype=bool)
        use[use] = good
        r, c, flat = r[good], c[good], flat[good]
    x = np.zeros(use.shape)
    inv_var = np.zeros(use.shape)
    x[use] = np.asarray(value_at(flat), dtype=np.float64) - level_at(r, c)
    inv_var[use] = 1.0 / (noise_at(r, c) ** 2 + gain * np.clip(x[use], 0.0, None))
    templates, squares = spot_templates(float(min_sigma))
    event_chi2 = np.einsum("ij,ij->i", np.where(event, x * x, 0.0), inv_var)
    if decided_at is None:
        best = best_spot_fits(x * inv_var, inv_var, templates, squares)  # the event's window pixels only, A >= 0
    else:
        best = best_spot_fits_until(x * inv_var, inv_var, templates, squares, event_chi2, float(decided_at),
                                    _CENTRES.size**2)
    return event_chi2 - best
