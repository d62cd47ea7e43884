"""Batch -> OTLP data, checked on the encoded protobuf (what a receiver would decode)."""

from __future__ import annotations

import dataclasses
import math

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

from enginescope.collectors.model import Batch, EventKind, EventRow, GpuRow, SampleRow, SignalRow
from enginescope.exporters.otlp.config import NameStyle, OtlpConfig, Temporality
from enginescope.exporters.otlp.mapping import OtlpMapper
from tests.otlp_data import IDENTITY, INTERVAL_S, T0_S, batches, per_bucket, ttft_row
from tests.otlp_receivers import flatten

CUMULATIVE, DELTA = 2, 1


def run(batch_list, **config):
    mapper = OtlpMapper(OtlpConfig(endpoint="http://x:4318/v1/metrics", **config), IDENTITY)
    out = []
    for batch in batch_list:
        data = mapper.convert(batch)
        out.append(flatten([encode_metrics(data)]) if data else [])
    return out


def named(points, name):
    return [p for p in points if p.name == name]


def test_cumulative_histogram_accumulates_engine_buckets_since_series_start():
    fed = batches(6)
    results = run(fed)
    running = [0] * (len(fed[0].histograms[0].bounds))
    for batch, points in zip(fed, results, strict=True):
        row = batch.histograms[0]
        running = [a + b for a, b in zip(running, per_bucket(row.counts), strict=True)]
        (point,) = named(points, "gen_ai.server.time_to_first_token")
        assert point.kind == "histogram" and point.temporality == CUMULATIVE and point.unit == "s"
        assert point.explicit_bounds == row.bounds[:-1]  # the engine's own bounds, +Inf implied
        assert list(point.bucket_counts) == running
        assert point.count == sum(running)
        assert point.start_ns == int((T0_S) * 1e9)  # first interval's start, unchanged
        assert point.time_ns == int(row.ts_s * 1e9)
    total_sum = sum(b.histograms[0].sum for b in fed)
    assert math.isclose(point.sum, total_sum)


def test_delta_histogram_is_each_interval():
    fed = batches(4)
    for batch, points in zip(fed, run(fed, temporality=Temporality.DELTA), strict=True):
        row = batch.histograms[0]
        (point,) = named(points, "gen_ai.server.time_to_first_token")
        assert point.temporality == DELTA
        assert list(point.bucket_counts) == per_bucket(row.counts)
        assert point.start_ns == int((row.ts_s - INTERVAL_S) * 1e9) and point.sum == row.sum


def test_counter_signals_cumulative_and_delta():
    fed = batches(5)
    cumulative, delta = run(fed), run(fed, temporality=Temporality.DELTA)
    total = 0.0
    for batch, cum_points, delta_points in zip(fed, cumulative, delta, strict=True):
        increase = next(s.value for s in batch.signals if s.signal == "generation_tokens")
        total += increase
        (c,) = [
            p
            for p in named(cum_points, "enginescope.tokens")
            if p.attributes["gen_ai.token.type"] == "output"
        ]
        (d,) = [
            p
            for p in named(delta_points, "enginescope.tokens")
            if p.attributes["gen_ai.token.type"] == "output"
        ]
        assert c.monotonic and c.temporality == CUMULATIVE and c.value == total and c.unit == "{token}"
        assert d.temporality == DELTA and d.value == increase
        (queue,) = named(cum_points, "enginescope.queue.depth")
        assert queue.kind == "gauge" and queue.value == next(
            s.value for s in batch.signals if s.signal == "queue_depth"
        )
    # per-replica GPU aggregates are not duplicated next to the per-device hw.* series
    assert not [p for p in cumulative[0] if "gpu_power" in p.name]


def _counter_batch(ts_s, value, delta):
    return Batch(
        IDENTITY,
        samples=[SampleRow(ts_s, "sglang:prompt_tokens_total", "counter", (), value, delta, INTERVAL_S)],
    )


