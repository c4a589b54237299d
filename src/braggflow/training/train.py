"""Training the localizer networks (``braggflow train``).

Training data come from the patch simulator
(:func:`braggflow.simulate.patches.simulate_patches`), from a user's own
frames labelled by pseudo-Voigt fits of isolated peaks (the published BraggNN
recipe; :func:`patches_from_frames`), or both.  The patches are normalised
once; every batch is augmented by a random symmetry of the square (flips and
transposition, which the physics does not care about).  A random part is held
out for validation; the model with the best validation loss is kept
(checkpointed to the output file as it improves) and training stops early
when it has not improved for ``patience`` epochs.  Finally the errors are
calibrated on the validation patches (:mod:`braggflow.training.calibration`).

Losses: ``braggnn`` is trained as published (mean squared error of the
normalised centre); ``locnet`` with a Gaussian negative log-likelihood of
the centre given its predicted log-variance (Nix and Weigend, ICNN 1994),
after ``warmup_epochs`` of squared error, plus a small squared error on the
log widths.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from braggflow.errors import ConfigError

__all__ = [
    "TrainConfig",
    "TrainResult",
    "LabelledPatches",
    "patches_from_frames",
    "recentre_on_maximum",
    "simulated_training_patches",
    "train_model",
]


@dataclass
class TrainConfig:
    """Options of :func:`train_model` (all stored in the model file).

    Attributes
    ----------
    arch : {"locnet", "braggnn"}
        Architecture.
    arch_kwargs : dict
        Extra constructor arguments (e.g. ``{"hidden": [256, 128]}``).
    size : int
        Patch side, px (odd).
    simulated : int
        Number of simulated training patches (0: none).
    kind : str
        Simulated patch kind (``"mixed"`` covers every kind).
    extra_kinds : dict of str -> int
        Additional simulated patches of given kinds (e.g.
        ``{"elongated": 200000}``), to weight hard cases more.
    sim_options : dict
        Extra arguments of the simulator (e.g. ``{"sigma": [0.5, 4.0]}``).
    recentre : float
        Fraction of simulated patches cut around their brightest pixel, as
        the peak finder does (see :func:`recentre_on_maximum`).
    sim_seed : int
        Seed of the simulation.
    frames : list of str
        Frame files or folders to take labelled patches from (may be empty).
    labels : {"pvoigt", "gauss"}
        Fit used to label patches from frames.
    max_frames : int or None
        Use at most this many frames per source.
    gain : float
        ADU per photon of the frames.
    epochs : int
        Maximum epochs.
    batch_size : int
    lr : float
        Peak learning rate (AdamW, cosine decay after a linear warm-up).
    weight_decay : float
    val_fraction : float
        Fraction held out for validation.
    patience : int
        Stop after this many epochs without a better validation loss.
    warmup_epochs : int
        ``locnet``: epochs of squared-error loss before the likelihood.
    width_weight : float
        ``locnet``: weight of the log-width loss.
    seed : int
        Seed of the split, the initialisation and the batches.
    threads : int
        torch CPU threads.
    init : str or None
        Start from the weights of this model (a shipped name or a model
        file; fine-tuning) instead of a random initialisation; its
        architecture and ``arch_kwargs`` are used and ``arch`` must match.
    """

    arch: str = "locnet"
    arch_kwargs: dict = field(default_factory=dict)
    size: int = 11
    simulated: int = 200_000
    kind: str = "mixed"
    extra_kinds: dict = field(default_factory=dict)
    sim_options: dict = field(default_factory=lambda: {"sigma": [0.5, 4.0]})
    recentre: float = 0.5
    sim_seed: int = 1
    frames: list = field(default_factory=list)
    labels: str = "pvoigt"
    max_frames: int | None = None
    gain: float = 1.0
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    patience: int = 8
    warmup_epochs: int = 2
    width_weight: float = 0.1
    seed: int = 0
    threads: int = 2
    init: str | None = None

    def validate(self) -> "TrainConfig":
        """Check the options; returns self.

        Raises
        ------
        ConfigError
            Naming the first invalid option.
        """
        from braggflow.nn.architectures import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.size < 3 or self.size % 2 == 0 or (self.arch == "braggnn" and self.size < 7):
            raise ConfigError(f"size (patch side) must be odd and >= {7 if self.arch == 'braggnn' else 3}, got {self.size}")
        if self.simulated < 0:
            raise ConfigError(f"simulated must be >= 0, got {self.simulated}")
        from braggflow.simulate.patches import KINDS

        for kind, count in self.extra_kinds.items():
            if kind not in KINDS or int(count) < 0:
                raise ConfigError(f"extra_kinds: expected kind=count with kind in {', '.join(KINDS)} and count >= 0, "
                                  f"got {kind}={count}")
        if self.simulated == 0 and not self.frames and not any(int(c) > 0 for c in self.extra_kinds.values()):
            raise ConfigError("no training data: give simulated > 0 (--simulated N) and/or frames (--frames FILE)")
        if self.labels not in ("pvoigt", "gauss"):
            raise ConfigError(f"labels must be 'pvoigt' or 'gauss', got {self.labels!r}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.recentre <= 1:
            raise ConfigError(f"recentre (a fraction) must be in [0, 1], got {self.recentre}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not self.gain > 0:
            raise ConfigError(f"gain must be > 0, got {self.gain}")
        return self


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
    def from_patchset(cls, patches, *, gain: float = 1.0) -> "LabelledPatches":
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

    def concat(self, other: "LabelledPatches") -> "LabelledPatches":
        """Both sets together (same patch size and gain)."""
        return LabelledPatches.join([self, other])

    @staticmethod
    def join(parts: list) -> "LabelledPatches":
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

    def subset(self, index) -> "LabelledPatches":
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
    keep_centre = np.random.default_rng(seed).random(n) >= fraction
    rm = np.where(keep_centre, big // 2, np.clip(rm, h, big - 1 - h))
    cm = np.where(keep_centre, big // 2, np.clip(cm, h, big - 1 - h))
    offs = np.arange(size) - h
    ri = (rm[:, None] + offs)[:, :, None]
    ci = (cm[:, None] + offs)[:, None, :]
    data = lp.data[rows[:, None, None], ri, ci]
    mask = lp.mask[rows[:, None, None], ri, ci]
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
    n_rows = int(np.ceil(n / per_row))

    def mosaic_of(tiles, fill):
        full = np.full((n_rows * per_row, s, s), fill, tiles.dtype)
        full[:n] = tiles
        return full.reshape(n_rows, per_row, s, s).transpose(0, 2, 1, 3).reshape(n_rows * s, per_row * s)

    frame = mosaic_of(big.astype(np.float32), 0.0)
    frame_mask = mosaic_of(big_mask, False)
    level = np.zeros(n_rows * per_row)
    level[:n] = background
    level = level.reshape(n_rows, per_row)
    bg = Background(level=level, noise=np.maximum(np.sqrt(gain * np.maximum(level, 0.0)), gain), tile=s,
                    shape=frame.shape)
    index = np.arange(n)
    prow = (index // per_row) * s + rows
    pcol = (index % per_row) * s + cols
    _, labels = find_peaks(frame, mask=frame_mask, gain=gain, background=bg, return_labels=True)
    own = labels[prow, pcol]
    lut = np.arange(labels.max() + 1, dtype=np.int64) + n + 1  # other peaks: labels no patch owns
    lut[0] = 0
    lut[own[own > 0]] = index[own > 0] + 1
    table = new_peak_table(n, row=prow, col=pcol)
    cut = extract_patches(frame, table, size=size, mask=frame_mask, labels=lut[labels])
    return cut.data, cut.mask


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
    from braggflow.correct import correct_frame
    from braggflow.errors import BraggflowError
    from braggflow.find import find_peaks
    from braggflow.io.frames import open_frames
    from braggflow.locate import extract_patches, fit_gaussian_patches, fit_pvoigt_patches
    from braggflow.schema import Flag

    fit = fit_pvoigt_patches if labels == "pvoigt" else fit_gaussian_patches
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    reject = np.uint32(Flag.EDGE | Flag.OVERLAPPING | Flag.MASKED_NEIGHBOUR | Flag.SATURATED | Flag.BAD_BACKGROUND)
    series = [open_frames(s) for s in sources]
    jobs = []
    for fs in series:
        idx = np.arange(len(fs))
        if max_frames is not None and len(idx) > max_frames:
            idx = np.unique(np.linspace(0, len(idx) - 1, max_frames).round().astype(int))
        jobs += [(fs, int(i)) for i in idx]
    parts = []
    c = size // 2
    for done, (fs, i) in enumerate(jobs, 1):
        frame, fmask = correct_frame(fs[i], mask=fs.detector_mask, name=fs.describe_frame(i))
        table, lab = find_peaks(frame, mask=fmask, gain=gain, return_labels=True)
        if len(table):
            pt = extract_patches(frame, table, size=size, mask=fmask, labels=lab)
            keep = (pt.flags & reject) == 0
            if keep.any():
                data, mask = pt.data[keep], pt.mask[keep]
                res = fit(data, mask, gain=gain)
                good = (
                    ~np.asarray(res.failed, bool)
                    & (np.abs(res.row - c) <= max_offset) & (np.abs(res.col - c) <= max_offset)
                    & (res.row_err < max_error) & (res.col_err < max_error)
                )
                if good.any():
                    k = int(good.sum())
                    parts.append(LabelledPatches(
                        data[good], mask[good], res.row[good], res.col[good], res.sigma_row[good],
                        res.sigma_col[good], np.full(k, np.nan), np.full(k, np.nan), gain=gain,
                        frame=np.full(k, i, np.int64), origin=pt.origin[keep][good],
                    ))
        if progress is not None:
            progress(done, len(jobs))
    if not parts:
        names = ", ".join(str(s) if isinstance(s, (str, Path)) else "<array>" for s in sources)
        raise BraggflowError(f"no isolated, well-fitted peaks found in {names} to train on")
    return LabelledPatches.join(parts)


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    path : Path
        The model file written.
    sha256 : str
    metrics : dict
        Validation figures of the kept model.
    history : list of dict
        Per epoch: ``epoch, train_loss, val_loss, val_median_px, lr, seconds``.
    """

    path: Path
    sha256: str
    metrics: dict
    history: list


