"""OTel naming of enginescope series: instrument names and attributes only.

Kinds, units, descriptions and OTel instrument names of canonical signals come from the one
registry (``enginescope.collectors.signals``); this module builds the OTel instruments from them
and names the per-device GPU series. Conventions followed: OpenTelemetry
semantic conventions v1.41.0, GenAI server metrics (``gen_ai.server.*``) and hardware GPU
metrics (``hw.gpu.*``, ``hw.errors``, ``hw.status``, ``hw.power``, ``hw.energy``,
``hw.temperature``); see docs/otlp.md. Everything without a convention is ``enginescope.*``,
named without units (the unit travels in the instrument's UCUM unit field).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from enginescope.collectors.gpu_columns import GPU_COLUMNS as REGISTRY
from enginescope.collectors.gpu_columns import MASK_COLUMN, GpuColumn
from enginescope.collectors.signals import OTEL_NAMES, SIGNALS, THROTTLE_REASONS, Scope
from enginescope.collectors.signals import Kind as SignalKind

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"  # monotonic sum
    UPDOWN = "updowncounter"  # non-monotonic sum, always cumulative
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class OtelName:
    name: str
    unit: str
    kind: Kind
    attributes: tuple[tuple[str, str], ...] = ()
    genai: bool = False  # add gen_ai.operation.name / provider.name / request.model
    scale: float = 1.0  # multiply the source value (e.g. percent -> ratio)
    description: str = ""


H, G, C, U = Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER, Kind.UPDOWN
_KINDS = {SignalKind.HISTOGRAM: H, SignalKind.GAUGE: G, SignalKind.COUNTER: C}


def _signal_meta(name: str) -> OtelName | None:
    sig = SIGNALS[name]
    if sig.scope is Scope.GPU:
        return None
    otel = OTEL_NAMES[name]
    return OtelName(
        otel.name, sig.unit, _KINDS[sig.kind], otel.attributes, otel.genai, description=sig.description
    )


SIGNAL_NAMES: dict[str, OtelName | None] = {name: _signal_meta(name) for name in SIGNALS}
"""Every registry signal -> its OTel name (None: a GPU aggregate, exported per device)."""


def for_signal(name: str) -> OtelName | None:
    """OTel name of a registry signal; None for GPU aggregates and unknown signals."""
    return SIGNAL_NAMES.get(name)


EVENTS = OtelName("enginescope.events", "{event}", C, description="Lifecycle and GPU events, by kind")
EVENT_KIND_ATTR = "enginescope.event.kind"
OVERFLOW_DESCRIPTION = "series folded into otel.metric.overflow=true because of the series cap"

# -- GPU (per device) -----------------------------------------------------------------------
_HW = (("hw.type", "gpu"),)


def _gpu(name: str, unit: str, kind: Kind, description: str, *attrs: tuple[str, str], scale: float = 1.0):
    return OtelName(name, unit, kind, (*_HW, *attrs), scale=scale, description=description)


def _gpu_column_meta(column: GpuColumn) -> OtelName:
    """A registry column as its OTel instrument: NVML percentages become ratios (unit 1)."""
    assert column.otel is not None
    unit, scale = ("1", 0.01) if column.unit == "%" else (column.unit, 1.0)
    kind = C if column.kind is SignalKind.COUNTER else (U if column.otel_updown else G)
    description = column.otel.description or column.description
    return _gpu(column.otel.name, unit, kind, description, *column.otel.attributes, scale=scale)


# Sensors are their own hardware components (hw.type=temperature) whose parent is the GPU:
# column -> (sensor id suffix, sensor name).
GPU_TEMPERATURES: dict[str, tuple[str, str]] = {"temperature_c": ("temp", "GPU core"), "memory_temperature_c": ("mem-temp", "GPU memory")}  # fmt: skip
_TEMPERATURE = REGISTRY["temperature_c"]
TEMPERATURE = OtelName(
    _TEMPERATURE.otel.name, _TEMPERATURE.unit, G, description=_TEMPERATURE.otel.description
)
# Rates in the GPU row, exported as the counter the convention asks for (integrated over time).
GPU_IO_COLUMNS: dict[str, str] = {
    c.name: dict(c.otel.attributes)["network.io.direction"]
    for c in REGISTRY.values()
    if c.otel is not None and c.otel.name == "hw.gpu.io"
}
_IO = REGISTRY["pcie_tx_bytes_per_s"].otel
GPU_IO = _gpu(_IO.name, "By", C, _IO.description)
# GpuRow column -> per-device series (temperatures and PCIe rates have their own shapes above).
GPU_COLUMNS: dict[str, OtelName] = {
    c.name: _gpu_column_meta(c)
    for c in REGISTRY.values()
    if c.otel is not None and c.name not in GPU_TEMPERATURES and c.name not in GPU_IO_COLUMNS
}
# hw.gpu.memory.utilization as the convention defines it: fraction of memory used.
GPU_MEMORY_UTILIZATION = _gpu("hw.gpu.memory.utilization", "1", G, "Fraction of GPU memory used")
GPU_STATUS = _gpu("hw.status", "1", U, "1 for the state the GPU is in, 0 for the others")
GPU_STATES = ("ok", "degraded")
GPU_REASONS_COLUMN = MASK_COLUMN
GPU_REASON = _gpu("enginescope.gpu.clock_event.active", "1", G, "1 while the clock-event reason is active")
GPU_REASON_ATTR = "enginescope.gpu.clock_event.reason"
CLOCK_EVENT_REASONS: dict[int, str] = {r.bit: r.name for r in THROTTLE_REASONS}
# Identity columns that go out as GPU attributes (the others, and fb_free_bytes and the
# throttle_* flags that duplicate other series, have no OTel instrument in the registry).
GPU_IDENTITY = {"gpu_name": "hw.model", "driver_version": "hw.driver_version"}

_INVALID = re.compile(r"[^A-Za-z0-9_./-]")
_UNIT_SUFFIXES = (("_seconds", "s"), ("_bytes", "By"), ("_tokens", "{token}"), ("_ratio", "1"))


def otel_safe(name: str) -> str:
    """An engine name as a valid OTel instrument name (``sglang:x`` -> ``sglang.x``)."""
    cleaned = _INVALID.sub(".", name)
    return cleaned if cleaned[:1].isalpha() else "m" + cleaned


def guess_unit(metric: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if metric.removesuffix("_total").endswith(suffix):
            return unit
    return ""


def operation_for_endpoint(path: str) -> str | None:
    """``gen_ai.operation.name`` for an OpenAI-compatible endpoint path; None if not one."""
    path = path.rstrip("/")
    for suffix, operation in _OPERATIONS:
        if path.endswith(suffix):
            return operation
    return None


_OPERATIONS = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/generate", "text_completion"),  # SGLang's native /generate takes a prompt
)


def gpu_column_meta(column: str) -> OtelName:
    """The per-device series a GpuRow column is exported as (temperatures are hw.temperature
    sensors whose ``hw.parent`` is the GPU)."""
    if column in GPU_COLUMNS:
        return GPU_COLUMNS[column]
    if column in GPU_TEMPERATURES:
        return OtelName(TEMPERATURE.name, TEMPERATURE.unit, TEMPERATURE.kind, (("hw.type", "temperature"),),
                        description=TEMPERATURE.description)  # fmt: skip
    raise KeyError(f"GPU column {column!r} is not exported per device over OTLP")
