"""``enginescope bench``: engine-side quantiles from bucket increases, stored sweep rows."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from enginescope import cmd_bench
from enginescope.cli import CliError
from enginescope.cmd_bench import (
    bucket_increase,
    client_row,
    engine_buckets,
    engine_quantiles,
    meets_slo,
    parse_levels,
    write_bench,
)
from enginescope.collectors.quantile import bucket_width_bound, histogram_quantile
from enginescope.recipes.schema import load_recipe
from enginescope.simfleet.sgl_families import TTFT_BUCKETS_S

FIXTURE = Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu/metrics.txt"
CLASSIFIER = Path(__file__).resolve().parents[1] / "recipes" / "qwen3-8b-classifier-h100.toml"

TWO_SERIES = """\
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{is_streaming="true",le="0.1"} {a1}
sglang:time_to_first_token_seconds_bucket{is_streaming="true",le="0.5"} {a2}
sglang:time_to_first_token_seconds_bucket{is_streaming="true",le="+Inf"} {a3}
sglang:time_to_first_token_seconds_sum{is_streaming="true"} 1
sglang:time_to_first_token_seconds_count{is_streaming="true"} {a3}
sglang:time_to_first_token_seconds_bucket{is_streaming="false",le="0.1"} {b1}
sglang:time_to_first_token_seconds_bucket{is_streaming="false",le="0.5"} {b2}
sglang:time_to_first_token_seconds_bucket{is_streaming="false",le="+Inf"} {b3}
sglang:time_to_first_token_seconds_sum{is_streaming="false"} 1
sglang:time_to_first_token_seconds_count{is_streaming="false"} {b3}
"""


def exposition(a, b):
    text = TWO_SERIES
    for prefix, values in (("a", a), ("b", b)):
        for i, value in enumerate(values):
            text = text.replace(f"{{{prefix}{i + 1}}}", str(value))
    return text


def test_buckets_are_summed_over_label_sets():
    buckets = engine_buckets(exposition((1, 3, 4), (2, 2, 6)))
    assert buckets["ttft"] == ((0.1, 0.5, math.inf), (3.0, 5.0, 10.0))


def test_real_exposition_has_all_three_signals():
    buckets = engine_buckets(FIXTURE.read_text())
    assert set(buckets) == {"ttft", "itl", "e2e"}
    for bounds, counts in buckets.values():
        assert bounds[-1] == math.inf and list(counts) == sorted(counts)


def test_quantiles_come_from_the_increase_not_the_lifetime_totals():
    before = engine_buckets(exposition((10, 10, 10), (0, 0, 0)))  # 10 fast requests earlier
    after = engine_buckets(exposition((10, 12, 14), (0, 1, 2)))  # then 6 slower ones
    row = engine_quantiles(before, after)
    increase = ((0.1, 0.5, math.inf), (0.0, 3.0, 6.0))
    assert bucket_increase(before["ttft"], after["ttft"]) == increase
    assert row["engine_ttft_p50_s"] == pytest.approx(histogram_quantile(0.5, *increase))
    # rank 3 of 6 sits at the top of the 0.1-0.5 bucket; lifetime totals (13 of 16 <= 0.1) say 0.08
    assert row["engine_ttft_p50_s"] == pytest.approx(0.5)
    assert histogram_quantile(0.5, *after["ttft"]) == pytest.approx(0.08)
    assert "engine_itl_p50_s" not in row  # the engine exposed no ITL histogram here


def test_counter_reset_counts_from_zero_never_negative():
    before = engine_buckets(exposition((50, 60, 70), (0, 0, 0)))["ttft"]
    after = engine_buckets(exposition((1, 2, 2), (0, 0, 0)))["ttft"]  # engine restarted mid-level
    assert bucket_increase(before, after) == after


def test_client_row_uses_exact_per_request_quantiles():
    def result(ttft, e2e, itl, ok=True):
        return SimpleNamespace(ok=ok, ttft_s=ttft, e2e_s=e2e, itl_s=itl, output_tokens=len(itl) + 1)

    results = [result(0.1, 1.0, [0.01, 0.03]), result(0.3, 2.0, [0.02]), result(None, None, [], ok=False)]
    row = client_row(results, duration_s=2.0)
    assert (row["requests"], row["ok"], row["failed"]) == (3, 2, 1)
    assert row["throughput_rps"] == 1.0 and row["output_tps"] == 2.5
    assert row["client_ttft_p50_s"] == pytest.approx(0.2)
    assert row["client_itl_p50_s"] == pytest.approx(0.02)


def test_levels_are_parsed_and_checked():
    assert parse_levels("8,1,4,4") == [1, 4, 8]
    with pytest.raises(CliError, match="--levels"):
        parse_levels("1,x")
    with pytest.raises(CliError, match=">= 1"):
        parse_levels("0,2")


def test_bench_rows_land_in_the_store(tmp_path):
    rows = [{"concurrency": c, "throughput_rps": float(c), "meets_slo": c < 4} for c in (1, 2, 4)]
    path = write_bench(tmp_path, rows, {"run_id": "r1", "recipe": "llama-3.1-8b-h100"})
    assert path == tmp_path / "bench" / "r1.parquet"
    table = pq.read_table(path).to_pylist()
    assert [(r["concurrency"], r["meets_slo"], r["recipe"]) for r in table] == [
        (1, True, "llama-3.1-8b-h100"), (2, True, "llama-3.1-8b-h100"), (4, False, "llama-3.1-8b-h100")]  # fmt: skip
    assert not list((tmp_path / "bench").glob(".tmp-*"))


def test_itl_slo_is_judged_on_the_chosen_side() -> None:
    recipe = load_recipe(CLASSIFIER)
    row = {"client_ttft_p95_s": 0.05, "client_e2e_p95_s": 0.2, "failed": 0.0,
           "client_itl_p95_s": 0.026, "engine_itl_p95_s": 0.008}  # fmt: skip
    assert recipe.slo.itl_p95_s == 0.02
    assert not meets_slo(row, recipe, "client") and meets_slo(row, recipe, "engine")
    assert not meets_slo(row | {"engine_itl_p95_s": math.nan}, recipe, "engine")
    assert not meets_slo(row | {"failed": 1.0}, recipe, "engine")


STREAM_TICK_S = 0.025  # the simulated server releases streamed chunks on the engine's tick


@pytest.mark.slow
def test_simulated_sweep_trades_latency_for_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cmd_bench.add_arguments(parser)
    # The classifier's 4-token answers give hundreds of requests per 3 s level: stable quantiles.
    args = parser.parse_args(["--recipe", str(CLASSIFIER), "--store", str(tmp_path), "--duration-s", "3"])
    assert cmd_bench.run(args) == 0

    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if "eng TTFT p95" in line)
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["1", "4", "16"]
    (path,) = (tmp_path / "bench").glob("*.parquet")
    rows = pq.read_table(path).to_pylist()
    assert [r["concurrency"] for r in rows] == [1, 4, 16]  # the short simulated default
    assert {(r["target"], r["model"], r["recipe"]) for r in rows} == {
        ("simulated", "qwen3-8b-classifier", "qwen3-8b-classifier-h100")}  # fmt: skip
    assert all(r["failed"] == 0 and r["ok"] >= 20 and r["itl_slo_side"] == "engine" for r in rows)
    assert rows[0]["meets_slo"]  # one request at a time is far inside the classifier's 150 ms TTFT SLO

    rps = [r["throughput_rps"] for r in rows]
    tps = [r["output_tps"] for r in rows]
    assert rps[1] > 1.5 * rps[0] and rps[2] > 1.5 * rps[1], rps  # batching pays off...
    assert tps == sorted(tps)
    for key in ("client_ttft_p95_s", "client_e2e_p95_s"):  # ...in latency
        values = [r[key] for r in rows]
        assert values == sorted(values) and values[2] > 1.5 * values[0], (key, values)

    for row in rows:
        client, engine = row["client_ttft_p95_s"], row["engine_ttft_p95_s"]
        # The engine's p95 is interpolated inside SGLang's TTFT bucket (the first spans 0-100 ms),
        # and the client sees the first token up to one engine tick later, plus connection and
        # event-loop time (a few ms).
        bound = bucket_width_bound(engine, TTFT_BUCKETS_S) + STREAM_TICK_S + 0.02
        assert abs(client - engine) <= bound, (row["concurrency"], client, engine, bound)
        assert math.isfinite(row["engine_itl_p95_s"]) and row["engine_itl_p95_s"] > 0


LLAMA_8B = Path(__file__).resolve().parents[1] / "recipes" / "llama-3.1-8b-h100.toml"


@pytest.mark.slow
def test_client_itl_tracks_engine_itl_at_concurrency_1_and_16() -> None:
    """Tokens leave per decode step, so the client's median gap is the engine's ITL (issue 13)."""
    import asyncio

    recipe = load_recipe(LLAMA_8B)

    async def main() -> list[dict]:
        async with cmd_bench.simulated_engine(recipe) as url:
            return await cmd_bench.sweep(url, recipe, [1, 16], 3.0, itl_slo_side="client")

    for row in asyncio.run(main()):
        client, engine = row["client_itl_p50_s"], row["engine_itl_p50_s"]
        assert client > 0.002, row  # 0.0 when chunks left once per 25 ms tick
        assert abs(client - engine) <= 0.25 * engine, (row["concurrency"], client, engine)
