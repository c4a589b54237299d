"""The results writer holds a bounded part of the peaks; the frames table's hit rule, the veto of non-hits, latency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from braggflow.cli import app
from braggflow.io import writer as writer_module
from braggflow.io.results import ResultsWriter, read_frames, read_peaks, read_status, read_table
from braggflow.schema import conform

pytestmark = pytest.mark.timeout(300)


def peaks(frame: int, n: int) -> pd.DataFrame:
    """``n`` peaks of ``frame`` whose rows encode (frame, k) and whose phase/h are set on every other peak."""
    k = np.arange(n)
    return conform(pd.DataFrame({
        "frame": np.full(n, frame), "row": frame * 1000.0 + k, "col": k * 2.0,
        "phase": pd.Categorical([f"P{frame % 3}" if j % 2 else None for j in k]),
        "h": pd.array([j if j % 2 else None for j in k], dtype="Int32"),
    }))


def expected_rows(frames, n: int) -> np.ndarray:
    return np.concatenate([f * 1000.0 + np.arange(n) for f in sorted(frames)])


def test_close_writes_the_peaks_one_part_at_a_time(tmp_path, monkeypatch):
    """Consolidation appends at most CHUNK_ROWS rows plus one journal batch at a time, and reads the earlier file
    in slices of at most CHUNK_ROWS rows; what it writes is every peak, sorted by frame."""
    monkeypatch.setattr(writer_module, "CHUNK_ROWS", 64)
    appended, sliced, batches = [], [], []
    real_write, real_rows, real_batch = writer_module._PeakSink._write_pending, writer_module._read_rows, \
        writer_module._batch_arrays

    def write_pending(self):
        appended.append(self._held)  # rows held in memory when they are written
        return real_write(self)

    def rows(group, start, stop):
        sliced.append(stop - start)
        return real_rows(group, start, stop)

    def batch(npz):
        arrays = real_batch(npz)
        batches.append(len(arrays["v:frame"]))
        return arrays

    monkeypatch.setattr(writer_module._PeakSink, "_write_pending", write_pending)
    monkeypatch.setattr(writer_module, "_read_rows", rows)
    monkeypatch.setattr(writer_module, "_batch_arrays", batch)
    path = tmp_path / "r.h5"
    first = ResultsWriter(path, sources=[], flush_frames=2, flush_seconds=1e9)
    for f in range(10, 40):  # 30 frames of 20 peaks: 15 batches of 40 rows
        first.add(f, peaks(f, 20), {"n_peaks": 20})
    first.close(complete=False)
    assert len(batches) == 15 and max(batches) == 40
    assert sum(appended) == 600 and max(appended) <= 64 + 40
    appended.clear(), batches.clear()
    resumed = ResultsWriter(path, sources=[], resume=True, flush_frames=2, flush_seconds=1e9)
    for f in range(0, 10):  # frames before those the file holds: the rows are sorted again at close
        resumed.add(f, peaks(f, 20), {"n_peaks": 20})
    resumed.close()
    assert sliced and max(sliced) <= 64 and sum(sliced) == 600  # the earlier file, read in slices
    assert max(appended) <= 64 + 40 and sum(appended) == 800
    stored = read_table(path, "/entry/peaks")  # as stored, not sorted by the reader
    np.testing.assert_array_equal(stored["row"].to_numpy(), expected_rows(range(40), 20))
    assert np.all(np.diff(stored["frame"].to_numpy()) >= 0)
    table = read_peaks(path)
    odd = table["row"].to_numpy() % 2 == 1
    assert table["phase"].isna().to_numpy().tolist() == (~odd).tolist()
    np.testing.assert_array_equal(table.loc[odd, "phase"].astype(str), [f"P{f % 3}" for f in table["frame"][odd]])
    assert table["h"].isna().to_numpy().tolist() == (~odd).tolist()
    assert read_status(path) == "complete" and len(read_frames(path)) == 40


def test_a_snapshot_reads_no_peak_of_the_run(tmp_path, monkeypatch):
    """Snapshots during the run hold the status and the frames table, and copy only what the file held at the start:
    they read no journal batch, so their cost does not grow with the run; readers merge the journal."""
    path = tmp_path / "r.h5"

    def refuse(*args, **kwargs):
        raise AssertionError("a snapshot read peaks")

    writer = ResultsWriter(path, sources=[], snapshot_seconds=0.0, flush_frames=1)
    monkeypatch.setattr(writer_module, "_batch_arrays", refuse)
    monkeypatch.setattr(writer_module, "_read_rows", refuse)
    for f in range(6):
        writer.add(f, peaks(f, 5), {"n_peaks": 5})  # a snapshot after every frame
    monkeypatch.undo()
    assert read_status(path) == "running"
    assert len(read_table(path, "/entry/peaks")) == 0 and len(read_frames(path)) == 6
    np.testing.assert_array_equal(read_peaks(path)["row"].to_numpy(), expected_rows(range(6), 5))
    writer.close()
    np.testing.assert_array_equal(read_table(path, "/entry/peaks")["row"].to_numpy(), expected_rows(range(6), 5))


def test_hits_by_the_rule_and_the_peaks_of_non_hits_counted_not_stored(tmp_path):
    path = tmp_path / "r.h5"
    writer = ResultsWriter(path, sources=[], hit_min_peaks=10, veto_empty=True)
    counts = {0: 12, 1: 3, 2: 0, 3: 10, 4: 9}
    for f, n in counts.items():
        writer.add(f, peaks(f, n), {"n_peaks": n})
    more = {5: 11, 6: 1}  # as the workers' path records them: many frames at once
    writer.add_frames(list(more), pd.concat([peaks(f, n) for f, n in more.items()], ignore_index=True),
                      {"n_peaks": list(more.values())})
    writer.close()
    frames = read_frames(path)
    everything = {**counts, **more}
    assert frames["n_peaks"].tolist() == list(everything.values())
    assert frames["hit"].tolist() == [n >= 10 for n in everything.values()]
    table = read_peaks(path)
    assert sorted(table["frame"].unique().tolist()) == [0, 3, 5]
    np.testing.assert_array_equal(table["row"].to_numpy(), expected_rows([0], 12).tolist() +
                                  expected_rows([3], 10).tolist() + expected_rows([5], 11).tolist())
    from braggflow.cli.dashboard import summary_record

    record = summary_record(path)  # the writer's rule, recorded in /entry/process
    assert (record["hit_min_peaks"], record["hits"], record["veto_empty"]) == (10, 3, True)
    assert (record["peaks_found"], record["peaks_stored"]) == (sum(everything.values()), 12 + 10 + 11)
    with pytest.raises(ValueError, match="veto_empty needs hit_min_peaks"):
        ResultsWriter(tmp_path / "s.h5", sources=[], veto_empty=True)


def test_run_and_summary_report_hits_and_vetoed_peaks(tmp_path):
    from braggflow.simulate.frames import simulate_series, write_nexus

    source = tmp_path / "sim.h5"
    write_nexus(source, simulate_series(4, shape=(128, 128), n_peaks=15, seed=3))
    runner = CliRunner()
    out, vetoed = tmp_path / "R.h5", tmp_path / "V.h5"
    assert runner.invoke(app, ["run", str(source), "-o", str(out)]).exit_code == 0
    found = read_frames(out)["n_peaks"].to_numpy()
    assert found.min() >= 10 and read_frames(out)["hit"].all()  # about 15 peaks a frame: hits by the default rule
    result = runner.invoke(app, ["run", str(source), "-o", str(vetoed), "--veto-empty", "--set",
                                 f"frames.hit_min_peaks={int(found.max())}"])
    assert result.exit_code == 0, result.output
    assert f"{int(found.max()) * int((found == found.max()).sum())} peaks" in " ".join(result.output.split())
    summary = runner.invoke(app, ["summary", str(vetoed), "--json", "-"])
    assert summary.exit_code == 0, summary.output
    record = json.loads(summary.output)
    hits = int((found == found.max()).sum())
    assert record["frames"] == 4 and record["peaks_found"] == int(found.sum())
    assert record["hits"] == hits and record["peaks_stored"] == hits * int(found.max()) == len(read_peaks(vetoed))
    assert record["hit_min_peaks"] == int(found.max()) and record["veto_empty"] is True
    assert record["status"] == "complete" and record["latency_median_s"] is None
    table = runner.invoke(app, ["summary", str(out)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "hit_rate" in table.output and "peaks in /entry/peaks" in table.output


def test_watch_records_each_frames_latency(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    for k in range(3):
        np.save(folder / f"f_{k}.npy", np.random.default_rng(k).poisson(5, (64, 64)).astype(np.float32))
    out = tmp_path / "live.h5"
    result = CliRunner().invoke(app, ["watch", str(folder), "-o", str(out), "--idle-timeout", "0.5", "--poll",
                                      "0.02"])
    assert result.exit_code == 0, result.output
    latency = read_frames(out)["latency"].to_numpy()
    assert latency.shape == (3,) and np.all(np.isfinite(latency)) and np.all(latency >= 0)
    record = json.loads(CliRunner().invoke(app, ["summary", str(out), "--json", "-"]).output)
    assert record["latency_median_s"] == pytest.approx(float(np.median(latency)))


def test_a_journal_batch_holds_its_peaks_and_its_frames_rows_together(tmp_path):
    """One file per batch (one write, one sync): readers find the rows of the frames journaled since the snapshot."""
    path = tmp_path / "r.h5"
    writer = ResultsWriter(path, sources=[], flush_frames=2, flush_seconds=1e9, snapshot_seconds=1e9)
    for f in range(4):
        writer.add(f, peaks(f, f + 1), {"n_peaks": f + 1, "noise": 0.5 * f})
    journal = tmp_path / "r.h5.journal"
    assert sorted(p.name for p in journal.glob("*.npz")) == ["batch_00000000.npz", "batch_00000001.npz"]
    frames = read_frames(path)  # the snapshot holds none of them: all from the journal
    assert frames["frame"].tolist() == [0, 1, 2, 3] and frames["n_peaks"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(frames["noise"], [0.0, 0.5, 1.0, 1.5])
    assert len(read_peaks(path)) == 10
    writer.close()
    assert read_frames(path)["n_peaks"].tolist() == [1, 2, 3, 4] and not journal.exists()


def test_watch_veto_empty_counts_the_peaks_of_non_hits_without_storing_them(tmp_path):
    from braggflow.simulate.frames import simulate_series

    folder = tmp_path / "detector"
    folder.mkdir()
    sim = simulate_series(2, shape=(128, 128), n_peaks=15, seed=4)
    for k, frame in enumerate(sim.frames):
        np.save(folder / f"f_{k}.npy", frame.astype(np.float32))
    out = tmp_path / "live.h5"
    result = CliRunner().invoke(app, ["watch", str(folder), "-o", str(out), "--idle-timeout", "0.5", "--poll", "0.02",
                                      "--veto-empty", "--set", "frames.hit_min_peaks=1000"])
    assert result.exit_code == 0, result.output
    frames = read_frames(out)
    assert len(frames) == 2 and frames["n_peaks"].min() >= 10 and not frames["hit"].any()
    assert len(read_peaks(out)) == 0
