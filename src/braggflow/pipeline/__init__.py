"""The per-frame pipeline and the runners that map it over a series.

:func:`process_frame` is a pure function of (frame, static inputs, config): it
corrects the frame, finds peaks, localizes and integrates them, and maps them
to angles and q when a geometry is known.  Static inputs (mask, dark, flat,
geometry, model) are loaded once at the edge by :func:`prepare` into a
:class:`Context` and passed in, so :func:`run` can map the same function over
frames on one core or on Dask workers (a local cluster or one on Slurm through
dask-jobqueue) without changing stage code.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow.errors import BraggflowError, ConfigError
from braggflow.pipeline.config import Config, with_input_geometry
from braggflow.pipeline.statistics import MIN_HOT_PIXEL_FRAMES, SeriesStatistics
from braggflow.schema import Flag, conform, empty_peak_table, table_from_columns

__all__ = ["Context", "FrameResult", "SeriesStatistics", "prepare", "measure_series", "analyse_frame",
           "process_frame", "run", "parse_frame_range", "check_workers", "MIN_HOT_PIXEL_FRAMES", "frames_text",
           "parse_frames_text", "resolve_device", "instrument_record", "models_used"]


@dataclass
class Context:
    """Static inputs of the per-frame function, loaded once.

    Attributes
    ----------
    mask : (H, W) ndarray of bool or None
        Static mask (user mask, detector gaps, file pixel mask); True = bad.
    dark, flat : (H, W) ndarray or None
        Dark frame (ADU) and flat field.
    saturation : float
        Raw counts at which a pixel saturates (inf: never).
    geometry : braggflow.geometry.Geometry or None
        Detector geometry for two_theta, eta, q, d.
    shape : (int, int) or None
        Expected raw frame shape.
    hot_pixels : (H, W) ndarray of bool or None
        Hot-pixel map of the series (:func:`measure_series`), already part of ``mask``.
    threshold_noise : braggflow.find.noise.ThresholdNoise or None
        Noise model of a series thresholded upstream, measured over a sample of its frames.
    learned : braggflow.pipeline.learned.LearnedFinder or None
        ``find.method`` learned: the polar lookup of the geometry and the detector, built on the first frame.
    """

    mask: np.ndarray | None = None
    dark: np.ndarray | None = None
    flat: np.ndarray | None = None
    saturation: float = float("inf")
    geometry: Any = None
    shape: tuple[int, int] | None = None
    hot_pixels: np.ndarray | None = None
    threshold_noise: Any = None
    learned: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def prepare(config: Config, *, shape: tuple[int, int], dtype=np.float32, detector_mask: np.ndarray | None = None,
            mask: np.ndarray | None = None, dark: np.ndarray | None = None, flat: np.ndarray | None = None) -> Context:
    """Load the static inputs named in ``config`` (mask, dark, flat, geometry) into a :class:`Context`.

    Parameters
    ----------
    config : Config
    shape : (int, int)
        Raw frame shape (H, W), px.
    dtype : numpy.dtype
        Raw pixel type (for the default saturation level).
    detector_mask : (H, W) ndarray of bool, optional
        Bad pixels declared by the frame file.
    mask, dark, flat : (H, W) ndarray, optional
        Arrays given directly (they take precedence over files named in the config).

    Returns
    -------
    context : Context

    Raises
    ------
    InputFileError
        If a named file is missing or has the wrong shape.
    ConfigError
        If the geometry section is incomplete.
    """
    from braggflow.correct import build_static_mask, saturation_level
    from braggflow.io.frames import read_image

    keep_freed_memory()
    c = config.correct
    if mask is None and c.mask:
        mask = _mask_from_file(read_image(c.mask, what="mask"), c.mask)
    if dark is None and c.dark:
        dark = read_image(c.dark, what="dark")
    if flat is None and c.flat:
        flat = read_image(c.flat, what="flat")
    for what, arr, name in (("dark", dark, c.dark), ("flat", flat, c.flat)):
        if arr is not None and np.shape(arr) != tuple(shape):
            raise ConfigError(
                f"{what} {name or ''}: shape {np.shape(arr)}, "
                f"expected the frame shape {tuple(shape)}".replace("  ", " ")
            )
    if mask is not None and np.shape(mask) != tuple(shape):
        raise ConfigError(
            f"mask {c.mask or ''}: shape {np.shape(mask)}, expected the frame shape {tuple(shape)}".replace("  ", " ")
        )
    static = build_static_mask(shape, mask=mask, detector=c.detector, detector_mask=detector_mask,
                               gap_margin=c.gap_margin)
    _check_some_pixel_left(static, mask=mask, flat=flat, detector_mask=detector_mask, config=config)
    geometry = None
    if config.geometry is not None:
        from braggflow.geometry import Geometry

        geometry = Geometry.from_config(config.geometry)
    return Context(mask=static, dark=dark, flat=flat, saturation=saturation_level(np.dtype(dtype), c.saturation),
                   geometry=geometry, shape=tuple(shape))


_MEMORY_KEPT = False


def keep_freed_memory() -> None:
    """Let this process keep the memory it frees between frames instead of returning it to the system (glibc).

    Every frame allocates and frees the same large arrays (the corrected
    frame, its mask, the label image, temporaries: ~40 MB for 2048 x 2048
    px).  glibc's malloc returns the free top of its heap to the system once
    more than its trim threshold (32 MB at most, adapted at run time) is
    free, and the next frame takes it back page by page, each page
    zero-filled by the kernel: ~1,700 page faults and ~8 ms of system time
    per 2048 x 2048 frame.  An mmap threshold of 32 MiB (glibc's largest)
    and a trim threshold of 512 MiB keep that memory in the process.  Once
    per process; nothing where the C library is not glibc, or where
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is set (the
    user's choice stands).
    """
    global _MEMORY_KEPT
    if _MEMORY_KEPT:
        return
    _MEMORY_KEPT = True
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 512 * 2**20)


def _mask_from_file(image: np.ndarray, name: str) -> np.ndarray:
    """A mask file's pixels as bad (True) where nonzero; a file of fractions (a flat field, say) is refused.

    Raises
    ------
    ConfigError
        If the file holds finite values that are not whole numbers (0.5, ...), naming one.
    """
    if np.issubdtype(image.dtype, np.floating):
        finite = image[np.isfinite(image)]
        fractions = finite[finite != np.round(finite)]
        if fractions.size:
            raise ConfigError(f"mask file {name}: holds values that are not whole numbers ({fractions[0]:g} at "
                              f"{fractions.size} pixels); a mask marks bad pixels with 1 (any nonzero integer) and "
                              "good ones with 0. A file of relative responses is a flat field: --flat")
    return image != 0


def _check_some_pixel_left(static: np.ndarray, *, mask, flat, detector_mask, config: Config) -> None:
    """Refuse static inputs that leave no pixel to read, naming the input that masks them all.

    Raises
    ------
    ConfigError
        If the mask, the detector's gaps and pixel mask, or the flat field (pixels <= 0 or not finite) leave
        no pixel.
    """
    c = config.correct
    if flat is not None:
        flat = np.asarray(flat)
        good = np.isfinite(flat) & (flat > 0)
        if not good.any():
            raise ConfigError(f"flat {c.flat or '(array)'}: no pixel has a positive value (pixels with a flat of 0, "
                              "below 0 or not finite are masked); a flat field is the detector's relative response, "
                              "about 1 everywhere")
        if (static | ~good).all() and not static.all():
            raise ConfigError(f"flat {c.flat or '(array)'} and the mask together leave no pixel: the flat is 0 "
                              "or not finite wherever the mask lets a pixel through")
    if not static.all():
        return
    if mask is not None and np.asarray(mask, dtype=bool).all():
        what = f"mask file {c.mask}" if c.mask else "the mask given"
        raise ConfigError(f"{what}: masks every pixel (nonzero = bad); a mask marks bad pixels with 1 and good "
                          "ones with 0 (an inverted mask?)")
    if detector_mask is not None and np.asarray(detector_mask, dtype=bool).all():
        raise ConfigError("the frames' own pixel mask (/entry/instrument/detector/pixel_mask) marks every pixel bad")
    raise ConfigError(f"the mask{' ' + c.mask if c.mask else ''}, the detector's pixel mask and its module gaps "
                      f"(correct.detector {c.detector}) together mask every pixel")


def measure_series(series, config: Config, context: Context) -> Context:
    """Series statistics, measured once over a sample of frames: the hot-pixel map and the noise of thresholded frames.

    The sample is ``config.correct.hot_pixel_frames`` frames spread evenly over
    the series, corrected like every frame (:class:`SeriesStatistics` keeps
    only per-pixel outlier counts and isolated-pixel values).  The hot-pixel map
    (:func:`braggflow.correct.outliers.hot_pixel_map`) is added to the context's
    mask; on a series thresholded upstream, the noise is fitted to the isolated
    stored pixels of the whole sample (:mod:`braggflow.find.noise`).  The
    per-frame function stays a pure function of (frame, context, config).

    Parameters
    ----------
    series : FrameSeries or sequence of (H, W) ndarray
    config : Config
    context : Context
        From :func:`prepare`.

    Returns
    -------
    context : Context
        A copy with ``mask``, ``hot_pixels`` and ``threshold_noise`` set.
    """
    n = len(series)
    if n == 0:
        return context
    picks = np.unique(np.linspace(0, n - 1, min(n, config.correct.hot_pixel_frames)).round().astype(int))
    stats = SeriesStatistics(config, context)
    for i in picks:
        try:
            frame = series[int(i)]
        except BraggflowError:
            continue  # a bad frame is reported when its turn comes, after the frames before it are kept
        stats.add_frame(frame)
    return stats.context()


@dataclass(frozen=True)
class FrameResult:
    """What :func:`analyse_frame` gives for one frame.

    Attributes
    ----------
    table : pandas.DataFrame
        The frame's peak table.
    row : dict
        The frame's row of the frames table (:data:`braggflow.schema.FRAME_COLUMNS`).
    """

    table: pd.DataFrame
    row: dict


def process_frame(
    frame: np.ndarray,
    *,
    config: Config | None = None,
    context: Context | None = None,
    frame_index: int = 0,
    omega: float = float("nan"),
    name: str | None = None,
) -> pd.DataFrame:
    """Run the whole per-frame pipeline on one raw frame.

    correct -> find -> locate -> integrate -> geometry (when known); each
    stage is one call, and the stages own their special cases (saturated and
    extended peaks are handed on inside :func:`braggflow.locate.locate`, binning
    is undone by :func:`braggflow.correct.unbin_positions`).  The frame's row
    of the frames table comes with :func:`analyse_frame`.

    Parameters
    ----------
    frame : (H, W) ndarray
        Raw frame, ADU.
    config : Config, optional
        Pipeline options (defaults adapt to the frame).
    context : Context, optional
        Static inputs from :func:`prepare` (and series statistics from
        :func:`measure_series`); built from ``config`` when None.
    frame_index : int
        Index of the frame in its series (the ``frame`` column).
    omega : float
        Rotation angle at the frame's centre, degrees (NaN: none).
    name : str, optional
        How to name the frame in error messages.

    Returns
    -------
    table : pandas.DataFrame
        Peak table (schema of :mod:`braggflow.schema`), one row per peak; an
        empty table when the frame has none.

    Raises
    ------
    BraggflowError
        For a frame of the wrong shape, an all-NaN or all-masked frame.
    """
    return analyse_frame(frame, config=config, context=context, frame_index=frame_index, omega=omega,
                         name=name).table


def analyse_frame(
    frame: np.ndarray,
    *,
    config: Config | None = None,
    context: Context | None = None,
    frame_index: int = 0,
    omega: float = float("nan"),
    name: str | None = None,
) -> FrameResult:
    """:func:`process_frame`, with the frame's row of the frames table.

    Parameters and errors as :func:`process_frame`.

    Returns
    -------
    result : FrameResult
        ``result.table`` (the peak table) and ``result.row`` (frame, omega,
        n_peaks, background, noise, saturated, zingers, hot_pixels,
        thresholded, time, and hit: at least ``config.frames.hit_min_peaks``
        peaks).
    """
    from braggflow.correct import correct_frame_saturation, unbin_positions
    from braggflow.find import find_peaks
    from braggflow.integrate import integrate_columns
    from braggflow.locate import locate_columns

    start = time.perf_counter()
    config = config or Config()
    frame = np.asarray(frame)
    name = name or f"frame {frame_index}"
    if context is None:
        context = prepare(config, shape=frame.shape, dtype=frame.dtype)
    if context.shape is not None and frame.shape != context.shape:
        raise BraggflowError(f"{name}: shape {frame.shape}, expected {context.shape}")
    c, lc, ic = config.correct, config.locate, config.integrate
    corrected, mask, saturated = correct_frame_saturation(frame, saturation=context.saturation, mask=context.mask,
                                                          dark=context.dark, flat=context.flat, config=c, name=name)
    learned_row: dict = {}  # the frame's learned class (find.method learned)
    if config.find.method == "learned":
        from braggflow.pipeline.learned import learned_peaks

        found = None
        table = learned_peaks(corrected, mask=mask, context=context, config=config, saturated=saturated,
                              frame_row=learned_row)
    else:
        found = find_peaks(corrected, mask=mask, config=config.find, gain=c.gain,
                           threshold_noise=context.threshold_noise)
    built = None  # the table built here from the stages' columns, with the schema's dtypes
    if found is None:
        pass
    elif len(found):
        # deblending's likelihood-ratio test is one of Poisson counts over a background: on a frame thresholded
        # upstream the zeros are censored values, not counts, and the test splits single spots (docs/locate.md)
        deblend = lc.deblend and found.threshold_noise is None
        # the stages hand columns on; the frame's table is built once, at the end
        columns, n = locate_columns(corrected, found.columns(), len(found), method=lc.method,
                                    mask=mask, labels=found.labels, regions=found.regions, saturated=saturated,
                                    saturated_peaks=lc.saturated, extended_peaks=lc.extended,
                                    patch_size=lc.patch_size, gain=c.gain, model=lc.model, backend=lc.backend,
                                    device=lc.device, batch_size=lc.batch_size, deblend=deblend)
        # on a thresholded frame the profile is a Gaussian fitted by the censored likelihood (a stored 0 means
        # "below the threshold"); a binned pixel sums censored ones, which that likelihood does not describe
        binned_censored = ic.method == "profile" and found.threshold_noise is not None and c.binning != 1
        columns = integrate_columns(corrected, columns, n, mask=mask, labels=found.labels, regions=found.regions,
                                    gain=c.gain, radius=ic.radius, background_width=ic.background_width,
                                    saturated=saturated, method="sum" if binned_censored else ic.method,
                                    threshold_noise=found.threshold_noise)
        if binned_censored:
            columns["flags"] = columns["flags"] | columns["flags"].dtype.type(Flag.SUMMED)
        columns["frame"] = np.full(n, frame_index, dtype=np.int64)
        columns["omega"] = np.full(n, float(omega))
        table = built = table_from_columns(columns, n)
        table = unbin_positions(table, c.binning)
        if context.geometry is not None:
            from braggflow.geometry import add_geometry_columns

            table = add_geometry_columns(table, context.geometry)
        from braggflow.pipeline.selection import check_selection, select_peaks

        check_selection(config.find, geometry_known=context.geometry is not None)
        table = select_peaks(table, config.find)  # find.max_size, find.d_min, find.d_max
    else:
        table = built = empty_peak_table()
    if table is not built:  # the learned finder's table, or one made anew by the geometry or the selection
        table["frame"] = np.int64(frame_index)
        table["omega"] = float(omega)
    bg = found.background if found is not None else None
    row = {
        "frame": int(frame_index),
        "omega": float(omega),
        "n_peaks": len(table),
        "background": float(np.median(bg.level)) if bg is not None else float("nan"),
        "noise": float(np.median(bg.noise)) if bg is not None else float("nan"),
        "saturated": int(np.count_nonzero(saturated)) if saturated is not None else 0,
        "zingers": int(found.zingers) if found is not None else 0,
        "hot_pixels": int(np.count_nonzero(context.hot_pixels)) if context.hot_pixels is not None else 0,
        "thresholded": found is not None and found.threshold_noise is not None,
        "time": time.perf_counter() - start,
        "hit": len(table) >= config.frames.hit_min_peaks,
        **learned_row,
    }
    return FrameResult(table if table is built else conform(table), row)


def resolve_device(config: Config) -> Config:
    """``config`` with ``locate.device`` "auto" made a device, and a GPU asked for checked to be there.

    "auto" is a CUDA GPU when torch sees one, else Apple's mps, else the CPU.
    Only the network (``locate.method`` nn) uses the device; torch is imported
    only when a GPU or "auto" is asked for with it.

    Raises
    ------
    ConfigError
        If a CUDA or mps device is asked for and torch (or the device) is not there.
    """
    lc = config.locate
    if lc.method != "nn" or lc.device == "cpu":
        return config
    try:
        import torch
    except ImportError:
        if lc.device == "auto":
            return config.model_copy(update={"locate": lc.model_copy(update={"device": "cpu"})})
        raise ConfigError(f"locate.device {lc.device}: needs torch with GPU support (the train extra)") from None
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    device = lc.device
    if device == "auto":
        device = "cuda" if cuda else "mps" if mps else "cpu"
    elif device.startswith("cuda") and (not cuda or int(device.partition(":")[2] or 0) >= torch.cuda.device_count()):
        seen = f"{torch.cuda.device_count()} CUDA GPU(s)" if cuda else "no CUDA GPU"
        raise ConfigError(f"locate.device {device}: torch sees {seen} here; give cpu or auto")
    elif device == "mps" and not mps:
        raise ConfigError("locate.device mps: torch sees no Apple GPU (mps) here; give cpu or auto")
    return config.model_copy(update={"locate": lc.model_copy(update={"device": device})})


def check_workers(workers: int) -> None:
    """Refuse a number of local worker processes below 0 or above this machine's cores.

    Parameters
    ----------
    workers : int
        0: this process; N: N worker processes on this machine.

    Raises
    ------
    ConfigError
        Naming the number and the limit.
    """
    cores = os.cpu_count() or 1
    if not 0 <= workers <= cores:
        raise ConfigError(f"--workers {workers}: give 0 (this process) or 1 to {cores} worker processes "
                          f"(this machine's cores); for more, start a Dask cluster and give --scheduler")


def parse_frame_range(text: str | None, n: int) -> range:
    """Parse ``START:STOP[:STEP]`` (Python slice semantics, each may be empty) into a range of frame indices.

    Parameters
    ----------
    text : str or None
        E.g. ``"0:100"``, ``"100:"``, ``"::10"`` (every tenth frame); None or empty: every frame.
    n : int
        Frames in the series.

    Returns
    -------
    frames : range
        Increasing frame indices.

    Raises
    ------
    ConfigError
        If the text is not ``START:STOP[:STEP]`` with integers and a positive STEP, or selects no frame.
    """
    if text is None or text == "":
        return range(n)
    if ":" not in text or text.count(":") > 2:
        raise ConfigError(f"--frames {text!r}: expected START:STOP or START:STOP:STEP (for example 0:100 or 0:100:5)")
    parts = text.split(":")
    try:
        start, stop, step = (int(p) if p.strip() else None for p in parts + [""] * (3 - len(parts)))
    except ValueError:
        raise ConfigError(f"--frames {text!r}: START, STOP and STEP must be integers") from None
    if step is not None and step <= 0:
        raise ConfigError(f"--frames {text!r}: STEP must be a positive number of frames, got {step}")
    frames = range(*slice(start, stop, step).indices(n))
    if not frames:
        raise ConfigError(f"--frames {text!r}: selects no frame of a series of {n}")
    return frames


def run(
    frames,
    *,
    config: Config | None = None,
    output=None,
    frames_range: range | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    workers: int = 0,
    scheduler_address: str | None = None,
    mask: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    flat: np.ndarray | None = None,
    cluster=None,
    return_table: bool = True,
) -> pd.DataFrame | None:
    """Run the pipeline over a series and write (or return) the peak table.

    Parameters
    ----------
    frames : FrameSeries or anything :func:`braggflow.io.frames.open_frames` takes
    config : Config, optional
    output : str or Path, optional
        Results file (HDF5/NeXus).  Frames are journaled as they finish, so a
        crash keeps them; with ``resume`` the frames already in it are skipped.
    frames_range : range, optional
        Frame indices to process (default: all).  The file is ``complete``
        once every frame asked for is in it; the frames asked are recorded in
        ``/entry/process@frames_requested`` (``START:STOP[:STEP]`` runs).
    resume : bool
        Continue a results file made from the same inputs.  An unfinished file
        continues with the frames it asked for (and ``frames_range``, when
        given); a file complete for part of the series goes on with
        ``frames_range`` or, without it, with every frame of the series.
    overwrite : bool
        Replace an existing results file; without it (or ``resume``) an
        existing ``output`` is refused.
    progress : callable(done, total, peaks), optional
        Called after every frame.
    workers : int
        0: process in this process; N > 0: a Dask LocalCluster of N worker
        processes (call from under ``if __name__ == "__main__":``).
    scheduler_address : str, optional
        Address of an existing Dask scheduler (e.g. a dask-jobqueue SLURMCluster's).
    mask, dark, flat : (H, W) ndarray, optional
        Static arrays (override the files named in ``config.correct``).
    cluster : braggflow.pipeline.cluster.ClusterConfig, optional
        Workers started as batch jobs (Slurm, PBS, SGE, ... through dask-jobqueue);
        one of ``workers``, ``scheduler_address`` and ``cluster`` at most.
        Workers read the frames themselves and return NumPy columns; this
        process journals each task's frames (:mod:`braggflow.pipeline.distributed`).
    return_table : bool
        With ``output``: read the file's peak table back and return it (all
        its peaks in memory); False returns None, and the run holds no more
        than a journal batch of peaks at a time, whatever their number (the
        command line never asks for the table).

    Returns
    -------
    table : pandas.DataFrame or None
        Peaks of all processed frames (and, with ``resume``, the earlier ones);
        with ``config.frames.veto_empty``, those of hits only.  None with
        ``output`` and not ``return_table``.

    Raises
    ------
    BraggflowError
        For bad input; frames finished before the error stay in ``output``,
        which is then marked ``incomplete``.
    """
    from braggflow.io.frames import FrameSeries, frame_origins, open_frames
    from braggflow.pipeline.sparse_run import run_sparse, sparse_path_applies

    config = config or Config()
    if scheduler_address is None and cluster is None:
        check_workers(workers)
    stored, config = config, resolve_device(config)  # the file records the device as asked ("auto")
    series = frames if isinstance(frames, FrameSeries) else open_frames(frames)
    origins = frame_origins(series)
    _set_omega(series, config)
    config, geometry_source = with_input_geometry(config, series.sources)
    indices = list(frames_range if frames_range is not None else range(len(series)))
    context = prepare(config, shape=series.shape, dtype=series.dtype, detector_mask=series.detector_mask,
                      mask=mask, dark=dark, flat=flat)
    context = measure_series(series, config, context)
    if config.find.method == "learned":
        from braggflow.pipeline.learned import check_learned

        check_learned(context.geometry, config.correct.binning)  # before any results file is written
    writer = None
    asked = indices
    if output is not None:
        from braggflow.io.nexus import raw_frame_links
        from braggflow.io.results import ResultsWriter

        asked, append = _frames_asked(output, len(series), frames_range, resume)
        geometry = (
            context.geometry.to_dict()
            if context.geometry is not None and hasattr(context.geometry, "to_dict")
            else None
        )
        _check_output_is_not_an_input(output, frames, series.sources)
        writer = ResultsWriter(output, config=stored, sources=series.sources, resume=resume, append=append,
                               overwrite=overwrite, geometry=geometry, origins=origins,
                               extra_process={"frames_total": len(series), "frame_shape": list(series.shape),
                                              "frames_requested": frames_text(asked)},
                               instrument=instrument_record(context, geometry_source), models=models_used(config),
                               raw_frames=raw_frame_links(series), hit_min_peaks=config.frames.hit_min_peaks,
                               veto_empty=config.frames.veto_empty)
        indices = [i for i in asked if i not in writer.done_frames]
    collected: list[pd.DataFrame] = []
    n_peaks = 0
    done = 0

    def record(i: int, result: FrameResult) -> None:
        nonlocal n_peaks, done
        table = result.table
        if writer is not None:
            writer.add(i, table, result.row)
        else:
            collected.append(table)
        n_peaks += len(table)
        done += 1
        if progress is not None:
            progress(done, len(indices), n_peaks)

    complete = False
    try:
        if workers or scheduler_address or cluster is not None:
            from braggflow.pipeline.distributed import run_on_workers

            collected += run_on_workers(series, indices, config=config, context=context, writer=writer,
                                        progress=progress, workers=workers, scheduler_address=scheduler_address,
                                        cluster=cluster, local=_local_cluster)
        elif sparse_path_applies(series, config, context):
            collected += run_sparse(series, indices, config=config, context=context, writer=writer,
                                    progress=progress)
        else:
            frame = None  # one raw-frame buffer, read into again for each frame (analyse_frame keeps no reference)
            for i in indices:
                frame = series.read(i, out=frame)
                record(i, analyse_frame(frame, config=config, context=context, frame_index=i,
                                        omega=series.omega_centre(i), name=series.describe_frame(i)))
        complete = True
    finally:
        if writer is not None:
            writer.close(complete=complete and set(asked) <= writer.done_frames)
    if writer is not None:
        from braggflow.io.results import read_peaks

        return read_peaks(output) if return_table else None
    return _collected_table(collected, origins, config)


def _collected_table(collected: list[pd.DataFrame], origins, config: Config) -> pd.DataFrame:
    """The peaks of a run without a results file as one table; with ``frames.veto_empty``, those of hits only."""
    table = origins.fill(conform(pd.concat(collected, ignore_index=True))) if collected else empty_peak_table()
    if config.frames.veto_empty and len(table):  # as the results file would store them
        counts = table.groupby("frame")["frame"].transform("size").to_numpy()
        table = conform(table[counts >= config.frames.hit_min_peaks])
    return table


def instrument_record(context: Context, geometry_source: str | None = None) -> dict[str, Any]:
    """What the results file records of the instrument and sample (``/entry/instrument``, ``/entry/sample``).

    Parameters
    ----------
    context : Context
        The run's static inputs: its geometry, mask and saturation level.
    geometry_source : str, optional
        Where the geometry came from (:func:`braggflow.pipeline.config.with_input_geometry`).

    Returns
    -------
    record : dict
        ``wavelength_A``, ``energy_keV``, ``distance_mm``, ``pixel_size_mm``
        (row, col), ``beam_center`` (row, col, px), ``incidence_angle_deg``,
        ``tilt_angle_deg`` (with a geometry), ``masked_pixels``,
        ``saturation``, ``geometry_source``.
    """
    record: dict[str, Any] = {"geometry_source": geometry_source, "saturation": float(context.saturation),
                              "masked_pixels": None if context.mask is None else int(np.count_nonzero(context.mask))}
    g = context.geometry
    if g is not None:
        record.update(wavelength_A=g.wavelength_A, energy_keV=g.energy_keV, distance_mm=g.distance_mm,
                      pixel_size_mm=list(g.pixel_size_mm), beam_center=list(g.beam_center))
        if g.has_incidence:
            record.update(incidence_angle_deg=g.incidence_angle_deg, tilt_angle_deg=g.tilt_angle_deg)
    return record


def models_used(config: Config) -> list[dict[str, Any]]:
    """The localizer model a run uses (``name``, ``file``, ``sha256``), or none for methods without one.

    Parameters
    ----------
    config : Config

    Returns
    -------
    models : list of dict
    """
    lc = config.locate
    if lc.method not in ("nn", "braggnn"):
        return []
    from braggflow.checksum import file_sha256
    from braggflow.nn.files import default_model_name, list_models

    name = lc.model or default_model_name()
    for record in list_models():
        if record.get("name") == name:
            return [{"name": name, "file": record.get("file"), "sha256": record.get("sha256")}]
    path = Path(str(name))
    return [{"name": path.name, "file": str(path.resolve()),
             "sha256": file_sha256(path) if path.is_file() else ""}]


def frames_text(frames) -> str:
    """Frame indices as comma-separated ``START:STOP`` (or ``START:STOP:STEP``) runs, e.g. ``"0:100,200:300:2"``.

    Parameters
    ----------
    frames : iterable of int

    Returns
    -------
    text : str
        Empty for no frame; :func:`parse_frames_text` reads it back.
    """
    values = sorted(set(int(f) for f in frames))
    runs, k = [], 0
    while k < len(values):
        start = values[k]
        step = values[k + 1] - start if k + 1 < len(values) else 1
        end = k + 1
        while end < len(values) and values[end] - values[end - 1] == step:
            end += 1
        if end - k == 2 and step != 1:  # two frames apart: one run of one frame, then the next starts over
            end, step = k + 1, 1
        last = values[end - 1]
        runs.append(f"{start}:{last + 1}" if step == 1 else f"{start}:{last + 1}:{step}")
        k = end
    return ",".join(runs)


def parse_frames_text(text: str) -> list[int]:
    """The frame indices of :func:`frames_text`'s text, sorted.

    Raises
    ------
    ValueError
        If a run is not ``START:STOP`` or ``START:STOP:STEP`` with integers.
    """
    frames: set[int] = set()
    for run_text in filter(None, (t.strip() for t in str(text).split(","))):
        frames.update(range(*(int(v) for v in run_text.split(":"))))
    return sorted(frames)


def _frames_asked(output, n: int, frames_range: range | None, resume: bool) -> tuple[list[int], bool]:
    """The frames a run into ``output`` asks for, and whether it continues a file already complete.

    Without ``resume``: ``frames_range`` (default all ``n``).  With it, on an
    existing file: the frames the file asked for, with ``frames_range`` added;
    without ``frames_range``, a complete file goes on with every frame of the
    series.  A complete file that holds every frame asked is refused.

    Raises
    ------
    InputFileError
        If a complete file already holds every frame asked (nothing to resume).
    """
    from braggflow.errors import InputFileError
    from braggflow.io.results import read_frames_done
    from braggflow.io.writer import stored_process

    everything = list(range(n))
    path = Path(output)
    journal = path.with_name(path.name + ".journal")
    if not resume or not (path.exists() or journal.exists()):
        return (everything if frames_range is None else list(frames_range)), False
    process = stored_process(path)
    status = process.get("_status")
    text = process.get("frames_requested")
    before = everything if text is None else [f for f in parse_frames_text(text) if 0 <= f < n]
    if frames_range is not None:
        asked = sorted(set(before) | set(frames_range))
    else:
        asked = everything if status == "complete" else before
    if status != "complete":
        return asked, False
    if set(asked) <= read_frames_done(path):
        more = "" if frames_range is not None else " (add frames with --resume --frames START:STOP)"
        raise InputFileError(f"{output}: run is already complete; nothing to resume{more}; remove --resume to "
                             "start again (with --overwrite)")
    return asked, True


def _set_omega(series, config: Config) -> None:
    """Give a series whose files record no omega the ranges of ``config.series`` (omega_start, omega_step).

    Raises
    ------
    ConfigError
        If the files record omega ranges of their own, or ``omega_start`` is given without ``omega_step``.
    """
    sc = config.series
    if sc.omega_step is None:
        if sc.omega_start is not None:
            raise ConfigError("series.omega_start needs series.omega_step (--omega-step)")
        return
    if series.omega is not None:
        raise ConfigError("series.omega_step: the frame files record their own omega ranges; leave it unset")
    from braggflow.link.rotation import omega_ranges_from_steps

    series.omega = omega_ranges_from_steps(len(series), step=sc.omega_step, start=sc.omega_start or 0.0)


def _check_output_is_not_an_input(output, frames, sources: list[str]) -> None:
    """Refuse a results file that is one of the input files or lies inside an input folder.

    Raises
    ------
    ConfigError
        Naming the output and the input it would overwrite or join.
    """
    out = os.path.realpath(output)
    for source in sources:
        if os.path.realpath(source) == out:
            raise ConfigError(f"-o {output}: the results file would overwrite the input {source}")
    if isinstance(frames, (str, os.PathLike)) and os.path.isdir(frames):
        folder = os.path.realpath(frames)
        if os.path.commonpath([folder, out]) == folder:
            raise ConfigError(f"-o {output}: the results file would be written inside the input folder {frames}, "
                              "where it would be read as a frame next time")


def _local_cluster(workers: int):
    """A local cluster of ``workers`` processes (:func:`braggflow.pipeline.cluster.local_cluster`)."""
    from braggflow.pipeline.cluster import local_cluster

    return local_cluster(workers)
