"""Engine catalogues: detection, name folding, aggregation across ranks, spec-decode ratios."""

from __future__ import annotations

import pytest

from enginescope.collectors.catalog import SGLANG, VLLM, canonical_family, catalog_for, detect_engine, sum_dp


def labels(**pairs):
    return tuple(sorted(pairs.items()))


def test_detect_engine():
    assert detect_engine(["sglang:num_queue_reqs", "sglang_x", "process_cpu_seconds"]) == "sglang"
    assert detect_engine(["vllm:num_requests_running", "python_info"]) == "vllm"
    assert detect_engine(["python_info", "http_requests"]) == "unknown"
    assert catalog_for("unknown").rules == ()


def test_prefix_folding():
    assert canonical_family("sglang_num_queue_reqs") == "sglang:num_queue_reqs"
    assert canonical_family("vllm_kv_cache_usage_perc") == "vllm:kv_cache_usage_perc"
    assert canonical_family("sglang:x") == "sglang:x" and canonical_family("other_x") == "other_x"


def test_sum_over_dp_ranks_max_over_mirroring_tp_ranks():
    series = [
        (labels(dp_rank="0", tp_rank="0"), 3.0),
        (labels(dp_rank="0", tp_rank="1"), 0.0),  # only attn_tp_rank 0 updates
        (labels(dp_rank="1", tp_rank="0"), 4.0),
        (labels(dp_rank="1", tp_rank="1"), 4.0),  # --enable-metrics-for-all-schedulers mirrors
    ]
    assert sum_dp(series) == 7.0


def gauges_of(**families):
    return {f"sglang:{name}": series for name, series in families.items()}


def test_priority_total_only_and_aggregations():
    gauges = gauges_of(
        num_queue_reqs=[
            (labels(dp_rank="0", priority=""), 5.0),
            (labels(dp_rank="0", priority="1"), 2.0),
            (labels(dp_rank="0", priority="3"), 3.0),
            (labels(dp_rank="1", priority=""), 1.0),
        ],
        token_usage=[(labels(dp_rank="0"), 0.2), (labels(dp_rank="1"), 0.7)],
        spec_accept_length=[
            (labels(dp_rank="0"), 0.0),
            (labels(dp_rank="1"), 2.5),
            (labels(dp_rank="2"), 3.5),
        ],
        spec_accept_rate=[(labels(dp_rank="0"), 0.0)],
        startup_time_seconds=[(labels(phase="load_weight"), 4.0), (labels(phase="tokenizer_e2e"), 40.0)],
        cache_hit_rate=[(labels(dp_rank="0"), 0.2), (labels(dp_rank="1"), 0.4)],
    )
    signals = dict(SGLANG.signals(set(gauges), gauges, {}))
    assert signals == {
        "queue_depth": 6.0,
        "kv_usage_ratio": 0.7,
        "spec_accept_length": 3.0,  # ranks reading 0 have no verify steps
        "startup_seconds": 40.0,
        "weight_load_seconds": 4.0,  # fallback: no weight_load_duration_seconds family
        "cache_hit_ratio": pytest.approx(0.3),  # gauge fallback without the token counters
    }


def test_sglang_windowed_cache_hit_ratio_from_counters():
    present = {"sglang:prefill_effective_tokens", "sglang:cache_hit_rate"}
    increases = {
        "sglang:prefill_effective_tokens": [
            (labels(mode="input"), 600.0),
            (labels(mode="device_hit"), 300.0),
            (labels(mode="host_hit"), 100.0),
        ]
    }
    gauges = {"sglang:cache_hit_rate": [((), 0.9)]}
    assert dict(SGLANG.signals(present, gauges, increases)) == {"cache_hit_ratio": 0.4}
    assert SGLANG.signals(present, gauges, {}) == []  # baseline: no gauge fallback, no mixed semantics


def test_vllm_spec_decode_and_request_outcomes():
    increases = {
        "vllm:spec_decode_num_drafts": [(labels(engine="0"), 10.0), (labels(engine="1"), 10.0)],
        "vllm:spec_decode_num_draft_tokens": [(labels(engine="0"), 30.0), (labels(engine="1"), 30.0)],
        "vllm:spec_decode_num_accepted_tokens": [(labels(engine="0"), 20.0), (labels(engine="1"), 16.0)],
        "vllm:request_success": [
            (labels(finished_reason="stop"), 8.0),
            (labels(finished_reason="length"), 2.0),
            (labels(finished_reason="abort"), 1.0),
        ],
    }
    signals = dict(VLLM.signals(set(increases), {}, increases))
    assert signals["spec_accept_rate"] == pytest.approx(36 / 60)
    assert signals["spec_accept_length"] == pytest.approx(1 + 36 / 20)
    assert signals["requests_finished"] == 10.0 and signals["requests_aborted"] == 1.0
    idle = {name: [(lab, 0.0) for lab, _ in series] for name, series in increases.items()}
    assert "spec_accept_rate" not in dict(VLLM.signals(set(idle), {}, idle))  # no drafts: no ratio


def test_renamed_histograms_map_to_signals():
    assert SGLANG.histograms["sglang:time_per_output_token_seconds"] == "tpot_seconds"
    assert SGLANG.histograms["sglang:request_time_per_output_token_seconds"] == "tpot_seconds"
    assert VLLM.histograms["vllm:request_queue_time_seconds"] == "queue_time_seconds"
