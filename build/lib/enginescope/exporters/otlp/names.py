"""Which OTLP name, unit and instrument each enginescope series gets.

Semantic conventions where one exists (GenAI server histograms, hardware GPU metrics;
units per UCUM as the conventions use them: s, By, W, J, Cel, 1), ``enginescope.*`` for the
rest. The tables are public: dashboards and Collector configs are written against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from enginescope.collectors.signals import THROTTLE_REASONS


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


H, G, C = Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER

HISTOGRAM_SIGNALS: dict[str, OtelName] = {
    "ttft_seconds": OtelName("gen_ai.server.time_to_first_token", "s", H, genai=True),
    "tpot_seconds": OtelName("gen_ai.server.time_per_output_token", "s", H, genai=True),
    "e2e_seconds": OtelName("gen_ai.server.request.duration", "s", H, genai=True),
    # No convention: ITL is per output chunk, TPOT per request (sglang-metrics.md).
    "itl_seconds": OtelName("enginescope.inter_token_latency", "s", H),
    "queue_time_seconds": OtelName("enginescope.queue.time", "s", H),
}

GAUGE_SIGNALS: dict[str, OtelName] = {
    "queue_depth": OtelName("enginescope.queue.depth", "{request}", G),
    "running_requests": OtelName("enginescope.requests.running", "{request}", G),
    "kv_usage_ratio": OtelName("enginescope.kv_cache.usage", "1", G),
    "cache_hit_ratio": OtelName("enginescope.prefix_cache.hit_ratio", "1", G),
    "spec_accept_length": OtelName("enginescope.spec_decode.accept_length", "{token}", G),
    "spec_accept_rate": OtelName("enginescope.spec_decode.accept_rate", "1", G),
    "gen_throughput_tps": OtelName("enginescope.generation.throughput", "{token}/s", G),
    "startup_seconds": OtelName("enginescope.engine.startup.duration", "s", G),
    "weight_load_seconds": OtelName("enginescope.engine.weight_load.duration", "s", G),
    "engine_up": OtelName("enginescope.engine.up", "1", G),
}

COUNTER_SIGNALS: dict[str, OtelName] = {
    "prompt_tokens": OtelName("enginescope.tokens", "{token}", C, (("gen_ai.token.type", "input"),)),
    "generation_tokens": OtelName("enginescope.tokens", "{token}", C, (("gen_ai.token.type", "output"),)),
    "cached_tokens": OtelName("enginescope.tokens.cached", "{token}", C),
    "requests_finished": OtelName("enginescope.requests.finished", "{request}", C),
    "requests_aborted": OtelName("enginescope.requests.aborted", "{request}", C),
    "retractions": OtelName("enginescope.requests.retracted", "{request}", C),
}

# Per-replica GPU aggregates duplicate the per-device hw.* series below, so OTLP skips them.
GPU_AGGREGATE_PREFIX = "gpu_"

EVENTS = OtelName("enginescope.events", "{event}", C)
EVENT_KIND_ATTR = "enginescope.event.kind"

# GpuRow field -> per-device OTLP series. The first matching field name wins, so the table
# accepts the spellings a GPU source may use; unknown numeric fields go to enginescope.gpu.<field>.
GPU_FIELDS: tuple[tuple[tuple[str, ...], OtelName], ...] = (
    (
        ("utilization_pct", "gpu_utilization_pct", "util_pct"),
        OtelName("hw.gpu.utilization", "1", G, (("hw.gpu.task", "general"),), scale=0.01),
    ),
    (
        ("memory_used_bytes", "fb_used_bytes", "mem_used_bytes"),
        OtelName("hw.gpu.memory.usage", "By", Kind.UPDOWN),
    ),
    (
        ("memory_total_bytes", "fb_total_bytes", "mem_total_bytes"),
        OtelName("hw.gpu.memory.limit", "By", Kind.UPDOWN),
    ),
    (
        ("memory_utilization_pct", "mem_copy_utilization_pct", "mem_utilization_pct"),
        OtelName("hw.gpu.memory.utilization", "1", G, scale=0.01),
    ),
    (("power_w", "power_usage_w"), OtelName("hw.power", "W", G, (("hw.type", "gpu"),))),
    (("energy_j", "total_energy_j"), OtelName("hw.energy", "J", C, (("hw.type", "gpu"),))),
    (("energy_mj", "total_energy_mj"), OtelName("hw.energy", "J", C, (("hw.type", "gpu"),), scale=0.001)),
    (("temperature_c", "gpu_temp_c", "temp_c"), OtelName("hw.temperature", "Cel", G)),
    (("sm_clock_mhz",), OtelName("enginescope.gpu.clock.sm", "MHz", G)),
    (("mem_clock_mhz", "memory_clock_mhz"), OtelName("enginescope.gpu.clock.memory", "MHz", G)),
)
GPU_REASONS_FIELDS = ("clocks_event_reasons", "clock_event_reasons", "throttle_reasons")
GPU_REASON = OtelName("enginescope.gpu.clock_event.active", "1", G)
GPU_REASON_ATTR = "enginescope.gpu.clock_event.reason"
# nvmlDeviceGetCurrentClocksEventReasons bits (gpu-otel.md §2), named as the registry names them.
CLOCK_EVENT_REASONS: dict[int, str] = {r.bit: r.name for r in THROTTLE_REASONS}
# Fields that identify a GPU rather than measure it.
GPU_IDENTITY_FIELDS = frozenset(
    {"gpu_index", "index", "name", "gpu_name", "uuid", "pci_bus_id", "driver_version"}
)

_INVALID = re.compile(r"[^A-Za-z0-9_./-]")


def otel_safe(name: str) -> str:
    """An engine name as a valid OTel instrument name (``sglang:x`` -> ``sglang.x``)."""
    cleaned = _INVALID.sub(".", name)
    return cleaned if cleaned[:1].isalpha() else "m" + cleaned


def guess_unit(metric: str) -> str:
    for suffix, unit in (("_seconds", "s"), ("_bytes", "By"), ("_tokens", "{token}"), ("_ratio", "1")):
        if metric.removesuffix("_total").endswith(suffix):
            return unit
    return ""
