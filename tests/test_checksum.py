"""SHA-256 of input files hashed in the background: the same digests as hashlib, and a changed file hashed anew."""

from __future__ import annotations

import hashlib
import os

import pytest

from braggflow.checksum import BackgroundChecksums, file_sha256


def test_background_digests_equal_hashlib(tmp_path, monkeypatch):
    block = BackgroundChecksums.BLOCK
    files = []
    for k, size in enumerate([0, 1, block - 1, block, 3 * block + 17]):
        path = tmp_path / f"f{k}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    expected = [file_sha256(path) for path in files]
    checksums = BackgroundChecksums(files)

    def no_hash_here(path):
        raise AssertionError(f"{path} hashed in the caller's thread")

    monkeypatch.setattr("braggflow.checksum.file_sha256", no_hash_here)  # unchanged files: the thread's digests
    for path, digest in zip(files, expected):
        assert checksums.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_file_changed_after_hashing_is_hashed_again(tmp_path):
    path = tmp_path / "frames.bin"
    path.write_bytes(b"a" * 1000)
    checksums = BackgroundChecksums([path])
    first = checksums.sha256(path)
    path.write_bytes(b"b" * 1000)  # same size, new content and modification time
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert checksums.sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest() != first


def test_stopped_or_unlisted_files_are_hashed_when_asked(tmp_path):
    listed, other = tmp_path / "listed.bin", tmp_path / "other.bin"
    listed.write_bytes(os.urandom(5 * BackgroundChecksums.BLOCK))
    other.write_bytes(b"xyz")
    checksums = BackgroundChecksums([listed])
    checksums.stop()
    assert checksums.sha256(listed) == file_sha256(listed)
    assert checksums.sha256(other) == hashlib.sha256(b"xyz").hexdigest()


def test_missing_file_raises_when_asked(tmp_path):
    checksums = BackgroundChecksums([tmp_path / "missing.h5"])
    with pytest.raises(OSError):
        checksums.sha256(tmp_path / "missing.h5")
