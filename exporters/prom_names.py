"""Prometheus names of the project's own series: base units, ``_total`` on counters, real HELP.

Derived from the registry ``enginescope.collectors.signals`` (kind, UCUM unit, description),
never from a local list. Prometheus wants base units in the name (seconds, watts, celsius,
hertz, bytes, ratio: https://prometheus.io/docs/practices/naming/), so a registry signal
whose name carries an abbreviated unit (``gpu_power_w``, ``gpu_sm_clock_mhz``) is renamed and,
where the unit is not a base unit (``%``, ``MHz``), its value scaled.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginescope.collectors.gpu_columns import GPU_COLUMNS
from enginescope.collectors.signals import RATIO_UNIT, SIGNALS, Kind

PREFIX = "enginescope_"

# UCUM unit -> (Prometheus unit word, factor to the base unit).
_BASE_UNITS: dict[str, tuple[str, float]] = {
    "s": ("seconds", 1.0),
    "W": ("watts", 1.0),
    "Cel": ("celsius", 1.0),
    "%": ("ratio", 0.01),
    "MHz": ("hertz", 1e6),
    "By": ("bytes", 1.0),
    "J": ("joules", 1.0),
    "{token}/s": ("tokens_per_second", 1.0),
    "By/s": ("bytes_per_second", 1.0),
}
# Name suffixes that spell a unit (longest first), stripped before the base unit is appended.
_SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_bytes_per_s", "By/s"),
    ("_seconds", "s"),
    ("_bytes", "By"),
    ("_pct", "%"),
    ("_mhz", "MHz"),
    ("_tps", "{token}/s"),
    ("_w", "W"),
    ("_c", "Cel"),
    ("_j", "J"),
)
GPU_DEVICE_PREFIX = PREFIX + "gpu_device_"


@dataclass(frozen=True, slots=True)
class PromMetric:
    """One family as served: ``name`` is the family (a counter's samples add ``_total``)."""

    name: str
    kind: Kind
    help: str
    scale: float = 1.0  # multiply the sidecar's value by this to get the base unit


def _base_unit_name(stem: str, unit: str) -> tuple[str, float]:
    """Strip a unit spelled in the name and append the base unit word (and its factor)."""
    for suffix, _ in _SUFFIX_UNITS:
        if stem.endswith(suffix):
            stem = stem.removesuffix(suffix)
            break
    word, factor = _BASE_UNITS.get(unit, ("", 1.0))
    return (f"{stem}_{word}" if word else stem), factor


def signal_metric(name: str) -> PromMetric:
    """The Prometheus family of a registry signal (``gpu_power_w`` -> ``enginescope_gpu_power_watts``)."""
    sig = SIGNALS[name]
    stem, factor = _base_unit_name(sig.name, sig.unit)
    if sig.unit == "1" and sig.chart_unit == RATIO_UNIT and not stem.endswith("_ratio"):
        stem = stem.removesuffix("_rate") + "_ratio"  # a fraction says so in its name
    unit_note = f" ({sig.chart_unit})" if sig.chart_unit not in (RATIO_UNIT, "0/1") else ""
    return PromMetric(PREFIX + stem, sig.kind, sig.description + unit_note, factor)


def prom_name(signal: str) -> str:
    """Family name of a registry signal; the generator's PromQL uses this too."""
    return signal_metric(signal).name


def gpu_column_metric(column: str) -> PromMetric | None:
    """Per-GPU family of one registered NVML column; None for identity and mask columns and
    for columns nobody registered (``tests/test_signals.py`` keeps the GPU source's registered)."""
    registered = GPU_COLUMNS.get(column)
    if registered is None or registered.kind is None:
        return None
    name, factor = _base_unit_name(registered.prom_stem or column, registered.unit)
    word = _BASE_UNITS.get(registered.unit, ("", 1.0))[0].replace("_", " ")
    note = "ratio 0-1" if word == "ratio" else word
    help_text = f"{registered.description}, per GPU" + (f" ({note})" if note else "")
    return PromMetric(GPU_DEVICE_PREFIX + name, registered.kind, help_text, factor)


EVENTS = PromMetric(
    PREFIX + "events", Kind.COUNTER, "Lifecycle, autoscaling and GPU events seen by the sidecar, by kind"
)
SERIES_FOLDED = PromMetric(
    PREFIX + "endpoint_series_folded",
    Kind.COUNTER,
    "New label sets folded into the otel_metric_overflow series because the series cap was reached",
)
SERIES_LIVE = PromMetric(
    PREFIX + "endpoint_series", Kind.GAUGE, "Series the endpoint serves, per family kind"
)

# The sidecar's own samples (``enginescope_sidecar_*`` from the engine source, ``enginescope_otlp_*``
# from the OTLP sink) travel in ``Batch.samples`` next to the engine's; served with these HELP
# texts (family names: counters without ``_total``), never as engine samples.
_SIDECAR_SAMPLE_HELP = {
    "enginescope_sidecar_scrapes": "Scrapes of the engine's metrics endpoint by the sidecar",
    "enginescope_sidecar_scrape_errors": "Scrapes of the engine's metrics endpoint that failed "
    "(refused, timed out, HTTP error)",
    "enginescope_sidecar_parse_errors": "Malformed lines of the engine's exposition the sidecar skipped",
    "enginescope_sidecar_scrape_duration_seconds": "Duration of the sidecar's last scrape of the engine",
    "enginescope_otlp_exported_points": "Data points the OTLP sink delivered",
    "enginescope_otlp_failed_exports": "OTLP export requests that failed (retried while the backlog holds them)",
    "enginescope_otlp_dropped_batches": "OTLP exports dropped because the backlog was full",
    "enginescope_otlp_dropped_bytes": "Bytes of OTLP exports dropped because the backlog was full",
    "enginescope_otlp_dropped_points": "Data points of OTLP exports dropped because the backlog was full",
    "enginescope_otlp_rejected_points": "Data points the OTLP receiver rejected (partial success)",
    "enginescope_otlp_overflow_updates": "Updates of new OTLP series folded into otel.metric.overflow",
    "enginescope_otlp_expired_series": "OTLP series that left the export after the series TTL",
    "enginescope_otlp_backlog_bytes": "Bytes of OTLP exports waiting to be sent",
    "enginescope_otlp_backlog_batches": "OTLP exports waiting to be sent",
    "enginescope_otlp_series": "Live series in the OTLP sink's state",
}


def sidecar_sample_help(family: str) -> str | None:
    """HELP of one of the sidecar's own sample families, None for an engine family."""
    if not family.startswith(PREFIX):
        return None
    return _SIDECAR_SAMPLE_HELP.get(family, "The enginescope sidecar's own metric (not from the engine)")
