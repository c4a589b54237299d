"""Frame readers: every format gives the same frames, lazily, with clear errors."""

import numpy as np
import pytest

from braggflow.errors import InputFileError
from braggflow.io.frames import FabioSeries, FrameCacheSeries, HDF5Series, open_frames, read_image


@pytest.fixture
def stack(rng):
    return rng.poisson(5, size=(3, 40, 50)).astype(np.uint16)


def test_array_and_npy(stack, tmp_path):
    s = open_frames(stack)
    assert len(s) == 3 and s.shape == (40, 50)
    np.testing.assert_array_equal(s[-1], stack[2])
    np.save(tmp_path / "f.npy", stack)
    np.testing.assert_array_equal(open_frames(str(tmp_path / "f.npy"))[1], stack[1])
    with pytest.raises(IndexError):
        s[3]


def test_hdf5_nexus_default_and_explicit_path(stack, tmp_path):
    import h5py
    import hdf5plugin

    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["default"] = "entry"
        e = h5.create_group("entry")
        e.attrs["default"] = "plot"
        d = e.create_group("plot")
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "frames"
        d.create_dataset("frames", data=stack, chunks=(1, 40, 50), **hdf5plugin.Bitshuffle(cname="lz4"))
        e.create_dataset("other/big", data=np.zeros((5, 40, 50)))
    s = open_frames(str(path))
    assert isinstance(s, HDF5Series) and s.datasets == ["/entry/plot/frames"]
    np.testing.assert_array_equal(s[1], stack[1])
    s2 = open_frames(f"{path}::/entry/other/big")
    assert len(s2) == 5
    with pytest.raises(InputFileError, match="no dataset '/nope'"):
        open_frames(f"{path}::/nope")


def test_eiger_master_layout(stack, tmp_path):
    import h5py

    path = tmp_path / "master.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("entry/data/data_000001", data=stack[:2])
        h5.create_dataset("entry/data/data_000002", data=stack[2:])
        h5.create_dataset("entry/instrument/detector/pixel_mask", data=np.eye(40, 50, dtype=np.uint32))
    s = open_frames(str(path))
    assert len(s) == 3
    np.testing.assert_array_equal(s[2], stack[2])
    assert s.detector_mask.sum() == 40


def test_fabio_formats_folder_and_glob(stack, tmp_path):
    import fabio

    for i, f in enumerate(stack):
        fabio.edfimage.EdfImage(data=f).write(str(tmp_path / f"img_{i + 1}.edf"))
        fabio.tifimage.TifImage(data=f.astype(np.int32)).write(str(tmp_path / f"t_{i:03d}.tif"))
    s = open_frames(str(tmp_path / "img_*.edf"))
    assert isinstance(s, FabioSeries) and len(s) == 3
    np.testing.assert_array_equal(s[2], stack[2])
    t = open_frames([str(tmp_path / f"t_{i:03d}.tif") for i in range(3)])
    np.testing.assert_array_equal(t[1], stack[1])
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i in (10, 9, 2):  # natural order: 2, 9, 10
        fabio.tifimage.TifImage(data=np.full((4, 4), i, np.int32)).write(str(folder / f"x_{i}.tif"))
    assert [open_frames(str(folder))[k][0, 0] for k in range(3)] == [2, 9, 10]


def test_framecache_roundtrip(stack, tmp_path):
    arrays = {"shape": np.array([40, 50]), "nframes": np.array(3), "dtype": np.array(b"uint16"),
              "omega": np.array([[0, 1], [1, 2], [2, 3]], float)}
    for i, f in enumerate(stack):
        r, c = np.nonzero(f > 6)
        arrays.update({f"{i}_row": r, f"{i}_col": c, f"{i}_data": f[r, c]})
    np.savez(tmp_path / "fc.npz", **arrays)
    s = open_frames(str(tmp_path / "fc.npz"))
    assert isinstance(s, FrameCacheSeries)
    np.testing.assert_array_equal(s[1], np.where(stack[1] > 6, stack[1], 0))
    assert s.omega_centre(2) == 2.5


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        open_frames(str(tmp_path / "missing.h5"))
    bad = tmp_path / "corrupt.cbf"
    bad.write_bytes(b"###CBF: not really" + bytes(100))
    with pytest.raises(InputFileError, match="corrupt.cbf"):
        open_frames(str(bad))
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(50))
    with pytest.raises(InputFileError, match="trunc.h5"):
        open_frames(str(trunc))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        open_frames(str(empty))
    with pytest.raises(InputFileError, match="no such file"):
        read_image(tmp_path / "dark.edf", what="dark")


def test_series_with_wrong_frame_shape(tmp_path):
    import fabio

    fabio.edfimage.EdfImage(data=np.zeros((8, 8), np.int32)).write(str(tmp_path / "a_1.edf"))
    fabio.edfimage.EdfImage(data=np.zeros((8, 9), np.int32)).write(str(tmp_path / "a_2.edf"))
    s = open_frames(str(tmp_path / "a_*.edf"))
    with pytest.raises(InputFileError, match="a_2.edf.*expected \\(8, 8\\)"):
        s[1]


def test_real_frames_read(shared_data):
    s = open_frames(str(shared_data / "hexrd_zr_ge2" / "LT1_Ne_zr001_00000-fc_GE2.npz"))
    assert len(s) == 100 and s.shape == (2048, 2048) and s.omega.shape == (100, 2)
    assert s[0].max() > 1000
    g = open_frames(str(shared_data / "giwaxs_gixsgui"))
    assert len(g) == 5 and g.shape == (1043, 981)
