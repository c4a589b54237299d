"""``find.method: learned``: the learned grazing-incidence detector as the pipeline's finder.

The frame is rebinned onto the detector's polar (chi, q) grid through a lookup
built once per geometry, frame shape and static mask (:class:`PolarLookup`, kept
in the pipeline's :class:`~braggflow.pipeline.Context`); the detector
(:mod:`braggflow.nn.detector`) returns rings, arcs and spots with their
(q, chi) boxes; each becomes one row of the peak table:

- **spots** are located and integrated as the classical finder's peaks are
  (:func:`braggflow.locate.locate` with ``locate.method`` on a patch
  around the spot's centre, :func:`braggflow.integrate.integrate` within
  ``integrate.radius``, or :data:`SPOT_RADIUS` px when it is null);
- **rings and arcs** keep the detector's centre (q refined on the polar image,
  chi the middle of the box); their intensity is the frame summed over the
  pixels of the polar bins inside the box, less a background taken from two
  bands of the same chi range on either side in q (each half the box's width),
  scaled to the box's pixels; the error is Poisson
  (:func:`band_intensity`).

Columns: ``row``, ``col`` (the centre on the detector; NaN when the centre is
off it), ``two_theta``, ``eta``, ``q``, ``d`` and their errors, ``q_xy``,
``q_z``, ``q_width``, ``chi_width`` (the box), ``confidence`` (the network's
heat-map value, 0-1), ``kind`` (ring, arc, spot), ``score`` (the feature's
integrated signal-to-noise ratio), ``method`` (the detector's name).  The frame's
learned class and its probabilities go to the frames table (``frame_class``,
``p_empty``, ``p_spots``, ``p_arcs``, ``p_rings``) through ``frame_row``.

With ``frames.skip_empty`` P, a frame whose ``p_empty`` reaches P is skipped
(:func:`skips_frame`): the network runs on it (for its class), but its features
are not decoded, localized or integrated, and its peak table is empty; its
frames-table row keeps its class and probabilities, with ``n_peaks`` 0.  Data
reduction at the source for live mode (``braggflow watch --skip-empty``).
:data:`SKIP_EMPTY_DEFAULT` is the P of ``--skip-empty`` without ``--p-empty``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import ConfigError
from braggflow.schema import conform, empty_peak_table, new_peak_table

SPOT_RADIUS = 3.0
"""Integration radius of a spot, px, when ``integrate.radius`` is null (the learned finder has no regions)."""
SKIP_EMPTY_DEFAULT = 0.7
"""``frames.skip_empty`` of ``watch --skip-empty`` without ``--p-empty``: the p_empty from which a frame is skipped.

