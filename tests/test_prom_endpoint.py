"""PromEndpointSink's /metrics: accumulated engine buckets, gauges, counters, raw samples."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enginescope.collectors.model import Batch, EventKind, GpuRow, SampleRow, SignalRow
from enginescope.exporters.prom_endpoint import PromEndpointSink
from tests.binaries import require
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
    scrape(sink)  # the first scrape serves new counters at 0 (see the container_started test)
    _, samples = scrape(sink)
    (generated,) = series(samples, "enginescope_generation_tokens_total").values()
    expected = sum(s.value for b in fed for s in b.signals if s.signal == "generation_tokens" and s.value > 0)
    assert generated == expected
    (queue,) = series(samples, "enginescope_queue_depth").values()
    assert queue == next(s.value for s in fed[-1].signals if s.signal == "queue_depth")
    (power,) = series(samples, "enginescope_gpu_device_power_watts", gpu="GPU-aaaa").values()
    assert power == fed[-1].gpu[0].fields["power_w"]
    (energy,) = series(samples, "enginescope_gpu_device_energy_joules_total").values()
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
    scrape(sink)  # new counters are served at 0 first
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


# --- exposition format, names, units (issue 11) ------------------------------------------------

OM_ACCEPT = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"  # noqa: E501 (Prometheus 2.42's header)


def fetch(sink: PromEndpointSink, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(sink.url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def engine_batch() -> Batch:
    batch = full_batch(IDENTITY, 100.0, random.Random(4))
    batch.samples += [
        SampleRow(100.0, "sglang:num_queue_reqs", "gauge", (("model_name", "m"),), 7.0),
        SampleRow(100.0, "sglang:prompt_tokens_total", "counter", (("model_name", "m"),), 1234.0, 10.0, 5.0),
        SampleRow(100.0, "vllm:num_preemptions", "counter", (), 3.0),  # a counter without _total
    ]
    return batch


def test_openmetrics_when_negotiated_keeps_engine_names(sink):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    sink.write(engine_batch())
    content_type, text = fetch(sink, OM_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    samples = {s.name: s.value for f in parse_om(text) for s in f.samples}  # raises on an invalid body
    assert samples["sglang:num_queue_reqs"] == 7.0  # not sglang_num_queue_reqs (client_python#1177)
    assert samples["sglang:prompt_tokens_total"] == 1234.0
    assert samples["vllm:num_preemptions"] == 3.0
    assert not any(name.startswith("sglang_") for name in samples)
    plain_type, plain = fetch(sink)
    assert plain_type.startswith("text/plain; version=0.0.4")
    assert "sglang:num_queue_reqs{" in plain and "# EOF" not in plain


def test_engine_histograms_are_served_under_their_own_names(sink):
    fed = batches(3)
    for batch in fed:
        sink.write(batch)
    _, samples = scrape(sink)
    own = series(samples, "sglang:time_to_first_token_seconds_bucket", le="+Inf")
    assert list(own.values()) == [sum(b.histograms[0].count for b in fed)]
    (count,) = series(samples, "sglang:time_to_first_token_seconds_count").values()
    assert count == sum(b.histograms[0].count for b in fed)


def test_own_names_are_in_base_units_with_registry_help(sink):
    from enginescope.collectors.signals import SIGNALS

    batch = full_batch(IDENTITY, 100.0, random.Random(4))
    by_signal = {s.signal: s.value for s in batch.signals}
    batch.gpu[0].fields.update({"sm_clock_mhz": 1980, "gpu_utilization_pct": 87, "temperature_c": 61})
    sink.write(batch)
    _, text = fetch(sink)
    _, samples = scrape(sink)
    names = {k[0] for k in samples}
    for bad in ("_w", "_c", "_mhz", "_pct", "_bytes_per_s", "_tps"):
        assert not [n for n in names if n.startswith("enginescope_") and n.endswith(bad)], bad
    assert list(series(samples, "enginescope_gpu_power_watts").values()) == [by_signal["gpu_power_w"]]
    assert list(series(samples, "enginescope_gpu_utilization_ratio").values()) == [
        by_signal["gpu_utilization_pct"] / 100
    ]
    assert list(series(samples, "enginescope_gpu_sm_clock_hertz").values()) == [
        by_signal["gpu_sm_clock_mhz"] * 1e6
    ]
    assert list(series(samples, "enginescope_gpu_device_sm_clock_hertz").values()) == [1980e6]
    assert list(series(samples, "enginescope_gpu_device_gpu_utilization_ratio").values()) == [0.87]
    assert list(series(samples, "enginescope_gpu_device_temperature_celsius").values()) == [61.0]
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    assert helps["enginescope_ttft_seconds"].startswith(SIGNALS["ttft_seconds"].description)
    assert helps["enginescope_queue_depth"].startswith(SIGNALS["queue_depth"].description)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert (
        types["enginescope_prompt_tokens_total"] == "counter"
        and types["enginescope_kv_usage_ratio"] == "gauge"
    )


def test_default_port_is_outside_the_allocated_exporter_range():
    from enginescope.exporters.prom_endpoint import DEFAULT_PORT

    # 9100-9999 is Prometheus' allocated exporter range (9400 = dcgm-exporter); 9090-9094 its own.
    assert not 9090 <= DEFAULT_PORT <= 9999


COLON = "metric names should not contain ':'"
# What promtool says about names the engines chose (their dashboards query them, so they are
# re-served unchanged), besides the colon every engine family has. Nothing else is accepted.
ENGINE_NAME_FINDINGS = {
    "sglang:generation_tokens_histogram": "metric name should not include type 'histogram'",
    "sglang:prompt_tokens_histogram": "metric name should not include type 'histogram'",
    "sglang:uncached_prompt_tokens_histogram": "metric name should not include type 'histogram'",
    "sglang:graph_memory_usage_gb": "metric names should not contain abbreviated units",
    "sglang:kv_cache_memory_usage_gb": "metric names should not contain abbreviated units",
    "sglang:startup_available_gpu_memory_gb": "metric names should not contain abbreviated units",
    "sglang:weight_memory_usage_gb": "metric names should not contain abbreviated units",
    "sglang:routing_key_all_req_count": 'non-histogram and non-summary metrics should not have "_count" suffix',
    "sglang:routing_key_running_req_count": 'non-histogram and non-summary metrics should not have "_count" suffix',
    "vllm:iteration_tokens_total": 'non-counter metrics should not have "_total" suffix',  # a histogram
    "vllm:num_preemptions": 'counter metrics should have "_total" suffix',  # engine_batch(): no _total
}
ENGINE_FIXTURES = {
    "sglang": Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu/metrics.txt",
    "vllm": Path(__file__).parent / "fixtures/vllm/0.33.0-plain/metrics.txt",
}


@contextlib.contextmanager
def _sidecar_serving(fixture: str, tmp_path: Path) -> Iterator[tuple]:
    """(sidecar, engine server, endpoint): a real sidecar scraping ``fixture`` over HTTP with
    the endpoint as its extra sink; stopped (endpoint closed) on exit."""
    from enginescope.sidecar import Sidecar, SidecarConfig
    from tests.exposition_server import ExpositionServer

    endpoint = PromEndpointSink(port=0)
    try:
        with ExpositionServer(fixture) as server:
            config = SidecarConfig(engine_url=server.url, store_dir=tmp_path / "s", extra_sinks=[endpoint])
            sidecar = Sidecar(config)
            try:
                yield sidecar, server, endpoint
            finally:
                sidecar.stop()  # closes the endpoint too
    finally:
        endpoint.close()


@pytest.mark.parametrize("engine", sorted(ENGINE_FIXTURES))
def test_promtool_check_metrics_is_clean_on_a_real_sidecar_exposition(tmp_path, engine):
    """Our families: no finding at all. Engine families: exactly the findings their own names
    cause (listed above); a parse error, a missing HELP or a type problem of ours fails."""
    promtool = require("promtool")
    from enginescope.collectors.gpu_fields import ALL_COLUMNS

    fixture = ENGINE_FIXTURES[engine].read_text()
    with _sidecar_serving(fixture, tmp_path) as (sidecar, server, endpoint):
        sidecar.tick()
        if engine == "sglang":
            from tests.test_sidecar_e2e import _bump_ttft

            server.body = _bump_ttft(fixture, {0.2: 3}, added_sum_s=0.5)
        sidecar.tick()
        extra = engine_batch() if engine == "sglang" else full_batch(IDENTITY, 100.0, random.Random(4))
        extra.gpu[0].fields.update({c: 1 for c in ALL_COLUMNS if c not in ("gpu_name", "pci_bus_id")})
        endpoint.write(extra)
        _, text = fetch(endpoint)
    assert f"{engine}:" in text and "enginescope_gpu_device_" in text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    findings = (check.stdout + check.stderr).strip().splitlines()
    assert [f for f in findings if f.startswith("enginescope_")] == []
    families = set(re.findall(r"^# TYPE ((?:sglang|vllm):\S+) ", text, re.M))
    expected = {f"{name} {COLON}" for name in families}
    expected |= {f"{name} {why}" for name, why in ENGINE_NAME_FINDINGS.items() if name in families}
    assert sorted(findings) == sorted(expected)


# --- staleness and cardinality --------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _gauge(identity, value: float, **labels: str) -> Batch:
    return Batch(
        identity, signals=[SignalRow(100.0, "queue_depth", value, 5.0, tuple(sorted(labels.items())))]
    )


def test_a_series_not_seen_for_the_ttl_leaves():
    clock = FakeClock()
    sink = PromEndpointSink(port=0, ttl_s=30.0, clock=clock)
    try:
        sink.write(_gauge(IDENTITY, 1.0, rank="0"))
        sink.write(_gauge(IDENTITY, 2.0, rank="1"))
        clock.now_s += 20
        sink.write(_gauge(IDENTITY, 3.0, rank="1"))  # rank 0 went away
        clock.now_s += 15
        _, samples = scrape(sink)
        assert {dict(k[1])["rank"]: v for k, v in series(samples, "enginescope_queue_depth").items()} == {
            "1": 3.0
        }
    finally:
        sink.close()


def test_every_engine_series_of_a_down_engine_leaves_but_gpu_and_events_stay(sink):
    other = dataclasses.replace(IDENTITY, replica="ta-other")
    sink.write(engine_batch())
    sink.write(full_batch(other, 100.0, random.Random(5)))
    down = Batch(IDENTITY, signals=[SignalRow(105.0, "engine_up", 0.0, 5.0)],
                 gpu=[GpuRow(105.0, "GPU-aaaa", {"gpu_index": 0, "power_w": 80.0})])  # fmt: skip
    sink.write(down)
    _, samples = scrape(sink)
    mine = {k[0] for k in samples if dict(k[1]).get("replica") == IDENTITY.replica}
    gpu = {n for n in mine if n.startswith("enginescope_gpu_")}  # the GPUs still report
    assert "enginescope_gpu_device_power_watts" in gpu
    assert mine - gpu == {"enginescope_engine_up", "enginescope_events_total"}
    assert list(series(samples, "enginescope_engine_up", replica=IDENTITY.replica).values()) == [0.0]
    theirs = {k[0] for k in samples if dict(k[1]).get("replica") == "ta-other"}
    assert "enginescope_ttft_seconds_bucket" in theirs and "enginescope_queue_depth" in theirs


def test_model_label_arriving_late_leaves_no_frozen_copy(sink):
    early = dataclasses.replace(IDENTITY, model="")
    sink.write(full_batch(early, 100.0, random.Random(6)))
    sink.write(full_batch(IDENTITY, 105.0, random.Random(7)))
    _, samples = scrape(sink)
    models = {dict(k[1]).get("model") for k in samples if "replica" in dict(k[1])}
    assert models == {IDENTITY.model}
    assert len(series(samples, "enginescope_engine_up")) == 1  # "replicas up" counts 1, not 2


def test_series_beyond_the_cap_fold_into_an_overflow_series():
    sink = PromEndpointSink(port=0, max_series=40)
    try:
        for pid in range(100):
            sink.write(_gauge(IDENTITY, float(pid), pid=str(pid)))
        _, samples = scrape(sink)
    finally:
        sink.close()
    queue = series(samples, "enginescope_queue_depth")
    overflow = [v for k, v in queue.items() if dict(k[1]).get("otel_metric_overflow") == "true"]
    assert overflow == [99.0]
    live = samples[("enginescope_endpoint_series", ())]
    folded = samples[("enginescope_endpoint_series_folded_total", ())]
    assert live <= 40 + 1 and live + folded == 100 + len(EventKind) + 1


def test_an_event_in_the_first_write_of_a_replica_is_served_as_zero_first(sink):
    """increase() needs a sample before the first event: a new replica's ``container_started``
    written together with the replica's first batch must still be counted."""
    from enginescope.collectors.model import EventRow

    sink.write(
        Batch(IDENTITY, events=[EventRow(100.0, "container_started"), EventRow(100.0, "engine_ready")])
    )
    _, first = scrape(sink)
    _, second = scrape(sink)
    for kind in ("container_started", "engine_ready"):
        assert list(series(first, "enginescope_events_total", kind=kind).values()) == [0.0]
        assert list(series(second, "enginescope_events_total", kind=kind).values()) == [1.0]


