"""Live mode against a writer thread (folder) and a writer process (SWMR HDF5)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from braggflow.errors import BraggflowError, InputFileError
from braggflow.io.results import ResultsWriter, read_group, read_peaks, read_status, write_group
from braggflow.pipeline import process_frame
from braggflow.pipeline.config import Config
from braggflow.pipeline.watch import watch
from braggflow.profiles.render import peak_profile

SIZE = 256
POLL = 0.02
pytestmark = pytest.mark.timeout(120)


def make_frames(n: int, seed: int = 7) -> np.ndarray:
    """n uint16 frames of 256 x 256 with 6 Gaussian peaks on a Poisson background."""
    rng = np.random.default_rng(seed)
    idx = np.arange(SIZE)
    frames = []
    for _ in range(n):
        frame = rng.poisson(5.0, (SIZE, SIZE)).astype(np.float64)
        for r, c in rng.uniform(20, SIZE - 20, (6, 2)):
            frame += rng.uniform(2000, 8000) * peak_profile(idx, idx, row=r, col=c, sigma_row=1.3, sigma_col=1.3)
        frames.append(np.round(frame).astype(np.uint16))
    return np.stack(frames)


def expected_peaks(frames: np.ndarray, config: Config) -> pd.DataFrame:
    return pd.concat([process_frame(f, config=config, frame_index=i) for i, f in enumerate(frames)], ignore_index=True)


def file_bytes(frame: np.ndarray, suffix: str, tmp_path) -> bytes:
    from fabio.edfimage import EdfImage
    from fabio.tifimage import TifImage

    path = tmp_path / f"encode{suffix}"
    (TifImage if suffix == ".tif" else EdfImage)(data=frame).write(str(path))
    data = path.read_bytes()
    path.unlink()
    return data


class Writer(threading.Thread):
    """Writes frame files into a folder: at ``interval`` s, optionally pausing or writing in two halves."""

    def __init__(self, folder, payloads, *, interval=0.05, start_delay=0.2, pause_after=None, pause=0.0,
                 split=None, split_wait=0.0, first=0):
        super().__init__(daemon=True)
        self.folder, self.payloads, self.interval, self.start_delay = folder, payloads, interval, start_delay
        self.pause_after, self.pause, self.split = pause_after, pause, split
        self.split_wait, self.first = split_wait, first
        self.completed: dict[int, float] = {}

    def run(self):
        time.sleep(self.start_delay)
        for k, (suffix, data) in enumerate(self.payloads):
            i = self.first + k
            path = self.folder / f"scan_{i:05d}{suffix}"
            with open(path, "wb") as fh:
                if self.split == k:  # half the file, a pause of many polls, then the rest
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    time.sleep(self.split_wait)
                    fh.write(data[len(data) // 2 :])
                else:
                    fh.write(data)
            self.completed[i] = time.time()
            if self.pause_after == k:
                time.sleep(self.pause)
            time.sleep(self.interval)


@pytest.fixture(scope="module")
def frames():
    return make_frames(8)


@pytest.fixture(scope="module")
def config():
    return Config()


@pytest.fixture(scope="module")
def reference(frames, config):
    return expected_peaks(frames, config)


def assert_same_peaks(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.sort_values(["frame", "row", "col"]).reset_index(drop=True)
    want = want.sort_values(["frame", "row", "col"]).reset_index(drop=True)
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["frame"], want["frame"])
    np.testing.assert_allclose(got[["row", "col", "intensity"]], want[["row", "col", "intensity"]], rtol=1e-6)


def test_watch_processes_files_as_they_appear(tmp_path, frames, config, reference):
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    writer = Writer(folder, [(".tif", file_bytes(f, ".tif", tmp_path)) for f in frames], interval=0.15)
    seen = []
    writer.start()
    result = watch(folder, out, config=config, idle_timeout=1.5, poll_interval=POLL, progress=seen.append)
    writer.join()
    assert result.stopped_by == "idle" and not result.skipped
    assert result.frames["frame"].tolist() == list(range(8)) == [r.frame for r in seen]
    assert read_status(out) == "complete"
    assert_same_peaks(read_peaks(out), reference)
    log = result.frames
    assert (log["latency"] > 0).all()
    assert (log["n_peaks"].to_numpy() == reference.groupby("frame").size().to_numpy()).all()
    # processed while the writer was still writing, not after it finished
    assert (log["t_written"] < writer.completed[7]).sum() >= 4
    stored, attrs = read_group(out, "watch")
    assert len(stored["frames"]) == 8 and attrs["sessions"] == 1


@pytest.mark.parametrize("suffix", [".tif", ".edf"])
def test_watch_waits_for_a_half_written_file(tmp_path, frames, config, reference, suffix, caplog):
    caplog.set_level(logging.WARNING)
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    payloads = [(suffix, file_bytes(f, suffix, tmp_path)) for f in frames[:4]]
    # frame 1 stays half written for 0.6 s: 30 polls, 30 times the settle time
    writer = Writer(folder, payloads, interval=0.05, split=1, split_wait=0.6)
    writer.start()
    result = watch(folder, out, config=config, idle_timeout=1.0, poll_interval=POLL)
    writer.join()
    assert not result.skipped
    assert result.frames["frame"].tolist() == [0, 1, 2, 3]
    assert result.frames["t_written"].iloc[1] >= writer.completed[1]
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 4])
    # a half-written file is expected here: fabio's "Error in opening ... truncated" is not printed
    assert [r.getMessage() for r in caplog.records if r.name.startswith("fabio")] == []
    assert logging.getLogger("fabio").level == logging.NOTSET  # its level is restored


@pytest.mark.parametrize("suffix", [".tif", ".edf", ".cbf"])
def test_half_written_file_is_not_taken_even_when_its_size_is_stable(tmp_path, frames, suffix):
    from fabio.cbfimage import CbfImage

    from braggflow.pipeline.watch import _FolderSource

    if suffix == ".cbf":
        path = tmp_path / "encode.cbf"
        CbfImage(data=frames[0].astype(np.int32)).write(str(path))
        data = path.read_bytes()
        path.unlink()
    else:
        data = file_bytes(frames[0], suffix, tmp_path)
    folder = tmp_path / "detector"
    folder.mkdir()
    target = folder / f"scan_00000{suffix}"
    target.write_bytes(data[: int(len(data) * 0.6)])
    source = _FolderSource(folder, settle=0.01, give_up=60.0)
    for _ in range(3):  # size stable over several polls, yet not complete
        assert source.poll(time.monotonic(), done=set()) == []
        time.sleep(0.03)
    target.write_bytes(data)
    ready = []
    for _ in range(10):
        ready = source.poll(time.monotonic(), done=set())
        if ready:
            break
        time.sleep(0.03)
    assert len(ready) == 1
    frame = next(source.frames(ready[0], set()))[1]
    np.testing.assert_array_equal(frame, frames[0])


def test_folder_files_are_taken_in_natural_order(tmp_path, caplog):
    from braggflow.pipeline.watch import _FolderSource

    folder = tmp_path / "detector"
    folder.mkdir()
    for name in ["scan_10.tif", "scan_9.tif", "Scan_2.tif", "a2b10.tif", "a2b9.tif", "notes.txt"]:
        (folder / name).write_bytes(b"x")
    source = _FolderSource(folder, settle=0.01, give_up=1.0)
    assert source._listing() == ["Scan_2.tif", "a2b9.tif", "a2b10.tif", "scan_9.tif", "scan_10.tif"]
    source.files = ["scan_10.tif"]
    assert not source._out_of_order("scan_11.tif")
    with caplog.at_level(logging.WARNING, logger="braggflow.pipeline.watch"):
        assert source._out_of_order("scan_9.tif")
    assert source.skipped == ["scan_9.tif"] and "out of order" in caplog.text


def test_watch_survives_a_writer_pause(tmp_path, frames, config, reference):
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    payloads = [(".tif", file_bytes(f, ".tif", tmp_path)) for f in frames[:6]]
    # frames every 0.05 s, then a pause 20 frame times long after frame 2
    writer = Writer(folder, payloads, interval=0.05, pause_after=2, pause=1.0)
    writer.start()
    result = watch(folder, out, config=config, idle_timeout=2.0, poll_interval=POLL)
    writer.join()
    assert result.frames["frame"].tolist() == list(range(6))
    assert result.stopped_by == "idle"
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 6])


def test_watch_restart_continues_without_repeats(tmp_path, frames, config, reference):
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    payloads = [(".tif", file_bytes(f, ".tif", tmp_path)) for f in frames[:6]]
    first = Writer(folder, payloads[:3], interval=0.02, start_delay=0.0)
    first.start()
    first.join()
    r1 = watch(folder, out, config=config, idle_timeout=0.5, poll_interval=POLL)
    assert r1.frames["frame"].tolist() == [0, 1, 2] and read_status(out) == "complete"
    second = Writer(folder, payloads[3:], interval=0.05, first=3)
    second.start()
    r2 = watch(folder, out, config=config, idle_timeout=1.0, poll_interval=POLL)
    second.join()
    assert r2.frames["frame"].tolist() == [3, 4, 5]
    peaks = read_peaks(out)
    assert_same_peaks(peaks, reference[reference["frame"] < 6])
    stored, attrs = read_group(out, "watch")
    assert stored["frames"]["frame"].tolist() == list(range(6)) and attrs["sessions"] == 2
    # a third start with nothing new processes nothing and keeps every frame once
    r3 = watch(folder, out, config=config, idle_timeout=0.2, poll_interval=POLL)
    assert r3.n_frames == 0
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 6])
    # the same output cannot continue with another config
    with pytest.raises(InputFileError, match="different configuration"):
        watch(folder, out, config=Config(find={"min_size": 3}), idle_timeout=0.2, poll_interval=POLL)


def test_watch_skips_a_file_that_never_parses_and_stops_on_request(tmp_path, frames, config):
    folder = tmp_path / "detector"
    folder.mkdir()
    (folder / "scan_00000.tif").write_bytes(b"II*\x00 this is not an image" * 10)
    (folder / "scan_00001.tif").write_bytes(file_bytes(frames[0], ".tif", tmp_path))
    out = tmp_path / "live.h5"
    stop = threading.Event()
    result = watch(folder, out, config=config, idle_timeout=None, poll_interval=POLL, give_up=0.2, stop=stop,
                   progress=lambda record: stop.set())
    assert result.stopped_by == "stop"
    assert [p.rsplit("/", 1)[-1] for p in result.skipped] == ["scan_00000.tif"]
    assert result.frames["frame"].tolist() == [1]  # its own number, not the first index free
    assert result.frames["source"].iloc[0].endswith("scan_00001.tif")


def test_watch_rejects_bad_sources(tmp_path, frames, config):
    with pytest.raises(InputFileError, match="no such folder"):
        watch(tmp_path / "missing", tmp_path / "o.h5", config=config)
    image = tmp_path / "one.tif"
    image.write_bytes(file_bytes(frames[0], ".tif", tmp_path))
    with pytest.raises(InputFileError, match="single image"):
        watch(image, tmp_path / "o.h5", config=config)
    with pytest.raises(BraggflowError, match="poll_interval"):
        watch(tmp_path, tmp_path / "o.h5", config=config, poll_interval=0)


SWMR_WRITER = textwrap.dedent(
    """
    import sys, time, h5py, numpy as np
    frames = np.load(sys.argv[1])
    with h5py.File(sys.argv[2], "w", libver="latest") as h5:
        ds = h5.create_dataset("/entry/data/data", shape=(0,) + frames.shape[1:], maxshape=(None,) + frames.shape[1:],
                               chunks=(1,) + frames.shape[1:], dtype=frames.dtype)
        h5.swmr_mode = True
        for i, frame in enumerate(frames):
            ds.resize(i + 1, axis=0)
            ds[i] = frame
            ds.flush()
            time.sleep(float(sys.argv[3]))
    """
)


def test_watch_swmr_file_being_appended(tmp_path, frames, config, reference):
    np.save(tmp_path / "frames.npy", frames[:5])
    target = tmp_path / "scan.h5"
    out = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", SWMR_WRITER, str(tmp_path / "frames.npy"), str(target), "0.1"])
    try:
        # the file does not exist yet when the watch starts; it waits for it
        result = watch(target, out, config=config, idle_timeout=6.0, poll_interval=POLL, max_frames=5)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert result.stopped_by == "max_frames"
    assert result.frames["frame"].tolist() == [0, 1, 2, 3, 4]
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 5])
    from braggflow.io.results import read_process

    # the file is named among the inputs, without a size or checksum (it may still grow)
    assert read_process(out)["inputs"] == [{"name": str(target), "size": -1, "sha256": ""}]


def test_watch_with_worker_processes_writes_in_frame_order(tmp_path, frames, config, reference):
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    payloads = [(".tif", file_bytes(f, ".tif", tmp_path)) for f in frames[:6]]
    writer = Writer(folder, payloads, interval=0.02, start_delay=0.0)
    writer.start()
    result = watch(folder, out, config=config, idle_timeout=1.0, poll_interval=POLL, workers=2)
    writer.join()
    assert result.frames["frame"].tolist() == list(range(6))
    assert (result.frames["process_s"] > 0).all()
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 6])


def test_ctrl_c_leaves_a_complete_results_file(tmp_path, frames, config, reference):
    import shutil
    import signal

    folder = tmp_path / "detector"
    folder.mkdir()
    for i in range(2):
        (folder / f"scan_{i:05d}.tif").write_bytes(file_bytes(frames[i], ".tif", tmp_path))
    out = tmp_path / "live.h5"
    exe = shutil.which("braggflow") or sys.executable
    cmd = [exe] if exe.endswith("braggflow") else [exe, "-c", "from braggflow.cli import main; main()"]
    proc = subprocess.Popen(cmd + ["watch", str(folder), "-o", str(out), "--idle-timeout", "0", "--poll", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until both frames are journaled
            time.sleep(0.2)
            try:
                if set(read_peaks(out)["frame"]) == {0, 1}:
                    break
            except Exception:
                continue
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "stopped: interrupt" in " ".join(output.split()), output
    assert read_status(out) == "complete"
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 2])


def test_results_writer_append_continues_a_complete_file(tmp_path, config, reference):
    out = tmp_path / "results.h5"
    with ResultsWriter(out, config=config) as writer:
        for f in (0, 1):
            writer.add(f, reference[reference["frame"] == f])
    write_group(out, "extra", tables={"t": pd.DataFrame({"a": [1, 2]})}, attrs={"k": 1})
    assert read_status(out) == "complete"
    with pytest.raises(InputFileError, match="already complete"):  # resume alone still refuses
        ResultsWriter(out, config=config, resume=True)
    with pytest.raises(InputFileError, match="different configuration"):
        ResultsWriter(out, config=Config(find={"min_size": 3}), append=True)
    assert read_status(out) == "complete"
    writer = ResultsWriter(out, config=config, append=True, flush_frames=1)
    assert writer.done_frames == {0, 1}
    assert read_status(out) == "running"  # not complete while frames are appended
    writer.add(2, reference[reference["frame"] == 2])
    # killed here: the file is not complete, and frame 2 is in the journal
    assert read_status(out) == "running"
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 3])
    resumed = ResultsWriter(out, config=config, resume=True)
    assert resumed.done_frames == {0, 1, 2}
    resumed.add(3, reference[reference["frame"] == 3])
    resumed.close()
    assert read_status(out) == "complete"
    assert_same_peaks(read_peaks(out), reference[reference["frame"] < 4])
    tables, attrs = read_group(out, "extra")  # groups of later commands are kept
    assert tables["t"]["a"].tolist() == [1, 2] and attrs["k"] == 1


def test_watch_learns_hot_pixels_from_the_frames_seen_so_far(tmp_path, config):
    from braggflow.io.results import read_frames
    from braggflow.pipeline.statistics import MIN_HOT_PIXEL_FRAMES

    frames = make_frames(10, seed=3)
    hot = [(40, 50), (200, 31), (128, 222)]
    for r, c in hot:
        frames[:, r, c] = 3000  # a lone pixel, lit in every frame
    folder = tmp_path / "detector"
    folder.mkdir()
    for i, f in enumerate(frames):
        (folder / f"scan_{i:05d}.tif").write_bytes(file_bytes(f, ".tif", tmp_path))
    out = tmp_path / "live.h5"
    watch(folder, out, config=config, idle_timeout=0.5, poll_interval=POLL)
    rows = read_frames(out)
    # the map starts empty and is measured once MIN_HOT_PIXEL_FRAMES frames are in; a lone pixel is no peak
    # either way (min_size 2), so the peaks equal those of frames processed without a map
    assert rows["hot_pixels"].tolist()[: MIN_HOT_PIXEL_FRAMES - 1] == [0] * (MIN_HOT_PIXEL_FRAMES - 1)
    assert rows["hot_pixels"].iloc[-1] == len(hot)
    assert_same_peaks(read_peaks(out), expected_peaks(frames, config))
