"""``enginescope sidecar`` as users run it: a process, signals, exit codes, one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.exposition_server import ExpositionServer

FIXTURE = Path(__file__).parent / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"


def _sidecar(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "enginescope.cli", "sidecar", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_flushes_and_exits_zero(tmp_path: Path) -> None:
    from enginescope.store import open_store

    with ExpositionServer(FIXTURE.read_text()) as server:
        proc = _sidecar(
            "--engine-url", server.url, "--store", str(tmp_path), "--interval-s", "0.2", "--gpu", "none"
        )
        server.wait_for_scrapes(3, timeout_s=20)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    kinds = [r[0] for r in open_store(tmp_path).execute("SELECT kind FROM events ORDER BY ts").fetchall()]
    assert kinds == ["container_started", "engine_ready", "draining", "container_stopped"], kinds
    assert stderr.count("engine up") == 1  # one line per state change, not per scrape


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine-url", "localhost:30000"], "--engine-url must be http(s)://HOST:PORT"),
        (
            ["--engine-url", "http://127.0.0.1:9", "--wait-engine-s", "0.5", "--gpu", "none"],
            "did not answer /metrics",
        ),
        (["--engine-url", "http://127.0.0.1:9", "--store", "/proc/enginescope-store"], "is not writable"),
        (["--engine-url", "http://127.0.0.1:9", "--interval-s", "0"], "--interval-s must be > 0"),
        (
            ["--engine-url", "http://127.0.0.1:9", "--raw-retention-days", "0"],
            "--raw-retention-days must be > 0",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    if "--store" not in args:
        args = [*args, "--store", str(tmp_path)]
    proc = _sidecar(*args)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert message in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_sigterm_while_waiting_for_the_engine_exits_without_starting_the_loop(tmp_path: Path) -> None:
    from enginescope.store import open_store

    proc = _sidecar(
        "--engine-url", "http://127.0.0.1:9", "--store", str(tmp_path), "--wait-engine-s", "60",
        "--interval-s", "0.05", "--gpu", "none",
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not (tmp_path / "state" / "sidecar-ids").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # past the signal handlers' installation, inside wait_for_engine
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    con = open_store(tmp_path)
    scrapes = con.execute(
        "SELECT max(value) FROM samples WHERE metric = 'enginescope_sidecar_scrapes_total'"
    ).fetchone()[0]
    assert scrapes == 1  # only stop()'s final tick; the scrape loop was never started
    kinds = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY ts").fetchall()]
    # an engine that never answered was starting, not down: no engine_down
    assert kinds == ["container_started", "draining", "container_stopped"], kinds
