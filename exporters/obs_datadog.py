"""Datadog dashboard and monitors JSON from the same panel definitions (``views/panels.py``).

Datadog receives the sidecar's OTLP through the Collector's ``datadog`` exporter (see
``obs_collector``): metric names stay the OTel names the sink sends (``enginescope.exporters.
otlp.names``), attributes and resource attributes become tags with the same keys, histograms
become distributions (``p95:<name>``), cumulative sums arrive as delta counts (``.as_rate()``).
SLO attainment needs per-bucket counts, which a distribution does not keep: those panels
become a note pointing at the Grafana dashboard and Datadog SLO objects.
"""

from __future__ import annotations

from enginescope.collectors.signals import SLOS, quantile_label
from enginescope.exporters.obs_dialect import GPU_AGGREGATES
from enginescope.exporters.otlp import names as otlp
from enginescope.recipes.schema import Recipe
from enginescope.views.panels import EXPORT_PANELS, Panel, PanelKind

REPLICA_TAG = "enginescope.replica"
MODEL_TAG = "enginescope.model"
SCOPE = "$model,$replica"


def _otel(signal: str) -> tuple[str, str, str]:
    """(metric, fixed tags, space aggregator) of a registry signal as Datadog receives it."""
    meta = otlp.for_signal(signal)
    if meta is not None:
        return meta.name, ",".join(f"{k}:{v}" for k, v in meta.attributes), "avg"
    if signal == "gpu_throttled":
        return otlp.GPU_REASON.name, "", "max"
    column, agg = GPU_AGGREGATES[signal]
    meta = otlp.gpu_column_meta(column)
    return meta.name, ",".join(f"{k}:{v}" for k, v in meta.attributes), agg


def _gpu_column(column: str) -> tuple[str, str]:
    meta = otlp.gpu_column_meta(column)
    return meta.name, ",".join(f"{k}:{v}" for k, v in meta.attributes)


def _scope(fixed: str) -> str:
    return ",".join(p for p in (fixed, SCOPE) if p)


def panel_requests(panel: Panel) -> list[str]:
    """Datadog metric queries of one panel (empty: the panel cannot be drawn from Datadog data)."""
    if panel.kind is PanelKind.SLO_ATTAINMENT:
        return []
    if panel.kind is PanelKind.GPU_DEVICE:
        name, fixed = _gpu_column(panel.signals[0])
        return [f"max:{name}{{{_scope(fixed)}}} by {{{REPLICA_TAG},hw.id}}"]
    name, fixed, agg = _otel(panel.signals[0])
    by = f" by {{{REPLICA_TAG}}}" if panel.per_replica else ""
    scope = _scope(fixed)
    if panel.kind is PanelKind.LATENCY:
        return [f"{quantile_label(q)}:{name}{{{scope}}}" for q in panel.quantiles]
    if panel.kind is PanelKind.HEATMAP:
        return [f"avg:{name}{{{scope}}}"]
    if panel.kind is PanelKind.RATE:
        return [f"sum:{name}{{{scope}}}{by}.as_rate()"]
    if panel.kind is PanelKind.REPLICA_COUNT:
        return [f"sum:{name}{{{scope}}}"]
    return [f"{agg}:{name}{{{scope}}}{by}"]


def _widget(panel: Panel) -> dict:
    title = f"{panel.title} ({panel.unit})"
    queries = panel_requests(panel)
    if not queries:
        return {"definition": {"type": "note", "content": f"**{title}**: see the Grafana dashboard "
                               "(needs histogram buckets); in Datadog use an SLO object on the distribution."}}  # fmt: skip
    kind = "heatmap" if panel.kind is PanelKind.HEATMAP else "timeseries"
    requests = [{"q": q, "display_type": "line"} if kind == "timeseries" else {"q": q} for q in queries]
    return {"definition": {"type": kind, "title": title, "requests": requests, "show_legend": True}}


def datadog_dashboard(header: str) -> dict:
    return {
        "title": "enginescope: LLM engine incident view (OTLP via the Collector's datadog exporter)",
        "description": header,
        "layout_type": "ordered",
        "template_variables": [
            {"name": "model", "prefix": MODEL_TAG, "default": "*"},
            {"name": "replica", "prefix": REPLICA_TAG, "default": "*"},
        ],
        "widgets": [_widget(panel) for panel in EXPORT_PANELS],
    }


def datadog_monitors(recipes: list[Recipe], header: str) -> list[dict]:
    monitors = []
    for recipe in recipes:
        model = f"{MODEL_TAG}:{recipe.model.served_name}"
        tags = ["enginescope", f"recipe:{recipe.name}"]

        def monitor(name: str, query: str, critical: float, message: str, recipe=recipe, tags=tags) -> dict:
            return {"name": f"[{recipe.name}] {name}", "type": "query alert", "query": query,
                    "message": f"{message}\n{header}", "tags": tags,
                    "options": {"thresholds": {"critical": critical}, "notify_no_data": False}}  # fmt: skip

        for slo in SLOS:
            threshold = getattr(recipe.slo, slo.key)
            name, fixed, _ = _otel(slo.signal)
            scope = ",".join(p for p in (fixed, model) if p)
            q = f"percentile(last_5m):{quantile_label(slo.quantile)}:{name}{{{scope}}} > {threshold}"
            monitors.append(monitor(f"{slo.title} above SLO", q, threshold,
                                    f"{slo.title} over 5 min is above the SLO of {threshold} s."))  # fmt: skip
        events, kind = otlp.EVENTS.name, otlp.EVENT_KIND_ATTR
        queue = _otel("queue_depth")[0]
        monitors += [
            monitor("Queue growing", f"change(avg(last_10m),last_10m):avg:{queue}{{{model}}} by {{{REPLICA_TAG}}} > 10",
                    10, "Queue depth grew by more than 1 request/min for 10 min on {{enginescope.replica.name}}."),
            monitor("Replica flapping",
                    f"sum(last_30m):sum:{events}{{{model},{kind}:engine_restart}}.as_count() + "
                    f"sum:{events}{{{model},{kind}:container_started}}.as_count() - "
                    f"sum:{events}{{{model},{kind}:scale_up}}.as_count() >= 3",
                    3, "3 or more engine restarts or replaced containers in 30 min."),
            monitor("GPU XID", f"sum(last_10m):sum:{events}{{{model},{kind}:gpu_xid}} by {{{REPLICA_TAG}}}.as_count() > 0",
                    0, "XID error on {{enginescope.replica.name}}."),
        ]  # fmt: skip
    return monitors
