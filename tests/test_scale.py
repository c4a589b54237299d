"""The Dask path's parts: task size, worker tasks and their compact results, the cluster options and config section."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from braggflow.errors import BraggflowError, ConfigError
from braggflow.io.frames import open_frames
from braggflow.pipeline import analyse_frame, measure_series, prepare
from braggflow.pipeline.cluster import ClusterConfig, jobqueue_kwargs
from braggflow.pipeline.config import Config, load_config
from braggflow.pipeline.distributed import MAIN_SHARE, PROBE_FRAMES, process_chunk, task_frames, worker_series
from braggflow.simulate.frames import simulate_series, write_nexus


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "sim.h5"
    write_nexus(path, simulate_series(6, shape=(128, 128), n_peaks=8, seed=2))
    return path


def test_task_size_is_the_measured_target_capped_for_balance():
    assert task_frames(0.02, frames_left=10_000, workers=2, target=0.8) == 40  # 0.8 s / 0.02 s
    assert task_frames(0.02, frames_left=100, workers=2, target=0.8) == 13  # ceil(100 / 8): 4 tasks per worker
    assert task_frames(5.0, frames_left=100, workers=2, target=0.8) == 1  # a slow frame: one per task
    assert task_frames(float("nan"), frames_left=100, workers=2) == PROBE_FRAMES  # nothing measured yet
    # recording a task takes the main process 0.1 s: tasks of 2 workers last >= 2 x 0.1 / MAIN_SHARE = 2 s
    assert task_frames(0.02, frames_left=10_000, workers=2, target=0.8, record_seconds=0.1) == round(
        2 * 0.1 / (MAIN_SHARE * 0.02))


def test_worker_task_returns_numpy_columns_equal_to_the_frames_analysed_one_by_one(source):
    series = open_frames(str(source))
    config = Config()
    context = measure_series(series, config, prepare(config, shape=series.shape, dtype=series.dtype,
                                                     detector_mask=series.detector_mask))
    shipped = pickle.dumps(worker_series(series))
    assert len(shipped) < 4096  # the file name and metadata, not frames nor the pixel mask
    assert series.detector_mask is not None  # the run's own reader keeps it
    result = process_chunk(pickle.loads(shipped), [1, 3, 4], config, context)
    assert result.error is None and result.frames.tolist() == [1, 3, 4]
    assert all(isinstance(v, np.ndarray) for v in [*result.peaks.values(), *result.rows.values()])
    one_by_one = [analyse_frame(series[i], config=config, context=context, frame_index=i) for i in (1, 3, 4)]
    table = result.peak_table()
    assert len(table) == sum(len(r.table) for r in one_by_one) > 0
    for r in one_by_one:
        mine = table[table["frame"] == r.table["frame"].iloc[0]]
        np.testing.assert_allclose(mine[["row", "col", "intensity"]], r.table[["row", "col", "intensity"]])
    assert result.rows["n_peaks"].tolist() == [r.row["n_peaks"] for r in one_by_one]


def test_worker_task_stops_at_a_bad_frame_and_returns_the_frames_before_it(source):
    series = open_frames(str(source))
    config = Config()
    context = prepare(config, shape=series.shape, dtype=series.dtype)
    frames = [series[i] for i in range(3)] + [np.zeros((5, 5))]

    class Frames(list):
        def read(self, i, out=None):  # FrameSeries.read: a new array where out cannot be filled
            return self[i]

        def omega_centre(self, i):
            return float("nan")

        def describe_frame(self, i):
            return f"frame {i}"

    result = process_chunk(Frames(frames), [0, 1, 3, 2], config, context)
    assert result.frames.tolist() == [0, 1]
    assert isinstance(result.error, BraggflowError) and "frame 3" in str(result.error)


def test_cluster_section_of_the_config_file_and_the_options(tmp_path, monkeypatch):
    from braggflow.cli.cluster import cluster_from_options

    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (the cluster extra)")
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "qsub" else which(name))

    path = tmp_path / "c.yaml"
    path.write_text("find:\n  threshold_sigma: 6\ncluster:\n  kind: pbs\n  jobs: 3\n  cores: 8\n  queue: short\n")
    assert load_config(path).find.threshold_sigma == 6  # the pipeline's config, without the cluster section
    given = dict(kind=None, jobs=None, cores=None, memory=None, walltime=None, queue=None, account=None)
    cluster = cluster_from_options(path, **{**given, "jobs": 5, "account": "mx123"})
    assert (cluster.kind, cluster.jobs, cluster.cores, cluster.queue, cluster.account) == ("pbs", 5, 8, "short",
                                                                                          "mx123")
    assert cluster_from_options(path, **given, workers=2) is None  # --workers: this machine, the section unused
    assert cluster_from_options(None, **given) is None
    with pytest.raises(ConfigError, match="--jobs: batch-job options need --cluster"):
        cluster_from_options(None, **{**given, "jobs": 2})
    with pytest.raises(ConfigError, match="give one source of workers"):
        cluster_from_options(None, **{**given, "kind": "slurm"}, workers=2)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a login node without the batch system's commands
    with pytest.raises(ConfigError, match="submit command qsub is not on PATH"):
        cluster_from_options(path, **given)
    path.write_text("cluster:\n  kind: slurm\n  jobz: 3\n")
    with pytest.raises(ConfigError, match="cluster.jobz"):
        load_config(path)


def test_pbs_and_sge_job_scripts_carry_the_options():
    """The same options make PBS and SGE jobs through dask-jobqueue's classes (no batch system needed to write them)."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (the cluster extra)")
    config = ClusterConfig(kind="pbs", cores=4, memory="8GB", walltime="01:30:00", queue="short", account="mx123",
                           job_extra=["-l place=scatter"])
    pbs = dask_jobqueue.PBSCluster(**jobqueue_kwargs(config))
    try:
        script = pbs.job_script()
    finally:
        pbs.close()
    for line in ("#PBS -q short", "#PBS -A mx123", "walltime=01:30:00", "#PBS -l place=scatter", "--nthreads 1",
                 "--nworkers 4"):
        assert line in script, script
    sge = dask_jobqueue.SGECluster(**jobqueue_kwargs(config.model_copy(update={"kind": "sge"})))
    try:
        script = sge.job_script()
    finally:
        sge.close()
    assert "#$ -q short" in script and "#$ -P mx123" in script and "h_rt=01:30:00" in script, script


