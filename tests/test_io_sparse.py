"""ImageD11 sparse HDF5 frames: :class:`braggflow.io.sparse.SparseSeries` and its choice by ``open_frames``.

The files are written by :func:`write_sparse`, which follows the layout of
ImageD11 2.1.3's ``sinograms/assemble_label.py::harvest_masterfile`` (scan
group ``1.1`` with ``nframes``/``shape0``/``shape1``/``itype``, lzf-compressed
``row``/``col``/``intensity``, ``nnz``, ``measurement/rot_center``).  When
ImageD11 is installed, its own writer (``lima_segmenter.segment_lima``) and
reader (``sparseframe.SparseScan``) check the two agree.
"""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from braggflow.errors import InputFileError
from braggflow.io.frames import HDF5Series, open_frames
from braggflow.io.sparse import FrameIndexError, SparseSeries, omega_ranges_from_centres, sparse_scans

OPTS = {"chunks": (10000,), "maxshape": (None,), "compression": "lzf", "shuffle": True}


def write_sparse(path, frames, *, scan="1.1", omega=None, omega_name="measurement/rot_center", cut=0,
                 frame_dataset=False, external=False):
    """Write ``frames`` (N, H, W) as an ImageD11 sparse scan: the pixels above ``cut``, frame after frame.

    ``external``: row/col/intensity in raw files beside the HDF5 file (contiguous, uncompressed).
    """
    frames = np.asarray(frames)
    n, h, w = frames.shape
    frame, rows, cols = np.nonzero(frames > cut)  # frame, then row, then column order, as ImageD11 stores them
    with h5py.File(path, "a") as h5:
        g = h5.require_group(scan)
        g.attrs.update({"itype": frames.dtype.name, "nframes": n, "shape0": h, "shape1": w})
        data = {"row": rows.astype(np.uint16), "col": cols.astype(np.uint16), "intensity": frames[frame, rows, cols]}
        for name, values in data.items():
            if external:
                raw = f"{path}.{scan}.{name}.raw"
                g.create_dataset(name, data=values, external=[(str(raw), 0, values.nbytes)])
            else:
                g.create_dataset(name, data=values, **OPTS)
        g.create_dataset("nnz", data=np.bincount(frame, minlength=n).astype(np.uint32))
        if frame_dataset:
            g.create_dataset("frame", data=frame.astype(np.uint32), **OPTS)
        if omega is not None:
            g.create_dataset(omega_name, data=np.asarray(omega, dtype=float))
    return path


def peaks_stack(rng, n=6, shape=(48, 64), *, dtype=np.uint16, per_frame=3):
    """Frames with a few bright pixels and blobs, some frames empty; pixels on the edges too."""
    frames = np.zeros((n, *shape), dtype=dtype)
    for i in range(n):
        if i % 3 == 2:
            continue  # an empty frame
        r = rng.integers(0, shape[0], per_frame)
        c = rng.integers(0, shape[1], per_frame)
        frames[i, r, c] = rng.integers(5, 1000, per_frame).astype(dtype)
    frames[0, 0, 0] = 7
    frames[0, shape[0] - 1, shape[1] - 1] = 9
    frames[1, 10:13, 20:23] = 40
    return frames


@pytest.fixture
def stack(rng):
    return peaks_stack(rng)


@pytest.fixture
def sparse_file(tmp_path, stack):
    omega = 10.0 + 0.25 * np.arange(len(stack)) + 0.125
    return write_sparse(tmp_path / "scan.h5", stack, omega=omega)


# -- reading --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.float32])
def test_dense_frames_read_back_equal(tmp_path, rng, dtype):
    frames = peaks_stack(rng, dtype=dtype)
    s = SparseSeries(write_sparse(tmp_path / "s.h5", frames))
    assert (len(s), s.shape, s.dtype, s.scan) == (len(frames), frames.shape[1:], np.dtype(dtype), "1.1")
    assert s.sources == [str(tmp_path / "s.h5")] and s.detector_mask is None
    np.testing.assert_array_equal(np.stack(list(s)), frames)
    assert s[-1].dtype == np.dtype(dtype) and np.array_equal(s[-1], frames[-1])
    rows, cols, values = s.sparse_frame(1)
    np.testing.assert_array_equal(values, frames[1][rows, cols])
    assert len(values) == np.count_nonzero(frames[1])
    assert all(len(a) == 0 for a in s.sparse_frame(2))  # an empty frame


