"""The type stubs (``__init__.pyi``) of the lazily resolved namespaces agree with what the packages give."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import braggflow

SRC = Path(braggflow.__file__).resolve().parent
STUBS = sorted(SRC.rglob("__init__.pyi"))


def _stub_names(stub: Path) -> dict[str, str]:
    """{name: defining module} from the stub's relative imports."""
    package = "braggflow" + "".join("." + p for p in stub.parent.relative_to(SRC).parts)
    names = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{package}.{node.module}"
    return names


def test_every_lazy_namespace_has_a_stub():
    lazy = {p.parent for p in SRC.rglob("__init__.py") if "attach_stub" in p.read_text()}
    assert lazy == {s.parent for s in STUBS} and len(lazy) >= 5


@pytest.mark.parametrize("stub", STUBS, ids=[str(s.relative_to(SRC)) for s in STUBS])
def test_stub_names_resolve_to_their_defining_module(stub):
    package = importlib.import_module("braggflow" + "".join("." + p for p in stub.parent.relative_to(SRC).parts))
    names = _stub_names(stub)
    assert names, f"{stub} lists no names"
    declared = ast.literal_eval(next(n.value for n in ast.parse(stub.read_text()).body
                                     if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"))
    assert set(names) <= set(declared) and set(declared) - set(names) <= {"__version__"}
    for name, module in names.items():
        assert getattr(package, name) is getattr(importlib.import_module(module), name), name
        assert name in dir(package) and name in package.__all__


def test_top_level_names():
    assert braggflow.find_peaks is importlib.import_module("braggflow.find").find_peaks
    assert "__version__" in braggflow.__all__ and isinstance(braggflow.__version__, str)
