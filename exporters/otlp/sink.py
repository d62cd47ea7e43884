"""``OtlpSink``: converts batches on ``write`` and exports them from a worker thread.

The scrape loop never waits for the network. Unsent data lives in a backlog bounded in
encoded bytes (``backlog_bytes``, in-flight requests included); when it is full the oldest
batches go first and are counted. Failed exports retry with exponential backoff and jitter.
Cumulative series recover from drops at the next point; delta intervals that are dropped are
lost, which the drop counters make visible.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)

from collectors.model import Batch, Identity, SampleRow
from exporters.otlp.config import OtlpConfig, Protocol
from exporters.otlp.mapping import SCOPE, OtlpMapper

log = logging.getLogger(__name__)

# Loggers of the SDK exporters; their messages pass through the sink's scrubber.
SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


@dataclass(frozen=True)
class OtlpStats:
    exported_points: int = 0
    exported_batches: int = 0
    export_requests: int = 0
    failed_exports: int = 0
    dropped_batches: int = 0
    dropped_bytes: int = 0
    dropped_points: int = 0
    conversion_errors: int = 0
    backlog_batches: int = 0
    backlog_bytes: int = 0
    last_error: str = ""
    last_success_ts_s: float | None = None


@dataclass(slots=True)
class _Item:
    data: MetricsData
    nbytes: int
    points: int
    cancelled: bool = False  # in flight but given up to make room: dropped unless that export succeeds


class _Scrubber(logging.Filter):
    """Replaces secrets in SDK log records and remembers the last problem they reported."""

    def __init__(self, config: OtlpConfig) -> None:
        super().__init__()
        self.config = config
        self.last_message = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.config.redact(record.getMessage())
        record.msg, record.args = message, None
        if record.levelno >= logging.WARNING:
            self.last_message = message
        return True


def make_exporter(config: OtlpConfig) -> MetricExporter:
    """The SDK's OTLP exporter for the configured protocol, with every setting explicit."""
    if config.protocol is Protocol.GRPC:
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
        return GrpcExporter(
            endpoint=config.endpoint,
            insecure=config.insecure,
            headers={k.lower(): v for k, v in config.headers},  # gRPC metadata keys are lowercase
            timeout=config.timeout_s,
            compression=compression.get(config.compression, grpc.Compression.NoCompression),
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter(
        endpoint=config.endpoint,
        headers=dict(config.headers),
        timeout=config.timeout_s,
        compression=Compression(config.compression),
    )


def merge(items: list[MetricsData]) -> MetricsData:
    """One request from many batches: one ResourceMetrics per resource, one Metric per name."""
    resources: dict[tuple, tuple[object, dict[tuple, Metric]]] = {}
    for data in items:
        for rm in data.resource_metrics:
            key = tuple(sorted(rm.resource.attributes.items()))
            _, metrics = resources.setdefault(key, (rm.resource, {}))
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    mkey = (
                        metric.name,
                        metric.unit,
                        type(metric.data).__name__,
                        getattr(metric.data, "aggregation_temporality", None),
                    )
                    if mkey in metrics:
                        old = metrics[mkey]
                        points = [*old.data.data_points, *metric.data.data_points]
                        metrics[mkey] = replace(old, data=replace(old.data, data_points=points))
                    else:
                        metrics[mkey] = metric
    return MetricsData(
        [
            ResourceMetrics(resource, [ScopeMetrics(SCOPE, list(metrics.values()), "")], "")
            for resource, metrics in resources.values()
        ]
    )


def count_points(data: MetricsData) -> int:
    return sum(
        len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    )


class OtlpSink:
    """A ``Sink`` that exports to an OTLP endpoint (gRPC or HTTP/protobuf) in the background."""

    def __init__(
        self, config: OtlpConfig, identity: Identity | None = None, exporter: MetricExporter | None = None
    ) -> None:
        """``identity`` may be left out: the Resource follows each batch's identity anyway."""
        if not config.enabled:
            raise ValueError("OtlpSink needs an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint)")
        self.config = config
        self._mapper = OtlpMapper(config, identity or Identity(replica="unknown"))
        self._scrubber = _Scrubber(config)
        for name in SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._scrubber)
        self._exporter = exporter or make_exporter(config)
        self._convert_lock = threading.Lock()
        self._lock = threading.Condition()
        self._backlog: deque[_Item] = deque()
        self._inflight: list[_Item] = []
        self._stats = OtlpStats()
        self._attempts = 0
        self._wake = threading.Event()
        self._closing = False
        self._last_self_metrics: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    # -- Sink protocol -------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Convert and enqueue; never waits for the network."""
        try:
            with self._convert_lock:
                data = self._mapper.convert(batch)
            if data is None:
                return
            item = _Item(data, encode_metrics(data).ByteSize(), count_points(data))
        except Exception as exc:  # a bad row must not take the sidecar down
            log.warning("OTLP: could not convert a batch: %s", self.config.redact(repr(exc)))
            with self._lock:
                self._bump(conversion_errors=1)
            return
        with self._lock:
            self._enqueue(item)

    def flush(self) -> None:
        """Export now and wait (bounded) for that attempt to finish."""
        with self._lock:
            target = self._attempts + 1
            self._wake.set()
            self._lock.wait_for(
                lambda: self._attempts >= target or not self._thread.is_alive(),
                timeout=self.config.timeout_s + 2,
            )

    def close(self) -> None:
        if self._closing:
            return
        self.flush()
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=self.config.timeout_s + 2)
        self._exporter.shutdown()
        for name in SDK_LOGGERS:
            logging.getLogger(name).removeFilter(self._scrubber)

    # -- observability of the exporter itself -------------------------------------------

    def stats(self) -> OtlpStats:
        with self._lock:
            return self._stats

    def self_metrics(self, ts_s: float, interval_s: float | None = None) -> list[SampleRow]:
        """Exporter health as SampleRows (``enginescope_otlp_*``) for the sidecar's store."""
        s = self.stats()
        counters = {
            "enginescope_otlp_exported_points_total": s.exported_points,
            "enginescope_otlp_failed_exports_total": s.failed_exports,
            "enginescope_otlp_dropped_batches_total": s.dropped_batches,
            "enginescope_otlp_dropped_bytes_total": s.dropped_bytes,
            "enginescope_otlp_dropped_points_total": s.dropped_points,
        }
        rows = []
        for name, value in counters.items():
            previous = self._last_self_metrics.get(name)
            delta = None if previous is None else max(0.0, value - previous)
            self._last_self_metrics[name] = value
            rows.append(SampleRow(ts_s, name, "counter", (), float(value), delta, interval_s))
        rows.append(SampleRow(ts_s, "enginescope_otlp_backlog_bytes", "gauge", (), float(s.backlog_bytes)))
        rows.append(
            SampleRow(ts_s, "enginescope_otlp_backlog_batches", "gauge", (), float(s.backlog_batches))
        )
        return rows

    # -- backlog (callers hold self._lock) ----------------------------------------------

    def _bump(self, **increments: int) -> None:
        values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
        queued = [*self._backlog, *(i for i in self._inflight if not i.cancelled)]
        values["backlog_batches"] = len(queued)
        values["backlog_bytes"] = sum(i.nbytes for i in queued)
        self._stats = replace(self._stats, **values)

    def _enqueue(self, item: _Item) -> None:
        limit = self.config.backlog_bytes
        used = self._stats.backlog_bytes
        dropped: list[_Item] = []
        # Oldest first: the in-flight request holds the oldest batches, give those up first
        # (counted as dropped when that export ends, unless it succeeds after all).
        for old in self._inflight:
            if used + item.nbytes <= limit:
                break
            if not old.cancelled:
                old.cancelled = True
                used -= old.nbytes
        while self._backlog and used + item.nbytes > limit:
            old = self._backlog.popleft()
            used -= old.nbytes
            dropped.append(old)
        if used + item.nbytes > limit:
            dropped.append(item)  # larger than the whole backlog
        else:
            self._backlog.append(item)
        self._bump(
            dropped_batches=len(dropped),
            dropped_bytes=sum(i.nbytes for i in dropped),
            dropped_points=sum(i.points for i in dropped),
        )

    def _take_chunk(self) -> list[_Item]:
        chunk, size = [], 0
        while self._backlog and (
            not chunk or size + self._backlog[0].nbytes <= self.config.max_request_bytes
        ):
            item = self._backlog.popleft()
            chunk.append(item)
            size += item.nbytes
        self._inflight = chunk
        return chunk

    # -- worker --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff_s = 0.0
        next_export = time.monotonic() + self.config.interval_s
        while True:
            self._wake.wait(timeout=max(0.0, next_export - time.monotonic()))
            self._wake.clear()
            ok = self._drain()
            with self._lock:
                self._attempts += 1
                self._lock.notify_all()
            if self._closing:
                return
            if ok:
                backoff_s = 0.0
                next_export = time.monotonic() + self.config.interval_s
            else:
                backoff_s = min(self.config.retry_max_s, max(self.config.retry_initial_s, backoff_s * 2))
                wait_s = min(backoff_s * random.uniform(0.8, 1.2), self.config.retry_max_s)
                next_export = time.monotonic() + wait_s

    def _drain(self) -> bool:
        """Send the backlog oldest first in requests of at most ``max_request_bytes``."""
        while True:
            with self._lock:
                chunk = self._take_chunk()
            if not chunk:
                return True
            error = self._export([item.data for item in chunk])
            with self._lock:
                self._inflight = []
                if error is None:
                    self._bump(
                        exported_points=sum(i.points for i in chunk),
                        exported_batches=len(chunk),
                        export_requests=1,
                    )
                    self._stats = replace(self._stats, last_success_ts_s=time.time())
                    continue
                kept = [i for i in chunk if not i.cancelled]
                lost = [i for i in chunk if i.cancelled]
                self._backlog.extendleft(reversed(kept))  # oldest still first
                self._bump(
                    failed_exports=1,
                    dropped_batches=len(lost),
                    dropped_bytes=sum(i.nbytes for i in lost),
                    dropped_points=sum(i.points for i in lost),
                )
                self._stats = replace(self._stats, last_error=error)
            log.warning(
                "OTLP export to %s failed (%s); keeping %d batches (%d bytes), will retry",
                self.config.safe_endpoint(),
                error,
                self._stats.backlog_batches,
                self._stats.backlog_bytes,
            )
            return False

    def _export(self, items: list[MetricsData]) -> str | None:
        """None on success, else a redacted reason."""
        self._scrubber.last_message = ""
        try:
            result = self._exporter.export(merge(items), timeout_millis=self.config.timeout_s * 1000)
        except Exception as exc:
            return self.config.redact(f"{type(exc).__name__}: {exc}")
        if result is MetricExportResult.SUCCESS:
            return None
        return self._scrubber.last_message or "exporter returned FAILURE"


def otlp_sink_from_args(args: argparse.Namespace | None, env: Mapping[str, str]) -> OtlpSink | None:
    """The sidecar's OTLP sink from ``--otlp-*`` flags and OTEL_* variables; None when no
    endpoint is configured. Raises ``OtlpConfigError`` (a ValueError naming the input)."""
    config = OtlpConfig.from_env_and_args(env, args)
    if not config.enabled:
        return None
    log.info("OTLP export: %s", config)  # repr() redacts header values
    return OtlpSink(config)


def otlp_sink_from_env(env: Mapping[str, str]) -> OtlpSink | None:
    return otlp_sink_from_args(None, env)
