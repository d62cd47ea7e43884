"""Engine-neutral panel definitions of the incident view, as plain data.

The Streamlit dashboard renders these, and the Grafana/OTLP generator turns the same
list into dashboard JSON, so both show the same signals in the same order with the
same units and SLO lines. Nothing here imports Streamlit, DuckDB or an engine.

``kind`` says which query feeds the panel:
  ``latency``        p50/p95/p99 from summed histogram buckets (``signals`` = one histogram signal)
  ``gauge``          scalar gauge signals, shown as the per-bucket mean
  ``rate``           counter increases divided by interval_s (per second)
  ``replica_count``  replicas with engine_up = 1
  ``heatmap``        per-bucket request counts of one histogram signal over time
  ``slo_attainment`` share of requests within the recipe's SLO (``slo_key``), from the bucket
                     at the SLO bound (goodput %)
  ``gpu_device``     one line per GPU of one NVML column (``signals`` = the column)

``INCIDENT_PANELS`` is the Streamlit incident view; ``EXPORT_PANELS`` adds what the generated
Grafana and Datadog dashboards show beyond it. SLO keys, their signals and the quantiles come
from the registry ``enginescope.collectors.signals``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from enginescope.collectors.signals import QUANTILES, RATIO_UNIT, SLO_BY_SIGNAL, SLOS, signal


class PanelKind(StrEnum):
    LATENCY = "latency"
    GAUGE = "gauge"
    RATE = "rate"
    REPLICA_COUNT = "replica_count"
    HEATMAP = "heatmap"
    SLO_ATTAINMENT = "slo_attainment"
    GPU_DEVICE = "gpu_device"


@dataclass(frozen=True, slots=True)
class Panel:
    id: str
    title: str
    kind: PanelKind
    signals: tuple[str, ...]
    per_replica: bool  # one line per replica (True) or one fleet-wide series
    slo_key: str | None = None  # key in a recipe's [slo] table, e.g. "ttft_p95_s"
    quantiles: tuple[float, ...] = ()
    description: str = ""
    unit_signal: str | None = None  # registry signal whose unit a GPU_DEVICE column has

    @property
    def unit(self) -> str:
        """The axis unit, from the registry's chart unit (never written per panel)."""
        if self.kind is PanelKind.SLO_ATTAINMENT:
            return RATIO_UNIT
        if self.kind is PanelKind.REPLICA_COUNT:
            return signal("fleet_replicas").chart_unit
        chart_unit = signal(self.unit_signal or self.signals[0]).chart_unit
        return f"{chart_unit}/s" if self.kind is PanelKind.RATE else chart_unit

    @property
    def axis_title(self) -> str:
        return f"{self.title} ({self.unit})"


LATENCY_QUANTILES = QUANTILES

INCIDENT_PANELS: tuple[Panel, ...] = (
    Panel(
        "ttft",
        "TTFT",
        PanelKind.LATENCY,
        ("ttft_seconds",),
        per_replica=False,
        slo_key=SLO_BY_SIGNAL["ttft_seconds"].key,
        quantiles=LATENCY_QUANTILES,
        description="Time to first token, fleet-wide quantiles from summed buckets",
    ),
    Panel(
        "itl",
        "ITL",
        PanelKind.LATENCY,
        ("itl_seconds",),
        per_replica=False,
        slo_key=SLO_BY_SIGNAL["itl_seconds"].key,
        quantiles=LATENCY_QUANTILES,
        description="Inter-token latency, fleet-wide quantiles from summed buckets",
    ),
    Panel(
        "e2e",
        "End-to-end latency",
        PanelKind.LATENCY,
        ("e2e_seconds",),
        per_replica=False,
        slo_key=SLO_BY_SIGNAL["e2e_seconds"].key,
        quantiles=LATENCY_QUANTILES,
        description="Request latency, fleet-wide quantiles from summed buckets",
    ),
    Panel("queue", "Queue depth", PanelKind.GAUGE, ("queue_depth",), per_replica=True),
    Panel("running", "Running requests", PanelKind.GAUGE, ("running_requests",), per_replica=True),
    Panel("replicas", "Replicas up", PanelKind.REPLICA_COUNT, ("engine_up",), per_replica=False),
    Panel(
        "spec",
        "Spec-decoding acceptance length",
        PanelKind.GAUGE,
        ("spec_accept_length",),
        per_replica=True,
    ),
    Panel(
        "throughput",
        "Generation throughput",
        PanelKind.RATE,
        ("generation_tokens",),
        per_replica=True,
        description="Counter increases divided by interval_s",
    ),
    Panel("kv", "KV cache usage", PanelKind.GAUGE, ("kv_usage_ratio",), per_replica=True),
    Panel("gpu_power", "GPU power", PanelKind.GAUGE, ("gpu_power_w",), per_replica=True),
    Panel("gpu_temp", "GPU temperature (max)", PanelKind.GAUGE, ("gpu_temperature_c",), per_replica=True),
    Panel("gpu_util", "GPU utilisation", PanelKind.GAUGE, ("gpu_utilization_pct",), per_replica=True),
    Panel("gpu_clock", "GPU SM clock (min)", PanelKind.GAUGE, ("gpu_sm_clock_mhz",), per_replica=True),
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
    "spec_acceptance_drift",  # costs throughput before latency shows it: the status strip names it
    "scenario",
)

