"""Minimal OpenAI-compatible HTTP client on asyncio streams (no dependencies).

HTTP/1.1 with one connection per request (``Connection: close``), chunked or length-framed
bodies, Server-Sent Events for streaming. Each streamed event that carries text is timed on
arrival, so callers get exact client-side TTFT and inter-token gaps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

# SGLang's --tokenizer-metrics-custom-labels-header default: a JSON object of label -> value.
CUSTOM_LABELS_HEADER = "x-custom-labels"


class ClientError(Exception):
    """The endpoint answered badly (status, framing, JSON); the message names the URL."""


@dataclass(frozen=True)
class OpenAIRequest:
    model: str
    prompt: str
    max_tokens: int
    api: str = "chat"
    stream: bool = True
    ignore_eos: bool = True
    api_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers (e.g. Modal-Key/Modal-Secret)
    custom_labels: tuple[tuple[str, str], ...] = ()  # sent as SGLang's x-custom-labels JSON header

    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    def body(self) -> bytes:
        payload: dict[str, object] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.api == "chat":
            payload["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            payload["prompt"] = self.prompt
        if self.stream:
            payload["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            payload["ignore_eos"] = True
        return json.dumps(payload).encode()


@dataclass
class Response:
    first_token_s: float | None  # perf_counter times
    done_s: float
    itl_s: list[float]
    output_tokens: int


async def send_request(base_url: str, request: OpenAIRequest) -> Response:
    url = base_url.rstrip("/") + request.path()
    headers = {"Content-Type": "application/json", **dict(request.headers)}
    if request.api_key:
        headers["Authorization"] = f"Bearer {request.api_key}"
    if request.custom_labels:
        headers[CUSTOM_LABELS_HEADER] = json.dumps(dict(request.custom_labels))
    status, body = await http_request("POST", url, headers, request.body())
    try:
        if status != 200:
            detail = (await _read_all(body))[:200].decode(errors="replace")
            raise ClientError(f"{url}: HTTP {status}: {detail}")
        if not request.stream:
            return _parse_whole(await _read_all(body), url)
        return await _read_stream(body, url)
    finally:
        await body.aclose()


async def http_request(
    method: str, url: str, headers: dict[str, str], payload: bytes = b""
) -> tuple[int, AsyncIterator[bytes]]:
    """Send one request; return the status and an iterator over the (de-chunked) body."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"{url}: not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    context = ssl.create_default_context() if parts.scheme == "https" else None
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(payload)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    status_line = await reader.readline()
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        writer.close()
        raise ClientError(f"{url}: bad status line {status_line[:80]!r}") from None
    response_headers = await _read_headers(reader)
    return status, _body(reader, writer, response_headers, url)


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str], url: str
) -> AsyncIterator[bytes]:
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while (size_line := await reader.readline()).strip():
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                yield await reader.readexactly(size)
                await reader.readline()
        elif "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
        else:
            while chunk := await reader.read(65536):
                yield chunk
    except (ValueError, asyncio.IncompleteReadError) as exc:
        raise ClientError(f"{url}: truncated or malformed body ({exc})") from None
    finally:
        writer.close()


async def _read_all(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


def _parse_whole(raw: bytes, url: str) -> Response:
    done_s = time.perf_counter()
    try:
        tokens = int(json.loads(raw).get("usage", {}).get("completion_tokens", 0))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ClientError(f"{url}: response is not OpenAI JSON ({exc})") from None
    return Response(None, done_s, [], tokens)


async def _read_stream(body: AsyncIterator[bytes], url: str) -> Response:
    """Time each SSE event that carries text; usage (if sent) gives the token count."""
    token_times: list[float] = []
    usage_tokens: int | None = None
    finished = False
    buffer = b""
    async for chunk in body:
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        now_s = time.perf_counter()
        for event in events:
            data = _sse_data(event)
            if data is None:
                continue
            if data == b"[DONE]":
                finished = True
                continue
            has_text, tokens = _parse_chunk(data, url)
            if has_text:
                token_times.append(now_s)
            usage_tokens = tokens if tokens is not None else usage_tokens
    if not finished:
        raise ClientError(f"{url}: stream ended without [DONE]")
    itl_s = [later - earlier for earlier, later in itertools.pairwise(token_times)]
    first = token_times[0] if token_times else None
    return Response(first, time.perf_counter(), itl_s, usage_tokens or len(token_times))


def _sse_data(event: bytes) -> bytes | None:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"".join(lines) if lines else None


def _parse_chunk(data: bytes, url: str) -> tuple[bool, int | None]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ClientError(f"{url}: SSE data is not JSON: {data[:80]!r}") from None
    if "error" in chunk:
        raise ClientError(f"{url}: error in stream: {chunk['error']}")
    usage = chunk.get("usage") or {}
    text = ""
    for choice in chunk.get("choices") or ():
        text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    tokens = usage.get("completion_tokens")
    return bool(text), int(tokens) if tokens is not None else None


async def list_models(
    base_url: str, api_key: str = "", extra_headers: tuple[tuple[str, str], ...] = ()
) -> list[str]:
    """Model ids served at ``base_url`` (``GET /v1/models``)."""
    url = base_url.rstrip("/") + "/v1/models"
    headers = dict(extra_headers)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    status, body = await http_request("GET", url, headers)
    raw = await _read_all(body)
    if status != 200:
        raise ClientError(f"{url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
    try:
        return [str(entry["id"]) for entry in json.loads(raw)["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"{url}: not an OpenAI model list ({exc})") from None
