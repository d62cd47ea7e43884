"""Altair charts of the incident view: one shared x axis, replica colours, event markers,
SLO lines and shaded breach windows. Pure: DataFrames in, charts out."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from exporters.panels import Panel

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
    "gpu_xid": "#8c564b", "gpu_throttle": "#e377c2", "scenario": "#bcbd22",
}  # fmt: skip
HEIGHT_PX = 150


def replica_scale(replicas: Sequence[str]) -> alt.Scale:
    """Stable replica -> colour mapping shared by every chart of a page."""
    domain = sorted(replicas)
    return alt.Scale(domain=domain, range=[PALETTE[i % len(PALETTE)] for i in range(len(domain))])


def _x(domain: tuple[pd.Timestamp, pd.Timestamp]) -> alt.X:
    return alt.X("t:T", title=None, scale=alt.Scale(domain=[d.isoformat() for d in domain]))


def latency_chart(
    df: pd.DataFrame,
    panel: Panel,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    events: pd.DataFrame,
    slo_s: float | None = None,
    breaches: Sequence[tuple[pd.Timestamp, pd.Timestamp]] = (),
    colours: alt.Scale | None = None,
) -> alt.LayerChart:
    """p50/p95/p99 lines (fleet) or p95 per replica (when df holds several replicas)."""
    per_replica = df["replica"].nunique() > 1 if not df.empty else False
    if per_replica:
        long = df.rename(columns={"p95": "value"}).assign(series=df["replica"])
        colour = alt.Color("series:N", title="replica", scale=colours or alt.Undefined)
        title = f"{panel.title} p95 per replica ({panel.unit})"
    else:
        long = df.melt(id_vars=["t"], value_vars=["p50", "p95", "p99"], var_name="series")
        scale = alt.Scale(domain=list(QUANTILE_COLOURS), range=list(QUANTILE_COLOURS.values()))
        colour = alt.Color("series:N", title="quantile", scale=scale)
        title = f"{panel.title} p50/p95/p99 ({panel.unit})"
    lines = (
        alt.Chart(long)
        .mark_line(interpolate="step-after")
        .encode(
            _x(domain),
            alt.Y("value:Q", title=panel.unit),
            colour,
            tooltip=["t:T", "series:N", alt.Tooltip("value:Q", format=".3f")],
        )
    )
    layers: list[alt.Chart] = [*_breach_layers(breaches), lines]
    if slo_s:
        rule = alt.Chart(pd.DataFrame({"y": [slo_s]})).mark_rule(color="#d62728", strokeDash=[6, 3])
        layers.append(rule.encode(y="y:Q", tooltip=[alt.Tooltip("y:Q", title=f"SLO ({panel.unit})")]))
    layers += _event_layers(events, domain)
    return alt.layer(*layers).properties(title=title, height=HEIGHT_PX)


def series_chart(
    df: pd.DataFrame,
    panel: Panel,
    column: str,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    events: pd.DataFrame,
    colours: alt.Scale | None = None,
) -> alt.LayerChart:
    """One line per replica of ``column`` (mean, rate...) for the panel's signal."""
    # Only the drawn columns: each chart's rows are serialised into the page.
    part = df.loc[df["signal"].isin(panel.signals), ["t", "replica", column]] if not df.empty else df
    lines = (
        alt.Chart(part)
        .mark_line(interpolate="step-after")
        .encode(
            _x(domain),
            alt.Y(f"{column}:Q", title=panel.unit),
            alt.Color("replica:N", scale=colours or alt.Undefined, legend=None),
            tooltip=["t:T", "replica:N", alt.Tooltip(f"{column}:Q", format=".3g")],
        )
    )
    layers = [lines, *_event_layers(events, domain)]
    return alt.layer(*layers).properties(title=f"{panel.title} ({panel.unit})", height=HEIGHT_PX)


def count_chart(df: pd.DataFrame, panel: Panel, domain, events: pd.DataFrame) -> alt.LayerChart:
    line = (
        alt.Chart(df)
        .mark_line(interpolate="step-after")
        .encode(_x(domain), alt.Y("replicas_up:Q", title=panel.unit), tooltip=["t:T", "replicas_up:Q"])
    )
    layers = [line, *_event_layers(events, domain)]
    return alt.layer(*layers).properties(title=f"{panel.title} ({panel.unit})", height=HEIGHT_PX)


def _event_layers(events: pd.DataFrame, domain) -> list[alt.Chart]:
    """Vertical rules with a kind label at the top, one colour per event kind."""
    if events.empty:
        return []
    ev = events.rename(columns={"ts": "t"})
    ev = ev.loc[(ev["t"] >= domain[0]) & (ev["t"] <= domain[1])]
    if ev.empty:
        return []
    ev = ev.assign(label=ev["kind"])
    scale = alt.Scale(domain=list(EVENT_COLOURS), range=list(EVENT_COLOURS.values()))
    colour = alt.Color("kind:N", scale=scale, legend=None)
    base = alt.Chart(ev).encode(x="t:T")
    rules = base.mark_rule(strokeDash=[2, 2], opacity=0.8).encode(
        colour, tooltip=["t:T", "kind:N", "replica:N", "detail:N"]
    )
    text = base.mark_text(angle=270, align="right", baseline="bottom", dy=-2, fontSize=9).encode(
        colour, y=alt.value(2), text="label:N"
    )
    return [rules, text]


def _breach_layers(breaches: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> list[alt.Chart]:
    if not breaches:
        return []
    spans = pd.DataFrame({"t": [b[0] for b in breaches], "t_end": [b[1] for b in breaches]})
    return [alt.Chart(spans).mark_rect(color="#d62728", opacity=0.12).encode(x="t:T", x2="t_end:T")]


def distribution_chart(values: pd.DataFrame, column: str, unit: str) -> alt.Chart:
    """Empirical CDF of per-request values."""
    ordered = values[[column]].dropna().sort_values(column).reset_index(drop=True)
    ordered["fraction"] = (ordered.index + 1) / max(len(ordered), 1)
    return (
        alt.Chart(ordered)
        .mark_line(interpolate="step-after")
        .encode(alt.X(f"{column}:Q", title=f"{column} ({unit})"), alt.Y("fraction:Q", title="fraction ≤ x"))
        .properties(title=f"ECDF of {column} ({unit})", height=220)
    )