# --- idle histograms (Batch.series) -----------------------------------------------------------


def _series_row(row):
    from enginescope.collectors.model import SeriesRow

    return SeriesRow(row.ts_s, row.metric, "histogram", row.labels, row.bounds, row.signal)


def test_an_idle_histogram_stays_served_past_the_ttl():
    """The engine keeps exposing TTFT but nobody sent a request: no HistogramRow, only its
    SeriesRow each scrape. Both the engine-named and our own family must stay served (a flat
    line, rate 0), not vanish after the TTL."""
    clock = FakeClock()
    sink = PromEndpointSink(port=0, ttl_s=30.0, clock=clock)
    try:
        row = ttft_row(random.Random(9), 100.0)
        sink.write(Batch(IDENTITY, histograms=[row], series=[_series_row(row)]))
        for i in range(1, 7):  # 60 s of idle scrapes, twice the TTL
            clock.now_s += 10
            idle = dataclasses.replace(_series_row(row), ts_s=100.0 + 10 * i)
            sink.write(Batch(IDENTITY, signals=[SignalRow(idle.ts_s, "engine_up", 1.0, 10.0)], series=[idle]))
        _, samples = scrape(sink)
    finally:
        sink.close()
    for name in ("sglang:time_to_first_token_seconds", "enginescope_ttft_seconds"):
        assert list(series(samples, f"{name}_count").values()) == [row.count], name
        inf = series(samples, f"{name}_bucket", le="+Inf")
        assert list(inf.values()) == [row.count], name


