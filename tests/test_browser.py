"""Real browser: `streamlit run` + headless Chromium driven over the DevTools protocol.

Loads the incident view of the store ``enginescope demo --headless --scenario spike`` wrote
(session fixture ``spike_demo_store``), waits for the charts, checks the event markers and
the "What happened" summary, and keeps a screenshot in tests/artifacts/incident_view.png.
Needs Debian's ``chromium`` (apt-get install -y chromium); skipped without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websockets  # streamlit's own dependency

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


class _Cdp:
    """Minimal DevTools client: one page target, request/response by id."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                return msg.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


async def _drive(debug_port: int, url: str, shot: Path) -> tuple[str, int]:
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json").read())
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
        return await _load_and_capture(_Cdp(ws), url, shot)


async def _load_and_capture(cdp: _Cdp, url: str, shot: Path) -> tuple[str, int]:
    await cdp.call("Page.navigate", url=url)
    text, charts, deadline = "", 0, time.monotonic() + 60
    while time.monotonic() < deadline and not (charts >= 13 and "Incident 1" in text):
        await asyncio.sleep(0.5)
        text = await cdp.evaluate("document.body.innerText") or ""
        charts = (
            await cdp.evaluate("document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length") or 0
        )
    await asyncio.sleep(1.0)  # let the last charts paint before the screenshot
    png = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    shot.write_bytes(base64.b64decode(png["data"]))
    return text, charts


def test_incident_view_of_the_demo_store_in_a_real_browser(tmp_path: Path, spike_demo_store: Path) -> None:
    store = spike_demo_store
    port, debug_port = _free_port(), _free_port()
    env = {**os.environ, "ENGINESCOPE_STORE": str(store)}
    app = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    profile = tempfile.mkdtemp(dir=tmp_path)
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
         f"--remote-debugging-port={debug_port}", "--window-size=1400,4000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
        _wait_http(f"http://127.0.0.1:{debug_port}/json/version", 30)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "incident_view.png"
        url = f"http://127.0.0.1:{port}/?range=all"
        text, charts = asyncio.run(_drive(debug_port, url, shot))
    finally:
        browser.terminate()
        app.terminate()
        browser.wait(10)
        app.wait(10)
    assert "What happened" in text and "Incident 1" in text and "Prefill queueing" in text
    # The event table whose numbers label the markers drawn on every chart.
    assert "scale_up" in text and "engine_ready" in text and "container_started" in text
    assert "spike starts" in text
    assert charts >= 13
    assert shot.stat().st_size > 50_000
