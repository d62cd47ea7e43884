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
from tests.otlp_data import IDENTITY, INTERVAL_S, T0_S, batches, per_bucket
from tests.otlp_receivers import GrpcReceiver, HttpReceiver, flatten

pytestmark = pytest.mark.slow
SECRET = "sk-live-5f0b8c1d2e3f"
TTFT = "gen_ai.server.time_to_first_token"


def make_config(receiver, protocol: Protocol, **overrides) -> OtlpConfig:
    endpoint = receiver.endpoint if protocol is Protocol.GRPC else receiver.endpoint + "/v1/metrics"
    settings = dict(
        endpoint=endpoint, protocol=protocol, headers=(("dd-api-key", SECRET),), timeout_s=2.0,
        interval_s=3600.0, retry_initial_s=0.05, retry_max_s=0.2,
        series_ttl_s=1e9,  # the test batches carry fixed timestamps in the past
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


class Clock:
    """The sink's export clock, set by the test (batches carry fixed timestamps)."""

    def __init__(self, now_s: float = 0.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.mark.parametrize(
    ("protocol", "temporality", "compression"),
    list(itertools.product(Protocol, (Temporality.CUMULATIVE, Temporality.DELTA), ("none", "gzip"))),
)
def test_one_export_per_flush_carries_every_series_with_the_fed_numbers(protocol, temporality, compression):
    receiver = receiver_for(protocol).start()
    config = make_config(receiver, protocol, temporality=temporality, compression=compression)
    fed = batches(5)
    export_s = [fed[1].histograms[0].ts_s + 0.5, fed[4].histograms[0].ts_s + 0.5]
    clock = Clock()
    sink = OtlpSink(config, IDENTITY, clock=clock)
    try:
        for batch in fed[:2]:
            sink.write(batch)
        clock.now_s = export_s[0]
        sink.flush()  # two scrapes, one export
        for batch in fed[2:]:
            sink.write(batch)
        clock.now_s = export_s[1]
        sink.flush()  # three scrapes, one export
        points = receiver.points()
        assert sink.stats().exported_points == len(points) > 0 and sink.stats().export_requests == 2
        assert sink.stats().backlog_bytes == 0 == sink.backlog_measured_bytes()
    finally:
        sink.close()
        receiver.stop()
    # every point decodes to exactly what a reference mapper collects at the same times
    mapper = OtlpMapper(config, IDENTITY)
    expected = []
    for part, now_s in ((fed[:2], export_s[0]), (fed[2:], export_s[1])):
        for batch in part:
            mapper.update(batch)
        expected += flatten([encode_metrics(mapper.collect(now_s))])
    assert sorted(map(point_key, points)) == sorted(map(point_key, expected))
    # ... and those are the fed numbers: one TTFT point per export, on the reader's clock
    hist = sorted((p for p in points if p.name == TTFT), key=lambda p: p.time_ns)  # before close
    assert [p.time_ns for p in hist] == [int(t * 1e9) for t in export_s]
    increases = [per_bucket(b.histograms[0].counts) for b in fed]
    first, second = ([sum(c) for c in zip(*part, strict=True)] for part in (increases[:2], increases[2:]))
    if temporality is Temporality.CUMULATIVE:
        assert list(hist[0].bucket_counts) == first
        assert list(hist[1].bucket_counts) == [a + b for a, b in zip(first, second, strict=True)]
        assert hist[0].start_ns == hist[1].start_ns == int((fed[0].histograms[0].ts_s - INTERVAL_S) * 1e9)
    else:
        assert [list(h.bucket_counts) for h in hist] == [first, second]
        assert hist[1].start_ns == int(export_s[0] * 1e9)  # the previous export
    assert hist[0].explicit_bounds == fed[0].histograms[0].bounds[:-1]
    assert hist[0].temporality == (2 if temporality is Temporality.CUMULATIVE else 1)
    assert hist[0].unit == "s" and hist[0].resource["service.instance.id"] == IDENTITY.replica
    tokens = [
        p for p in points if p.name == "enginescope.tokens" and p.attributes["gen_ai.token.type"] == "output"
    ]
    increases_t = [next(s.value for s in b.signals if s.signal == "generation_tokens") for b in fed]
    values = [p.value for p in sorted(tokens, key=lambda p: p.time_ns)]
    if temporality is Temporality.CUMULATIVE:
        assert values == [sum(increases_t[:2]), sum(increases_t)]
    else:
        assert values == [sum(increases_t[:2]), sum(increases_t[2:])]
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
    config = make_config(receiver, protocol, compression=compression, backlog_bytes=40_000, timeout_s=0.5)
    clock = Clock()
    sink = OtlpSink(config, IDENTITY, clock=clock)

    def export(batch) -> None:  # one scrape, then one export at the scrape's time
        sink.write(batch)
        clock.now_s = batch.histograms[0].ts_s
        sink.flush()

    try:
        export(fed[0])
        assert len(ttft_points(receiver)) == 1
        receiver.stop()
        with caplog.at_level(logging.DEBUG):
            for batch in fed[1:]:
                export(batch)
                held = sink.backlog_measured_bytes()  # the objects actually kept, not a counter
                assert held == sink.stats().backlog_bytes <= config.backlog_bytes
        down = sink.stats()
        assert down.failed_exports >= 1 and down.dropped_batches > 0 and down.last_error
        assert down.backlog_batches >= 3  # the bound keeps several exports, not just the newest
        receiver.start()  # the worker's own retries deliver the backlog
        assert receiver.wait_for(lambda pts: sum(p.name == TTFT for p in pts) >= len(fed) - down.dropped_batches,
                                 timeout_s=20)  # fmt: skip
        sink.flush()  # one more export, after the backlog has settled
        up = sink.stats()
    finally:
        sink.close()
        receiver.stop()
    received = [p for p in ttft_points(receiver)]
    # the oldest were dropped and counted; everything that was kept arrived, in order
    arrival_order = [p.time_ns for p in flatten(receiver.requests) if p.name == TTFT]
    assert arrival_order == sorted(arrival_order)
    expected_ts = [int(b.histograms[0].ts_s * 1e9) for b in fed[1 + up.dropped_batches :]]
    assert [p.time_ns for p in received[1 : len(expected_ts) + 1]] == expected_ts
    assert up.backlog_bytes == 0 and up.exported_batches + up.dropped_batches == len(fed) + 1  # + the flush
    total_points = up.exported_points + up.dropped_points
    assert total_points > up.exported_points
    # cumulative series recover: the last point holds every interval, dropped ones included
    all_buckets = [sum(col) for col in zip(*(per_bucket(b.histograms[0].counts) for b in fed), strict=True)]
    assert list(received[-1].bucket_counts) == all_buckets
    # the API key shows up in no log line and no error
    assert SECRET not in caplog.text and SECRET not in up.last_error and SECRET not in down.last_error
    assert "OTLP export to" in caplog.text


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_backlog_memory_stays_within_the_configured_bytes(compression):
    """The heap held while the endpoint is down is bounded by backlog_bytes itself."""
    receiver = HttpReceiver()  # never started: every export fails and stays in the backlog
    limit = 64 * 1024
    config = make_config(receiver, Protocol.HTTP_PROTOBUF, compression=compression, backlog_bytes=limit,
                         retry_initial_s=3600.0, retry_max_s=3600.0)  # fmt: skip
    sink = OtlpSink(config, IDENTITY, clock=Clock(T0_S))
    fed = batches(200)
    sink_log = logging.getLogger("enginescope.exporters.otlp.sink")
    sink_log.setLevel(logging.ERROR)  # pytest keeps every captured record: not backlog memory
    try:
        for batch in fed[:2]:  # series state and first-use caches are not backlog
            sink.write(batch)
            sink.flush()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for batch in fed[2:]:
            sink.write(batch)
            sink.flush()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        stats = sink.stats()
    finally:
        sink.close()
        sink_log.setLevel(logging.NOTSET)
    assert stats.dropped_batches > 0  # the backlog did fill up
    assert limit * 0.9 < stats.backlog_bytes <= limit
    assert growth <= limit * 1.1, f"heap grew {growth} B for a {limit} B backlog"


def test_self_metrics_report_drops_as_counter_rows():
    receiver = HttpReceiver()  # never started: every export fails
    config = make_config(receiver, Protocol.HTTP_PROTOBUF, backlog_bytes=12_000, timeout_s=0.3)
    sink = OtlpSink(config, IDENTITY, clock=Clock(T0_S))
    try:
        for batch in batches(10):
            sink.write(batch)
            sink.flush()
        rows = {r.metric: r for r in sink.self_metrics(ts_s=1.0, interval_s=INTERVAL_S)}
        stats = sink.stats()
        assert rows["enginescope_otlp_dropped_bytes_total"].value == stats.dropped_bytes > 0
        assert rows["enginescope_otlp_dropped_batches_total"].type == "counter"
        assert rows["enginescope_otlp_backlog_bytes"].value == stats.backlog_bytes <= 12_000
        assert rows["enginescope_otlp_series"].value == stats.live_series > 0
        sink.write(batches(1, seed=3, t0_s=T0_S + 100)[0])
        sink.flush()
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


def test_a_new_event_in_the_final_write_is_delivered_as_zero_then_its_count():
    """A new event series goes out at 0 first and counts at the next export; at shutdown there
    is no next export, so the final round sends both (``container_stopped`` must not be lost)."""
    from enginescope.collectors.model import Batch, EventKind, EventRow

    receiver = HttpReceiver().start()
    clock = Clock(T0_S)
    sink = OtlpSink(make_config(receiver, Protocol.HTTP_PROTOBUF), IDENTITY, clock=clock)
    try:
        sink.write(Batch(IDENTITY, events=[EventRow(T0_S, EventKind.CONTAINER_STOPPED)]))
        assert sink.shutdown(5.0)
        points = [p for p in receiver.points() if p.name == "enginescope.events"]
    finally:
        receiver.stop()
    stopped = sorted(
        (p.time_ns, p.value)
        for p in points
        if p.attributes["enginescope.event.kind"] == EventKind.CONTAINER_STOPPED
    )
    assert [v for _, v in stopped] == [0, 1]
    assert stopped[1][0] - stopped[0][0] >= 1_000_000  # distinct samples in a millisecond TSDB
