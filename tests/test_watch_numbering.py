"""Frame indices keyed by file: the number in the name or the position in natural order, never the arrival order."""

from __future__ import annotations

import logging
import time

import h5py
import numpy as np
import pytest

from braggflow.io.results import read_frames, read_group, read_peaks, read_status
from braggflow.pipeline import run
from braggflow.pipeline.watch import watch
from braggflow.pipeline.watch_sources import _FolderSource, name_number

POLL = 0.02
pytestmark = pytest.mark.timeout(120)


def frame(seed: int, size: int = 64) -> np.ndarray:
    """A uint16 frame with two bright spots on a Poisson background."""
    rng = np.random.default_rng(seed)
    img = rng.poisson(5.0, (size, size)).astype(np.float64)
    rows, cols = np.mgrid[:size, :size]
    for r, c in rng.uniform(12, size - 12, (2, 2)):
        img += 3000 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.3**2))
    return np.round(img).astype(np.uint16)


def tif_bytes(data: np.ndarray, tmp_path) -> bytes:
    from fabio.tifimage import TifImage

    path = tmp_path / "encode.tif"
    TifImage(data=data).write(str(path))
    out = path.read_bytes()
    path.unlink()
    return out


def poll_all(source: _FolderSource, done=frozenset()) -> list[tuple[str, int]]:
    """(file, first frame index) of every file the source takes, polling until nothing new comes."""
    taken = []
    for _ in range(20):
        ready = source.poll(time.monotonic() + 10, done=set(done), limit=100)
        taken += [(path.rsplit("/", 1)[-1], first) for first, _, _, _, path in ready]
        if not ready:
            break
    return taken


def test_name_number_is_the_last_run_of_digits_before_the_suffix():
    assert name_number("img_0004.cbf") == 4
    assert name_number("run3_img_0012.tif") == 12
    assert name_number("scan_7_master.h5") == 7
    assert name_number("frame.ge2") is None  # the digit of the suffix is not the file's number
    assert name_number("dark.tif") is None


def test_numbered_files_take_their_number_whatever_the_order_they_come_in(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    for number in (4, 7):
        (folder / f"img_{number:04d}.tif").write_bytes(tif_bytes(frame(number), tmp_path))
    source = _FolderSource(folder, settle=0.0, give_up=60.0)
    assert poll_all(source) == [("img_0004.tif", 4), ("img_0007.tif", 7)]
    (folder / "img_0005.tif").write_bytes(tif_bytes(frame(5), tmp_path))  # late, and before img_0007 in order
    assert poll_all(source) == [("img_0005.tif", 5)]
    assert source.numbering == "number" and not source.skipped


def test_two_files_never_share_an_index(tmp_path, caplog):
    folder = tmp_path / "detector"
    folder.mkdir()
    for name in ("scan_1.tif", "scan_01.tif", "dark.tif"):
        (folder / name).write_bytes(tif_bytes(frame(1), tmp_path))
    source = _FolderSource(folder, settle=0.0, give_up=60.0)
    with caplog.at_level(logging.WARNING, logger="braggflow.pipeline.watch"):
        taken = poll_all(source)
    # natural order: dark.tif, scan_01.tif, scan_1.tif; the first file has no number: numbered by position
    assert source.numbering == "order"
    assert taken == [("dark.tif", 0), ("scan_01.tif", 1), ("scan_1.tif", 2)]
    numbered = _FolderSource(folder, settle=0.0, give_up=60.0, numbering="number", frames_per_file=1)
    taken = poll_all(numbered)
    assert [name for name, _ in taken] == ["scan_01.tif"]  # the first to claim index 1
    assert numbered.reasons["scan_1.tif"] == "its frame index 1 is already held by scan_01.tif"
    assert "no number" in numbered.reasons["dark.tif"]


def test_unnumbered_names_take_their_position_in_natural_order(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    for name in ("alpha.tif", "beta.tif", "gamma.tif"):
        (folder / name).write_bytes(tif_bytes(frame(2), tmp_path))
    assert poll_all(_FolderSource(folder, settle=0.0, give_up=60.0)) == [
        ("alpha.tif", 0), ("beta.tif", 1), ("gamma.tif", 2)]


def test_multi_frame_files_take_position_times_frames_per_file(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    for k, n in enumerate((3, 3, 2, 3)):
        with h5py.File(folder / f"data_{k + 1:06d}.h5", "w") as h5:
            h5["entry/data/data"] = np.stack([frame(10 * k + i) for i in range(n)])
    source = _FolderSource(folder, settle=0.0, give_up=60.0)
    assert poll_all(source) == [("data_000001.h5", 0), ("data_000002.h5", 3), ("data_000004.h5", 9)]
    assert source.numbering == "order" and source.frames_per_file == 3
    assert source.reasons["data_000003.h5"].startswith("holds 2 frames, not 3 like the first file")


def test_a_file_skipped_then_repaired_is_processed_under_its_own_index(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    frames = [frame(k) for k in range(3)]
    for k in (0, 2):
        (folder / f"scan_{k:05d}.tif").write_bytes(tif_bytes(frames[k], tmp_path))
    (folder / "scan_00001.tif").write_bytes(b"II*\x00 not an image yet" * 10)
    out = tmp_path / "live.h5"
    first = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    assert first.frames["frame"].tolist() == [0, 2]
    assert [p.rsplit("/", 1)[-1] for p in first.skipped] == ["scan_00001.tif"]
    (folder / "scan_00001.tif").write_bytes(tif_bytes(frames[1], tmp_path))  # repaired
    second = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    assert second.frames["frame"].tolist() == [1] and not second.skipped
    rows = read_frames(out)
    assert rows["frame"].tolist() == [0, 1, 2]
    assert rows["source_file"].astype(str).tolist() == [f"scan_{k:05d}.tif" for k in range(3)]
    assert rows["frame_in_file"].tolist() == [0, 0, 0]
    peaks = read_peaks(out)
    assert (peaks["source_file"].astype(str) == peaks["frame"].map(lambda k: f"scan_{k:05d}.tif")).all()
    assert read_group(out, "watch")[1]["numbering"] == "number"
    # a third start finds every file in the results file, under the same index
    third = watch(folder, out, idle_timeout=0.3, poll_interval=POLL)
    assert third.n_frames == 0 and read_frames(out)["frame"].tolist() == [0, 1, 2]


def test_run_records_the_file_and_the_frame_in_the_file_of_every_peak(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        with h5py.File(folder / f"part_{k}.h5", "w") as h5:
            h5["entry/data/data"] = np.stack([frame(10 * k + i) for i in range(3)])
    out = tmp_path / "R.h5"
    table = run(str(folder), output=out)
    assert read_status(out) == "complete"
    rows = read_frames(out)
    assert rows["source_file"].astype(str).tolist() == ["part_0.h5"] * 3 + ["part_1.h5"] * 3
    assert rows["frame_in_file"].tolist() == [0, 1, 2, 0, 1, 2]
    assert str(table["source_file"].dtype) == "category"
    assert (table["frame_in_file"] == table["frame"] % 3).all()
    assert (table["source_file"].astype(str) == np.where(table["frame"] < 3, "part_0.h5", "part_1.h5")).all()
    # frames given as an array come from no file
    array = run(np.stack([frame(0), frame(1)]))
    assert array["source_file"].isna().all() and (array["frame_in_file"] == -1).all()
