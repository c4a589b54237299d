"""keep_freed_memory: the arrays a frame frees are reused by the next frame without new page faults (glibc)."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from braggflow.pipeline import keep_freed_memory
    keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up: the heap reaches its working size
    a = np.ones((2048, 2048), np.float32); b = np.ones((2048, 2048), np.int32); del a, b
before = faults()
for _ in range(5):  # five 'frames' of two 16 MB arrays each
    a = np.ones((2048, 2048), np.float32); b = np.ones((2048, 2048), np.int32); del a, b
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_frame_arrays_are_reused_without_page_faults():
    plain, kept = _faults("plain"), _faults("keep")
    # Without it glibc maps each 16 MB array afresh and the kernel zero-fills its pages again
    # (thousands of faults: fewer than 4,096 a array where NumPy asks for huge pages).
    assert plain > 1000
    assert kept < 0.05 * plain
