"""Batch -> OTLP ``MetricsData`` (SDK data objects), with no I/O.

The SDK has no API for pre-aggregated data, so this module owns what a MeterProvider would:
series start times, cumulative accumulation and delta conversion.

- Cumulative: a counter or histogram series adds up the per-interval increases since its
  start (``start_time_unix_nano``). A reset (raw value going down, an ``engine_restart``
  event, changed bucket bounds) starts a new series just after the previous point.
- Delta: each point carries one interval's increase (start = interval start); never negative.
- Histograms keep the engine's own bucket bounds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

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
from enginescope.collectors.model import (
    Batch,
    EventKind,
    GpuRow,
    HistogramRow,
    Identity,
    Labels,
    SampleRow,
    SignalRow,
)
from enginescope.exporters.otlp import names as N
from enginescope.exporters.otlp.config import NameStyle, OtlpConfig

SCOPE = InstrumentationScope("enginescope", __version__)
NS_PER_S = 1_000_000_000
Attrs = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Attrs]
CUMULATIVE, DELTA = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA


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
    return Resource({k: v for k, v in attrs.items() if v})


def _ns(ts_s: float) -> int:
    return int(round(ts_s * NS_PER_S))


def _per_bucket(cumulative: Iterable[float]) -> list[int]:
    """Prometheus cumulative ``le`` counts -> OTLP per-bucket counts (never negative)."""
    out, previous = [], 0.0
    for value in cumulative:
        out.append(max(0, int(round(value - previous))))
        previous = max(previous, value)
    return out


@dataclass(slots=True)
class _SumState:
    start_ns: int
    last_ns: int
    total: float = 0.0
    last_raw: float | None = None


@dataclass(slots=True)
class _HistState:
    start_ns: int
    last_ns: int
    bounds: tuple[float, ...]
    buckets: list[int]
    sum: float = 0.0


@dataclass
class _Pending:
    """Points of one batch grouped by metric name (one OTLP Metric per name)."""

    meta: dict[str, N.OtelName] = field(default_factory=dict)
    points: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def add(self, meta: N.OtelName, name: str, point: object) -> None:
        self.meta.setdefault(name, meta)
        self.points[name].append(point)


class OtlpMapper:
    """Stateful converter: call :meth:`convert` with every batch, in time order."""

    def __init__(self, config: OtlpConfig, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self._resource = build_resource(identity, config)
        self._sums: dict[SeriesKey, _SumState] = {}
        self._hists: dict[SeriesKey, _HistState] = {}
        self._engine_reset: set[SeriesKey] = set()
        self.clamped_negative = 0  # increases < 0 seen in input (should not happen)

    def convert(self, batch: Batch) -> MetricsData | None:
        if batch.identity != self.identity:  # engine and model become known after the first scrape
            self.identity = batch.identity
            self._resource = build_resource(batch.identity, self.config)
        out = _Pending()
        if any(e.kind == EventKind.ENGINE_RESTART for e in batch.events):
            self._engine_reset = {k for k in (*self._sums, *self._hists) if not k[0].startswith("hw.")}
        native = self.config.names is NameStyle.NATIVE
        for row in batch.histograms:
            self._histogram(out, row, native)
        if native:
            for sample in batch.samples:
                self._sample(out, sample)
        else:
            for signal in batch.signals:
                self._signal(out, signal)
        for gpu in batch.gpu:
            self._gpu(out, gpu)
        self._events(out, batch)
        if not out.points:
            return None
        metrics = [self._metric(name, out.meta[name], points) for name, points in out.points.items()]
        scope = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")
        return MetricsData([ResourceMetrics(resource=self._resource, scope_metrics=[scope], schema_url="")])

    # -- series kinds ------------------------------------------------------------------

    def _histogram(self, out: _Pending, row: HistogramRow, native: bool) -> None:
        meta = None if native else N.HISTOGRAM_SIGNALS.get(row.signal or "")
        if meta is None:
            name = row.metric if native else N.otel_safe(row.metric)
            meta = N.OtelName(name, N.guess_unit(row.metric), N.Kind.HISTOGRAM)
        if not row.bounds or len(row.bounds) != len(row.counts):
            return
        attrs = self._attrs(meta, row.labels)
        bounds, buckets = _otlp_buckets(row.bounds, row.counts)
        ts_ns, interval_start_ns = _ns(row.ts_s), _ns(row.ts_s - row.interval_s)
        key = (meta.name, attrs)
        state = self._hists.get(key)
        if state is None or state.bounds != bounds or key in self._engine_reset:
            self._engine_reset.discard(key)
            start = interval_start_ns if state is None else max(interval_start_ns, state.last_ns + 1)
            state = _HistState(start, ts_ns, bounds, [0] * len(buckets))
            self._hists[key] = state
        state.buckets = [a + b for a, b in zip(state.buckets, buckets, strict=True)]
        state.sum += row.sum
        state.last_ns = ts_ns
        if self.config.delta_histograms:
            point = _hist_point(attrs, interval_start_ns, ts_ns, bounds, buckets, row.sum)
        else:
            point = _hist_point(attrs, state.start_ns, ts_ns, bounds, state.buckets, state.sum)
        out.add(meta, meta.name, point)

    def _signal(self, out: _Pending, row: SignalRow) -> None:
        if row.signal in N.GAUGE_SIGNALS:
            meta = N.GAUGE_SIGNALS[row.signal]
            attrs = self._attrs(meta, row.labels)
            out.add(
                meta, meta.name, NumberDataPoint(dict(attrs), _ns(row.ts_s), _ns(row.ts_s), float(row.value))
            )
        elif row.signal in N.COUNTER_SIGNALS:
            meta = N.COUNTER_SIGNALS[row.signal]
            self._increase(out, meta, self._attrs(meta, row.labels), row.ts_s, row.interval_s, row.value)
        elif not row.signal.startswith(N.GPU_AGGREGATE_PREFIX):
            meta = N.OtelName(f"enginescope.{row.signal}", N.guess_unit(row.signal), N.Kind.GAUGE)
            attrs = self._attrs(meta, row.labels)
            out.add(
                meta, meta.name, NumberDataPoint(dict(attrs), _ns(row.ts_s), _ns(row.ts_s), float(row.value))
            )

    def _sample(self, out: _Pending, row: SampleRow) -> None:
        """Native names: raw engine gauges as gauges, counters as monotonic sums."""
        if not math.isfinite(row.value):
            return
        if row.type != "counter":
            meta = N.OtelName(row.metric, N.guess_unit(row.metric), N.Kind.GAUGE)
            point = NumberDataPoint(dict(row.labels), _ns(row.ts_s), _ns(row.ts_s), float(row.value))
            out.add(meta, row.metric, point)
            return
        meta = N.OtelName(row.metric, N.guess_unit(row.metric), N.Kind.COUNTER)
        self._raw_counter(out, meta, tuple(row.labels), row.ts_s, row.value, row.delta, row.interval_s)

    def _gpu(self, out: _Pending, row: GpuRow) -> None:
        used: set[str] = set()
        base = (("hw.id", row.gpu_uuid),)
        for fields, meta in N.GPU_FIELDS:
            fname = next((f for f in fields if isinstance(row.fields.get(f), int | float)), None)
            if fname is None or meta.name in used:
                continue
            used.add(meta.name)
            used.add(fname)
            value = float(row.fields[fname]) * meta.scale  # type: ignore[arg-type]
            self._gpu_value(out, meta, base, row.ts_s, value)
        reasons_field = next((f for f in N.GPU_REASONS_FIELDS if isinstance(row.fields.get(f), int)), None)
        if reasons_field:
            used.add(reasons_field)
            mask = int(row.fields[reasons_field])  # type: ignore[arg-type]
            for bit, reason in N.CLOCK_EVENT_REASONS.items():
                attrs = (*base, (N.GPU_REASON_ATTR, reason))
                point = NumberDataPoint(dict(attrs), _ns(row.ts_s), _ns(row.ts_s), 1.0 if mask & bit else 0.0)
                out.add(N.GPU_REASON, N.GPU_REASON.name, point)
        for fname, value in sorted(row.fields.items()):
            if fname in used or fname in N.GPU_IDENTITY_FIELDS or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                meta = N.OtelName(f"enginescope.gpu.{fname}", N.guess_unit(fname), N.Kind.GAUGE)
                self._gpu_value(out, meta, base, row.ts_s, float(value))

    def _gpu_value(self, out: _Pending, meta: N.OtelName, base: Attrs, ts_s: float, value: float) -> None:
        attrs = (*base, *meta.attributes)
        if meta.name == "hw.temperature":  # a temperature sensor whose parent is the GPU
            attrs = (("hw.id", f"{base[0][1]}-temp"), ("hw.parent", base[0][1]), ("hw.type", "temperature"))
        if meta.kind is N.Kind.COUNTER:
            self._raw_counter(out, meta, attrs, ts_s, value, None, None)
        elif meta.kind is N.Kind.UPDOWN:
            state = self._sums.setdefault((meta.name, attrs), _SumState(_ns(ts_s), _ns(ts_s)))
            out.add(meta, meta.name, NumberDataPoint(dict(attrs), state.start_ns, _ns(ts_s), value))
        else:
            out.add(meta, meta.name, NumberDataPoint(dict(attrs), _ns(ts_s), _ns(ts_s), value))

    def _events(self, out: _Pending, batch: Batch) -> None:
        counts: dict[str, tuple[int, float]] = {}
        for event in batch.events:
            n, last = counts.get(event.kind, (0, event.ts_s))
            counts[event.kind] = (n + 1, max(last, event.ts_s))
        for kind, (n, ts_s) in sorted(counts.items()):
            attrs = ((N.EVENT_KIND_ATTR, kind),)
            key = (N.EVENTS.name, attrs)
            previous = self._sums.get(key)
            interval_s = (ts_s - previous.last_ns / NS_PER_S) if previous else 0.0
            self._increase(out, N.EVENTS, attrs, ts_s, max(interval_s, 0.0), float(n))

    # -- accumulation --------------------------------------------------------------------

    def _increase(
        self, out: _Pending, meta: N.OtelName, attrs: Attrs, ts_s: float, interval_s: float, increase: float
    ) -> None:
        """A counter given as the increase over ``interval_s`` ending at ``ts_s``."""
        if increase < 0:
            self.clamped_negative += 1
            increase = 0.0
        ts_ns, start_ns = _ns(ts_s), _ns(ts_s - interval_s)
        key = (meta.name, attrs)
        state = self._sums.get(key)
        if state is None or key in self._engine_reset:
            self._engine_reset.discard(key)
            start = start_ns if state is None else max(start_ns, state.last_ns + 1)
            state = self._sums[key] = _SumState(start, ts_ns)
        state.total += increase
        state.last_ns = ts_ns
        self._emit_sum(out, meta, attrs, state, start_ns, ts_ns, increase)

    def _raw_counter(
        self,
        out: _Pending,
        meta: N.OtelName,
        attrs: Attrs,
        ts_s: float,
        value: float,
        delta: float | None,
        interval_s: float | None,
    ) -> None:
        """A counter given as its raw total; ``delta`` is the reset-aware increase if known."""
        ts_ns = _ns(ts_s)
        key = (meta.name, attrs)
        state = self._sums.get(key)
        if state is None:
            state = self._sums[key] = _SumState(ts_ns, ts_ns, last_raw=value)
            if delta is None:
                return  # baseline: the increase is known from the next reading on
            state.start_ns = _ns(ts_s - interval_s) if interval_s else ts_ns
        reset = state.last_raw is not None and value < state.last_raw
        reset = reset or key in self._engine_reset
        if delta is None:
            delta = value if reset or state.last_raw is None else value - state.last_raw
        if delta < 0:
            self.clamped_negative += 1
            delta = 0.0
        previous_ns = state.last_ns
        if reset:
            self._engine_reset.discard(key)
            state.start_ns, state.total = previous_ns + 1, 0.0
        state.total += delta
        state.last_ns, state.last_raw = ts_ns, value
        interval_start = _ns(ts_s - interval_s) if interval_s else previous_ns
        self._emit_sum(out, meta, attrs, state, interval_start, ts_ns, delta)

    def _emit_sum(
        self,
        out: _Pending,
        meta: N.OtelName,
        attrs: Attrs,
        state: _SumState,
        interval_start_ns: int,
        ts_ns: int,
        increase: float,
    ) -> None:
        if self.config.delta_counters:
            point = NumberDataPoint(dict(attrs), interval_start_ns, ts_ns, increase)
        else:
            point = NumberDataPoint(dict(attrs), state.start_ns, ts_ns, state.total)
        out.add(meta, meta.name, point)

    # -- helpers -------------------------------------------------------------------------

    def _attrs(self, meta: N.OtelName, labels: Labels) -> Attrs:
        attrs = dict(labels)
        attrs.update(meta.attributes)
        if meta.genai:
            attrs["gen_ai.operation.name"] = self.config.genai_operation
            attrs["gen_ai.provider.name"] = self.identity.engine
            if self.identity.model:
                attrs["gen_ai.request.model"] = self.identity.model
        return tuple(sorted(attrs.items()))

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
        return Metric(name=name, description="", unit=meta.unit, data=data)


def _otlp_buckets(
    bounds: tuple[float, ...], cumulative: tuple[float, ...]
) -> tuple[tuple[float, ...], list[int]]:
    """Engine ``le`` bounds (last +Inf) -> OTLP explicit bounds and per-bucket counts."""
    buckets = _per_bucket(cumulative)
    if math.isinf(bounds[-1]):
        return tuple(bounds[:-1]), buckets
    return tuple(bounds), [*buckets, 0]


def _hist_point(
    attrs: Attrs, start_ns: int, ts_ns: int, bounds: tuple[float, ...], buckets: list[int], total: float
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=dict(attrs),
        start_time_unix_nano=start_ns,
        time_unix_nano=ts_ns,
        count=sum(buckets),
        sum=total,
        bucket_counts=list(buckets),
        explicit_bounds=list(bounds),
        min=None,  # type: ignore[arg-type]  # unknown for pre-aggregated engine buckets
        max=None,  # type: ignore[arg-type]
    )
