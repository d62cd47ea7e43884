"""Normaliser: rows from real fixtures, baseline, restarts, formats, multi-rank signals."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginescope.collectors.catalog import COUNTER_SIGNALS, GAUGE_SIGNALS, HISTOGRAM_SIGNALS
from enginescope.collectors.deltas import HistogramState, histogram_increase
from enginescope.collectors.normalise import Normaliser

FIXTURES = Path(__file__).parent / "fixtures"
SGLANG_TEXT = (FIXTURES / "sglang/0.5.23-single-gpu/metrics.txt").read_text()
SGLANG_OM = (FIXTURES / "sglang/0.5.23-single-gpu/metrics.openmetrics.txt").read_text()
VLLM_TEXT = (FIXTURES / "vllm/0.33.0-plain/metrics.txt").read_text()


LINE_PIECES = [
    "# TYPE h histogram",
    "# TYPE c counter",
    "# TYPE s summary",
    "# HELP c help \\ text",
    "# TYPE sglang:q gauge",
    'h_bucket{le="1"} 3',
    'h_bucket{le="+Inf"} 2',
    'h_bucket{le="x"} 2',
    "h_sum NaN",
    "h_count 1",
    "c_total 5",
    "c_total -1",
    'c_total{a="\\"} 2 1700000000000',
    's{quantile="0.5"} 1',
    "s_count 1",
    'sglang_q{priority=""} 4',
    'x{a="1"',
    "# EOF",
    "",
    "  ",
    'y 1 # {t="1"} 2',
]


def scaled(text: str, factor: float) -> str:
    """Every sample value times ``factor`` (counters and cumulative buckets grow together)."""
    return re.sub(
        r"^([^#].*) (\S+)$", lambda m: f"{m.group(1)} {float(m.group(2)) * factor!r}", text, flags=re.M
    )


def by_signal(scrape):
    return {row.signal: row.value for row in scrape.signals}


def test_baseline_scrape_has_values_but_no_increases():
    scrape = Normaliser().process(SGLANG_TEXT, 1000.0, "text/plain; version=0.0.4")
    assert (
        scrape.engine == "sglang" and scrape.errors == [] and scrape.histograms == [] and scrape.events == []
    )
    counters = [row for row in scrape.samples if row.type == "counter"]
    assert counters and all(row.delta is None and row.interval_s is None for row in counters)
    assert by_signal(scrape) == {
        "queue_depth": 0.0,
        "running_requests": 7.0,
        "kv_usage_ratio": 0.03,
        "gen_throughput_tps": 1163.43867842017,
        "startup_seconds": 45.2,
        "weight_load_seconds": 4.87,
    }
    # Unknown/unmapped families are kept as raw samples, gauge-histograms as gauges.
    names = {row.metric for row in scrape.samples}
    assert {
        "sglang:num_paused_reqs",
        "sglang:http_requests_active",
        "sglang:routing_key_all_req_count",
    } <= names
    assert {s.signal for s in scrape.signals} <= set(GAUGE_SIGNALS + COUNTER_SIGNALS)


def test_second_scrape_gives_histogram_and_counter_increases():
    normaliser = Normaliser()
    normaliser.process(SGLANG_TEXT, 1000.0)
    scrape = normaliser.process(scaled(SGLANG_TEXT, 1.5), 1005.0)
    ttft = [row for row in scrape.histograms if row.signal == "ttft_seconds"]
    assert {row.labels for row in ttft} == {
        (("engine_type", "unified"), ("is_streaming", s), ("model_name", "meta-llama/Llama-3.1-8B-Instruct"))
        for s in ("true", "false")
    }
    streaming = next(row for row in ttft if ("is_streaming", "true") in row.labels)
    assert streaming.bounds[0] == 0.1 and streaming.bounds[-1] == float("inf")
    assert streaming.counts[0] == pytest.approx(40.5) and streaming.counts[-1] == pytest.approx(62.0)
    assert streaming.count == pytest.approx(62.0) and streaming.interval_s == 5.0
    assert {row.signal for row in scrape.histograms} == set(HISTOGRAM_SIGNALS) | {None}
    signals = by_signal(scrape)
    assert signals["prompt_tokens"] == pytest.approx((102452 + 142145) * 0.5)
    assert signals["requests_finished"] == pytest.approx(100.0)
    assert signals["cache_hit_ratio"] == pytest.approx(52150 / (203723 + 52150))
    row = next(r for r in scrape.samples if r.metric == "sglang:num_aborted_requests_total")
    assert (row.value, row.delta, row.interval_s) == (4.5, 1.5, 5.0)
    assert scrape.events == []


def test_engine_restart_yields_one_event_and_no_negative_increase():
    normaliser = Normaliser()
    normaliser.process(SGLANG_TEXT, 1000.0)
    scrape = normaliser.process(scaled(SGLANG_TEXT, 0.25), 1005.0)
    assert [event.kind for event in scrape.events] == ["engine_restart"]
    assert "counter reset in sglang:process_cpu_seconds" in scrape.events[0].detail
    assert all(row.delta is None or row.delta >= 0 for row in scrape.samples)
    assert all(min(row.counts) >= 0 and row.count >= 0 for row in scrape.histograms)
    assert by_signal(scrape)["generation_tokens"] == pytest.approx((22928 + 32758) * 0.25)


def test_plain_and_malformed_openmetrics_give_the_same_rows():
    rows = []
    for text, content_type in (
        (SGLANG_TEXT, "text/plain; version=0.0.4"),
        (SGLANG_OM, "application/openmetrics-text"),
    ):
        normaliser = Normaliser()
        normaliser.process(text, 1000.0, content_type)
        scrape = normaliser.process(scaled(text, 2.0), 1005.0, content_type)
        assert scrape.errors == []
        rows.append(
            (
                {
                    (r.metric, r.labels, r.type)
                    for r in scrape.samples
                    if ("endpoint", "/metrics") not in r.labels
                },
                [(h.metric, h.labels, h.counts, h.signal) for h in scrape.histograms],
                by_signal(scrape),
            )
        )
    assert rows[0] == rows[1]


def test_vllm_fixture_signals():
    normaliser = Normaliser()
    first = normaliser.process(VLLM_TEXT, 1000.0)
    assert first.engine == "vllm" and first.errors == []
    assert by_signal(first) == {
        "queue_depth": 0.0,
        "running_requests": 7.0,
        "kv_usage_ratio": 0.032036623737743304,
    }
    scrape = normaliser.process(scaled(VLLM_TEXT, 2.0), 1005.0)
    signals = by_signal(scrape)
    assert signals["requests_finished"] == 197.0 and signals["requests_aborted"] == 0.0
    assert signals["cache_hit_ratio"] == pytest.approx(51408 / 255873)
    assert signals["cached_tokens"] == 51408.0
    hist_signals = {h.signal for h in scrape.histograms if h.signal}
    assert hist_signals == set(HISTOGRAM_SIGNALS)
    created = [r for r in scrape.samples if r.metric.endswith("_created")]
    assert created and all(r.type == "gauge" and r.delta is None for r in created)


def test_truncated_vllm_docs_sample_is_reported_not_guessed():
    text = (FIXTURES / "vllm/docs-sample.txt").read_text()
    normaliser = Normaliser()
    for ts_s in (1000.0, 1005.0):
        scrape = normaliser.process(text, ts_s)
        assert scrape.histograms == []
        assert len(scrape.errors) == 1 and "neither a +Inf bucket nor a _count" in scrape.errors[0].reason
        assert scrape.errors[0].line_no == 3


def test_histogram_without_inf_bucket_uses_count():
    text = '# TYPE h histogram\nh_bucket{le="1"} %d\nh_count %d\nh_sum 1\n'
    normaliser = Normaliser("unknown")
    normaliser.process(text % (1, 2), 0.0)
    scrape = normaliser.process(text % (2, 5), 5.0)
    assert [(h.bounds, h.counts) for h in scrape.histograms] == [((1.0, float("inf")), (1.0, 3.0))]


def widen_ranks(text: str, dp_ranks: int) -> str:
    out = []
    for line in text.splitlines():
        if 'tp_rank="0"' in line and not line.startswith("#"):
            out += [
                line.replace('{engine_type="', f'{{dp_rank="{dp}",engine_type="', 1) for dp in range(dp_ranks)
            ]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_multi_rank_exposition_sums_dp_ranks():
    normaliser = Normaliser()
    text = widen_ranks(SGLANG_TEXT, 4)
    first = normaliser.process(text, 1000.0)
    assert by_signal(first)["running_requests"] == 28.0 and by_signal(first)["kv_usage_ratio"] == 0.03
    scrape = normaliser.process(scaled(text, 2.0), 1005.0)
    queue_rows = [h for h in scrape.histograms if h.signal == "queue_time_seconds"]
    assert len(queue_rows) == 4 and {dict(h.labels)["dp_rank"] for h in queue_rows} == {"0", "1", "2", "3"}
    assert by_signal(scrape)["cache_hit_ratio"] == pytest.approx(52150 / (203723 + 52150))


def test_unknown_engine_keeps_everything_as_samples():
    normaliser = Normaliser("auto")
    scrape = normaliser.process("# TYPE my_counter counter\nmy_counter_total 3\nother 1\n", 0.0)
    assert scrape.engine == "unknown" and scrape.signals == []
    assert {(r.metric, r.type) for r in scrape.samples} == {
        ("my_counter_total", "counter"),
        ("other", "untyped"),
    }
    with pytest.raises(ValueError, match="unknown engine"):
        Normaliser("tgi")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(LINE_PIECES), max_size=12), st.booleans())
def test_normaliser_never_raises_on_garbage(pieces, openmetrics):
    normaliser = Normaliser()
    content_type = "application/openmetrics-text" if openmetrics else None
    tail = [] if "# EOF" in pieces else ["# TYPE good_tail gauge", "good_tail 2"]
    for ts_s, body in enumerate((pieces, list(reversed(pieces)))):
        lines = ["# TYPE good_head gauge", "good_head 7", *body, *tail]
        scrape = normaliser.process("\n".join(lines), float(ts_s), content_type)
        # line 0 = the exposition as a whole (only a missing OpenMetrics '# EOF')
        assert all(
            1 <= e.line_no <= len(lines) or (e.line_no == 0 and "EOF" in e.reason) for e in scrape.errors
        )
        kept = {r.metric: r.value for r in scrape.samples}
        assert kept["good_head"] == 7 and (not tail or kept["good_tail"] == 2)  # garbage loses no good family
        assert all(r.delta is None or r.delta >= 0 for r in scrape.samples)  # resets never go negative
        for h in scrape.histograms:
            assert list(h.bounds) == sorted(h.bounds) and h.bounds[-1] == math.inf
            assert all(0 <= a <= b for a, b in itertools.pairwise(h.counts)) and h.counts[0] >= 0


def test_negative_counter_is_rejected_with_its_line_and_never_gives_a_negative_delta():
    """Found by the invariant fuzz: a counter first seen after the baseline at -1 gave delta -1."""
    normaliser = Normaliser()
    normaliser.process("# TYPE g gauge\ng 1\n", 0.0)
    scrape = normaliser.process('# TYPE g gauge\ng 1\n# TYPE c counter\nc_total -1\nc_total{a="x"} 3\n', 1.0)
    assert [(r.metric, r.delta) for r in scrape.samples if r.type == "counter"] == [("c_total", 3.0)]
    assert [(e.line_no, "negative" in e.reason) for e in scrape.errors] == [(4, True)]


def test_histogram_with_falling_cumulative_buckets_is_rejected_with_its_line():
    """Found by the invariant fuzz (CI): le=1 at 3 above +Inf at 2 was stored as a histogram."""
    normaliser = Normaliser()
    text = '# TYPE g gauge\ng 1\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_bucket{le="1"} 3\n'
    for ts_s in (0.0, 1.0):
        scrape = normaliser.process(text, ts_s)
        assert scrape.histograms == []
        assert [(e.line_no, "cumulative" in e.reason) for e in scrape.errors] == [(4, True)]
        assert [r.metric for r in scrape.samples] == ["g"]


def test_histogram_increase_that_moves_observations_between_buckets_is_a_reset():
    """le=1 grows by 3 while +Inf stays: no real histogram does that; count it as a restart."""
    previous = HistogramState((1.0, math.inf), (0.0, 5.0), 1.0, 5.0)
    current = HistogramState((1.0, math.inf), (3.0, 5.0), 1.0, 5.0)
    increase, reset = histogram_increase(previous, current)
    assert reset and increase == current
