"""DESIGN layering: studio/ is the pure domain and never imports the edges or heavy runtimes."""

import ast
from pathlib import Path

import pytest

import studio

STUDIO = Path(studio.__file__).resolve().parent
FORBIDDEN = {"fastapi", "celery", "subprocess", "av", "torch", "workers", "api"}
DYNAMIC_IMPORTERS = {"__import__", "import_module"}


def imported_modules(source: str) -> set[str]:
    """Absolute module names a source imports, statically or via importlib with a literal name."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in DYNAMIC_IMPORTERS and node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
    return found


def forbidden_in(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in FORBIDDEN}


STUDIO_FILES = sorted(STUDIO.rglob("*.py"))


def test_the_scan_sees_the_whole_package():
    names = {p.relative_to(STUDIO).as_posix() for p in STUDIO_FILES}
    assert {"config.py", "policy.py", "db.py", "migrations/env.py"} <= names
    assert any(n.startswith("migrations/versions/") for n in names)


@pytest.mark.parametrize("path", STUDIO_FILES, ids=lambda p: p.relative_to(STUDIO).as_posix())
def test_studio_module_imports_nothing_from_the_edges(path):
    bad = forbidden_in(imported_modules(path.read_text()))
    where = path.relative_to(STUDIO.parent)
    assert not bad, f"{where} imports {sorted(bad)}; studio/ must stay pure (DESIGN layering)"


@pytest.mark.parametrize("source, expected", [
    ("import subprocess", {"subprocess"}),
    ("import torch.nn as nn", {"torch"}),
    ("from fastapi import FastAPI", {"fastapi"}),
    ("from workers.media import encode", {"workers"}),
    ("def f():\n    import av\n", {"av"}),
    ("import importlib\nimportlib.import_module('celery')", {"celery"}),
    ("__import__('api.cli')", {"api"}),
    ("from . import api", set()),           # studio's own submodule, not the api package
    ("import avro, apis, torchvision_like", set()),
    ("from sqlmodel import Session", set()),
])
def test_the_scan_catches_forbidden_imports(source, expected):
    assert {m.split(".")[0] for m in forbidden_in(imported_modules(source))} == expected
