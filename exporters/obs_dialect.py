"""Where a registry signal lives in Prometheus, for each data path the generated configs serve.

- ``PROM``: Prometheus scraping the sidecar's endpoint (names from ``prom_names``; labels
  ``replica``, ``model``).
- ``OTLP``: the sidecar's OTLP export ingested by a Prometheus-compatible backend (Prometheus'
  OTLP receiver, Mimir, Grafana Cloud) with the standard OTLP->Prometheus translation
  (``prometheus/otlptranslator``, the OpenTelemetry "Prometheus and OpenMetrics compatibility"
  spec): name tokens split on every character outside ``[a-zA-Z0-9:]`` and joined with ``_``;
  the unit word appended unless already a token (``s``->``seconds``, ``By``->``bytes``,
  ``W``->``watts``, ``Cel``->``celsius``, ``J``->``joules``, ``{...}`` dropped, ``/s`` ->
  ``per_second``); ``_total`` on monotonic sums; ``_ratio`` on gauges with unit ``1``;
  attribute keys with ``.`` -> ``_``. ``service.instance.id`` (the replica id) becomes
  ``instance``; the other resource attributes land in ``target_info`` unless promoted, so the
  queries need ``enginescope.model`` promoted (Prometheus ``otlp: promote_resource_attributes``,
  Mimir ``-distributor.otel-promote-resource-attributes``), see docs/exports.md.

OTLP names come from ``enginescope.exporters.otlp.names`` (what the sink sends), never a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from enginescope.collectors.signals import SIGNALS, THROTTLE_REASONS, Kind
from enginescope.exporters.otlp import names as otlp
from enginescope.exporters.prom_names import EVENTS, gpu_column_metric, prom_name

# -- the OTLP -> Prometheus translation (otlptranslator, with suffixes, legacy charset) ---------

_UNIT_WORDS = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
               "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
               "MiBy": "mebibytes", "GiBy": "gibibytes", "m": "meters", "V": "volts", "A": "amperes",
               "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "",
               "%": "percent"}  # fmt: skip
_PER_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
PROMOTED_RESOURCE_ATTRIBUTES = (
    "enginescope.model",
    "enginescope.engine",
    "enginescope.gpu.type",
    "cloud.region",
)


def _clean_unit(word: str) -> str:
    return _NOT_LABEL_CHAR.sub("_", word).strip("_")


def otlp_metric_name(name: str, unit: str, kind: str, monotonic: bool = False) -> str:
    """Prometheus name of an OTLP metric; ``kind`` is gauge | sum | histogram."""
    tokens = [t for t in _NOT_NAME_CHAR.split(name) if t]
    main, _, per = unit.partition("/")
    main_word = _UNIT_WORDS.get(main.strip(), main.strip()) if main and "{" not in main else ""
    per_word = _PER_WORDS.get(per.strip(), per.strip()) if per and "{" not in per else ""
    main_word, per_word = _clean_unit(main_word), _clean_unit(per_word)
    if main_word and main_word not in tokens:
        tokens.append(main_word)
    if per_word and f"per_{per_word}" not in "_".join(tokens):
        tokens.append(f"per_{per_word}")
    if kind == "sum" and monotonic:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return "_" + out if out[:1].isdigit() else out


def otlp_label_name(key: str) -> str:
    out = _NOT_LABEL_CHAR.sub("_", key)
    return "key_" + out if out[:1].isdigit() else out


def _otlp_kind(meta: otlp.OtelName) -> tuple[str, bool]:
    return {
        otlp.Kind.GAUGE: ("gauge", False),
        otlp.Kind.COUNTER: ("sum", True),
        otlp.Kind.UPDOWN: ("sum", False),
        otlp.Kind.HISTOGRAM: ("histogram", False),
    }[meta.kind]


def translated(meta: otlp.OtelName) -> tuple[str, str]:
    """(Prometheus name, selector of the fixed attributes) of one OTLP series definition."""
    kind, monotonic = _otlp_kind(meta)
    selector = ", ".join(f'{otlp_label_name(k)}="{v}"' for k, v in meta.attributes)
    return otlp_metric_name(meta.name, meta.unit, kind, monotonic), selector


# -- dialects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """A signal as one PromQL selector: ``name{fixed, <filter>}``; ``per_gpu`` series are reduced
    to one value per replica with ``gpu_agg`` before the panel's own aggregation."""

    name: str
    fixed: str = ""  # fixed label matchers, e.g. 'hw_type="gpu"'
    per_gpu: bool = False
    gpu_agg: str = "sum"
    scale: float = 1.0  # factor from the stored unit to the served one (for thresholds)

    def select(self, filter_: str) -> str:
        inner = ", ".join(p for p in (self.fixed, filter_) if p)
        return f"{self.name}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class Dialect:
    key: str  # "prom" | "otlp": file-name suffix and uid
    title: str
    replica: str  # label holding the replica id
    model: str  # label holding the served model name
    event_kind: str  # label holding the event kind on the events counter
    events_name: str  # the events counter, with its _total
    up_name: str  # 1 while the engine answers (template variable source)

    @property
    def filter(self) -> str:
        return f'{self.model}=~"$model", {self.replica}=~"$replica"'

    def model_is(self, served_name: str) -> str:
        return f'{self.model}="{served_name}"'

    def series(self, signal: str) -> Series:
        return _prom_series(signal) if self.key == "prom" else _otlp_series(signal)

    def events(self, kind_regex: str, filter_: str) -> str:
        inner = ", ".join(p for p in (f'{self.event_kind}=~"{kind_regex}"', filter_) if p)
        return f"{self.events_name}{{{inner}}}"