def test_omega_ranges_from_rot_center(sparse_file, stack):
    s = SparseSeries(sparse_file)
    centres = 10.0 + 0.25 * np.arange(len(stack)) + 0.125
    assert s.omega_name == "measurement/rot_center" and s.omega.shape == (len(stack), 2)
    np.testing.assert_allclose(s.omega[:, 0], centres - 0.125)
    np.testing.assert_allclose(s.omega[:, 1], centres + 0.125)
    np.testing.assert_allclose([s.omega_centre(i) for i in range(len(s))], centres)


def test_omega_ranges_from_centres_steps_from_neighbours():
    np.testing.assert_allclose(omega_ranges_from_centres([0.5, 1.5, 3.5]), [[0, 1], [1, 2.5], [2.5, 4.5]])
    # crossing 360 -> 0 keeps the step (each range around its own centre);
    # a scan turning the other way gives start > stop
    np.testing.assert_allclose(omega_ranges_from_centres([359.0, 1.0, 3.0]), [[358, 360], [0, 2], [2, 4]])
    np.testing.assert_allclose(omega_ranges_from_centres([5.0, 4.0]), [[5.5, 4.5], [4.5, 3.5]])
    np.testing.assert_allclose(omega_ranges_from_centres([7.0]), [[7.0, 7.0]])
    assert omega_ranges_from_centres([]).shape == (0, 2)


def test_omega_from_rot_when_no_rot_center_scalar_angle_and_none(tmp_path, stack):
    s = SparseSeries(write_sparse(tmp_path / "a.h5", stack, omega=np.arange(len(stack)), omega_name="measurement/rot"))
    assert s.omega_name == "measurement/rot"
    np.testing.assert_allclose(s.omega[:, 0], np.arange(len(stack)) - 0.5)
    s = SparseSeries(write_sparse(tmp_path / "b.h5", stack, omega=42.0))
    np.testing.assert_allclose(s.omega, 42.0)
    s = SparseSeries(write_sparse(tmp_path / "c.h5", stack))
    assert s.omega is None and s.omega_name is None and np.isnan(s.omega_centre(0))


def test_pixels_block_equals_concatenated_frame_reads(tmp_path, rng):
    frames = peaks_stack(rng, n=20, per_frame=6)
    s = SparseSeries(write_sparse(tmp_path / "s.h5", frames, frame_dataset=True))
    for start, stop in [(0, 20), (3, 11), (2, 3), (5, 5), (19, 20)]:
        fi, rows, cols, values = s.pixels(start, stop)
        parts = [s.sparse_frame(i) for i in range(start, stop)]
        expected_fi = np.concatenate([np.full(len(p[0]), i, np.int64) for i, p in zip(range(start, stop), parts)]
                                     + [np.empty(0, np.int64)])
        np.testing.assert_array_equal(fi, expected_fi)
        for k, got in enumerate((rows, cols, values)):
            np.testing.assert_array_equal(got, np.concatenate([p[k] for p in parts] + [got[:0]]))
    fi, rows, cols, values = s.pixels()
    dense = np.zeros_like(frames)
    dense[fi, rows, cols] = values
    np.testing.assert_array_equal(dense, frames)
    assert fi.dtype == np.int64 and values.dtype == frames.dtype


def test_opening_reads_no_pixel(tmp_path, stack):
    """Opening reads attributes, nnz and omega only: with the pixel data gone, it still opens."""
    path = write_sparse(tmp_path / "ext.h5", stack, omega=np.arange(len(stack)), external=True)
    for name in ("row", "col", "intensity"):
        os.remove(f"{path}.1.1.{name}.raw")
    s = SparseSeries(path)
    assert len(s) == len(stack) and s.shape == stack.shape[1:] and s.omega.shape == (len(stack), 2)
    assert s.nnz.sum() == np.count_nonzero(stack)
    with pytest.raises(InputFileError, match="cannot read the pixels of frames 0:1"):
        s[0]


def test_series_pickles_without_its_file_handle(sparse_file, stack):
    s = SparseSeries(sparse_file)
    s[0]
    assert s._h5 is not None
    t = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(t[1], stack[1])
    s.close()
    assert s._h5 is None