@pytest.mark.timeout(300)
def test_a_worker_that_dies_ends_the_run_with_an_error_and_the_finished_frames_kept(tmp_path, monkeypatch):
    """A worker process that exits in the middle of frame 4: BraggflowError, frames before it in the file."""
    import multiprocessing
    import os

    pytest.importorskip("distributed")
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the workers must be forked from this process to inherit the failing frame function")
    import braggflow.pipeline as pipeline
    from braggflow.io.results import read_frames_done, read_status

    source = tmp_path / "sim.h5"
    write_nexus(source, simulate_series(8, shape=(96, 96), n_peaks=5, seed=6))
    main, real = os.getpid(), pipeline.analyse_frame

    def dies_on_frame_4(frame, **kwargs):
        if kwargs.get("frame_index") == 4 and os.getpid() != main:
            os._exit(3)  # the worker process ends, as a crash in compiled code would end it
        return real(frame, **kwargs)

    monkeypatch.setattr(pipeline, "analyse_frame", dies_on_frame_4)  # the forked workers inherit it
    out = tmp_path / "R.h5"
    with pytest.raises(BraggflowError, match="worker was lost"):
        pipeline.run(str(source), output=out, workers=1, return_table=False)
    assert read_status(out) == "incomplete"
    done = read_frames_done(out)
    assert 0 in done and 4 not in done  # the first frame (analysed before the workers start) is kept


def test_gap_mask_of_a_shape_without_gapped_detector_needs_no_pyfai_once_the_shapes_are_cached(tmp_path):
    """The first run imports pyFAI's registry and caches its gapped shapes; the next ones answer from the cache."""
    import json
    import os
    import subprocess
    import sys

    probe = ("import json, sys; from braggflow.correct import detector_gap_mask; "
             "a = detector_gap_mask((1024, 1024), 'auto'); imported = 'pyFAI.detectors' in sys.modules; "
             "p = detector_gap_mask((1043, 981), 'auto'); "
             "print(json.dumps([a is None, imported, int(p.sum()), list(p.shape)]))")
    env = dict(os.environ, BRAGGFLOW_CACHE_DIR=str(tmp_path / "cache"))

    def ask(**extra):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              env={**env, **extra}, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])

    import pyFAI.detectors

    truth = pyFAI.detectors.Pilatus1M().calc_mask()  # the one gapped layout of 1043 x 981
    first = ask()
    cache = tmp_path / "cache" / "gap_detector_shapes.json"
    assert first[0] and first[1] and cache.is_file()  # no gaps at 1024 x 1024; the registry was imported
    assert first[2] == int(truth.sum()) > 0 and first[3] == list(truth.shape)
    stored = json.loads(cache.read_text())
    assert [1043, 981] in stored["shapes"] and [1024, 1024] not in stored["shapes"]
    again = ask()
    assert again[0] and not again[1]  # answered from the cache: pyFAI not imported for 1024 x 1024
    assert again[2:] == first[2:]  # the Pilatus frame still gets pyFAI's own mask
    cache.write_text(json.dumps({"pyFAI": "0.0", "shapes": []}))  # another pyFAI's cache is not believed
    stale = ask()
    assert stale[1] and stale[2:] == first[2:] and json.loads(cache.read_text())["pyFAI"] != "0.0"
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache folder that cannot be made: the registry every time, no error
    unwritable = ask(BRAGGFLOW_CACHE_DIR=str(blocked / "cache"))
    assert unwritable[0] and unwritable[1] and unwritable[2:] == first[2:]
