"""Pure data model shared by every stage: sources -> pipeline -> sinks -> store -> views.

No I/O here. Times are UTC epoch seconds (``ts_s``) until a sink converts them;
units live in names (``interval_s``, ``power_w``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable, so a series key is (name, labels)."""


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    GAUGE_HISTOGRAM = "gaugehistogram"
    SUMMARY = "summary"
    INFO = "info"
    STATESET = "stateset"
    UNTYPED = "untyped"


class EventKind(StrEnum):
    """Kinds in the store's ``events`` view. Values are a public interface: never rename."""

    CONTAINER_STARTED = "container_started"
    ENGINE_READY = "engine_ready"
    DRAINING = "draining"
    CONTAINER_STOPPED = "container_stopped"
    ENGINE_RESTART = "engine_restart"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    ENGINE_UP = "engine_up"
    ENGINE_DOWN = "engine_down"
    GPU_XID = "gpu_xid"
    GPU_THROTTLE = "gpu_throttle"
    GPU_LOST = "gpu_lost"
    GPU_SOURCE_DISABLED = "gpu_source_disabled"
    SIDECAR_STARTED = "sidecar_started"
    SIDECAR_STOPPED = "sidecar_stopped"
    SCENARIO = "scenario"  # simulator/demo annotations ("spike starts", ...)
    SPEC_ACCEPTANCE_DRIFT = "spec_acceptance_drift"  # views.spec_drift: one class's acceptance fell


@dataclass(frozen=True, slots=True)
class Identity:
    """Who produced a row. Stamped on every row of every table."""

    replica: str
    engine: str = "unknown"  # sglang | vllm | unknown
    model: str = ""
    region: str = ""
    gpu_type: str = ""
    cloud_provider: str = ""
    app: str = ""
    image_id: str = ""
    host: str = ""


@dataclass(slots=True)
class SampleRow:
    """A raw engine gauge/counter/untyped sample (``samples`` table).

    ``delta`` is the increase since the previous scrape for counters (reset-aware),
    None for gauges and for the sidecar's first (baseline) scrape.
    """

    ts_s: float
    metric: str
    type: str
    labels: Labels
    value: float
    delta: float | None = None
    interval_s: float | None = None


@dataclass(slots=True)
class HistogramRow:
    """Per-interval histogram increase (``histograms`` table).

    ``bounds`` are the upper bounds (le) ascending, last is +inf; ``counts`` are the
    cumulative bucket increases over the interval, as in Prometheus ``le`` buckets.
    ``signal`` is the canonical name (e.g. ``ttft_seconds``) or None if unmapped.
    """

    ts_s: float
    metric: str
    labels: Labels
    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float
    count: float
    interval_s: float
    signal: str | None = None


@dataclass(slots=True)
class SeriesRow:
    """A histogram series the engine exposed in one scrape, idle or not (``Batch.series``).

    ``histograms`` holds only intervals with new observations; these rows say which histogram
    series exist, with their bucket bounds (le, ascending, last +inf), so sinks keep exporting
    idle series and a series inventory can tell "idle" from "not exposed". Gauges and counters
    need no such row: every scrape yields a ``SampleRow`` for each of their series.
    """

    ts_s: float
    metric: str
    type: str
    labels: Labels
    bounds: tuple[float, ...] = ()
    signal: str | None = None


@dataclass(slots=True)
class SignalRow:
    """A canonical per-interval scalar (``signals`` table).

    Gauges: the value at ``ts_s``. Counter-derived signals: the increase over the
    interval ending at ``ts_s`` (rate = value / interval_s).
    """

    ts_s: float
    signal: str
    value: float
    interval_s: float
    labels: Labels = ()


@dataclass(slots=True)
class EventRow:
    ts_s: float
    kind: str
    detail: str = ""  # for people; code reads ``attributes``
    replica_count: int | None = None
    # Structured facts of the event (e.g. gpu_index, reasons), stored as a JSON object.
    attributes: dict[str, str | int | float] = field(default_factory=dict)


@dataclass(slots=True)
class GpuRow:
    """One GPU reading (``gpu`` table). Columns are nullable: NotSupported -> None."""

    ts_s: float
    gpu_uuid: str
    fields: dict[str, float | int | str | None]


@dataclass(slots=True)
class RequestRow:
    """One finished request from the engine's per-request export (``requests`` table)."""

    ts_s: float  # request finished (epoch s)
    fields: dict[str, float | int | str | None]


@dataclass(slots=True)
class Batch:
    """Everything one source produced in one tick, for one replica."""

    identity: Identity
    samples: list[SampleRow] = field(default_factory=list)
    histograms: list[HistogramRow] = field(default_factory=list)
    signals: list[SignalRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    gpu: list[GpuRow] = field(default_factory=list)
    requests: list[RequestRow] = field(default_factory=list)
    series: list[SeriesRow] = field(default_factory=list)
    # HELP text of each engine family in the scrape, by family name (a counter's without
    # ``_total``), for sinks that re-serve engine families; not data (``is_empty`` ignores it).
    helps: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            self.samples
            or self.histograms
            or self.signals
            or self.events
            or self.gpu
            or self.requests
            or self.series
        )
