"""``OtlpSink``: keeps per-series state on ``write`` and exports once per interval.

OpenTelemetry's PeriodicExportingMetricReader semantics, for data scraped elsewhere:
``write`` (once per scrape) only folds the batch into the mapper's cumulative state; a worker
thread collects every ``interval_s`` (one point per live series, idle ones included, for
cumulative; the change since the last export for delta), encodes and compresses that export
once, and sends it. The scrape loop never waits for the network.

Unsent exports are kept as their wire bytes: ``backlog_bytes`` bounds the memory they hold,
in-flight requests included; when it is full the oldest go first and are counted. Retryable
failures back off exponentially with jitter (or as long as the server asks); permanent ones
drop the request and count it. Cumulative series recover from drops at the next export;
dropped delta intervals are lost, which the drop counters make visible.
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
    exported_batches: int = 0  # exports (one per interval) delivered
    export_requests: int = 0
    failed_exports: int = 0
    dropped_batches: int = 0  # backlog overflow and permanent failures
    dropped_bytes: int = 0  # held bytes of the dropped batches
    dropped_points: int = 0
    rejected_points: int = 0  # points a receiver reported rejected in a partial success
    conversion_errors: int = 0
    backlog_batches: int = 0
    backlog_bytes: int = 0  # memory held by unsent batches (<= config.backlog_bytes)
    live_series: int = 0
    overflow_updates: int = 0  # updates folded into otel.metric.overflow series (series cap)
    expired_series: int = 0  # series that left after series_ttl_s without an update
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
    """A ``Sink`` that exports to an OTLP endpoint (gRPC or HTTP/protobuf) once per interval."""

    def __init__(
        self,
        config: OtlpConfig,
        identity: Identity | None = None,
        transport: Transport | None = None,
        clock=time.time,
    ) -> None:
        """``identity`` may be left out: the Resource follows each batch's identity anyway."""
        if not config.enabled:
            raise ValueError("OtlpSink needs an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint)")
        self.config = config
        self._clock = clock
        self._mapper = OtlpMapper(config, identity or Identity(replica="unknown"))
        self._scrubber = _Scrubber(config)
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).addFilter(self._scrubber)
        self._transport = transport or make_transport(config)
        self._state_lock = threading.Lock()  # the mapper's state: write() vs the worker's collect
        self._lock = threading.Condition()  # backlog and stats
        self._backlog = Backlog(config.backlog_bytes)
        self._stats = OtlpStats()
        self._flush_requests = 0
        self._flushes_done = 0
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._send_deadline: float | None = None  # monotonic; set by shutdown/force_flush
        self._last_self_metrics: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    # -- Sink protocol -------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Fold one scrape into the per-series state; never touches the network."""
        try:
            with self._state_lock:
                self._mapper.update(batch)
        except Exception as exc:  # a bad row must not take the sidecar down
            log.warning("OTLP: could not convert a batch: %s", self.config.redact(repr(exc)))
            with self._lock:
                self._bump(conversion_errors=1)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export now (one collect) and wait, at most ``timeout_s``, for the backlog to drain.
        True when everything collected so far was delivered."""
        timeout_s = self.config.timeout_s + 2 if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if not self._thread.is_alive():
                return False
            self._flush_requests += 1
            target = self._flush_requests  # a round that starts after this request answers it
            self._send_deadline = deadline
            self._wake.set()
            done = self._lock.wait_for(
                lambda: self._flushes_done >= target or not self._thread.is_alive(),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            return bool(done) and len(self._backlog) == 0

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Final export, then stop; returns within ``timeout_s`` even if the endpoint hangs.
        True when everything was delivered."""
        if self._closed:
            return True
        timeout_s = self.config.timeout_s + 2 if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            self._send_deadline = deadline
            self._closing = True  # the worker's last round: one final collect and send
            self._wake.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            delivered = not self._thread.is_alive() and len(self._backlog) == 0
        self._closed = True
        if not self._thread.is_alive():
            self._transport.close()
        else:  # a send is still hanging: leave the daemon thread, do not block the exit
            log.warning("OTLP export to %s still pending at shutdown; abandoned", self.config.safe_endpoint())
        for name in SCRUBBED_LOGGERS:
            logging.getLogger(name).removeFilter(self._scrubber)
        return delivered

    def flush(self) -> None:  # older callers
        self.force_flush()

    def close(self) -> None:  # older callers
        self.shutdown()

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
            "enginescope_otlp_overflow_updates_total": s.overflow_updates,
            "enginescope_otlp_expired_series_total": s.expired_series,
        }
        rows = []
        for name, value in counters.items():
            previous = self._last_self_metrics.get(name)
            delta = None if previous is None else max(0.0, value - previous)
            self._last_self_metrics[name] = value
            rows.append(SampleRow(ts_s, name, "counter", (), float(value), delta, interval_s))
        for name, value in (
            ("enginescope_otlp_backlog_bytes", s.backlog_bytes),
            ("enginescope_otlp_backlog_batches", s.backlog_batches),
            ("enginescope_otlp_series", s.live_series),
        ):
            rows.append(SampleRow(ts_s, name, "gauge", (), float(value)))
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
        next_collect = time.monotonic() + self.config.interval_s
        next_send = next_collect
        handled_flushes = 0
        while True:
            wait_s = min(next_collect, next_send) - time.monotonic()
            self._wake.wait(timeout=max(0.0, wait_s))
            self._wake.clear()
            with self._lock:
                flush, handled_flushes = self._flush_requests > handled_flushes, self._flush_requests
            now = time.monotonic()
            if flush or self._closing or now >= next_collect:
                self._collect()
                next_collect = now + self.config.interval_s
            failure = None
            if flush or self._closing or now >= next_send:
                failure = self._drain(self._send_deadline if flush or self._closing else None)
            with self._lock:
                self._flushes_done = handled_flushes
                self._lock.notify_all()
            if self._closing:
                return
            if failure is None:
                backoff_s = 0.0
                next_send = next_collect
            else:
                backoff_s = min(self.config.retry_max_s, max(self.config.retry_initial_s, backoff_s * 2))
                wait_s = min(backoff_s * random.uniform(0.8, 1.2), self.config.retry_max_s)
                next_send = time.monotonic() + max(wait_s, failure.retry_after_s or 0.0)

    def _collect(self) -> None:
        """One export on the reader's clock: collect, encode and compress once, enqueue."""
        try:
            with self._state_lock:
                now_s, held = self._clock(), self._mapper.holds_events
                exports = [self._mapper.collect(now_s)]
                if self._closing and held:
                    # no next export: a new event series' count follows its 0 now, 2 ms later
                    # (Prometheus keeps milliseconds), so increase() still sees 0 -> n
                    exports.append(self._mapper.collect(now_s + 0.002))
                state = self._mapper.state
                series = dict(
                    live_series=len(state),
                    overflow_updates=state.overflow_updates,
                    expired_series=self._mapper.expired_series,
                )
            encoding = self._transport.body_encoding
            entries = [encode_entry(data, encoding) for data in exports if data is not None]
        except Exception as exc:  # a bug in conversion must not stop the exporter
            log.warning("OTLP: could not build an export: %s", self.config.redact(repr(exc)))
            with self._lock:
                self._bump(conversion_errors=1)
            return
        with self._lock:
            self._stats = replace(self._stats, **series)
            for entry in entries:
                self._bump(**_dropped(self._backlog.add(entry)))
            if not entries:
                self._bump()  # refresh the backlog gauges

    def _drain(self, deadline: float | None) -> SendResult | None:
        """Send the backlog oldest first in requests of at most ``max_request_bytes``
        (serialized); None when it is empty, else the retryable failure that stopped it."""
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return SendResult(Outcome.RETRY, "flush/shutdown deadline reached")
            with self._lock:
                chunk = self._backlog.take(self.config.max_request_bytes)
            if not chunk:
                return None
            result = self._send(chunk, deadline)
            self._report(result, len(chunk), self._settle(result))
            if result.outcome is not Outcome.OK and self._closing:
                return result  # shutting down: no second try
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

    def _send(self, chunk: list[Entry], deadline: float | None) -> SendResult:
        timeout_s = self.config.timeout_s
        if deadline is not None:  # a flush or shutdown waits only this long: so does the request
            timeout_s = max(0.05, min(timeout_s, deadline - time.monotonic()))
        try:
            return self._transport.send(request_body(chunk, self._transport.body_encoding), timeout_s)
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
