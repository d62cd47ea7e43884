"""``enginescope bench``: a concurrency sweep against one endpoint, stored as a trade-off curve.

For each concurrency level the load generator keeps that many requests in flight for
``--duration-s``; the engine's ``/metrics`` is scraped before and after, so every level has
client-side quantiles (exact, per request) next to engine-side ones (from the increase of the
engine's own histogram buckets, never averaged). One Parquet file per run lands in
``<store>/bench/``; the ``bench`` view is ``read_parquet('<store>/bench/*.parquet')``.

Without ``--url`` it benchmarks one simulated engine running the recipe's simulation profile,
in this process (warm: the cold start is skipped), with a short default sweep; that curve is
one replica's trade-off, the one that picks ``autoscaling.target_concurrency``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from enginescope.cli import CliError
from enginescope.collectors.signals import QUANTILES, SLOS
from enginescope.http_headers import add_header_arguments, request_headers
from enginescope.simfleet.profile import profile_for_recipe

HELP = "Sweep concurrency against an endpoint; store client- vs engine-side latency/throughput curves."
DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64)  # a real endpoint, 20 s each
SIMULATED_LEVELS = (1, 4, 16)  # the local simulated engine, 5 s each
DEFAULT_DURATION_S = 20.0
SIMULATED_DURATION_S = 5.0
ENGINE_HISTOGRAMS = {
    "ttft": "sglang:time_to_first_token_seconds",
    "itl": "sglang:inter_token_latency_seconds",
    "e2e": "sglang:e2e_request_latency_seconds",
}
BUCKETS = tuple[tuple[float, ...], tuple[float, ...]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="recipe TOML (model, SLOs, simulation)")
    parser.add_argument("--url", help="endpoint base URL (default: a simulated engine of the recipe)")
    parser.add_argument(
        "--levels",
        help=f"concurrency levels (default {_csv(DEFAULT_LEVELS)} with --url, {_csv(SIMULATED_LEVELS)} simulated)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        help=f"seconds per level (default {DEFAULT_DURATION_S:g} with --url, {SIMULATED_DURATION_S:g} simulated)",
    )
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("ENGINESCOPE_STORE", "./enginescope-store"))
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port for the simulated engine (default: any free)"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_header_arguments(parser)  # Modal proxy auth for a deployed endpoint


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--levels must be comma-separated integers (got {text!r})") from None
    if not levels or min(levels) < 1:
        raise CliError(f"--levels must be integers >= 1 (got {text!r})")
    return sorted(set(levels))


# -- engine side -----------------------------------------------------------------------------


def engine_buckets(text: str) -> dict[str, BUCKETS]:
    """Cumulative ``le`` buckets per signal, summed over every label set (ranks, streaming)."""
    from enginescope.collectors.exposition import parse_exposition

    sums: dict[str, dict[float, float]] = {}
    wanted = {name: key for key, name in ENGINE_HISTOGRAMS.items()}
    wanted |= {name.replace("sglang:", "vllm:"): key for name, key in wanted.items()}  # same names on vLLM
    for family in parse_exposition(text).families:
        key = wanted.get(family.name)
        if key is None:
            continue
        per_bound = sums.setdefault(key, {})
        for sample in family.samples:
            if sample.ref.role == "bucket" and sample.ref.bound is not None:
                per_bound[sample.ref.bound] = per_bound.get(sample.ref.bound, 0.0) + sample.value
    return {key: (tuple(sorted(b)), tuple(b[k] for k in sorted(b))) for key, b in sums.items()}


def bucket_increase(before: BUCKETS | None, after: BUCKETS) -> BUCKETS:
    """Bucket increases over a level; a reset (engine restart) counts from zero, never negative.
    The reset rule is the pipeline's own (``collectors.deltas.histogram_increase``)."""
    from enginescope.collectors.deltas import HistogramState, histogram_increase

    bounds, counts = after
    if before is None:
        return after
    current = HistogramState(bounds, counts, 0.0, counts[-1] if counts else 0.0)
    previous = HistogramState(before[0], before[1], 0.0, before[1][-1] if before[1] else 0.0)
    increase, _ = histogram_increase(previous, current)
    return increase.bounds, increase.counts


def engine_quantiles(before: dict[str, BUCKETS], after: dict[str, BUCKETS]) -> dict[str, float]:
    from enginescope.collectors.quantile import histogram_quantile

    row: dict[str, float] = {}
    for key in ENGINE_HISTOGRAMS:
        if key not in after:
            continue
        bounds, counts = bucket_increase(before.get(key), after[key])
        for q in QUANTILES:
            row[f"engine_{key}_p{round(q * 100)}_s"] = histogram_quantile(q, bounds, counts)
    return row