def test_every_histogram_family_of_a_real_sglang_exposition_is_served(sink):
    """SGLang exposes two histograms nobody observes on one GPU (dp_attention_*, all zero): they
    must be served (with the engine's bounds, all-zero buckets) like the observed ones."""
    from pathlib import Path

    from enginescope.collectors.normalise import Normaliser

    text = (Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu/metrics.txt").read_text()
    families = {
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and "histogram" in line
    }
    assert {"sglang:dp_attention_token_imbalance_ratio", "sglang:dp_attention_sync_wait_seconds"} <= families
    normaliser = Normaliser("sglang")
    for ts_s in (100.0, 101.0):  # a baseline, then an interval in which nothing was observed
        scrape_ = normaliser.process(text, ts_s)
        sink.write(Batch(IDENTITY, samples=scrape_.samples, histograms=scrape_.histograms,
                         signals=scrape_.signals, series=scrape_.series))  # fmt: skip
    _, samples = scrape(sink)
    served = {k[0].removesuffix("_count") for k in samples if k[0].endswith("_count")}
    assert families <= served, families - served
    (exposed,) = (r for r in scrape_.series if r.metric == "sglang:dp_attention_sync_wait_seconds")
    wait = series(samples, "sglang:dp_attention_sync_wait_seconds_bucket")
    assert sorted(float(dict(k[1])["le"]) for k in wait) == list(exposed.bounds)
    assert set(wait.values()) == {0.0}
    assert series(samples, "enginescope_ttft_seconds_count")  # our own name for a mapped family


def test_the_sidecars_own_samples_have_their_own_help_and_stay_while_the_engine_is_down(sink):
    """``enginescope_sidecar_*`` / ``enginescope_otlp_*`` samples come from the sidecar, not the
    engine: they say what they count and the scrape-error counter stays when the engine is down."""
    errors = SampleRow(100.0, "enginescope_sidecar_scrape_errors_total", "counter", (), 3.0, 1.0, 1.0)
    duration = SampleRow(100.0, "enginescope_sidecar_scrape_duration_seconds", "gauge", (), 0.01)
    backlog = SampleRow(100.0, "enginescope_otlp_backlog_bytes", "gauge", (), 512.0)
    sink.write(Batch(IDENTITY, samples=[errors, duration, backlog],
                     signals=[SignalRow(100.0, "engine_up", 1.0, 1.0)]))  # fmt: skip
    sink.write(Batch(IDENTITY, signals=[SignalRow(101.0, "engine_up", 0.0, 1.0)]))  # engine down
    _, text = fetch(sink)
    _, samples = scrape(sink)
    assert list(series(samples, "enginescope_sidecar_scrape_errors_total").values()) == [3.0]
    assert list(series(samples, "enginescope_otlp_backlog_bytes").values()) == [512.0]
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    assert "scrape" in helps["enginescope_sidecar_scrape_errors_total"].lower()
    assert "OTLP" in helps["enginescope_otlp_backlog_bytes"]
    assert not [n for n, h in helps.items() if n.startswith("enginescope_") and "engine sample" in h]


def test_re_served_engine_families_keep_the_engines_own_help(tmp_path):
    """HELP of a re-served engine family is the engine's (from the scraped exposition): gauges,
    counters (declared with or without ``_total``), histograms, idle ones included."""
    fixture = ENGINE_FIXTURES["sglang"].read_text()
    declared = dict(re.findall(r"^# HELP (\S+) (.*)$", fixture, re.M))
    with _sidecar_serving(fixture, tmp_path) as (sidecar, _, endpoint):
        sidecar.tick()
        sidecar.tick()
        _, text = fetch(endpoint)
        _, om = fetch(endpoint, OM_ACCEPT)
    served = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    for name in ("sglang:num_queue_reqs", "sglang:prompt_tokens_total", "sglang:time_to_first_token_seconds",
                 "sglang:dp_attention_sync_wait_seconds"):  # fmt: skip
        assert served[name] == declared[name], name
    engine = {n: h for n, h in served.items() if n.startswith("sglang:")}
    assert engine and all(h == declared[n] for n, h in engine.items())  # every one, not only those
    om_helps = dict(re.findall(r"^# HELP (\S+) (.*)$", om, re.M))
    assert om_helps["sglang:prompt_tokens"] == declared["sglang:prompt_tokens_total"]  # OM family name


def test_an_engine_family_without_help_gets_a_generic_line(sink):
    sink.write(Batch(IDENTITY, samples=[SampleRow(100.0, "sglang:undocumented", "gauge", (), 1.0)],
                     helps={"sglang:other": "x"}))  # fmt: skip
    _, text = fetch(sink)
    assert "# HELP sglang:undocumented sglang engine sample re-served" in text