# --------------------------------------------------------------------------- tensors


def _inputs(arch: str, patches: LabelledPatches):
    """(planes (N, C, s, s), scalars (N, k)) float32 arrays for an architecture."""
    from braggflow.nn.preprocess import check_patches, minmax_normalise, robust_features

    data, mask = check_patches(patches.data, patches.mask)
    n, s, _ = data.shape
    if arch == "braggnn":
        return minmax_normalise(data, mask), np.zeros((n, 0), np.float32)
    f = robust_features(data, mask, gain=patches.gain)
    return f[:, : 2 * s * s].reshape(n, 2, s, s).copy(), f[:, 2 * s * s :].copy()


def _targets(patches: LabelledPatches) -> np.ndarray:
    c = patches.data.shape[1] // 2
    return np.stack(
        [patches.row - c, patches.col - c, np.log(patches.sigma_row), np.log(patches.sigma_col)], axis=1
    ).astype(np.float32)


def _augment(planes, targets, generator):
    """A random symmetry of the square per sample: flips and transposition."""
    import torch

    b = planes.shape[0]
    flips = torch.rand(b, 3, generator=generator) < 0.5
    fr, fc, tr = flips[:, 0], flips[:, 1], flips[:, 2]
    planes = torch.where(fr[:, None, None, None], planes.flip(2), planes)
    planes = torch.where(fc[:, None, None, None], planes.flip(3), planes)
    planes = torch.where(tr[:, None, None, None], planes.transpose(2, 3), planes)
    t = targets.clone()
    t[:, 0] = torch.where(fr, -t[:, 0], t[:, 0])
    t[:, 1] = torch.where(fc, -t[:, 1], t[:, 1])
    swapped = t[:, [1, 0, 3, 2]]
    t = torch.where(tr[:, None], swapped, t)
    return planes, t


