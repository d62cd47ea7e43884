"""Container entry logic, run for real in a subprocess against a local engine: start, SIGTERM, flush."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginescope.deploy.container import in_flight_requests
from enginescope.recipes import RECIPES_DIR

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/sglang/0.5.23-single-gpu/metrics.txt"
RECIPE = RECIPES_DIR / "llama-3.1-8b-h100.toml"

# A stand-in engine speaking the three endpoints the container uses: /health turns 200 after a
# short "load", /metrics serves a real SGLang 0.5.23 exposition (busy, then idle so the drain
# can finish early), chat completions are counted.
FAKE_ENGINE = r"""
import signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, lines, log = int(sys.argv[1]), open(sys.argv[2]).read().splitlines(), sys.argv[3]
ready_at = time.monotonic() + 1.0
def metrics():  # 7 requests running (the fixture's value) for 5 s after ready, then idle
    busy = time.monotonic() < ready_at + 5.0
    out = [l if busy or not l.startswith("sglang:num_running_reqs{") else l.rsplit(" ", 1)[0] + " 0.0"
           for l in lines]
    return ("\n".join(out) + "\n").encode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.reply(200 if time.monotonic() >= ready_at else 503, b"")
        elif self.path == "/metrics":
            self.reply(200, metrics())
        else:
            self.reply(404, b"")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        open(log, "a").write("chat\n")
        self.reply(200, b'{"choices":[{"message":{"content":"OK"}}]}')
    def reply(self, code, body):
        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", port), H)
def stop(*_):
    open(log, "a").write("sigterm\n"); threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_in_flight_aggregates_ranks_as_the_catalog_does():
    """tp ranks mirror one scheduler: counted once (their max), as queue_depth/running_requests
    are everywhere else; dp ranks add up; with priority scheduling only the total counts."""
    mirrored = (
        'sglang:num_running_reqs{engine_type="unified",tp_rank="0"} 3.0\n'
        'sglang:num_running_reqs{engine_type="unified",tp_rank="1"} 3.0\n'
        'sglang:num_queue_reqs{engine_type="unified",tp_rank="0"} 4.0\n'
        'sglang:num_queue_reqs{engine_type="unified",tp_rank="1"} 4.0\n'
        "sglang:num_running_reqs_offline_batch 9.0\n"
    )
    assert in_flight_requests(mirrored) == 7.0  # not 14: the same 7 requests seen by two ranks
    dp = (
        'sglang:num_running_reqs{dp_rank="0",tp_rank="0"} 3.0\n'
        'sglang:num_running_reqs{dp_rank="1",tp_rank="0"} 2.0\n'
    )
    assert in_flight_requests(dp) == 5.0  # two schedulers, two batches
    priority = (
        'sglang:num_queue_reqs{priority="",tp_rank="0"} 6.0\n'
        'sglang:num_queue_reqs{priority="1",tp_rank="0"} 4.0\n'
        'sglang:num_queue_reqs{priority="2",tp_rank="0"} 2.0\n'
    )
    assert in_flight_requests(priority) == 6.0  # the total, not total + children
    assert in_flight_requests(FIXTURE.read_text()) == 7.0  # 7 running, 0 queued in the fixture
    assert in_flight_requests("") == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("deferred", [False, True], ids=["own-commits", "watcher-commits"])
def test_sigterm_drains_flushes_and_records_lifecycle_within_grace(tmp_path, deferred):
    """``watcher-commits`` is the Modal Volume mode: the container only adds files and manifests
    (two containers writing the same Delta log version on a Volume would keep one); the fleet
    watcher's writer commits them, and then the store holds the same rows."""
    from enginescope.collectors.model import Identity
    from enginescope.deploy.watcher import _commit_containers
    from enginescope.store import StoreWriter, open_store

    port, store, log = _free_port(), tmp_path / "store", tmp_path / "engine.log"
    engine = tmp_path / "fake_engine.py"
    engine.write_text(FAKE_ENGINE)
    cmd = [sys.executable, "-m", "enginescope.deploy.container", "--recipe", str(RECIPE), "--store", str(store),
           "--port", str(port), "--request-log-dir", str(tmp_path / "reqlog"),
           "--engine-cmd", shlex.join([sys.executable, str(engine), str(port), str(FIXTURE), str(log)]),
           *(["--deferred-commits"] if deferred else [])]  # fmt: skip
    env = {**os.environ, "MODAL_TASK_ID": "ta-test1", "MODAL_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "ready:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "container exited before ready"
        assert "ready:" in line
        time.sleep(2.5)  # a few sidecar ticks
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        took_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert took_s < 30  # Modal's exit budget
    assert log.read_text().splitlines() == ["chat", "chat", "chat", "sigterm"]  # 3 warm-ups, then stopped

    if deferred:
        assert not list(store.glob("*/_delta_log"))  # the container never wrote a log
        committer = StoreWriter(store, Identity("fleet-test"), background=False)
        _commit_containers(committer, reload=None)
        committer.close()
        assert list(store.glob("events/_delta_log/*.json"))
    con = open_store(store)
    events = con.execute("select kind, replica, region, detail from events order by ts").fetchall()
    kinds = [k for k, _, _, _ in events]
    # exactly one of each, in order: no engine_down while the engine was still loading, no
    # engine_up at its first answer, engine_ready once (the container's, after the warm-up)
    assert kinds == ["container_started", "engine_ready", "draining", "container_stopped"], kinds
    assert events[1][3].startswith("startup_s=")
    assert {(r, g) for _, r, g, _ in events} == {("ta-test1", "us-east-1")}  # identity from MODAL_* env
    scraped = con.execute("select count(*) from samples where metric = 'sglang:num_running_reqs'").fetchone()[
        0
    ]
    assert scraped >= 2  # periodic scrapes plus the final one, all flushed before exit
