"""The byte-bounded backlog of serialized OTLP requests (no network)."""

from __future__ import annotations

import gzip

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from enginescope.exporters.otlp.backlog import Backlog, Entry, encode_entry, request_body
from enginescope.exporters.otlp.config import OtlpConfig
from enginescope.exporters.otlp.mapping import OtlpMapper
from tests.otlp_data import IDENTITY, batches
from tests.otlp_receivers import flatten


@pytest.mark.parametrize("encoding", ["none", "gzip", "deflate"])
def test_joined_entries_are_one_request_with_every_point_of_each(encoding):
    mapper = OtlpMapper(OtlpConfig(endpoint="http://x:4318/v1/metrics", series_ttl_s=1e9), IDENTITY)
    data = [mapper.convert(b) for b in batches(3)]
    chunk = [encode_entry(d, encoding) for d in data]
    raw = [encode_metrics(d).SerializeToString() for d in data]
    assert [e.raw_bytes for e in chunk] == [len(r) for r in raw]
    if encoding != "none":
        assert all(e.held_bytes < len(r) for e, r in zip(chunk, raw, strict=True))  # compressed when held
    body = request_body(chunk, "none")
    request = ExportMetricsServiceRequest.FromString(body)
    assert len(request.resource_metrics) == 3
    assert flatten([request]) == flatten([encode_metrics(d) for d in data])
    assert sum(e.points for e in chunk) == len(flatten([request]))
    wire = request_body(chunk, "gzip")
    assert gzip.decompress(wire) == body  # every batch, in order, as one gzip stream
    if encoding == "gzip":  # compressed once: the stored members are joined, never re-encoded
        assert wire == b"".join(e.payload for e in chunk)
    assert request_body(chunk[:1], encoding) is chunk[0].payload  # sent as stored, no re-encode


def same_size(n: int) -> list[Entry]:
    return [Entry(bytes([i]) * 1000, "none", 1000, points=i + 1) for i in range(n)]


def test_full_backlog_drops_oldest_and_keeps_held_bytes_exact():
    items = same_size(10)
    size = items[0].held_bytes
    backlog = Backlog(limit_bytes=int(size * 3.5))
    dropped = [d for e in items for d in backlog.add(e)]
    assert dropped == items[:7] and list(backlog.queued) == items[7:]
    assert backlog.held_bytes == backlog.measured_bytes() == sum(e.held_bytes for e in items[7:])
    assert backlog.held_bytes <= backlog.limit_bytes
    huge = Entry(b"x" * backlog.limit_bytes, "none", backlog.limit_bytes, 1)
    assert backlog.add(huge) == [huge] and len(backlog) == 3  # never evicts all for one that cannot fit


def test_in_flight_entries_are_given_up_first_and_dropped_only_if_the_send_fails():
    items = same_size(6)
    backlog = Backlog(limit_bytes=sum(e.held_bytes for e in items[:3]) + 10)
    for e in items[:3]:
        backlog.add(e)
    chunk = backlog.take(max_request_bytes=2500)
    assert chunk == items[:2] and list(backlog.queued) == [items[2]]
    assert backlog.add(items[3]) == []  # room made by cancelling the oldest in-flight entry
    assert items[0].cancelled and not items[1].cancelled
    assert backlog.held_bytes == backlog.measured_bytes() <= backlog.limit_bytes
    sent, lost = backlog.settle(delivered=False, keep=True)  # retryable failure
    assert sent == [] and lost == [items[0]]
    assert list(backlog.queued) == [items[1], items[2], items[3]]  # oldest still first
    backlog.take(max_request_bytes=1)  # at least one entry per request
    backlog.add(items[4])  # cancels items[1], in flight
    sent, lost = backlog.settle(delivered=True, keep=False)
    assert sent == [items[1]] and lost == []  # it arrived after all: not a drop
    assert backlog.held_bytes == backlog.measured_bytes() == sum(e.held_bytes for e in items[2:5])
    backlog.take(max_request_bytes=10**9)
    sent, lost = backlog.settle(delivered=False, keep=False)  # permanent failure
    assert lost == items[2:5] and backlog.held_bytes == 0 == len(backlog)
