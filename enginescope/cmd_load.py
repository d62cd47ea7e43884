"""Drive any OpenAI-compatible endpoint with open-loop load and print client-side latency."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from pathlib import Path

from enginescope.cli import CliError
from enginescope.http_headers import add_header_arguments, request_headers
from enginescope.loadgen.generator import (
    PATTERNS,
    SHAREGPT_LIKE,
    LoadConfig,
    LoadGenerator,
    make_pattern,
    summarize,
    write_results,
)
from enginescope.loadgen.openai_client import ClientError, list_models
from enginescope.loadgen.router import Router

HELP = "send open-loop OpenAI API load to an endpoint and report client-side TTFT/ITL/e2e"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:30000")
    parser.add_argument("--pattern", choices=PATTERNS, default="poisson", help="arrival pattern")
    parser.add_argument("--rate", type=float, default=2.0, help="base arrival rate, requests/s")
    parser.add_argument("--duration-s", type=float, default=30.0, help="seconds of arrivals")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, help="per-request results (.jsonl or .parquet)")
    parser.add_argument("--model", default="", help="model name (default: first of GET /v1/models)")
    parser.add_argument("--api", choices=("chat", "completions"), default="chat")
    parser.add_argument("--max-concurrency", type=int, help="cap on requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    add_header_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.duration_s <= 0:
        raise CliError(f"--duration-s must be > 0, got {args.duration_s}")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise CliError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    try:
        pattern = make_pattern(args.pattern, args.rate, args.duration_s)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    results = asyncio.run(_drive(args, pattern))
    summary = summarize(results)
    print(format_summary(summary, args.url, args.duration_s))
    if args.out is not None:
        write_results(results, args.out)
        print(f"per-request results: {args.out}")
    return 0 if summary["ok"] else 1


async def _drive(args: argparse.Namespace, pattern: object) -> list:
    api_key = os.environ.get("OPENAI_API_KEY", "")
    headers = request_headers(args)
    model = args.model or await _default_model(args.url, api_key, headers)
    router = Router()
    router.set_backends({"endpoint": args.url})
    config = LoadConfig(
        model=model,
        api=args.api,
        stream=args.stream,
        max_concurrency=args.max_concurrency,
        api_key=api_key,
        headers=headers,
        seed=args.seed,
    )
    generator = LoadGenerator(router, pattern, SHAREGPT_LIKE, config)  # type: ignore[arg-type]
    return await generator.run(args.duration_s)


async def _default_model(url: str, api_key: str, headers: tuple[tuple[str, str], ...] = ()) -> str:
    try:
        models = await list_models(url, api_key, headers)
    except (ClientError, OSError) as exc:
        raise CliError(f"cannot list models at {url} (pass --model): {exc}") from None
    if not models:
        raise CliError(f"{url}/v1/models lists no model; pass --model")
    return models[0]


def format_summary(summary: dict, url: str, duration_s: float) -> str:
    lines = [
        f"{url}: {summary['requests']} requests in {duration_s:g}s, {summary['ok']} ok, "
        f"{summary['failed']} failed, {summary['retried']} retried, {summary['output_tokens']} output tokens",
        f"{'':8}{'p50':>10}{'p95':>10}{'p99':>10}   (ms, exact per-request)",
    ]
    for key, label in (("ttft_s", "TTFT"), ("itl_s", "ITL"), ("e2e_s", "e2e")):
        row = summary[key]
        cells = "".join(_ms(row[p]) for p in ("p50", "p95", "p99"))
        lines.append(f"{label:8}{cells}")
    return "\n".join(lines)


def _ms(value_s: float) -> str:
    return f"{'-':>10}" if math.isnan(value_s) else f"{value_s * 1000:>10.1f}"
