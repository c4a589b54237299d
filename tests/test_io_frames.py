"""Frame readers: every format gives the same frames, lazily, with clear errors."""

from pathlib import Path

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
    # numbers compare as numbers wherever they are; capitals before lower case
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("b_1.tif", "a2b10.tif", "a10b1.tif", "a2b9.tif", "B_2.tif"):
        fabio.tifimage.TifImage(data=np.zeros((4, 4), np.int32)).write(str(mixed / name))
    expected = ["B_2.tif", "a2b9.tif", "a2b10.tif", "a10b1.tif", "b_1.tif"]
    assert [Path(p).name for p in open_frames(str(mixed / "*.tif")).sources] == expected
    assert [Path(p).name for p in open_frames(str(mixed)).sources] == expected


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


SWMR_STEPPER = """
import sys, h5py, numpy as np
frames = np.load(sys.argv[1])
with h5py.File(sys.argv[2], "w", libver="latest") as h5:
    h5.create_dataset("entry/instrument/detector/pixel_mask", data=np.zeros(frames.shape[1:], np.uint32))
    ds = h5.create_dataset("/entry/data/data", shape=(0,) + frames.shape[1:], maxshape=(None,) + frames.shape[1:],
                           chunks=(1,) + frames.shape[1:], dtype=frames.dtype)
    h5.swmr_mode = True
    print("ready", flush=True)
    for i, frame in enumerate(frames):
        sys.stdin.readline()  # one frame per request
        ds.resize(i + 1, axis=0)
        ds[i] = frame
        ds.flush()
        print("wrote", i, flush=True)
    sys.stdin.readline()
"""


