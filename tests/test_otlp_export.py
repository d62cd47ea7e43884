"""OtlpSink against real OTLP receivers (gRPC and HTTP/protobuf): values, outage, bounds."""

from __future__ import annotations

import gc
import itertools
import logging
import tracemalloc

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

from enginescope.exporters.otlp.config import OtlpConfig, Protocol, Temporality
from enginescope.exporters.otlp.mapping import OtlpMapper
from enginescope.exporters.otlp.sink import OtlpSink
from tests.otlp_data import IDENTITY, INTERVAL_S, batches, per_bucket
from tests.otlp_receivers import GrpcReceiver, HttpReceiver, flatten

pytestmark = pytest.mark.slow
SECRET = "sk-live-5f0b8c1d2e3f"
TTFT = "gen_ai.server.time_to_first_token"


def make_config(receiver, protocol: Protocol, **overrides) -> OtlpConfig:
    endpoint = receiver.endpoint if protocol is Protocol.GRPC else receiver.endpoint + "/v1/metrics"
    settings = dict(
        endpoint=endpoint, protocol=protocol, headers=(("dd-api-key", SECRET),), timeout_s=2.0,
        interval_s=3600.0, retry_initial_s=0.05, retry_max_s=0.2,
    )  # fmt: skip
    settings.update(overrides)
    return OtlpConfig(**settings)


def receiver_for(protocol: Protocol):
    return GrpcReceiver() if protocol is Protocol.GRPC else HttpReceiver()


def ttft_points(receiver):
    return sorted((p for p in receiver.points() if p.name == TTFT), key=lambda p: p.time_ns)


def point_key(p) -> tuple:
    return (p.name, p.time_ns, tuple(sorted(p.attributes.items())), p.kind, p.temporality, p.start_ns,
            p.value, p.bucket_counts, p.explicit_bounds, p.count, p.sum, p.unit, p.monotonic)  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "temporality", "compression"),
    list(itertools.product(Protocol, (Temporality.CUMULATIVE, Temporality.DELTA), ("none", "gzip"))),
)
def test_every_point_arrives_with_the_fed_numbers(protocol, temporality, compression):
    receiver = receiver_for(protocol).start()
    config = make_config(receiver, protocol, temporality=temporality, compression=compression)
    sink = OtlpSink(config, IDENTITY)
    fed = batches(5)
    try:
        for batch in fed[:2]:
            sink.write(batch)
        sink.flush()  # two batches in one request, then three in another
        for batch in fed[2:]:
            sink.write(batch)
        sink.flush()
        points = receiver.points()
        assert sink.stats().exported_points == len(points) > 0 and sink.stats().export_requests == 2
        assert sink.stats().backlog_bytes == 0 == sink.backlog_measured_bytes()
    finally:
        sink.close()
        receiver.stop()
    # every point decodes to exactly what the mapper produced, none lost or altered
    mapper = OtlpMapper(config, IDENTITY)
    expected = flatten([encode_metrics(mapper.convert(b)) for b in fed])
    assert sorted(map(point_key, points)) == sorted(map(point_key, expected))
    # ... and those are the fed numbers
    hist = sorted((p for p in points if p.name == TTFT), key=lambda p: p.time_ns)
    assert len(hist) == len(fed)
    running = [0] * len(fed[0].histograms[0].bounds)
    for batch, point in zip(fed, hist, strict=True):
        row = batch.histograms[0]
        increase = per_bucket(row.counts)
        running = [a + b for a, b in zip(running, increase, strict=True)]
        expected_counts = running if temporality is Temporality.CUMULATIVE else increase
        assert list(point.bucket_counts) == expected_counts and point.explicit_bounds == row.bounds[:-1]
        assert point.temporality == (2 if temporality is Temporality.CUMULATIVE else 1)
        assert point.unit == "s" and point.resource["service.instance.id"] == IDENTITY.replica
        start_s = (
            fed[0].histograms[0].ts_s - INTERVAL_S
            if temporality is Temporality.CUMULATIVE
            else row.ts_s - INTERVAL_S
        )
        assert point.start_ns == int(start_s * 1e9)
    tokens = [
        p for p in points if p.name == "enginescope.tokens" and p.attributes["gen_ai.token.type"] == "output"
    ]
    increases = [next(s.value for s in b.signals if s.signal == "generation_tokens") for b in fed]
    values = [p.value for p in sorted(tokens, key=lambda p: p.time_ns)]
    if temporality is Temporality.CUMULATIVE:
        assert values == [sum(increases[: i + 1]) for i in range(len(fed))]
    else:
        assert values == increases
    assert all(p.value >= 0 for p in points if p.kind == "sum" and p.monotonic)
    assert receiver.metadata[0]["dd-api-key"] == SECRET  # the header reaches the backend
    if protocol is Protocol.HTTP_PROTOBUF:  # (grpcio hides the grpc-encoding header from servicers)
        assert set(receiver.encodings) == ({"gzip"} if compression == "gzip" else {""})


