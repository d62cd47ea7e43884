"""Vega-Lite specs of the incident view: one shared time domain, replica colours, numbered
event markers, labelled SLO lines and shaded breach windows. Pure: DataFrames in, dicts out.

Specs are plain dicts with their rows as named ``datasets`` (Streamlit sends them as Arrow):
no Altair object is built or validated per chart, which was most of a page render's cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from enginescope.dashboard.data import MAX_POINTS_PER_SERIES  # the bucket width keeps series shorter
from enginescope.views.panels import Panel

# 20 distinguishable colours; a replica keeps its index in the store's sorted replica list.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
QUANTILE_COLOURS = {"p50": "#2ca02c", "p95": "#ff7f0e", "p99": "#d62728"}
EVENT_COLOURS = {
    "scale_up": "#2ca02c", "scale_down": "#9467bd", "container_started": "#17becf",
    "engine_ready": "#1f77b4", "container_stopped": "#7f7f7f", "engine_restart": "#d62728",
    "gpu_xid": "#8c564b", "gpu_throttle": "#e377c2", "scenario": "#bcbd22", "spec_acceptance_drift": "#ff7f0e",
}  # fmt: skip
SLO_COLOUR = "#d62728"
HEIGHT_PX = 190
MAX_LABELLED_EVENTS = 40  # beyond this the markers stay unlabelled (table + tooltips)
_LABEL_GAP = 1 / 60  # events closer than this share of the window share one label

Spec = dict[str, Any]


def replica_colours(replicas: Sequence[str]) -> dict[str, str]:
    """Stable replica -> colour mapping shared by every chart of a page."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(replicas))}