def _forward(network, arch: str, planes, scalars):
    import torch

    if arch == "braggnn":
        return network(planes)
    return network(torch.cat([planes.flatten(1), scalars], dim=1))


def _loss(arch: str, out, t, size: int, *, likelihood: bool, width_weight: float):
    import torch

    if arch == "braggnn":
        c = size // 2
        # published target: (col, row) / size
        label = torch.stack([(t[:, 1] + c) / size, (t[:, 0] + c) / size], dim=1)
        return torch.mean((out - label) ** 2)
    mu, logvar = out[:, :2], out[:, 2:4].clamp(-20.0, 6.0)
    sq = (mu - t[:, :2]) ** 2
    if likelihood:
        loss = 0.5 * (logvar + sq * torch.exp(-logvar)).mean()
    else:  # warm-up: squared error for the centre, likelihood for the variance only
        loss = sq.mean() + 0.5 * (logvar + sq.detach() * torch.exp(-logvar)).mean()
    if out.shape[1] >= 6 and width_weight > 0:
        known = torch.isfinite(t[:, 2:4])
        if known.any():
            dw = (out[:, 4:6] - torch.nan_to_num(t[:, 2:4])) ** 2
            loss = loss + width_weight * dw[known].mean()
    return loss


def _centres(arch: str, out, size: int) -> np.ndarray:
    """(N, 2) predicted (drow, dcol) offsets from the central pixel, px."""
    o = out.detach().cpu().numpy().astype(np.float64)
    if arch == "braggnn":
        c = size // 2
        return np.stack([o[:, 1] * size - c, o[:, 0] * size - c], axis=1)
    return o[:, :2]


