"""Store access for the dashboard: connection, windows, and the incident view's data.

Pure functions over a DuckDB connection (no Streamlit), so the benchmark and tests run
exactly what the app runs. All SQL lives in ``enginescope.views.queries``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from enginescope.collectors.identity import is_fleet_replica
from enginescope.dashboard.diagnosis import SLOWDOWN_COLUMNS
from enginescope.store import open_store
from enginescope.store.location import store_location
from enginescope.views import queries
from enginescope.views.panels import INCIDENT_PANELS, MARKER_EVENT_KINDS, PanelKind, scalar_signals

if TYPE_CHECKING:
    from enginescope.dashboard.tail import TailCache


# (max window span, bucket width): at most ~1,500 points per series (what a chart can draw
# legibly and ship fast). Whole-minute buckets (from 6 h up) read the minute rollups; shorter
# windows read raw rows of a few hourly files.
MAX_POINTS_PER_SERIES = 1500
_BUCKETS_S: tuple[tuple[float, int], ...] = (
    (15 * 60, 1),
    (60 * 60, 5),
    (6 * 3600, 60),
    (24 * 3600 + 1, 60),
    (7 * 86400, 600),
)


def open_connection(store: str | Path, sandbox: bool = False) -> duckdb.DuckDBPyConnection | None:
    """The store's read-only connection, or None when there is no store folder yet. ``store``
    is a folder or an object-store URL (s3://bucket/prefix)."""
    if not store_exists(store):
        return None
    return open_store(store, sandbox=sandbox)


def store_exists(store: str | Path) -> bool:
    """A URL store is taken to exist (its tables may not have been created yet: views are empty)."""
    location = store_location(store)
    return not location.is_local or location.path.is_dir()


def bucket_s_for(span_s: float) -> int:
    """Time-bucket width that keeps a window's series short enough to query and draw fast."""
    for max_span_s, bucket_s in _BUCKETS_S:
        if span_s <= max_span_s:
            return bucket_s
    return 3600 * max(1, math.ceil(span_s / (3600 * MAX_POINTS_PER_SERIES)))


@dataclass(frozen=True, slots=True)
class Window:
    t0: dt.datetime
    t1: dt.datetime
    replicas: tuple[str, ...] = ()
    model: str = ""
    bucket_s: int = 0  # 0 = choose from the span

    @property
    def span_s(self) -> float:
        return (self.t1 - self.t0).total_seconds()

    @property
    def effective_bucket_s(self) -> int:
        return self.bucket_s or bucket_s_for(self.span_s)

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"t0": self.t0, "t1": self.t1, "replicas": list(self.replicas), "model": self.model, **extra}

    def snapped(self) -> Window:
        """The window widened to whole time buckets, so every bucket drawn is complete and the
        minute rollup and raw rows give the same numbers."""
        bucket_s = self.effective_bucket_s
        t0_s, t1_s = self.t0.timestamp(), self.t1.timestamp()
        t0 = dt.datetime.fromtimestamp(t0_s - t0_s % bucket_s, dt.UTC)
        t1 = dt.datetime.fromtimestamp(t1_s + (-t1_s % bucket_s), dt.UTC)
        return Window(t0, t1, self.replicas, self.model, bucket_s)


@dataclass
class IncidentData:
    """Everything the incident view draws, as long DataFrames."""

    window: Window
    latency: dict[str, pd.DataFrame] = field(default_factory=dict)  # signal -> t, replica, p50..
    series: pd.DataFrame = field(default_factory=pd.DataFrame)  # t, replica, signal, mean, rate..
    replica_count: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    gpu: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, replica, throttle_<reason>

    @property
    def empty(self) -> bool:
        return self.series.empty and all(df.empty for df in self.latency.values())


def use_rollup(con: duckdb.DuckDBPyConnection, rollup: str, window: Window | None = None) -> bool:
    """Read ``rollup`` instead of raw rows: whole-minute buckets and a rollup file for every
    hour of raw data in the window (a store written before the rollup existed has none)."""
    if window is not None and window.effective_bucket_s % 60:
        return False
    t0, t1 = (window.t0, window.t1) if window is not None else (None, None)
    row = con.cursor().execute(
        "SELECT enginescope_rollup_complete($r, $t0, $t1)", {"r": rollup, "t0": t0, "t1": t1}
    )
    return bool(row.fetchone()[0])


