"""Options of ``braggflow run`` that choose where its workers come from (``--cluster``, ``--jobs``, ...).

The options are declared in :mod:`braggflow.cli.core` (on ``run``); this
module turns them, with the ``cluster:`` section of the config file, into a
:class:`braggflow.pipeline.cluster.ClusterConfig`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CLUSTER_HELP", "cluster_from_options"]

CLUSTER_HELP = ("start workers as batch jobs through dask-jobqueue: slurm, pbs, sge, lsf, oar, moab "
                "(or the config file's cluster: section)")


def cluster_from_options(config_file: Path | None, *, kind: str | None, jobs: int | None, cores: int | None,
                         memory: str | None, walltime: str | None, queue: str | None, account: str | None,
                         workers: int = 0, scheduler: str | None = None):
    """The batch-job cluster a run asks for: the config file's ``cluster:`` section, then the named options.

    Parameters
    ----------
    config_file : Path, optional
        The run's ``-c`` file; its ``cluster:`` section (if any) gives the defaults.
    kind, jobs, cores, memory, walltime, queue, account
        ``--cluster``, ``--jobs``, ``--cores``, ``--memory``, ``--walltime``,
        ``--queue``, ``--account`` (None: not given).
    workers, scheduler
        ``--workers`` and ``--scheduler``: either one chooses other workers,
        and then the config file's section is not used.

    Returns
    -------
    cluster : braggflow.pipeline.cluster.ClusterConfig or None
        None when no batch jobs are asked for.

    Raises
    ------
    ConfigError
        For a job option without ``--cluster`` (or a ``cluster:`` section), an
        invalid value, ``--cluster`` together with ``--workers``/``--scheduler``,
        or a batch system whose submit command is not on PATH.
    """
    from braggflow.errors import ConfigError
    from braggflow.pipeline.cluster import cluster_config_from_dict, jobqueue_class, load_cluster_config

    named = {"kind": kind, "jobs": jobs, "cores": cores, "memory": memory, "walltime": walltime, "queue": queue,
             "account": account}
    given = {key: value for key, value in named.items() if value is not None}
    if given and (workers or scheduler):
        other = f"--workers {workers}" if workers else f"--scheduler {scheduler}"
        raise ConfigError(f"--cluster/--jobs and {other}: give one source of workers (--workers N for this machine, "
                          "--scheduler ADDRESS for a running scheduler, --cluster KIND for batch jobs)")
    if workers or scheduler:
        return None
    section = load_cluster_config(config_file)
    if section is None and not given:
        return None
    if section is None and "kind" not in given:
        options = ", ".join(f"--{key}" for key in given)
        raise ConfigError(f"{options}: batch-job options need --cluster KIND (e.g. --cluster slurm) or a cluster: "
                          "section in the config file")
    base = section.model_dump() if section is not None else {}
    cluster = cluster_config_from_dict({**base, **given}, source="--cluster options")
    jobqueue_class(cluster)  # dask-jobqueue and the submit command are there, before any file is written
    return cluster
