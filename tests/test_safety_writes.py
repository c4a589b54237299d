"""Writes that fail (file size limit, full disk, I/O error): one error line, the journal intact, no temporary file."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.errors import BraggflowError
from braggflow.io.results import ResultsWriter, read_frames_done, read_peaks, read_status
from braggflow.pipeline import run
from braggflow.simulate.frames import simulate_series, write_nexus

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """12 simulated frames of 128 x 128 with 40 peaks each, and the peaks of a run that went well."""
    folder = tmp_path_factory.mktemp("writes")
    path = folder / "sim.h5"
    write_nexus(path, simulate_series(12, shape=(128, 128), n_peaks=40, seed=1))
    full = folder / "full.h5"
    return path, run(str(path), output=full), full.stat().st_size


def leftovers(folder) -> list[str]:
    """Temporary files a failed write could leave: the snapshot's and the journal's."""
    names = [p.name for p in folder.iterdir()]
    journal = [p.name for p in folder.glob("*.journal/*")]
    return [n for n in names + journal if n.endswith(".tmp") or n.startswith(".tmp_")]


def failing_fsync(monkeypatch, *, suffix: str, at: int, code: int):
    """Make the ``at``-th fsync (counted from 1) of a file whose name ends with ``suffix`` fail with ``code``."""
    real = os.fsync
    calls = []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            calls.append(fd)
            if len(calls) == at:
                raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and /proc as on Linux")
def test_a_file_size_limit_at_the_final_write_ends_in_one_error_line(series, tmp_path):
    source, full, full_size = series
    out = tmp_path / "R.h5"
    limit = int(full_size * 0.75)  # the journal batches and the first snapshot fit, the final file does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # SIGXFSZ left as it is: the command ignores it

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", "from braggflow.cli import main; main()", "run", str(source), "-o",
                        str(out)], preexec_fn=limited, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {out}: cannot write the HDF5 file (File too large")
    assert "journal" in lines[-1] and "--resume" in lines[-1]
    assert not [line for line in lines if line.startswith("error:")][:-1] and "Traceback" not in r.stderr
    assert leftovers(tmp_path) == []
    assert read_frames_done(out) == set(range(12)) and read_status(out) != "complete"  # all in the journal
    table = run(str(source), output=out, resume=True)
    assert read_status(out) == "complete" and len(table) == len(full)
    np.testing.assert_allclose(table.sort_values(["frame", "row"])["row"], full.sort_values(["frame", "row"])["row"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd as on Linux")
def test_a_full_disk_at_the_final_write_keeps_the_journal(series, tmp_path, monkeypatch):
    source, full, _ = series
    out = tmp_path / "R.h5"
    failing_fsync(monkeypatch, suffix=".R.h5.tmp", at=2, code=errno.ENOSPC)  # the first snapshot, then the final
    error = one_error_line(CliRunner().invoke(app, ["run", str(source), "-o", str(out)]))
    assert f"{out}: cannot write the HDF5 file (No space left on device, errno 28)" in error
    assert leftovers(tmp_path) == []
    assert read_status(out) == "running" and read_frames_done(out) == set(range(12))
    assert len(read_peaks(out)) == len(full)  # from the journal
    monkeypatch.undo()
    table = run(str(source), output=out, resume=True)
    assert read_status(out) == "complete" and len(table) == len(full) and not (tmp_path / "R.h5.journal").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd as on Linux")
def test_an_io_error_in_a_snapshot_during_the_run(series, tmp_path, monkeypatch):
    _, full, _ = series
    out = tmp_path / "R.h5"
    writer = ResultsWriter(out, snapshot_seconds=0.0, flush_frames=1)
    writer.add(0, full[full["frame"] == 0])
    failing_fsync(monkeypatch, suffix=".R.h5.tmp", at=1, code=errno.EIO)
    with pytest.raises(BraggflowError, match=r"cannot write the HDF5 file \(Input/output error, errno 5\); the "
                                             r"frames finished so far are kept in the journal"):
        writer.add(1, full[full["frame"] == 1])
    assert leftovers(tmp_path) == []
    assert read_frames_done(out) == {0, 1}  # frame 1 was journaled before the snapshot failed
    writer.close()  # the next write goes through
    assert read_status(out) == "complete" and read_frames_done(out) == {0, 1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd as on Linux")
def test_a_journal_write_that_fails_leaves_the_batches_before_it(series, tmp_path, monkeypatch):
    _, full, _ = series
    out = tmp_path / "R.h5"
    writer = ResultsWriter(out, flush_frames=1)
    writer.add(0, full[full["frame"] == 0])
    failing_fsync(monkeypatch, suffix=".npz", at=1, code=errno.ENOSPC)
    with pytest.raises(BraggflowError, match=r"cannot write its journal \(No space left on device"):
        writer.add(1, full[full["frame"] == 1])
    assert leftovers(tmp_path) == []
    assert read_frames_done(out) == {0}
    monkeypatch.undo()
    writer.close(complete=False)
    assert read_status(out) == "incomplete" and read_frames_done(out) == {0, 1}  # flushed again at close


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd as on Linux")
def test_a_full_disk_when_a_watch_closes(tmp_path, monkeypatch):
    folder = tmp_path / "detector"
    folder.mkdir()
    for k in range(2):
        np.save(folder / f"f_{k}.npy", np.random.default_rng(k).poisson(5, (64, 64)).astype(np.float32))
    out = tmp_path / "live.h5"
    failing_fsync(monkeypatch, suffix=".live.h5.tmp", at=2, code=errno.ENOSPC)
    result = CliRunner().invoke(app, ["watch", str(folder), "-o", str(out), "--idle-timeout", "0.5", "--poll",
                                      "0.02"])
    error = one_error_line(result)
    assert "cannot write the HDF5 file (No space left on device" in error and "journal" in error
    assert leftovers(tmp_path) == [] and read_frames_done(out) == {0, 1}