def test_counter_reset_starts_new_series_and_delta_never_negative():
    ts = [T0_S + i * INTERVAL_S for i in range(5)]
    # raw 10 (baseline), 15, reset to 3, 8, 20; the pipeline's reset-aware deltas: 5, 3, 5, 12
    fed = [_counter_batch(ts[0], 10, None), _counter_batch(ts[1], 15, 5), _counter_batch(ts[2], 3, 3),
           _counter_batch(ts[3], 8, 5), _counter_batch(ts[4], 20, 12)]  # fmt: skip
    cumulative = [named(p, "sglang:prompt_tokens_total") for p in run(fed, names=NameStyle.NATIVE)]
    assert cumulative[0][0].value == 0  # baseline: the series exists, nothing counted yet
    values = [p[0].value for p in cumulative[1:]]
    starts = [p[0].start_ns for p in cumulative[1:]]
    assert values == [5, 3, 8, 20]
    assert starts[0] == int(ts[0] * 1e9)
    assert starts[1] > cumulative[1][0].time_ns  # new series begins after the last point of the old one
    assert starts[1] == starts[2] == starts[3]
    delta = [p for points in run(fed, names=NameStyle.NATIVE, temporality=Temporality.DELTA) for p in points]
    assert [p.value for p in delta] == [0, 5, 3, 5, 12]
    assert all(p.value >= 0 and p.temporality == DELTA for p in delta)


def test_engine_restart_event_restarts_cumulative_series():
    fed = batches(4)
    fed[2].events.append(EventRow(fed[2].histograms[0].ts_s - 1, EventKind.ENGINE_RESTART, "pid changed"))
    results = run(fed)
    hist = [named(p, "gen_ai.server.time_to_first_token")[0] for p in results]
    assert hist[2].start_ns > hist[1].time_ns
    assert list(hist[2].bucket_counts) == per_bucket(fed[2].histograms[0].counts)
    restarts = [
        [p.value for p in named(points, "enginescope.events")
         if p.attributes["enginescope.event.kind"] == "engine_restart"]
        for points in results[2:]
    ]  # fmt: skip
    assert restarts == [[0], [1]]  # a new event series: 0 first (see the zero-first test)


def test_changed_bounds_start_a_new_histogram_series():
    import random

    rng = random.Random(1)
    ts1, ts2 = T0_S + 5, T0_S + 10
    first = Batch(IDENTITY, histograms=[ttft_row(rng, ts1)])
    second = Batch(IDENTITY, histograms=[ttft_row(rng, ts2, bounds=(0.1, 1.0, math.inf))])
    p1, p2 = (named(p, "gen_ai.server.time_to_first_token")[0] for p in run([first, second]))
    assert p2.explicit_bounds == (0.1, 1.0) and p2.start_ns > p1.time_ns
    assert list(p2.bucket_counts) == per_bucket(second.histograms[0].counts)


def test_semconv_names_units_attributes_and_resource():
    (points,) = run(batches(1))
    ttft = named(points, "gen_ai.server.time_to_first_token")[0]
    assert ttft.attributes["gen_ai.operation.name"] == "chat"
    assert ttft.attributes["gen_ai.provider.name"] == "sglang"
    assert ttft.attributes["gen_ai.request.model"] == IDENTITY.model
    resource = ttft.resource
    assert resource["service.instance.id"] == IDENTITY.replica  # stable across restarts
    assert resource["service.name"] == "llm-serve"
    assert resource["cloud.provider"] == "aws" and resource["cloud.region"] == "us-east-1"
    assert resource["host.name"] == "host-7" and resource["enginescope.gpu.type"] == "H100"
    assert all(p.resource == resource for p in points)  # engine and GPU share one Resource
    gpu = {p.name: p for p in points if p.name.startswith("hw.")}
    assert gpu["hw.gpu.utilization"].value == 0.5 and gpu["hw.gpu.utilization"].unit == "1"
    assert gpu["hw.gpu.utilization"].attributes["hw.id"] == "GPU-aaaa"
    assert gpu["hw.gpu.memory.usage"].kind == "sum" and not gpu["hw.gpu.memory.usage"].monotonic
    assert gpu["hw.gpu.memory.usage"].unit == "By" and gpu["hw.gpu.memory.usage"].value == 70e9
    assert gpu["hw.power"].unit == "W" and gpu["hw.power"].attributes["hw.type"] == "gpu"
    assert gpu["hw.temperature"].unit == "Cel" and gpu["hw.temperature"].attributes["hw.parent"] == "GPU-aaaa"
    assert gpu["hw.energy"].value == 0  # first energy reading is a baseline


