"""Bitshuffle-LZ4 frames (HDF5 filter 32008, an Eiger's) decompressed straight into the caller's buffer.

HDF5's filter pipeline decompresses a chunk into a buffer of its own and then
copies it to the caller's; for a 16 MB frame that copy and the allocation cost
about as much as a third of the decompression.  When a chunk is one whole
frame stored with bitshuffle-LZ4 and no other filter, :func:`read_frame_into`
reads the chunk's stored bytes (``H5Dread_chunk``) and hands them to
bitshuffle's own ``bshuf_decompress_lz4`` -- the function HDF5's filter calls,
from the library hdf5plugin registers -- with the caller's buffer as its
output.  The values are the same bytes; any other layout, or a library without
the function, is read by HDF5 as before.

References
----------
Masui et al., Astron. Comput. 12, 181 (2015) (bitshuffle and its HDF5 filter,
whose chunk header is a big-endian uint64 of the uncompressed bytes and a
uint32 of the block size in bytes).
"""

from __future__ import annotations

import ctypes
import functools
import struct

import numpy as np

__all__ = ["BITSHUFFLE_FILTER", "whole_frame_chunks", "read_frame_into"]

#: HDF5 filter id of bitshuffle.
BITSHUFFLE_FILTER = 32008
_LZ4 = 2  # the filter's fifth value: BSHUF_H5_COMPRESS_LZ4
_HEADER = struct.Struct(">QI")  # uncompressed bytes, block size in bytes


@functools.cache
def _decompress_lz4():
    """bitshuffle's ``bshuf_decompress_lz4`` from hdf5plugin's filter library, or None where it is not exported."""
    try:
        import hdf5plugin

        path = hdf5plugin.get_config().registered_filters.get("bshuf")
        function = ctypes.CDLL(path).bshuf_decompress_lz4 if path else None
    except (ImportError, OSError, AttributeError):
        return None
    if function is not None:
        # int64_t bshuf_decompress_lz4(const void* in, void* out, size_t size, size_t elem_size, size_t block_size)
        function.restype = ctypes.c_int64
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
    return function


def whole_frame_chunks(dataset) -> bool:
    """Whether every chunk of ``dataset`` is one whole frame stored with bitshuffle-LZ4 alone.

    Parameters
    ----------
    dataset : h5py.Dataset
        Frames, (N, H, W) or (H, W).

    Returns
    -------
    applies : bool
        True when :func:`read_frame_into` can read its frames: chunks of
        (1, H, W) (or (H, W)), a native numeric dtype, one filter (bitshuffle
        with LZ4), and bitshuffle's decompression available.
    """
    frame = tuple(dataset.shape[-2:])
    chunks = dataset.chunks
    if chunks is None or tuple(chunks) != ((1, *frame) if dataset.ndim == 3 else frame):
        return False
    if dataset.dtype.kind not in "uif" or not dataset.dtype.isnative:
        return False
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    code, _flags, values, _name = plist.get_filter(0)
    return code == BITSHUFFLE_FILTER and len(values) >= 5 and values[4] == _LZ4 and _decompress_lz4() is not None


def read_frame_into(dataset, index: int, out: np.ndarray) -> bool:
    """Decompress frame ``index`` of ``dataset`` into ``out``; False where HDF5 must read it instead.

    Parameters
    ----------
    dataset : h5py.Dataset
        Frames for which :func:`whole_frame_chunks` is True.
    index : int
        Frame index along the first axis (ignored for a 2D dataset).
    out : (H, W) ndarray
        C-contiguous, writable, of the dataset's dtype and frame shape.

    Returns
    -------
    done : bool
        False (``out`` then undefined) for a chunk not written yet, one stored
        without its filter, or one whose header or compressed bytes do not
        decode to exactly ``out``'s bytes: the caller reads that frame
        through HDF5, which reports a damaged chunk in its own words.
    """
    try:
        filter_mask, chunk = dataset.id.read_direct_chunk((int(index), 0, 0) if dataset.ndim == 3 else (0, 0))
    except (OSError, ValueError, KeyError):  # no chunk stored at this frame (yet)
        return False
    if filter_mask or len(chunk) < _HEADER.size:
        return False
    size, block = _HEADER.unpack_from(chunk)
    if size != out.nbytes or block % out.itemsize:
        return False
    source = np.frombuffer(chunk, dtype=np.uint8)
    used = _decompress_lz4()(source.ctypes.data + _HEADER.size, out.ctypes.data, out.size, out.itemsize,
                             block // out.itemsize)
    return used == len(chunk) - _HEADER.size
