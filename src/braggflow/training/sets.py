"""Labelled training patches: simulated, re-centred like the peak finder's, or fitted on a user's frames.

Training data come from the patch simulator
(:func:`braggflow.simulate.patches.simulate_patches`), cut around the
brightest pixel as the pipeline cuts them (:func:`recentre_on_maximum`), or
from a user's own frames labelled by pseudo-Voigt fits of isolated peaks
(the published BraggNN recipe; :func:`patches_from_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braggflow.errors import ConfigError

__all__ = ["LabelledPatches", "patches_from_frames", "recentre_on_maximum", "simulated_training_patches"]

_ARRAYS = ("data", "mask", "row", "col", "sigma_row", "sigma_col", "crlb_row", "crlb_col")
_OPTIONAL = ("frame", "origin", "kind")


@dataclass
class LabelledPatches:
    """Training patches with their centre labels.

    Attributes
    ----------
    data : (N, s, s) ndarray of float32
        Counts (ADU).
    mask : (N, s, s) ndarray of bool
    row, col : (N,) ndarray of float64
        Centre labels, patch coordinates, px.
    sigma_row, sigma_col : (N,) ndarray of float64
        Width labels along rows / columns, px (NaN: unknown).
    crlb_row, crlb_col : (N,) ndarray of float64
        Cramér-Rao bounds, px (NaN: unknown).
    gain : float
        ADU per photon.
    frame : (N,) ndarray of int64 or None
        For patches from frames: index of the frame in its series.
    origin : (N, 2) ndarray of int64 or None
        For patches from frames: frame (row, col) of patch pixel [0, 0].
    kind : (N,) ndarray of str or None
        For simulated patches: the simulator's kind of each patch.
    """

    data: np.ndarray
    mask: np.ndarray
    row: np.ndarray
    col: np.ndarray
    sigma_row: np.ndarray
    sigma_col: np.ndarray
    crlb_row: np.ndarray
    crlb_col: np.ndarray
    gain: float = 1.0
    frame: np.ndarray | None = None
    origin: np.ndarray | None = None
    kind: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def from_patchset(cls, patches, *, gain: float = 1.0) -> LabelledPatches:
        """From a simulated :class:`~braggflow.simulate.patches.PatchSet`.

        The width labels are the peak's widths projected on the row and column
        axes: ``sigma_row^2 = s1^2 cos^2 a + s2^2 sin^2 a`` (and the
        complement for columns).
        """
        p = patches.params
        a = p["angle"].to_numpy(float)
        s1 = p["sigma_row"].to_numpy(float)
        s2 = p["sigma_col"].to_numpy(float)
        sr = np.sqrt((s1 * np.cos(a)) ** 2 + (s2 * np.sin(a)) ** 2)
        sc = np.sqrt((s1 * np.sin(a)) ** 2 + (s2 * np.cos(a)) ** 2)
        return cls(
            data=np.asarray(patches.data, np.float32),
            mask=np.asarray(patches.mask, bool),
            row=np.asarray(patches.row, float),
            col=np.asarray(patches.col, float),
            sigma_row=sr,
            sigma_col=sc,
            crlb_row=p["crlb_row"].to_numpy(float),
            crlb_col=p["crlb_col"].to_numpy(float),
            gain=gain,
            kind=p["kind"].astype(str).to_numpy().astype("U16"),
        )

    def concat(self, other: LabelledPatches) -> LabelledPatches:
        """Both sets together (same patch size and gain)."""
        return LabelledPatches.join([self, other])

    @staticmethod
    def join(parts: list) -> LabelledPatches:
        """Several sets together (same patch size and gain).

        Raises
        ------
        ConfigError
            If the patch sizes or gains differ.
        """
        first = parts[0]
        for other in parts[1:]:
            if other.data.shape[1:] != first.data.shape[1:]:
                raise ConfigError(f"cannot mix patches of {first.data.shape[1:]} and {other.data.shape[1:]} px")
            if other.gain != first.gain:
                raise ConfigError(f"cannot mix patches with gains {first.gain} and {other.gain}")
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAYS}
        for f in _OPTIONAL:
            values = [getattr(p, f) for p in parts]
            arrays[f] = None if any(v is None for v in values) else np.concatenate(values)
        return LabelledPatches(**arrays, gain=first.gain)

    def subset(self, index) -> LabelledPatches:
        """The patches at ``index`` (integer or boolean array)."""
        arrays = {f: getattr(self, f)[index] for f in _ARRAYS}
        for f in _OPTIONAL:
            a = getattr(self, f)
            arrays[f] = None if a is None else a[index]
        return LabelledPatches(**arrays, gain=self.gain)


def recentre_on_maximum(patches, *, size: int, radius: float = 2.0, neighbour_radius: float = 1.0,
                        fraction: float = 1.0, seed: int = 0) -> LabelledPatches:
    """Cut ``size`` patches from larger simulated ones, centred like the peak finder would.

    The finder puts a peak's highest pixel at the patch centre; with noise,
    broad or elongated peaks that pixel can be 1-2 px from the true centre,
    further than the +-0.5 px of the simulator.  Here each patch is re-cut
    around its brightest unmasked pixel within ``radius`` px of the true
    centre (``neighbour_radius`` for the neighbour kind, so the window stays
    on the labelled peak), and the label moves with it.  The re-cut patches
    go through :func:`braggflow.locate.extract_patches` like the pipeline's,
    so a neighbouring peak's pixels are removed (masked) as they would be.

    Parameters
    ----------
    patches : PatchSet
        Simulated patches of side ``S >= size + 2 * (ceil(radius) + 1)``.
    size : int
        Side of the patches to cut, px (odd).
    radius, neighbour_radius : float
        Search radius around the true centre, px.
    fraction : float
        Fraction of the patches re-cut this way (chosen at random); the others
        are cut around the larger patch's centre (the simulator's centring).
    seed : int
        Seed of that choice.

    Returns
    -------
    patches : LabelledPatches
        With ``kind``; CRLB values are those of the larger patch.
    """
    lp = LabelledPatches.from_patchset(patches, gain=1.0)
    n, big, _ = lp.data.shape
    h = size // 2
    rm, cm = _brightest_near_centre(lp, size=size, radius=radius, neighbour_radius=neighbour_radius)
    keep_centre = np.random.default_rng(seed).random(n) >= fraction
    rm = np.where(keep_centre, big // 2, np.clip(rm, h, big - 1 - h))
    cm = np.where(keep_centre, big // 2, np.clip(cm, h, big - 1 - h))
    data, mask = _windows(lp.data, rm, cm, size), _windows(lp.mask, rm, cm, size)
    cut = ~keep_centre
    if cut.any():
        # the re-centred ones are cut exactly as the pipeline cuts them (other peaks' pixels removed)
        data[cut], mask[cut] = _pipeline_cut(lp.data[cut], lp.mask[cut], rm[cut], cm[cut], size,
                                             patches.params["background"].to_numpy()[cut])
    return LabelledPatches(
        data=data,
        mask=mask,
        row=lp.row - (rm - h),
        col=lp.col - (cm - h),
        sigma_row=lp.sigma_row,
        sigma_col=lp.sigma_col,
        crlb_row=lp.crlb_row,
        crlb_col=lp.crlb_col,
        gain=lp.gain,
        kind=lp.kind,
    )


def _brightest_near_centre(lp: LabelledPatches, *, size: int, radius: float,
                           neighbour_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel of each patch where a ``size`` window around the brightest pixel near the label is cut.

    Parameters
    ----------
    lp : LabelledPatches
        ``N`` patches of side ``S``, with ``kind``.
    size : int
        Side of the window, px; it must fit in the patch.
    radius, neighbour_radius : float
        Search radius around the rounded label, px (the second for the neighbour kind).

    Returns
    -------
    rows, cols : (N,) ndarray of int
        The brightest unmasked pixel within the radius whose window fits; the
        rounded label where there is none.
    """
    n, big, _ = lp.data.shape
    h = size // 2
    r0 = np.rint(lp.row).astype(int)
    c0 = np.rint(lp.col).astype(int)
    rad = np.where(lp.kind == "neighbour", neighbour_radius, radius)
    k = int(np.ceil(max(radius, neighbour_radius)))
    best = np.full(n, -np.inf)
    rm, cm = r0.copy(), c0.copy()
    rows = np.arange(n)
    for dr in range(-k, k + 1):
        for dc in range(-k, k + 1):
            rr, cc = r0 + dr, c0 + dc
            ok = (dr * dr + dc * dc <= rad * rad) & (rr - h >= 0) & (rr + h < big) & (cc - h >= 0) & (cc + h < big)
            rr_c, cc_c = np.clip(rr, 0, big - 1), np.clip(cc, 0, big - 1)
            value = np.where(ok & ~lp.mask[rows, rr_c, cc_c], lp.data[rows, rr_c, cc_c], -np.inf)
            better = value > best
            best = np.where(better, value, best)
            rm = np.where(better, rr, rm)
            cm = np.where(better, cc, cm)
    return rm, cm


