"""Reading frames into a reused buffer gives the same frames as indexing."""

import numpy as np

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
