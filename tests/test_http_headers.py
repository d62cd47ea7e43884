"""``load``/``bench`` send ``--header`` and Modal proxy-auth headers on every request."""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from enginescope.cli import CliError, main
from enginescope.http_headers import add_header_arguments, request_headers


class ProxyAuthServer:
    """An OpenAI-compatible endpoint behind Modal-style proxy auth: 401 without the headers."""

    def __init__(self, key: str, secret: str) -> None:
        self.seen: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _auth(self) -> bool:
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                if self.headers.get("Modal-Key") == key and self.headers.get("Modal-Secret") == secret:
                    return True
                self._send(401, {"error": "missing proxy auth"})
                return False

            def _send(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self._auth():
                    self._send(200, {"data": [{"id": "m"}]})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self._auth():
                    self._send(
                        200, {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 3}}
                    )

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_header_arguments(parser)
    return parser.parse_args(argv)


def test_load_sends_modal_proxy_auth_from_the_environment_and_extra_headers(monkeypatch):
    server = ProxyAuthServer("wk-123", "ws-456")
    monkeypatch.setenv("MODAL_KEY", "wk-123")
    monkeypatch.setenv("MODAL_SECRET", "ws-456")
    try:
        argv = ["load", "--url", server.url, "--duration-s", "1", "--rate", "5", "--no-stream",
                "--header", "X-Team: infra", "--header", "X-Run:7"]  # fmt: skip
        assert main(argv) == 0
    finally:
        server.close()
    assert len(server.seen) >= 2  # GET /v1/models plus requests
    assert all(h["modal-key"] == "wk-123" and h["modal-secret"] == "ws-456" for h in server.seen)
    assert all(h["x-team"] == "infra" and h["x-run"] == "7" for h in server.seen)


def test_load_without_proxy_auth_is_refused_by_the_endpoint(monkeypatch, capsys):
    server = ProxyAuthServer("wk-123", "ws-456")
    monkeypatch.delenv("MODAL_KEY", raising=False)
    monkeypatch.delenv("MODAL_SECRET", raising=False)
    try:
        assert main(["load", "--url", server.url, "--duration-s", "1", "--no-stream"]) == 2
        assert "HTTP 401" in capsys.readouterr().err
    finally:
        server.close()


def test_flags_beat_the_environment_and_bad_input_names_the_flag():
    headers = request_headers(
        _args("--modal-key", "a", "--modal-secret", "b"), env={"MODAL_KEY": "x", "MODAL_SECRET": "y"}
    )
    assert headers == (("Modal-Key", "a"), ("Modal-Secret", "b"))
    with pytest.raises(CliError, match="--modal-key and --modal-secret"):
        request_headers(_args("--modal-key", "a"), env={})
    with pytest.raises(CliError, match="--header 'nocolon'"):
        request_headers(_args("--header", "nocolon"), env={})


def test_bench_accepts_the_same_flags():
    from enginescope.cli import build_parser

    args = build_parser().parse_args(["bench", "--recipe", "r.toml", "--url", "http://x", "--header", "A:b",
                                      "--modal-key", "k", "--modal-secret", "s"])  # fmt: skip
    assert request_headers(args, env={}) == (("A", "b"), ("Modal-Key", "k"), ("Modal-Secret", "s"))
