"""The simulated engine over real HTTP: health, OpenAI endpoints (SSE), /metrics, crash/restart."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.server import serve

pytestmark = pytest.mark.slow
FAST_START = EngineProfile.from_mapping(
    {
        "scheduler_init_other_s": 0.2,
        "weight_load_s": 0.1,
        "kv_cache_allocation_s": 0.05,
        "cuda_graph_capture_s": 0.1,
        "server_warmup_s": 0.1,
    }  # fmt: skip
)
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


async def http(port: int, method: str, path: str, body: dict | None = None, accept: str | None = None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n"
    if accept:
        head += f"accept: {accept}\r\n"
    writer.write(head.encode() + b"\r\n" + payload)
    raw = await reader.read()
    writer.close()
    header_blob, _, rest = raw.partition(b"\r\n\r\n")
    lines = header_blob.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        data = b""
        while True:
            size_text, _, rest = rest.partition(b"\r\n")
            size = int(size_text, 16)
            if size == 0:
                break
            data, rest = data + rest[:size], rest[size + 2 :]
        rest = data
    return status, headers, rest


async def started(profile: EngineProfile = FAST_START):
    engine = SimEngine(profile, seed=2, clock=time.monotonic)
    driver = asyncio.create_task(engine.run())
    server = await serve(engine)
    return engine, driver, server


async def wait_ready(port: int) -> None:
    for _ in range(100):
        if (await http(port, "GET", "/health"))[0] == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("engine never became healthy")


async def shutdown(engine, driver, server) -> None:
    engine.close()
    await server.stop()
    await driver


def test_cold_start_health_503_then_200() -> None:
    async def scenario() -> None:
        engine, driver, server = await started()
        assert (await http(server.port, "GET", "/health"))[0] == 503
        status, _, body = await http(
            server.port, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 4}
        )
        assert status == 503 and json.loads(body)["code"] == 503
        await wait_ready(server.port)
        assert time.monotonic() - engine.boot_s >= FAST_START.startup_total_s
        status, _, body = await http(server.port, "GET", "/v1/models")
        assert status == 200 and json.loads(body)["data"][0]["id"] == FAST_START.model_name
        assert (await http(server.port, "GET", "/health_generate"))[0] == 200
        await shutdown(engine, driver, server)

    asyncio.run(scenario())


def test_streaming_sse_and_usage() -> None:
    async def scenario() -> None:
        engine, driver, server = await started()
        await wait_ready(server.port)
        request = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "stream": True,
                   "max_tokens": 64, "sim_output_tokens": 40, "stream_options": {"include_usage": True}}  # fmt: skip
        status, headers, body = await http(server.port, "POST", "/v1/chat/completions", request)
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        events = [e for e in body.decode().split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        usage = chunks[-1]["usage"]
        prompt_tokens = 5 + 4 + 100  # template headers + 400 chars at 4 chars/token
        assert usage == {"prompt_tokens": prompt_tokens, "completion_tokens": 40,
                         "total_tokens": prompt_tokens + 40, "prompt_tokens_details": None}  # fmt: skip
        assert len(chunks) - 3 >= 39  # one chunk per decode iteration (the first token included)
        status, _, body = await http(server.port, "POST", "/v1/completions",
                                     {"prompt": "hello", "sim_prompt_tokens": 300, "max_tokens": 25, "ignore_eos": True})  # fmt: skip
        result = json.loads(body)
        assert status == 200 and result["choices"][0]["finish_reason"] == "length"
        assert result["usage"]["prompt_tokens"] == 300 and result["usage"]["completion_tokens"] == 25
        assert (await http(server.port, "POST", "/v1/completions", {"prompt": ""}))[0] == 400
        await shutdown(engine, driver, server)

    asyncio.run(scenario())


def test_metrics_content_negotiation_over_http() -> None:
    async def scenario() -> None:
        engine, driver, server = await started()
        await wait_ready(server.port)
        status, headers, body = await http(server.port, "GET", "/metrics")
        assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = body.decode()
        assert 'sglang:http_requests_active{endpoint="/metrics",method="GET"} 1.0' in text
        assert 'sglang:http_responses_total{endpoint="/health",method="GET",status_code="503"}' in text
        status, headers, body = await http(server.port, "GET", "/metrics", accept=PROMETHEUS_ACCEPT)
        assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert body.endswith(b"# EOF\n") and b"\nsglang_http_requests_total{" in body
        await shutdown(engine, driver, server)

    asyncio.run(scenario())


def test_crash_refuses_connections_and_restart_resets_counters() -> None:
    async def scenario() -> None:
        engine, driver, server = await started()
        await wait_ready(server.port)
        await http(server.port, "POST", "/v1/completions", {"prompt": "hello", "max_tokens": 5})
        long_request = asyncio.create_task(
            http(
                server.port,
                "POST",
                "/v1/completions",
                {"prompt": "x", "max_tokens": 5000, "ignore_eos": True},
            )
        )
        await asyncio.sleep(0.2)
        engine.crash()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError)):
            await long_request  # the connection drops mid-request
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            await http(server.port, "GET", "/health")
        engine.restart()
        await asyncio.sleep(0.05)
        assert (await http(server.port, "GET", "/health"))[0] == 503
        await wait_ready(server.port)
        _, _, body = await http(server.port, "GET", "/metrics")
        assert b"sglang:num_requests_total" not in body  # counters start from zero again
        await shutdown(engine, driver, server)

    asyncio.run(scenario())


def test_custom_labels_header_reaches_export_and_allowed_tokenizer_label(tmp_path) -> None:
    """The load generator's traffic class travels as SGLang's ``x-custom-labels`` header: into the
    per-request export's request_parameters and, when allowed, onto tokenizer metrics."""
    from enginescope.loadgen.generator import LoadConfig, LoadGenerator, LogNormalTokens, Poisson, RequestMix
    from enginescope.loadgen.router import Router

    profile = EngineProfile.from_mapping(
        {**FAST_START.to_mapping(), "tokenizer_metrics_allowed_custom_labels": "task"}
    )

    async def main() -> str:
        engine = SimEngine(profile, seed=2, clock=time.monotonic, export_dir=tmp_path)
        driver = asyncio.create_task(engine.run())
        server = await serve(engine)
        await wait_ready(server.port)
        router = Router()
        router.set_backends({"r": f"http://127.0.0.1:{server.port}"})
        mix = RequestMix(LogNormalTokens(50, 0.2, 8, 80), LogNormalTokens(6, 0.2, 2, 10),
                         classes=(("code", 1.0), ("chat", 1.0)))  # fmt: skip
        results = await LoadGenerator(router, Poisson(40.0), mix, LoadConfig(seed=1)).run(1.0)
        assert results and all(r.ok for r in results)
        assert {r.traffic_class for r in results} == {"code", "chat"}
        _, _, body = await http(server.port, "GET", "/metrics")
        await shutdown(engine, driver, server)
        return body.decode()

    metrics = asyncio.run(main())
    records = [json.loads(line) for f in tmp_path.glob("*.log") for line in f.read_text().splitlines()]
    tasks = {json.loads(r["request_parameters"])["custom_labels"]["task"] for r in records}
    assert tasks == {"code", "chat"}
    assert 'sglang:num_requests_total{engine_type="unified",is_streaming="true",model_name=' in metrics
    assert ',task="code"}' in metrics and ',task="chat"}' in metrics