# -- choosing the reader --------------------------------------------------------------------------------------------


def test_open_frames_picks_sparse_series(sparse_file, stack, tmp_path):
    s = open_frames(str(sparse_file))
    assert isinstance(s, SparseSeries) and s.scan == "1.1"
    np.testing.assert_array_equal(s[1], stack[1])
    s.close()
    assert isinstance(open_frames(f"{sparse_file}::1.1"), SparseSeries)
    assert open_frames(sparse_file, dataset="/1.1").scan == "1.1"
    # detected by layout, not name: any group name, any file suffix, nested groups
    other = write_sparse(tmp_path / "frames.data", stack, scan="entry_0000/measurement/data")
    assert open_frames(str(other)).scan == "entry_0000/measurement/data"
    assert sparse_scans(str(other)) == ["entry_0000/measurement/data"]
    # an HDF5 file of dense frames keeps its reader
    with h5py.File(tmp_path / "dense.h5", "w") as h5:
        h5["entry/data/data"] = stack
    assert isinstance(open_frames(str(tmp_path / "dense.h5")), HDF5Series)
    assert sparse_scans(str(tmp_path / "dense.h5")) == []
    # a dense dataset named in a file that also holds a sparse scan
    with h5py.File(sparse_file, "a") as h5:
        h5["dense"] = stack
    assert isinstance(open_frames(f"{sparse_file}::/dense"), HDF5Series)


def test_several_scans_choose_one(tmp_path, stack):
    path = tmp_path / "multi.h5"
    for scan in ("2.1", "10.1", "1.1"):
        write_sparse(path, stack + int(float(scan)), scan=scan)
    assert sparse_scans(str(path)) == ["1.1", "2.1", "10.1"]
    with pytest.raises(InputFileError, match=r"multi.h5: holds 3 ImageD11 sparse scans \(1.1, 2.1, 10.1\); choose"):
        open_frames(str(path))
    np.testing.assert_array_equal(open_frames(f"{path}::10.1")[0], stack[0] + 10)
    np.testing.assert_array_equal(SparseSeries(str(path), scan="2.1")[0], stack[0] + 2)
    with pytest.raises(InputFileError, match=r"no scan group '3.1' \(ImageD11 sparse scans: 1.1, 2.1, 10.1\)"):
        open_frames(f"{path}::3.1")


def test_sparse_files_refused_in_a_list_and_with_swmr(sparse_file, stack, tmp_path):
    second = write_sparse(tmp_path / "second.h5", stack)
    with pytest.raises(InputFileError, match="read one file .and scan. at a time"):
        open_frames([str(sparse_file), str(second)])
    with pytest.raises(InputFileError, match="cannot be read while it is written"):
        open_frames(str(sparse_file), swmr=True)


# -- errors ---------------------------------------------------------------------------------------------------------


def _edit(path, fn):
    with h5py.File(path, "a") as h5:
        fn(h5["1.1"])
    return str(path)


def _replace(name, values):
    def fn(g):
        del g[name]
        g[name] = values
    return fn


def test_error_nnz_sum_differs_from_row_length(sparse_file, stack):
    nnz = np.bincount(np.nonzero(stack)[0], minlength=len(stack)).astype(np.uint32)
    nnz[0] -= 1
    path = _edit(sparse_file, _replace("nnz", nnz))
    with pytest.raises(InputFileError, match=rf"scan.h5::1.1: nnz adds up to {nnz.sum()} pixels but row holds "
                                             rf"{nnz.sum() + 1}; expected equal"):
        open_frames(path)


def test_error_nnz_length_differs_from_nframes(sparse_file):
    path = _edit(sparse_file, lambda g: g.attrs.__setitem__("nframes", 99))
    with pytest.raises(InputFileError, match=r"1.1/nnz: 6 values, expected one per frame \(nframes = 99\)"):
        SparseSeries(path)


