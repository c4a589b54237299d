"""A watch that leaves a file out says so: the file named in the results and the summary, the status incomplete."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.io.results import read_frames, read_group, read_status
from braggflow.pipeline.watch import watch

POLL = 0.02
pytestmark = pytest.mark.timeout(120)


def tif_bytes(seed: int, tmp_path) -> bytes:
    """A 64 x 64 uint16 TIFF with a bright spot on a Poisson background."""
    from fabio.tifimage import TifImage

    rng = np.random.default_rng(seed)
    img = rng.poisson(5.0, (64, 64)).astype(np.float64)
    rows, cols = np.mgrid[:64, :64]
    img += 3000 * np.exp(-((rows - 30) ** 2 + (cols - 20 - seed) ** 2) / 3.0)
    path = tmp_path / "encode.tif"
    TifImage(data=np.round(img).astype(np.uint16)).write(str(path))
    out = path.read_bytes()
    path.unlink()
    return out


@pytest.fixture
def folder(tmp_path):
    """scan_00000.tif and scan_00002.tif complete, scan_00001.tif truncated (its size stable)."""
    d = tmp_path / "detector"
    d.mkdir()
    for k in (0, 2):
        (d / f"scan_{k:05d}.tif").write_bytes(tif_bytes(k, tmp_path))
    data = tif_bytes(1, tmp_path)
    (d / "scan_00001.tif").write_bytes(data[: len(data) // 2])
    return d


def test_a_truncated_file_left_at_idle_makes_the_results_incomplete(folder, tmp_path):
    out = tmp_path / "live.h5"
    result = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=60.0)
    # the watch waits in order: the truncated file holds back the files after it, and it is named
    assert result.status == "incomplete" and read_status(out) == "incomplete"
    assert result.unfinished == ["scan_00001.tif", "scan_00002.tif"] and not result.skipped
    tables, _ = read_group(out, "watch")
    assert tables["unfinished"]["file"].tolist() == ["scan_00001.tif", "scan_00002.tif"]
    assert (tmp_path / "live.h5.journal").is_dir()  # kept for the next watch
    (folder / "scan_00001.tif").write_bytes(tif_bytes(1, tmp_path))  # the detector finished it
    again = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=60.0)
    assert again.frames["frame"].tolist() == [1, 2] and again.status == "complete"
    assert read_status(out) == "complete" and read_frames(out)["frame"].tolist() == [0, 1, 2]
    tables, attrs = read_group(out, "watch")
    assert len(tables["unfinished"]) == 0 and len(tables["skipped"]) == 0 and attrs["sessions"] == 2


def test_a_file_given_up_is_named_in_the_results_until_it_is_processed(folder, tmp_path):
    out = tmp_path / "live.h5"
    result = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    assert result.frames["frame"].tolist() == [0, 2] and result.skipped == ["scan_00001.tif"]
    assert result.reasons["scan_00001.tif"].startswith("still unreadable 0.2 s after its size settled")
    assert result.status == "incomplete" and read_status(out) == "incomplete"
    skipped = read_group(out, "watch")[0]["skipped"]
    assert skipped["file"].tolist() == ["scan_00001.tif"] and "unreadable" in skipped["reason"].iloc[0]
    # started again without a repair: still skipped, still named, still incomplete
    again = watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    assert again.n_frames == 0 and again.status == "incomplete"
    assert read_group(out, "watch")[0]["skipped"]["file"].tolist() == ["scan_00001.tif"]


def test_the_watch_summary_names_the_file_and_says_incomplete(folder, tmp_path):
    out = tmp_path / "live.h5"
    result = CliRunner().invoke(app, ["watch", str(folder), "-o", str(out), "--idle-timeout", "0.5",
                                      "--poll", "0.02", "--give-up", "0.2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "2 frames" in text and f"{out} (incomplete)" in text
    assert "skipped: scan_00001.tif (still unreadable 0.2 s after its size settled" in text
    assert "start the watch again on the same output" in text
    assert read_status(out) == "incomplete"


@pytest.mark.parametrize("option, value", [("--give-up", "0"), ("--give-up", "nan"), ("--poll", "-1"),
                                           ("--idle-timeout", "-5")])
def test_watch_timings_are_checked_before_anything_runs(tmp_path, option, value):
    out = tmp_path / "live.h5"
    result = CliRunner().invoke(app, ["watch", str(tmp_path), "-o", str(out), option, value])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and option in errors[0]
    assert not out.exists()


def test_the_watch_records_its_inputs(folder, tmp_path):
    from braggflow.io.results import read_process

    out = tmp_path / "live.h5"
    watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    first = read_process(out)["inputs"]
    # incomplete: names and sizes, no checksum yet; the skipped file is not an input
    assert [i["name"] for i in first] == [str(folder / "scan_00000.tif"), str(folder / "scan_00002.tif")]
    assert [i["size"] for i in first] == [(folder / n).stat().st_size for n in ("scan_00000.tif", "scan_00002.tif")]
    (folder / "scan_00001.tif").write_bytes(tif_bytes(1, tmp_path))
    watch(folder, out, idle_timeout=0.5, poll_interval=POLL, give_up=0.2)
    inputs = read_process(out)["inputs"]
    assert read_status(out) == "complete"
    assert sorted(i["name"] for i in inputs) == [str(folder / f"scan_{k:05d}.tif") for k in range(3)]
    from braggflow.checksum import file_sha256

    assert all(i["sha256"] == file_sha256(i["name"]) and i["size"] > 0 for i in inputs)