def _prom_series(signal: str) -> Series:
    sig = SIGNALS[signal]
    name = prom_name(signal) + ("_total" if sig.kind is Kind.COUNTER else "")
    return Series(name)


# GPU aggregate signal -> (NVML column the per-device series carries, how the sidecar reduces it)
GPU_AGGREGATES = {
    "gpu_power_w": ("power_w", "sum"),
    "gpu_temperature_c": ("temperature_c", "max"),
    "gpu_utilization_pct": ("gpu_utilization_pct", "avg"),
    "gpu_sm_clock_mhz": ("sm_clock_mhz", "min"),
    "gpu_memory_used_bytes": ("fb_used_bytes", "sum"),
}


def _otlp_series(signal: str) -> Series:
    meta = otlp.for_signal(signal)
    if meta is not None:
        name, fixed = translated(meta)
        return Series(name, fixed, scale=meta.scale)
    if signal == "gpu_throttled":
        name, _ = translated(otlp.GPU_REASON)
        reasons = "|".join(r.name for r in THROTTLE_REASONS if r.slowdown)
        return Series(name, f'{otlp_label_name(otlp.GPU_REASON_ATTR)}=~"{reasons}"', True, "max")
    column, agg = GPU_AGGREGATES[signal]
    meta = otlp.gpu_column_meta(column)
    name, fixed = translated(meta)
    return Series(name, fixed, True, agg, meta.scale)


def gpu_device_series(column: str, dialect: Dialect) -> Series:
    """One NVML column per GPU (per-GPU panels): ``gpu`` label on PROM, ``hw_id`` on OTLP."""
    if dialect.key == "prom":
        metric = gpu_column_metric(column)
        if metric is None:
            raise KeyError(f"GPU column {column!r} is not served per device")
        return Series(metric.name + ("_total" if metric.kind is Kind.COUNTER else ""), scale=metric.scale)
    meta = otlp.gpu_column_meta(column)
    name, fixed = translated(meta)
    return Series(name, fixed, scale=meta.scale)


PROM = Dialect("prom", "Prometheus scraping the sidecar", "replica", "model", "kind",
               EVENTS.name + "_total", prom_name("engine_up"))  # fmt: skip
OTLP = Dialect(
    "otlp",
    "OTLP into Prometheus/Mimir/Grafana Cloud",
    "instance",  # service.instance.id = the replica id
    otlp_label_name("enginescope.model"),  # promoted resource attribute
    otlp_label_name(otlp.EVENT_KIND_ATTR),
    translated(otlp.EVENTS)[0],
    translated(otlp.SIGNAL_NAMES["engine_up"])[0],
)
DIALECTS = (PROM, OTLP)
GPU_LABEL = {"prom": "gpu", "otlp": otlp_label_name("hw.id")}
