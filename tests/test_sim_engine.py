"""Behaviour of the simulated SGLang engine's queueing model, on a virtual clock."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from enginescope.simfleet.engine import EngineState, EngineUnavailable, SimEngine
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.metric_registry import LabelSet
from enginescope.simfleet.profile import DEFAULT, PROFILES, EngineProfile, ProfileError

FIXTURES = Path(__file__).parent / "fixtures" / "sim"
SCHED = LabelSet({"engine_type": "unified", "model_name": DEFAULT.model_name, "moe_ep_rank": "0",
                  "pp_rank": "0", "tp_rank": "0"})  # fmt: skip


def ready_engine(profile: EngineProfile = DEFAULT, seed: int = 0, **kwargs) -> SimEngine:
    engine = SimEngine(profile, seed=seed, **kwargs)
    engine.step(profile.startup_total_s)
    assert engine.ready
    return engine


def drive(engines: list[SimEngine], rate_per_engine: float, duration_s: float, seed: int = 1,
          prompt: int = 1000, output: int = 200) -> None:  # fmt: skip
    """Poisson arrivals at exact virtual times, then run until every request finished."""
    rng = random.Random(seed)
    for engine in engines:
        t, end = engine.now_s(), engine.now_s() + duration_s
        while True:
            t += rng.expovariate(rate_per_engine)
            if t >= end:
                break
            engine.advance_to(t)
            engine.submit(prompt, max_new_tokens=output, output_tokens=output, stream=rng.random() < 0.5)
        for _ in range(2000):
            if engine.drained:
                break
            engine.step(0.5)
        assert engine.drained


def median(gt: GroundTruth, field: str) -> float:
    return statistics.median(gt.values(field))


def test_ttft_grows_with_arrival_rate_past_capacity() -> None:
    low, high = GroundTruth(), GroundTruth()
    drive([ready_engine(groundtruth=low)], rate_per_engine=4, duration_s=15)
    drive([ready_engine(groundtruth=high)], rate_per_engine=40, duration_s=15)
    # below saturation: prefill of 1000 tokens at 25k tok/s plus a decode step -> tens of ms
    assert 0.03 < median(low, "ttft_s") < 0.15
    # past capacity the queue builds and dominates TTFT
    assert median(high, "ttft_s") > 10 * median(low, "ttft_s")
    assert median(high, "queue_time_s") > 1.0
    # ITL rises as the decode batch grows
    assert statistics.mean(v for v, _ in high.itl_samples()) > 1.5 * statistics.mean(
        v for v, _ in low.itl_samples()
    )


def test_two_replicas_at_half_rate_lower_ttft() -> None:
    one, two = GroundTruth(), GroundTruth()
    drive([ready_engine(groundtruth=one)], rate_per_engine=36, duration_s=15)
    drive([ready_engine(groundtruth=two, seed=s) for s in (1, 2)], rate_per_engine=18, duration_s=15)
    assert len(two.records) == pytest.approx(len(one.records), rel=0.15)
    assert median(two, "ttft_s") < 0.2 * median(one, "ttft_s")


def single_request_itl(accept_length: float, batch: int = 1) -> float:
    engine = ready_engine(seed=3)
    engine.set_spec_accept_length(accept_length)
    gt = GroundTruth()
    engine.groundtruth = gt
    for _ in range(batch):
        engine.submit(200, max_new_tokens=300, output_tokens=300, stream=True)
    while not engine.drained:
        engine.step(0.5)
    return sum(i for r in gt.records for i, _ in r["itl"]) / sum(n for r in gt.records for _, n in r["itl"])


def test_speculative_decoding_divides_itl_and_gain_shrinks_with_batch() -> None:
    base, spec = single_request_itl(1.0), single_request_itl(3.0)
    assert 0.006 < base < 0.008  # 158 tok/s at batch 1 on H100 (published, no speculation)
    assert 1.8 < base / spec < 3.0  # 3 tokens per verify step minus the draft/verify overhead
    big_base, big_spec = single_request_itl(1.0, batch=64), single_request_itl(3.0, batch=64)
    assert 1.1 < big_base / big_spec < base / spec


def test_kv_exhaustion_retracts_and_still_finishes_everything() -> None:
    profile = EngineProfile.from_mapping({"kv_capacity_tokens": 30000, "max_running_requests": 64})
    gt = GroundTruth()
    engine = ready_engine(profile, groundtruth=gt)
    peak = peak_gauge = 0
    gauge_labels = SCHED.with_extra(pid=str(engine.metrics.groups[0][0].pid))
    for _ in range(40):
        engine.submit(300, max_new_tokens=1500, output_tokens=1500, stream=True)
    while not engine.drained:
        engine.step(0.05)
        peak = max(peak, engine.ranks[0].kv_used + engine.ranks[0].kv_evictable)
        peak_gauge = max(peak_gauge, engine.registry.value("sglang:num_retracted_reqs", gauge_labels))
    # the gauge holds the retractions since the previous stats report, so it falls back to 0
    assert peak_gauge > 0 and engine.registry.value("sglang:num_retracted_reqs", gauge_labels) == 0
    retracted = engine.registry.value("sglang:num_retracted_requests_total", SCHED)
    assert retracted and retracted > 0
    assert sum(r["retractions"] for r in gt.records) == retracted
    assert peak <= profile.kv_capacity_tokens
    assert len(gt.records) == 40 and all(r["completion_tokens"] == 1500 for r in gt.records)
    # re-queue waits are added to the per-request total, not to the first queue-time sample
    retried = [r for r in gt.records if r["retractions"]]
    assert all(r["queue_time_total_s"] > r["queue_time_s"] for r in retried)


def test_cold_start_then_ready_with_startup_metrics() -> None:
    engine = SimEngine(DEFAULT)
    engine.step(DEFAULT.startup_total_s - 1.0)
    assert engine.state is EngineState.STARTING
    with pytest.raises(EngineUnavailable) as info:
        engine.submit(100, max_new_tokens=10)
    assert info.value.status == 503
    engine.step(1.0)
    assert engine.ready
    tok = LabelSet({"engine_type": "unified", "model_name": DEFAULT.model_name, "phase": "load_weight"})
    assert engine.registry.value("sglang:startup_time_seconds", tok) == DEFAULT.weight_load_s
    assert engine.registry.value("sglang:max_total_num_tokens", SCHED) == DEFAULT.kv_capacity_tokens
    assert engine.gpu_memory_used_bytes() > (DEFAULT.weight_memory_gb + 50) * 2**30


def test_crash_drops_requests_and_restart_resets_counters() -> None:
    engine = ready_engine()
    events = []
    drive([engine], rate_per_engine=5, duration_s=5)
    assert engine.registry.value("sglang:realtime_tokens_total", SCHED.with_extra(mode="decode")) > 0
    old_pid = engine.pid
    engine.submit(100, max_new_tokens=500, output_tokens=500, sink=events.append)
    engine.step(0.2)
    engine.crash()
    assert events[-1].finished and events[-1].error_status is None
    with pytest.raises(EngineUnavailable) as info:
        engine.submit(100, max_new_tokens=10)
    assert info.value.status is None and engine.gpu_memory_used_bytes() == 0
    engine.restart()
    assert engine.state is EngineState.STARTING and engine.pid != old_pid
    engine.step(DEFAULT.startup_total_s)
    assert engine.ready
    assert engine.registry.value("sglang:realtime_tokens_total", SCHED.with_extra(mode="decode")) is None
    assert engine.registry.value("sglang:scheduler_process_cpu_seconds_total", SCHED) < 10


def test_speed_factor_slows_decode() -> None:
    fast = single_request_itl(1.0)
    engine = ready_engine(seed=3)
    engine.set_speed_factor(0.6)
    gt = GroundTruth()
    engine.groundtruth = gt
    engine.submit(200, max_new_tokens=300, output_tokens=300, stream=True)
    while not engine.drained:
        engine.step(0.5)
    slow = statistics.mean(v for v, _ in gt.itl_samples())
    assert slow == pytest.approx(fast / 0.6, rel=0.05)
    with pytest.raises(ProfileError):
        engine.set_speed_factor(0.0)


def test_histograms_match_ground_truth_exactly() -> None:
    gt = GroundTruth()
    engine = ready_engine(groundtruth=gt)
    drive([engine], rate_per_engine=8, duration_s=20)
    reg, tok = engine.registry, LabelSet({"engine_type": "unified", "model_name": DEFAULT.model_name})
    ttft = [
        reg.histogram("sglang:time_to_first_token_seconds", tok.with_extra(is_streaming=s))
        for s in ("true", "false")
    ]
    assert sum(h.count for h in ttft) == len(gt.values("ttft_s"))
    assert sum(h.sum for h in ttft) == pytest.approx(sum(gt.values("ttft_s")))
    itl = reg.histogram("sglang:inter_token_latency_seconds", tok)
    assert itl.count == sum(n for r in gt.records for _, n in r["itl"])
    assert itl.sum == pytest.approx(sum(i for r in gt.records for i, _ in r["itl"]))
    queue = reg.histogram("sglang:queue_time_seconds", SCHED)
    assert queue.sum == pytest.approx(sum(gt.values("queue_time_s")))
    # the engine's own gen_throughput is near the decode rate at this load
    assert engine.registry.value("sglang:num_running_reqs", SCHED) is not None


def test_kv_pool_gauges_add_up_and_new_token_ratio_decays() -> None:
    engine = ready_engine()
    for _ in range(20):
        engine.submit(2000, max_new_tokens=400, output_tokens=400)
    engine.step(3.0)
    value = lambda name: engine.registry.value(f"sglang:{name}", SCHED)  # noqa: E731
    total = value("kv_available_tokens") + value("kv_evictable_tokens") + value("kv_used_tokens")
    assert total == DEFAULT.kv_capacity_tokens
    assert value("num_running_reqs") == 20 and value("token_usage") == round(value("full_token_usage"), 2)
    assert DEFAULT.new_token_ratio_min <= value("new_token_ratio") < DEFAULT.new_token_ratio_init
    assert 0.5 < engine.gpu_busy_fraction() <= 1.0 and engine.tokens_per_s() > 1000


def test_request_export_matches_fixture_layout_and_ground_truth(tmp_path: Path) -> None:
    fixture = [
        json.loads(line) for line in (FIXTURES / "request-metrics-example.jsonl").read_text().splitlines()
    ]
    profile = EngineProfile.from_mapping({"profile": "llama-8b-h100", "spec_accept_length": 2.5,
                                          "request_waiting_timeout_s": 2.0, "max_running_requests": 4})  # fmt: skip
    gt = GroundTruth()
    engine = ready_engine(profile, export_dir=tmp_path, groundtruth=gt)
    engine.submit(400, max_new_tokens=300, output_tokens=90, stream=False)
    engine.submit(60, max_new_tokens=512, output_tokens=121, stream=True)
    for _ in range(8):
        engine.submit(500, max_new_tokens=3000, output_tokens=3000)
    while not engine.drained:
        engine.step(0.5)
    engine.close()
    files = list(tmp_path.glob("sglang-request-metrics-*.log"))
    assert len(files) == 1 and files[0].name[len("sglang-request-metrics-") :][8] == "_"
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    truth = {r["rid"]: r for r in gt.records}
    shapes = {"stream": records[[r.get("spec_verify_ct") is not None and "stop" == r["finish_reason"]["type"]
                                 and json.loads(r["request_parameters"])["stream"] for r in records].index(True)],
              "abort": next(r for r in records if r["finish_reason"]["type"] == "abort")}  # fmt: skip
    assert list(shapes["stream"]) == list(fixture[1])
    assert list(shapes["abort"]) == list(fixture[2])
    assert shapes["abort"]["finish_reason"] == fixture[2]["finish_reason"]
    params = json.loads(shapes["stream"]["request_parameters"])
    assert list(params) == list(json.loads(fixture[1]["request_parameters"]))
    assert list(params["sampling_params"]) == list(
        json.loads(fixture[1]["request_parameters"])["sampling_params"]
    )
    for key, value in fixture[1].items():
        if value is not None:  # cached_tokens_details is null only without a cache hit
            assert type(shapes["stream"][key]) is type(value), key
    for rid, record in by_id.items():
        exact = truth[rid]
        assert record["e2e_latency"] == pytest.approx(exact["e2e_s"] or record["e2e_latency"])
        if "first_token_latency" in record:
            assert record["first_token_latency"] == pytest.approx(exact["ttft_s"])
            assert 1 / record["decode_throughput"] == pytest.approx(exact["tpot_s"])
            assert len(json.loads(record["request_parameters"])["input_ids"]) == record["prompt_tokens"]
    spec = shapes["stream"]
    assert spec["spec_num_correct_drafts"] + spec["spec_verify_ct"] == spec["completion_tokens"] - 1
    assert sum(spec["spec_correct_drafts_histogram"]) == spec["spec_verify_ct"]


def test_profile_mapping_round_trip_and_errors() -> None:
    for name, profile in PROFILES.items():
        assert EngineProfile.from_mapping(profile.to_mapping()) == profile, name
    custom = EngineProfile.from_mapping({"profile": "llama-70b-4xh100", "weight_load_s": 3})
    assert custom.tp_size == 4 and custom.weight_load_s == 3.0
    with pytest.raises(ProfileError, match="unknown simulation key.*kv_capacity"):
        EngineProfile.from_mapping({"kv_capacity": 10})
    with pytest.raises(ProfileError, match="recipe.toml.*unknown profile 'nope'"):
        EngineProfile.from_mapping({"profile": "nope"}, source="recipe.toml [simulation]")
    with pytest.raises(ProfileError, match="spec_accept_length must be within 1..4"):
        EngineProfile.from_mapping({"spec_accept_length": 5.0})
    with pytest.raises(ProfileError, match="max_running_requests must be an integer"):
        EngineProfile.from_mapping({"max_running_requests": 2.5})


def test_gpu_intensity_grows_with_decode_batch() -> None:
    engine = ready_engine(seed=5)
    engine.submit(200, max_new_tokens=400, output_tokens=400, stream=True)
    engine.step(1.0)
    one = engine.gpu_intensity()
    for _ in range(63):
        engine.submit(200, max_new_tokens=400, output_tokens=400, stream=True)
    engine.step(1.0)
    many = engine.gpu_intensity()
    assert 0.55 <= one < 0.7
    assert many > 0.9 and many <= 1.0


def gauge(engine: SimEngine, name: str) -> float:
    value = engine.registry.value(f"sglang:{name}", SCHED)
    assert value is not None
    return value


def test_gauges_stay_at_the_last_report_until_the_30s_idle_republish() -> None:
    engine = ready_engine()
    for _ in range(8):
        engine.submit(500, max_new_tokens=300, output_tokens=300)
    while not engine.drained:
        engine.step(0.5)
    busy_throughput = gauge(engine, "gen_throughput")
    # a scrape after the load ended still sees the last decode report
    assert gauge(engine, "num_running_reqs") == 8 and busy_throughput > 1000
    engine.step(31.0)
    assert gauge(engine, "num_running_reqs") == 0 and gauge(engine, "gen_throughput") == 0
    # the next decode report divides by the time since the previous one, idle time included
    for _ in range(8):
        engine.submit(500, max_new_tokens=300, output_tokens=300)
    engine.step(0.5)
    assert 0 < gauge(engine, "gen_throughput") < 0.1 * busy_throughput


def test_prefill_reports_cover_chunks_and_decode_reports_zero_the_hit_rate() -> None:
    engine = ready_engine()
    engine.set_prefix_cache_hit_ratio(0.0)
    engine.submit(20000, max_new_tokens=100, output_tokens=100)
    engine.step(0.8)  # two 8192-token chunks of ~0.33 s each, no new admission in the second
    compute = SCHED.with_extra(mode="prefill_compute")
    assert engine.registry.value("sglang:realtime_tokens_total", compute) == 2 * 8192
    engine.step(2.0)
    engine.set_prefix_cache_hit_ratio(0.5)
    req = engine.submit(2000, max_new_tokens=400, output_tokens=400)
    engine.step(0.1)  # one prefill of the uncached part, then a few decode steps
    assert req.cached_tokens > 0
    assert gauge(engine, "cache_hit_rate") == pytest.approx(req.cached_tokens / req.prompt_tokens)
    engine.step(0.5)  # > 40 decode iterations: the decode report writes 0
    assert gauge(engine, "cache_hit_rate") == 0.0 and gauge(engine, "gen_throughput") > 0


def test_spec_gauges_come_from_decode_reports_only() -> None:
    engine = ready_engine(PROFILES["llama-8b-h100"], seed=5)
    engine.set_spec_accept_length(3.0)
    for _ in range(4):
        engine.submit(500, max_new_tokens=400, output_tokens=400)
    while not engine.drained:
        engine.step(0.5)
    length, rate = gauge(engine, "spec_accept_length"), gauge(engine, "spec_accept_rate")
    assert 2.0 < length < 3.5 and rate == pytest.approx((length - 1) / 3)
    engine.step(2.0)
    engine.submit(500, max_new_tokens=400, output_tokens=400)
    engine.step(0.05)  # a prefill report with no verify step since the last decode report
    assert gauge(engine, "spec_accept_length") == length and gauge(engine, "spec_num_draft_tokens") == 4