def _windows(stack: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) windows of an (N, S, S) stack centred on (rows[i], cols[i]), which must fit."""
    offs = np.arange(size) - size // 2
    ri = (rows[:, None] + offs)[:, :, None]
    ci = (cols[:, None] + offs)[:, None, :]
    return stack[np.arange(len(stack))[:, None, None], ri, ci]


def _pipeline_cut(big: np.ndarray, big_mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int,
                  background: np.ndarray, gain: float = 1.0):
    """Cut patches as the pipeline does, from a mosaic of larger simulated patches.

    The mosaic (one tile per patch) goes through :func:`braggflow.find.find_peaks`
    (with each tile's true background level) for its label image, and
    :func:`braggflow.locate.extract_patches` removes the pixels of other
    peaks' regions, as in :func:`braggflow.pipeline.process_frame`.
    """
    from braggflow.find import Background, find_peaks
    from braggflow.locate import extract_patches
    from braggflow.schema import new_peak_table

    n, s, _ = big.shape
    per_row = int(np.ceil(np.sqrt(n)))
    frame = _mosaic(big.astype(np.float32), 0.0, per_row)
    frame_mask = _mosaic(big_mask, False, per_row)
    level = _mosaic(np.asarray(background, float)[:, None, None], 0.0, per_row)
    bg = Background(level=level, noise=np.maximum(np.sqrt(gain * np.maximum(level, 0.0)), gain), tile=s,
                    shape=frame.shape)
    index = np.arange(n)
    prow = (index // per_row) * s + rows
    pcol = (index % per_row) * s + cols
    labels = find_peaks(frame, mask=frame_mask, gain=gain, background=bg).labels
    table = new_peak_table(n, row=prow, col=pcol)
    cut = extract_patches(frame, table, size=size, mask=frame_mask, labels=_own_labels(labels, prow, pcol))
    return cut.data, cut.mask


def _mosaic(tiles: np.ndarray, fill, per_row: int) -> np.ndarray:
    """(N, s, s) tiles side by side, ``per_row`` to a row, the last row completed with ``fill``."""
    n, s, _ = tiles.shape
    n_rows = int(np.ceil(n / per_row))
    full = np.full((n_rows * per_row, s, s), fill, tiles.dtype)
    full[:n] = tiles
    return full.reshape(n_rows, per_row, s, s).transpose(0, 2, 1, 3).reshape(n_rows * s, per_row * s)


def _own_labels(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Label image renumbered: ``i + 1`` for the region at the ``i``-th patch centre, ``> N`` for other regions."""
    n = len(rows)
    own = labels[rows, cols]
    index = np.arange(n)
    lut = np.arange(labels.max() + 1, dtype=np.int64) + n + 1  # other peaks: labels no patch owns
    lut[0] = 0
    lut[own[own > 0]] = index[own > 0] + 1
    return lut[labels]


def simulated_training_patches(
    n: int,
    *,
    size: int = 11,
    kind: str = "mixed",
    seed: int = 1,
    gain: float = 1.0,
    recentre: float = 0.5,
    sim_options: dict | None = None,
    chunk: int = 20000,
) -> LabelledPatches:
    """Simulated labelled patches (in chunks, to bound memory).

    Parameters
    ----------
    n : int
        Number of patches.
    size : int
        Patch side, px.
    kind : str
        Simulator kind (``"mixed"``: all kinds).
    seed : int
        Base seed; chunk ``k`` uses ``seed * 1000003 + k``.
    gain : float
        ADU per photon.
    recentre : float
        Fraction of the patches cut around their brightest pixel, as the
        finder does (:func:`recentre_on_maximum`); the others keep the
        simulator's own centring (true centre within +-0.5 px).  Both kinds
        of input occur: the pipeline's patches are finder-centred, the
        benchmark's are simulator-centred.
    sim_options : dict, optional
        Extra arguments of :func:`braggflow.simulate.patches.simulate_patches`
        (e.g. ``{"sigma": (0.5, 4.0)}``).  When the patches are simulated
        larger and cut down (``recentre > 0``), the edge kind's
        ``edge_distance`` defaults to the final patch's ``(2, size // 2)``.
    chunk : int
        Patches per simulator call.

    Returns
    -------
    patches : LabelledPatches
    """
    from braggflow.simulate.patches import simulate_patches

    options = dict(sim_options or {})
    parts = []
    for k, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        sim_size = size + 6 if recentre > 0 else size
        if sim_size > size:  # the detector edge must cut the final patch, not only the larger one
            options.setdefault("edge_distance", (min(2, size // 2), size // 2))
        ps = simulate_patches(m, size=sim_size, kind=kind, seed=seed * 1000003 + k, gain=gain, **options)
        if recentre > 0:
            lp = recentre_on_maximum(ps, size=size, fraction=recentre, seed=seed * 1000003 + k)
            lp.gain = gain
            parts.append(lp)
        else:
            parts.append(LabelledPatches.from_patchset(ps, gain=gain))
    return LabelledPatches.join(parts)


def patches_from_frames(
    sources,
    *,
    size: int = 11,
    labels: str = "pvoigt",
    gain: float = 1.0,
    max_frames: int | None = None,
    max_offset: float = 1.0,
    max_error: float = 0.25,
    progress=None,
) -> LabelledPatches:
    """Labelled training patches from a user's frames (the published recipe).

    Each frame is corrected, its peaks found, patches cut around them, and
    each patch fitted with a pseudo-Voigt (or Gaussian) profile.  Only
    isolated, converged, well-determined peaks are kept: no EDGE,
    OVERLAPPING, MASKED_NEIGHBOUR or SATURATED flag, a centre within
    ``max_offset`` px of the central pixel and fitted errors below
    ``max_error`` px.  The fitted centre is the label.

    Parameters
    ----------
    sources : str, Path, ndarray, or a list of them
        Anything :func:`braggflow.io.frames.open_frames` reads (files,
        folders, ``(N, H, W)`` arrays).
    size : int
        Patch side, px.
    labels : {"pvoigt", "gauss"}
        Fit used for the labels.
    gain : float
        ADU per photon.
    max_frames : int, optional
        Frames to use per source (evenly spaced); all by default.
    max_offset, max_error : float
        Selection limits, px.
    progress : callable, optional
        Called as ``progress(done, total)`` after each frame.

    Returns
    -------
    patches : LabelledPatches
        With ``frame`` and ``origin`` of each patch; CRLB unknown (NaN).

    Raises
    ------
    InputFileError
        If a source cannot be read.
    BraggflowError
        If no usable peak was found.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022): BraggNN trained on patches labelled by
    pseudo-Voigt fits of isolated peaks.
    """
    from braggflow.errors import BraggflowError
    from braggflow.io.frames import open_frames

    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    jobs = _frame_jobs([open_frames(s) for s in sources], max_frames)
    parts = []
    for done, (fs, i) in enumerate(jobs, 1):
        part = _isolated_peaks(fs, i, size=size, labels=labels, gain=gain, max_offset=max_offset, max_error=max_error)
        if part is not None:
            parts.append(part)
        if progress is not None:
            progress(done, len(jobs))
    if not parts:
        names = ", ".join(str(s) if isinstance(s, (str, Path)) else "<array>" for s in sources)
        raise BraggflowError(f"no isolated, well-fitted peaks found in {names} to train on")
    return LabelledPatches.join(parts)


def _frame_jobs(series: list, max_frames: int | None) -> list[tuple[object, int]]:
    """(series, frame index) of the frames to use: all, or ``max_frames`` evenly spaced ones per series."""
    jobs = []
    for fs in series:
        idx = np.arange(len(fs))
        if max_frames is not None and len(idx) > max_frames:
            idx = np.unique(np.linspace(0, len(idx) - 1, max_frames).round().astype(int))
        jobs += [(fs, int(i)) for i in idx]
    return jobs


def _isolated_peaks(fs, i: int, *, size: int, labels: str, gain: float, max_offset: float,
                    max_error: float) -> LabelledPatches | None:
    """The isolated, well-fitted peaks of frame ``i`` of ``fs``, labelled (see :func:`patches_from_frames`).

    Returns
    -------
    patches : LabelledPatches or None
        None when the frame has none.
    """
    from braggflow.correct import correct_frame
    from braggflow.find import find_peaks
    from braggflow.locate import extract_patches, fit_gaussian_patches, fit_pvoigt_patches
    from braggflow.schema import Flag

    reject = np.uint32(Flag.EDGE | Flag.OVERLAPPING | Flag.MASKED_NEIGHBOUR | Flag.SATURATED | Flag.BAD_BACKGROUND)
    frame, fmask = correct_frame(fs[i], mask=fs.detector_mask, name=fs.describe_frame(i))
    found = find_peaks(frame, mask=fmask, gain=gain)
    table, lab = found.table, found.labels
    if not len(table):
        return None
    pt = extract_patches(frame, table, size=size, mask=fmask, labels=lab)
    keep = (pt.flags & reject) == 0
    if not keep.any():
        return None
    data, mask = pt.data[keep], pt.mask[keep]
    fit = fit_pvoigt_patches if labels == "pvoigt" else fit_gaussian_patches
    res = fit(data, mask, gain=gain)
    c = size // 2
    good = (
        ~np.asarray(res.failed, bool)
        & (np.abs(res.row - c) <= max_offset) & (np.abs(res.col - c) <= max_offset)
        & (res.row_err < max_error) & (res.col_err < max_error)
    )
    if not good.any():
        return None
    k = int(good.sum())
    return LabelledPatches(
        data[good], mask[good], res.row[good], res.col[good], res.sigma_row[good],
        res.sigma_col[good], np.full(k, np.nan), np.full(k, np.nan), gain=gain,
        frame=np.full(k, i, np.int64), origin=pt.origin[keep][good],
    )
