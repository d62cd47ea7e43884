"""The replica, requests and SQL views (the incident view is ``enginescope.dashboard.incident``).
Each takes the store path, the window and the URL state, and draws with Streamlit."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from enginescope.collectors.signals import QUANTILES, quantile_label
from enginescope.dashboard import cached, charts
from enginescope.dashboard.data import Window
from enginescope.dashboard.incident import panel_chart, short_name, split_by_signal
from enginescope.dashboard.state import ViewState
from enginescope.views import queries
from enginescope.views.panels import panel_by_id


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
    by_signal = split_by_signal(data.series)
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
        title = f"{short_name(chosen)}: {panel.axis_title}"
        chart = panel_chart(
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
    for q in QUANTILES:
        exact = exact_quantile(values[column], q)
        estimate = cached.window_quantile(store, window, signal, q)
        rows.append({"quantile": quantile_label(q), "exact from requests (s)": exact,
                     "histogram estimate (s)": estimate})  # fmt: skip
    st.markdown(f"**{len(values):,} requests** in the window")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.vega_lite_chart(charts.distribution_chart(values, column, "s"), width="stretch")


def exact_quantile(values: pd.Series, q: float) -> float:
    """Quantile of per-request values by linear interpolation between order statistics, the
    method of DuckDB's ``quantile_cont`` and of the load generator's summaries."""
    return float(values.dropna().quantile(q, interpolation="linear"))


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