def numbered_events(events: pd.DataFrame, domain: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
    """Events in the window with their marker number ``n`` (1-based, in time order) and the
    label drawn at the first event of each cluster (``"3–5"``): labels never pile up."""
    cols = ["t", "n", "kind", "replica", "detail", "label"]
    if events.empty:
        return pd.DataFrame(columns=cols)
    ev = events.rename(columns={"ts": "t"})
    ev = ev.loc[(ev["t"] >= domain[0]) & (ev["t"] <= domain[1])].sort_values("t").reset_index(drop=True)
    ev["n"] = ev.index + 1
    ev["label"] = ""
    if ev.empty or len(ev) > MAX_LABELLED_EVENTS:
        return ev[cols]
    gap = (domain[1] - domain[0]) * _LABEL_GAP
    first = 0
    for i in range(1, len(ev) + 1):
        if i == len(ev) or ev.at[i, "t"] - ev.at[first, "t"] > gap:
            ev.at[first, "label"] = str(first + 1) if i - 1 == first else f"{first + 1}–{i}"
            first = i
    return ev[cols]


def latency_chart(
    df: pd.DataFrame,
    panel: Panel,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    events: pd.DataFrame,
    slo_s: float | None = None,
    breaches: Sequence[tuple[pd.Timestamp, pd.Timestamp]] = (),
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
    slo_kind: str = "SLO",
) -> Spec:
    """p50/p95/p99 lines (fleet) or p95 per replica (when df holds several replicas)."""
    if not df.empty and df["replica"].nunique() > 1:
        rows = df[["t", "replica", "p95"]].rename(columns={"replica": "series", "p95": "value"})
        scale = _scale(colours or {})
        default = f"{panel.title} p95 per replica ({panel.unit})"
    else:
        rows = (
            df.melt(id_vars=["t"], value_vars=["p50", "p95", "p99"], var_name="series")
            if not df.empty
            else df
        )
        scale = _scale(QUANTILE_COLOURS)
        default = f"{panel.title} p50/p95/p99 ({panel.unit})"
    layers = [*_breach_layers(breaches), _line_layer(rows, scale, panel.unit, ".3f")]
    if slo_s:
        layers += _slo_layers(f"{slo_kind} p95 {slo_s:.3g} {panel.unit}", slo_s)
    return _chart(title or default, panel.unit, domain, layers, events)


def series_chart(
    df: pd.DataFrame,
    panel: Panel,
    column: str,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    events: pd.DataFrame,
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Spec:
    """One line per replica of ``column`` (mean, rate...); ``df`` holds the panel's signal
    (or several signals: only the panel's are drawn)."""
    part = df.loc[df["signal"].isin(panel.signals)] if not df.empty and "signal" in df else df
    rows = part[["t", "replica", column]].rename(columns={"replica": "series", column: "value"}) if not part.empty else part  # fmt: skip
    layers = [_line_layer(rows, _scale(colours or {}), panel.unit, ".3g")]
    return _chart(title or panel.axis_title, panel.unit, domain, layers, events)


def count_chart(
    df: pd.DataFrame, panel: Panel, domain: tuple[pd.Timestamp, pd.Timestamp], events: pd.DataFrame
) -> Spec:
    rows = df[["t", "replicas_up"]].rename(columns={"replicas_up": "value"}) if not df.empty else df
    rows = rows.assign(series="replicas up")
    layers = [_line_layer(rows, {"range": ["#333333"]}, panel.unit, "d")]
    return _chart(panel.axis_title, panel.unit, domain, layers, events)


def distribution_chart(values: pd.DataFrame, column: str, unit: str) -> Spec:
    """Empirical CDF of per-request values."""
    ordered = values[[column]].dropna().sort_values(column).reset_index(drop=True)
    ordered["fraction"] = (ordered.index + 1) / max(len(ordered), 1)
    return {
        "title": f"ECDF of {column} ({unit})",
        "height": 240,
        "data": {"values": ordered},
        "mark": {"type": "line", "interpolate": "step-after"},
        "encoding": {
            "x": {"field": column, "type": "quantitative", "title": f"{column} ({unit})"},
            "y": {"field": "fraction", "type": "quantitative", "title": "fraction ≤ x"},
        },
    }


def _chart(title: str, unit: str, domain, layers: list[Spec], events: pd.DataFrame) -> Spec:
    """Layers over the window's time axis, plus the event markers; rows as named datasets."""
    datasets: dict[str, pd.DataFrame] = {}
    for i, layer in enumerate(layers):
        if isinstance(layer.get("data"), pd.DataFrame):
            name = f"d{i}"
            datasets[name], layer["data"] = layer["data"], {"name": name}
    _add_brush(layers)
    if not events.empty:
        datasets["events"] = events
        layers = layers + _event_layers()
    # UTC on the axis as everywhere on the page (the browser's zone would shift it), 24-hour
    # labels (Vega's default "%I:%M" printed 23:23 as 11:23). A labelExpr, because this Vega-Lite
    # ignores an axis "format" with "formatType": "utc" (checked by rendering with vl-convert).
    x_scale = {"type": "utc", "domain": [domain[0].isoformat(), domain[1].isoformat()]}
    x_labels = f"utcFormat(datum.value, '{time_label_format(domain)}')"
    return {
        "title": {"text": title, "anchor": "start", "fontSize": 13},
        "height": HEIGHT_PX,
        "datasets": datasets,
        "encoding": {
            "x": {
                "field": "t",
                "type": "temporal",
                "title": None,
                "scale": x_scale,
                "axis": {"labelOverlap": True, "tickCount": 8, "labelExpr": x_labels},
            }
        },  # fmt: skip
        "layer": layers,
        "resolve": {"scale": {"color": "independent"}},
        "config": {"axisY": {"titleFontWeight": "normal"}, "view": {"stroke": "#dddddd"}},
    }


def time_label_format(domain: tuple[pd.Timestamp, pd.Timestamp]) -> str:
    """Seconds in windows of up to 10 min, the date in windows over two days."""
    span_s = (pd.Timestamp(domain[1]) - pd.Timestamp(domain[0])).total_seconds()
    if span_s <= 600:
        return "%H:%M:%S"
    return "%H:%M" if span_s <= 2 * 86400 else "%m-%d %H:%M"


BRUSH = "brush"  # the x-interval selection every time-series chart carries


def _add_brush(layers: list[Spec]) -> None:
    """Dragging across any chart selects a time range (the app makes it the window)."""
    for layer in layers:
        if layer.get("mark", {}).get("type") == "line":
            layer["params"] = [{"name": BRUSH, "select": {"type": "interval", "encodings": ["x"]}}]
            return


def brushed_range(selection: Any) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The time range of a chart's brush selection event (epoch ms or ISO text), or None."""
    try:
        values = selection["selection"][BRUSH]["t"]
    except (KeyError, TypeError):
        return None
    if not isinstance(values, list | tuple) or len(values) != 2:
        return None
    ts = [
        pd.Timestamp(v, unit="ms", tz="UTC") if isinstance(v, int | float) else pd.Timestamp(v)
        for v in values
    ]
    ts = [t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC") for t in ts]
    lo, hi = min(ts), max(ts)
    return (lo, hi) if hi > lo else None


def _line_layer(rows: pd.DataFrame, scale: Spec, unit: str, fmt: str) -> Spec:
    return {
        "data": _thin(rows),
        "mark": {"type": "line", "interpolate": "step-after", "strokeWidth": 1.5},
        "encoding": {
            "y": {"field": "value", "type": "quantitative", "title": unit},
            "color": {"field": "series", "type": "nominal", "scale": scale, "legend": None},
            "tooltip": [
                {
                    "field": "t",
                    "type": "temporal",
                    "title": "time (UTC)",
                    "format": "%H:%M:%S",
                    "formatType": "utc",
                },
                {"field": "series", "type": "nominal", "title": "series"},
                {"field": "value", "type": "quantitative", "title": unit, "format": fmt},
            ],
        },
    }


def _slo_layers(label: str, slo_s: float) -> list[Spec]:
    rows = pd.DataFrame({"y": [slo_s], "label": [label]})
    rule = {
        "data": rows,
        "mark": {"type": "rule", "color": SLO_COLOUR, "strokeDash": [6, 3]},
        "encoding": {"y": {"field": "y", "type": "quantitative"}, "x": None,
                     "tooltip": [{"field": "label", "type": "nominal", "title": "SLO"}]},
    }  # fmt: skip
    text = {
        "data": rows,
        "mark": {"type": "text", "color": SLO_COLOUR, "align": "right", "baseline": "bottom",
                 "dy": -2, "fontSize": 10, "fontWeight": "bold"},
        "encoding": {"y": {"field": "y", "type": "quantitative"}, "x": {"value": "width"},
                     "text": {"field": "label"}},
    }  # fmt: skip
    return [rule, text]


def _event_layers() -> list[Spec]:
    """Dashed rules coloured by kind (tooltip: the event) and a small number at the top that
    points into the page's event table."""
    colour = {"field": "kind", "type": "nominal", "scale": _scale(EVENT_COLOURS), "legend": None}
    tooltip = [
        {"field": "n", "type": "quantitative", "title": "#"},
        {"field": "t", "type": "temporal", "title": "time (UTC)", "format": "%H:%M:%S", "formatType": "utc"},
        {"field": "kind", "type": "nominal", "title": "event"},
        {"field": "replica", "type": "nominal", "title": "replica"},
        {"field": "detail", "type": "nominal", "title": "detail"},
    ]
    rules = {
        "data": {"name": "events"},
        "mark": {"type": "rule", "strokeDash": [3, 3], "strokeWidth": 1.2, "opacity": 0.85},
        "encoding": {"color": colour, "tooltip": tooltip, "y": None},
    }
    labels = {
        "data": {"name": "events"},
        "transform": [{"filter": "datum.label != ''"}],
        "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 2, "dy": 2, "fontSize": 10,
                 "fontWeight": "bold"},
        "encoding": {"color": colour, "text": {"field": "label"}, "y": {"value": 0}, "tooltip": tooltip},
    }  # fmt: skip
    return [rules, labels]


def _breach_layers(breaches: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> list[Spec]:
    if not breaches:
        return []
    spans = pd.DataFrame({"t": [b[0] for b in breaches], "t_end": [b[1] for b in breaches]})
    return [{
        "data": spans,
        "mark": {"type": "rect", "color": SLO_COLOUR, "opacity": 0.12},
        "encoding": {"x2": {"field": "t_end"}, "tooltip": [
            {"field": "t", "type": "temporal", "title": "breach from", "format": "%H:%M:%S", "formatType": "utc"},
            {"field": "t_end", "type": "temporal", "title": "until", "format": "%H:%M:%S", "formatType": "utc"}]},
    }]  # fmt: skip


def _thin(rows: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_POINTS_PER_SERIES points per series: keep every k-th row of a longer one."""
    if rows.empty or "series" not in rows:
        return rows
    longest = int(rows["series"].value_counts().max())
    if longest <= MAX_POINTS_PER_SERIES:
        return rows
    step = -(-longest // MAX_POINTS_PER_SERIES)
    return rows.loc[rows.groupby("series").cumcount() % step == 0]


def _scale(colours: Mapping[str, str]) -> Spec:
    return {"domain": list(colours), "range": list(colours.values())} if colours else {}
