"""Batch -> OTLP ``MetricsData`` on the reader's clock, with no I/O.

The SDK has no API for pre-aggregated data, so this module owns what a MeterProvider would,
through the shared :class:`~enginescope.collectors.cumulative.CumulativeState`:

- :meth:`OtlpMapper.update` folds every batch (one per scrape) into per-series state;
  :meth:`OtlpMapper.collect` builds one export (the periodic reader's collect). Cumulative:
  every live series, idle ones included, total since a stable start time. Delta: the change
  since the previous collect. Gauges: the last value.
- An event-counter series new to the export goes out at 0 first, its count at the next export,
  so ``increase()`` in the backend counts the first event of a kind.
- Histograms keep the engine's own bucket bounds; a histogram the engine exposes but nobody
  observed in the interval (``Batch.series``) stays exported.
- A series not updated for ``series_ttl_s`` leaves; every engine series leaves while the
  engine is down; at most ``max_series`` series, the rest fold into ``otel.metric.overflow``.
- Attributes: engine labels are prefixed with the engine (``sglang.tp_rank``); the engine's
  ``model_name`` label is ``gen_ai.request.model``; GenAI attributes follow the identity at
  export time, so a model learned after the first scrape does not leave a second series.
"""

from __future__ import annotations

import math
from collections import defaultdict

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from enginescope import __version__
from enginescope.collectors.cumulative import CumulativeState, Point
from enginescope.collectors.model import (
    Batch,
    EventKind,
    GpuRow,
    HistogramRow,
    Identity,
    Labels,
    SampleRow,
    SeriesRow,
    SignalRow,
)
from enginescope.collectors.signals import SLOWDOWN_MASK
from enginescope.exporters.otlp import names as N
from enginescope.exporters.otlp.config import NameStyle, OtlpConfig

SCOPE = InstrumentationScope("enginescope", __version__, N.SCHEMA_URL)
NS_PER_S = 1_000_000_000
CUMULATIVE, DELTA = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
_ENGINES = ("sglang", "vllm")


def build_resource(identity: Identity, config: OtlpConfig) -> Resource:
    """One Resource per replica, shared by engine and GPU series.

    ``service.instance.id`` is the replica id, so it survives sidecar restarts (the SDK's
    default is a random UUID per process, which gives Grafana a new ``instance`` each time).
    """
    attrs: dict[str, str] = {
        "service.name": identity.app or "enginescope",
        "service.instance.id": identity.replica,
        "cloud.provider": identity.cloud_provider,
        "cloud.region": identity.region,
        "host.name": identity.host,
        "container.image.id": identity.image_id,
        "enginescope.replica": identity.replica,
        "enginescope.engine": identity.engine,
        "enginescope.model": identity.model,
        "enginescope.gpu.type": identity.gpu_type,
    }
    attrs.update(dict(config.resource_attributes))  # OTEL_RESOURCE_ATTRIBUTES beats detection
    if config.service_name:
        attrs["service.name"] = config.service_name  # OTEL_SERVICE_NAME beats everything
    return Resource({k: v for k, v in attrs.items() if v}, N.SCHEMA_URL)


def _ns(ts_s: float) -> int:
    return int(round(ts_s * NS_PER_S))


