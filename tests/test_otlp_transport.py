"""OTLP response handling against real receivers: permanent vs retryable failures, Retry-After,
gRPC RetryInfo, partial success; what the sink drops, counts and retries."""

from __future__ import annotations

import grpc
import pytest

from enginescope.exporters.otlp.config import Protocol
from enginescope.exporters.otlp.sink import OtlpSink
from enginescope.exporters.otlp.transport import HttpTransport, Outcome, make_transport, parse_retry_after
from tests.otlp_data import IDENTITY, batches
from tests.otlp_receivers import Failure, GrpcReceiver, HttpReceiver
from tests.test_otlp_export import SECRET, make_config, receiver_for

pytestmark = pytest.mark.slow
PERMANENT = {Protocol.HTTP_PROTOBUF: 400, Protocol.GRPC: grpc.StatusCode.INVALID_ARGUMENT}


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(429, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY), (504, Outcome.RETRY),
     (400, Outcome.DROP), (401, Outcome.DROP), (413, Outcome.DROP), (500, Outcome.DROP)],
)  # fmt: skip
def test_http_status_classes_follow_the_otlp_spec(status, outcome):
    receiver = HttpReceiver().start()
    transport = make_transport(make_config(receiver, Protocol.HTTP_PROTOBUF))
    try:
        receiver.fail_next(Failure(status, message=f"bad key {SECRET}", retry_after="7"))
        result = transport.send(b"")
        assert transport.send(b"").outcome is Outcome.OK  # the next request is accepted
    finally:
        transport.close()
        receiver.stop()
    assert isinstance(transport, HttpTransport) and result.outcome is outcome
    assert result.error == f"HTTP {status}: bad key ***"  # the google.rpc.Status message, redacted
    assert result.retry_after_s == (7.0 if outcome is Outcome.RETRY else None)


def test_redirects_are_not_followed_so_api_keys_stay_with_the_configured_host():
    receiver, elsewhere = HttpReceiver().start(), HttpReceiver().start()
    transport = make_transport(make_config(receiver, Protocol.HTTP_PROTOBUF))
    try:
        receiver.fail_next(Failure(307, location=elsewhere.endpoint + "/v1/metrics"))
        result = transport.send(b"")
    finally:
        transport.close()
        receiver.stop()
        elsewhere.stop()
    assert result.outcome is Outcome.DROP and result.error.startswith("HTTP 307")
    assert elsewhere.arrivals_s == []


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_s=1445412500.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412500.0) == 0.0  # in the past
    assert parse_retry_after("86400") == 300.0  # capped: one hint never parks the exporter for a day
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("protocol", list(Protocol))
def test_permanent_rejection_is_dropped_and_counted_not_retried(protocol):
    receiver = receiver_for(protocol).start()
    sink = OtlpSink(make_config(receiver, protocol), IDENTITY)  # exports only when flushed
    fed = batches(4)
    try:
        receiver.fail_next(Failure(PERMANENT[protocol], message=f"schema error {SECRET}"))
        for batch in fed[:3]:
            sink.write(batch)
        sink.flush()  # one export of three scrapes: rejected, dropped, not retried
        rejected = sink.stats()
        sink.write(fed[3])
        sink.flush()  # the next export is a fresh collect
        after, arrivals, points = sink.stats(), list(receiver.arrivals_s), receiver.points()
    finally:
        sink.close()
        receiver.stop()
    assert [accepted for _, accepted in arrivals] == [False, True]  # one rejected, one sent
    assert rejected.dropped_batches == 1 and rejected.failed_exports == 1 and rejected.backlog_bytes == 0
    assert rejected.dropped_points > 0 and rejected.dropped_bytes > 0 and rejected.exported_points == 0
    assert "schema error ***" in rejected.last_error and SECRET not in rejected.last_error
    assert after.dropped_batches == 1 and after.exported_batches == 1
    assert after.exported_points == len(points) > 0
    # cumulative data recovers: the accepted export holds all four scrapes
    (ttft,) = [p for p in points if p.name == "gen_ai.server.time_to_first_token"]
    assert ttft.count == sum(b.histograms[0].count for b in fed)


@pytest.mark.parametrize("protocol", list(Protocol))
def test_server_requested_delay_is_honoured_then_the_data_is_delivered(protocol):
    """HTTP 503 + Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo: retried after that delay,
    not after the (much shorter) configured backoff."""
    receiver = receiver_for(protocol).start()
    if protocol is Protocol.GRPC:
        failure = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay_s=1.0)
    else:
        failure = Failure(503, retry_after="1")
    receiver.fail_next(failure)
    sink = OtlpSink(make_config(receiver, protocol, retry_initial_s=0.05, retry_max_s=0.05), IDENTITY)
    try:
        sink.write(batches(1)[0])
        sink.flush()
        assert sink.stats().failed_exports == 1 and sink.stats().backlog_batches == 1
        assert receiver.wait_for(lambda pts: len(pts) > 0, timeout_s=10)
        sink.flush()  # one more export: waits for the worker to have settled the retried send
        stats, arrivals = sink.stats(), list(receiver.arrivals_s)
    finally:
        sink.close()
        receiver.stop()
    (first_s, first_ok), (second_s, second_ok), (_, third_ok) = arrivals
    assert not first_ok and second_ok and third_ok and second_s - first_s >= 0.9
    assert stats.dropped_batches == 0 and stats.exported_batches == 2 and stats.backlog_bytes == 0


def test_grpc_resource_exhausted_without_retry_info_is_permanent():
    receiver = GrpcReceiver().start()
    transport = make_transport(make_config(receiver, Protocol.GRPC))
    try:
        receiver.fail_next(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, message="quota"))
        receiver.fail_next(Failure(grpc.StatusCode.UNAVAILABLE, message="restarting"))
        exhausted, unavailable = transport.send(b""), transport.send(b"")
    finally:
        transport.close()
        receiver.stop()
    assert exhausted.outcome is Outcome.DROP and exhausted.error == "gRPC RESOURCE_EXHAUSTED: quota"
    assert unavailable.outcome is Outcome.RETRY and unavailable.retry_after_s is None


@pytest.mark.parametrize("protocol", list(Protocol))
def test_partial_success_counts_rejected_points_and_is_not_retried(protocol):
    receiver = receiver_for(protocol).start()
    receiver.partial = (3, "3 points had no unit")
    sink = OtlpSink(make_config(receiver, protocol), IDENTITY)
    try:
        sink.write(batches(1)[0])
        sink.flush()
        stats, arrivals = sink.stats(), list(receiver.arrivals_s)
        rows = {r.metric: r.value for r in sink.self_metrics(ts_s=1.0)}
    finally:
        sink.close()
        receiver.stop()
    assert len(arrivals) == 1 and stats.rejected_points == 3 and stats.failed_exports == 0
    assert "3 points had no unit" in stats.last_error and stats.backlog_bytes == 0
    assert rows["enginescope_otlp_rejected_points_total"] == 3