Chosen on simulated validation frames (``bench/detect.py --only skip``: seed 22, the shipped model's
validation seed) as the smallest P at which at most 1 % of the frames with a labelled feature are
skipped; docs/detector.md gives the figures."""

__all__ = ["SPOT_RADIUS", "SKIP_EMPTY_DEFAULT", "PolarLookup", "QxyQz", "LearnedFinder", "band_intensity",
           "learned_peaks", "check_learned", "skips_frame"]


@dataclass
class PolarLookup:
    """Which polar (chi, q) bin each detector pixel falls in, for one geometry, frame shape and static mask.

    The grid is :func:`braggflow.geometry.remap.remap`'s ("q", no pixel
    splitting, solid-angle corrected, as pyFAI's ``integrate2d_ng``): rows chi
    and columns q, each from the smallest to the largest value over the
    unmasked pixels.

    Attributes
    ----------
    shape : (int, int)
        Frame shape.
    index : (H * W,) ndarray of intp
        Flat bin index (chi bin * n_q + q bin) of each pixel; ``n_chi * n_q`` for masked pixels.
    solid : (H * W,) ndarray of float
        Relative solid angle of each pixel (pyFAI's ``solidAngleArray``).
    q, chi : ndarray
        Bin centres, 1/Å and deg.
    solid_sum, npix : (n_chi, n_q) ndarray
        Per bin: the sum of the solid angles and the number of pixels.
    """

    shape: tuple[int, int]
    index: np.ndarray
    solid: np.ndarray
    q: np.ndarray
    chi: np.ndarray
    solid_sum: np.ndarray
    npix: np.ndarray

    @classmethod
    def build(cls, geometry, shape: tuple[int, int], mask: np.ndarray | None = None,
              npt: tuple[int, int] = (256, 256)) -> PolarLookup:
        """The lookup of a geometry.

        Parameters
        ----------
        geometry : braggflow.geometry.Geometry
        shape : (int, int)
            Frame shape (rows, cols).
        mask : (H, W) ndarray of bool, optional
            True = bad pixel (left out of every bin).
        npt : (int, int)
            Bins (chi, q).

        Returns
        -------
        lookup : PolarLookup

        Raises
        ------
        ConfigError
            If no pixel is left unmasked.
        """
        ai = geometry.integrator_for(tuple(shape))
        q = np.asarray(ai.center_array(tuple(shape), unit="q_A^-1"), dtype=np.float64).ravel()
        chi = np.asarray(ai.center_array(tuple(shape), unit="chi_deg"), dtype=np.float64).ravel()
        solid = np.asarray(ai.solidAngleArray(tuple(shape)), dtype=np.float64).ravel()
        good = np.isfinite(q) & np.isfinite(chi)
        if mask is not None:
            good &= ~np.asarray(mask, dtype=bool).ravel()
        if not good.any():
            raise ConfigError("the learned finder found no unmasked pixel to remap")
        n_chi, n_q = npt
        size = n_chi * n_q
        qv, cv = q[good], chi[good]
        q_lo, q_hi = float(qv.min()), float(qv.max())
        c_lo, c_hi = float(cv.min()), float(cv.max())
        dq, dc = (q_hi - q_lo) / n_q, (c_hi - c_lo) / n_chi
        iq = np.clip(((qv - q_lo) / dq).astype(np.intp), 0, n_q - 1)
        ic = np.clip(((cv - c_lo) / dc).astype(np.intp), 0, n_chi - 1)
        index = np.full(q.size, size, dtype=np.intp)
        index[good] = ic * n_q + iq
        solid = np.where(good, solid, 0.0)
        return cls(shape=tuple(shape), index=index, solid=solid,
                   q=q_lo + dq * (np.arange(n_q) + 0.5), chi=c_lo + dc * (np.arange(n_chi) + 0.5),
                   solid_sum=np.bincount(index, solid, size + 1)[:size].reshape(n_chi, n_q),
                   npix=np.bincount(index, minlength=size + 1)[:size].reshape(n_chi, n_q))

    def rebin(self, frame: np.ndarray, bad: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A frame on the polar grid.

        Parameters
        ----------
        frame : (H, W) ndarray
            Corrected frame, counts; non-finite pixels are left out.
        bad : (H, W) ndarray of bool, optional
            More pixels to leave out (True = bad) beyond the lookup's mask.

        Returns
        -------
        image : (n_chi, n_q) ndarray
            Solid-angle corrected mean per bin (as :func:`braggflow.geometry.remap.remap`); NaN where empty.
        counts : (n_chi, n_q) ndarray
            Sum of the pixel values per bin (counts).
        npix : (n_chi, n_q) ndarray of int
            Pixels per bin.
        """
        values = np.asarray(frame).ravel()
        size = self.npix.size
        drop = ~np.isfinite(values)
        if bad is not None:
            drop |= np.asarray(bad, dtype=bool).ravel()
        out = np.flatnonzero(drop)
        solid_sum, npix = self.solid_sum, self.npix
        if len(out):  # take the dropped pixels' share out of the bins (they are few: saturated, non-finite)
            values = values.copy()
            values[out] = 0.0
            idx = self.index[out]
            solid_sum = solid_sum - np.bincount(idx, self.solid[out], size + 1)[:size].reshape(self.npix.shape)
            npix = npix - np.bincount(idx, minlength=size + 1)[:size].reshape(self.npix.shape)
            solid_sum = np.where(npix > 0, solid_sum, 0.0)
        counts = np.bincount(self.index, values, size + 1)[:size].reshape(self.npix.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            image = np.where(npix > 0, counts / solid_sum, np.nan)
        return image, counts, npix


class QxyQz:
    """q_xy and q_z of detector points, as :meth:`braggflow.geometry.Geometry.pixel_to_qxy_qz` gives them.

    The same pyFAI grazing-incidence units (``qip_A^-1``, ``qoop_A^-1``, no
    refraction correction), built once: pyFAI compiles their expressions
    whenever a unit is made (~0.1 s each), which
    :meth:`~braggflow.geometry.Geometry.pixel_to_qxy_qz` does on every call.
    The units are not pickled (a Dask worker builds its own).

    Parameters
    ----------
    geometry : braggflow.geometry.Geometry
        With an incidence angle.
    """

    NAMES = ("qip_A^-1", "qoop_A^-1")

    def __init__(self, geometry):
        self.geometry = geometry
        self._units = None

    def __getstate__(self):
        return {"geometry": self.geometry, "_units": None}

    def __call__(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """q_xy, q_z (1/Å) at detector points (px); NaN where row or col is NaN."""
        g = self.geometry
        row, col = np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)
        ok = np.isfinite(row) & np.isfinite(col)
        out = [np.full(row.shape, np.nan), np.full(row.shape, np.nan)]
        if not ok.any():
            return out[0], out[1]
        if self._units is None:
            self._units = [g._fiber_unit(name) for name in self.NAMES]
        x, y, z = g._lab(row[ok], col[ok])
        wl = float(g.poni["wavelength"])
        for k, unit in enumerate(self._units):
            out[k][ok] = unit.equation(x, y, z, wl, **unit.get_config_shared()) * unit.scale
        return out[0], out[1]


@dataclass
class LearnedFinder:
    """What ``find.method: learned`` keeps between frames: the polar lookup and the loaded detector.

    The detector (an ONNX Runtime session) is not pickled: a Dask worker loads its own.

    Attributes
    ----------
    lookup : PolarLookup
    qxy_qz : QxyQz
    plain_geometry : braggflow.geometry.Geometry
        The geometry without its incidence angle (for the spots' angle columns; q_xy and q_z come from ``qxy_qz``).
    detector : braggflow.nn.detector.GixdDetector or None
        Loaded on first use.
    """

    lookup: PolarLookup
    qxy_qz: QxyQz
    plain_geometry: Any
    detector: Any = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["detector"] = None
        return state

    def get_detector(self):
        """The shipped detector, loaded once."""
        if self.detector is None:
            from braggflow.nn.detector import load_detector

            self.detector = load_detector()
        return self.detector


def check_learned(geometry, binning: int = 1) -> None:
    """Check that ``find.method: learned`` can run.

    Parameters
    ----------
    geometry : braggflow.geometry.Geometry or None
        The run's geometry; it needs an incidence angle.
    binning : int
        ``correct.binning``; the detector works on unbinned frames.

    Raises
    ------
    ConfigError
        Without a geometry, without an incidence angle, or with binning.
    """
    if geometry is None or not getattr(geometry, "has_incidence", False):
        raise ConfigError("find.method 'learned' needs a grazing-incidence geometry: give the geometry and its "
                          "incidence angle (geometry.incidence_angle_deg, --incidence-angle DEG)")
    if binning != 1:
        raise ConfigError(f"find.method 'learned' works on unbinned frames: correct.binning must be 1, got {binning}")


def skips_frame(p_empty: float, skip_empty: float | None) -> bool:
    """Whether ``frames.skip_empty`` skips a frame of learned empty probability ``p_empty``.

    Parameters
    ----------
    p_empty : float
        The frame's ``p_empty`` (:func:`braggflow.nn.detector.frame_probabilities`); NaN without one.
    skip_empty : float or None
        ``frames.skip_empty`` (0-1); None: no frame is skipped.

    Returns
    -------
    skipped : bool
        True when ``p_empty >= skip_empty`` (never for a NaN ``p_empty``).
    """
    return skip_empty is not None and bool(np.isfinite(p_empty)) and float(p_empty) >= float(skip_empty)


def band_intensity(counts: np.ndarray, npix: np.ndarray, q: np.ndarray, chi: np.ndarray, boxes: pd.DataFrame,
                   *, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Net counts of features over their (q, chi) boxes, with a background from bands beside them.

    The signal S is the sum of the pixel values of the polar bins whose centres
    lie inside the box (``q_lo..q_hi``, ``chi_lo..chi_hi``), over N pixels; the
    background B is the sum over the bins of the same chi range in two bands of
    half the box's q width (at least one bin) just below and above it, over M
    pixels.  ``intensity = S - N B / M``; ``intensity_err = sqrt(gain (S + N^2
    B / M^2))`` (Poisson counts of ``gain`` ADU per photon, S and B taken as
    at least 0); ``background`` is B / M per pixel.

    Parameters
    ----------
    counts, npix : (n_chi, n_q) ndarray
        Sum of pixel values and pixels per polar bin (:meth:`PolarLookup.rebin`).
    q, chi : ndarray
        Bin centres (1/Å, deg).
    boxes : pandas.DataFrame
        ``q_lo``, ``q_hi``, ``chi_lo``, ``chi_hi`` per feature.
    gain : float
        ADU per photon.

    Returns
    -------
    intensity, intensity_err, background : ndarray
        Counts, counts, counts per pixel; NaN when the box or the bands hold no pixel.
    """
    n = len(boxes)
    inten, err, bg = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    dq = q[1] - q[0]
    for i, r in enumerate(boxes[["q_lo", "q_hi", "chi_lo", "chi_hi"]].itertuples(index=False)):
        rows = (chi >= r.chi_lo) & (chi <= r.chi_hi)
        band = max(0.5 * (r.q_hi - r.q_lo), dq)
        inner = (q >= r.q_lo) & (q <= r.q_hi)
        if not inner.any():
            inner = np.abs(q - 0.5 * (r.q_lo + r.q_hi)) <= 0.5 * dq
        outer = (((q >= r.q_lo - band) & (q < r.q_lo)) | ((q > r.q_hi) & (q <= r.q_hi + band))) & ~inner
        c, p = counts[rows], npix[rows]
        s, ns = c[:, inner].sum(), p[:, inner].sum()
        b, nb = c[:, outer].sum(), p[:, outer].sum()
        if ns == 0 or nb == 0:
            continue
        inten[i] = s - ns * b / nb
        err[i] = np.sqrt(gain * (max(s, 0.0) + ns**2 * max(b, 0.0) / nb**2))
        bg[i] = b / nb
    return inten, err, bg


def _feature_geometry(features: pd.DataFrame, geometry, qxy_qz: QxyQz) -> dict[str, np.ndarray]:
    """Detector row/col and the geometry columns of features at (q, chi), errors from ``q_err``."""
    q = features["q"].to_numpy(dtype=np.float64)
    chi = features["chi"].to_numpy(dtype=np.float64)
    q_err = features["q_err"].to_numpy(dtype=np.float64)
    tth = geometry.q_to_two_theta(q)
    row, col = geometry.angles_to_pixel(tth, chi)
    row, col = np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)
    q_xy, q_z = qxy_qz(row, col)
    theta = np.radians(tth) / 2
    # dq = (4 pi / lambda) cos(theta) dtheta
    tth_err = np.degrees(2 * q_err * geometry.wavelength_A / (4 * np.pi * np.cos(theta)))
    d = 2 * np.pi / q
    return dict(row=row, col=col, two_theta=tth, eta=chi, q=q, d=d, q_err=q_err, two_theta_err=tth_err,
                d_err=d * q_err / q, q_xy=q_xy, q_z=q_z)


def learned_peaks(corrected: np.ndarray, *, mask: np.ndarray | None, context, config, saturated=None,
                  frame_row: dict | None = None) -> pd.DataFrame:
    """The peak table of one corrected frame from the learned detector.

    Parameters
    ----------
    corrected : (H, W) ndarray
        Corrected frame, counts.
    mask : (H, W) ndarray of bool or None
        True = bad pixel (the frame's mask: static and per frame).
    context : braggflow.pipeline.Context
        Its geometry (with an incidence angle); its ``learned`` slot keeps the
        :class:`LearnedFinder` between frames.
    config : braggflow.pipeline.config.Config
        ``locate`` and ``integrate`` options for the spots, ``correct.gain``;
        ``frames.skip_empty`` (:func:`skips_frame`).
    saturated : (H, W) ndarray of bool, optional
        Saturated pixels (for the spots' localizer).
    frame_row : dict, optional
        Receives the frame's learned class for the frames table: ``frame_class``
        (empty, spots, arcs or rings: the most probable) and ``p_empty``,
        ``p_spots``, ``p_arcs``, ``p_rings`` (:func:`braggflow.nn.detector.frame_probabilities`).

    Returns
    -------
    table : pandas.DataFrame
        Peak table (schema of :mod:`braggflow.schema`), rings and arcs first,
        then spots, each by decreasing confidence; empty for a frame
        ``frames.skip_empty`` skips.

    Raises
    ------
    ConfigError
        Without a grazing-incidence geometry, or with binning.
    """
    from braggflow.nn.detector import decode, refine_q

    geometry = context.geometry
    check_learned(geometry, config.correct.binning)
    shape = tuple(np.shape(corrected))
    finder = context.learned
    if finder is None or finder.lookup.shape != shape:
        finder = LearnedFinder(PolarLookup.build(geometry, shape, context.mask), QxyQz(geometry),
                               geometry.replace(incidence_angle_deg=None))
        context.learned = finder
    lookup = finder.lookup
    bad = None  # pixels of this frame's mask beyond the static one (saturated, non-finite)
    if mask is not None and mask is not context.mask:
        extra = mask & ~context.mask if context.mask is not None else mask
        bad = extra if extra.any() else None
    image, counts, npix = lookup.rebin(corrected, bad)
    if np.count_nonzero(np.isfinite(image)) < 64:
        return empty_peak_table()
    from braggflow.nn.detector import contrast_image, frame_class, frame_probabilities

    detector = finder.get_detector()
    out = detector.raw(contrast_image(image)[None])[0]
    skip_empty = config.frames.skip_empty
    if frame_row is not None or skip_empty is not None:
        label, values = frame_class(frame_probabilities(out, np.isfinite(image),
                                                        detector.frame_thresholds or detector.thresholds))
        if frame_row is not None:
            frame_row.update(values, frame_class=label)
        if skips_frame(values["p_empty"], skip_empty):
            return empty_peak_table()
    feats = decode(out, np.isfinite(image), lookup.q, lookup.chi, thresholds=detector.thresholds,
                   **detector.decoding)
    if not len(feats):
        return empty_peak_table()
    feats = refine_q(feats, image, lookup.q, lookup.chi)
    gain = float(config.correct.gain)
    parts = []
    wide = feats[feats["kind"] != "spot"].reset_index(drop=True)
    if len(wide):
        inten, err, bg = band_intensity(counts, npix, lookup.q, lookup.chi, wide, gain=gain)
        geo = _feature_geometry(wide, geometry, finder.qxy_qz)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = inten / err
        parts.append(new_peak_table(len(wide), **geo, intensity=inten, intensity_err=err, background=bg, snr=snr,
                                       score=snr, confidence=wide["score"].to_numpy(),
                                       q_width=wide["q_width"].to_numpy(), chi_width=wide["chi_width"].to_numpy(),
                                       kind=wide["kind"].to_numpy(), npix=_box_pixels(npix, lookup, wide)))
    spots = feats[feats["kind"] == "spot"].reset_index(drop=True)
    if len(spots):
        parts.append(_spot_rows(corrected, spots, mask=mask, finder=finder, geometry=geometry, config=config,
                                saturated=saturated))
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_peak_table()
    table = pd.concat(parts, ignore_index=True)
    table["method"] = detector.name
    table["kind"] = pd.Categorical(table["kind"], categories=["spot", "arc", "ring"])
    return conform(table)


def _box_pixels(npix: np.ndarray, lookup: PolarLookup, boxes: pd.DataFrame) -> np.ndarray:
    """Pixels of the polar bins inside each box."""
    out = np.zeros(len(boxes), dtype=np.int64)
    for i, r in enumerate(boxes[["q_lo", "q_hi", "chi_lo", "chi_hi"]].itertuples(index=False)):
        rows = (lookup.chi >= r.chi_lo) & (lookup.chi <= r.chi_hi)
        cols = (lookup.q >= r.q_lo) & (lookup.q <= r.q_hi)
        out[i] = int(npix[np.ix_(rows, cols)].sum())
    return out


def _spot_rows(corrected, spots: pd.DataFrame, *, mask, finder: LearnedFinder, geometry, config, saturated
               ) -> pd.DataFrame:
    """Spots located and integrated as the classical finder's peaks are, with the detector's columns."""
    from braggflow.geometry import add_geometry_columns
    from braggflow.integrate import integrate
    from braggflow.locate import locate

    geo = _feature_geometry(spots, geometry, finder.qxy_qz)
    h, w = np.shape(corrected)
    on = (np.isfinite(geo["row"]) & np.isfinite(geo["col"]) & (geo["row"] > -0.5) & (geo["row"] < h - 0.5)
          & (geo["col"] > -0.5) & (geo["col"] < w - 0.5))
    if not on.any():
        return pd.DataFrame()
    spots = spots[on].reset_index(drop=True)
    rows, cols = np.rint(geo["row"][on]), np.rint(geo["col"][on])
    table = new_peak_table(len(spots), row=rows, col=cols, peak_value=np.asarray(corrected)[rows.astype(int),
                                                                                               cols.astype(int)])
    lc, ic, c = config.locate, config.integrate, config.correct
    table = locate(corrected, table, method=lc.method, mask=mask, saturated=saturated, patch_size=lc.patch_size,
                   gain=c.gain, model=lc.model, backend=lc.backend, device=lc.device, batch_size=lc.batch_size)
    table = integrate(corrected, table, mask=mask, gain=c.gain, radius=ic.radius or SPOT_RADIUS,
                      background_width=ic.background_width, saturated=saturated, method=ic.method)
    table = add_geometry_columns(table, finder.plain_geometry)
    table["q_xy"], table["q_z"] = finder.qxy_qz(table["row"].to_numpy(), table["col"].to_numpy())
    table["score"] = table["snr"]
    table["confidence"] = spots["score"].to_numpy()
    table["q_width"] = spots["q_width"].to_numpy()
    table["chi_width"] = spots["chi_width"].to_numpy()
    table["kind"] = "spot"
    return table