def test_service_name_and_resource_attributes_from_config():
    (points,) = run(
        batches(1), service_name="svc", resource_attributes=(("deployment.environment.name", "prod"),)
    )
    assert points[0].resource["service.name"] == "svc"
    assert points[0].resource["deployment.environment.name"] == "prod"


def test_gpu_energy_counter_and_clock_event_reasons():
    fed = batches(3)
    delta = run(fed, temporality=Temporality.DELTA)
    energy = [p for points in delta for p in named(points, "hw.energy")]
    assert [p.value for p in energy] == [0.0, 1500.0, 1500.0] and energy[0].unit == "J"
    reasons = {p.attributes["enginescope.gpu.clock_event.reason"]: p.value
               for p in named(delta[1], "enginescope.gpu.clock_event.active")}  # fmt: skip
    assert reasons["sw_power_cap"] == 1.0 and reasons["hw_thermal"] == 0.0
    # a GPU energy counter that goes backwards (driver reload) never yields a negative delta
    reset = dataclasses.replace(fed[2], gpu=[GpuRow(fed[2].gpu[0].ts_s + 5, "GPU-aaaa", {"energy_j": 10.0})])
    last = run([*fed, reset], temporality=Temporality.DELTA)[-1]
    assert named(last, "hw.energy")[0].value == 10.0


def test_lowmemory_keeps_counters_cumulative_and_histograms_delta():
    (points,) = run(batches(1), temporality=Temporality.LOWMEMORY)
    assert named(points, "gen_ai.server.time_to_first_token")[0].temporality == DELTA
    assert named(points, "enginescope.tokens")[0].temporality == CUMULATIVE


def test_native_names_keep_engine_metric_names():
    fed = batches(1)
    fed[0].samples.append(SampleRow(fed[0].histograms[0].ts_s, "sglang:num_queue_reqs", "gauge", (), 4.0))
    (points,) = run(fed, names=NameStyle.NATIVE)
    names = {p.name for p in points}
    assert "sglang:time_to_first_token_seconds" in names and "sglang:num_queue_reqs" in names
    assert "gen_ai.server.time_to_first_token" not in names and "enginescope.queue.depth" not in names


def test_resource_follows_the_identity_learned_after_the_first_scrape():
    early = dataclasses.replace(IDENTITY, engine="unknown", model="")
    first, second = batches(2)
    first.identity = early
    p1, p2 = run([first, second])
    assert "enginescope.model" not in p1[0].resource
    assert p2[0].resource["enginescope.model"] == IDENTITY.model
    assert named(p2, "gen_ai.server.time_to_first_token")[0].attributes["gen_ai.provider.name"] == "sglang"


# -- semantic conventions (issue 11) --------------------------------------------------------


def _gpu_batch(ts_s: float, **fields) -> Batch:
    base = {"gpu_index": 0, "gpu_name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15",
            "fb_used_bytes": 60e9, "fb_total_bytes": 80e9, "memory_utilization_pct": 35.0}  # fmt: skip
    return Batch(IDENTITY, gpu=[GpuRow(ts_s, "GPU-aaaa", {**base, **fields})])


