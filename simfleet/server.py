"""HTTP front end of one simulated SGLang replica (asyncio streams, HTTP/1.1 keep-alive).

Routes: ``GET /health`` (503 until ready, 200 after, 503 while draining), ``GET /health_generate``,
``GET /v1/models``, ``GET /get_server_info``, ``GET /metrics`` (content negotiation as SGLang 0.5.23),
``POST /v1/completions`` and ``POST /v1/chat/completions`` (OpenAI-compatible; ``stream: true`` gives
SSE ``data: {...}`` chunks ending ``data: [DONE]``; ``stream_options.include_usage`` adds a usage
chunk). Prompt tokens are estimated from text length (``chars_per_token``) unless the body has
``sim_prompt_tokens``; ``sim_output_tokens`` fixes the output length (else sampled, bounded by
``max_tokens``; ``ignore_eos`` runs to ``max_tokens``). A crashed engine closes the port (connection
refused) and drops open connections; it listens again on restart.

Streamed chunks leave when the engine's scheduler iteration that produced them ends (one chunk per
decode step, one per accepted block with speculative decoding), as SGLang streams them, so a client
measures the engine's ITL plus its own event-loop delay.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from enginescope.simfleet.engine import EngineState, EngineUnavailable, SimEngine
from enginescope.simfleet.exposition import render
from enginescope.simfleet.sgl_families import HTTP_ENDPOINTS
from enginescope.simfleet.sim_request import OutputEvent
from enginescope.simfleet.vllm_engine import VLLM_VERSION

_MAX_HEADER_BYTES = 65536
CUSTOM_LABELS_HEADER = "x-custom-labels"  # --tokenizer-metrics-custom-labels-header default
CLIENT_CLOSED = 499  # internal marker: the client closed the connection (nginx's code)
_DISCONNECT_POLL_S = 0.25
_MAX_BODY_BYTES = 32 << 20
_WORDS = ("the", " engine", " serves", " tokens", " quickly", ",", " and", " then", " it", " stops", ".")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(tokens: int, start: int = 0) -> str:
    return "".join(_WORDS[(start + i) % len(_WORDS)] for i in range(tokens))


class EngineServer:
    def __init__(self, engine: SimEngine, host: str = "127.0.0.1", port: int = 0) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        engine.add_listener(self._on_engine_state)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.engine.state is not EngineState.CRASHED:
            await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    def _on_engine_state(self, engine: SimEngine) -> None:
        if self._loop is None:
            return
        if engine.state is EngineState.CRASHED:
            self._loop.create_task(self.stop())
        elif engine.state is EngineState.STARTING:
            self._loop.create_task(self._listen())

    # ---- connection handling -------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            raise ConnectionError("header too large")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > _MAX_BODY_BYTES:
            await self._send(writer, 413, {"error": "body too large"}, keep_alive=False)
            return False
        body = await reader.readexactly(length) if length else b""
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        path = target.split("?", 1)[0]
        endpoint = path if path in HTTP_ENDPOINTS else None
        started_s = time.monotonic()
        metrics = self.engine.metrics
        if endpoint:
            metrics.http_started(endpoint, method)
        status = 500
        try:
            status = await self._route(method, path, headers, body, (reader, writer), keep_alive)
        except HttpError as exc:
            status = exc.status
            await self._send(writer, status, _error_body(exc.status, str(exc)), keep_alive)
        finally:
            if endpoint and metrics is self.engine.metrics:  # a restart replaced the registry
                metrics.http_finished(endpoint, method, status, time.monotonic() - started_s)
        return keep_alive

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        keep_alive: bool,
    ) -> int:
        engine = self.engine
        writer = conn[1]
        if path == "/metrics":
            content_type, payload = render(engine.registry, headers.get("accept"))
            await self._send_raw(writer, 200, content_type, payload, keep_alive)
            return 200
        if path == "/health":
            status = 200 if engine.ready else 503
            await self._send_raw(writer, status, "text/plain; charset=utf-8", b"", keep_alive)
            return status
        if path == "/v1/models":
            card = {"id": engine.profile.model_name, "object": "model", "created": int(time.time()),
                    "owned_by": engine.profile.engine, "root": engine.profile.model_name,
                    "max_model_len": engine.profile.context_len_tokens}  # fmt: skip
            await self._send(writer, 200, {"object": "list", "data": [card]}, keep_alive)
            return 200
        if path == "/version" and engine.profile.engine == "vllm":
            await self._send(writer, 200, {"version": VLLM_VERSION}, keep_alive)
            return 200
        if path == "/get_server_info" and engine.profile.engine == "sglang":
            info = {"model_path": engine.profile.model_name, "version": "0.5.23", "state": engine.state.value,
                    **{k: v for k, v in engine.profile.to_mapping().items() if k.endswith(("_size", "_tokens"))}}  # fmt: skip
            await self._send(writer, 200, info, keep_alive)
            return 200
        if path == "/health_generate":
            request = {"sim_prompt_tokens": 8, "sim_output_tokens": 1, "max_tokens": 1}
            await self._completion(request, "/health_generate", conn, keep_alive, {}, health=True)
            return 200
        if path in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                raise HttpError(405, "Method Not Allowed")
            try:
                request = json.loads(body or b"{}")
            except json.JSONDecodeError as exc:
                raise HttpError(400, f"invalid JSON body: {exc}") from None
            if not isinstance(request, dict):
                raise HttpError(400, "request body must be a JSON object")
            return await self._completion(request, path, conn, keep_alive, _custom_labels(headers))
        raise HttpError(404, "Not Found")

    # ---- completions ---------------------------------------------------------------------------
    def _prompt_tokens(self, request: dict[str, Any], chat: bool) -> int:
        hint = request.get("sim_prompt_tokens")
        if hint is not None:
            if not isinstance(hint, int) or hint < 1:
                raise HttpError(400, "sim_prompt_tokens must be a positive integer")
            return hint
        per_token = self.engine.profile.chars_per_token
        if chat:
            messages = request.get("messages")
            if not isinstance(messages, list) or not messages:
                raise HttpError(400, "messages must be a non-empty list")
            chars = sum(len(str(m.get("content", ""))) if isinstance(m, dict) else 0 for m in messages)
            return 5 + 4 * len(messages) + math.ceil(chars / per_token)  # Llama-3 template headers
        prompt = request.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        if not isinstance(prompt, str) or not prompt:
            raise HttpError(400, "prompt must be a non-empty string or a list of token ids")
        return 1 + math.ceil(len(prompt) / per_token)

    async def _completion(
        self,
        request: dict[str, Any],
        path: str,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        keep_alive: bool,
        custom_labels: dict[str, str],
        health: bool = False,
    ) -> int:
        reader, writer = conn
        chat = path == "/v1/chat/completions"
        prompt_tokens = self._prompt_tokens(request, chat)
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
        output_hint = request.get("sim_output_tokens")
        for name, value in (("max_tokens", max_tokens), ("sim_output_tokens", output_hint)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise HttpError(400, f"{name} must be a positive integer")
        stream = bool(request.get("stream", False))
        queue: asyncio.Queue[OutputEvent] = asyncio.Queue()
        sampling = {k: request[k] for k in ("temperature", "top_p", "seed", "ignore_eos") if k in request}
        try:
            req = self.engine.submit(
                prompt_tokens,
                max_new_tokens=max_tokens,
                output_tokens=output_hint,
                stream=stream,
                endpoint=path,
                rid=f"HEALTH_CHECK_{time.monotonic_ns()}" if health else None,
                sampling=sampling,
                sink=queue.put_nowait,
                structured=request.get("response_format", {}).get("type") in ("json_object", "json_schema")
                if isinstance(request.get("response_format"), dict)
                else False,
                ignore_eos=bool(request.get("ignore_eos", False)),
                custom_labels=custom_labels,
            )
        except EngineUnavailable as exc:
            if exc.status is None:
                writer.transport.abort()
                raise ConnectionError("engine crashed") from None
            raise HttpError(exc.status, str(exc)) from None
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        model = request.get("model") or self.engine.profile.model_name
        frame = _Frame(req.rid, model, chat, prompt_tokens=req.prompt_tokens)
        watch = asyncio.get_running_loop().create_task(self._watch_disconnect(reader, req.rid, queue))
        try:
            if stream:
                return await self._stream(queue, frame, request, writer, keep_alive)
            while True:
                event = await queue.get()
                if event.finished:
                    break
        finally:
            watch.cancel()
        if event.error_status == CLIENT_CLOSED:
            raise ConnectionError("client went away")
        if event.error_status is not None or event.finish_reason is None:
            return await self._failed(event, writer, keep_alive)
        await self._send(writer, 200, frame.full_response(event), keep_alive)
        return 200

    async def _failed(self, event: OutputEvent, writer: asyncio.StreamWriter, keep_alive: bool) -> int:
        if event.error_status is None:  # engine crashed under this request
            writer.transport.abort()
            raise ConnectionError("engine crashed")
        message = (event.finish_reason or {}).get("message", "aborted")
        await self._send(writer, event.error_status, _error_body(event.error_status, message), keep_alive)
        return event.error_status

    async def _stream(
        self, queue: asyncio.Queue[OutputEvent], frame: _Frame, request: dict[str, Any],
        writer: asyncio.StreamWriter, keep_alive: bool,
    ) -> int:  # fmt: skip
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
        head += f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        writer.write(head.encode())
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        try:
            if frame.chat:
                await _write_chunk(writer, frame.sse(frame.chunk({"role": "assistant", "content": ""}, None)))
            while True:
                event = await queue.get()
                if event.error_status == CLIENT_CLOSED:
                    raise ConnectionError("client went away")
                if event.error_status is not None or (event.finished and event.finish_reason is None):
                    if event.error_status is None:
                        writer.transport.abort()
                        raise ConnectionError("engine crashed")
                    error = _error_body(
                        event.error_status, (event.finish_reason or {}).get("message", "aborted")
                    )
                    await _write_chunk(writer, frame.sse(error))
                    break
                if event.new_tokens:
                    await _write_chunk(writer, frame.sse(frame.delta_chunk(event)))
                if event.finished:
                    await _write_chunk(writer, frame.sse(frame.finish_chunk(event)))
                    if include_usage:
                        await _write_chunk(writer, frame.sse(frame.usage_chunk(event)))
                    break
            await _write_chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.engine.abort(frame.rid)
            raise
        return 200

    async def _watch_disconnect(
        self, reader: asyncio.StreamReader, rid: str, queue: asyncio.Queue[OutputEvent]
    ) -> None:
        """A client that gives up (timeout, Ctrl-C) closes its socket; like SGLang's handler, abort
        the request then, even while it waits in the queue (num_aborted_requests_total; SGLang
        writes no per-request record for a disconnect)."""
        while not reader.at_eof():
            await asyncio.sleep(_DISCONNECT_POLL_S)
        if self.engine.abort(rid):
            queue.put_nowait(
                OutputEvent(rid, 0, 0, self.engine.now_s(), True, None, error_status=CLIENT_CLOSED)
            )

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: Any, keep_alive: bool) -> None:
        await self._send_raw(writer, status, "application/json", json.dumps(payload).encode(), keep_alive)

    async def _send_raw(
        self, writer: asyncio.StreamWriter, status: int, content_type: str, payload: bytes, keep_alive: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(payload)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()


async def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _custom_labels(headers: dict[str, str]) -> dict[str, str]:
    """SGLang's ``x-custom-labels`` header: a JSON object of string labels; anything else is ignored
    (SGLang logs and drops a malformed header rather than failing the request)."""
    raw = headers.get(CUSTOM_LABELS_HEADER)
    if not raw:
        return {}
    try:
        labels = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items() if isinstance(v, str | int | float)}


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "object": "error",
        "message": message,
        "type": _REASONS.get(status, "Error"),
        "param": None,
        "code": status,
    }


class _Frame:
    """Builds OpenAI-shaped payloads for one request."""

    def __init__(self, rid: str, model: str, chat: bool, prompt_tokens: int) -> None:
        self.rid, self.model, self.chat, self.prompt_tokens = rid, model, chat, prompt_tokens
        self.created = int(time.time())
        self.sent_tokens = 0

    def sse(self, payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens, "prompt_tokens_details": None}  # fmt: skip

    def chunk(
        self, delta: dict[str, Any] | str, finish_reason: str | None, matched: Any = None
    ) -> dict[str, Any]:
        if self.chat:
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
                "matched_stop": matched,
            }
            kind = "chat.completion.chunk"
        else:
            choice = {
                "index": 0,
                "text": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
                "matched_stop": matched,
            }
            kind = "text_completion"
        return {
            "id": self.rid,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def delta_chunk(self, event: OutputEvent) -> dict[str, Any]:
        text = _text(event.new_tokens, self.sent_tokens)
        self.sent_tokens += event.new_tokens
        return self.chunk({"content": text} if self.chat else text, None)

    def finish_chunk(self, event: OutputEvent) -> dict[str, Any]:
        reason = event.finish_reason or {}
        return self.chunk({} if self.chat else "", reason.get("type"), reason.get("matched"))

    def usage_chunk(self, event: OutputEvent) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model, "choices": [],
                "usage": self.usage(event.completion_tokens)}  # fmt: skip

    def full_response(self, event: OutputEvent) -> dict[str, Any]:
        reason = event.finish_reason or {}
        text = _text(event.completion_tokens)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "reasoning_content": None,
                      "tool_calls": None}, "logprobs": None, "finish_reason": reason.get("type"),
                      "matched_stop": reason.get("matched")}  # fmt: skip
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason.get("type"),
                      "matched_stop": reason.get("matched")}  # fmt: skip
            kind = "text_completion"
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model, "choices": [choice],
                "usage": self.usage(event.completion_tokens)}  # fmt: skip


async def serve(engine: SimEngine, host: str = "127.0.0.1", port: int = 0) -> EngineServer:
    """Start the HTTP front end; the caller runs ``engine.run()`` alongside."""
    server = EngineServer(engine, host, port)
    await server.start()
    return server