async def _scrape(url: str, headers: tuple[tuple[str, str], ...] = ()) -> dict[str, BUCKETS]:
    """Engine buckets from ``<url>/metrics`` (async: the simulated engine may share this loop)."""
    from enginescope.loadgen.openai_client import ClientError, http_request

    try:
        async with asyncio.timeout(5.0):
            status, body = await http_request(
                "GET", f"{url}/metrics", {**dict(headers), "Accept": "text/plain;version=0.0.4"}
            )
            text = b"".join([chunk async for chunk in body]).decode("utf-8", "replace")
    except (OSError, TimeoutError, ClientError):
        return {}  # an endpoint without /metrics still gets its client-side curve
    return engine_buckets(text) if status == 200 else {}


# -- client side -----------------------------------------------------------------------------


def client_row(results: list[Any], duration_s: float) -> dict[str, float]:
    from enginescope.loadgen.generator import latency_series, percentile

    done = [r for r in results if r.ok]
    series = latency_series(done)
    row: dict[str, float] = {
        "requests": float(len(results)),
        "ok": float(len(done)),
        "failed": float(len(results) - len(done)),
        "throughput_rps": len(done) / duration_s,
        "output_tps": sum(r.output_tokens for r in done) / duration_s,
    }
    for key, values in series.items():
        for q in QUANTILES:
            row[f"client_{key}_p{round(q * 100)}_s"] = percentile(values, q)
    return row


async def _run_level(
    url: str,
    model: str,
    concurrency: int,
    duration_s: float,
    mix: Any,
    seed: int,
    headers: tuple[tuple[str, str], ...] = (),
) -> list[Any]:
    from enginescope.loadgen.generator import LoadConfig, LoadGenerator, Poisson
    from enginescope.loadgen.router import Router

    router = Router()
    router.set_backends({"endpoint": url})
    # Arrivals far faster than service: the concurrency cap, not the rate, sets the load.
    config = LoadConfig(
        model=model, max_concurrency=concurrency, seed=seed, request_timeout_s=120.0, headers=headers
    )
    generator = LoadGenerator(router, Poisson(rate_rps=200.0 * concurrency), mix, config)
    # Arrivals queue behind the cap, so end them on the clock; requests in flight still finish.
    stopper = asyncio.get_running_loop().call_later(duration_s, generator.stop_arrivals)
    try:
        return await generator.run(duration_s)
    finally:
        stopper.cancel()


async def sweep(
    url: str,
    recipe: Any,
    levels: list[int],
    duration_s: float,
    seed: int = 0,
    itl_slo_side: str = "client",
    headers: tuple[tuple[str, str], ...] = (),
) -> list[dict[str, Any]]:
    """One row per level. ``itl_slo_side``: whose ITL p95 the SLO judges (``client`` or ``engine``)."""
    from enginescope.loadgen.generator import SHAREGPT_LIKE, LogNormalTokens, RequestMix

    output_mean = profile_for_recipe(recipe).output_tokens_mean
    mix = RequestMix(
        SHAREGPT_LIKE.prompt, LogNormalTokens(output_mean, 0.5, 1, max(4 * output_mean, 8)), recipe.name
    )
    print(HEADER, flush=True)
    rows = []
    for concurrency in levels:
        before = await _scrape(url, headers)
        started = time.time()
        results = await _run_level(url, recipe.model.served_name, concurrency, duration_s, mix, seed, headers)
        elapsed_s = max(time.time() - started, 1e-9)
        row: dict[str, Any] = {"ts_s": time.time(), "concurrency": concurrency, "duration_s": elapsed_s}
        row |= client_row(results, elapsed_s) | engine_quantiles(before, await _scrape(url, headers))
        row["meets_slo"] = meets_slo(row, recipe, itl_slo_side)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def meets_slo(row: dict[str, Any], recipe: Any, itl_slo_side: str = "client") -> bool:
    # Row keys are "<side>_<slo key>", e.g. client_ttft_p95_s; ITL may be judged engine-side.
    checks = [
        (f"{itl_slo_side if slo.signal == 'itl_seconds' else 'client'}_{slo.key}", recipe.slo.limit(slo.key))
        for slo in SLOS
    ]
    values = [(row.get(key, math.nan), limit) for key, limit in checks]
    return all(not math.isnan(value) and value <= limit for value, limit in values) and row["failed"] == 0


