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

from enginescope.collectors.gpu_fields import IDENTITY_COLUMNS
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


# GpuRow column -> per-device series. Columns are the GPU source's (collectors/gpu_fields.py).
GPU_COLUMNS: dict[str, OtelName] = {
    "gpu_utilization_pct": _gpu(
        "hw.gpu.utilization", "1", G, "Fraction of time the GPU ran kernels", ("hw.gpu.task", "general"),
        scale=0.01,
    ),
    "enc_utilization_pct": _gpu(
        "hw.gpu.utilization", "1", G, "Fraction of time the GPU ran kernels", ("hw.gpu.task", "encoder"),
        scale=0.01,
    ),
    "dec_utilization_pct": _gpu(
        "hw.gpu.utilization", "1", G, "Fraction of time the GPU ran kernels", ("hw.gpu.task", "decoder"),
        scale=0.01,
    ),
    "fb_used_bytes": _gpu("hw.gpu.memory.usage", "By", U, "GPU memory used"),
    "fb_total_bytes": _gpu("hw.gpu.memory.limit", "By", U, "Size of the GPU memory"),
    # NVML's "memory utilization" is the memory controller's busy time, not memory used.
    "memory_utilization_pct": _gpu(
        "enginescope.gpu.memory_controller.utilization", "1", G,
        "Fraction of time device memory was read or written", scale=0.01,
    ),
    "power_w": _gpu("hw.power", "W", G, "Board power draw"),
    "energy_j": _gpu("hw.energy", "J", C, "Energy consumed since the driver loaded"),
    "power_limit_w": _gpu("enginescope.gpu.power.limit", "W", G, "Enforced power limit"),
    "sm_clock_mhz": _gpu("enginescope.gpu.clock.sm", "MHz", G, "SM clock"),
    "mem_clock_mhz": _gpu("enginescope.gpu.clock.memory", "MHz", G, "Memory clock"),
    "sm_clock_max_mhz": _gpu("enginescope.gpu.clock.sm.max", "MHz", G, "Maximum SM clock"),
    "mem_clock_max_mhz": _gpu("enginescope.gpu.clock.memory.max", "MHz", G, "Maximum memory clock"),
    "fan_pct": _gpu("enginescope.gpu.fan.speed", "1", G, "Fan speed as a fraction of its maximum", scale=0.01),
    "ecc_sbe_volatile": _gpu(
        "hw.errors", "{error}", C, "Errors encountered by the GPU", ("error.type", "ecc_corrected")
    ),
    "ecc_dbe_volatile": _gpu(
        "hw.errors", "{error}", C, "Errors encountered by the GPU", ("error.type", "ecc_uncorrected")
    ),
    "pcie_replay_count": _gpu(
        "hw.errors", "{error}", C, "Errors encountered by the GPU", ("error.type", "pcie_replay")
    ),
    "remapped_rows_correctable": _gpu(
        "enginescope.gpu.memory.remapped_rows", "{row}", C, "Memory rows remapped",
        ("enginescope.gpu.remap.cause", "correctable"),
    ),
    "remapped_rows_uncorrectable": _gpu(
        "enginescope.gpu.memory.remapped_rows", "{row}", C, "Memory rows remapped",
        ("enginescope.gpu.remap.cause", "uncorrectable"),
    ),
    "remapped_rows_pending": _gpu("enginescope.gpu.memory.remap.pending", "1", G, "1 while a remap is pending"),
    "row_remap_failure": _gpu("enginescope.gpu.memory.remap.failed", "1", G, "1 when row remapping failed"),
    "nvlink_links_active": _gpu(
        "enginescope.gpu.nvlink.links", "{link}", G, "NVLink links", ("enginescope.gpu.nvlink.state", "active")
    ),
    "nvlink_links_present": _gpu(
        "enginescope.gpu.nvlink.links", "{link}", G, "NVLink links", ("enginescope.gpu.nvlink.state", "present")
    ),
    "persistence_mode": _gpu("enginescope.gpu.persistence_mode", "1", G, "1 when persistence mode is on"),
    "compute_mode": _gpu("enginescope.gpu.compute_mode", "1", G, "NVML compute mode (nvmlComputeMode_t)"),
}  # fmt: skip
# Sensors are their own hardware components (hw.type=temperature) whose parent is the GPU.
GPU_TEMPERATURES: dict[str, tuple[str, str]] = {"temperature_c": ("temp", "GPU core"), "memory_temperature_c": ("mem-temp", "GPU memory")}  # fmt: skip
TEMPERATURE = OtelName("hw.temperature", "Cel", G, description="Temperature of the sensor")
# Rates in the GPU row, exported as the counter the convention asks for (integrated over time).
GPU_IO_COLUMNS: dict[str, str] = {"pcie_tx_bytes_per_s": "transmit", "pcie_rx_bytes_per_s": "receive"}
GPU_IO = _gpu("hw.gpu.io", "By", C, "Bytes transferred over PCIe (integrated from the sampled rate)")
# hw.gpu.memory.utilization as the convention defines it: fraction of memory used.
GPU_MEMORY_UTILIZATION = _gpu("hw.gpu.memory.utilization", "1", G, "Fraction of GPU memory used")
GPU_STATUS = _gpu("hw.status", "1", U, "1 for the state the GPU is in, 0 for the others")
GPU_STATES = ("ok", "degraded")
GPU_REASONS_COLUMN = "clock_event_reasons"
GPU_REASON = _gpu("enginescope.gpu.clock_event.active", "1", G, "1 while the clock-event reason is active")
GPU_REASON_ATTR = "enginescope.gpu.clock_event.reason"
CLOCK_EVENT_REASONS: dict[int, str] = {r.bit: r.name for r in THROTTLE_REASONS}
# Columns that identify a GPU (resource-like attributes) or duplicate another column.
GPU_IDENTITY = {"gpu_name": "hw.model", "driver_version": "hw.driver_version"}
# Identity columns (the GPU source's one list) go out as attributes or not at all.
GPU_SKIPPED = frozenset(
    (set(IDENTITY_COLUMNS) - GPU_IDENTITY.keys())
    | {"fb_free_bytes", "throttle_thermal"}
    | {r.column for r in THROTTLE_REASONS}
)

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
