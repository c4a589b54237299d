"""One writer per results file, inputs checked on resume, no silent replacement, the input never overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from braggflow.errors import BraggflowError, InputFileError
from braggflow.io.results import ResultsWriter, read_group, read_peaks, read_status, write_group
from braggflow.pipeline import run
from braggflow.simulate.frames import simulate_series, write_nexus


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two different simulated series of 4 frames (128 x 128), as NeXus files."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = []
    for seed in (1, 2):
        path = folder / f"sim{seed}.h5"
        write_nexus(path, simulate_series(4, shape=(128, 128), n_peaks=6, seed=seed))
        paths.append(path)
    return paths


_HOLD = textwrap.dedent("""
    import sys, time
    from braggflow.io.results import ResultsWriter
    writer = ResultsWriter(sys.argv[1])
    print("holding", flush=True)
    time.sleep(60)
""")


def _interrupted_run(source, out, after: int = 2):
    """A run into ``out`` stopped (as by Ctrl-C) after ``after`` frames: the file incomplete, its journal kept."""

    def stop(done, total, peaks):
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(source, output=out, progress=stop)
    assert read_status(out) == "incomplete"


def _holder(path):
    """A second process that holds the results file's writer until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_writer_is_refused_and_the_first_keeps_its_frames(tmp_path, inputs):
    out = tmp_path / "R.h5"
    holder = _holder(out)
    try:
        with pytest.raises(InputFileError, match=rf"another braggflow process.*PID {holder.pid}"):
            run(str(inputs[0]), output=out)
        with pytest.raises(InputFileError, match="another braggflow process"):
            write_group(out, "link", attrs={"x": 1})
        assert (tmp_path / "R.h5.journal").is_dir()  # the holder's journal was not touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the operating system released the lock with the process: a new run may take over, replacing the file
    table = run(str(inputs[0]), output=out, overwrite=True)
    assert read_status(out) == "complete" and sorted(table["frame"].unique()) == [0, 1, 2, 3]


def test_resume_refuses_other_inputs(tmp_path, inputs):
    out = tmp_path / "R.h5"
    _interrupted_run(str(inputs[0]), out)
    with pytest.raises(InputFileError, match=r"holds results of .*sim1\.h5, not of the inputs given"):
        run(str(inputs[1]), output=out, resume=True)
    assert sorted(read_peaks(out)["frame"].unique()) == [0, 1]  # nothing mixed in
    table = run(str(inputs[0]), output=out, resume=True)
    assert read_status(out) == "complete" and sorted(table["frame"].unique()) == [0, 1, 2, 3]


def test_resume_refuses_an_input_of_another_shape(tmp_path, inputs):
    out = tmp_path / "R.h5"
    run(np.zeros((3, 64, 64), np.float32), output=out, frames_range=range(0, 1))
    with pytest.raises(InputFileError, match="frame_shape"):
        run(np.zeros((3, 32, 32), np.float32), output=out, resume=True)


def test_an_existing_results_file_is_replaced_only_with_overwrite_and_then_wholly(tmp_path, inputs):
    out = tmp_path / "R.h5"
    run(str(inputs[0]), output=out)
    write_group(out, "link", attrs={"tracks": 62})
    before = out.read_bytes()
    with pytest.raises(InputFileError, match="exists; use --overwrite"):
        run(str(inputs[1]), output=out)
    assert out.read_bytes() == before
    run(str(inputs[1]), output=out, overwrite=True)
    with pytest.raises(BraggflowError):
        read_group(out, "link")  # the derived group of the replaced run is gone


def test_the_output_never_overwrites_an_input(tmp_path, inputs):
    copy = tmp_path / "x.h5"
    copy.write_bytes(inputs[0].read_bytes())
    with pytest.raises(BraggflowError, match="would overwrite the input"):
        run(str(copy), output=copy, overwrite=True)
    assert copy.read_bytes() == inputs[0].read_bytes()
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        np.save(folder / f"f_{k}.npy", np.zeros((32, 32), np.float32))
    with pytest.raises(BraggflowError, match="inside the input folder"):
        run(str(folder), output=folder / "R.h5")


def test_watch_refuses_the_results_of_a_run(tmp_path, inputs):
    from braggflow.pipeline.watch import watch

    out = tmp_path / "R.h5"
    run(str(inputs[0]), output=out)
    folder = tmp_path / "live"
    folder.mkdir()
    with pytest.raises(InputFileError, match="results of a run over .*sim1.h5, not of watching"):
        watch(str(folder), output=out, idle_timeout=0.5)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    out = tmp_path / "R.h5"
    writer = ResultsWriter(out)
    writer.close()
    with ResultsWriter(out, overwrite=True) as writer:
        writer.add(0, read_peaks(out))
        write_group(out, "note", attrs={"a": 1})  # same process: allowed while the writer holds the lock
    assert not os.path.exists(tmp_path / ".R.h5.owner")


