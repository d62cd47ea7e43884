"""Shared, expensive fixtures: real demo stores, produced once per test session.

The spike demo runs through the CLI (``enginescope demo --headless``) in a subprocess that is
started as soon as any demo store is requested, so its 60 s of simulated incident overlap the
in-process scenarios (thermal throttle, spec collapse, engine crash, spec drift: ~45 s together
in one event loop; spec drift's 15 min of history play in virtual time, in a thread, while its
replicas cold-start). Both are mostly waiting on the simulated clock, so together they take
about as long as the longer one on 2 cores. Each in-process scenario's progress lines are kept
next to its store (``<name>.log``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SPIKE_DURATION_S = 60.0
FAULT_SCENARIO_DURATION_S = {
    "thermal-throttle": 34.0,
    "spec-collapse": 48.0,
    "engine-crash": 42.0,
    "spec-drift": 30.0,
}
_CLI_TIMEOUT_S = 240.0


@pytest.fixture(scope="session")
def _spike_demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Path]]:
    root = tmp_path_factory.mktemp("spike_demo")
    store, log = root / "store", root / "demo.log"
    cli = Path(sys.executable).with_name("enginescope")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "enginescope.cli"]
    cmd += ["demo", "--headless", "--scenario", "spike", "--duration-s", f"{SPIKE_DURATION_S:g}",
            "--store", str(store)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    yield proc, store
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def spike_demo_store(
    _spike_demo_run: tuple[subprocess.Popen, Path], fault_scenario_stores: dict[str, Path]
) -> Path:
    """Store of ``enginescope demo --headless --scenario spike --duration-s 60``. The fault
    scenarios play while it runs (they are shorter), so asking for either costs ~60 s."""
    proc, store = _spike_demo_run
    try:
        rc = proc.wait(_CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    log = (store.parent / "demo.log").read_text(errors="replace")
    assert rc == 0, f"enginescope demo exited {rc}:\n{log[-3000:]}"
    return store


@pytest.fixture(scope="session")
def fault_scenario_stores(
    tmp_path_factory: pytest.TempPathFactory, _spike_demo_run: tuple[subprocess.Popen, Path]
) -> dict[str, Path]:
    """scenario name -> store, the scenarios other than spike played concurrently in one event
    loop (the spike demo subprocess runs alongside); progress lines in ``<store>.parent/<name>.log``."""
    from enginescope.demo import DemoOptions, run_demo

    root = tmp_path_factory.mktemp("scenarios")
    paths = {name: root / name for name in FAULT_SCENARIO_DURATION_S}
    logs: dict[str, list[str]] = {name: [] for name in FAULT_SCENARIO_DURATION_S}

    async def play_all() -> None:
        await asyncio.gather(
            *(
                run_demo(
                    DemoOptions(
                        store_dir=paths[name],
                        scenario=name,
                        duration_s=duration_s,
                        print_fn=logs[name].append,
                    )
                )
                for name, duration_s in FAULT_SCENARIO_DURATION_S.items()
            )
        )

    try:
        asyncio.run(play_all())
    finally:
        for name, lines in logs.items():
            (root / f"{name}.log").write_text("\n".join(lines) + "\n")
    return paths
