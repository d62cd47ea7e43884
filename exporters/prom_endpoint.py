"""``PromEndpointSink``: the sidecar's enriched view on a Prometheus ``/metrics`` endpoint.

What it serves, every series labelled with the replica's identity (``replica``, ``engine``,
``model``, ``region``, ``gpu_type``), in text 0.0.4 or OpenMetrics 1.0 as negotiated:

- the engine's own families under their own names, histograms included
  (``sglang:time_to_first_token_seconds_bucket``), so the engines' published Grafana dashboards
  work against the sidecar unchanged. Histograms are the per-interval increases summed since
  the sidecar started (reset-aware, so they only go up; changed bounds restart the series);
  every histogram series the engine exposes (``Batch.series``) stays served while idle, and
  one never observed (SGLang's all-zero ``dp_attention_*``) is served with zero buckets;
  gauges and counters are the engine's last value.
- the registry's signals under ``enginescope_*`` in base units with the registry's HELP
  (names: ``enginescope.exporters.prom_names``): histograms, gauges, counters (``_total``).
- ``enginescope_gpu_device_*{gpu, gpu_index}``: every numeric NVML column per GPU.
- ``enginescope_events_total{kind}``: events seen; every kind starts at 0, so ``increase()``
  sees the first one.
- ``enginescope_endpoint_series`` and ``enginescope_endpoint_series_folded_total``.

Staleness: a series not written for ``ttl_s`` leaves; when a replica's engine reports down
(``engine_up`` = 0) its engine series leave at once (``engine_up`` and events stay); when a
replica's identity changes (the model label arriving late) the old label set leaves.
Loopback by default: the endpoint is unauthenticated.
"""

from __future__ import annotations

import gzip
import math
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from enginescope.collectors.model import (
    Batch,
    EventKind,
    GpuRow,
    HistogramRow,
    Identity,
    SampleRow,
    SeriesRow,
)
from enginescope.collectors.signals import SIGNALS, Kind, Scope
from enginescope.exporters.prom_names import (
    EVENTS,
    SERIES_FOLDED,
    SERIES_LIVE,
    gpu_column_metric,
    sidecar_sample_help,
    signal_metric,
)
from enginescope.exporters.prom_series import Origin, SeriesTable
from enginescope.exporters.prom_text import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Family,
    Labels,
    Sample,
    render,
    wants_openmetrics,
)

# Not 9400 (dcgm-exporter) nor anything in 9100-9999, which Prometheus' default-port
# allocation list has filled; 19400 is in no list we found and easy to remember.
DEFAULT_PORT = 19400
DEFAULT_TTL_S = 300.0  # like Prometheus' 5-minute lookback: a series idle that long is gone
DEFAULT_MAX_SERIES = 50_000
REPLICA_LABELS = ("replica", "engine", "model", "region", "gpu_type")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_KEEP_WHEN_DOWN = frozenset({signal_metric("engine_up").name, EVENTS.name})
_RAW_HELP = "{engine} engine sample re-served unchanged by the enginescope sidecar"


def _identity_labels(identity: Identity) -> dict[str, str]:
    return {name: getattr(identity, name) for name in REPLICA_LABELS}


def _merge_labels(base: dict[str, str], extra: Labels) -> Labels:
    """Engine labels plus ours; an engine label that clashes with ours becomes ``engine_<name>``."""
    merged = dict(base)
    for key, value in extra:
        key = _BAD_LABEL.sub("_", key)
        if key[:1].isdigit() or key.startswith("__") or key == "le":
            key = "engine_" + key.lstrip("_")
        merged[f"engine_{key}" if key in base else key] = value
    return tuple(sorted(merged.items()))


