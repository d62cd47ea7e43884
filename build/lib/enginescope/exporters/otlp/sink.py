"""``OtlpSink``: converts and encodes batches on ``write`` and sends them from a worker thread.

The scrape loop never waits for the network. Each batch is encoded once into OTLP protobuf
bytes (compressed when the export is) and only those bytes are kept: ``backlog_bytes`` bounds
the memory the unsent data holds, in-flight requests included. When it is full the oldest
batches go first and are counted. Retryable failures back off exponentially with jitter (or
as long as the server asks); permanent ones drop the request and count it. Cumulative series
recover from drops at the next point; dropped delta intervals are lost, which the drop
counters make visible.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from enginescope.collectors.model import Batch, Identity, SampleRow
from enginescope.exporters.otlp.backlog import Backlog, Entry, encode_entry, request_body
from enginescope.exporters.otlp.config import OtlpConfig
from enginescope.exporters.otlp.mapping import OtlpMapper
from enginescope.exporters.otlp.transport import Outcome, SendResult, Transport, make_transport

log = logging.getLogger(__name__)

# Loggers that may print URLs or headers of our requests; their records pass the scrubber.
# (A filter sees only records logged on its own logger, not those of child loggers.)
SCRUBBED_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "grpc._channel", "grpc._common")


@dataclass(frozen=True)
class OtlpStats:
    exported_points: int = 0
    exported_batches: int = 0
    export_requests: int = 0
    failed_exports: int = 0
    dropped_batches: int = 0  # backlog overflow and permanent failures
    dropped_bytes: int = 0  # held bytes of the dropped batches
    dropped_points: int = 0
    rejected_points: int = 0  # points a receiver reported rejected in a partial success
    conversion_errors: int = 0
    backlog_batches: int = 0
    backlog_bytes: int = 0  # memory held by unsent batches (<= config.backlog_bytes)
    last_error: str = ""
    last_success_ts_s: float | None = None


class _Scrubber(logging.Filter):
    """Replaces secrets in log records of the HTTP/gRPC libraries."""

    def __init__(self, config: OtlpConfig) -> None:
        super().__init__()
        self.config = config

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.config.redact(record.getMessage()), None
        return True


class OtlpSink:
    """A ``Sink`` that exports to an OTLP endpoint (gRPC or HTTP/protobuf) in the background."""

    def __init__(
        self, config: OtlpConfig, identity: Identity | None = None, transport: Transport | None = None
    ) -> None:
        """``identity`` may be left out: the Resource follows each batch's identity anyway."""
        if not config.enabled:
            raise ValueError("OtlpSink needs an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint)")
        self.config = config
        self._mapper = OtlpMapper(config, identity or Identity(replica="unknown"))
        self._scrubber = _Scrubber(config)
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).addFilter(self._scrubber)
        self._transport = transport or make_transport(config)
        self._convert_lock = threading.Lock()
        self._lock = threading.Condition()
        self._backlog = Backlog(config.backlog_bytes)
        self._stats = OtlpStats()
        self._attempts = 0
        self._wake = threading.Event()
        self._closing = False
        self._last_self_metrics: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    # -- Sink protocol -------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Convert, encode and enqueue; never waits for the network."""
        try:
            with self._convert_lock:
                data = self._mapper.convert(batch)
            if data is None:
                return
            entry = encode_entry(data, self.config.compression)
        except Exception as exc:  # a bad row must not take the sidecar down
            log.warning("OTLP: could not convert a batch: %s", self.config.redact(repr(exc)))
            with self._lock:
                self._bump(conversion_errors=1)
            return
        with self._lock:
            self._bump(**_dropped(self._backlog.add(entry)))

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
        self._transport.close()
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).removeFilter(self._scrubber)

    # -- observability of the exporter itself -------------------------------------------

    def stats(self) -> OtlpStats:
        with self._lock:
            return self._stats

    def backlog_measured_bytes(self) -> int:
        """Bytes the backlog holds, summed over the objects it actually keeps."""
        with self._lock:
            return self._backlog.measured_bytes()

    def self_metrics(self, ts_s: float, interval_s: float | None = None) -> list[SampleRow]:
        """Exporter health as SampleRows (``enginescope_otlp_*``) for the sidecar's store."""
        s = self.stats()
        counters = {
            "enginescope_otlp_exported_points_total": s.exported_points,
            "enginescope_otlp_failed_exports_total": s.failed_exports,
            "enginescope_otlp_dropped_batches_total": s.dropped_batches,
            "enginescope_otlp_dropped_bytes_total": s.dropped_bytes,
            "enginescope_otlp_dropped_points_total": s.dropped_points,
            "enginescope_otlp_rejected_points_total": s.rejected_points,
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

    # -- worker --------------------------------------------------------------------------

    def _bump(self, **increments: int) -> None:
        """Add to counters and refresh the backlog gauges (caller holds self._lock)."""
        values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
        values["backlog_batches"] = len(self._backlog)
        values["backlog_bytes"] = self._backlog.held_bytes
        self._stats = replace(self._stats, **values)

    def _run(self) -> None:
        backoff_s = 0.0
        next_export = time.monotonic() + self.config.interval_s
        while True:
            self._wake.wait(timeout=max(0.0, next_export - time.monotonic()))
            self._wake.clear()
            failure = self._drain()
            with self._lock:
                self._attempts += 1
                self._lock.notify_all()
            if self._closing:
                return
            if failure is None:
                backoff_s = 0.0
                next_export = time.monotonic() + self.config.interval_s
            else:
                backoff_s = min(self.config.retry_max_s, max(self.config.retry_initial_s, backoff_s * 2))
                wait_s = min(backoff_s * random.uniform(0.8, 1.2), self.config.retry_max_s)
                next_export = time.monotonic() + max(wait_s, failure.retry_after_s or 0.0)

    def _drain(self) -> SendResult | None:
        """Send the backlog oldest first in requests of at most ``max_request_bytes``
        (serialized); None when it is empty, else the retryable failure that stopped it."""
        while True:
            with self._lock:
                chunk = self._backlog.take(self.config.max_request_bytes)
            if not chunk:
                return None
            result = self._send(chunk)
            self._report(result, len(chunk), self._settle(result))
            if result.outcome is Outcome.RETRY:
                return result

    def _settle(self, result: SendResult) -> OtlpStats:
        """Account for the in-flight request's outcome; returns the new stats."""
        with self._lock:
            if result.outcome is Outcome.OK:
                sent, _ = self._backlog.settle(delivered=True, keep=False)
                self._bump(
                    exported_points=sum(e.points for e in sent),
                    exported_batches=len(sent),
                    export_requests=1,
                    rejected_points=result.rejected_points,
                )
                last_error = result.error or self._stats.last_error  # a partial success is an error too
                self._stats = replace(self._stats, last_success_ts_s=time.time(), last_error=last_error)
            else:
                _, lost = self._backlog.settle(delivered=False, keep=result.outcome is Outcome.RETRY)
                self._bump(failed_exports=1, **_dropped(lost))
                self._stats = replace(self._stats, last_error=result.error)
            return self._stats

    def _report(self, result: SendResult, batches: int, stats: OtlpStats) -> None:
        endpoint = self.config.safe_endpoint()
        if result.outcome is Outcome.OK:
            if result.error:
                log.warning("OTLP export to %s: %s", endpoint, result.error)
        elif result.outcome is Outcome.DROP:
            log.warning("OTLP export to %s rejected (%s); dropped %d batches, not retried",
                        endpoint, result.error, batches)  # fmt: skip
        else:
            log.warning("OTLP export to %s failed (%s); keeping %d batches (%d bytes), will retry",
                        endpoint, result.error, stats.backlog_batches, stats.backlog_bytes)  # fmt: skip

    def _send(self, chunk: list[Entry]) -> SendResult:
        try:
            return self._transport.send(request_body(chunk, self._transport.body_encoding))
        except Exception as exc:  # deterministic (a bug, bad metadata): retrying would wedge the queue
            return SendResult(Outcome.DROP, self.config.redact(f"{type(exc).__name__}: {exc}"))


def _dropped(entries: list[Entry]) -> dict[str, int]:
    return {
        "dropped_batches": len(entries),
        "dropped_bytes": sum(e.held_bytes for e in entries),
        "dropped_points": sum(e.points for e in entries),
    }


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
