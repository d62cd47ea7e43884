"""enginescope incident dashboard (``enginescope dashboard`` runs ``streamlit run`` on this file).

The store folder comes from ``ENGINESCOPE_STORE`` (or ``--store`` after ``--`` on the
streamlit command line); SLOs from the URL, else ``ENGINESCOPE_RECIPE`` / ``ENGINESCOPE_SLO_*``,
else the store's ``recipe.toml`` (written by ``enginescope demo --recipe``).
All view state lives in the URL query string.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import streamlit as st

from enginescope.collectors.signals import SLOS
from enginescope.dashboard import bench, cached, charts, data, diagnosis, incident, spec_panel, views
from enginescope.dashboard.data import Window
from enginescope.dashboard.state import RANGES_S, VIEWS, ViewState, default_slo

LIVE_REFRESH_S = 5
DEFAULT_STORE = "./enginescope-store"  # what every other command defaults to
FAVICON = str(Path(__file__).parent / ".streamlit" / "favicon.svg")
# Less padding above the first element: the status strip and key charts must fit 1280x720.
PAGE_CSS = """<style>
[data-testid="stMainBlockContainer"]{padding-top:2.2rem;padding-bottom:1rem}
[data-testid="stMainBlockContainer"] h3{padding-top:0;padding-bottom:.1rem}
</style>"""


def store_dir() -> str:
    args = sys.argv[1:]
    if "--store" in args and args.index("--store") + 1 < len(args):
        return args[args.index("--store") + 1]
    return os.environ.get("ENGINESCOPE_STORE", DEFAULT_STORE)


def sidebar(
    state: ViewState,
    first: dt.datetime,
    last: dt.datetime,
    names: list[str],
    models: list[str],
    slo_source: str = "",
) -> None:
    """Widgets seeded from the URL; any change is written back to the URL."""
    with st.sidebar:
        state.view = st.radio("View", VIEWS, index=VIEWS.index(state.view), horizontal=True)
        ranges = list(RANGES_S)
        state.range = st.selectbox("Time range", ranges, index=ranges.index(state.range))
        if state.range == "custom":
            t0, t1 = state.window_bounds(first, last) if state.t0 else (first, last)
            state.t0 = _utc(st.text_input("From (UTC, ISO)", t0.isoformat()), first)
            state.t1 = _utc(st.text_input("To (UTC, ISO)", t1.isoformat()), last)
        state.replicas = tuple(st.multiselect("Replicas", names, [r for r in state.replicas if r in names]))
        if len(models) > 1:
            state.model = st.selectbox("Model", ["", *models], index=([""] + models).index(state.model) if state.model in models else 0)  # fmt: skip
        state.per_replica = st.toggle("Latency per replica", state.per_replica)
        state.live = st.toggle(f"Live (refresh every {LIVE_REFRESH_S} s)", state.live)
        st.caption(f"SLO thresholds; when all are empty the diagnosis uses {diagnosis.baseline_rule()}")
        if slo_source:
            st.caption(slo_source)
        for slo in SLOS:
            label = f"{slo.title} SLO (s)"
            value = st.number_input(label, min_value=0.0, value=state.slo.get(slo.key), format="%.3f")
            # A statement, not an expression: Streamlit "magic" would write an expression's value.
            if value is None or value <= 0:
                state.slo.pop(slo.key, None)
            else:
                state.slo[slo.key] = value
    if st.query_params.to_dict() != state.to_params():
        st.query_params.from_dict(state.to_params())


def render(store: str, state: ViewState) -> None:
    """One pass over the current window (the live fragment reruns only this)."""
    if state.view == "bench":  # bench runs have no time window and may be all a store holds
        bench.render_bench(store, state)
        return
    span = cached.time_range(store)
    if span is None:
        st.info(f"The store {store} holds no data yet.")
        return
    replicas = cached.replicas(store)
    names = sorted(replicas["replica"].tolist())
    t0, t1 = state.window_bounds(*span)
    window = Window(t0, t1, state.replicas, state.model)
    st.caption(f"{t0:%Y-%m-%d %H:%M:%S} → {t1:%Y-%m-%d %H:%M:%S} UTC · {len(names)} replica(s) in the store")
    colours = charts.replica_colours(names)
    if state.view == "incident":
        incident.render_incident(store, window, state, colours)
        spec_panel.render(store, window)
    elif state.view == "replica":
        views.render_replica(store, window, state, colours, names)
    elif state.view == "requests":
        views.render_requests(store, window)
    else:
        views.render_sql(store)


def main() -> None:
    st.set_page_config(page_title="enginescope · incident view", page_icon=FAVICON, layout="wide")
    st.markdown(PAGE_CSS, unsafe_allow_html=True)
    st.markdown("### enginescope · incident view")
    store = store_dir()
    try:
        slo, slo_source = default_slo(store)
    except ValueError as exc:
        st.error(str(exc))
        slo, slo_source = {}, ""
    state = ViewState.from_params(st.query_params.to_dict(), slo)
    if not data.store_exists(store):
        st.info(f"No store at {store}: start a sidecar or `enginescope demo` to create one.")
        return
    span = cached.time_range(store)
    replicas = cached.replicas(store) if span else None
    names = sorted(replicas["replica"].tolist()) if replicas is not None else []
    models = sorted(m for m in replicas["model"].dropna().unique() if m) if replicas is not None else []
    first, last = span or (dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC))
    sidebar(state, first, last, names, models, slo_source)
    if state.live and state.view not in ("sql", "bench"):
        st.fragment(run_every=LIVE_REFRESH_S)(render)(store, state)
    else:
        render(store, state)


def _utc(text: str, fallback: dt.datetime) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        st.warning(f"Not an ISO time: {text!r}")
        return fallback
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


main()
