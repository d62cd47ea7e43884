"""The four views: incident (default), replica, requests, SQL. Each takes the store path,
the window and the URL state, and draws with Streamlit."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from enginescope.dashboard import cached, charts, diagnosis
from enginescope.dashboard.data import Window
from enginescope.dashboard.state import ViewState
from enginescope.views import queries
from enginescope.views.panels import INCIDENT_PANELS, PanelKind, panel_by_id

RATE_OR_MEAN = {PanelKind.RATE: "rate", PanelKind.GAUGE: "mean"}


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
    story, timeline = st.columns(2, gap="large")
    with story:
        st.subheader("What happened")
        st.markdown("\n".join(diagnosis.summary_lines(incidents)))
    with timeline:
        st.subheader("Events")
        st.markdown(_event_table(events))
    limits = diagnosis.thresholds(fleet, state.slo or None)
    st.markdown(_legend(colours, events), unsafe_allow_html=True)
    st.caption(
        f"Time buckets: {bucket_s} s · quantiles from bucket counts summed per bucket (never averaged) · "
        "numbers at the top of each chart are the events above; hover a marker for its detail"
    )
    by_signal = _split_by_signal(data.series)
    grid = st.columns(2, gap="medium")
    for i, panel in enumerate(INCIDENT_PANELS):
        spec = _panel_chart(panel, data, by_signal, domain, limits, colours, bucket_s, events)
        with grid[i % 2]:
            st.vega_lite_chart(spec, width="stretch")


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
        rows.append(f"| {r.n} | {r.t:%H:%M:%S} | {what} | {_short(r.replica)} |")
    if len(events) > limit:
        rows.append(f"| | | +{len(events) - limit} more (SQL view, preset `events`) | |")
    return "\n".join(rows)


def _legend(colours: dict[str, str], events: pd.DataFrame) -> str:
    """One colour key for the whole page: replicas, quantiles, event kinds present."""

    def chip(colour: str, text: str, dashed: bool = False) -> str:
        mark = "┆" if dashed else "━━"
        return f'<span style="color:{colour};font-weight:bold">{mark}</span>&nbsp;{text}'

    replicas = " &nbsp; ".join(chip(c, _short(name)) for name, c in colours.items())
    quantiles = " &nbsp; ".join(chip(c, q) for q, c in charts.QUANTILE_COLOURS.items())
    kinds = [k for k in charts.EVENT_COLOURS if not events.empty and k in set(events["kind"])]
    markers = " &nbsp; ".join(chip(charts.EVENT_COLOURS[k], k, dashed=True) for k in kinds)
    parts = [f"<b>Replicas</b> {replicas}", f"<b>Latency</b> {quantiles} "
             f'{chip(charts.SLO_COLOUR, "SLO / threshold p95", dashed=True)}']  # fmt: skip
    if markers:
        parts.append(f"<b>Events</b> {markers}")
    return '<div style="font-size:0.85rem;line-height:1.9">' + " &nbsp;·&nbsp; ".join(parts) + "</div>"


def _short(replica: str, keep: int = 12) -> str:
    """Modal task ids are long; their tail is what tells replicas apart."""
    return replica if len(replica) <= keep + 1 else "…" + replica[-keep:]


def _split_by_signal(series: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The scalar series split once per render, not filtered again per chart."""
    return {} if series.empty else dict(tuple(series.groupby("signal", sort=False)))


def _panel_chart(panel, data, by_signal, domain, limits, colours, bucket_s, events, title=None) -> dict:
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


def render_replica(
    store: str, window: Window, state: ViewState, colours: dict[str, str], names: list[str]
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
    markers = charts.numbered_events(events, domain)
    by_signal = _split_by_signal(data.series)
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
        title = f"{_short(chosen)}: {panel.axis_title}"
        chart = _panel_chart(
            panel, data, by_signal, domain, {}, colours, one.effective_bucket_s, markers, title
        )
        st.vega_lite_chart(chart, width="stretch")
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
    st.vega_lite_chart(charts.distribution_chart(values, column, "s"), width="stretch")


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
