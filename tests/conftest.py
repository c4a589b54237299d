"""Shared fixtures: the real-data folder and deterministic random generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment; the command line's rich
# consoles, made when braggflow.cli is imported, would keep that width for good, and a test that gives one
# command a wider COLUMNS would not reach them. Without the variables they ask the environment at each print.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so tests are deterministic."""
    return np.random.default_rng(12345)
