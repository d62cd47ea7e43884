"""Send one serialized ``ExportMetricsServiceRequest`` over OTLP/HTTP or OTLP/gRPC.

A transport classifies each attempt the way the OTLP spec says a client must: success (maybe
with a partial-success report), retryable (with the server's requested delay if any), or
permanent (the data is dropped, never retried). Every error text is redacted of secrets.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from enginescope.exporters.otlp.config import OtlpConfig, Protocol

log = logging.getLogger(__name__)

GRPC_EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
RETRYABLE_HTTP_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 300.0  # never park the exporter longer than this on one server hint
_ERROR_TEXT_CHARS = 300


class Outcome(Enum):
    OK = "ok"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    error: str = ""  # redacted; for OK, the partial-success message if any
    retry_after_s: float | None = None
    rejected_points: int = 0


class Transport(TypingProtocol):
    body_encoding: str  # the encoding send() expects its body in

    def send(self, body: bytes, timeout_s: float | None = None) -> SendResult: ...

    def close(self) -> None: ...


def make_transport(config: OtlpConfig) -> Transport:
    if config.protocol is Protocol.GRPC:
        return GrpcTransport(config)
    return HttpTransport(config)


def _partial_success(response: ExportMetricsServiceResponse, config: OtlpConfig) -> SendResult:
    partial = response.partial_success
    if partial.rejected_data_points or partial.error_message:
        message = f"partial success: {partial.rejected_data_points} points rejected: {partial.error_message}"
        return SendResult(Outcome.OK, config.redact(message), rejected_points=partial.rejected_data_points)
    return SendResult(Outcome.OK)


# -- OTLP/HTTP ------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds (``120`` or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now_s = time.time() if now_s is None else now_s
    return min(max(0.0, when.timestamp() - now_s), MAX_RETRY_AFTER_S)


class HttpTransport:
    """POST application/x-protobuf to the metrics URL (keep-alive session)."""

    def __init__(self, config: OtlpConfig) -> None:
        import requests

        self.config = config
        self.body_encoding = config.compression
        self._session = requests.Session()
        self._session.headers.update(dict(config.headers))
        self._session.headers["Content-Type"] = "application/x-protobuf"
        self._session.headers["User-Agent"] = "enginescope-otlp"
        if config.compression != "none":
            self._session.headers["Content-Encoding"] = config.compression

    def send(self, body: bytes, timeout_s: float | None = None) -> SendResult:
        import requests

        timeout_s = self.config.timeout_s if timeout_s is None else timeout_s
        try:
            # No redirects: requests would replay custom API-key headers to another host.
            reply = self._session.post(
                self.config.endpoint, data=body, timeout=timeout_s, allow_redirects=False
            )
        except requests.RequestException as exc:  # connection refused, timeout, TLS ...
            return SendResult(Outcome.RETRY, self.config.redact(f"{type(exc).__name__}: {exc}"))
        if reply.status_code == 200:
            if not reply.headers.get("Content-Type", "").startswith("application/x-protobuf"):
                return SendResult(Outcome.OK)  # accepted; no partial-success report to read
            response = ExportMetricsServiceResponse()
            try:
                response.ParseFromString(reply.content)
            except Exception:  # a 200 with an unreadable body still means accepted
                return SendResult(Outcome.OK)
            return _partial_success(response, self.config)
        reason = self.config.redact(f"HTTP {reply.status_code}: {_status_text(reply)}")
        if reply.status_code in RETRYABLE_HTTP_STATUS:
            return SendResult(Outcome.RETRY, reason, parse_retry_after(reply.headers.get("Retry-After")))
        return SendResult(Outcome.DROP, reason)  # other 3xx/4xx/5xx: the spec forbids retrying

    def close(self) -> None:
        self._session.close()


def _status_text(reply) -> str:
    """The server's reason: a google.rpc.Status body (OTLP/HTTP), else the start of the text."""
    if reply.headers.get("Content-Type", "").startswith("application/x-protobuf"):
        from google.rpc.status_pb2 import Status

        status = Status()
        try:
            status.ParseFromString(reply.content)
            if status.message:
                return status.message[:_ERROR_TEXT_CHARS]
        except Exception:
            pass
    text = reply.text.strip().replace("\n", " ")
    return text[:_ERROR_TEXT_CHARS] or reply.reason or ""


# -- OTLP/gRPC ------------------------------------------------------------------------------


class GrpcTransport:
    """MetricsService/Export with the already-serialized request as the message bytes."""

    def __init__(self, config: OtlpConfig) -> None:
        import grpc

        self.config = config
        self.body_encoding = "none"  # gRPC compresses the message itself
        parts = urlsplit(config.endpoint)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        target = f"{host}:{parts.port}" if parts.port else str(host)
        insecure = parts.scheme == "http" if config.insecure is None else config.insecure
        if insecure:
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        self._export = self._channel.unary_unary(
            GRPC_EXPORT_METHOD,
            request_serializer=None,  # the body is already a serialized request
            response_deserializer=ExportMetricsServiceResponse.FromString,
        )
        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
        self._compression = compression.get(config.compression, grpc.Compression.NoCompression)
        self._metadata = tuple((k.lower(), v) for k, v in config.headers)  # metadata keys are lowercase

    def send(self, body: bytes, timeout_s: float | None = None) -> SendResult:
        import grpc

        timeout_s = self.config.timeout_s if timeout_s is None else timeout_s
        try:
            response = self._export(
                body, timeout=timeout_s, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as err:
            return classify_grpc_error(err, self.config)
        return _partial_success(response, self.config)

    def close(self) -> None:
        self._channel.close()


def classify_grpc_error(err, config: OtlpConfig) -> SendResult:
    """Retryable codes per the OTLP spec; RESOURCE_EXHAUSTED only when the server sent RetryInfo."""
    import grpc

    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    reason = config.redact(f"gRPC {code.name}: {details}"[:_ERROR_TEXT_CHARS])
    delay_s = _retry_info_delay_s(err)
    retryable = {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
    if code in retryable or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay_s is not None):
        return SendResult(Outcome.RETRY, reason, delay_s)
    return SendResult(Outcome.DROP, reason)


def _retry_info_delay_s(err) -> float | None:
    """The google.rpc.RetryInfo delay in the ``grpc-status-details-bin`` trailer, if any."""
    from google.rpc.error_details_pb2 import RetryInfo
    from google.rpc.status_pb2 import Status

    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        status = Status()
        try:
            status.ParseFromString(value)
        except Exception:
            return None
        for detail in status.details:
            info = RetryInfo()
            if detail.Unpack(info):
                return min(info.retry_delay.ToTimedelta().total_seconds(), MAX_RETRY_AFTER_S)
    return None