def test_every_hw_gpu_series_has_the_required_and_recommended_attributes():
    (points,) = run([_gpu_batch(T0_S, gpu_utilization_pct=50.0, enc_utilization_pct=0.0)])
    gpu = [p for p in points if p.name.startswith(("hw.gpu.", "hw.errors", "hw.status", "enginescope.gpu."))]
    assert gpu
    for p in gpu:
        assert p.attributes["hw.type"] == "gpu" and p.attributes["hw.id"] == "GPU-aaaa", p
        assert p.attributes["hw.model"] == "NVIDIA H100 80GB HBM3" and p.attributes["hw.vendor"] == "NVIDIA"
        assert p.attributes["hw.driver_version"] == "570.86.15" and p.attributes["hw.name"] == "gpu0"
    tasks = {p.attributes["hw.gpu.task"] for p in named(points, "hw.gpu.utilization")}
    assert tasks == {"general", "encoder"}


def test_memory_utilization_is_the_fraction_of_memory_used_not_controller_busy_time():
    (points,) = run([_gpu_batch(T0_S)])
    (used,) = named(points, "hw.gpu.memory.utilization")
    assert used.value == 0.75 and used.unit == "1"  # 60 GB of 80 GB, not NVML's 35 % busy
    (busy,) = named(points, "enginescope.gpu.memory_controller.utilization")
    assert math.isclose(busy.value, 0.35)


def test_gpu_io_errors_and_status():
    fed = [
        _gpu_batch(T0_S, pcie_tx_bytes_per_s=1e9, pcie_rx_bytes_per_s=2e9, ecc_sbe_volatile=3, pcie_replay_count=0,
                   clock_event_reasons=0),
        _gpu_batch(T0_S + 2, pcie_tx_bytes_per_s=1e9, pcie_rx_bytes_per_s=2e9, ecc_sbe_volatile=5, pcie_replay_count=1,
                   clock_event_reasons=0x40),
    ]  # fmt: skip
    _, last = run(fed)
    io = {p.attributes["network.io.direction"]: p for p in named(last, "hw.gpu.io")}
    assert io["transmit"].value == 2e9 and io["receive"].value == 4e9 and io["transmit"].unit == "By"
    assert io["transmit"].kind == "sum" and io["transmit"].monotonic
    errors = {p.attributes["error.type"]: p.value for p in named(last, "hw.errors")}
    assert errors == {"ecc_corrected": 2.0, "pcie_replay": 1.0}  # since the first reading
    status = {p.attributes["hw.state"]: p.value for p in named(last, "hw.status")}
    assert status == {"ok": 0.0, "degraded": 1.0}  # hardware thermal slowdown
    assert all(p.kind == "sum" and not p.monotonic for p in named(last, "hw.status"))


def test_gpu_extras_have_units_and_no_units_in_names():
    (points,) = run(
        [_gpu_batch(T0_S, sm_clock_mhz=1980, power_limit_w=700.0, fan_pct=40.0, mem_clock_max_mhz=2619)]
    )
    extras = {p.name: p for p in points if p.name.startswith("enginescope.gpu.")}
    assert (
        extras["enginescope.gpu.clock.sm"].unit == "MHz" and extras["enginescope.gpu.power.limit"].unit == "W"
    )
    assert (
        extras["enginescope.gpu.fan.speed"].value == 0.4 and extras["enginescope.gpu.fan.speed"].unit == "1"
    )
    for p in extras.values():
        assert p.unit, p.name
        assert not any(p.name.endswith(s) for s in ("_mhz", "_w", "_pct", "_c", "_bytes", ".mhz", ".pct")), (
            p.name
        )


def test_operation_name_comes_from_the_endpoint_label_and_engine_labels_are_prefixed():
    import random

    rng = random.Random(2)
    row = ttft_row(rng, T0_S + 5)
    chat = dataclasses.replace(
        row, labels=(("endpoint", "/v1/chat/completions"), ("model_name", "m1"), ("tp_rank", "0"))
    )
    text = dataclasses.replace(
        row, labels=(("endpoint", "/v1/completions"), ("model_name", "m1"), ("tp_rank", "0"))
    )
    (points,) = run([Batch(IDENTITY, histograms=[chat, text])])
    ops = {p.attributes["gen_ai.operation.name"] for p in named(points, "gen_ai.server.time_to_first_token")}
    assert ops == {"chat", "text_completion"}
    for p in named(points, "gen_ai.server.time_to_first_token"):
        assert p.attributes["gen_ai.request.model"] == "m1" and p.attributes["sglang.tp_rank"] == "0"
        assert "model_name" not in p.attributes and "tp_rank" not in p.attributes
        assert "endpoint" not in p.attributes


