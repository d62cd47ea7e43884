"""``enginescope bench``: engine-side quantiles from bucket increases, stored sweep rows."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from collectors.quantile import histogram_quantile
from enginescope.cli import CliError
from enginescope.cmd_bench import (
    bucket_increase,
    client_row,
    engine_buckets,
    engine_quantiles,
    parse_levels,
    write_bench,
)

FIXTURE = Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu/metrics.txt"

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
