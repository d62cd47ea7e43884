"""The flat layout is deliberate; guard against shadowing and against imports against the flow."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["collectors", "exporters", "dashboard", "deploy", "recipes", "simfleet", "enginescope"]

# Data flows sources -> pipeline -> sinks -> store -> views: a package may not import these.
FORBIDDEN = {
    "collectors": {"exporters", "dashboard", "deploy", "simfleet", "enginescope"},
    "exporters": {"dashboard", "deploy", "simfleet", "enginescope"},
    "dashboard": {"simfleet", "deploy", "collectors.engine_source", "collectors.gpu"},
}


@pytest.mark.parametrize("name", PACKAGES)
def test_package_resolves_to_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    location = Path(module.__file__ or next(iter(module.__path__))).resolve()
    assert location.is_relative_to(REPO), f"{name} imported from {location}, not from {REPO}: shadowed"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_data_flow(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)
