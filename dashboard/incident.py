"""The incident view: the first screen answers "what is broken, since when, is it recovering".

Top to bottom: a status strip (threshold attainment now vs the window, replicas up/wanted,
queue, the most likely cause in one line), the four key charts (TTFT, ITL, queue, replicas)
on the window's shared time axis with the event markers, then the full diagnosis, the
events table and every other chart that has data. Dragging across any chart zooms every
chart and the diagnosis to that range (kept in the URL like every other view state).
"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from enginescope.dashboard import cached, charts, diagnosis
from enginescope.dashboard.data import IncidentData, Window
from enginescope.dashboard.state import ViewState
from enginescope.dashboard.status import Status, status
from enginescope.views.panels import INCIDENT_PANELS, PanelKind, panel_by_id

KEY_PANELS = ("ttft", "itl", "queue", "replicas")
KEY_HEIGHT_PX = 150  # two rows of these plus the strip fit 1280x720 without scrolling
RATE_OR_MEAN = {PanelKind.RATE: "rate", PanelKind.GAUGE: "mean"}
STRIP_CSS = """<style>
.es-strip{display:flex;gap:.6rem;flex-wrap:wrap;margin:0 0 .2rem 0}
.es-tile{border:1px solid #ddd;border-radius:.4rem;padding:.25rem .6rem;min-width:11rem}
.es-tile .k{font-size:.72rem;color:#666}.es-tile .v{font-size:1.05rem;font-weight:600}
.es-bad{border-color:#d62728;background:#fdeeee}.es-ok{border-color:#2ca02c}
.es-cause{font-size:.95rem;padding:.3rem .6rem;border-left:.25rem solid #d62728;background:#fafafa}
.es-cause.es-okline{border-left-color:#2ca02c}
</style>"""


def render_incident(store: str, window: Window, state: ViewState, colours: dict[str, str]) -> None:
    data = cached.incident(store, window, state.per_replica)
    if data.empty:
        st.info("No engine data in this window. Pick a wider time range or check the sidecars.")
        return
    bucket_s = window.effective_bucket_s
    fleet = data.latency if not state.per_replica else cached.incident(store, window, False).latency
    incidents = cached.incidents(store, window, state.per_replica, tuple(sorted(state.slo.items())))
    domain = (pd.Timestamp(window.t0), pd.Timestamp(window.t1))
    events = charts.numbered_events(data.events, domain)
    limits = diagnosis.thresholds(fleet, state.slo or None)
    facts = status(fleet, data.series, data.replica_count, data.events, incidents, limits, domain)
    with st.container(key="status_strip"):
        st.markdown(STRIP_CSS + strip_html(facts), unsafe_allow_html=True)
    with st.container(key="cause_line"):
        ok = not incidents or not any(i.ongoing for i in incidents)
        css = "es-cause es-okline" if ok else "es-cause"
        st.markdown(f'<div class="{css}">{html.escape(facts.cause_line)}</div>', unsafe_allow_html=True)
    by_signal = split_by_signal(data.series)
    ctx = (data, by_signal, domain, limits, colours, bucket_s, events)
    shown, hidden = _with_data([panel_by_id(p) for p in KEY_PANELS], data, by_signal)
    with st.container(key="key_charts"):
        _grid(shown, ctx, state, window, key_prefix="key", height_px=KEY_HEIGHT_PX)
    others, hidden_others = _with_data(
        [p for p in INCIDENT_PANELS if p.id not in KEY_PANELS], data, by_signal
    )
    hidden += hidden_others
    if hidden:
        st.caption("No data in this window, hidden: " + ", ".join(p.axis_title for p in hidden))
    story, timeline = st.columns(2, gap="large")
    with story, st.container(key="diagnosis"):
        st.subheader("What happened")
        st.markdown("\n".join(diagnosis.summary_lines(incidents)))
    with timeline:
        st.subheader("Events")
        st.markdown(_event_table(events))
    st.markdown(_legend(colours, events), unsafe_allow_html=True)
    st.caption(
        f"Time buckets: {bucket_s} s · quantiles from bucket counts summed per bucket (never averaged) · "
        "numbers at the top of each chart are the events above; hover a marker for its event and replica · "
        "drag across a chart to zoom every chart and the diagnosis to that range"
    )
    _grid(others, ctx, state, window, key_prefix="more")


def strip_html(facts: Status) -> str:
    """The strip's tiles; a tile is red when the value says something is wrong now."""

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.0f} %"

    def num(value: float | int | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    bad_slo = facts.attainment_now is not None and facts.attainment_now < 1.0
    short = facts.replicas_up is not None and facts.replicas_wanted is not None
    short = short and facts.replicas_up < facts.replicas_wanted
    queued = bool(facts.queue_now and facts.queue_peak and facts.queue_now >= 0.5 * facts.queue_peak >= 5)
    tiles = [
        (f"p95 within {facts.threshold_kind} (share of time buckets): now · window",
         f"{pct(facts.attainment_now)} · {pct(facts.attainment_window)}", bad_slo),
        ("replicas up / wanted", f"{num(facts.replicas_up)} / {num(facts.replicas_wanted)}", short),
        ("queue (fleet, requests): now · window peak", f"{num(facts.queue_now)} · {num(facts.queue_peak)}", queued),
    ]  # fmt: skip
    cells = [
        f'<div class="es-tile {"es-bad" if bad else "es-ok"}"><div class="k">{html.escape(k)}</div>'
        f'<div class="v">{html.escape(v)}</div></div>'
        for k, v, bad in tiles
    ]
    return '<div class="es-strip">' + "".join(cells) + "</div>"


def _with_data(panels: list, data: IncidentData, by_signal: dict[str, pd.DataFrame]) -> tuple[list, list]:
    """(panels with rows in the window, panels without): empty frames are not drawn."""
    shown, hidden = [], []
    for panel in panels:
        (shown if _has_data(panel, data, by_signal) else hidden).append(panel)
    return shown, hidden


def _has_data(panel, data: IncidentData, by_signal: dict[str, pd.DataFrame]) -> bool:
    if panel.kind is PanelKind.LATENCY:
        df = data.latency.get(panel.signals[0])
        return df is not None and not df.empty and bool(df["p95"].notna().any())
    if panel.kind is PanelKind.REPLICA_COUNT:
        return not data.replica_count.empty
    df = by_signal.get(panel.signals[0])
    column = RATE_OR_MEAN[panel.kind]
    if df is None or df.empty or not df[column].notna().any():
        return False
    # A spec-decoding gauge of 0 everywhere is an engine without speculative decoding; a
    # queue of 0 is data (nothing queued).
    return panel.id != "spec" or bool(df[column].fillna(0).ne(0).any())


def _grid(
    panels, ctx, state: ViewState, window: Window, key_prefix: str, height_px: int | None = None
) -> None:
    """Charts two per row; a brush on any of them becomes the page's window."""
    if not panels:
        return
    cols = st.columns(2, gap="medium")
    for i, panel in enumerate(panels):
        spec = panel_chart(panel, *ctx)
        if height_px:
            spec["height"] = height_px
        key = f"{key_prefix}_{panel.id}_{window.t0.timestamp():.0f}_{window.t1.timestamp():.0f}"
        with cols[i % 2], st.container(key=f"{key_prefix}_chart_{panel.id}"):
            event = st.vega_lite_chart(
                spec, width="stretch", on_select="rerun", selection_mode=[charts.BRUSH], key=key
            )
        _zoom_to(charts.brushed_range(event), state)


def _zoom_to(brushed: tuple[pd.Timestamp, pd.Timestamp] | None, state: ViewState) -> None:
    if brushed is None:
        return
    state.range, state.t0, state.t1 = "custom", brushed[0].to_pydatetime(), brushed[1].to_pydatetime()
    st.query_params.from_dict(state.to_params())
    st.rerun()


def _event_table(events: pd.DataFrame, limit: int = 30) -> str:
    """The markers as a compact Markdown table (its numbers are the charts' labels); details
    other than scenario notes are in each marker's tooltip."""
    if events.empty:
        return "No lifecycle, scaling or GPU events in this window."
    rows = ["| # | time (UTC) | event | replica |", "|---|---|---|---|"]
    for r in events.head(limit).itertuples():
        what = f"{r.kind}: {r.detail}" if r.kind in ("scenario", "scale_up", "scale_down") else r.kind
        what = what.replace("|", "/")
        what = what if len(what) <= 48 else what[:46] + "…"
        rows.append(f"| {r.n} | {r.t:%H:%M:%S} | {what} | {short_name(r.replica)} |")
    if len(events) > limit:
        rows.append(f"| | | +{len(events) - limit} more (SQL view, preset `events`) | |")
    return "\n".join(rows)


def _legend(colours: dict[str, str], events: pd.DataFrame) -> str:
    """One colour key for the whole page: replicas, quantiles, event kinds present."""

    def chip(colour: str, text: str, dashed: bool = False) -> str:
        mark = "┆" if dashed else "━━"
        return f'<span style="color:{colour};font-weight:bold">{mark}</span>&nbsp;{text}'

    replicas = " &nbsp; ".join(chip(c, short_name(name)) for name, c in colours.items())
    quantiles = " &nbsp; ".join(chip(c, q) for q, c in charts.QUANTILE_COLOURS.items())
    kinds = [k for k in charts.EVENT_COLOURS if not events.empty and k in set(events["kind"])]
    markers = " &nbsp; ".join(chip(charts.EVENT_COLOURS[k], k, dashed=True) for k in kinds)
    parts = [f"<b>Replicas</b> {replicas}", f"<b>Latency</b> {quantiles} "
             f'{chip(charts.SLO_COLOUR, "SLO / threshold p95", dashed=True)}']  # fmt: skip
    if markers:
        parts.append(f"<b>Events</b> {markers}")
    return '<div style="font-size:0.85rem;line-height:1.9">' + " &nbsp;·&nbsp; ".join(parts) + "</div>"


def short_name(replica: str, keep: int = 12) -> str:
    """Modal task ids are long; their tail is what tells replicas apart."""
    return replica if len(replica) <= keep + 1 else "…" + replica[-keep:]


def split_by_signal(series: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The scalar series split once per render, not filtered again per chart."""
    return {} if series.empty else dict(tuple(series.groupby("signal", sort=False)))


def panel_chart(panel, data, by_signal, domain, limits, colours, bucket_s, events, title=None) -> dict:
    """The Vega-Lite spec of one panel over the window (latency, count or per-replica series)."""
    if panel.kind is PanelKind.LATENCY:
        signal = panel.signals[0]
        df = data.latency.get(signal, pd.DataFrame(columns=["t", "replica", "p50", "p95", "p99"]))
        limit = limits.get(signal)
        min_s = diagnosis.min_incident_s(bucket_s)  # shade what the diagnosis counts, not blips
        breaches = diagnosis.breach_intervals(df, limit[0], bucket_s, min_s) if limit and not df.empty else []
        slo_s = limit[0] if limit else None
        kind = "SLO" if limit and limit[1].startswith("SLO") else "threshold"
        return charts.latency_chart(df, panel, domain, events, slo_s, breaches, colours, title, kind)
    if panel.kind is PanelKind.REPLICA_COUNT:
        return charts.count_chart(data.replica_count, panel, domain, events)
    part = by_signal.get(panel.signals[0], pd.DataFrame(columns=["t", "replica", "signal", "mean", "rate"]))
    return charts.series_chart(part, panel, RATE_OR_MEAN[panel.kind], domain, events, colours, title)
