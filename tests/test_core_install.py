"""``pip install enginescope`` is the sidecar alone: without the dashboard/modal extras (no
streamlit, modal, polars, pandas, fsspec) the CLI still starts, the sidecar runs, and a
command that needs an extra says which one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.exposition_server import ExpositionServer

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"
EXTRAS_ONLY = ("streamlit", "modal", "polars", "pandas", "fsspec")
# Runs the CLI in a process where the extras' modules cannot be imported (as in a core install).
BLOCKED_CLI = textwrap.dedent(
    f"""
    import importlib.abc, sys
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {EXTRAS_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Blocker())
    from enginescope.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_cli_starts_and_names_the_missing_extra(tmp_path: Path) -> None:
    """Before: every command, --version included, died with ModuleNotFoundError (numpy, then pandas)."""
    assert _cli("--version", cwd=tmp_path).stdout.startswith("enginescope ")
    for command in ("sidecar", "query", "generate-configs", "store"):
        done = _cli(command, "--help", cwd=tmp_path)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    for command, extra in (("spec-report", "dashboard"), ("dashboard", "dashboard")):
        done = _cli(command, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"enginescope[{extra}]" in done.stderr


@pytest.mark.slow
def test_sidecar_runs_and_query_reads_without_the_extras(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with ExpositionServer(FIXTURE.read_text()) as engine:
        proc = subprocess.Popen(
            [sys.executable, "-c", BLOCKED_CLI, "sidecar", "--engine-url", engine.url, "--store", str(store),
             "--interval-s", "0.2", "--gpu", "none"],
            cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_for(lambda: len(engine.accept_headers) >= 4)
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    done = _cli(
        "query", "--store", str(store), "--format", "csv", "SELECT count(*) AS n FROM signals", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