class OtlpMapper:
    """Stateful: :meth:`update` with every batch in time order, :meth:`collect` per export."""

    def __init__(self, config: OtlpConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self._resource = build_resource(identity, config)
        self.state = CumulativeState(config.series_ttl_s, config.max_series)
        self._meta: dict[str, N.OtelName] = {}
        self._engine_names: set[str] = set()  # series that leave while the engine is down
        self._gpu_ids: dict[str, tuple[tuple[str, str], ...]] = {}
        self._gpu_last_s: dict[str, float] = {}
        self._held_events: dict[Labels, tuple[float, float]] = {}  # new event series: (n, ts) after 0
        self.expired_series = 0

    # -- the reader's two halves -------------------------------------------------------

    def update(self, batch: Batch) -> None:
        if batch.identity != self.identity:  # engine and model become known after the first scrape
            self.identity = batch.identity
            self._resource = build_resource(batch.identity, self.config)
        self._lifecycle(batch)
        native = self.config.names is NameStyle.NATIVE
        for row in batch.histograms:
            self._histogram(row, native)
        for series in batch.series:  # after the rows: a new series starts with its first interval
            self._idle_histogram(series, native)
        if native:
            for sample in batch.samples:
                self._sample(sample)
        else:
            for signal in batch.signals:
                self._signal(signal)
        for gpu in batch.gpu:
            self._gpu(gpu)
        self._events(batch)

    def collect(self, now_s: float) -> MetricsData | None:
        """One export's data (None when there is nothing to send)."""
        self.expired_series += self.state.expire(now_s)
        kinds = {"histogram"} if self.config.delta_histograms else set()
        if self.config.delta_counters:
            kinds.add("counter")
        by_name: dict[str, list] = defaultdict(list)
        for point in self.state.collect(now_s, delta=kinds):
            meta = self._meta[point.name]
            by_name[point.name].append(self._point(meta, point))
        self._release_events()
        if not by_name:
            return None
        metrics = [self._metric(name, self._meta[name], points) for name, points in by_name.items()]
        scope = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url=N.SCHEMA_URL)
        return MetricsData([ResourceMetrics(self._resource, [scope], N.SCHEMA_URL)])

    @property
    def holds_events(self) -> bool:
        """True while a new event series waits to be exported at 0 by the next collect, its
        count by the one after (a final export must collect twice)."""
        return bool(self._held_events)

    def convert(self, batch: Batch, now_s: float | None = None) -> MetricsData | None:
        """``update`` then ``collect`` at the batch's time: one export per batch (tests, tools)."""
        self.update(batch)
        return self.collect(now_s if now_s is not None else _batch_time(batch))

    # -- lifecycle ---------------------------------------------------------------------

    def _lifecycle(self, batch: Batch) -> None:
        kinds = {e.kind: e.ts_s for e in batch.events}
        if EventKind.ENGINE_RESTART in kinds:
            self.state.restart(kinds[EventKind.ENGINE_RESTART], lambda name, _: name in self._engine_names)
        down = EventKind.ENGINE_DOWN in kinds or any(
            s.signal == "engine_up" and s.value == 0 for s in batch.signals
        )
        if down:  # an engine that is down has no current values: its series leave now
            self.state.forget(lambda name, _: name in self._engine_names)

    # -- series kinds ------------------------------------------------------------------

    def _histogram_meta(self, metric: str, signal: str | None, native: bool) -> N.OtelName:
        meta = None if native else N.for_signal(signal or "")
        if meta is None:
            name = metric if native else N.otel_safe(metric)
            meta = N.OtelName(name, N.guess_unit(metric), N.Kind.HISTOGRAM, genai=not native)
        return self._known(meta, engine=True)

    def _histogram(self, row: HistogramRow, native: bool) -> None:
        if not row.bounds or len(row.bounds) != len(row.counts):
            return
        meta = self._histogram_meta(row.metric, row.signal, native)
        attrs = self._attrs(meta, row.metric, row.labels, native)
        self.state.add_histogram(
            meta.name, attrs, row.bounds, row.counts, row.sum, row.count, row.ts_s, row.interval_s
        )

    def _idle_histogram(self, row: SeriesRow, native: bool) -> None:
        if row.type != "histogram" or not row.bounds:
            return
        meta = self._histogram_meta(row.metric, row.signal, native)
        self.state.touch_histogram(
            meta.name, self._attrs(meta, row.metric, row.labels, native), row.bounds, row.ts_s
        )

    def _signal(self, row: SignalRow) -> None:
        meta = N.for_signal(row.signal)
        if meta is None:
            return  # GPU aggregates (exported per device) and unregistered names
        meta = self._known(meta, engine=row.signal != "engine_up")
        attrs = self._attrs(meta, "", row.labels, False)
        if meta.kind is N.Kind.COUNTER:
            self.state.add(meta.name, attrs, row.value, row.ts_s, row.interval_s)
        else:
            self.state.set(meta.name, attrs, row.value, row.ts_s)

    def _sample(self, row: SampleRow) -> None:
        """Native names: raw engine gauges as gauges, counters as monotonic sums of raw totals."""
        if not math.isfinite(row.value):
            return
        kind = N.Kind.COUNTER if row.type == "counter" else N.Kind.GAUGE
        meta = self._known(N.OtelName(row.metric, N.guess_unit(row.metric), kind), engine=True)
        if kind is N.Kind.COUNTER:
            self.state.add_total(row.metric, row.labels, row.value, row.ts_s)
        else:
            self.state.set(meta.name, row.labels, row.value, row.ts_s)

    def _gpu(self, row: GpuRow) -> None:
        base = self._gpu_identity(row)
        ts_s, fields = row.ts_s, row.fields
        previous_s = self._gpu_last_s.get(row.gpu_uuid)
        self._gpu_last_s[row.gpu_uuid] = ts_s
        for column, value in fields.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                continue
            if column in N.GPU_COLUMNS:
                self._gpu_value(N.GPU_COLUMNS[column], base, ts_s, float(value))
            elif column in N.GPU_TEMPERATURES:
                self._temperature(row.gpu_uuid, column, ts_s, float(value))
            elif column in N.GPU_IO_COLUMNS and previous_s is not None and ts_s > previous_s:
                meta = self._known(N.GPU_IO)
                attrs = (*base, *meta.attributes, ("network.io.direction", N.GPU_IO_COLUMNS[column]))
                self.state.add(
                    meta.name, tuple(sorted(attrs)), value * (ts_s - previous_s), ts_s, ts_s - previous_s
                )
        used, total = fields.get("fb_used_bytes"), fields.get("fb_total_bytes")
        if isinstance(used, int | float) and isinstance(total, int | float) and total > 0:
            self._gpu_value(N.GPU_MEMORY_UTILIZATION, base, ts_s, float(used) / float(total))
        mask = fields.get(N.GPU_REASONS_COLUMN)
        if isinstance(mask, int) and not isinstance(mask, bool):
            for bit, reason in N.CLOCK_EVENT_REASONS.items():
                self._gpu_value(
                    N.GPU_REASON, (*base, (N.GPU_REASON_ATTR, reason)), ts_s, float(bool(mask & bit))
                )
        degraded = (isinstance(mask, int) and bool(mask & SLOWDOWN_MASK)) or bool(
            fields.get("row_remap_failure")
        )
        for state in N.GPU_STATES:
            on = degraded if state == "degraded" else not degraded
            self._gpu_value(N.GPU_STATUS, (*base, ("hw.state", state)), ts_s, float(on))

    def _gpu_identity(self, row: GpuRow) -> tuple[tuple[str, str], ...]:
        known = dict(self._gpu_ids.get(row.gpu_uuid, ()))
        known["hw.id"] = row.gpu_uuid
        for column, attr in N.GPU_IDENTITY.items():
            value = row.fields.get(column)
            if isinstance(value, str) and value:
                known[attr] = value
        index = row.fields.get("gpu_index")
        if isinstance(index, int):
            known["hw.name"] = f"gpu{index}"
        if (
            "hw.model" in known
            and "hw.vendor" not in known
            and known["hw.model"].upper().startswith("NVIDIA")
        ):
            known["hw.vendor"] = "NVIDIA"
        ids = tuple(sorted(known.items()))
        self._gpu_ids[row.gpu_uuid] = ids
        return ids

    def _gpu_value(
        self, meta: N.OtelName, base: tuple[tuple[str, str], ...], ts_s: float, value: float
    ) -> None:
        meta = self._known(meta)
        attrs = tuple(sorted({**dict(base), **dict(meta.attributes)}.items()))
        if meta.kind is N.Kind.COUNTER:
            self.state.add_total(meta.name, attrs, value * meta.scale, ts_s)
        else:
            self.state.set(meta.name, attrs, value * meta.scale, ts_s)

    def _temperature(self, uuid: str, column: str, ts_s: float, value: float) -> None:
        suffix, _ = N.GPU_TEMPERATURES[column]
        meta = self._known(N.TEMPERATURE)
        attrs = (("hw.id", f"{uuid}-{suffix}"), ("hw.parent", uuid), ("hw.type", "temperature"))
        self.state.set(meta.name, attrs, value, ts_s)

    def _events(self, batch: Batch) -> None:
        """Events counted per kind. A series new to the export goes out at 0 first and gets its
        count at the next export, so ``increase()`` downstream sees 0 -> n (the endpoint does the
        same): without it, the first ``engine_restart`` or a new replica's ``container_started``
        never shows in ``increase(...)``."""
        counts: dict[str, tuple[int, float]] = {}
        for event in batch.events:
            n, last = counts.get(event.kind, (0, event.ts_s))
            counts[event.kind] = (n + 1, max(last, event.ts_s))
        if not counts:
            return
        meta = self._known(N.EVENTS)
        live = {s.labels for s in self.state.series() if s.name == meta.name}
        for kind, (n, ts_s) in sorted(counts.items()):
            attrs = ((N.EVENT_KIND_ATTR, kind),)
            if attrs in self._held_events:
                held_n, held_s = self._held_events[attrs]
                self._held_events[attrs] = (held_n + n, max(held_s, ts_s))
            elif attrs in live:
                self.state.add(meta.name, attrs, float(n), ts_s, 0.0)
            else:
                self.state.add(meta.name, attrs, 0.0, ts_s, 0.0)
                self._held_events[attrs] = (float(n), ts_s)

    def _release_events(self) -> None:
        """After an export: the counts held back behind a new event series' first 0."""
        held, self._held_events = self._held_events, {}
        for attrs, (n, ts_s) in held.items():
            self.state.add(N.EVENTS.name, attrs, n, ts_s, 0.0)

    # -- helpers -------------------------------------------------------------------------

    def _known(self, meta: N.OtelName, engine: bool = False) -> N.OtelName:
        """Register the metric's name-level facts (unit, kind, description); returns ``meta``."""
        self._meta.setdefault(meta.name, meta)
        if engine:
            self._engine_names.add(meta.name)
        return meta

    def _attrs(self, meta: N.OtelName, metric: str, labels: Labels, native: bool) -> Labels:
        """Series attributes (the state's key). GenAI ones are filled in at export."""
        if native:
            return tuple(sorted({**dict(labels), **dict(meta.attributes)}.items()))
        prefix = next((e for e in _ENGINES if metric.startswith(e)), "enginescope")
        attrs: dict[str, str] = dict(meta.attributes)
        for name, value in labels:
            if name == "model_name":
                attrs["gen_ai.request.model"] = value
            elif name in ("endpoint", "path") and N.operation_for_endpoint(value):
                attrs["gen_ai.operation.name"] = N.operation_for_endpoint(value) or ""
            else:
                attrs[f"{prefix}.{name}"] = value
        return tuple(sorted(attrs.items()))

    def _genai(self, attrs: dict[str, str]) -> dict[str, str]:
        attrs.setdefault("gen_ai.operation.name", self.config.genai_operation)
        if self.identity.engine != "unknown":
            attrs.setdefault("gen_ai.provider.name", self.identity.engine)
        if self.identity.model:
            attrs.setdefault("gen_ai.request.model", self.identity.model)
        return attrs

    def _point(self, meta: N.OtelName, p: Point) -> object:
        attrs = dict(p.labels)
        if meta.genai and self.config.names is NameStyle.SEMCONV:
            attrs = self._genai(attrs)
        start_ns, ts_ns = _ns(p.start_s), _ns(p.time_s)
        if p.kind == "histogram":
            bounds, buckets = _otlp_buckets(p.bounds, p.counts)
            return HistogramDataPoint(
                attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=ts_ns, count=sum(buckets),
                sum=p.sum, bucket_counts=buckets, explicit_bounds=list(bounds),
                min=None,  # type: ignore[arg-type]  # unknown for pre-aggregated engine buckets
                max=None,  # type: ignore[arg-type]
            )  # fmt: skip
        if meta.kind is N.Kind.GAUGE:
            return NumberDataPoint(attrs, ts_ns, ts_ns, p.value)
        return NumberDataPoint(attrs, start_ns, ts_ns, p.value)

    def _metric(self, name: str, meta: N.OtelName, points: list) -> Metric:
        if meta.kind is N.Kind.HISTOGRAM:
            temporality = DELTA if self.config.delta_histograms else CUMULATIVE
            data = Histogram(data_points=points, aggregation_temporality=temporality)
        elif meta.kind is N.Kind.COUNTER:
            temporality = DELTA if self.config.delta_counters else CUMULATIVE
            data = Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True)
        elif meta.kind is N.Kind.UPDOWN:
            data = Sum(data_points=points, aggregation_temporality=CUMULATIVE, is_monotonic=False)
        else:
            data = Gauge(data_points=points)
        return Metric(name=name, description=meta.description, unit=meta.unit, data=data)


def _batch_time(batch: Batch) -> float:
    rows = (*batch.histograms, *batch.samples, *batch.signals, *batch.gpu, *batch.events, *batch.series)
    return max((r.ts_s for r in rows), default=0.0)


def _otlp_buckets(
    bounds: tuple[float, ...], cumulative: tuple[float, ...]
) -> tuple[tuple[float, ...], list[int]]:
    """Engine ``le`` bounds (last +Inf) and cumulative counts -> OTLP explicit bounds and
    per-bucket counts (never negative)."""
    buckets, previous = [], 0.0
    for value in cumulative:
        buckets.append(max(0, int(round(value - previous))))
        previous = max(previous, value)
    if math.isinf(bounds[-1]):
        return tuple(bounds[:-1]), buckets
    return tuple(bounds), [*buckets, 0]