def test_descriptions_come_from_the_registry_and_a_schema_url_is_set():
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from enginescope.collectors.signals import SIGNALS

    mapper = OtlpMapper(OtlpConfig(endpoint="http://x:4318/v1/metrics", series_ttl_s=1e9), IDENTITY)
    request = encode_metrics(mapper.convert(batches(1)[0]))
    rm = request.resource_metrics[0]
    assert rm.schema_url == rm.scope_metrics[0].schema_url == "https://opentelemetry.io/schemas/1.41.0"
    descriptions = {m.name: m.description for m in rm.scope_metrics[0].metrics}
    assert descriptions["gen_ai.server.time_to_first_token"] == SIGNALS["ttft_seconds"].description
    assert descriptions["enginescope.queue.depth"] == SIGNALS["queue_depth"].description
    assert all(descriptions.values()), descriptions


def test_otel_names_cover_every_registry_signal_and_skip_gpu_aggregates_by_scope():
    from enginescope.collectors.signals import SIGNALS, Scope
    from enginescope.exporters.otlp import names as N

    assert set(N.SIGNAL_NAMES) == set(SIGNALS)
    for name, sig in SIGNALS.items():
        meta = N.SIGNAL_NAMES[name]
        assert (meta is None) == (sig.scope is Scope.GPU), name
        if meta is not None:
            assert meta.unit == sig.unit and meta.description == sig.description
            assert meta.kind.value == sig.kind.value, name


# -- series lifetime (issue 11) ---------------------------------------------------------------


def _mapper(**config) -> OtlpMapper:
    return OtlpMapper(OtlpConfig(endpoint="http://x:4318/v1/metrics", **config), IDENTITY)


def _queue(ts_s: float, labels=()) -> SignalRow:
    return SignalRow(ts_s, "queue_depth", 3.0, INTERVAL_S, labels)


def test_a_series_not_seen_for_the_ttl_leaves_the_export():
    mapper = _mapper(series_ttl_s=30.0)
    mapper.update(Batch(IDENTITY, signals=[_queue(T0_S, (("pid", "1"),)), _queue(T0_S, (("pid", "2"),))]))
    mapper.update(Batch(IDENTITY, signals=[_queue(T0_S + 20, (("pid", "1"),))]))
    early = flatten([encode_metrics(mapper.collect(T0_S + 25))])
    assert len(named(early, "enginescope.queue.depth")) == 2
    late = flatten([encode_metrics(mapper.collect(T0_S + 40))])
    (left,) = named(late, "enginescope.queue.depth")
    assert left.attributes["enginescope.pid"] == "1" and mapper.expired_series == 1


def test_every_engine_series_leaves_while_the_engine_is_down_gpu_series_stay():
    mapper = _mapper(series_ttl_s=1e9)
    first = batches(1)[0]
    mapper.update(first)
    down = Batch(IDENTITY, events=[EventRow(T0_S + 6, EventKind.ENGINE_DOWN, "refused")],
                 signals=[SignalRow(T0_S + 6, "engine_up", 0.0, 1.0)],
                 gpu=[GpuRow(T0_S + 6, "GPU-aaaa", {"power_w": 100.0})])  # fmt: skip
    mapper.update(down)
    points = flatten([encode_metrics(mapper.collect(T0_S + 7))])
    names = {p.name for p in points}
    assert "gen_ai.server.time_to_first_token" not in names and "enginescope.queue.depth" not in names
    assert "enginescope.tokens" not in names
    assert named(points, "enginescope.engine.up")[0].value == 0.0 and "hw.power" in names


