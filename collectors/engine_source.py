"""Scrape an engine's ``/metrics`` over HTTP and turn it into rows.

The sidecar shares the container with the engine, so a scrape is one bounded GET per tick:
short timeout, no retries, and the text-format Accept header (SGLang's OpenMetrics body is
malformed with prometheus_client 0.23-0.26; the parser copes with it anyway).
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from enginescope.collectors.model import Batch, EventKind, EventRow, Identity, SampleRow, SignalRow
from enginescope.collectors.normalise import Normaliser

log = logging.getLogger(__name__)

ACCEPT_TEXT = "text/plain;version=0.0.4"
MAX_BODY_BYTES = 64 * 1024 * 1024
# Counter families of a restarted engine reappear over several scrapes (a series appears only
# after its first event), each looking like a reset: report one restart per window, not one per family.
RESTART_DEBOUNCE_S = 60.0


class ScrapeError(Exception):
    """A failed scrape; the message names the URL."""


@dataclass(slots=True)
class ScrapeResult:
    body: str
    content_type: str | None


def http_get(url: str, timeout_s: float, accept: str = ACCEPT_TEXT) -> ScrapeResult:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "enginescope-sidecar"})
    deadline_s = time.monotonic() + timeout_s
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = _read_body(response, url, timeout_s, deadline_s)
            content_type = response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScrapeError(f"{url}: {reason}") from exc
    except http.client.HTTPException as exc:  # a bad status line, a broken chunked body
        raise ScrapeError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise ScrapeError(f"{url}: body larger than {MAX_BODY_BYTES} bytes")
    return ScrapeResult(raw.decode("utf-8", errors="replace"), content_type)


def _read_body(response: Any, url: str, timeout_s: float, deadline_s: float) -> bytes:
    """Read at most ``MAX_BODY_BYTES + 1`` bytes, giving up at ``deadline_s`` (monotonic).

    The socket timeout bounds each read only: a body trickling in would hold the tick for ever.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        if time.monotonic() > deadline_s:
            raise ScrapeError(f"{url}: no complete response within {timeout_s:g}s")
        chunk = response.read1(min(1 << 20, MAX_BODY_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if getattr(response, "length", None):  # Content-Length not reached: the connection was cut
        raise ScrapeError(f"{url}: response cut short ({response.length} bytes missing)")
    return b"".join(chunks)


class _Counter:
    """A self-metric counter rendered like any engine counter (value + per-interval delta)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.value = 0.0
        self._reported = 0.0

    def row(self, ts_s: float, interval_s: float) -> SampleRow:
        delta, self._reported = self.value - self._reported, self.value
        return SampleRow(ts_s, self.metric, "counter", (), self.value, delta, interval_s)


class EngineSource:
    """One engine endpoint: readiness via ``/health``, samples via ``/metrics``."""

    name = "engine"

    def __init__(
        self,
        engine_url: str,
        identity: Identity,
        *,
        engine: str = "auto",
        timeout_s: float = 2.0,
        health_path: str = "/health",
        metrics_path: str = "/metrics",
    ) -> None:
        base = engine_url.rstrip("/")
        self.metrics_url = base + metrics_path
        self.health_url = base + health_path
        self.identity = identity
        self.timeout_s = timeout_s
        self.normaliser = Normaliser(engine)
        self.ready = False
        self._up: bool | None = None
        self._last_ts_s: float | None = None
        self._last_parse_error = ""
        self.model_name = ""
        self._last_restart_s = float("-inf")
        self._scrapes = _Counter("enginescope_sidecar_scrapes_total")
        self._errors = _Counter("enginescope_sidecar_scrape_errors_total")
        self._parse_errors = _Counter("enginescope_sidecar_parse_errors_total")

    @property
    def engine(self) -> str:
        return self.normaliser.engine

    def collect(self, now_s: float) -> Batch:
        batch = Batch(self.identity)
        if not self.ready:
            self._check_health(now_s, batch)
        started = time.perf_counter()
        self._scrapes.value += 1
        try:
            result = http_get(self.metrics_url, self.timeout_s)
        except ScrapeError as exc:
            self._errors.value += 1
            self._set_up(False, now_s, batch, str(exc))
        else:
            self._set_up(True, now_s, batch, "")
            self._normalise(result, now_s, batch)
        self._self_metrics(now_s, time.perf_counter() - started, batch)
        return batch

    def probe(self) -> bool:
        """One quiet GET of /metrics: does the engine answer at all?"""
        try:
            http_get(self.metrics_url, self.timeout_s)
        except ScrapeError:
            return False
        return True

    def close(self) -> None:
        return None

    def _check_health(self, now_s: float, batch: Batch) -> None:
        try:
            http_get(self.health_url, self.timeout_s, accept="*/*")
        except ScrapeError as exc:
            log.debug("engine not ready: %s", exc)
            return
        self.ready = True
        log.info("engine ready at %s", self.health_url)
        batch.events.append(EventRow(now_s, EventKind.ENGINE_READY, f"health OK at {self.health_url}"))

    def _set_up(self, up: bool, now_s: float, batch: Batch, reason: str) -> None:
        if up == self._up:
            return
        if up:
            log.info("engine up: scraping %s", self.metrics_url)
            if self._up is False:
                batch.events.append(EventRow(now_s, EventKind.ENGINE_UP, self.metrics_url))
        else:
            log.warning("engine down: %s", reason)
            batch.events.append(EventRow(now_s, EventKind.ENGINE_DOWN, reason))
            self.ready = False  # a restarted engine goes through /health again: engine_ready once more
        self._up = up

    def _normalise(self, result: ScrapeResult, now_s: float, batch: Batch) -> None:
        scrape = self.normaliser.process(result.body, now_s, result.content_type)
        batch.samples.extend(scrape.samples)
        batch.histograms.extend(scrape.histograms)
        batch.series.extend(scrape.series)
        batch.helps.update(scrape.helps)
        batch.signals.extend(scrape.signals)
        batch.events.extend(self._debounce_restarts(scrape.events, now_s))
        if not self.model_name:
            self.model_name = _model_label(scrape.samples) or _model_label(scrape.histograms)
        if scrape.errors:
            self._parse_errors.value += len(scrape.errors)
        first_error = str(scrape.errors[0]) if scrape.errors else ""
        if first_error != self._last_parse_error:  # log changes, not every scrape
            if first_error:
                log.warning(
                    "%s: %d malformed line(s); first: %s", self.metrics_url, len(scrape.errors), first_error
                )
            else:
                log.info("%s: exposition parses cleanly again", self.metrics_url)
            self._last_parse_error = first_error

    def _debounce_restarts(self, events: list[EventRow], now_s: float) -> list[EventRow]:
        kept = []
        for event in events:
            if event.kind == EventKind.ENGINE_RESTART:
                if now_s - self._last_restart_s < RESTART_DEBOUNCE_S:
                    log.debug("restart already reported; more families reset: %s", event.detail)
                    continue
                log.warning("engine restart detected: %s", event.detail)
                self._last_restart_s = now_s
            kept.append(event)
        return kept

    def _self_metrics(self, now_s: float, duration_s: float, batch: Batch) -> None:
        interval_s = now_s - self._last_ts_s if self._last_ts_s is not None else 0.0
        self._last_ts_s = now_s
        for counter in (self._scrapes, self._errors, self._parse_errors):
            batch.samples.append(counter.row(now_s, interval_s))
        batch.samples.append(
            SampleRow(now_s, "enginescope_sidecar_scrape_duration_seconds", "gauge", (), duration_s)
        )
        batch.signals.append(SignalRow(now_s, "engine_up", 1.0 if self._up else 0.0, interval_s))


def _model_label(rows: list) -> str:
    for row in rows:
        for name, value in row.labels:
            if name == "model_name" and value:
                return value
    return ""