# --------------------------------------------------------------------------- training


def train_model(
    config: TrainConfig | None = None,
    *,
    out: str | Path = "braggflow-model.pt",
    patches: LabelledPatches | None = None,
    progress: bool = True,
    console=None,
) -> TrainResult:
    """Train a localizer network and write it as a braggflow model file.

    Parameters
    ----------
    config : TrainConfig, optional
        Options; defaults train ``locnet`` on 200,000 simulated patches.
    out : str or Path
        Model file to write (rewritten whenever the validation loss improves,
        so an interrupted run leaves its best model).
    patches : LabelledPatches, optional
        Training patches to use instead of (or before) simulating /
        reading frames; when given, ``config.simulated`` and
        ``config.frames`` are not used.
    progress : bool
        Show a rich progress bar (epoch, loss, validation error in px).
    console : rich.console.Console, optional

    Returns
    -------
    result : TrainResult

    Raises
    ------
    ConfigError
        For invalid options.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022) (BraggNN and its training recipe);
    Nix and Weigend, "Estimating the mean and variance of the target
    probability distribution", ICNN (1994) (Gaussian likelihood loss).
    """
    import torch

    from braggflow.nn.architectures import build_network
    from braggflow.nn.files import Localizer
    from braggflow.nn.inference import raw_predict
    from braggflow.nn.preprocess import N_SCALARS, check_patches
    from braggflow.training.calibration import calibrate_predictions, calibration_figures
    from braggflow.training.files import save_model

    config = (config or TrainConfig()).validate()
    out = Path(out)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t_start = time.perf_counter()

    # ---- data
    if patches is None:
        patches = _collect_patches(config, progress=progress, console=console)
    if patches.data.shape[1] != config.size:
        raise ConfigError(f"training patches are {patches.data.shape[1]} px but size is {config.size}")
    n = len(patches)
    if n < 20:
        raise ConfigError(f"too few training patches ({n}); need at least 20")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_val = max(10, int(round(config.val_fraction * n)))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    train, val = patches.subset(train_idx), patches.subset(val_idx)

    arch = config.arch
    size = config.size
    if arch == "braggnn":
        arch_kwargs = {"imgsz": size, **config.arch_kwargs}
    else:
        arch_kwargs = {"size": size, "n_scalars": N_SCALARS, **config.arch_kwargs}
    if config.init is not None:
        from braggflow.nn.files import load_model

        start = load_model(config.init)
        if start.arch != arch or start.size != size:
            raise ConfigError(f"init model {config.init!r} is a {start.arch} for {start.size} px patches, "
                              f"but arch={arch!r} and size={size}")
        arch_kwargs = dict(start.arch_kwargs)
        network = build_network(arch, **arch_kwargs)
        network.load_state_dict(start.network.state_dict())
    elif arch == "braggnn":
        network = build_network(arch, **arch_kwargs)
        for m in network.modules():  # the published initialisation
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)
    else:
        network = build_network(arch, **arch_kwargs)
        last = network.layers[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[2:4] = -4.0  # initial sigma ~0.14 px
            if last.bias.numel() >= 6:
                last.bias[4:6] = 0.4  # initial width ~1.5 px
    network.train()

    tp, ts = (torch.from_numpy(a) for a in _inputs(arch, train))
    tt = torch.from_numpy(_targets(train))
    vp, vs = (torch.from_numpy(a) for a in _inputs(arch, val))
    vt = torch.from_numpy(_targets(val))

    steps_per_epoch = max(1, len(train) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warm_steps = min(steps_per_epoch, total_steps // 10 + 1)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < warm_steps:
            return config.lr * (step + 1) / warm_steps
        frac = (step - warm_steps) / max(1, total_steps - warm_steps)
        return config.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best = (math.inf, None)
    best_state = None
    stale = 0
    step = 0
    train_config = {k: v for k, v in asdict(config).items()}
    train_config["n_train"] = int(len(train))
    train_config["n_val"] = int(len(val))

    bar = _progress_bar(progress, console)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("training", total=total_steps, loss=float("nan"), val=float("nan"), epoch=0)
    try:
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            likelihood = epoch > config.warmup_epochs
            network.train()
            perm = torch.randperm(len(train), generator=gen)
            running = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
                planes, targets = _augment(tp[idx], tt[idx], gen)
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step)
                output = _forward(network, arch, planes, ts[idx])
                loss = _loss(arch, output, targets, size, likelihood=likelihood, width_weight=config.width_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
                optimizer.step()
                running += float(loss.detach())
                step += 1
                if bar is not None and (b % 20 == 0 or b == steps_per_epoch - 1):
                    bar.update(task, completed=step, loss=running / (b + 1), epoch=epoch)
            network.eval()
            with torch.inference_mode():
                outs = [
                    _forward(network, arch, vp[i : i + 4096], vs[i : i + 4096]) for i in range(0, len(val), 4096)
                ]
                vout = torch.cat(outs)
                vloss = float(_loss(arch, vout, vt, size, likelihood=True, width_weight=config.width_weight))
            d = _centres(arch, vout, size) - vt[:, :2].numpy()
            vmed = float(np.median(np.hypot(d[:, 0], d[:, 1])))
            record = {
                "epoch": epoch,
                "train_loss": running / steps_per_epoch,
                "val_loss": vloss,
                "val_median_px": vmed,
                "lr": lr_at(step - 1),
                "seconds": time.perf_counter() - t0,
            }
            history.append(record)
            if bar is not None:
                bar.update(task, val=vmed)
                bar.console.print(
                    f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {vloss:.4f}, "
                    f"val median {vmed:.4f} px ({record['seconds']:.0f} s)"
                )
            # checkpoint on the likelihood once it is trained on (warm-up epochs compete among themselves)
            score = vloss if (likelihood or arch == "braggnn") else math.inf
            if score < best[0] or best_state is None:
                best = (score, epoch)
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                stale = 0
                save_model(out, network, arch=arch, arch_kwargs=arch_kwargs, train_config=train_config,
                           metrics={"epoch": epoch, "val_median_px": vmed, "val_loss": vloss})
            elif likelihood or arch == "braggnn":
                stale += 1
                if stale >= config.patience:
                    break
    finally:
        if bar is not None:
            bar.stop()

    # ---- calibrate and write the kept model
    network.load_state_dict(best_state)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    loc = Localizer(name=out.stem, arch=arch, arch_kwargs=arch_kwargs, network=network, size=size)
    vdata, vmask = check_patches(val.data, val.mask)
    raw = raw_predict(loc, vdata, vmask, gain=val.gain)
    er, ec = raw["row"] - val.row, raw["col"] - val.col
    radial = np.hypot(er, ec)
    calibration, sr, sc = calibrate_predictions(raw, val.row, val.col, vdata, vmask, predicts_error=loc.predicts_error,
                                                gain=val.gain, kinds=val.kind)
    metrics = {
        "best_epoch": int(best[1]),
        "epochs_run": len(history),
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "val_patches": int(len(val)),
        "val_median_px": float(np.median(radial)),
        "val_p95_px": float(np.percentile(radial, 95)),
        **{f"val_{k}": v for k, v in calibration_figures(er, ec, sr, sc).items()},
    }
    ref = 1.1774 * np.sqrt(0.5 * (val.crlb_row**2 + val.crlb_col**2))
    if np.isfinite(ref).any():
        ok = np.isfinite(ref) & (ref > 0)
        metrics["val_median_ratio_crlb"] = float(np.median(radial[ok] / ref[ok]))
    if val.kind is not None:
        by_kind = {}
        for kind in np.unique(val.kind):
            k = val.kind == kind
            fig = calibration_figures(er[k], ec[k], sr[k], sc[k])
            by_kind[str(kind)] = {
                "n": int(k.sum()),
                "median_px": float(np.median(radial[k])),
                "median_ratio_crlb": float(np.median(radial[k] / ref[k])),
                "z_std_row": fig["z_std_row"],
                "z_std_col": fig["z_std_col"],
                "in_ellipse": fig["in_ellipse"],
            }
        metrics["val_by_kind"] = by_kind
    sha = save_model(out, network, arch=arch, arch_kwargs=arch_kwargs, train_config=train_config,
                     metrics=metrics, calibration=calibration)
    return TrainResult(path=out, sha256=sha, metrics=metrics, history=history)


def _collect_patches(config: TrainConfig, *, progress: bool, console) -> LabelledPatches:
    parts = []
    if config.frames:
        parts.append(
            patches_from_frames(config.frames, size=config.size, labels=config.labels, gain=config.gain,
                                max_frames=config.max_frames)
        )
    if console is not None and progress and (config.simulated or config.extra_kinds):
        extra = "".join(f" + {n} {k}" for k, n in config.extra_kinds.items())
        console.print(f"simulating {config.simulated} {config.kind}{extra} training patches ...")
    if config.simulated:
        parts.append(simulated_training_patches(config.simulated, size=config.size, kind=config.kind,
                                                seed=config.sim_seed, gain=config.gain, recentre=config.recentre,
                                                sim_options=config.sim_options))
    for i, (kind, count) in enumerate(sorted(config.extra_kinds.items()), 1):
        if int(count) > 0:
            parts.append(simulated_training_patches(int(count), size=config.size, kind=kind,
                                                    seed=config.sim_seed + 7919 * i, gain=config.gain,
                                                    recentre=config.recentre, sim_options=config.sim_options))
    return LabelledPatches.join(parts)


def _progress_bar(enabled: bool, console):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TextColumn("val median {task.fields[val]:.4f} px"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