@pytest.mark.parametrize(
    ("protocol", "compression"), [(Protocol.HTTP_PROTOBUF, "gzip"), (Protocol.GRPC, "none")]
)
def test_receiver_killed_and_restarted_keeps_a_bounded_backlog_and_delivers_in_order(
    protocol, compression, caplog
):
    receiver = receiver_for(protocol).start()
    fed = batches(30)
    config = make_config(receiver, protocol, compression=compression, backlog_bytes=12_000, interval_s=0.05,
                         timeout_s=0.5)  # fmt: skip
    sink = OtlpSink(config, IDENTITY)
    try:
        sink.write(fed[0])
        sink.flush()
        assert len(ttft_points(receiver)) == 1
        receiver.stop()
        with caplog.at_level(logging.DEBUG):
            for batch in fed[1:]:
                sink.write(batch)
                held = sink.backlog_measured_bytes()  # the objects actually kept, not a counter
                assert held == sink.stats().backlog_bytes <= config.backlog_bytes
            sink.flush()
        down = sink.stats()
        assert down.failed_exports >= 1 and down.dropped_batches > 0 and down.last_error
        assert down.backlog_batches >= 3  # the bound keeps several batches, not just the newest
        receiver.start()
        assert receiver.wait_for(lambda pts: sum(p.name == TTFT for p in pts) >= len(fed) - down.dropped_batches,
                                 timeout_s=20)  # fmt: skip
        sink.flush()
        up = sink.stats()
    finally:
        sink.close()
        receiver.stop()
    received = ttft_points(receiver)
    # the oldest were dropped and counted; everything that was kept arrived, in order
    arrival_order = [p.time_ns for p in flatten(receiver.requests) if p.name == TTFT]
    assert arrival_order == sorted(arrival_order)
    expected_ts = [int(b.histograms[0].ts_s * 1e9) for b in fed[1 + up.dropped_batches :]]
    assert [p.time_ns for p in received[1:]] == expected_ts
    assert (
        up.backlog_bytes == 0 == sink.backlog_measured_bytes() and up.dropped_batches == down.dropped_batches
    )
    assert up.exported_batches + up.dropped_batches == len(fed)
    total_points = up.exported_points + up.dropped_points
    assert up.exported_points == len(receiver.points()) and total_points > up.exported_points
    # cumulative series recover: the last point holds every interval, dropped ones included
    all_buckets = [sum(col) for col in zip(*(per_bucket(b.histograms[0].counts) for b in fed), strict=True)]
    assert list(received[-1].bucket_counts) == all_buckets
    # the API key shows up in no log line and no error
    assert SECRET not in caplog.text and SECRET not in up.last_error and SECRET not in down.last_error
    assert "OTLP export to" in caplog.text


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_backlog_memory_stays_within_the_configured_bytes(compression):
    """The heap held while the endpoint is down is bounded by backlog_bytes itself."""
    receiver = HttpReceiver()  # never started; interval 1 h so the worker never tries
    limit = 256 * 1024
    sink = OtlpSink(make_config(receiver, Protocol.HTTP_PROTOBUF, compression=compression, backlog_bytes=limit),
                    IDENTITY)  # fmt: skip
    fed = batches(700)
    try:
        for batch in fed[:2]:  # series state and first-use caches are not backlog
            sink.write(batch)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for batch in fed[2:]:
            sink.write(batch)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        stats = sink.stats()
    finally:
        sink.close()
    assert stats.dropped_batches > 0  # the backlog did fill up
    assert limit * 0.95 < stats.backlog_bytes <= limit
    assert growth <= limit * 1.1, f"heap grew {growth} B for a {limit} B backlog"


def test_self_metrics_report_drops_as_counter_rows():
    receiver = HttpReceiver()  # never started: every export fails
    config = make_config(receiver, Protocol.HTTP_PROTOBUF, backlog_bytes=5_000, timeout_s=0.3)
    sink = OtlpSink(config, IDENTITY)
    try:
        for batch in batches(10):
            sink.write(batch)
        rows = {r.metric: r for r in sink.self_metrics(ts_s=1.0, interval_s=INTERVAL_S)}
        stats = sink.stats()
        assert rows["enginescope_otlp_dropped_bytes_total"].value == stats.dropped_bytes > 0
        assert rows["enginescope_otlp_dropped_batches_total"].type == "counter"
        assert rows["enginescope_otlp_backlog_bytes"].value == stats.backlog_bytes <= 5_000
        sink.write(batches(1, seed=3, t0_s=2e9)[0])
        again = {r.metric: r for r in sink.self_metrics(ts_s=2.0, interval_s=INTERVAL_S)}
        increase = again["enginescope_otlp_dropped_bytes_total"].delta
        assert increase == sink.stats().dropped_bytes - stats.dropped_bytes >= 0
    finally:
        sink.close()


def test_library_log_records_are_scrubbed_of_secrets(caplog):
    receiver = HttpReceiver()
    sink = OtlpSink(make_config(receiver, Protocol.HTTP_PROTOBUF, timeout_s=0.3), IDENTITY)
    try:
        with caplog.at_level(logging.WARNING):
            lib_logger = logging.getLogger("urllib3.connectionpool")
            lib_logger.warning("retrying, headers=%s", {"dd-api-key": SECRET})
        assert "headers={'dd-api-key': '***'}" in caplog.text and SECRET not in caplog.text
    finally:
        sink.close()
    lib_logger.warning("after close %s", SECRET)  # the filter goes away with the sink
    assert SECRET in caplog.records[-1].getMessage()
