"""Reading frames into a reused buffer gives the same frames as indexing."""

import numpy as np
import pytest

from braggflow.io.frames import open_frames


def test_hdf5_read_into_a_buffer_and_other_series(rng, tmp_path):
    import h5py
    import hdf5plugin

    stack = rng.poisson(5, size=(4, 40, 50)).astype(np.uint32)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("entry/data/data_000001", data=stack[:3], chunks=(1, 40, 50),
                          **hdf5plugin.Bitshuffle(cname="lz4"))
        h5.create_dataset("entry/data/data_000002", data=stack[3:])
    series = open_frames(str(path))
    buffer = None
    for i in range(len(series)):
        frame = series.read(i, out=buffer)
        np.testing.assert_array_equal(frame, stack[i])
        if buffer is not None:
            assert frame is buffer  # filled in place
        buffer = frame
    np.testing.assert_array_equal(series.read(-1, out=buffer), stack[-1])
    # a buffer of another dtype or shape is not used
    other = np.zeros((40, 50), dtype=np.float32)
    frame = series.read(0, out=other)
    assert frame is not other and not other.any()
    # in-memory series hand out their own arrays and never write into a buffer
    arrays = open_frames(stack.copy())
    first = arrays.read(0)
    second = arrays.read(1, out=first)
    np.testing.assert_array_equal(arrays[0], stack[0])
    np.testing.assert_array_equal(second, stack[1])


def _write(path, name, data, **options):
    import h5py

    with h5py.File(path, "a") as h5:
        h5.create_dataset(name, data=data, **options)


def test_bitshuffle_lz4_frames_are_decompressed_into_the_buffer(rng, tmp_path, monkeypatch):
    """Whole-frame bitshuffle-LZ4 chunks go straight to the buffer and give HDF5's values, for every dtype and a
    frame whose size is no multiple of bitshuffle's 8-element groups; other layouts are read by HDF5."""
    import h5py
    import hdf5plugin

    from braggflow.io import bitshuffle
    from braggflow.io.bitshuffle import read_frame_into, whole_frame_chunks

    decoded = []  # frames the series decompressed itself

    def counted(dataset, index, out):
        done = read_frame_into(dataset, index, out)
        decoded.append(done)
        return done

    monkeypatch.setattr(bitshuffle, "read_frame_into", counted)
    bslz4 = hdf5plugin.Bitshuffle(cname="lz4")
    cases = {
        "u16": (rng.poisson(30, size=(3, 37, 53)).astype(np.uint16), dict(chunks=(1, 37, 53), **bslz4), True),
        "u32": (rng.poisson(30, size=(3, 64, 48)).astype(np.uint32), dict(chunks=(1, 64, 48), **bslz4), True),
        "i32": (rng.integers(-5, 9, size=(3, 33, 31)).astype(np.int32), dict(chunks=(1, 33, 31), **bslz4), True),
        "f32": (rng.normal(size=(3, 40, 40)).astype(np.float32), dict(chunks=(1, 40, 40), **bslz4), True),
        "frame2d": (rng.poisson(9, size=(41, 43)).astype(np.uint32), dict(chunks=(41, 43), **bslz4), True),
        "half_frames": (rng.poisson(9, size=(3, 40, 40)).astype(np.uint32), dict(chunks=(1, 20, 40), **bslz4), False),
        "zstd": (rng.poisson(9, size=(3, 40, 40)).astype(np.uint32),
                 dict(chunks=(1, 40, 40), **hdf5plugin.Bitshuffle(cname="zstd")), False),
        "gzip": (rng.poisson(9, size=(3, 40, 40)).astype(np.uint32), dict(chunks=(1, 40, 40), compression="gzip"),
                 False),
        "big_endian": (rng.poisson(9, size=(3, 40, 40)).astype(">u4"), dict(chunks=(1, 40, 40), **bslz4), False),
    }
    for name, (data, options, applies) in cases.items():
        path = tmp_path / f"{name}.h5"
        _write(path, "entry/data/data", data, **options)
        with h5py.File(path, "r") as h5:
            assert whole_frame_chunks(h5["entry/data/data"]) is applies, name
            if applies:
                out = np.full(data.shape[-2:], 7, dtype=data.dtype)
                assert read_frame_into(h5["entry/data/data"], 1, out)
                np.testing.assert_array_equal(out, data[1] if data.ndim == 3 else data)
        series = open_frames(str(path))
        frames = data if data.ndim == 3 else data[None]
        buffer = np.empty(frames.shape[1:], dtype=series.dtype)
        decoded.clear()
        for i in range(len(frames)):
            np.testing.assert_array_equal(series[i], frames[i])
            assert series.read(i, out=buffer) is buffer
            np.testing.assert_array_equal(buffer, frames[i])
        assert decoded == [True] * (2 * len(frames) if applies else 0), name


