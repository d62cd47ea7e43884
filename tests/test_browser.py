"""Real browser: the dashboard as ``enginescope dashboard`` starts it + headless Chromium
driven over the DevTools protocol.

For every demo scenario (the session's demo stores, tests/conftest.py: spike, thermal-throttle,
spec-collapse, engine-crash, spec-drift) and at 1600x900 and 1280x720, the incident view's first
viewport must hold the status strip, the cause line and the four key charts (element bounding
boxes), with no Deploy button; a screenshot of each is kept under tests/artifacts/ (CI artifacts).
The spec-drift page also shows the acceptance-by-class panel with the recorded drop. One Streamlit server per store, started together;
one browser. Needs Debian's ``chromium`` (apt-get install -y chromium); skipped without it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websockets  # streamlit's own dependency

from enginescope import cmd_dashboard
from enginescope.simfleet.scenarios import SCENARIOS

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


SIZES = ((1600, 900), (1280, 720))
FIRST_SCREEN = ("status_strip", "cause_line", "key_chart_ttft", "key_chart_itl", "key_chart_queue",
                "key_chart_replicas")  # fmt: skip
_BOXES_JS = """JSON.stringify(Object.fromEntries(%s.map(k => {
  const el = document.querySelector('.st-key-' + k);
  if (!el) return [k, null];
  const r = el.getBoundingClientRect();
  return [k, {top: r.top, bottom: r.bottom, height: r.height,
              drawn: el.querySelectorAll('.vega-embed canvas, .vega-embed svg').length}];
})))"""


async def _drive(debug_port: int, pages: list[tuple[str, Path, tuple[int, int]]]) -> list[dict]:
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json").read())
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
        cdp = _Cdp(ws)
        return [await _load_and_capture(cdp, url, shot, size) for url, shot, size in pages]


async def _load_and_capture(cdp: _Cdp, url: str, shot: Path, size: tuple[int, int]) -> dict:
    width, height = size
    await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)  # fmt: skip
    await cdp.call("Page.navigate", url=url)
    boxes, deadline = {}, time.monotonic() + 60
    keys = json.dumps(list(FIRST_SCREEN))
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        boxes = json.loads(await cdp.evaluate(_BOXES_JS % keys) or "{}")
        charts = [boxes.get(k) for k in FIRST_SCREEN if k.startswith("key_chart")]
        if all(c and c["drawn"] for c in charts) and boxes.get("cause_line"):
            break
    await asyncio.sleep(1.0)  # let the last charts paint
    boxes = json.loads(await cdp.evaluate(_BOXES_JS % keys) or "{}")
    png = await cdp.call("Page.captureScreenshot", format="png")
    shot.write_bytes(base64.b64decode(png["data"]))
    text = await cdp.evaluate("document.body.innerText") or ""
    title = await cdp.evaluate("document.title") or ""
    deploy = await cdp.evaluate("document.querySelectorAll('[data-testid=\\'stAppDeployButton\\']').length")
    return {"boxes": boxes, "text": text, "title": title, "deploy": deploy, "viewport_h": height}


def _serve(store: Path) -> tuple[subprocess.Popen, int]:
    """The dashboard exactly as ``enginescope dashboard --store STORE`` launches it."""
    port = _free_port()
    args = argparse.Namespace(store=store, port=port, address="127.0.0.1", recipe=None,
                              **{f"slo_{k}": None for k in cmd_dashboard.SLO_FLAGS})  # fmt: skip
    proc = subprocess.Popen(cmd_dashboard.command(args), env=cmd_dashboard.build_env(args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")  # fmt: skip
    return proc, port


def test_first_screen_of_every_demo_scenario_in_a_real_browser(
    tmp_path: Path, spike_demo_store: Path, fault_scenario_stores: dict[str, Path]
) -> None:
    stores = {"spike": spike_demo_store, **fault_scenario_stores}
    assert set(stores) == set(SCENARIOS)  # every scenario `enginescope demo --scenario` offers
    servers = {name: _serve(store) for name, store in stores.items()}
    debug_port = _free_port()
    profile = tempfile.mkdtemp(dir=tmp_path)
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
         f"--remote-debugging-port={debug_port}", "--window-size=1600,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _, port in servers.values():
            _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
        _wait_http(f"http://127.0.0.1:{debug_port}/json/version", 30)
        ARTIFACTS.mkdir(exist_ok=True)
        pages = [(f"http://127.0.0.1:{port}/?range=all", ARTIFACTS / f"first_screen_{name}_{w}x{h}.png", (w, h))
                 for name, (_, port) in servers.items() for w, h in SIZES]  # fmt: skip
        results = asyncio.run(_drive(debug_port, pages))
    finally:
        browser.terminate()
        for proc, _ in servers.values():
            proc.terminate()
        browser.wait(10)
        for proc, _ in servers.values():
            proc.wait(10)
    for (_url, shot, _size), result in zip(pages, results, strict=True):
        where = f"{shot.name}: {result['boxes']}"
        for key in FIRST_SCREEN:
            box = result["boxes"].get(key)
            assert box and box["height"] > 0, f"{key} missing; {where}"
            assert 0 <= box["top"] and box["bottom"] <= result["viewport_h"], f"{key} below the fold; {where}"
        assert all(result["boxes"][k]["drawn"] for k in FIRST_SCREEN if k.startswith("key_chart")), where
        assert "What happened" in result["text"] and "replicas up / wanted" in result["text"]
        assert result["title"].startswith("enginescope") and result["deploy"] == 0, where
        assert shot.stat().st_size > 30_000
    spike = results[0]["text"]
    assert "Prefill queueing" in spike and "scale_up" in spike and "spike starts" in spike
    drift = next(
        r["text"] for (_url, shot, _size), r in zip(pages, results, strict=True) if "spec-drift" in shot.name
    )
    assert "Speculative acceptance by traffic class" in drift and "Lost throughput (tokens/s)" in drift, (
        drift[-3000:]
    )
