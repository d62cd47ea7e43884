"""The Streamlit dashboard as a Modal web endpoint: ``modal deploy deploy/dashboard_app.py``.

It mounts the store Volume read-only and reloads it in the background so new segments that
sidecars committed become visible. ``reload()`` fails while files are open; that only delays a
reload to the next attempt. Behind Modal's proxy auth (``Modal-Key``/``Modal-Secret``
headers) by default: set ``ENGINESCOPE_DASHBOARD_PUBLIC=1`` at deploy time to open it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading

import modal

from enginescope.deploy.sources import CORE_REQUIREMENTS, DASHBOARD_REQUIREMENTS, REMOTE_ROOT, with_sources

APP_NAME = os.environ.get("ENGINESCOPE_DASHBOARD_APP", "enginescope-dashboard")
STORE_VOLUME = os.environ.get("ENGINESCOPE_STORE_VOLUME", "enginescope-store")
STORE_PATH = "/store"
PORT = 8501
RELOAD_INTERVAL_S = 15.0
REQUIRES_PROXY_AUTH = os.environ.get("ENGINESCOPE_DASHBOARD_PUBLIC", "") != "1"
DASHBOARD_IN_IMAGE = f"{REMOTE_ROOT}/dashboard"

log = logging.getLogger(__name__)

store = modal.Volume.from_name(STORE_VOLUME, create_if_missing=True)
image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(*CORE_REQUIREMENTS, *DASHBOARD_REQUIREMENTS)  # the store's readers need deltalake
    .env({"ENGINESCOPE_STORE": STORE_PATH})
)
# app.py and its .streamlit/ config travel with the dashboard package
image = with_sources(image, ("collectors", "store", "views", "recipes", "dashboard"))
app = modal.App(APP_NAME)


def reload_forever(volume: modal.Volume, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        try:
            volume.reload()
        except Exception as exc:  # open files or a transient error: try again next time
            log.info("store reload skipped: %s", exc)


@app.function(image=image, volumes={STORE_PATH: store.with_mount_options(read_only=True)}, max_containers=1,
              scaledown_window=900, timeout=24 * 3600)  # fmt: skip
@modal.concurrent(max_inputs=64)
@modal.web_server(PORT, startup_timeout=60, requires_proxy_auth=REQUIRES_PROXY_AUTH)
def dashboard() -> None:
    threading.Thread(
        target=reload_forever, args=(store, RELOAD_INTERVAL_S, threading.Event()), daemon=True
    ).start()
    subprocess.Popen(
        ["streamlit", "run", f"{DASHBOARD_IN_IMAGE}/app.py", "--server.port", str(PORT),
         "--server.address", "0.0.0.0", "--server.headless", "true"],
        env={**os.environ, "PYTHONPATH": "/root"},
    )  # fmt: skip