def test_hdf5_swmr_series_grows_with_refresh(stack, tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "frames.npy", stack)
    path = tmp_path / "scan.h5"
    proc = subprocess.Popen([sys.executable, "-c", SWMR_STEPPER, str(tmp_path / "frames.npy"), str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # the writer still has the file open; the 2D pixel mask is larger than the empty frame stack,
        # yet a growing series is the 3D dataset
        series = open_frames(str(path), swmr=True)
        assert isinstance(series, HDF5Series) and series.datasets == ["/entry/data/data"]
        assert len(series) == 0 and series.shape == (40, 50) and series.refresh() == 0
        for i in range(3):
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["wrote", str(i)]
            with pytest.raises(IndexError):  # not seen before refresh
                series[i]
            assert series.refresh() == i + 1 and len(series) == i + 1
            np.testing.assert_array_equal(series[i], stack[i])
        np.testing.assert_array_equal(series[0], stack[0])
        series.close()
        proc.stdin.write("\n")
        proc.stdin.flush()
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    # a 2D dataset cannot grow: refused by name for SWMR, accepted without
    with pytest.raises(InputFileError, match="3D"):
        open_frames(f"{path}::/entry/instrument/detector/pixel_mask", swmr=True)
    assert len(open_frames(f"{path}::/entry/instrument/detector/pixel_mask")) == 1


def test_hdf5_refresh_without_swmr_reopens_the_file(stack, tmp_path):
    import h5py

    path = tmp_path / "grow.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("frames", data=stack[:1], maxshape=(None, 40, 50))
    series = open_frames(str(path))
    assert len(series) == 1
    with h5py.File(path, "a") as h5:
        h5["frames"].resize(3, axis=0)
        h5["frames"][1:] = stack[1:]
    assert len(series) == 1 and series.refresh() == 3
    np.testing.assert_array_equal(series[2], stack[2])
    assert open_frames(stack).refresh() == 3  # static series: length unchanged


def test_fabio_series_decodes_each_file_once(stack, tmp_path, monkeypatch):
    import fabio

    paths = []
    for i, f in enumerate(stack):
        paths.append(str(tmp_path / f"t_{i}.tif"))
        fabio.tifimage.TifImage(data=f).write(paths[-1])
    fabio.edfimage.EdfImage(data=stack[0]).write(str(tmp_path / "multi.edf"))
    with fabio.open(str(tmp_path / "multi.edf")) as edf:
        for f in stack[1:]:
            edf.append_frame(data=f)
        edf.save(str(tmp_path / "multi.edf"))
    opened = []
    real_open = fabio.open
    monkeypatch.setattr(fabio, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    series = open_frames(paths)
    frames = [series[i] for i in range(3)]
    # the first file is opened once for its shape and its frame; the other TIFF files' pixels are tifffile's
    assert opened == paths[:1]
    for got, want in zip(frames, stack):
        np.testing.assert_array_equal(got, want)
    opened.clear()
    multi = open_frames(str(tmp_path / "multi.edf"))
    assert len(multi) == 3
    for i in (2, 1):  # the frames of a multi-frame file come from the one opened file
        np.testing.assert_array_equal(multi[i], stack[i])
    assert opened == [str(tmp_path / "multi.edf")]
    # frame 0 is handed out, not kept: a second read decodes again and gives the same pixels
    first = multi[0]
    first[:] = 0
    np.testing.assert_array_equal(multi[0], stack[0])


def test_a_folder_of_several_kinds_of_file_is_refused_naming_them(tmp_path):
    """Two multi-frame HDF5 files and a preview TIFF: refused (not read as 3 frames); a glob selects one kind."""
    import h5py
    import tifffile

    from braggflow.errors import InputFileError
    from braggflow.io.frames import open_frames

    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["data"] = np.zeros((20, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "preview.tif", np.zeros((16, 16), np.uint16))
    with pytest.raises(InputFileError, match=r"several kinds \(HDF5: 2 \(a.h5, b.h5\); TIF: 1 \(preview.tif\)\)"):
        open_frames(str(tmp_path))
    assert len(open_frames(str(tmp_path / "*.h5"))) == 40


def test_a_truncated_edf_is_refused_naming_it(tmp_path):
    """fabio reads a cut EDF as a zero-padded frame; the reader refuses it instead."""
    import fabio

    from braggflow.errors import InputFileError
    from braggflow.io.frames import open_frames

    path = tmp_path / "frame_0001.edf"
    fabio.edfimage.EdfImage(data=np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).write(str(path))
    assert open_frames(str(path))[0][63, 63] == 64 * 64 - 1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    with pytest.raises(InputFileError, match="frame_0001.edf: truncated EDF"):
        open_frames(str(path))


def test_an_edf_whose_data_begins_with_a_line_feed_byte_is_complete(tmp_path):
    """The header's end is '}' and one line end; data bytes 10 or 13 right after it are data."""
    import fabio

    from braggflow.io.frames import open_frames

    data = np.full((8, 8), 10, np.uint16)  # little-endian: the first data byte is 0x0a
    fabio.edfimage.EdfImage(data=data).write(str(tmp_path / "lf.edf"))
    np.testing.assert_array_equal(open_frames(str(tmp_path / "lf.edf"))[0], data)


def test_tiff_pixels_are_tifffile_s_where_they_are_fabio_s(rng, tmp_path, monkeypatch):
    """tifffile reads the pages of TIFF series (into the run's buffer too) and gives fabio's pixels; a page it
    cannot give as fabio would (colour, a compression it cannot decode here, a damaged file) is read by fabio."""
    import fabio
    import tifffile

    from braggflow.io import images

    cases = {
        "int32": (rng.poisson(20, size=(3, 37, 41)).astype(np.int32), {}),
        "uint16": (rng.poisson(20, size=(3, 40, 40)).astype(np.uint16), {}),
        "float32": (rng.normal(size=(3, 33, 35)).astype(np.float32), {}),
        "deflate": (rng.poisson(20, size=(3, 40, 40)).astype(np.int32), {"compression": "zlib"}),
    }
    read_by = []
    real = images.tiff_frame
    monkeypatch.setattr(images, "tiff_frame",
                        lambda *a, **k: read_by.append(real(*a, **k) is not None) or real(*a, **k))
    for name, (stack, options) in cases.items():
        paths = [str(tmp_path / f"{name}_{i}.tif") for i in range(len(stack))]
        for path, frame in zip(paths, stack):
            tifffile.imwrite(path, frame, **options)
        series = open_frames(paths)
        buffer = np.zeros(stack.shape[1:], dtype=series.dtype)
        read_by.clear()
        for i, path in enumerate(paths):
            want = fabio.open(path).data
            np.testing.assert_array_equal(series[i], want)
            np.testing.assert_array_equal(series.read(i, out=buffer), want)
        # file 0 by index is fabio's decode from opening the series (handed out, not kept), into the buffer
        # tifffile's; files 1 and 2 tifffile's both times
        assert read_by == [True] * 5, name
    # a multi-page file: its pages from the one fabio image kept open (tifffile would walk the pages to each)
    stack = rng.poisson(9, size=(3, 30, 30)).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as pages_file:
        for frame in stack:
            pages_file.write(frame, contiguous=False)  # one page (image file directory) a frame
    pages = open_frames(str(tmp_path / "pages.tif"))
    assert len(pages) == 3
    read_by.clear()
    for i in (2, 1, 0):
        np.testing.assert_array_equal(pages[i], stack[i])
    assert read_by == []
    # a colour page among grey ones, and a damaged file: fabio reads them, and the series refuses them as before
    grey = rng.integers(0, 255, size=(24, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g_0.tif", grey)
    tifffile.imwrite(tmp_path / "g_1.tif", np.stack([grey] * 3, axis=-1), photometric="rgb")
    mixed = open_frames([str(tmp_path / "g_0.tif"), str(tmp_path / "g_1.tif")])
    read_by.clear()
    with pytest.raises(InputFileError, match=r"g_1\.tif: frame has shape \(24, 24, 3\), expected \(24, 24\)"):
        mixed[1]  # fabio's colour frame, refused as before
    assert read_by == [False]
    whole = (tmp_path / "int32_2.tif").read_bytes()
    (tmp_path / "int32_2.tif").write_bytes(whole[: len(whole) // 2])
    damaged = open_frames([str(tmp_path / f"int32_{i}.tif") for i in range(3)])
    with pytest.raises(InputFileError, match="int32_2.tif"):
        damaged[2]
