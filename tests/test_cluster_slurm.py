"""``braggflow run --cluster slurm`` against a real Slurm: a one-node cluster on the loopback interface.

The fixture starts munged, slurmctld and slurmd (Debian packages ``munge`` and
``slurm-wlm``) as root, with their state, sockets and logs in a temporary
folder and their own ports; it needs about two seconds.  Outside CI the tests
skip, saying why, where the packages, dask-jobqueue or root are missing; with
``BRAGGFLOW_REQUIRE_SLURM=1`` (set by ``.ci/run``) such a skip is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from braggflow.io.results import read_frames, read_peaks, read_status
from braggflow.simulate.frames import simulate_series, write_nexus

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("BRAGGFLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"BRAGGFLOW_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(folder: Path, munge_socket: Path) -> str:
    host = socket.gethostname()
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    return f"""ClusterName=braggflowtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=braggflow Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node Slurm; yields the environment (``SLURM_CONF``) its commands need."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        _skip_or_fail(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        _skip_or_fail("dask-jobqueue is not installed: pip install 'braggflow[cluster]'")
    if os.geteuid() != 0:
        _skip_or_fail("a one-node Slurm on loopback starts its daemons as root; run as root")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir()
    os.chmod(folder / "munge", 0o700)
    munge_socket = folder / "munge" / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pid_files = [folder / "munge" / "munged.pid", folder / "slurmctld.pid", folder / "slurmd.pid"]
    try:
        subprocess.run(["munged", f"--socket={munge_socket}", f"--pid-file={pid_files[0]}", "--force",
                        f"--log-file={folder / 'munge' / 'munged.log'}", f"--seed-file={folder / 'munge' / 'seed'}"],
                       check=True, env=env, capture_output=True, timeout=30)
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
        state = ""
        for _ in range(300):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.1)
        else:
            logs = "\n".join((folder / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                             if (folder / f).exists())
            pytest.fail(f"the one-node Slurm did not come up (sinfo: {state!r}):\n{logs}")
        yield env
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"starting {exc.cmd[0]} failed: {exc.stderr}")
    finally:
        subprocess.run(["scancel", "--partition=braggflow"], env=env, capture_output=True)
        for pid_file in reversed(pid_files):
            _stop(pid_file)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """400 frames of 96 x 96 with about 6 peaks each, and the peaks a serial run finds in them."""
    from braggflow.pipeline import run

    folder = tmp_path_factory.mktemp("frames")
    source = folder / "sim.h5"
    write_nexus(source, simulate_series(400, shape=(96, 96), n_peaks=5, seed=11, n_hot=0, n_dead=0))
    return source, _sorted(run(str(source)))


def _sorted(table):
    return table.sort_values(["frame", "row", "col"]).reset_index(drop=True)


def _braggflow(*args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-c", "from braggflow.cli import main; main()", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _jobs(env) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=env, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_run_on_slurm_jobs_finds_the_serial_peaks(slurm, frames, tmp_path):
    """Two Slurm jobs of one worker each process every frame once; the peaks are those of the serial run."""
    source, serial = frames
    out = tmp_path / "R.h5"
    proc = _braggflow("run", source, "-o", out, "--cluster", "slurm", "--jobs", 2, "--cores", 1, "--memory", "1GB",
                      "--walltime", "00:10:00", "--queue", "braggflow", env=slurm, cwd=tmp_path)
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log
    assert read_status(out) == "complete"
    table = _sorted(read_peaks(out))
    frames_table = read_frames(out)
    assert sorted(frames_table["frame"]) == list(range(400))  # every frame once
    assert len(table) == len(serial)
    np.testing.assert_array_equal(table["frame"], serial["frame"])
    np.testing.assert_allclose(table[["row", "col", "intensity"]], serial[["row", "col", "intensity"]])
    assert sorted(frames_table["source_file"].astype(str).unique()) == ["sim.h5"]
    assert not _jobs(slurm), "the run's jobs are still queued after it ended"


def test_killed_slurm_run_resumes_with_the_frames_done(slurm, frames, tmp_path):
    """A cluster run killed (SIGKILL) after its first journal batches resumes on Slurm; no frame twice, none lost."""
    source, serial = frames
    out = tmp_path / "K.h5"
    journal = tmp_path / "K.h5.journal"
    proc = _braggflow("run", source, "-o", out, "--cluster", "slurm", "--jobs", 1, "--cores", 1, "--memory", "1GB",
                      "--queue", "braggflow", env=slurm, cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_dir() and any(journal.glob("batch_*.npz")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[0]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    subprocess.run(["scancel", "--partition=braggflow"], env=slurm, capture_output=True)
    resumed = _braggflow("run", source, "-o", out, "--resume", "--cluster", "slurm", "--jobs", 1, "--cores", 1,
                         "--memory", "1GB", "--queue", "braggflow", env=slurm, cwd=tmp_path)
    log, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, log
    assert read_status(out) == "complete"
    frames_table = read_frames(out)
    assert sorted(frames_table["frame"]) == list(range(400)), "a frame is missing or recorded twice"
    table = _sorted(read_peaks(out))
    assert len(table) == len(serial)
    np.testing.assert_allclose(table[["row", "col", "intensity"]], serial[["row", "col", "intensity"]])
    processed = int(log.split(" frames processed")[0].split()[-1])
    assert processed < 400, log  # the frames done before the kill were kept, not processed again