@pytest.mark.parametrize("name, axis", [("row", 0), ("col", 1)])
def test_error_row_or_col_outside_the_frame(sparse_file, stack, name, axis):
    frame, rows, cols = np.nonzero(stack)
    values = (rows if axis == 0 else cols).astype(np.uint16)
    k = int(np.flatnonzero(frame == 3)[0])
    values[k] = stack.shape[1 + axis]
    path = _edit(sparse_file, _replace(name, values))
    s = SparseSeries(path)  # opening does not read the pixels
    s[0]
    with pytest.raises(InputFileError, match=rf"scan.h5::1.1/{name}: value {stack.shape[1 + axis]} in frame 3, "
                                             rf"expected 0 <= {name} < {stack.shape[1 + axis]}"):
        s[3]
    with pytest.raises(InputFileError, match="in frame 3"):
        s.pixels()


@pytest.mark.parametrize("missing", ["row", "col", "intensity", "nnz"])
def test_error_missing_dataset(sparse_file, missing):
    path = _edit(sparse_file, lambda g: g.__delitem__(missing))
    with pytest.raises(InputFileError, match=rf"scan.h5::1.1: missing {missing} \(an ImageD11 sparse scan has "
                                             r"attributes nframes, shape0, shape1 and 1D datasets row, col, "):
        open_frames(path)


def test_error_missing_attribute_and_unequal_lengths(sparse_file):
    path = _edit(sparse_file, lambda g: g.attrs.__delitem__("shape1"))
    with pytest.raises(InputFileError, match=r"1.1: missing attribute shape1 \(an ImageD11"):
        open_frames(path)
    path = _edit(sparse_file, lambda g: g.attrs.__setitem__("shape1", 64))
    path = _edit(sparse_file, _replace("col", np.zeros(3, np.uint16)))
    with pytest.raises(InputFileError, match="row, col and intensity must have one length"):
        SparseSeries(path)


def test_error_frame_index_beyond_nframes(sparse_file, stack):
    s = SparseSeries(sparse_file)
    n = len(stack)
    for call in (lambda: s.sparse_frame(n), lambda: s.sparse_frame(-n - 1), lambda: s.pixels(0, n + 1),
                 lambda: s.pixels(3, 2)):
        with pytest.raises(InputFileError, match=rf"scan.h5::1.1: frames? .* beyond the scan, expected .*= {n}"):
            call()
    with pytest.raises(IndexError):  # also an IndexError, as series[n] raises
        s.sparse_frame(n)
    with pytest.raises(IndexError):
        s[n]
    assert issubclass(FrameIndexError, InputFileError) and issubclass(FrameIndexError, IndexError)


def test_error_frame_dataset_beyond_nframes_or_disagreeing(tmp_path, stack):
    frame = np.nonzero(stack)[0].astype(np.uint32)
    bad = frame.copy()
    bad[-1] = len(stack)
    path = _edit(write_sparse(tmp_path / "f.h5", stack, frame_dataset=True), _replace("frame", bad))
    with pytest.raises(InputFileError, match=rf"1.1/frame: frame index {len(stack)} at pixel {len(frame) - 1} is "
                                             rf"beyond the scan, expected 0 <= frame < nframes = {len(stack)}"):
        SparseSeries(path).pixels()
    bad = frame.copy()
    bad[0] = 4
    path = _edit(path, _replace("frame", bad))
    with pytest.raises(InputFileError, match="pixel 0 is in frame 4, but nnz puts it in frame 0"):
        SparseSeries(path)[0]


def test_error_omega_length(sparse_file):
    path = _edit(sparse_file, _replace("measurement/rot_center", np.arange(4.0)))
    with pytest.raises(InputFileError, match=r"1.1/measurement/rot_center: 4 angles, expected one per frame "
                                             r"\(nframes = 6\)"):
        SparseSeries(path)


def test_error_missing_virtual_source(tmp_path, stack):
    part = write_sparse(tmp_path / "part.h5", stack)
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as h5:
        g = h5.create_group("1.1")
        with h5py.File(part) as src:
            g.attrs.update(src["1.1"].attrs)
            for name in ("row", "col", "intensity", "nnz"):
                layout = h5py.VirtualLayout(shape=src["1.1"][name].shape, dtype=src["1.1"][name].dtype)
                layout[:] = h5py.VirtualSource("part.h5", f"1.1/{name}", shape=src["1.1"][name].shape)
                g.create_virtual_dataset(name, layout)
    np.testing.assert_array_equal(SparseSeries(str(path))[1], stack[1])
    os.remove(part)
    with pytest.raises(InputFileError, match=r"vds.h5::1.1/row: virtual dataset whose source file part.h5 is missing"):
        SparseSeries(str(path))


