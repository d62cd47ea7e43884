"""The project's vocabulary, defined once: canonical signals, SLO keys, quantiles, GPU throttle reasons.

Every consumer (catalog, GPU source, sinks, store, views, dashboard, config generator, bench)
derives its tables from these. A signal is named as the store's ``signals``/``histograms``
tables name it; its unit is UCUM as OpenTelemetry uses it (``s``, ``1``, ``By``, ``W``, ``Cel``,
``MHz``, ``{request}``, ``{token}``); ``chart_unit`` is what a chart axis says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    COUNTER = "counter"  # the store holds per-interval increases; exporters accumulate them


class Scope(StrEnum):
    ENGINE = "engine"  # read from the engine's /metrics through the catalog
    GPU = "gpu"  # per-replica aggregate of the GPU source's per-device rows
    FLEET = "fleet"  # written by a fleet watcher under a pseudo-replica


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    kind: Kind
    unit: str
    chart_unit: str
    description: str
    scope: Scope = Scope.ENGINE


RATIO_UNIT = "ratio 0–1"  # chart unit of a fraction (UCUM "1")

H, G, C = Kind.HISTOGRAM, Kind.GAUGE, Kind.COUNTER
_GPU, _FLEET = Scope.GPU, Scope.FLEET

_ALL: tuple[Signal, ...] = (
    Signal("ttft_seconds", H, "s", "s", "Time from request arrival to its first output token"),
    Signal("itl_seconds", H, "s", "s", "Time between consecutive output chunks of a streaming request"),
    Signal("tpot_seconds", H, "s", "s", "Decode time per output token of a finished request"),
    Signal("e2e_seconds", H, "s", "s", "Time from request arrival to its last output token"),
    Signal("queue_time_seconds", H, "s", "s", "Time a request waited before its first forward pass"),
    Signal("queue_depth", G, "{request}", "requests", "Requests waiting to be scheduled"),
    Signal("running_requests", G, "{request}", "requests", "Requests in the running batch"),
    Signal("kv_usage_ratio", G, "1", RATIO_UNIT, "Fraction of the KV cache in use (fullest pool)"),
    Signal("cache_hit_ratio", G, "1", RATIO_UNIT, "Prefix-cache hit ratio of prompt tokens in the interval"),
    Signal("spec_accept_length", G, "{token}", "tokens/step", "Tokens emitted per speculative verify step"),
    Signal("spec_accept_rate", G, "1", RATIO_UNIT, "Fraction of proposed draft tokens accepted"),
    Signal("gen_throughput_tps", G, "{token}/s", "tokens/s", "Output tokens generated per second"),
    Signal("startup_seconds", G, "s", "s", "Engine startup duration"),
    Signal("weight_load_seconds", G, "s", "s", "Model weight loading duration"),
    Signal("engine_up", G, "1", "0/1", "1 while the engine answers its metrics endpoint"),
    Signal("prompt_tokens", C, "{token}", "tokens", "Prompt (input) tokens processed"),
    Signal("generation_tokens", C, "{token}", "tokens", "Output tokens generated"),
    Signal("requests_finished", C, "{request}", "requests", "Requests finished (any reason)"),
    Signal("requests_aborted", C, "{request}", "requests", "Requests aborted by the engine or client"),
    Signal("retractions", C, "{request}", "requests", "Running requests retracted (KV cache full)"),
    Signal("cached_tokens", C, "{token}", "tokens", "Prompt tokens served from the prefix cache"),
    Signal("gpu_power_w", G, "W", "W", "Board power draw, summed over the replica's GPUs", _GPU),
    Signal("gpu_temperature_c", G, "Cel", "°C", "Hottest GPU core temperature of the replica", _GPU),
    Signal("gpu_utilization_pct", G, "%", "%", "Mean GPU busy time of the replica's GPUs", _GPU),
    Signal("gpu_sm_clock_mhz", G, "MHz", "MHz", "Slowest SM clock of the replica's GPUs", _GPU),
    Signal("gpu_memory_used_bytes", G, "By", "bytes", "Device memory used, summed over the GPUs", _GPU),
    Signal("gpu_throttled", G, "1", "0/1", "1 when any GPU of the replica has a slowdown reason", _GPU),
    Signal("fleet_replicas", G, "{replica}", "replicas", "Replicas the platform reports running", _FLEET),
    Signal(
        "fleet_backlog", G, "{request}", "requests", "Requests queued at the platform's front door", _FLEET
    ),
    Signal(
        "fleet_running_inputs", G, "{request}", "requests", "Inputs the platform reports in flight", _FLEET
    ),
)

SIGNALS: dict[str, Signal] = {s.name: s for s in _ALL}


def names(kind: Kind, scope: Scope | None = Scope.ENGINE) -> tuple[str, ...]:
    """Signal names of one kind (and scope; None = every scope), in registry order."""
    return tuple(s.name for s in _ALL if s.kind == kind and (scope is None or s.scope == scope))


def signal(name: str) -> Signal:
    try:
        return SIGNALS[name]
    except KeyError:
        raise KeyError(f"unknown signal {name!r}; known: {', '.join(SIGNALS)}") from None


# --- OpenTelemetry names ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OtelNaming:
    """A signal's OTel instrument: a semantic-convention name where one exists (v1.41.0: GenAI
    server metrics), else ``enginescope.*`` without units in the name; fixed attributes; whether
    the GenAI request attributes (operation, provider, model) apply."""

    name: str
    attributes: tuple[tuple[str, str], ...] = ()
    genai: bool = False
    description: str = ""  # the instrument's, where several columns share it (else the column's)


# GPU-scope signals are per-replica aggregates of the per-device ``hw.*`` series, which the OTLP
# exporter names itself; they are not exported as signals.
OTEL_NAMES: dict[str, OtelNaming] = {
    "ttft_seconds": OtelNaming("gen_ai.server.time_to_first_token", genai=True),
    "tpot_seconds": OtelNaming("gen_ai.server.time_per_output_token", genai=True),
    "e2e_seconds": OtelNaming("gen_ai.server.request.duration", genai=True),
    # No convention: ITL is per output chunk, TPOT per request (SGLang metrics_collector.py).
    "itl_seconds": OtelNaming("enginescope.inter_token_latency", genai=True),
    "queue_time_seconds": OtelNaming("enginescope.queue.time", genai=True),
    "queue_depth": OtelNaming("enginescope.queue.depth"),
    "running_requests": OtelNaming("enginescope.requests.running"),
    "kv_usage_ratio": OtelNaming("enginescope.kv_cache.usage"),
    "cache_hit_ratio": OtelNaming("enginescope.prefix_cache.hit_ratio"),
    "spec_accept_length": OtelNaming("enginescope.spec_decode.accept_length"),
    "spec_accept_rate": OtelNaming("enginescope.spec_decode.accept_rate"),
    "gen_throughput_tps": OtelNaming("enginescope.generation.throughput"),
    "startup_seconds": OtelNaming("enginescope.engine.startup.duration"),
    "weight_load_seconds": OtelNaming("enginescope.engine.weight_load.duration"),
    "engine_up": OtelNaming("enginescope.engine.up"),
    "prompt_tokens": OtelNaming("enginescope.tokens", (("gen_ai.token.type", "input"),)),
    "generation_tokens": OtelNaming("enginescope.tokens", (("gen_ai.token.type", "output"),)),
    "cached_tokens": OtelNaming("enginescope.tokens.cached"),
    "requests_finished": OtelNaming("enginescope.requests.finished"),
    "requests_aborted": OtelNaming("enginescope.requests.aborted"),
    "retractions": OtelNaming("enginescope.requests.retracted"),
    "fleet_replicas": OtelNaming("enginescope.fleet.replicas"),
    "fleet_backlog": OtelNaming("enginescope.fleet.backlog"),
    "fleet_running_inputs": OtelNaming("enginescope.fleet.running_inputs"),
}
_UNNAMED = [s.name for s in _ALL if s.scope is not Scope.GPU and s.name not in OTEL_NAMES]
if _UNNAMED:  # a new signal must get its OTel name here, not in an exporter
    raise RuntimeError(f"signals without an OTel name: {_UNNAMED}")


# --- quantiles ---------------------------------------------------------------------------------

QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


def quantile_label(q: float) -> str:
    """0.95 -> "p95", 0.999 -> "p99.9"."""
    return f"p{q * 100:g}"


# --- SLOs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slo:
    key: str  # key in a recipe's [slo] table
    signal: str  # histogram signal it bounds
    quantile: float
    label: str  # short display name

    @property
    def title(self) -> str:
        return f"{self.label} {quantile_label(self.quantile)}"


SLOS: tuple[Slo, ...] = (
    Slo("ttft_p95_s", "ttft_seconds", 0.95, "TTFT"),
    Slo("itl_p95_s", "itl_seconds", 0.95, "ITL"),
    Slo("e2e_p95_s", "e2e_seconds", 0.95, "e2e"),
)
SLO_SIGNALS: dict[str, str] = {s.key: s.signal for s in SLOS}  # SLO key -> signal
SLO_BY_SIGNAL: dict[str, Slo] = {s.signal: s for s in SLOS}


# --- GPU clock-event ("throttle") reasons ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleReason:
    name: str  # the one spelling: column ``throttle_<name>``, event detail, OTLP attribute value
    bit: int  # NVML ABI (nvmlClocksEventReason*)
    slowdown: bool  # a real slowdown, not one that follows load or configuration

    @property
    def column(self) -> str:
        return f"throttle_{self.name}"


# Bit values are NVML's ABI (nvml.h, nvmlClocksEventReason*); names follow NVML's constant names.
THROTTLE_REASONS: tuple[ThrottleReason, ...] = (
    ThrottleReason("gpu_idle", 0x1, False),
    ThrottleReason("app_clocks", 0x2, False),
    ThrottleReason("sw_power_cap", 0x4, True),
    ThrottleReason("hw_slowdown", 0x8, True),
    ThrottleReason("sync_boost", 0x10, False),
    ThrottleReason("sw_thermal", 0x20, True),
    ThrottleReason("hw_thermal", 0x40, True),
    ThrottleReason("hw_power_brake", 0x80, True),
    ThrottleReason("display_clock", 0x100, False),
)
SLOWDOWN_MASK = sum(r.bit for r in THROTTLE_REASONS if r.slowdown)


def throttle_names(mask: int, *, slowdown_only: bool = True) -> list[str]:
    """Names of the reasons set in an NVML clock-event mask."""
    return [r.name for r in THROTTLE_REASONS if mask & r.bit and (r.slowdown or not slowdown_only)]


def _otel_text(name: str) -> str:
    otel = OTEL_NAMES.get(name)
    if otel is None:
        return "per device (`hw.gpu.*`)"
    attrs = "".join(f" {k}={v}" for k, v in otel.attributes)
    return f"`{otel.name}`{attrs}"


def markdown_reference() -> str:
    """docs/signals.md, generated from this registry (tests/test_signals.py checks it is current)."""
    lines = [
        "# Signals, SLOs and GPU throttle reasons",
        "",
        "Generated from `collectors/signals.py` (`python -m enginescope.collectors.signals > docs/signals.md`).",
        "Counters are stored as per-interval increases (`signals.value` over `interval_s`).",
        "",
        "| signal | kind | scope | unit (UCUM) | chart unit | OTel instrument | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{s.name}` | {s.kind} | {s.scope} | `{s.unit}` | {s.chart_unit} | {_otel_text(s.name)} | {s.description} |"
        for s in _ALL
    ]
    lines += ["", f"Default quantiles: {', '.join(quantile_label(q) for q in QUANTILES)}.", ""]
    lines += ["| SLO key (recipe `[slo]`) | signal | quantile |", "|---|---|---|"]
    lines += [f"| `{s.key}` | `{s.signal}` | {quantile_label(s.quantile)} |" for s in SLOS]
    lines += ["", "| throttle reason | NVML bit | slowdown (sets `gpu_throttled`) |", "|---|---|---|"]
    lines += [f"| `{r.name}` | `{r.bit:#x}` | {'yes' if r.slowdown else 'no'} |" for r in THROTTLE_REASONS]
    from enginescope.collectors.gpu_columns import markdown_table  # it imports this module

    lines += ["", "Per-GPU columns of the `gpu` table (`collectors/gpu_columns.py`):", "", *markdown_table()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
