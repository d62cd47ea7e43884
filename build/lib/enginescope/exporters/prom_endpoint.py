"""``PromEndpointSink``: the sidecar's enriched view on a Prometheus ``/metrics`` endpoint.

What it serves (text format 0.0.4), every series labelled with the replica's identity
(``replica``, ``engine``, ``model``, ``region``, ``gpu_type``):

- ``enginescope_<histogram signal>_bucket/_sum/_count`` (e.g. ``enginescope_ttft_seconds``):
  the engine's own buckets, summed from the per-interval increases since the sidecar started.
  Increases are reset-aware, so the series only go up; changed bounds restart the series
  (a counter reset to Prometheus, which ``rate()`` handles).
- ``enginescope_<gauge signal>`` (``enginescope_queue_depth``, ``enginescope_gpu_power_w``, ...)
  and ``enginescope_<counter signal>_total`` (accumulated increases).
- ``enginescope_gpu_device_<field>{gpu, gpu_index}``: every numeric NVML column per GPU.
- ``enginescope_events_total{kind}``: events seen (every kind starts at 0, so ``increase()``
  sees the first one).
- the raw engine samples under their own names (so existing engine dashboards keep working),
  and the sidecar's self-metrics.

Loopback by default: the endpoint is unauthenticated.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from enginescope.collectors.catalog import COUNTER_SIGNALS, HISTOGRAM_SIGNALS
from enginescope.collectors.model import Batch, EventKind, GpuRow, HistogramRow, Identity, SampleRow

PREFIX = "enginescope_"
REPLICA_LABELS = ("replica", "engine", "model", "region", "gpu_type")
GPU_DEVICE_PREFIX = "enginescope_gpu_device_"
GPU_IDENTITY_FIELDS = frozenset({"gpu_index", "gpu_name", "pci_bus_id", "driver_version", "xid_last"})
GPU_COUNTER_FIELDS = frozenset({"energy_j"})  # totals since driver load
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")
LabelDict = tuple[tuple[str, str], ...]


def canonical_name(signal: str) -> str:
    """Prometheus family name of a canonical signal (counters get ``_total`` on their sample)."""
    return PREFIX + signal


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    counts: list[float]
    sum: float = 0.0


@dataclass
class _State:
    """Everything exposed, keyed by (family, type) then by label set."""

    hists: dict[str, dict[LabelDict, _Hist]] = field(default_factory=dict)
    gauges: dict[str, dict[LabelDict, float]] = field(default_factory=dict)
    counters: dict[str, dict[LabelDict, float]] = field(default_factory=dict)
    raw: dict[str, tuple[str, dict[LabelDict, float]]] = field(default_factory=dict)


def _identity_labels(identity: Identity) -> dict[str, str]:
    return {name: getattr(identity, name) for name in REPLICA_LABELS}


def _merge_labels(base: dict[str, str], extra: LabelDict) -> LabelDict:
    """Engine labels plus ours; an engine label that clashes with ours becomes ``engine_<name>``."""
    merged = dict(base)
    for key, value in extra:
        key = _BAD_LABEL.sub("_", key)
        merged[f"engine_{key}" if key in base else key] = value
    return tuple(sorted(merged.items()))


class PromEndpointSink:
    """A ``Sink`` serving ``/metrics``; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9400, include_raw: bool = True) -> None:
        self.include_raw = include_raw
        self._state = _State()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(
                f"Prometheus endpoint: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self.host = host
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    # -- Sink protocol -------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        base = _identity_labels(batch.identity)
        with self._lock:
            self._init_events(base)
            for row in batch.histograms:
                self._histogram(base, row)
            for signal in batch.signals:
                labels = _merge_labels(base, signal.labels)
                if signal.signal in COUNTER_SIGNALS:
                    series = self._state.counters.setdefault(canonical_name(signal.signal), {})
                    series[labels] = series.get(labels, 0.0) + max(0.0, signal.value)
                else:
                    self._state.gauges.setdefault(canonical_name(signal.signal), {})[labels] = signal.value
            for gpu in batch.gpu:
                self._gpu(base, gpu)
            events = self._state.counters[canonical_name("events")]
            for event in batch.events:
                labels = tuple(sorted({**base, "kind": event.kind}.items()))
                events[labels] = events.get(labels, 0.0) + 1
            if self.include_raw:
                for sample in batch.samples:
                    self._raw(base, sample)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state updates (caller holds the lock) -------------------------------------------

    def _init_events(self, base: dict[str, str]) -> None:
        events = self._state.counters.setdefault(canonical_name("events"), {})
        for kind in EventKind:
            events.setdefault(tuple(sorted({**base, "kind": kind.value}.items())), 0.0)

    def _histogram(self, base: dict[str, str], row: HistogramRow) -> None:
        if not row.bounds or len(row.bounds) != len(row.counts):
            return
        # An unmapped engine histogram keeps its own name (``sglang:foo_seconds``).
        name = canonical_name(row.signal) if row.signal in HISTOGRAM_SIGNALS else row.metric
        bounds, counts = row.bounds, row.counts
        if not math.isinf(bounds[-1]):  # text format needs a +Inf bucket
            bounds, counts = (*bounds, math.inf), (*counts, row.count)
        series = self._state.hists.setdefault(name, {})
        labels = _merge_labels(base, row.labels)
        hist = series.get(labels)
        if hist is None or hist.bounds != bounds:
            hist = series[labels] = _Hist(bounds, [0.0] * len(bounds))
        running = 0.0
        for i, count in enumerate(counts):
            running = max(running, count)  # keep le buckets monotonic even on odd input
            hist.counts[i] += running
        hist.sum += row.sum

    def _gpu(self, base: dict[str, str], row: GpuRow) -> None:
        index = row.fields.get("gpu_index")
        labels = _merge_labels(
            base, (("gpu", row.gpu_uuid), ("gpu_index", "" if index is None else str(index)))
        )
        for name, value in row.fields.items():
            if name in GPU_IDENTITY_FIELDS or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            family = GPU_DEVICE_PREFIX + _BAD_LABEL.sub("_", name)
            table = self._state.counters if name in GPU_COUNTER_FIELDS else self._state.gauges
            table.setdefault(family, {})[labels] = float(value)

    def _raw(self, base: dict[str, str], sample: SampleRow) -> None:
        typ = {"counter": "counter", "gauge": "gauge"}.get(sample.type, "unknown")
        name = sample.metric.removesuffix("_total") if typ == "counter" else sample.metric
        kind, series = self._state.raw.setdefault(name, (typ, {}))
        if kind == typ:
            series[_merge_labels(base, sample.labels)] = sample.value

    # -- prometheus_client collector -------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect_hists()
            for name, series in self._state.gauges.items():
                yield _family(name, "gauge", "", series)
            for name, series in self._state.counters.items():
                yield _family(name, "counter", "_total", series)
            for name, (typ, series) in self._state.raw.items():
                yield _family(
                    name, typ, "_total" if typ == "counter" else "", series, doc="raw engine sample"
                )

    def _collect_hists(self) -> Iterator[Metric]:
        for name, series in self._state.hists.items():
            metric = Metric(name, "engine buckets, increases summed since sidecar start", "histogram")
            for labels, hist in series.items():
                for bound, count in zip(hist.bounds, hist.counts, strict=True):
                    metric.add_sample(f"{name}_bucket", {**dict(labels), "le": floatToGoString(bound)}, count)
                metric.add_sample(f"{name}_count", dict(labels), hist.counts[-1])
                metric.add_sample(f"{name}_sum", dict(labels), hist.sum)
            yield metric


def _family(name: str, typ: str, suffix: str, series: dict[LabelDict, float], doc: str = "") -> Metric:
    metric = Metric(name, doc or f"enginescope {typ}", typ)
    for labels, value in series.items():
        metric.add_sample(name + suffix, dict(labels), value)
    return metric