class PromEndpointSink:
    """A ``Sink`` serving ``/metrics``; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        include_raw: bool = True,
        ttl_s: float = DEFAULT_TTL_S,
        max_series: int = DEFAULT_MAX_SERIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.include_raw = include_raw
        self._table = SeriesTable(ttl_s, max_series, clock)
        self._replicas: dict[str, dict[str, str]] = {}  # replica -> its current identity labels
        self._engine_help: dict[str, str] = {}  # family -> the engine's own HELP (latest scrape)
        self._lock = threading.Lock()
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            raise OSError(
                f"Prometheus endpoint: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="prom-endpoint", daemon=True)
        self._thread.start()
        self.host = host
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    # -- Sink protocol -------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        base = _identity_labels(batch.identity)
        with self._lock:
            self._track_identity(base)
            self._engine_help.update(batch.helps)
            if self._engine_went_down(batch):
                self._drop_engine_series(base["replica"])
            self._init_events(base)
            for row in batch.histograms:
                self._histogram(base, row)
            for exposed in batch.series:  # after the rows: a new series starts with its first interval
                self._idle_histogram(base, exposed)
            for row in batch.signals:
                self._signal(base, row.signal, row.value, row.labels)
            for gpu in batch.gpu:
                self._gpu(base, gpu)
            for event in batch.events:
                self._add(
                    EVENTS.name, "counter", EVENTS.help, Origin.SIDECAR, base, (("kind", event.kind),), 1.0
                )
            if self.include_raw:
                for sample in batch.samples:
                    self._raw(base, batch.identity.engine, sample)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- staleness -------------------------------------------------------------------------

    def _track_identity(self, base: dict[str, str]) -> None:
        """A replica whose labels changed (model known late): its old label set leaves."""
        replica = base["replica"]
        old = self._replicas.get(replica)
        if old is not None and old != base:
            stale = tuple(old.items())
            self._table.drop(lambda _n, _o, labels: not set(stale) <= set(labels))
        self._replicas[replica] = base

    @staticmethod
    def _engine_went_down(batch: Batch) -> bool:
        return any(r.signal == "engine_up" and r.value == 0 for r in batch.signals)

    def _drop_engine_series(self, replica: str) -> None:
        mine = ("replica", replica)
        self._table.drop(
            lambda name, origin, labels: (
                origin is not Origin.ENGINE or name in _KEEP_WHEN_DOWN or mine not in labels
            )
        )

    # -- state updates (caller holds the lock) -------------------------------------------

    def _add(
        self,
        name: str,
        kind: str,
        help_text: str,
        origin: Origin,
        base: dict[str, str],
        extra: Labels,
        value: float,
        *,
        accumulate: bool = True,
        suffix: str | None = None,
    ) -> None:
        if suffix is None:
            suffix = "_total" if kind == "counter" else ""
        labels = _merge_labels(base, extra)
        self._table.add(name, kind, help_text, origin, labels, value, accumulate=accumulate, suffix=suffix)

    def _init_events(self, base: dict[str, str]) -> None:
        for kind in EventKind:
            self._add(EVENTS.name, "counter", EVENTS.help, Origin.SIDECAR, base, (("kind", kind.value),), 0.0)

    def _signal(self, base: dict[str, str], name: str, value: float, labels: Labels) -> None:
        sig = SIGNALS.get(name)
        if sig is None or not math.isfinite(value):
            return
        metric = signal_metric(name)
        origin = Origin.GPU if sig.scope is Scope.GPU else Origin.ENGINE
        if sig.kind is Kind.COUNTER:  # the store holds increases: accumulate, never decrease
            self._add(metric.name, "counter", metric.help, origin, base, labels, max(0.0, value))
        elif sig.kind is Kind.GAUGE:
            scaled = value * metric.scale
            self._add(metric.name, "gauge", metric.help, origin, base, labels, scaled, accumulate=False)

    def _raw_help(self, family: str, engine: str) -> str:
        """The engine's own HELP of a re-served family, or a generic line where it gave none."""
        return self._engine_help.get(family) or _RAW_HELP.format(engine=engine)

    def _histogram_names(
        self, base: dict[str, str], metric: str, signal: str | None
    ) -> list[tuple[str, str]]:
        """(family, HELP) a histogram is served under: the engine's name, and ours if mapped."""
        names = [(metric, self._raw_help(metric, base["engine"]))]
        if signal in SIGNALS and SIGNALS[signal].kind is Kind.HISTOGRAM:
            ours = signal_metric(signal)
            names.append((ours.name, ours.help))
        return names

    def _idle_histogram(self, base: dict[str, str], row: SeriesRow) -> None:
        """A histogram series the engine exposed in this scrape, observed or not: still live."""
        if row.type != "histogram" or not row.bounds:
            return
        bounds = row.bounds if math.isinf(row.bounds[-1]) else (*row.bounds, math.inf)
        labels = _merge_labels(base, row.labels)
        for name, help_text in self._histogram_names(base, row.metric, row.signal):
            self._table.touch_histogram(name, help_text, labels, bounds)

    def _histogram(self, base: dict[str, str], row: HistogramRow) -> None:
        if not row.bounds or len(row.bounds) != len(row.counts):
            return
        bounds, counts = row.bounds, row.counts
        if not math.isinf(bounds[-1]):  # the text format needs a +Inf bucket
            bounds, counts = (*bounds, math.inf), (*counts, row.count)
        names = self._histogram_names(base, row.metric, row.signal)
        labels = _merge_labels(base, row.labels)
        monotonic, running = [], 0.0
        for count in counts:
            running = max(running, count)  # keep le buckets monotonic even on odd input
            monotonic.append(running)
        for name, help_text in names:  # changed bounds restart the series (a reset to Prometheus)
            self._table.add_histogram(
                name, help_text, labels, bounds, tuple(monotonic), row.sum, monotonic[-1]
            )

    def _gpu(self, base: dict[str, str], row: GpuRow) -> None:
        index = row.fields.get("gpu_index")
        extra = (("gpu", row.gpu_uuid), ("gpu_index", "" if index is None else str(index)))
        for column, value in row.fields.items():
            metric = gpu_column_metric(column)
            if metric is None or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            kind = "counter" if metric.kind is Kind.COUNTER else "gauge"
            # NVML counters are totals since driver load: serve the value as read
            self._add(metric.name, kind, metric.help, Origin.GPU, base, extra,
                      float(value) * metric.scale, accumulate=False)  # fmt: skip

    def _raw(self, base: dict[str, str], engine: str, sample: SampleRow) -> None:
        if not math.isfinite(sample.value):
            return
        kind = {"counter": "counter", "gauge": "gauge"}.get(sample.type, "untyped")
        name, suffix = sample.metric, ""
        if kind == "counter" and name.endswith("_total"):
            name, suffix = name.removesuffix("_total"), "_total"
        own = sidecar_sample_help(name)  # the sidecar's own samples: not the engine's, stay when it is down
        help_text = own or self._raw_help(name, engine)
        origin = Origin.ENGINE if own is None else Origin.SIDECAR
        self._add(name, kind, help_text, origin, base, sample.labels, sample.value,
                  accumulate=False, suffix=suffix)  # fmt: skip

    # -- exposition -------------------------------------------------------------------------

    def exposition(self, openmetrics: bool) -> str:
        with self._lock:
            self._table.expire()
            families = list(self._table.families())
            families.append(
                Family(SERIES_LIVE.name, "gauge", SERIES_LIVE.help, [Sample("", (), self._table.live_series)])
            )
            families.append(
                Family(
                    SERIES_FOLDED.name,
                    "counter",
                    SERIES_FOLDED.help,
                    [Sample("_total", (), self._table.folded)],
                )
            )
            return render(families, openmetrics)


def _handler(sink: PromEndpointSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            openmetrics = wants_openmetrics(self.headers.get("Accept"))
            body = sink.exposition(openmetrics).encode()
            gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
            if gzipped:
                body = gzip.compress(body, compresslevel=1)
            self.send_response(200)
            self.send_header("Content-Type", OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE)
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # scrapes every few seconds would flood the sidecar's log

    return Handler