def test_client_timeout_aborts_the_request_in_the_engine() -> None:
    """A client that gives up closes its socket; the engine aborts the request (queued or running)
    and counts it, as SGLang does for a disconnected client."""
    from enginescope.loadgen.generator import LoadConfig, LoadGenerator, LogNormalTokens, Poisson, RequestMix
    from enginescope.loadgen.router import Router

    capped = EngineProfile.from_mapping({**FAST_START.to_mapping(), "max_running_requests": 1})

    async def main(stream: bool) -> tuple[float, bool, int]:
        engine, driver, server = await started(capped)
        await wait_ready(server.port)
        router = Router()
        router.set_backends({"r": f"http://127.0.0.1:{server.port}"})
        mix = RequestMix(LogNormalTokens(50, 0.01, 50, 50), LogNormalTokens(2000, 0.01, 2000, 2000))
        config = LoadConfig(request_timeout_s=0.4, max_attempts=1, seed=1, stream=stream)
        results = await LoadGenerator(router, Poisson(20.0), mix, config).run(0.3)
        await asyncio.sleep(0.6)  # the server notices the closed sockets within its poll interval
        _, _, body = await http(server.port, "GET", "/metrics")
        aborted = [
            line
            for line in body.decode().splitlines()
            if line.startswith("sglang:num_aborted_requests_total")
        ]
        drained, failed = engine.drained, sum(1 for r in results if not r.ok)
        await shutdown(engine, driver, server)
        return float(aborted[0].split()[-1]) if aborted else 0.0, drained, failed

    for stream in (True, False):
        aborted, drained, failed = asyncio.run(main(stream))
        assert failed >= 2 and aborted == failed and drained, stream  # queued ones too, none left behind