def test_error_no_scan(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as h5:
        h5.create_group("1.1")
    with pytest.raises(InputFileError, match="no ImageD11 sparse scan found"):
        SparseSeries(str(tmp_path / "empty.h5"))


# -- end to end -----------------------------------------------------------------------------------------------------


def test_braggflow_run_on_a_sparse_file_finds_the_peaks(tmp_path):
    from braggflow.cli import main
    from braggflow.io.results import read_peaks

    rng = np.random.default_rng(7)
    shape, n = (96, 112), 4
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = []
    frames = rng.poisson(2.0, (n, *shape)).astype(np.float32)
    for i in range(n):
        for r, c in [(20, 24), (48, 80), (75, 40)]:  # well apart, moved a little on each frame
            r, c = r + rng.uniform(-3, 3), c + rng.uniform(-3, 3)
            frames[i] += 800 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.3**2))
            truth.append((i, r, c))
    frames = np.round(frames).astype(np.uint16)
    # thresholded as ImageD11 stores frames: only the peaks' pixels are kept, the Poisson background is not
    path = write_sparse(tmp_path / "sparse.h5", frames, omega=0.05 + 0.1 * np.arange(n), cut=15)
    out = tmp_path / "out.h5"
    try:
        main(["run", str(path), "-o", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    table = read_peaks(out)
    truth = pd.DataFrame(truth, columns=["frame", "row", "col"])
    for (i, r, c) in truth.itertuples(index=False):
        peaks = table[table["frame"] == i]
        assert np.hypot(peaks["row"] - r, peaks["col"] - c).min() < 0.5, (i, r, c)
    assert len(table) == len(truth)
    np.testing.assert_allclose(table.groupby("frame")["omega"].first(), 0.05 + 0.1 * np.arange(n))


# -- ImageD11's own writer and reader -------------------------------------------------------------------------------


@pytest.fixture
def imaged11():
    return pytest.importorskip("ImageD11.sparseframe", reason="ImageD11 not installed (pip install imaged11)")


def test_imaged11_lima_segmenter_output_reads_back(imaged11, tmp_path, stack):
    """A file written by ImageD11's ``segment_lima`` reads as ImageD11's ``SparseScan`` reads it."""
    from ImageD11.sinograms import lima_segmenter

    dense, sparse = tmp_path / "lima.h5", tmp_path / "lima_sparse.h5"
    with h5py.File(dense, "w") as h5:
        h5["entry_0000/measurement/data"] = stack
    options = lima_segmenter.SegmenterOptions(cut=6, howmany=10**6, pixels_in_spot=1)
    options.setup()
    options.mask = np.ones(stack.shape[1:], np.uint8)
    saved, lima_segmenter.OPTIONS = lima_segmenter.OPTIONS, options
    try:
        lima_segmenter.segment_lima((str(dense), str(sparse), "entry_0000/measurement/data"))
    finally:
        lima_segmenter.OPTIONS = saved
    s = open_frames(str(sparse))
    assert isinstance(s, SparseSeries) and s.scan == "entry_0000/measurement/data"
    ours = np.stack(list(s))
    s.close()  # h5py refuses a second handle on the file opened with other file-locking flags
    np.testing.assert_array_equal(ours, np.where(stack > 6, stack, 0))
    theirs = imaged11.SparseScan(str(sparse), "entry_0000/measurement/data").to_dense()
    np.testing.assert_array_equal(ours, theirs)


def test_imaged11_sparsescan_reads_the_test_files_alike(imaged11, sparse_file, stack):
    """The hand-written files of these tests are read by ImageD11 as by braggflow (pixels and angles)."""
    scan = imaged11.SparseScan(str(sparse_file), "1.1")
    np.testing.assert_array_equal(scan.to_dense(), stack)
    s = SparseSeries(str(sparse_file))
    np.testing.assert_allclose(scan.motors["omega"], s.omega.mean(axis=1))
    fi, rows, cols, values = s.pixels()
    np.testing.assert_array_equal(fi, scan.frame_id)
    np.testing.assert_array_equal(rows, scan.row)
    np.testing.assert_array_equal(values, scan.intensity)
