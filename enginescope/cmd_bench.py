"""``enginescope bench``: a concurrency sweep against one endpoint, stored as a trade-off curve.

For each concurrency level the load generator keeps that many requests in flight for
``--duration-s``; the engine's ``/metrics`` is scraped before and after, so every level has
client-side quantiles (exact, per request) next to engine-side ones (from the increase of the
engine's own histogram buckets, never averaged). One Parquet file per run lands in
``<store>/bench/``; the ``bench`` view is ``read_parquet('<store>/bench/*.parquet')``.

Without ``--url`` it benchmarks the recipe's simulated engine (``enginescope simulate``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from enginescope.cli import CliError

HELP = "Sweep concurrency against an endpoint; store client- vs engine-side latency/throughput curves."
DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64)
ENGINE_HISTOGRAMS = {
    "ttft": "sglang:time_to_first_token_seconds",
    "itl": "sglang:inter_token_latency_seconds",
    "e2e": "sglang:e2e_request_latency_seconds",
}
QUANTILES = (0.5, 0.95, 0.99)
BUCKETS = tuple[tuple[float, ...], tuple[float, ...]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="recipe TOML (model, SLOs, simulation)")
    parser.add_argument("--url", help="endpoint base URL (default: start the recipe's simulated engine)")
    parser.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="concurrency levels")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per level")
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("ENGINESCOPE_STORE", "./enginescope-store"))
    )
    parser.add_argument("--port", type=int, default=30123, help="port for the simulated engine")
    parser.add_argument("--seed", type=int, default=0)


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
    from collectors.exposition import parse_exposition

    sums: dict[str, dict[float, float]] = {}
    wanted = {name: key for key, name in ENGINE_HISTOGRAMS.items()}
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
    """Bucket increases over a level; a reset (engine restart) counts from zero, never negative."""
    bounds, counts = after
    if before is None or before[0] != bounds or any(a < b for a, b in zip(counts, before[1], strict=True)):
        return after
    return bounds, tuple(a - b for a, b in zip(counts, before[1], strict=True))


def engine_quantiles(before: dict[str, BUCKETS], after: dict[str, BUCKETS]) -> dict[str, float]:
    from collectors.quantile import histogram_quantile

    row: dict[str, float] = {}
    for key in ENGINE_HISTOGRAMS:
        if key not in after:
            continue
        bounds, counts = bucket_increase(before.get(key), after[key])
        for q in QUANTILES:
            row[f"engine_{key}_p{round(q * 100)}_s"] = histogram_quantile(q, bounds, counts)
    return row


def _scrape(url: str) -> dict[str, BUCKETS]:
    request = urllib.request.Request(f"{url}/metrics", headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return engine_buckets(resp.read().decode("utf-8", "replace"))
    except OSError:
        return {}  # an endpoint without /metrics still gets its client-side curve


# -- client side -----------------------------------------------------------------------------


def client_row(results: list[Any], duration_s: float) -> dict[str, float]:
    from simfleet.loadgen import percentile

    done = [r for r in results if r.ok]
    series = {
        "ttft": [r.ttft_s for r in done if r.ttft_s is not None],
        "itl": [gap for r in done for gap in r.itl_s],
        "e2e": [r.e2e_s for r in done if r.e2e_s is not None],
    }
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
    url: str, model: str, concurrency: int, duration_s: float, mix: Any, seed: int
) -> list[Any]:
    from simfleet.loadgen import LoadConfig, LoadGenerator, Poisson
    from simfleet.router import Router

    router = Router()
    router.set_backends({"endpoint": url})
    # Arrivals far faster than service: the concurrency cap, not the rate, sets the load.
    config = LoadConfig(model=model, max_concurrency=concurrency, seed=seed, request_timeout_s=120.0)
    generator = LoadGenerator(router, Poisson(rate_rps=200.0 * concurrency), mix, config)
    return await generator.run(duration_s)


def sweep(url: str, recipe: Any, levels: list[int], duration_s: float, seed: int = 0) -> list[dict[str, Any]]:
    from simfleet.loadgen import SHAREGPT_LIKE, LogNormalTokens, RequestMix

    output_mean = recipe.simulation_profile().output_tokens_mean
    mix = RequestMix(
        SHAREGPT_LIKE.prompt, LogNormalTokens(output_mean, 0.5, 1, max(4 * output_mean, 8)), recipe.name
    )
    rows = []
    for concurrency in levels:
        before = _scrape(url)
        started = time.time()
        results = asyncio.run(_run_level(url, recipe.model.served_name, concurrency, duration_s, mix, seed))
        elapsed_s = max(time.time() - started, 1e-9)
        row: dict[str, Any] = {"ts_s": time.time(), "concurrency": concurrency, "duration_s": elapsed_s}
        row |= client_row(results, elapsed_s) | engine_quantiles(before, _scrape(url))
        row["meets_slo"] = _meets_slo(row, recipe)
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


def _meets_slo(row: dict[str, Any], recipe: Any) -> bool:
    checks = (("client_ttft_p95_s", recipe.slo.ttft_p95_s), ("client_itl_p95_s", recipe.slo.itl_p95_s),
              ("client_e2e_p95_s", recipe.slo.e2e_p95_s))  # fmt: skip
    return all(not math.isnan(row[key]) and row[key] <= limit for key, limit in checks) and row["failed"] == 0


def _format_row(row: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        value = row.get(key, math.nan)
        return "     -" if math.isnan(value) else f"{value * 1000:6.0f}"

    return (f"c={row['concurrency']:<4} {row['throughput_rps']:7.2f} req/s {row['output_tps']:8.0f} tok/s  "
            f"TTFT p95 client {ms('client_ttft_p95_s')} engine {ms('engine_ttft_p95_s')} ms  "
            f"ITL p95 client {ms('client_itl_p95_s')} engine {ms('engine_itl_p95_s')} ms  "
            f"{'meets SLO' if row['meets_slo'] else 'misses SLO'}")  # fmt: skip


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
    return path


# -- simulated target ------------------------------------------------------------------------


def _start_simulated(recipe_path: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "enginescope.cli",
        "simulate",
        "--port",
        str(port),
        "--recipe",
        str(recipe_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
            raise CliError(
                f"simulated engine failed to start: {err[-1] if err else proc.returncode}; pass --url"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise CliError("simulated engine did not become healthy within 60 s; pass --url")


def run(args: argparse.Namespace) -> int:
    from recipes.schema import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as exc:
        raise CliError(str(exc)) from None
    levels = parse_levels(args.levels)
    if args.duration_s <= 0:
        raise CliError(f"--duration-s must be > 0 (got {args.duration_s})")
    sim = None if args.url else _start_simulated(args.recipe, args.port)
    url = (args.url or f"http://127.0.0.1:{args.port}").rstrip("/")
    try:
        rows = sweep(url, recipe, levels, args.duration_s, args.seed)
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=10)
    meta = {"run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "recipe": recipe.name,
            "model": recipe.model.served_name, "url": url, "target": "simulated" if sim else "endpoint"}  # fmt: skip
    path = write_bench(args.store, rows, meta)
    print(f"bench results: {path}")
    return 0 if any(r["ok"] for r in rows) else 1
