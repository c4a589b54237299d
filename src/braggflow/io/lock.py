"""One writer per results file: an exclusive lock held while a command changes it.

The lock is an operating-system lock (``flock``/``LockFileEx`` through the
``filelock`` library) on ``RESULTS.h5.lock`` beside the results file, so it is
released when its process ends, however it ends: there are no stale locks to
clean up.  The holder's host, process id and command line are written to
``.RESULTS.h5.owner`` while it holds the lock, so that a refused writer can name
it.  Within one process the lock is re-entrant (a command that holds it may call
functions that take it again).

On network file systems the guarantee is that of their ``flock``: NFSv4 and
GPFS/Lustre (with locking enabled) honour it across hosts; NFSv3 without a lock
manager does not.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from braggflow.errors import InputFileError

__all__ = ["results_lock", "lock_path", "owner_path"]

_held: dict[str, list] = {}  # resolved results path -> [FileLock, depth], for re-entry within this process
_guard = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a results file: ``RESULTS.h5.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def owner_path(path: str | os.PathLike) -> Path:
    """The file naming the lock's holder: ``.RESULTS.h5.owner`` beside the results file."""
    path = Path(path)
    return path.with_name(f".{path.name}.owner")


def _describe_owner(path: Path) -> str:
    try:
        owner = json.loads(owner_path(path).read_text())
        return f"host {owner['host']}, PID {owner['pid']}, command: {owner['command']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


@contextmanager
def results_lock(path: str | os.PathLike):
    """Hold the exclusive lock of a results file for the duration of a ``with`` block.

    Parameters
    ----------
    path : str or os.PathLike
        The results file (it need not exist yet; its folder is created).

    Raises
    ------
    InputFileError
        If another process holds the lock, naming that process (host, PID,
        command), or if the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    key = str(path.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield
        finally:
            with _guard:
                entry[1] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path(path)), timeout=0, thread_local=False)
        lock.acquire()
    except Timeout:
        raise InputFileError(
            f"{path}: another braggflow process is writing this results file ({_describe_owner(path)}); "
            "wait for it to finish or choose another output"
        ) from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot create the lock file {lock_path(path)} ({exc.strerror or exc})") from None
    with _guard:
        _held[key] = [lock, 1]
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)}
    try:
        owner_path(path).write_text(json.dumps(owner))
    except OSError:
        pass  # the lock holds without the description
    try:
        yield
    finally:
        with _guard:
            del _held[key]
        owner_path(path).unlink(missing_ok=True)
        lock.release()