def store_time_range(con: duckdb.DuckDBPyConnection) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last timestamp in the store, or None when it holds no signals."""
    if not queries.has_table(con, "signals"):
        return None
    sql = queries.TIME_RANGE_1M_SQL if use_rollup(con, "signals_1m") else queries.TIME_RANGE_SQL
    row = queries.df(con, sql, {}).iloc[0]
    if pd.isna(row["first_ts"]):
        return None
    return _utc(row["first_ts"]), _utc(row["last_ts"])


def time_range_of(replicas: pd.DataFrame) -> tuple[dt.datetime, dt.datetime] | None:
    """The store's span from ``list_replicas`` (one query serves both)."""
    if replicas.empty or replicas["first_ts"].isna().all():
        return None
    return _utc(replicas["first_ts"].min()), _utc(replicas["last_ts"].max())


def list_replicas(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """replica, model, engine, gpu_type, first_ts, last_ts (exact: the rollup keeps each
    minute's first and last row time)."""
    if not queries.has_table(con, "signals"):
        return pd.DataFrame(columns=["replica", "model", "engine", "gpu_type", "first_ts", "last_ts"])
    sql = queries.REPLICAS_1M_SQL if use_rollup(con, "signals_1m") else queries.REPLICAS_SQL
    return engine_replicas(queries.df(con, sql, {}))


def engine_replicas(replicas: pd.DataFrame) -> pd.DataFrame:
    """``replicas`` without fleet pseudo-replicas (a fleet watcher's rows are no replica)."""
    if replicas.empty:
        return replicas
    return replicas.loc[~replicas["replica"].map(is_fleet_replica)].reset_index(drop=True)


def load_latency(
    con: duckdb.DuckDBPyConnection, window: Window, signal: str, per_replica: bool
) -> pd.DataFrame:
    return load_latencies(con, window, (signal,), per_replica).get(signal, _empty_latency())


def load_latencies(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    signals: tuple[str, ...],
    per_replica: bool,
    fleet_only: tuple[str, ...] = (),
    cache: TailCache | None = None,
) -> dict[str, pd.DataFrame]:
    """signal -> t, replica, p50, p95, p99, observations, in one query per grouping over the
    window's files; signals in ``fleet_only`` stay fleet-wide when ``per_replica`` is set."""
    if not queries.has_table(con, "histograms"):
        return {s: _empty_latency() for s in signals}
    window = window.snapped()
    source = "1m" if use_rollup(con, "histograms_1m", window) else "raw"
    per = [s for s in signals if s not in fleet_only] if per_replica else []
    frames = {}
    for chosen, flag in ((per, True), ([s for s in signals if s not in per], False)):
        if not chosen:
            continue

        def fetch(w: Window, chosen: list[str] = chosen, flag: bool = flag) -> pd.DataFrame:
            params = w.params(bucket_s=w.bucket_s, signals=chosen, per_replica=flag)
            return queries.df(con, queries.LATENCIES_SQL[source], params)

        key = ("latency", source, tuple(chosen), flag, window.replicas, window.model, window.bucket_s)
        df = cache.frame(key, window, fetch) if cache is not None else fetch(window)
        for s, part in df.groupby("signal"):
            frames[s] = part.drop(columns="signal").sort_values(["t", "replica"]).reset_index(drop=True)
    return {s: frames.get(s, _empty_latency()) for s in signals}


def load_series(
    con: duckdb.DuckDBPyConnection, window: Window, signals: list[str], cache: TailCache | None = None
) -> pd.DataFrame:
    """Scalar signals per bucket and replica (mean, peak, low, rate), from the minute rollup
    when the buckets are whole minutes, else from raw rows."""
    window = window.snapped()
    source = "1m" if use_rollup(con, "signals_1m", window) else "raw"

    def fetch(w: Window) -> pd.DataFrame:
        params = w.params(bucket_s=w.bucket_s, signals=signals)
        return queries.df(con, queries.SIGNAL_SERIES_SQLS[source], params)

    if cache is None:
        return fetch(window)
    key = ("series", source, tuple(signals), window.replicas, window.model, window.bucket_s)
    return cache.frame(key, window, fetch)


def replica_count(series: pd.DataFrame) -> pd.DataFrame:
    """Replicas up (engine_up > 0 at some point of the bucket) and reporting, per bucket:
    what ``queries.REPLICA_COUNT_SQL`` returns, from rows the series query already read."""
    up = series.loc[series["signal"] == "engine_up"] if not series.empty else series
    if up.empty:
        return pd.DataFrame(columns=["t", "replicas_up", "replicas_reporting"])
    grouped = up.assign(is_up=up["peak"] > 0).groupby("t", sort=True)
    out = grouped.agg(replicas_up=("is_up", "sum"), replicas_reporting=("replica", "nunique"))
    return out.reset_index().astype({"replicas_up": "int64", "replicas_reporting": "int64"})


def load_events(con: duckdb.DuckDBPyConnection, window: Window, kinds: tuple[str, ...] = ()) -> pd.DataFrame:
    if not queries.has_table(con, "events"):
        return pd.DataFrame(columns=["ts", "replica", "kind", "detail", "replica_count"])
    # Events are fleet context: keep them for every replica even when the view is filtered.
    params = window.params(kinds=list(kinds or MARKER_EVENT_KINDS))
    params["replicas"] = []
    return queries.run_preset(con, "events", params)


def load_incident(
    con: duckdb.DuckDBPyConnection, window: Window, per_replica: bool = False, cache: TailCache | None = None
) -> IncidentData:
    """Everything the incident view draws, in three queries over the window's files only:
    all latency signals, all scalar signals (replica count derived from them), events. With a
    ``cache`` (live mode), settled buckets of the previous call are reused."""
    data = IncidentData(window)
    latency = tuple(p.signals[0] for p in INCIDENT_PANELS if p.kind is PanelKind.LATENCY)
    data.latency = load_latencies(
        con, window, (*latency, "queue_time_seconds"), per_replica, ("queue_time_seconds",), cache
    )
    if queries.has_table(con, "signals"):
        data.series = load_series(
            con, window, [*scalar_signals(), "retractions", "gpu_throttled", "engine_up"], cache
        )
        data.replica_count = replica_count(data.series)
    data.events = load_events(con, window)
    data.gpu = load_gpu_throttle(con, window, data.events)
    return data


def load_gpu_throttle(con: duckdb.DuckDBPyConnection, window: Window, events: pd.DataFrame) -> pd.DataFrame:
    """gpu-table rows (ts, replica, slowdown ``throttle_<reason>`` columns) of the replicas
    with gpu_throttle events in the window: the structured record of what slowed them down.
    Empty when there are no such events or no gpu table (nothing is read then)."""
    empty = pd.DataFrame(columns=["ts", "replica"])
    if events.empty or not queries.has_table(con, "gpu"):
        return empty
    replicas = sorted(set(events.loc[events["kind"] == "gpu_throttle", "replica"]))
    if not replicas:
        return empty
    params = window.params()
    params["replicas"] = replicas
    rows = queries.df(con, queries.GPU_DEVICES_SQL, params)
    cols = [c for c in SLOWDOWN_COLUMNS if c in rows]
    return rows[["ts", "replica", *cols]] if not rows.empty else empty


def load_slowest_requests(con: duckdb.DuckDBPyConnection, window: Window, limit: int = 20) -> pd.DataFrame:
    if not queries.has_table(con, "requests"):
        return pd.DataFrame()
    return queries.run_preset(con, "slowest_requests", window.params(limit=limit))


def load_request_latencies(con: duckdb.DuckDBPyConnection, window: Window) -> pd.DataFrame:
    if not queries.has_table(con, "requests"):
        return pd.DataFrame(columns=["ts", "replica", "ttft_s", "e2e_s"])
    return con.cursor().execute(queries.REQUEST_LATENCIES_SQL, window.params()).df()


def window_quantile(con: duckdb.DuckDBPyConnection, window: Window, signal: str, q: float) -> float | None:
    """Histogram estimate over the whole window (largest bucket layout), or None."""
    if not queries.has_table(con, "histograms"):
        return None
    df = queries.run_preset(con, "window_quantile", window.params(signal=signal, q=q))
    return None if df.empty or pd.isna(df["value"].iloc[0]) else float(df["value"].iloc[0])


def load_bench_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """``enginescope bench`` runs, latest first (empty when the store holds none)."""
    return queries.run_preset(con, "bench_runs")


def load_bench_curve(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One run's rows by concurrency; ``run_id`` '' = the latest run."""
    return queries.run_preset(con, "bench_curve", {"run_id": run_id})


def _empty_latency() -> pd.DataFrame:
    return pd.DataFrame(columns=["t", "replica", "p50", "p95", "p99", "observations"])


def _utc(value: Any) -> dt.datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
