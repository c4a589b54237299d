"""Compiled per-pixel pass of the corrections, in numba.

:func:`integer_frame_float32` converts a raw integer frame to float32, builds
its mask (the static mask and the pixels holding one of two flag values),
sets the masked pixels to 0 and finds the frame's largest value, in one read
of the frame and of the static mask: what ``frame.astype(np.float32)``, a copy
of the mask, a comparison per flag value, ``np.copyto(out, 0, where=bad)`` and
the saturation test's ``frame.max()`` compute with a pass each.

The function is compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["integer_frame_float32"]


@njit(cache=True, nogil=True)
def integer_frame_float32(frame, static_bad, use_flags, flag_a, flag_b):
    """A raw integer frame in float32 with its bad pixels 0, its mask, whether any pixel is bad, and its maximum.

    Parameters
    ----------
    frame : (H, W) ndarray of an integer type
        Raw frame, ADU.
    static_bad : (H, W) ndarray of bool
        Static mask, True = bad.
    use_flags : bool
        Whether pixels equal to ``flag_a`` or ``flag_b`` are bad.
    flag_a, flag_b : int
        Flag values of the frame's type (the same twice for one flag).

    Returns
    -------
    out : (H, W) ndarray of float32
        ``float32(frame)`` (rounded to nearest, as ``astype``), 0 on bad pixels.
    bad : (H, W) ndarray of bool
        True = bad pixel.
    any_bad : bool
    top : int
        The largest raw value, ADU.
    """
    h, w = frame.shape
    out = np.empty((h, w), dtype=np.float32)
    bad = np.empty((h, w), dtype=np.bool_)
    any_bad = np.uint8(0)
    top = frame[0, 0]
    for r in range(h):
        values = frame[r]
        static = static_bad[r]
        out_row = out[r]
        bad_row = bad[r]
        for c in range(w):  # no branch: vectorised
            v = values[c]
            b = static[c] | (use_flags & ((v == flag_a) | (v == flag_b)))
            top = max(top, v)
            bad_row[c] = b
            any_bad |= np.uint8(b)
            out_row[c] = np.float32(0.0) if b else np.float32(v)
    return out, bad, any_bad != 0, top
