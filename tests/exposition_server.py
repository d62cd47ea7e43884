"""A real HTTP server serving a scripted sequence of expositions (for sidecar end-to-end tests)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ExpositionServer:
    """Serves ``body`` at /metrics and 200 at /health; swap ``body`` between scrapes."""

    def __init__(self, body: str, content_type: str = "text/plain; version=0.0.4; charset=utf-8") -> None:
        self.body = body
        self.content_type = content_type
        self.accept_headers: list[str] = []
        self.healthy = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path == "/health":
                    self._reply(200 if server.healthy else 503, "text/plain", b"")
                elif self.path == "/metrics":
                    server.accept_headers.append(self.headers.get("Accept", ""))
                    self._reply(200, server.content_type, server.body.encode())
                else:
                    self._reply(404, "text/plain", b"not found")

            def _reply(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def wait_for_scrapes(self, n: int, timeout_s: float) -> None:
        """Return once /metrics was fetched ``n`` times, or after ``timeout_s`` (callers assert
        on what the scrapes produced)."""
        deadline = time.monotonic() + timeout_s
        while len(self.accept_headers) < n and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> ExpositionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
