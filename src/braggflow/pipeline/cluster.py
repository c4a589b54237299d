"""Where a run's Dask workers come from: this machine, a running scheduler, or a batch system's jobs.

``braggflow run`` takes its workers from one of three places:

- ``--workers N``: a local cluster of N processes (:func:`local_cluster`);
- ``--scheduler ADDRESS``: a Dask scheduler already running (started by hand or by a site's tooling);
- ``--cluster slurm --jobs N`` (or a ``cluster:`` section of the config file):
  workers started as batch jobs through dask-jobqueue
  (https://jobqueue.dask.org): ``SLURMCluster``, ``PBSCluster``,
  ``SGECluster``, ``LSFCluster``, ``OARCluster``, ``MoabCluster``.  Each job runs ``processes`` worker processes sharing
  ``cores`` cores and ``memory``.

The ``cluster:`` section describes where a run executes, not what it
computes, so it is kept apart from the pipeline's :class:`~braggflow.pipeline.config.Config`:
it is not stored in the results file, and a run may be resumed on other
workers (a cluster run killed half-way can go on with ``--workers 2``).

:class:`ClusterStarter` submits batch jobs in a background thread, so that
the main process goes on while they wait in the queue; a local cluster is
started in the main thread, after the run's first frame, because it forks its
workers (:func:`local_cluster`).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from braggflow.errors import ConfigError
from braggflow.options import OptionSection

__all__ = ["ClusterConfig", "CLUSTER_KINDS", "cluster_config_from_dict", "load_cluster_config", "jobqueue_class",
           "jobqueue_cluster", "jobqueue_kwargs", "local_cluster", "ClusterStarter", "start_cluster"]

#: batch systems, and the dask-jobqueue class that starts workers on each
CLUSTER_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
                 "oar": "OARCluster", "moab": "MoabCluster"}


#: Dask settings of braggflow's workers: no statistical profiler sampling the worker's thread every 10 ms, no
#: work stealing (the runner hands out tasks of measured size itself), fewer system-monitor samples, the event
#: loop's health tick once a second (not every 20 ms, in the scheduler, each nanny and each worker) and the
#: memory of a worker looked at once a second (not every 100 ms; a nanny still restarts a worker over its limit);
#: each of these costs CPU in every process for as long as the run lasts (two idle local workers: 1.3 s of CPU
#: in 10 s with Dask's defaults, 0.25 s with these)
QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.scheduler.work-stealing": False,
                 "distributed.admin.system-monitor.interval": "2s", "distributed.admin.tick.interval": "1s",
                 "distributed.worker.memory.monitor-interval": "1s"}

#: the name each dask-jobqueue class gives the account (project) charged
_ACCOUNT_NAME = {"sge": "project", "lsf": "project", "oar": "project"}


class ClusterConfig(OptionSection):
    """Workers started as batch jobs (the ``cluster:`` section of a config file; ``--cluster``, ``--jobs``, ...).

    Every key but ``kind``, ``jobs`` and ``wait`` is passed to the
    dask-jobqueue class of ``kind`` under its own name (``job_extra`` as
    ``job_extra_directives``, ``prologue`` as ``job_script_prologue``); null
    keeps dask-jobqueue's default (its own config file, ``jobqueue.yaml``).
    """

    kind: Literal["slurm", "pbs", "sge", "lsf", "oar", "moab"] = Field(
        "slurm", description="batch system: slurm, pbs, sge, lsf, oar or moab")
    jobs: int = Field(1, ge=1, description="batch jobs to submit (workers = jobs x processes)")
    cores: int = Field(1, ge=1, description="cores per job")
    processes: int | None = Field(None, ge=1, description="worker processes per job (null: cores, one thread each)")
    memory: str = Field("4GB", description="memory per job, e.g. 16GB (shared by its processes)")
    walltime: str | None = Field(None, description="time limit of a job, HH:MM:SS (null: the queue's default)")
    queue: str | None = Field(None, description="partition (Slurm) or queue to submit to")
    account: str | None = Field(None, description="account (project) charged for the jobs")
    interface: str | None = Field(None, description="network interface the workers and scheduler use, e.g. ib0")
    job_extra: list[str] = Field(default_factory=list, description="more #SBATCH (#PBS, #$) directive lines")
    prologue: list[str] = Field(default_factory=list,
                                description="shell lines run before a worker starts, e.g. 'module load python'")
    python: str | None = Field(None, description="Python executable on the compute nodes (null: this one)")
    local_directory: str | None = Field(None, description="scratch folder of the workers on the compute nodes")
    log_directory: str | None = Field(None, description="folder for the jobs' stdout/stderr files")
    wait: float = Field(600.0, gt=0, description="seconds to wait for the first worker to join (queue time)")

    def worker_processes(self) -> int:
        """Worker processes per job (``processes``, else one per core)."""
        return self.processes or self.cores


def cluster_config_from_dict(data: dict[str, Any], *, source: str = "cluster") -> ClusterConfig:
    """Validate a ``cluster:`` mapping into a :class:`ClusterConfig`.

    Raises
    ------
    ConfigError
        Naming ``source`` and each invalid or unknown key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the cluster section must be a mapping of keys, got {type(data).__name__}")
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as exc:
        parts = [f"cluster.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{source}: invalid cluster section: " + "; ".join(parts)) from None


