"""The four views: incident (default), replica, requests, SQL. Each takes the store path,
the window and the URL state, and draws with Streamlit."""

from __future__ import annotations

import io

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import cached, charts, diagnosis
from dashboard.data import Window
from dashboard.state import ViewState
from exporters import queries
from exporters.panels import INCIDENT_PANELS, PanelKind, panel_by_id

RATE_OR_MEAN = {PanelKind.RATE: "rate", PanelKind.GAUGE: "mean"}


def render_incident(store: str, window: Window, state: ViewState, colours: alt.Scale) -> None:
    data = cached.incident(store, window, state.per_replica)
    if data.empty:
        st.info("No engine data in this window. Pick a wider time range or check the sidecars.")
        return
    bucket_s = window.effective_bucket_s
    fleet = data.latency if not state.per_replica else cached.incident(store, window, False).latency
    incidents = diagnosis.diagnose(
        fleet, data.series, data.events, state.slo or None, bucket_s, pd.Timestamp(window.t1)
    )
    st.subheader("What happened")
    st.markdown("\n".join(diagnosis.summary_lines(incidents)))
    limits = diagnosis.thresholds(fleet, state.slo or None)
    domain = (pd.Timestamp(window.t0), pd.Timestamp(window.t1))
    st.caption(
        f"Time buckets: {bucket_s} s · quantiles from bucket counts summed per bucket (never averaged)"
    )
    st.caption(_marker_legend(data.events))
    for panel in INCIDENT_PANELS:
        st.altair_chart(_panel_chart(panel, data, domain, limits, colours, bucket_s), width="stretch")


def _marker_legend(events: pd.DataFrame, limit: int = 40) -> str:
    """The vertical markers as text (charts draw on canvas: this is also what a reader greps)."""
    if events.empty:
        return "Event markers: none in this window"
    items = [f"{r.ts:%H:%M:%S} {r.kind} ({r.replica})" for r in events.head(limit).itertuples()]
    more = f" · +{len(events) - limit} more" if len(events) > limit else ""
    return "Event markers: " + " · ".join(items) + more


def _panel_chart(panel, data, domain, limits, colours, bucket_s) -> alt.LayerChart:
    if panel.kind is PanelKind.LATENCY:
        signal = panel.signals[0]
        df = data.latency.get(signal, pd.DataFrame(columns=["t", "replica", "p50", "p95", "p99"]))
        limit = limits.get(signal)
        breaches = diagnosis.breach_intervals(df, limit[0], bucket_s) if limit and not df.empty else []
        slo_s = limit[0] if limit else None
        return charts.latency_chart(df, panel, domain, data.events, slo_s, breaches, colours)
    if panel.kind is PanelKind.REPLICA_COUNT:
        return charts.count_chart(data.replica_count, panel, domain, data.events)
    return charts.series_chart(data.series, panel, RATE_OR_MEAN[panel.kind], domain, data.events, colours)


def render_replica(
    store: str, window: Window, state: ViewState, colours: alt.Scale, names: list[str]
) -> None:
    if not names:
        st.info("No replica has reported yet.")
        return
    chosen = st.selectbox("Replica", names, index=names.index(state.replica) if state.replica in names else 0)
    if chosen != state.replica:
        state.replica = chosen
        st.query_params.update(state.to_params())
    one = Window(window.t0, window.t1, (chosen,), window.model, window.bucket_s)
    data = cached.incident(store, one, True)
    domain = (pd.Timestamp(one.t0), pd.Timestamp(one.t1))
    events = data.events.loc[data.events["replica"] == chosen] if not data.events.empty else data.events
    st.markdown("**Lifecycle**")
    st.dataframe(events, hide_index=True, width="stretch")
    for panel_id in (
        "ttft",
        "itl",
        "e2e",
        "queue",
        "running",
        "kv",
        "spec",
        "gpu_power",
        "gpu_temp",
        "gpu_clock",
    ):
        panel = panel_by_id(panel_id)
        chart = _panel_chart(panel, data, domain, {}, colours, one.effective_bucket_s)
        st.altair_chart(chart.properties(title=f"{chosen}: {panel.axis_title}"), width="stretch")
    st.markdown("**Slowest requests**")
    slow = cached.slowest_requests(store, one, 20)
    if slow.empty:
        st.caption("No per-request data for this replica in the window (SGLang --export-metrics-to-file).")
    else:
        st.dataframe(slow, hide_index=True, width="stretch")


def render_requests(store: str, window: Window) -> None:
    values = cached.request_latencies(store, window)
    if values.empty:
        st.info("No per-request data in this window; the histogram estimates are on the incident view.")
        return
    column = st.radio("Latency", ["ttft_s", "e2e_s"], horizontal=True)
    signal = {"ttft_s": "ttft_seconds", "e2e_s": "e2e_seconds"}[column]
    rows = []
    for q in (0.5, 0.95, 0.99):
        exact = float(values[column].dropna().quantile(q, interpolation="higher"))
        estimate = cached.window_quantile(store, window, signal, q)
        rows.append({"quantile": f"p{round(q * 100)}", "exact from requests (s)": exact,
                     "histogram estimate (s)": estimate})  # fmt: skip
    st.markdown(f"**{len(values):,} requests** in the window")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.altair_chart(charts.distribution_chart(values, column, "s"), width="stretch")


def render_sql(store: str) -> None:
    con = cached.connection(store, sandbox=True)
    if con is None:
        st.info("No store yet.")
        return
    preset = st.selectbox("Example", sorted(queries.PRESETS), index=sorted(queries.PRESETS).index("events"))
    example = queries.PRESETS[preset]
    st.caption(f"{example.description}. Parameters: {', '.join(f'${k}' for k in example.params) or 'none'}")
    sql = st.text_area("Read-only SQL", value=_inline_example(example), height=180)
    if not st.button("Run"):
        return
    try:
        result = con.cursor().execute(sql).df()
    except Exception as exc:  # a user's SQL error is shown, not raised
        st.error(f"Query failed: {exc}")
        return
    st.dataframe(result, width="stretch")
    st.download_button("CSV", result.to_csv(index=False), "query.csv", "text/csv")
    buffer = io.BytesIO()
    result.to_parquet(buffer, index=False)
    st.download_button("Parquet", buffer.getvalue(), "query.parquet", "application/octet-stream")


def _inline_example(preset: queries.Preset) -> str:
    """The preset's SQL with defaults as SET VARIABLE-free literals is not safe; show it with
    DuckDB ``getvariable`` instead of binding: the user edits values in the SET lines."""
    lines = [f"SET VARIABLE {name} = {_literal(value)};" for name, value in preset.params.items()]
    body = preset.sql
    for name in sorted(preset.params, key=len, reverse=True):
        body = body.replace(f"${name}", f"getvariable('{name}')")
    return "\n".join([*lines, body.strip()])


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]::VARCHAR[]" if value else "[]::VARCHAR[]"
    if hasattr(value, "isoformat"):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"