SLO_KEYS: tuple[str, ...] = tuple(slo.key for slo in SLOS)


def _latency(panel_id: str, title: str, signal: str, description: str) -> Panel:
    slo = SLO_BY_SIGNAL.get(signal)
    return Panel(panel_id, title, PanelKind.LATENCY, (signal,), per_replica=False,
                 slo_key=slo.key if slo else None, quantiles=QUANTILES, description=description)  # fmt: skip


def _rate(panel_id: str, title: str, signal: str) -> Panel:
    return Panel(panel_id, title, PanelKind.RATE, (signal,), per_replica=True,
                 description="Counter increase per second")  # fmt: skip


EXPORT_PANELS: tuple[Panel, ...] = INCIDENT_PANELS + (
    _latency("tpot", "TPOT", "tpot_seconds", "Decode time per output token, quantiles from summed buckets"),
    _latency("queue_time", "Queue time", "queue_time_seconds", "Wait before the first forward pass"),
    Panel("ttft_heatmap", "TTFT heatmap", PanelKind.HEATMAP, ("ttft_seconds",), per_replica=False,
          description="Requests per TTFT bucket and interval"),
    Panel("itl_heatmap", "ITL heatmap", PanelKind.HEATMAP, ("itl_seconds",), per_replica=False,
          description="Output chunks per ITL bucket and interval"),
    *(
        Panel(f"{slo.signal}_attainment", f"{slo.label} SLO attainment", PanelKind.SLO_ATTAINMENT,
              (slo.signal,), per_replica=False, slo_key=slo.key,
              description=f"Share of requests with {slo.label} at or under the recipe's SLO")
        for slo in SLOS
    ),
    _rate("requests", "Finished requests", "requests_finished"),
    _rate("aborts", "Aborted requests", "requests_aborted"),
    _rate("retractions", "Retractions", "retractions"),
    Panel("cache_hit", "Prefix-cache hit ratio", PanelKind.GAUGE, ("cache_hit_ratio",),
          per_replica=True),
    Panel("spec_rate", "Spec-decoding acceptance rate", PanelKind.GAUGE, ("spec_accept_rate",),
          per_replica=True),
    Panel("gpu_device_power", "Power per GPU", PanelKind.GPU_DEVICE, ("power_w",), per_replica=True,
          unit_signal="gpu_power_w"),
    Panel("gpu_device_temp", "Temperature per GPU", PanelKind.GPU_DEVICE, ("temperature_c",),
          per_replica=True, unit_signal="gpu_temperature_c"),
    Panel("gpu_device_util", "Utilisation per GPU", PanelKind.GPU_DEVICE, ("gpu_utilization_pct",),
          per_replica=True, unit_signal="gpu_utilization_pct"),
)  # fmt: skip


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
