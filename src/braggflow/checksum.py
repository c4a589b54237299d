"""SHA-256 of a file, for the provenance of inputs and the integrity of model files."""

from __future__ import annotations

import hashlib
import os

__all__ = ["BackgroundChecksums", "file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    digest : str

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class BackgroundChecksums:
    """SHA-256 of input files, computed by a background thread while a run analyses them.

    A run records the SHA-256 of its inputs when it closes its results file;
    hashing a large scan there (a 30 GB file: ~25 s) would hold the end of the
    run.  This class reads and hashes the files in a daemon thread from the
    moment it is made (the hash releases the interpreter lock on large blocks,
    so the run goes on meanwhile); :meth:`sha256` then waits only for what is
    not hashed yet.  A file whose size or modification time changed after its
    hash was started is hashed again, in the caller's thread, when asked.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Files to hash, in that order; names that are not regular files are
        skipped (:meth:`sha256` hashes them when asked, and raises as
        :func:`file_sha256` does).

    Notes
    -----
    :meth:`stop` ends the thread at its next block (1 MiB); a process that
    exits early does not wait for it (the thread is a daemon).
    """

    BLOCK = 1 << 20

    def __init__(self, paths):
        import threading

        self._paths = [os.path.abspath(p) for p in paths]
        self._done: dict[str, tuple[tuple[int, int], str]] = {}  # name -> ((size, mtime_ns) when started, digest)
        self._finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hash_all, name="braggflow-sha256", daemon=True)
        self._thread.start()

    @staticmethod
    def _identity(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def _hash_all(self) -> None:
        try:
            for path in self._paths:
                if self._stop.is_set():
                    return
                if path in self._done or not os.path.isfile(path):
                    continue
                try:
                    identity = self._identity(path)
                    digest = hashlib.sha256()
                    block = bytearray(self.BLOCK)
                    view = memoryview(block)
                    with open(path, "rb", buffering=0) as fh:
                        while n := fh.readinto(block):
                            if self._stop.is_set():
                                return
                            digest.update(view[:n])
                except OSError:  # hashed (and the error raised) in the caller's thread when asked
                    continue
                self._done[path] = (identity, digest.hexdigest())
        finally:
            self._finished.set()

    def sha256(self, path: str | os.PathLike) -> str:
        """SHA-256 of ``path`` (64 hex digits): the background one if the file is unchanged since it was started.

        Waits for the background thread to finish its files first.

        Raises
        ------
        OSError
            If the file cannot be read.
        """
        name = os.path.abspath(path)
        self._finished.wait()
        done = self._done.get(name)
        if done is not None and os.path.isfile(name) and self._identity(name) == done[0]:
            return done[1]
        return file_sha256(name)

    def stop(self) -> None:
        """End the background thread at its next block (what it did not hash is hashed when asked)."""
        self._stop.set()
