"""Readers for HEXRD's text outputs (fit-grains spot files), for validation against HEXRD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from braggflow.errors import InputFileError

__all__ = ["read_spots_file", "spots_to_pixels", "measured_spots_in_frames"]


def read_spots_file(path) -> pd.DataFrame:
    """Read a HEXRD ``spots_NNNNN.out`` file (one row per predicted reflection).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    spots : pandas.DataFrame
        Columns ``id, pid, h, k, l, sum_int, max_int, pred_tth, pred_eta, pred_ome,
        meas_tth, meas_eta, meas_ome`` (radians) and ``pred_x, pred_y, meas_x,
        meas_y`` (mm, detector frame); unmeasured values are NaN.

    Raises
    ------
    InputFileError
        If the file is missing or does not have the 17 columns of a spots file.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    names = ["id", "pid", "h", "k", "l", "sum_int", "max_int", "pred_tth", "pred_eta", "pred_ome",
             "meas_tth", "meas_eta", "meas_ome", "pred_x", "pred_y", "meas_x", "meas_y"]
    try:
        table = pd.read_csv(path, sep=r"\s+", comment="#", header=None, names=names, na_values=["nan"])
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(f"{path}: not a HEXRD spots file ({exc})") from None
    if table.shape[1] != len(names) or table["meas_y"].dtype == object:
        raise InputFileError(f"{path}: expected 17 numeric columns of a HEXRD spots file")
    return table


def spots_to_pixels(spots: pd.DataFrame, *, pixel_size_mm: float, shape: tuple[int, int]) -> pd.DataFrame:
    """Convert HEXRD detector-frame positions (mm, origin at the detector centre, Y up) to frame pixels.

    ``col = X / pixel + (W - 1) / 2``, ``row = (H - 1) / 2 - Y / pixel`` (pixel
    centres on integers).

    Parameters
    ----------
    spots : pandas.DataFrame
        From :func:`read_spots_file`.
    pixel_size_mm : float
        Pixel size, mm.
    shape : (int, int)
        Frame shape (H, W), px.

    Returns
    -------
    spots : pandas.DataFrame
        Copy with ``meas_row, meas_col, pred_row, pred_col`` (px) and
        ``meas_ome_deg`` (degrees) added.
    """
    h, w = shape
    out = spots.copy()
    for kind in ("meas", "pred"):
        out[f"{kind}_col"] = out[f"{kind}_x"] / pixel_size_mm + (w - 1) / 2
        out[f"{kind}_row"] = (h - 1) / 2 - out[f"{kind}_y"] / pixel_size_mm
    out["meas_ome_deg"] = np.degrees(out["meas_ome"])
    return out


def measured_spots_in_frames(spot_files, series, *, pixel_size_mm: float) -> pd.DataFrame:
    """HEXRD's measured spots with the frame of the series that holds each, and the counts around each there.

    Parameters
    ----------
    spot_files : iterable of str or Path
        HEXRD ``spots_NNNNN.out`` files.
    series : FrameSeries
        The rotation series the spots were measured on (with omega ranges).
    pixel_size_mm : float
        Detector pixel size, mm.

    Returns
    -------
    spots : pandas.DataFrame
        One row per measured spot of each file: ``grain`` (the file's place in
        ``spot_files``), ``frame`` (whose omega range holds the measured
        omega), ``row``, ``col`` (px), ``omega`` (deg), ``sum5`` (sum of the
        5 x 5 pixels around the spot in that frame, counts), ``pred_offset``
        (px on the detector between the measured position and the one HEXRD
        predicted for the reflection) and ``repeat``: True where an earlier
        row holds the same measured spot (within :data:`REPEAT_PX` on the
        detector and :data:`REPEAT_DEG` of omega).  HEXRD's fit-grains credits
        a measured spot to every grain that predicts a reflection there, so
        two grains of nearly the same orientation list their common spots
        twice; count distinct spots with ``spots[~spots["repeat"]]``.  HEXRD
        measures a spot's centroid inside a window of angles centred on its
        predicted position, so a spot that lies far from its prediction
        (a large ``pred_offset``) can be cut by the window's edge and its
        measured centroid pulled toward the prediction.

    Raises
    ------
    InputFileError
        If a file is not a spots file, the series has no omega ranges, or a
        spot's omega lies outside every frame.
    """
    if series.omega is None:
        raise InputFileError("measured_spots_in_frames: the series has no omega ranges")
    spots = pd.concat([spots_to_pixels(read_spots_file(p), pixel_size_mm=pixel_size_mm, shape=series.shape)
                       .assign(grain=g) for g, p in enumerate(spot_files)], ignore_index=True)
    spots = spots.dropna(subset=["meas_x", "meas_y", "meas_ome"]).reset_index(drop=True)
    lo, hi = np.minimum(series.omega[:, 0], series.omega[:, 1]), np.maximum(series.omega[:, 0], series.omega[:, 1])
    frames = []
    for o in spots["meas_ome_deg"]:
        hit = np.flatnonzero((lo <= o) & (o < hi))
        if not hit.size:
            raise InputFileError(f"measured omega {o:.3f} deg lies outside every frame of the series")
        frames.append(int(hit[0]))
    out = pd.DataFrame({"grain": spots["grain"], "frame": frames, "row": spots["meas_row"],
                        "col": spots["meas_col"], "omega": spots["meas_ome_deg"],
                        "pred_offset": np.hypot(spots["meas_row"] - spots["pred_row"],
                                                spots["meas_col"] - spots["pred_col"])})
    sums = np.zeros(len(out))
    for f, idx in out.groupby("frame").groups.items():
        frame = np.asarray(series[int(f)], dtype=np.float64)
        for k in idx:
            r, c = int(round(out.at[k, "row"])), int(round(out.at[k, "col"]))
            sums[k] = frame[max(r - 2, 0): r + 3, max(c - 2, 0): c + 3].sum()
    out["sum5"] = sums
    out["repeat"] = _repeats(out)
    return out


#: Measured spots of two rows closer than this on the detector (px) ...
REPEAT_PX = 0.5
#: ... and in omega (deg) are one spot (:func:`measured_spots_in_frames`).
REPEAT_DEG = 1.0


def _repeats(spots: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the row's measured spot is an earlier row's (within REPEAT_PX and REPEAT_DEG)."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(spots), dtype=bool)
    if len(spots) < 2:
        return out
    omega = spots["omega"].to_numpy(dtype=float)
    pairs = cKDTree(spots[["row", "col"]].to_numpy(dtype=float)).query_pairs(REPEAT_PX, output_type="ndarray")
    pairs = pairs[np.abs(omega[pairs[:, 0]] - omega[pairs[:, 1]]) <= REPEAT_DEG]
    out[pairs.max(axis=1)] = True
    return out