def test_bitshuffle_chunks_hdf5_must_read_are_left_to_it(rng, tmp_path):
    """A chunk stored without its filter, or one whose bytes do not decode to a frame, is not decompressed into the
    buffer: the first is read by HDF5 as it is, the second fails with an error naming the file and frame."""
    import h5py
    import hdf5plugin

    from braggflow.errors import InputFileError
    from braggflow.io.bitshuffle import read_frame_into

    data = rng.poisson(20, size=(3, 32, 40)).astype(np.uint32)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("entry/data/data", shape=data.shape, dtype=data.dtype, chunks=(1, 32, 40),
                                 **hdf5plugin.Bitshuffle(cname="lz4"))
        dset[0] = data[0]
        dset.id.write_direct_chunk((1, 0, 0), data[1].tobytes(), filter_mask=1)  # stored raw: the filter skipped
        good = dset.id.read_direct_chunk((0, 0, 0))[1]
        damaged = good[:12] + bytes(len(good) - 12)  # the header kept, the compressed blocks zeroed
        dset.id.write_direct_chunk((2, 0, 0), damaged)
    with h5py.File(path, "r") as h5:
        out = np.empty((32, 40), dtype=np.uint32)
        assert read_frame_into(h5["entry/data/data"], 0, out)
        np.testing.assert_array_equal(out, data[0])
        assert not read_frame_into(h5["entry/data/data"], 1, out)
        assert not read_frame_into(h5["entry/data/data"], 2, out)
    series = open_frames(str(path))
    buffer = np.empty((32, 40), dtype=np.uint32)
    np.testing.assert_array_equal(series.read(1, out=buffer), data[1])
    np.testing.assert_array_equal(series[1], data[1])
    with pytest.raises(InputFileError, match=r"frames\.h5 frame 2: cannot read"):
        series.read(2, out=buffer)
    with pytest.raises(InputFileError, match=r"frames\.h5 frame 2: cannot read"):
        series[2]


def test_virtual_frames_of_bitshuffle_files_are_read_by_hdf5(rng, tmp_path):
    """A virtual dataset (Eiger 2 and Jungfrau master files) has no chunks of its own: HDF5 reads it, through its
    sources' filters, and the frames are the sources'."""
    import h5py
    import hdf5plugin

    from braggflow.io.bitshuffle import whole_frame_chunks

    data = rng.poisson(5, size=(4, 32, 36)).astype(np.uint32)
    _write(tmp_path / "source.h5", "data", data, chunks=(1, 32, 36), **hdf5plugin.Bitshuffle(cname="lz4"))
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "data", shape=data.shape)
    with h5py.File(tmp_path / "master.h5", "w") as h5:
        h5.create_virtual_dataset("entry/data/data", layout)
    with h5py.File(tmp_path / "master.h5", "r") as h5:
        assert not whole_frame_chunks(h5["entry/data/data"])
    series = open_frames(str(tmp_path / "master.h5"))
    buffer = np.empty((32, 36), dtype=np.uint32)
    for i in range(len(data)):
        np.testing.assert_array_equal(series.read(i, out=buffer), data[i])
        np.testing.assert_array_equal(series[i], data[i])


def test_several_hdf5_files_read_into_one_buffer(rng, tmp_path):
    """A list of HDF5 files is one series whose frames are each read into the run's buffer by their file."""
    import hdf5plugin

    first = rng.poisson(20, size=(2, 32, 40)).astype(np.uint32)
    second = rng.poisson(20, size=(3, 32, 40)).astype(np.uint32)
    _write(tmp_path / "a.h5", "entry/data/data", first, chunks=(1, 32, 40), **hdf5plugin.Bitshuffle(cname="lz4"))
    _write(tmp_path / "b.h5", "entry/data/data", second)  # contiguous, no filter: HDF5's read_direct
    series = open_frames([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")])
    frames = np.concatenate([first, second])
    buffer = np.empty((32, 40), dtype=np.uint32)
    for i in range(len(frames)):
        assert series.read(i, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, frames[i])