def load_cluster_config(path: str | Path | None) -> ClusterConfig | None:
    """The ``cluster:`` section of a YAML config file, or None when the file has none.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not YAML, or its section is invalid.
    """
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    if not isinstance(data, dict) or data.get("cluster") is None:
        return None
    return cluster_config_from_dict(data["cluster"], source=str(path))


def local_cluster(workers: int):
    """A Dask LocalCluster of ``workers`` single-threaded processes that serves nothing over HTTP.

    ``dashboard_address=None`` turns off the Bokeh dashboard only: the
    scheduler still starts its HTTP server (``/info``, ``/json``, ``/proxy``,
    Prometheus metrics).  Here that server gets no routes and listens on a free
    port of the loopback interface, like the workers' own.

    Where the platform has ``fork`` (Linux), the worker processes are forked
    from this one, so they start with the pipeline already imported (a spawned
    worker spends seconds importing it before its first frame).  Call it when
    no other thread of this process is reading files (the runner does), as a
    forked process inherits the locks held at that moment.  The objects of this
    process are frozen out of the garbage collector while it forks
    (:func:`gc.freeze`, as Python's documentation advises before a fork), so
    that a worker's collections do not walk, and copy the memory pages of, the
    objects it inherited (a run of 300 frames on two workers: 18.5 against
    19.2 s of CPU, medians of five alternated runs whose ranges overlap).
    """
    import gc

    import dask
    from dask.distributed import LocalCluster

    settings = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": [], **QUIET_WORKERS}
    if "fork" in multiprocessing.get_all_start_methods():
        settings["distributed.worker.multiprocessing-method"] = "fork"
    gc.freeze()
    try:
        with dask.config.set(settings):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                host="127.0.0.1",
                                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    finally:
        gc.unfreeze()  # this process collects them again


def jobqueue_class(config: ClusterConfig):
    """The dask-jobqueue class of ``config.kind``, checked to be usable here.

    Raises
    ------
    ConfigError
        If dask-jobqueue is not installed (``pip install braggflow[cluster]``),
        or the batch system's submit command is not on PATH.
    """
    import shutil

    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"--cluster {config.kind}: needs dask-jobqueue (pip install 'braggflow[cluster]')") from None
    submit = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub", "oar": "oarsub",
              "moab": "msub"}[config.kind]
    if shutil.which(submit) is None:
        raise ConfigError(f"--cluster {config.kind}: the submit command {submit} is not on PATH (run on a login node "
                          f"of the {config.kind} cluster)")
    return getattr(dask_jobqueue, CLUSTER_KINDS[config.kind])


def jobqueue_cluster(config: ClusterConfig, cls=None):
    """A dask-jobqueue cluster of ``config.kind``, scaled to ``config.jobs`` jobs (they are submitted now).

    Parameters
    ----------
    config : ClusterConfig
    cls : type, optional
        The dask-jobqueue class (default: :func:`jobqueue_class`).

    Returns
    -------
    cluster : dask_jobqueue.JobQueueCluster

    Raises
    ------
    ConfigError
        As :func:`jobqueue_class`.
    """
    cls = cls or jobqueue_class(config)
    cluster = cls(**jobqueue_kwargs(config))
    cluster.scale(jobs=config.jobs)
    return cluster