# (header, row key, format); latencies print in milliseconds.
_COLUMNS = (
    ("conc", "concurrency", "{:>5d}"),
    ("tok/s", "output_tps", "{:>8.0f}"),
    ("req/s", "throughput_rps", "{:>7.2f}"),
    ("TTFT p50", "client_ttft_p50_s", "ms"),
    ("TTFT p95", "client_ttft_p95_s", "ms"),
    ("ITL p50", "client_itl_p50_s", "ms"),
    ("ITL p95", "client_itl_p95_s", "ms"),
    ("e2e p50", "client_e2e_p50_s", "ms"),
    ("e2e p95", "client_e2e_p95_s", "ms"),
    ("eng TTFT p95", "engine_ttft_p95_s", "ms"),
    ("eng ITL p95", "engine_itl_p95_s", "ms"),
)
_WIDTHS = tuple(max(len(title), 8) for title, _, _ in _COLUMNS)
HEADER = (
    "  ".join(title.rjust(width) for (title, _, _), width in zip(_COLUMNS, _WIDTHS, strict=True))
    + "  SLO   (latencies in ms; client-side unless 'eng')"
)


def format_row(row: dict[str, Any]) -> str:
    cells = []
    for (_, key, fmt), width in zip(_COLUMNS, _WIDTHS, strict=True):
        value = row.get(key, math.nan)
        if fmt == "ms":
            text = "-" if math.isnan(value) else f"{value * 1000:.1f}"
        else:
            text = fmt.format(value).strip()
        cells.append(text.rjust(width))
    return "  ".join(cells) + ("  meets" if row["meets_slo"] else "  misses")


def write_bench(store: Path, rows: list[dict[str, Any]], meta: dict[str, str]) -> Path:
    """``<store>/bench/<run>.parquet``: one row per level, run metadata repeated per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = store / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([meta | row for row in rows])
    path = folder / f"{meta['run_id']}.parquet"
    tmp = folder / f".tmp-{path.name}"
    pq.write_table(table, tmp)
    tmp.replace(path)  # readers never see half a file
    from enginescope.store.bench import register_run

    register_run(store, path)  # one commit adds the run to the store's Delta table ``bench``
    return path


# -- simulated target ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def simulated_engine(recipe: Any, port: int = 0, seed: int = 0) -> AsyncIterator[str]:
    """One warm simulated engine of the recipe's profile on loopback; yields its base URL."""
    from enginescope.simfleet.engine import SimEngine
    from enginescope.simfleet.recipe_scenarios import compress_cold_start
    from enginescope.simfleet.server import serve

    profile = compress_cold_start(profile_for_recipe(recipe), 0.2)  # the sweep measures steady state
    engine = SimEngine(profile, name=f"bench-{recipe.name}", seed=seed, clock=time.monotonic)
    try:
        server = await serve(engine, "127.0.0.1", port)
    except OSError as exc:
        raise CliError(f"--port {port}: cannot listen for the simulated engine: {exc}") from None
    driver = asyncio.get_running_loop().create_task(engine.run())
    try:
        while not engine.ready:
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        engine.close()
        await driver


async def _bench(
    args: argparse.Namespace, recipe: Any, levels: list[int], duration_s: float
) -> tuple[list[dict[str, Any]], str]:
    if args.url:
        url = args.url.rstrip("/")
        return await sweep(url, recipe, levels, duration_s, args.seed, headers=request_headers(args)), url
    async with simulated_engine(recipe, args.port, args.seed) as url:
        print(f"simulated {recipe.model.served_name} (recipe {recipe.name}) at {url}", flush=True)
        # The simulated server flushes streamed tokens once per 25 ms engine tick, so client-side
        # gaps measure that cadence, not decoding: the ITL SLO is judged on the engine's histogram.
        print("SLO check: client TTFT/e2e p95, engine ITL p95 (simulated stream cadence)", flush=True)
        return await sweep(url, recipe, levels, duration_s, args.seed, itl_slo_side="engine"), url


def run(args: argparse.Namespace) -> int:
    from enginescope.recipes.schema import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as exc:
        raise CliError(str(exc)) from None
    simulated = not args.url
    levels = parse_levels(args.levels or _csv(SIMULATED_LEVELS if simulated else DEFAULT_LEVELS))
    duration_s = args.duration_s
    if duration_s is None:
        duration_s = SIMULATED_DURATION_S if simulated else DEFAULT_DURATION_S
    if duration_s <= 0:
        raise CliError(f"--duration-s must be > 0 (got {duration_s})")
    rows, url = asyncio.run(_bench(args, recipe, levels, duration_s))
    meta = {"run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "recipe": recipe.name,
            "model": recipe.model.served_name, "url": url, "target": "simulated" if simulated else "endpoint",
            "itl_slo_side": "engine" if simulated else "client"}  # fmt: skip
    path = write_bench(args.store, rows, meta)
    print(f"bench results: {path}")
    return 0 if any(r["ok"] for r in rows) else 1
