"""The compiled kernels load from numba's disk cache in a later process, also into a caller compiled there."""

import subprocess
import sys
from pathlib import Path

import braggflow

SCRIPT = """
import numpy as np
from numba import njit
from braggflow.profiles import _kernels

npar = 7
y, good, mu = np.ones(20), np.ones(20, bool), np.full(20, 2.0)
jac = np.arange(20.0 * npar).reshape(20, npar) / 100
fisher, grad = np.zeros((npar, npar)), np.zeros(npar)

@njit(cache=False)  # a caller compiled in this process: the kernel it calls comes from the disk cache
def caller(y, good, mu, jac, fisher, grad):
    _kernels._information7(y, good, mu, jac, 0.0, fisher, grad)

caller(y, good, mu, jac, fisher, grad)
w = good / mu
expected = (jac * w[:, None]).T @ jac
print(float(np.abs(fisher - expected).max()))
"""


def test_an_unrolled_information_kernel_loads_from_the_cache_into_a_new_caller(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(braggflow.__file__).parents[1])}
    for run in range(2):  # the first process compiles and writes the cache, the second loads it
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
        assert out.returncode == 0, f"process {run + 1}: {out.stderr[-2000:]}"
        assert float(out.stdout.strip()) < 1e-12  # the expected Fisher information sum_m j_m j_m^T / mu_m
    assert any(tmp_path.rglob("*_information7*.nbi"))