def test_cli_refuses_an_existing_output_in_one_line_and_replaces_it_with_overwrite(tmp_path, inputs):
    from typer.testing import CliRunner

    from braggflow.cli.app import app

    out = tmp_path / "R.h5"
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(inputs[0]), "-o", str(out)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["run", str(inputs[1]), "-o", str(out)])
    assert again.exit_code == 2
    errors = [line for line in again.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--overwrite" in errors[0] and str(out) in errors[0]
    replaced = runner.invoke(app, ["run", str(inputs[1]), "-o", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert read_status(out) == "complete"


def test_a_damaged_snapshot_never_hides_the_journal(tmp_path, inputs):
    out = tmp_path / "R.h5"
    _interrupted_run(str(inputs[0]), out)
    frames = read_peaks(out)
    with open(out, "r+b") as fh:  # damage the HDF5 snapshot; the journal beside it is intact
        fh.seek(0)
        fh.write(b"\0" * 4096)
    recovered = read_peaks(out)
    assert sorted(recovered["frame"].unique()) == [0, 1] and len(recovered) == len(frames)
    with pytest.raises(InputFileError, match="not of the inputs given"):
        run(str(inputs[1]), output=out, resume=True)  # the journal's copy of the process record still checks
    table = run(str(inputs[0]), output=out, resume=True)
    assert read_status(out) == "complete" and sorted(table["frame"].unique()) == [0, 1, 2, 3]


def test_the_run_summary_says_what_was_processed_and_stored(tmp_path, inputs):
    from typer.testing import CliRunner

    from braggflow.cli.app import app

    out = tmp_path / "R.h5"
    runner = CliRunner()
    part = runner.invoke(app, ["run", str(inputs[0]), "-o", str(out), "--frames", "0:3"])
    assert part.exit_code == 0, part.output
    text = " ".join(part.output.split())
    assert "3 frames processed, 3 of 4 in the file (complete; frames asked 0:3)" in text
    assert "--resume --frames" in text
    rest = runner.invoke(app, ["run", str(inputs[0]), "-o", str(out), "--resume"])
    assert rest.exit_code == 0, rest.output
    assert "1 frame processed, 4 of 4 in the file (complete)" in " ".join(rest.output.split())


def test_a_frames_run_is_complete_for_the_frames_asked(tmp_path, inputs):
    from braggflow.io.results import read_frames_done, read_process

    out = tmp_path / "R.h5"
    run(str(inputs[0]), output=out, frames_range=range(1, 3))
    assert read_status(out) == "complete" and read_frames_done(out) == {1, 2}
    assert not (tmp_path / "R.h5.journal").exists()
    process = read_process(out)
    assert process["frames_requested"] == "1:3" and process["frames_total"] == 4
    # more frames added to a complete file: the frames asked grow, the file stays complete
    run(str(inputs[0]), output=out, frames_range=range(3, 4), resume=True)
    assert read_status(out) == "complete" and read_frames_done(out) == {1, 2, 3}
    assert read_process(out)["frames_requested"] == "1:4"
    with pytest.raises(InputFileError, match="already complete"):
        run(str(inputs[0]), output=out, frames_range=range(2, 4), resume=True)  # nothing new asked
    # a frames run stopped early continues with the frames it asked for, not the whole series
    other = tmp_path / "S.h5"

    def stop(done, total, peaks):
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(str(inputs[0]), output=other, frames_range=range(0, 3), progress=stop)
    assert read_status(other) == "incomplete" and read_frames_done(other) == {0}
    run(str(inputs[0]), output=other, resume=True)
    assert read_status(other) == "complete" and read_frames_done(other) == {0, 1, 2}
    # --resume alone on a file complete for part of the series goes on with the rest of it
    run(str(inputs[0]), output=other, resume=True)
    assert read_status(other) == "complete" and read_frames_done(other) == {0, 1, 2, 3}
    assert read_process(other)["frames_requested"] == "0:4"


def test_a_resumed_run_that_takes_its_own_snapshots_keeps_every_frame(tmp_path):
    import pandas as pd

    from braggflow.schema import conform

    def peaks(i):
        return conform(pd.DataFrame({"frame": [i, i], "row": [1.0 + i, 2.0 + i], "col": [3.0, 4.0]}))

    path = tmp_path / "r.h5"
    first = ResultsWriter(path, sources=[], overwrite=True)
    for i in range(5):
        first.add(i, peaks(i))
    first.close(complete=False)
    resumed = ResultsWriter(path, sources=[], resume=True, snapshot_seconds=0.0)  # a snapshot after every frame
    for i in range(5, 10):
        resumed.add(i, peaks(i))
    resumed.close()
    table = read_peaks(path)
    assert len(table) == 20
    assert sorted(table["frame"].unique().tolist()) == list(range(10))
    assert np.allclose(np.sort(table["row"].to_numpy()), np.sort(np.r_[np.arange(10) + 1.0, np.arange(10) + 2.0]))