def jobqueue_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """The keyword arguments of the dask-jobqueue class for ``config`` (``jobs``, ``kind`` and ``wait`` aside).

    Returns
    -------
    kwargs : dict
        ``cores``, ``processes``, ``memory`` and the keys ``config`` sets
        (``walltime``, ``queue``, ``account``, ``interface``, ``python``,
        ``local_directory``, ``log_directory``, ``job_extra_directives``,
        ``job_script_prologue``).
    """
    kwargs: dict[str, Any] = {"cores": config.cores, "processes": config.worker_processes(), "memory": config.memory}
    for key in ("walltime", "queue", "account", "interface", "python", "local_directory", "log_directory"):
        value = getattr(config, key)
        if value is not None:
            kwargs[_ACCOUNT_NAME.get(config.kind, "account") if key == "account" else key] = value
    if config.job_extra:
        kwargs["job_extra_directives"] = list(config.job_extra)
    quiet = [f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={value}"
             for key, value in QUIET_WORKERS.items() if key.startswith("distributed.worker") or "admin" in key]
    kwargs["job_script_prologue"] = quiet + list(config.prologue)
    # the scheduler's own Bokeh pages would listen on every interface of the login node: none is started
    kwargs["scheduler_options"] = {"dashboard": False, "dashboard_address": None}
    return kwargs


class ClusterStarter:
    """A run's Dask workers, started in a background thread while the main process goes on.

    Parameters
    ----------
    make : callable() -> cluster or str
        Builds the cluster (a LocalCluster or a dask-jobqueue cluster), or
        gives the address of a running scheduler.
    wait : float
        Seconds the run waits for the first worker to join (0: do not wait).
    background : bool
        Start in a background thread (batch jobs: submitting them and their
        queue time overlap the main process's work); False starts now, in this
        thread (a local cluster that forks its workers must).
    """

    def __init__(self, make: Callable[[], Any], *, wait: float = 0.0, background: bool = True):
        self._make = make
        self.wait = float(wait)
        self._cluster: Any = None
        self._client = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="braggflow-cluster-start", daemon=True)
        if background:
            self._thread.start()
        else:
            self._thread.run()

    @property
    def cluster(self):
        """The cluster object (None until started; the address string for a running scheduler)."""
        return self._cluster

    def _start(self) -> None:
        try:
            self._cluster = self._make()
        except BaseException as exc:  # re-raised by client()
            self._error = exc

    def _join(self) -> None:
        if self._thread.is_alive():
            self._thread.join()

    def client(self):
        """A :class:`distributed.Client` of the started cluster (waits for the start).

        Raises
        ------
        BaseException
            Whatever starting the cluster raised.
        """
        from dask.distributed import Client

        self._join()
        if self._error is not None:
            raise self._error
        if self._client is None:
            self._client = Client(self._cluster)
        return self._client

    def close(self) -> None:
        """Close the client and the cluster this starter made (not a scheduler given by address)."""
        self._join()
        if self._client is not None:
            self._client.close()
        if self._cluster is not None and not isinstance(self._cluster, str):
            self._cluster.close()


def start_cluster(*, workers: int = 0, scheduler_address: str | None = None, cluster: ClusterConfig | None = None,
                  local: Callable[[int], Any] | None = None) -> ClusterStarter:
    """Start the workers a run asked for: a batch-system cluster, a running scheduler, or a local cluster.

    Parameters
    ----------
    workers : int
        Local worker processes (used when neither of the others is given).
    scheduler_address : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
    cluster : ClusterConfig, optional
        Batch jobs to submit.
    local : callable(workers) -> cluster, optional
        Builds the local cluster (default :func:`local_cluster`).

    Returns
    -------
    starter : ClusterStarter

    Raises
    ------
    ConfigError
        If more than one of the three is given.
    """
    given = [name for name, value in (("--workers", workers), ("--scheduler", scheduler_address),
                                      ("--cluster", cluster)) if value]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one source of workers (--workers N for this machine, "
                          "--scheduler ADDRESS for a running scheduler, --cluster KIND for batch jobs)")
    if cluster is not None:
        import distributed  # noqa: F401  (imported here: a first import in two threads at once fails)

        cls = jobqueue_class(cluster)
        return ClusterStarter(lambda: jobqueue_cluster(cluster, cls), wait=cluster.wait)
    if scheduler_address:
        return ClusterStarter(lambda: scheduler_address, wait=60.0)
    make = local or local_cluster
    return ClusterStarter(lambda: make(workers), background=False)
