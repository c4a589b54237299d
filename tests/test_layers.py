"""The package's layers hold at run time too (import-linter sees only static imports, not lazy_loader's names).

Each package is imported, with every one of its modules, in a fresh interpreter;
no module of a higher layer may appear in ``sys.modules``.  The layers are those
of ``docs/design.md`` and of the import-linter contract in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import braggflow

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[list[str]]:
    """The layers, lowest first, each a list of top-level names, read from the import-linter contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in reversed(contract["layers"])]


LAYERS = _layers()
PACKAGES = [(name, level) for level, layer in enumerate(LAYERS) for name in layer]


def test_every_package_is_in_a_layer():
    top = {m.name for m in pkgutil.iter_modules(braggflow.__path__)}
    assert top == {name for name, _ in PACKAGES}


@pytest.mark.parametrize("name, level", PACKAGES, ids=[name for name, _ in PACKAGES])
def test_package_imports_nothing_from_a_higher_layer(name, level):
    higher = sorted(n for layer in LAYERS[level + 1 :] for n in layer)
    code = f"""
import importlib, json, pkgutil, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
module = importlib.import_module("braggflow.{name}")
for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix="braggflow.{name}."):
    importlib.import_module(info.name)
loaded = sorted({{m.split(".")[1] for m in sys.modules if m.startswith("braggflow.") and m.count(".") >= 1}})
print(json.dumps(loaded))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & set(higher), f"braggflow.{name} loads {sorted(loaded & set(higher))}"
