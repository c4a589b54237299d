"""The run summary's count of compiled kernels: a fresh numba cache compiles, a warm one loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SNIPPET = textwrap.dedent("""
    import numpy as np
    from braggflow.cli.core import kernels_compiled
    from braggflow.correct._kernels import integer_frame_float32

    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    integer_frame_float32(frame, np.zeros((3, 4), bool), False, frame.dtype.type(0), frame.dtype.type(0))
    print(kernels_compiled())
""")


def _count(cache) -> int:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_a_fresh_cache_compiles_one_version_and_the_next_process_loads_it(tmp_path):
    assert _count(tmp_path) == 1  # one kernel, one signature
    assert _count(tmp_path) == 0  # loaded from the cache written by the first process

