"""Grafana dashboard JSON from ``enginescope.views.panels.EXPORT_PANELS``, one per data path.

Same signals, order and units as the Streamlit incident view plus the export-only panels;
the units come from the name the data path serves (``_ratio``, ``_hertz``, ``_watts``, ...).
"""

from __future__ import annotations

from enginescope.exporters.obs_dialect import Dialect, gpu_device_series
from enginescope.exporters.obs_promql import events_marker, panel_queries
from enginescope.recipes.schema import Recipe
from enginescope.views.panels import EXPORT_PANELS, MARKER_EVENT_KINDS, SLO_KEYS, Panel, PanelKind

# Grafana unit ids for the human units of enginescope.views.panels; others become a suffix.
GRAFANA_UNITS = {"s": "s", "W": "watt", "°C": "celsius", "%": "percent", "MHz": "rotmhz",
                 "ratio 0–1": "percentunit", "requests": "short", "replicas": "short",
                 "requests/s": "reqps"}  # fmt: skip
# Base-unit suffix of the served name -> Grafana unit id (the values are in that unit).
_SUFFIX_GRAFANA = {"_ratio": "percentunit", "_hertz": "hertz", "_MHz": "rotmhz", "_watts": "watt",
                   "_celsius": "celsius", "_seconds": "s", "_bytes": "bytes"}  # fmt: skip
_PANEL_TYPES = {PanelKind.HEATMAP: "heatmap"}


def grafana_unit(panel: Panel, dialect: Dialect) -> str:
    if panel.kind is PanelKind.SLO_ATTAINMENT:
        return "percentunit"
    if panel.kind in (PanelKind.LATENCY, PanelKind.HEATMAP):
        return "s"
    if panel.kind is PanelKind.GPU_DEVICE:
        name = gpu_device_series(panel.signals[0], dialect).name
    else:
        name = dialect.series(panel.signals[0]).name.removesuffix("_total")
    for suffix, unit in _SUFFIX_GRAFANA.items():
        if name.endswith(suffix):
            return unit
    return GRAFANA_UNITS.get(panel.unit, f"suffix: {panel.unit}")


def grafana_dashboard(slo_recipe: Recipe | None, dialect: Dialect, header: str) -> dict:
    layout = _layout(EXPORT_PANELS)
    slos = {key: float(getattr(slo_recipe.slo, key)) if slo_recipe else 1.0 for key in SLO_KEYS}
    panels = [_panel(i, panel, layout[i], dialect, slos) for i, panel in enumerate(EXPORT_PANELS)]
    uid_suffix = "" if dialect.key == "prom" else f"-{dialect.key}"
    return {
        "title": f"enginescope: LLM engine incident view ({dialect.title})",
        "uid": f"enginescope-incident{uid_suffix}",
        "description": header,
        "tags": ["enginescope", "llm", "sglang", "vllm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": _variables(slo_recipe, dialect)},
        "annotations": {"list": [_events_annotation(dialect)]},
        "panels": panels,
    }


def _datasource() -> dict:
    return {"type": "prometheus", "uid": "${datasource}"}


def _variables(slo_recipe: Recipe | None, dialect: Dialect) -> list[dict]:
    def label_var(name: str, label: str) -> dict:
        query = f"label_values({dialect.up_name}, {label})"
        return {
            "name": name, "label": name, "type": "query", "datasource": _datasource(),
            "query": {"query": query, "refId": name}, "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"},
        }  # fmt: skip

    variables = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
        label_var("model", dialect.model),
        label_var("replica", dialect.replica),
    ]
    for key in SLO_KEYS:
        value = f"{getattr(slo_recipe.slo, key):g}" if slo_recipe else "1"
        source = f" (from recipe {slo_recipe.name})" if slo_recipe else ""
        variables.append({
            "name": key, "label": f"SLO {key}", "type": "textbox", "query": value,
            "current": {"text": value, "value": value},
            "description": f"SLO in seconds{source}; attainment panels need it to be a bucket bound",
        })  # fmt: skip
    return variables


def _events_annotation(dialect: Dialect) -> dict:
    return {
        "name": "events", "enable": True, "iconColor": "orange", "datasource": _datasource(),
        "expr": events_marker(dialect, MARKER_EVENT_KINDS), "step": "30s",
        "titleFormat": f"{{{{{dialect.event_kind}}}}}", "textFormat": f"{{{{{dialect.replica}}}}}",
    }  # fmt: skip


def _layout(panels: tuple[Panel, ...]) -> list[dict]:
    """Latency panels three to a row, the others two to a row, in panel order."""
    positions, x, y = [], 0, 0
    for panel in panels:
        width = 8 if panel.kind is PanelKind.LATENCY else 12
        if x + width > 24 or (positions and width != positions[-1]["w"]):
            x, y = 0, y + 8
        positions.append({"x": x, "y": y, "w": width, "h": 8})
        x += width
    return positions


def _panel(index: int, panel: Panel, grid_pos: dict, dialect: Dialect, slos: dict[str, float]) -> dict:
    heatmap = panel.kind is PanelKind.HEATMAP
    targets = []
    for i, (expr, legend) in enumerate(panel_queries(panel, dialect, slos)):
        target = {
            "refId": chr(ord("A") + i),
            "expr": expr,
            "legendFormat": legend,
            "datasource": _datasource(),
        }
        if heatmap:
            target["format"] = "heatmap"
        targets.append(target)
    unit = grafana_unit(panel, dialect)
    out = {
        "id": index + 1,
        "type": _PANEL_TYPES.get(panel.kind, "timeseries"),
        "title": f"{panel.title} ({'requests' if heatmap else panel.unit})",
        "description": _description(panel, slos),
        "datasource": _datasource(),
        "gridPos": grid_pos,
        "targets": targets,
    }
    if heatmap:
        out["options"] = {"calculate": False, "yAxis": {"unit": unit}, "cellGap": 1}
        out["fieldConfig"] = {"defaults": {}, "overrides": []}
        return out
    out["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "custom": {"axisLabel": panel.axis_title, "drawStyle": "line", "lineWidth": 1, "fillOpacity": 0},
        },
        "overrides": [_slo_override()] if panel.kind is PanelKind.LATENCY and panel.slo_key else [],
    }
    out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    return out


def _description(panel: Panel, slos: dict[str, float]) -> str:
    text = panel.description or f"signal: {', '.join(panel.signals)}"
    if panel.kind is PanelKind.SLO_ATTAINMENT and panel.slo_key:
        text += (f"; counted at the largest bucket bound at or under {slos[panel.slo_key]:g} s "
                 "(the recipe's SLO at generation time), so a lower bound of the true attainment")  # fmt: skip
    return text


def _slo_override() -> dict:
    return {
        "matcher": {"id": "byName", "options": "SLO p95"},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        ],
    }
