"""PromEndpointSink's /metrics: accumulated engine buckets, gauges, counters, raw samples."""

from __future__ import annotations

import math
import random
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enginescope.collectors.model import Batch, SampleRow, SignalRow
from enginescope.exporters.prom_endpoint import PromEndpointSink
from tests.otlp_data import IDENTITY, TTFT_BOUNDS, batches, full_batch, ttft_row


@pytest.fixture
def sink():
    s = PromEndpointSink(port=0)
    yield s
    s.close()


def scrape(sink: PromEndpointSink) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(sink.url, timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return content_type, samples


def series(samples, name, **labels):
    return {
        k: v
        for k, v in samples.items()
        if k[0] == name and all(dict(k[1]).get(a) == b for a, b in labels.items())
    }


def test_buckets_are_the_sum_of_fed_increases_with_engine_bounds(sink):
    fed = batches(6)
    for batch in fed:
        sink.write(batch)
    content_type, samples = scrape(sink)
    assert content_type.startswith("text/plain; version=0.0.4")
    buckets = series(samples, "enginescope_ttft_seconds_bucket", replica=IDENTITY.replica)
    by_le = {float(dict(k[1])["le"]): v for k, v in buckets.items()}
    assert sorted(by_le) == sorted(TTFT_BOUNDS)
    for i, bound in enumerate(TTFT_BOUNDS):
        assert by_le[bound] == sum(b.histograms[0].counts[i] for b in fed)
    (count,) = series(samples, "enginescope_ttft_seconds_count").values()
    (total,) = series(samples, "enginescope_ttft_seconds_sum").values()
    assert count == sum(b.histograms[0].count for b in fed)
    assert math.isclose(total, sum(b.histograms[0].sum for b in fed))
    labels = dict(next(iter(buckets))[1])
    assert (
        labels["model"] == IDENTITY.model and labels["gpu_type"] == "H100" and labels["region"] == "us-east-1"
    )
    assert labels["model_name"] == IDENTITY.model  # the engine's own labels stay


def test_counters_accumulate_gauges_hold_last_value_and_never_decrease(sink):
    fed = batches(4)
    fed[2].signals.append(SignalRow(fed[2].signals[0].ts_s, "generation_tokens", -50.0, 5.0))  # bad input
    for batch in fed:
        sink.write(batch)
    _, samples = scrape(sink)
    (generated,) = series(samples, "enginescope_generation_tokens_total").values()
    expected = sum(s.value for b in fed for s in b.signals if s.signal == "generation_tokens" and s.value > 0)
    assert generated == expected
    (queue,) = series(samples, "enginescope_queue_depth").values()
    assert queue == next(s.value for s in fed[-1].signals if s.signal == "queue_depth")
    (power,) = series(samples, "enginescope_gpu_device_power_w", gpu="GPU-aaaa").values()
    assert power == fed[-1].gpu[0].fields["power_w"]
    (energy,) = series(samples, "enginescope_gpu_device_energy_j_total").values()
    assert energy == fed[-1].gpu[0].fields["energy_j"]


def test_changed_bounds_restart_the_series(sink):
    rng = random.Random(3)
    sink.write(Batch(IDENTITY, histograms=[ttft_row(rng, 10.0)]))
    new = ttft_row(rng, 15.0, bounds=(0.1, 1.0, math.inf))
    sink.write(Batch(IDENTITY, histograms=[new]))
    _, samples = scrape(sink)
    buckets = series(samples, "enginescope_ttft_seconds_bucket")
    assert {dict(k[1])["le"] for k in buckets} == {"0.1", "1.0", "+Inf"}
    assert sorted(buckets.values()) == sorted(new.counts)


def test_raw_samples_events_and_label_clashes(sink):
    batch = full_batch(IDENTITY, 100.0, random.Random(1), events=("gpu_xid",))
    batch.samples += [
        SampleRow(100.0, "sglang:prompt_tokens_total", "counter", (("engine", "x"),), 1234.0, 10.0, 5.0),
        SampleRow(100.0, "sglang:num_queue_reqs", "gauge", (), 7.0),
    ]
    sink.write(batch)
    _, samples = scrape(sink)
    (raw_counter,) = series(samples, "sglang:prompt_tokens_total").items()
    assert (
        raw_counter[1] == 1234.0 and dict(raw_counter[0][1])["engine_engine"] == "x"
    )  # engine's own label kept
    assert dict(raw_counter[0][1])["engine"] == "sglang"
    assert list(series(samples, "sglang:num_queue_reqs").values()) == [7.0]
    events = series(samples, "enginescope_events_total")
    assert events[next(k for k in events if dict(k[1])["kind"] == "gpu_xid")] == 1
    assert (
        events[next(k for k in events if dict(k[1])["kind"] == "engine_restart")] == 0
    )  # present before it happens


def test_binds_loopback_by_default_and_reports_busy_port():
    first = PromEndpointSink(port=0)
    try:
        assert first.host == "127.0.0.1"
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            PromEndpointSink(port=first.port)
    finally:
        first.close()
