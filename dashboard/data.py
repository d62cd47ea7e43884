"""Store access for the dashboard: connection, windows, and the incident view's data.

Pure functions over a DuckDB connection (no Streamlit), so the benchmark and tests run
exactly what the app runs. All SQL lives in ``exporters.queries``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from exporters import queries
from exporters.panels import INCIDENT_PANELS, MARKER_EVENT_KINDS, PanelKind, scalar_signals
from exporters.store import open_store

# (max window span, bucket width): ~900-1500 points per series at most.
_BUCKETS_S: tuple[tuple[float, int], ...] = (
    (15 * 60, 1),
    (60 * 60, 5),
    (6 * 3600, 30),
    (24 * 3600 + 1, 60),
    (7 * 86400, 300),
)


def open_connection(store_dir: Path, sandbox: bool = False) -> duckdb.DuckDBPyConnection | None:
    """The store's read-only connection, or None when there is no store folder yet."""
    if not store_dir.is_dir():
        return None
    return open_store(store_dir, sandbox=sandbox)


def bucket_s_for(span_s: float) -> int:
    """Time-bucket width that keeps a window's series short enough to query and draw fast."""
    for max_span_s, bucket_s in _BUCKETS_S:
        if span_s <= max_span_s:
            return bucket_s
    return 3600


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


@dataclass
class IncidentData:
    """Everything the incident view draws, as long DataFrames."""

    window: Window
    latency: dict[str, pd.DataFrame] = field(default_factory=dict)  # signal -> t, replica, p50..
    series: pd.DataFrame = field(default_factory=pd.DataFrame)  # t, replica, signal, mean, rate..
    replica_count: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def empty(self) -> bool:
        return self.series.empty and all(df.empty for df in self.latency.values())


def store_time_range(con: duckdb.DuckDBPyConnection) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last timestamp in the store, or None when it holds no signals."""
    if not queries.has_table(con, "signals"):
        return None
    row = queries.run_preset(con, "time_range").iloc[0]
    if pd.isna(row["first_ts"]):
        return None
    return _utc(row["first_ts"]), _utc(row["last_ts"])


def list_replicas(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    if not queries.has_table(con, "signals"):
        return pd.DataFrame(columns=["replica", "model", "engine", "gpu_type", "first_ts", "last_ts"])
    return queries.run_preset(con, "replicas")


def load_latency(
    con: duckdb.DuckDBPyConnection, window: Window, signal: str, per_replica: bool
) -> pd.DataFrame:
    if not queries.has_table(con, "histograms"):
        return pd.DataFrame(columns=["t", "replica", "p50", "p95", "p99", "observations"])
    bucket_s = window.effective_bucket_s
    name = queries.latency_preset(bucket_s, per_replica)
    return queries.run_preset(
        con, name, window.params(bucket_s=bucket_s, signal=signal, per_replica=per_replica)
    )


def load_events(con: duckdb.DuckDBPyConnection, window: Window, kinds: tuple[str, ...] = ()) -> pd.DataFrame:
    if not queries.has_table(con, "events"):
        return pd.DataFrame(columns=["ts", "replica", "kind", "detail", "replica_count"])
    # Events are fleet context: keep them for every replica even when the view is filtered.
    params = window.params(kinds=list(kinds or MARKER_EVENT_KINDS))
    params["replicas"] = []
    return queries.run_preset(con, "events", params)


def load_incident(con: duckdb.DuckDBPyConnection, window: Window, per_replica: bool = False) -> IncidentData:
    """Run every query the incident view needs (one per latency signal, one for scalars)."""
    data = IncidentData(window)
    for panel in INCIDENT_PANELS:
        if panel.kind is PanelKind.LATENCY:
            data.latency[panel.signals[0]] = load_latency(con, window, panel.signals[0], per_replica)
    data.latency["queue_time_seconds"] = load_latency(con, window, "queue_time_seconds", False)
    if queries.has_table(con, "signals"):
        bucket_s = window.effective_bucket_s
        signals = [*scalar_signals(), "retractions", "gpu_throttled", "engine_up"]
        data.series = queries.run_preset(
            con, "signal_series", window.params(bucket_s=bucket_s, signals=signals)
        )
        data.replica_count = queries.run_preset(con, "replica_count", window.params(bucket_s=bucket_s))
    data.events = load_events(con, window)
    return data


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


def _utc(value: Any) -> dt.datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
