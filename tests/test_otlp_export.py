"""OtlpSink against real OTLP receivers (gRPC and HTTP/protobuf), including an outage."""

from __future__ import annotations

import logging

import pytest

from exporters.otlp.config import OtlpConfig, Protocol, Temporality
from exporters.otlp.sink import OtlpSink
from tests.otlp_data import IDENTITY, INTERVAL_S, batches, per_bucket
from tests.otlp_receivers import GrpcReceiver, HttpReceiver

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


def ttft_points(receiver):
    return sorted((p for p in receiver.points() if p.name == TTFT), key=lambda p: p.time_ns)


@pytest.mark.parametrize(
    ("protocol", "temporality", "compression"),
    [
        (Protocol.GRPC, Temporality.CUMULATIVE, "none"),
        (Protocol.GRPC, Temporality.DELTA, "gzip"),
        (Protocol.HTTP_PROTOBUF, Temporality.CUMULATIVE, "gzip"),
        (Protocol.HTTP_PROTOBUF, Temporality.DELTA, "none"),
    ],
)
def test_every_point_arrives_with_the_fed_numbers(protocol, temporality, compression):
    receiver = (GrpcReceiver() if protocol is Protocol.GRPC else HttpReceiver()).start()
    sink = OtlpSink(
        make_config(receiver, protocol, temporality=temporality, compression=compression), IDENTITY
    )
    try:
        fed = batches(5)
        for batch in fed:
            sink.write(batch)
        sink.flush()
        points = receiver.points()
        assert sink.stats().exported_points == len(points) > 0
        assert sink.stats().backlog_bytes == 0
    finally:
        sink.close()
        receiver.stop()
    hist = sorted((p for p in points if p.name == TTFT), key=lambda p: p.time_ns)
    assert len(hist) == len(fed)
    running = [0] * len(fed[0].histograms[0].bounds)
    for batch, point in zip(fed, hist, strict=True):
        row = batch.histograms[0]
        increase = per_bucket(row.counts)
        running = [a + b for a, b in zip(running, increase, strict=True)]
        expected = running if temporality is Temporality.CUMULATIVE else increase
        assert list(point.bucket_counts) == expected and point.explicit_bounds == row.bounds[:-1]
        assert point.temporality == (2 if temporality is Temporality.CUMULATIVE else 1)
        assert point.unit == "s" and point.resource["service.instance.id"] == IDENTITY.replica
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
    if protocol is Protocol.HTTP_PROTOBUF:
        assert set(receiver.encodings) == ({"gzip"} if compression == "gzip" else {""})


@pytest.mark.parametrize("protocol", [Protocol.HTTP_PROTOBUF, Protocol.GRPC])
def test_outage_keeps_a_bounded_backlog_drops_oldest_and_delivers_the_rest(protocol, caplog):
    receiver = (GrpcReceiver() if protocol is Protocol.GRPC else HttpReceiver()).start()
    fed = batches(24)
    config = make_config(receiver, protocol, backlog_bytes=12_000, interval_s=0.05, timeout_s=0.5)
    sink = OtlpSink(config, IDENTITY)
    try:
        sink.write(fed[0])
        sink.flush()
        assert len(ttft_points(receiver)) == 1
        receiver.stop()
        with caplog.at_level(logging.DEBUG):
            for batch in fed[1:]:
                sink.write(batch)
                assert sink.stats().backlog_bytes <= config.backlog_bytes
            sink.flush()
        down = sink.stats()
        assert down.failed_exports >= 1 and down.dropped_batches > 0 and down.last_error
        assert down.backlog_bytes <= config.backlog_bytes
        receiver.start()
        assert receiver.wait_for(lambda pts: sum(p.name == TTFT for p in pts) >= len(fed) - down.dropped_batches,
                                 timeout_s=20)  # fmt: skip
        sink.flush()
        up = sink.stats()
    finally:
        sink.close()
        receiver.stop()
    received = ttft_points(receiver)
    # the oldest were dropped; everything that was kept arrived, in order
    delivered_ts = [p.time_ns for p in received[1:]]
    expected_ts = [int(b.histograms[0].ts_s * 1e9) for b in fed[1 + up.dropped_batches :]]
    assert delivered_ts == expected_ts
    assert up.backlog_bytes == 0 and up.dropped_batches == down.dropped_batches
    total_points = up.exported_points + up.dropped_points
    assert up.exported_points == len(receiver.points()) and total_points > up.exported_points
    # cumulative series recover: the last point holds every interval, dropped ones included
    all_buckets = [sum(col) for col in zip(*(per_bucket(b.histograms[0].counts) for b in fed), strict=True)]
    assert list(received[-1].bucket_counts) == all_buckets
    # the API key shows up in no log line and no error
    assert SECRET not in caplog.text and SECRET not in up.last_error and SECRET not in down.last_error
    assert "OTLP export to" in caplog.text


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


def test_sdk_log_records_are_scrubbed_of_secrets(caplog):
    receiver = HttpReceiver()
    sink = OtlpSink(make_config(receiver, Protocol.HTTP_PROTOBUF, timeout_s=0.3), IDENTITY)
    try:
        with caplog.at_level(logging.WARNING):
            sdk_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter")
            sdk_logger.warning("export failed, headers=%s", {"dd-api-key": SECRET})
        assert "headers={'dd-api-key': '***'}" in caplog.text and SECRET not in caplog.text
    finally:
        sink.close()
    sdk_logger.warning("after close %s", SECRET)  # the filter goes away with the sink
    assert SECRET in caplog.records[-1].getMessage()
