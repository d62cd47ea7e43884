"""Engine-neutral panel definitions of the incident view, as plain data.

The Streamlit dashboard renders these, and the Grafana/OTLP generator turns the same
list into dashboard JSON, so both show the same signals in the same order with the
same units and SLO lines. Nothing here imports Streamlit, DuckDB or an engine.

``kind`` says which query feeds the panel:
  ``latency``        p50/p95/p99 from summed histogram buckets (``signals`` = one histogram signal)
  ``gauge``          scalar gauge signals, shown as the per-bucket mean
  ``rate``           counter increases divided by interval_s (per second)
  ``replica_count``  replicas with engine_up = 1
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PanelKind(StrEnum):
    LATENCY = "latency"
    GAUGE = "gauge"
    RATE = "rate"
    REPLICA_COUNT = "replica_count"


@dataclass(frozen=True, slots=True)
class Panel:
    id: str
    title: str
    kind: PanelKind
    signals: tuple[str, ...]
    unit: str  # human unit shown on the axis: "s", "requests", "W", ...
    per_replica: bool  # one line per replica (True) or one fleet-wide series
    slo_key: str | None = None  # key in a recipe's [slo] table, e.g. "ttft_p95_s"
    quantiles: tuple[float, ...] = ()
    description: str = ""

    @property
    def axis_title(self) -> str:
        return f"{self.title} ({self.unit})"


LATENCY_QUANTILES = (0.5, 0.95, 0.99)

INCIDENT_PANELS: tuple[Panel, ...] = (
    Panel(
        "ttft",
        "TTFT",
        PanelKind.LATENCY,
        ("ttft_seconds",),
        "s",
        per_replica=False,
        slo_key="ttft_p95_s",
        quantiles=LATENCY_QUANTILES,
        description="Time to first token, fleet-wide quantiles from summed buckets",
    ),
    Panel(
        "itl",
        "ITL",
        PanelKind.LATENCY,
        ("itl_seconds",),
        "s",
        per_replica=False,
        slo_key="itl_p95_s",
        quantiles=LATENCY_QUANTILES,
        description="Inter-token latency, fleet-wide quantiles from summed buckets",
    ),
    Panel(
        "e2e",
        "End-to-end latency",
        PanelKind.LATENCY,
        ("e2e_seconds",),
        "s",
        per_replica=False,
        slo_key="e2e_p95_s",
        quantiles=LATENCY_QUANTILES,
        description="Request latency, fleet-wide quantiles from summed buckets",
    ),
    Panel("queue", "Queue depth", PanelKind.GAUGE, ("queue_depth",), "requests", per_replica=True),
    Panel(
        "running", "Running requests", PanelKind.GAUGE, ("running_requests",), "requests", per_replica=True
    ),
    Panel("replicas", "Replicas up", PanelKind.REPLICA_COUNT, ("engine_up",), "replicas", per_replica=False),
    Panel(
        "spec",
        "Spec-decoding acceptance length",
        PanelKind.GAUGE,
        ("spec_accept_length",),
        "tokens/step",
        per_replica=True,
    ),
    Panel(
        "throughput",
        "Generation throughput",
        PanelKind.RATE,
        ("generation_tokens",),
        "tokens/s",
        per_replica=True,
        description="Counter increases divided by interval_s",
    ),
    Panel("kv", "KV cache usage", PanelKind.GAUGE, ("kv_usage_ratio",), "ratio 0–1", per_replica=True),
    Panel("gpu_power", "GPU power", PanelKind.GAUGE, ("gpu_power_w",), "W", per_replica=True),
    Panel(
        "gpu_temp", "GPU temperature (max)", PanelKind.GAUGE, ("gpu_temperature_c",), "°C", per_replica=True
    ),
    Panel("gpu_util", "GPU utilisation", PanelKind.GAUGE, ("gpu_utilization_pct",), "%", per_replica=True),
    Panel("gpu_clock", "GPU SM clock (min)", PanelKind.GAUGE, ("gpu_sm_clock_mhz",), "MHz", per_replica=True),
)

# Event kinds drawn as vertical markers on every time-series panel.
MARKER_EVENT_KINDS: tuple[str, ...] = (
    "scale_up",
    "scale_down",
    "container_started",
    "engine_ready",
    "container_stopped",
    "engine_restart",
    "gpu_xid",
    "gpu_throttle",
    "scenario",
)

SLO_KEYS: tuple[str, ...] = ("ttft_p95_s", "itl_p95_s", "e2e_p95_s")


def scalar_signals(panels: tuple[Panel, ...] = INCIDENT_PANELS) -> list[str]:
    """Every scalar signal the panels need, in panel order, for one batched query."""
    names: list[str] = []
    for panel in panels:
        if panel.kind in (PanelKind.GAUGE, PanelKind.RATE):
            names.extend(s for s in panel.signals if s not in names)
    return names


def panel_by_id(panel_id: str) -> Panel:
    for panel in INCIDENT_PANELS:
        if panel.id == panel_id:
            return panel
    raise KeyError(f"no panel {panel_id!r}")
