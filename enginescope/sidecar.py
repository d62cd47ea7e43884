"""The sidecar: one loop that ticks every ``interval_s``, collects every source, feeds every sink.

It owns time and failure (style: OpenTelemetry's PeriodicExportingMetricReader): a source or
sink that raises is logged once per distinct error and counted, never allowed to stop the loop.
Lifecycle events go through one state machine (``collectors/lifecycle.py``); ``stop`` shares
one deadline across the final scrape and every sink's shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginescope.collectors.engine_source import EngineSource
from enginescope.collectors.identity import resolve_identity
from enginescope.collectors.lifecycle import Lifecycle
from enginescope.collectors.model import Batch, EventKind, EventRow, Identity, SampleRow
from enginescope.collectors.pipeline import Sink, Source, as_sink, shutdown_all

log = logging.getLogger(__name__)


@dataclass
class SidecarConfig:
    engine_url: str
    store_dir: Path | str  # a folder or an object-store URL (s3://bucket/prefix)
    interval_s: float = 1.0
    engine: str = "auto"
    replica: str | None = None
    model: str = ""
    region: str = ""
    gpu_type: str = ""
    cloud_provider: str = ""
    request_log_dir: Path | None = None
    store_request_params: bool = False
    nvml: Any | None = (
        None  # module-like NVML surface (pynvml or enginescope.simfleet.nvml); None = no GPU source
    )
    timeout_s: float = 2.0
    flush_interval_s: float = 2.0
    retention_days: float | None = None  # None keeps everything
    raw_retention_days: float | None = None  # raw tables with a minute rollup: None = retention_days
    extra_sinks: list[Any] = field(default_factory=list)  # Sinks (older flush/close ones are wrapped)
    ready_by: str = "health"  # who records engine_ready first: /health ("health") or the owner
    state_dir: Path | None = None  # default: <store>/state, or local_state_dir() for a URL store
    deferred_commits: bool = False  # a shared volume (Modal): the fleet watcher commits, see store.pending

    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        if isinstance(self.store_dir, Path):
            return self.store_dir / "state"
        return local_state_dir()


def local_state_dir() -> Path:
    """Where a sidecar keeps its own small state (replica id, request-log offsets) when the store
    is object storage: ``$ENGINESCOPE_STATE_DIR``, else ``~/.cache/enginescope/state``."""
    return Path(os.environ.get("ENGINESCOPE_STATE_DIR", "~/.cache/enginescope/state")).expanduser()


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        from enginescope.store import StoreWriter  # composition root: the only place sinks are chosen

        self.config = config
        self.identity: Identity = resolve_identity(
            engine_url=config.engine_url,
            state_dir=config.resolved_state_dir(),
            replica=config.replica,
            engine=config.engine if config.engine != "auto" else "unknown",
            model=config.model,
            region=config.region,
            gpu_type=config.gpu_type,
            cloud_provider=config.cloud_provider,
        )
        self.engine_source = EngineSource(
            config.engine_url, self.identity, engine=config.engine, timeout_s=config.timeout_s
        )
        self.sources: list[Source] = [self.engine_source, *self._optional_sources()]
        store = StoreWriter(
            config.store_dir,
            self.identity,
            flush_interval_s=config.flush_interval_s,
            retention_days=config.retention_days,
            raw_retention_days=config.raw_retention_days,
            deferred_commits=config.deferred_commits,
        )
        self.sinks: list[Sink] = [as_sink(s) for s in (store, *config.extra_sinks)]
        self.lifecycle = Lifecycle(config.ready_by)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_events: list[EventRow] = []
        self._events_lock = threading.Lock()
        self._failures: dict[str, str] = {}
        self._ticks = 0
        self._lag_s = 0.0
        self._last_tick_s = 0.0
        self._stopped = False
        self._queue(self.lifecycle.start(time.time(), self._describe()))

    def _optional_sources(self) -> list[Source]:
        sources: list[Source] = []
        if self.config.request_log_dir is not None:
            from enginescope.collectors.requestlog import RequestLogTailer

            state = self.config.resolved_state_dir() / self.identity.replica / "requestlog.json"
            sources.append(
                RequestLogTailer(
                    self.config.request_log_dir, state, store_params=self.config.store_request_params
                )
            )
        if self.config.nvml is not None:
            from enginescope.collectors.gpu import GpuSource

            sources.append(GpuSource(nvml=self.config.nvml))
        return sources

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "sidecar started: replica %s scraping %s every %.3gs",
            self.identity.replica,
            self.engine_source.metrics_url,
            self.config.interval_s,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"sidecar-{self.identity.replica}", daemon=True
        )
        self._thread.start()

    def drain(self, reason: str = "") -> None:
        self._queue(self.lifecycle.drain(time.time(), reason or "drain requested"))

    def ready(self, detail: str = "") -> None:
        """The owner (``ready_by="owner"``) says the engine is ready to serve."""
        self._queue(self.lifecycle.ready(time.time(), detail))

    def stop(self, timeout_s: float = 20.0) -> dict[str, bool]:
        """Final tick, then every sink shut down, all within ``timeout_s``; records
        ``container_stopped``. Returns ``{sink: everything written}``. Idempotent."""
        if self._stopped:
            return {}
        self._stopped = True
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread is not None:  # a scrape in flight ends within its own timeout
            self._thread.join(max(0.0, min(deadline - time.monotonic(), self.config.timeout_s + 1.0)))
        self._queue(self.lifecycle.stop(time.time(), f"after {self._ticks} ticks"))
        loop_stuck = self._thread is not None and self._thread.is_alive()
        if loop_stuck:  # a scrape outlived the grace: sources are not thread-safe, so write events only
            log.warning("sidecar loop still busy after %.0fs; final scrape skipped", timeout_s)
        final = self._build(collect=not loop_stuck)
        results = shutdown_all(self.sinks, max(0.0, deadline - time.monotonic()), final=final)
        for source in self.sources:
            self._guard(f"source {source.name}.close", source.close)
        lost = [name for name, ok in results.items() if not ok]
        if lost:
            log.warning(
                "sidecar stopped: sinks not fully written within %.1fs: %s", timeout_s, ", ".join(lost)
            )
        log.info("sidecar stopped: replica %s", self.identity.replica)
        return results

    def wait_for_engine(self, timeout_s: float, cancel: threading.Event | None = None) -> bool:
        """Block until the engine answers ``/metrics`` once (container start-up), or time out."""
        cancel = cancel or self._stop
        deadline = time.monotonic() + timeout_s
        while not cancel.is_set():
            if self.engine_source.probe():
                return True
            if time.monotonic() >= deadline:
                return False
            cancel.wait(min(self.config.interval_s, 1.0))
        return False

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._lag_s = max(0.0, time.monotonic() - next_tick)
            self.tick()
            next_tick += self.config.interval_s
            if next_tick < time.monotonic():  # fell behind: skip ticks rather than burst
                next_tick = time.monotonic() + self.config.interval_s
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def tick(self, collect: bool = True) -> Batch:
        batch = self._build(collect)
        for sink in self.sinks:
            self._guard(f"sink {type(sink).__name__}", sink.write, batch)
        return batch

    def _build(self, collect: bool) -> Batch:
        """One tick's batch: every source, lifecycle events through the state machine."""
        now_s = time.time()
        batch = Batch(self.identity)
        for source in self.sources if collect else ():
            part = self._guard(f"source {source.name}", source.collect, now_s)
            if part is not None:
                _merge(batch, part)
        self._adopt_engine_facts()
        batch.identity = self.identity
        up = next((s.value == 1.0 for s in batch.signals if s.signal == "engine_up"), None)
        observed = self.lifecycle.observe(batch.events, up)
        with self._events_lock:
            batch.events, self._pending_events = [*self._pending_events, *observed], []
        interval_s = now_s - self._last_tick_s if self._last_tick_s else 0.0
        self._last_tick_s = now_s
        self._ticks += 1
        batch.samples.append(
            SampleRow(now_s, "enginescope_sidecar_tick_lag_seconds", "gauge", (), self._lag_s)
        )
        batch.samples.extend(self._sink_health(now_s, interval_s))
        return batch

    def _sink_health(self, now_s: float, interval_s: float) -> list[SampleRow]:
        """Exporters' own health (OTLP backlog, drops, rejects) is stored like any other series."""
        rows: list[SampleRow] = []
        for sink in self.sinks:
            self_metrics = getattr(sink, "self_metrics", None)
            if self_metrics is not None:
                rows.extend(
                    self._guard(f"sink {type(sink).__name__} stats", self_metrics, now_s, interval_s) or []
                )
        return rows

    def _adopt_engine_facts(self) -> None:
        """Engine and model become known after the first scrape; stamp them from then on."""
        engine = self.engine_source.engine
        model = self.identity.model or self.engine_source.model_name
        if engine != self.identity.engine or model != self.identity.model:
            self.identity = dataclasses.replace(self.identity, engine=engine, model=model)
            self.engine_source.identity = self.identity

    def record(self, kind: str, detail: str) -> None:
        """Queue an event; it is written with the next tick. Lifecycle kinds go through the
        state machine (``engine_ready`` = :meth:`ready`, ``draining`` = :meth:`drain`)."""
        if kind == EventKind.ENGINE_READY:
            self.ready(detail)
        elif kind == EventKind.DRAINING:
            self.drain(detail)
        else:
            self._queue([EventRow(time.time(), kind, detail)])

    def _queue(self, events: list[EventRow]) -> None:
        with self._events_lock:
            self._pending_events.extend(events)

    def _describe(self) -> str:
        i = self.identity
        parts = [
            f"engine_url={self.config.engine_url}",
            f"region={i.region}",
            f"gpu={i.gpu_type}",
            f"host={i.host}",
        ]
        return " ".join(p for p in parts if not p.endswith("="))

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            result = fn(*args)
        except Exception as exc:  # a component must never take the sidecar down
            message = f"{type(exc).__name__}: {exc}"
            if self._failures.get(what) != message:
                log.error("%s failed: %s", what, message, exc_info=log.isEnabledFor(logging.DEBUG))
                self._failures[what] = message
            return None
        if what in self._failures:
            log.info("%s recovered", what)
            del self._failures[what]
        return result


def _merge(into: Batch, part: Batch) -> None:
    into.samples.extend(part.samples)
    into.histograms.extend(part.histograms)
    into.signals.extend(part.signals)
    into.events.extend(part.events)
    into.gpu.extend(part.gpu)
    into.requests.extend(part.requests)
    into.series.extend(part.series)
    into.helps.update(part.helps)
