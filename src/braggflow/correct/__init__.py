"""Frame corrections: dark, flat, masks, minimum value, binning.

Pure functions on arrays.  The static mask (user mask file, detector gap mask,
the file's own pixel mask) is built once with :func:`build_static_mask`; the
per-frame :func:`correct_frame` adds the pixels that are bad in this frame
(NaN/inf and the detector's flag values).  Zero and negative values are real
data (photon-counting zeros, dark-subtracted noise) and are never masked.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from braggflow.correct._kernels import integer_frame_float32
from braggflow.correct.options import CorrectConfig
from braggflow.errors import BraggflowError, ConfigError, InputFileError

__all__ = [
    "build_static_mask",
    "detector_gap_mask",
    "correct_frame",
    "correct_frame_saturation",
    "bin2x2",
    "saturation_level",
    "saturated_pixels",
    "unbin_positions",
]

log = logging.getLogger(__name__)


def _cache_dir() -> Path:
    """Where braggflow keeps what it derives once per installation: ``$BRAGGFLOW_CACHE_DIR``, else the user's cache."""
    if os.environ.get("BRAGGFLOW_CACHE_DIR"):
        return Path(os.environ["BRAGGFLOW_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "braggflow"


def _gap_shapes_file() -> tuple[Path, str]:
    """The cache file of the gapped detectors' shapes and the installed pyFAI's version ("" if none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pyfai = version("pyFAI")
    except PackageNotFoundError:
        pyfai = ""
    return _cache_dir() / "gap_detector_shapes.json", pyfai


def _cached_gap_detector_shapes() -> set[tuple[int, int]] | None:
    """The frame shapes (H, W) of pyFAI's detectors with module gaps, from the cache, without importing pyFAI.

    Importing pyFAI's detector registry costs about 1.5 s of CPU; the shapes it
    holds are kept in ``gap_detector_shapes.json`` in :func:`_cache_dir` with
    the version of pyFAI they came from (:func:`_write_gap_detector_shapes`),
    so that a run whose frames have none of these shapes does not import it (a
    detector without gaps gives no mask).

    Returns
    -------
    shapes : set of (int, int) or None
        None when the cache is missing, unreadable or of another pyFAI version.
    """
    path, pyfai = _gap_shapes_file()
    try:
        cached = json.loads(path.read_text())
        if cached.get("pyFAI") == pyfai and pyfai:
            return {(int(h), int(w)) for h, w in cached["shapes"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_gap_detector_shapes(detectors) -> None:
    """Write the cache of :func:`_cached_gap_detector_shapes` from pyFAI's registry (``pyFAI.detectors``).

    Best effort: a cache that cannot be written is not an error (the registry
    is imported again next time).
    """
    path, pyfai = _gap_shapes_file()
    shapes = sorted({tuple(int(v) for v in cls.MAX_SHAPE) for cls in detectors.ALL_DETECTORS.values()
                     if getattr(cls, "MODULE_GAP", None) and getattr(cls, "MAX_SHAPE", None)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"pyFAI": pyfai, "shapes": [list(s) for s in shapes]}))
        os.replace(temporary, path)
    except OSError as exc:
        log.debug("cannot write %s (%s); pyFAI's detectors are imported again next time", path, exc)


def detector_gap_mask(shape: tuple[int, int], detector: str | None = "auto") -> np.ndarray | None:
    """Module-gap mask of a pyFAI detector definition.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (H, W), px.
    detector : str or None
        A pyFAI detector name (``"Pilatus1M"``, ``"Eiger4M"``, ...); ``"auto"``
        picks the pyFAI detector with module gaps whose shape is ``shape`` (only
        when exactly one such family matches); ``None`` gives no mask.

    Returns
    -------
    mask : (H, W) ndarray of bool or None
        True on gaps; None when no detector applies.

    Raises
    ------
    ConfigError
        If ``detector`` is not a pyFAI detector name or its shape differs from ``shape``.

    Notes
    -----
    With ``"auto"``, a shape that no pyFAI detector with module gaps has is
    answered from the shapes of pyFAI's registry cached per pyFAI version
    (:func:`_cached_gap_detector_shapes`), without importing pyFAI.
    """
    if detector is None:
        return None
    known = _cached_gap_detector_shapes() if detector == "auto" else None
    if known is not None and tuple(int(v) for v in shape) not in known:
        return None  # no pyFAI detector with module gaps has this shape (the registry's shapes, cached)
    import pyFAI.detectors

    if detector == "auto":
        if known is None:  # the cache was missing or of another pyFAI
            _write_gap_detector_shapes(pyFAI.detectors)
        # detectors with module gaps and this shape, grouped by gap layout (Pilatus1M and
        # PilatusCdTe1M share one): use it only when the layout is unambiguous
        layouts = {}
        for cls in pyFAI.detectors.ALL_DETECTORS.values():
            if getattr(cls, "MAX_SHAPE", None) == tuple(shape) and getattr(cls, "MODULE_GAP", None):
                layouts.setdefault((tuple(cls.MODULE_SIZE), tuple(cls.MODULE_GAP)), cls)
        if len(layouts) != 1:
            return None
        det = next(iter(layouts.values()))()
    else:
        try:
            det = pyFAI.detectors.detector_factory(detector)
        except Exception:
            raise ConfigError(f"correct.detector: {detector!r} is not a pyFAI detector name") from None
        if tuple(det.max_shape) != tuple(shape):
            raise ConfigError(
                f"correct.detector: {detector} frames are {det.max_shape}, but the frames are {tuple(shape)}"
            )
    mask = det.calc_mask()
    return None if mask is None else mask.astype(bool)


def build_static_mask(
    shape: tuple[int, int],
    *,
    mask: np.ndarray | None = None,
    detector: str | None = "auto",
    detector_mask: np.ndarray | None = None,
    gap_margin: int = 0,
) -> np.ndarray:
    """Combine the user mask, the detector's gap mask and the file's pixel mask.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (H, W), px.
    mask : (H, W) array_like, optional
        User mask; nonzero/True = bad pixel.
    detector : str or None
        pyFAI detector name or ``"auto"`` (see :func:`detector_gap_mask`).
    detector_mask : (H, W) array_like, optional
        Bad pixels the frame file declares (e.g. NeXus ``pixel_mask``).
    gap_margin : int
        Also mask this many pixels on each side of the detector's module gaps
        (px).  The pixels at a Pilatus module edge collect more charge than the
        rest: on the real Pilatus 1M GIWAXS frames of ``../shared`` the first
        row and column beside a gap read 1.23 x their neighbours (the second
        1.03 x), and without a flat field they form lines of false peaks.

    Returns
    -------
    mask : (H, W) ndarray of bool
        True = bad pixel.

    Raises
    ------
    InputFileError
        If ``mask`` or ``detector_mask`` does not have the frame shape.
    """
    out = np.zeros(shape, dtype=bool)
    for name, m in (("mask", mask), ("detector pixel_mask", detector_mask)):
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != tuple(shape):
            raise InputFileError(f"{name} has shape {m.shape}, expected the frame shape {tuple(shape)}")
        out |= m.astype(bool)
    gaps = detector_gap_mask(shape, detector)
    if gaps is not None:
        if gap_margin > 0:
            from scipy import ndimage

            gaps = ndimage.binary_dilation(gaps, structure=np.ones((3, 3), bool), iterations=gap_margin)
        out |= gaps
    return out


def saturation_level(dtype: np.dtype, configured: float | None) -> float:
    """Counts at which a pixel saturates: the configured level, else the integer dtype's maximum.

    Parameters
    ----------
    dtype : numpy.dtype
        Pixel type of the raw frames.
    configured : float or None
        ``correct.saturation``.

    Returns
    -------
    level : float
        ``inf`` for float frames without a configured level.
    """
    if configured is not None:
        return float(configured)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return float("inf")


def saturated_pixels(frame: np.ndarray, level: float, *, binning: int = 1) -> np.ndarray | None:
    """The pixels of a raw frame at or above the saturation level, on the corrected frame's grid.

    Parameters
    ----------
    frame : (H, W) ndarray
        Raw frame, ADU.
    level : float
        Saturation level, ADU (:func:`saturation_level`; ``inf``: never).
    binning : {1, 2}
        ``correct.binning``: with 2, a binned pixel is saturated when any of its four is.

    Returns
    -------
    saturated : (H', W') ndarray of bool or None
        None when no pixel is saturated (the common case, decided by one ``max()``).
    """
    return _saturated_pixels(frame, level, binning, None)


def _saturated_pixels(frame: np.ndarray, level: float, binning: int, top) -> np.ndarray | None:
    """:func:`saturated_pixels`, with the frame's largest value ``top`` when known (None: read here)."""
    if not math.isfinite(level):
        return None
    if top is None:
        top = frame.max()  # max() costs a third of the map
    if top < level:
        return None
    saturated = frame >= level
    if binning == 2:
        saturated = bin2x2(saturated.astype(np.float32), np.zeros(frame.shape, bool))[0] > 0
    return saturated


def unbin_positions(table, binning: int = 2):
    """Positions, errors and widths of a peak table measured on 2 x 2 binned frames, in unbinned pixels.

    Binned pixel k covers raw pixels 2k and 2k + 1, so a binned position x is
    raw ``2 x + 0.5``; lengths double and the row-col covariance quadruples.

    Parameters
    ----------
    table : pandas.DataFrame
        Peak table measured on binned frames (modified in place and returned).
    binning : {1, 2}
        ``correct.binning``; 1 returns the table unchanged.

    Returns
    -------
    table : pandas.DataFrame
    """
    if binning != 2:
        return table
    for col in ("row", "col"):
        table[col] = 2 * table[col] + 0.5
    for col in ("row_err", "col_err", "sigma_row", "sigma_col"):
        table[col] = 2 * table[col]
    table["rc_cov"] = 4 * table["rc_cov"]
    return table


def bin2x2(frame: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum 2 x 2 blocks of pixels; a block with any bad pixel is bad.

    Parameters
    ----------
    frame : (H, W) ndarray
    mask : (H, W) ndarray of bool

    Returns
    -------
    frame : (H // 2, W // 2) ndarray of float32
        Summed counts (an odd last row/column is dropped).
    mask : (H // 2, W // 2) ndarray of bool
    """
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    f = frame[:h, :w].reshape(h // 2, 2, w // 2, 2)
    m = mask[:h, :w].reshape(h // 2, 2, w // 2, 2)
    return f.sum(axis=(1, 3), dtype=np.float32), m.any(axis=(1, 3))


def correct_frame(
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    flat: np.ndarray | None = None,
    config: CorrectConfig | None = None,
    name: str = "frame",
) -> tuple[np.ndarray, np.ndarray]:
    """Correct one raw frame and build its mask.

    Steps: flag-value and non-finite pixels are masked; ``dark`` is subtracted;
    the frame is divided by ``flat`` (normalised to mean 1 over good pixels);
    values below ``config.minval`` are set to 0; masked pixels are set to 0;
    optional 2 x 2 binning.

    Parameters
    ----------
    frame : (H, W) ndarray
        Raw counts (ADU).
    mask : (H, W) ndarray of bool, optional
        Static mask, True = bad (see :func:`build_static_mask`).
    dark : (H, W) ndarray, optional
        Dark frame, ADU.
    flat : (H, W) ndarray, optional
        Flat field (relative response); pixels with flat <= 0 are masked.
    config : CorrectConfig, optional
    name : str
        How to name the frame in error messages.

    Returns
    -------
    frame : (H', W') ndarray of float32
        Corrected counts (H' = H / binning).
    mask : (H', W') ndarray of bool
        True = bad pixel.

    Raises
    ------
    BraggflowError
        If a frame is not 2D, has no finite pixel, or an auxiliary array has
        another shape; the message names ``name`` or the array.
    """
    out, bad, _ = _corrected(frame, mask, dark, flat, config or CorrectConfig(), name, read_max=False)
    return out, bad


def correct_frame_saturation(
    frame: np.ndarray,
    *,
    saturation: float,
    mask: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    flat: np.ndarray | None = None,
    config: CorrectConfig | None = None,
    name: str = "frame",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`correct_frame` and :func:`saturated_pixels` of one raw frame, reading it once where it can.

    An integer frame without dark, flat or ``minval`` (with at most two flag
    values it can hold) is converted, masked and searched for its largest
    value in one compiled pass (:func:`braggflow.correct._kernels.integer_frame_float32`);
    other frames as the two functions do.

    Parameters
    ----------
    frame : (H, W) ndarray
        Raw counts (ADU).
    saturation : float
        Saturation level, ADU (:func:`saturation_level`; ``inf``: never).
    mask, dark, flat, config, name
        As :func:`correct_frame`.

    Returns
    -------
    frame : (H', W') ndarray of float32
        Corrected counts, as :func:`correct_frame`.
    mask : (H', W') ndarray of bool
        True = bad pixel, as :func:`correct_frame`.
    saturated : (H', W') ndarray of bool or None
        :func:`saturated_pixels` of the raw frame with ``config.binning``.

    Raises
    ------
    BraggflowError
        As :func:`correct_frame`.
    """
    config = config or CorrectConfig()
    out, bad, top = _corrected(frame, mask, dark, flat, config, name, read_max=math.isfinite(saturation))
    return out, bad, _saturated_pixels(np.asarray(frame), saturation, config.binning, top)


def _integer_flags(dtype: np.dtype, flag_values) -> list[int] | None:
    """The flag values an integer frame type can hold, as integers; None when a flag's test cannot be exact.

    A flag that is not an integer or lies outside the type's range matches no
    pixel (NumPy's comparison in float64); beyond 2**53 the float64
    comparison rounds the pixels, which integers do not.
    """
    info = np.iinfo(dtype)
    out = []
    for value in flag_values:
        value = float(value)
        if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
            continue
        if abs(value) > 2.0**53:
            return None
        out.append(int(value))
    return sorted(set(out))


def _integer_frame_pass(frame: np.ndarray, mask, config: CorrectConfig, name: str):
    """``(out, bad, top)`` of :func:`_corrected` for an integer frame without dark, flat or minval, in one pass.

    None when the frame can hold more than two of the flag values (then NumPy's passes do it).
    """
    flags = _integer_flags(frame.dtype, config.flag_values)
    if flags is None or len(flags) > 2:
        return None
    static = np.zeros(frame.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    flag_a, flag_b = (flags + flags[:1])[:2] if flags else (0, 0)
    out, bad, any_bad, top = integer_frame_float32(np.ascontiguousarray(frame), np.ascontiguousarray(static),
                                                   bool(flags), frame.dtype.type(flag_a), frame.dtype.type(flag_b))
    if any_bad and bad.all():
        raise BraggflowError(f"{name}: every pixel is masked")
    # NumPy's own types: the compiled function's arrays carry equal type objects of their own, with which ufunc.at
    # on their values takes its slow path (~20 x)
    out, bad = out.view(np.float32), bad.view(np.bool_)
    if config.binning == 2:
        out, bad = bin2x2(out, bad)
    return out, bad, frame.dtype.type(top)


def _checked_frame(frame, mask, dark, flat, name: str) -> np.ndarray:
    """The raw frame as an array, checked: 2D, of a real number type, and the auxiliary arrays of its shape."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise BraggflowError(f"{name}: expected a 2D frame, got shape {frame.shape}")
    if frame.dtype.kind not in "uifb":
        raise BraggflowError(f"{name}: pixel type {frame.dtype} is not a real number type (integer or float "
                             "counts expected)")
    for what, arr in (("mask", mask), ("dark", dark), ("flat", flat)):
        if arr is not None and np.shape(arr) != frame.shape:
            raise InputFileError(f"{what} has shape {np.shape(arr)}, expected the frame shape {frame.shape}")
    return frame


def _corrected(frame, mask, dark, flat, config: CorrectConfig, name: str, *, read_max: bool):
    """:func:`correct_frame`, and the raw frame's largest value when ``read_max`` and the compiled pass applies.

    Returns ``(out, bad, top)``: ``top`` the frame's maximum (a scalar of its
    type) or None when it was not read.
    """
    frame = _checked_frame(frame, mask, dark, flat, name)
    shape = frame.shape
    if read_max and frame.size and frame.dtype.kind in "iu" and dark is None and flat is None and config.minval is None:
        compiled = _integer_frame_pass(frame, mask, config, name)
        if compiled is not None:
            return compiled
    out = frame.astype(np.float32, copy=True)
    bad = np.zeros(shape, dtype=bool) if mask is None else np.array(mask, dtype=bool, copy=True)
    if np.issubdtype(frame.dtype, np.floating):
        finite = np.isfinite(out)
        if not finite.any():
            raise BraggflowError(f"{name}: every pixel is NaN or inf")
        bad |= ~finite
    for value in config.flag_values:
        if value < 0 and np.issubdtype(frame.dtype, np.unsignedinteger):
            continue  # an unsigned frame cannot hold a negative flag value
        bad |= frame == value
    if dark is not None:
        out -= np.asarray(dark, dtype=np.float32)
    if flat is not None:
        flat = np.asarray(flat, dtype=np.float32)
        good_flat = (flat > 0) & np.isfinite(flat)
        bad |= ~good_flat
        norm = float(np.mean(flat[good_flat & ~bad])) if (good_flat & ~bad).any() else 1.0
        np.divide(out, flat / norm, out=out, where=good_flat)
    if config.minval is not None:
        out[out < config.minval] = 0.0
    if bad.any():  # stops at the first bad pixel
        np.copyto(out, np.float32(0.0), where=bad)  # one pass; boolean indexing counts the pixels first
        if bad.all():
            raise BraggflowError(f"{name}: every pixel is masked")
    if config.binning == 2:
        out, bad = bin2x2(out, bad)
    return out, bad, None
