"""Streamlit caches around ``enginescope.dashboard.data``: one connection per store, results with a TTL.

Arguments are plain values so Streamlit can hash them; every query takes its own cursor
(``enginescope.views.queries``), so the shared connection is safe across sessions.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import streamlit as st

from enginescope.dashboard import data, diagnosis
from enginescope.dashboard.tail import TailCache

RESULT_TTL_S = 5  # short: a store being written keeps growing; live mode reruns every few s
REPLICAS_TTL_S = 30


@st.cache_resource(show_spinner=False)
def connection(store_dir: str, sandbox: bool = False) -> duckdb.DuckDBPyConnection | None:
    return data.open_connection(store_dir, sandbox=sandbox)


def _con(store_dir: str) -> duckdb.DuckDBPyConnection:
    con = connection(store_dir)
    if con is None:
        raise FileNotFoundError(store_dir)
    return con


@st.cache_resource(show_spinner=False)
def tail_cache(store_dir: str) -> TailCache:
    """Settled buckets of earlier incident queries: a live refresh queries only the tail."""
    return TailCache()


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False)
def time_range(store_dir: str) -> tuple[dt.datetime, dt.datetime] | None:
    con = connection(store_dir)
    return None if con is None else data.store_time_range(con)


# The replica list reads the whole rollup (~0.15 s at 24 h x 20 replicas); it changes only when
# a replica starts or stops, so it is refreshed less often than the live data.
@st.cache_data(ttl=REPLICAS_TTL_S, show_spinner=False)
def replicas(store_dir: str) -> pd.DataFrame:
    return data.list_replicas(_con(store_dir))


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=32)
def incident(store_dir: str, window: data.Window, per_replica: bool) -> data.IncidentData:
    return data.load_incident(_con(store_dir), window, per_replica, tail_cache(store_dir))


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=32)
def slowest_requests(store_dir: str, window: data.Window, limit: int) -> pd.DataFrame:
    return data.load_slowest_requests(_con(store_dir), window, limit)


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=8)
def request_latencies(store_dir: str, window: data.Window) -> pd.DataFrame:
    return data.load_request_latencies(_con(store_dir), window)


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=16)
def window_quantile(store_dir: str, window: data.Window, signal: str, q: float) -> float | None:
    return data.window_quantile(_con(store_dir), window, signal, q)


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=16)
def incidents(
    store_dir: str, window: data.Window, per_replica: bool, slo: tuple[tuple[str, float], ...]
) -> list[diagnosis.Incident]:
    """The diagnosis of the fleet-wide data (pure, ~0.2 s at 24 h x 20 replicas): once per result."""
    fleet = incident(store_dir, window, False)
    series = incident(store_dir, window, per_replica).series if per_replica else fleet.series
    return diagnosis.diagnose(
        fleet.latency,
        series,
        fleet.events,
        dict(slo) or None,
        window.effective_bucket_s,
        pd.Timestamp(window.t1),
        fleet.gpu,
    )


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False)
def bench_runs(store_dir: str) -> pd.DataFrame:
    return data.load_bench_runs(_con(store_dir))


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=8)
def bench_curve(store_dir: str, run_id: str) -> pd.DataFrame:
    return data.load_bench_curve(_con(store_dir), run_id)