def test_a_model_learned_after_the_first_scrape_leaves_no_frozen_series():
    early = dataclasses.replace(IDENTITY, model="")
    mapper = _mapper(series_ttl_s=1e9)
    first, second = batches(2)
    first.identity = early
    for row in (*first.histograms, *second.histograms):
        row.labels = ()  # an engine without a model_name label
    mapper.update(first)
    mapper.update(second)
    points = flatten([encode_metrics(mapper.collect(T0_S + 11))])
    (ttft,) = named(points, "gen_ai.server.time_to_first_token")  # one series, not a frozen model="" copy
    assert ttft.attributes["gen_ai.request.model"] == IDENTITY.model
    assert ttft.count == first.histograms[0].count + second.histograms[0].count


def test_series_beyond_the_cap_fold_into_one_overflow_series():
    mapper = _mapper(max_series=3, series_ttl_s=1e9)
    signals = [SignalRow(T0_S, "requests_finished", 1.0, INTERVAL_S, (("pid", str(i)),)) for i in range(6)]
    mapper.update(Batch(IDENTITY, signals=signals))
    points = named(flatten([encode_metrics(mapper.collect(T0_S + 1))]), "enginescope.requests.finished")
    overflow = [p for p in points if p.attributes.get("otel.metric.overflow") == "true"]
    assert len(points) == 4 and len(overflow) == 1 and overflow[0].value == 3.0
    assert mapper.state.overflow_updates == 3


def test_idle_histograms_of_a_real_exposition_stay_in_the_batch_and_the_export():
    """An unchanging SGLang exposition: no histogram increase, yet every histogram family it
    exposes (the two all-zero dp_attention ones included) reaches the sinks with its bounds."""
    from pathlib import Path

    from enginescope.collectors.normalise import Normaliser

    text = (Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu/metrics.txt").read_text()
    families = {
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and "histogram" in line
    }
    normaliser = Normaliser("sglang")
    normaliser.process(text, T0_S)  # baseline
    idle = normaliser.process(text, T0_S + 1)
    assert idle.histograms == []  # nothing was observed in the interval
    assert {row.metric for row in idle.series} == families
    assert {"sglang:dp_attention_token_imbalance_ratio", "sglang:dp_attention_sync_wait_seconds"} <= families
    assert all(row.bounds and row.bounds[-1] == math.inf for row in idle.series)
    mapper = _mapper(series_ttl_s=1e9)
    mapper.update(Batch(IDENTITY, histograms=idle.histograms, series=idle.series))
    points = flatten([encode_metrics(mapper.collect(T0_S + 2))])
    hist = [p for p in points if p.kind == "histogram"]
    assert len(hist) == len(idle.series) and all(p.count == 0 for p in hist)
    assert {p.name for p in hist} >= {
        "gen_ai.server.time_to_first_token",
        "sglang.dp_attention_sync_wait_seconds",
    }


def test_a_new_event_counter_series_is_exported_at_zero_first():
    """``increase()`` needs a sample before the first event: an event kind seen for the first
    time (ReplicaFlapping's first engine_restart, container_started with a new replica) goes out
    at 0 in this export and at its count in the next, for cumulative and delta counters alike."""
    for temporality, expected in ((Temporality.CUMULATIVE, [0, 2, 2, 3]), (Temporality.DELTA, [0, 2, 1])):
        mapper = _mapper(series_ttl_s=1e9, temporality=temporality)
        restart = [EventRow(T0_S, EventKind.ENGINE_RESTART), EventRow(T0_S, EventKind.ENGINE_RESTART)]
        fed = [Batch(IDENTITY, events=restart), Batch(IDENTITY), Batch(IDENTITY),
               Batch(IDENTITY, events=[EventRow(T0_S + 3, EventKind.ENGINE_RESTART)])]  # fmt: skip
        values = []
        for i, batch in enumerate(fed):
            mapper.update(batch)
            data = mapper.collect(T0_S + i + 0.5)
            points = named(flatten([encode_metrics(data)]) if data else [], "enginescope.events")
            values += [p.value for p in points if p.attributes["enginescope.event.kind"] == "engine_restart"]
        assert values == expected, temporality
