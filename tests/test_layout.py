"""Every folder installs under the one ``enginescope`` namespace; imports follow the data flow.

sources -> pipeline -> sinks -> store -> views: a package may import only the packages listed for it
in ALLOWED (plus itself). ``enginescope`` root modules (CLI, sidecar runtime, demo) compose all.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAT = ["collectors", "exporters", "store", "views", "loadgen", "dashboard", "deploy", "recipes", "simfleet"]
SIDECAR_RUNTIME = "sidecar"  # enginescope.sidecar: sources + sinks wired together

ALLOWED: dict[str, set[str]] = {
    "collectors": set(),
    "loadgen": {"collectors"},
    "store": {"collectors"},
    "views": {"collectors", "store"},
    "recipes": {"collectors"},
    "exporters": {"collectors", "store", "views", "recipes"},
    # the simulated fleet runs the production sidecars and load generator against its engines
    "simfleet": {"collectors", "loadgen", "recipes", "store", SIDECAR_RUNTIME},
    "dashboard": {"collectors", "store", "views", "recipes"},
    "deploy": {"collectors", "exporters", "store", "views", "recipes", SIDECAR_RUNTIME},
}


@pytest.mark.parametrize("name", ["enginescope", *(f"enginescope.{p}" for p in FLAT)])
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
            if node.module == "enginescope":
                names.update(f"enginescope.{alias.name}" for alias in node.names)
    return names


def _python_files() -> list[Path]:
    roots = [REPO / p for p in [*FLAT, "enginescope", "tests", "benchmarks"]]
    return sorted(f for root in roots for f in root.rglob("*.py"))


def test_no_code_imports_a_flat_package_name() -> None:
    """``import collectors`` would pick up PyPI's ``collectors`` (or nothing) once installed."""
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _python_files()
        for name in _imports(path)
        if name.split(".")[0] in FLAT
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_data_flow(package: str) -> None:
    allowed = ALLOWED[package] | {package, "__version__"}
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "enginescope" or len(parts) < 2:
                continue
            if parts[1] not in allowed:
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_dashboard_never_reads_the_engine() -> None:
    engine_modules = {"enginescope.collectors.engine_source", "enginescope.collectors.gpu"}
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / "dashboard").rglob("*.py"))
        for name in _imports(path)
        if name in engine_modules
    ]
    assert not offenders, "\n".join(offenders)
