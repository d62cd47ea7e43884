"""The one query module shared by the dashboard and ``enginescope query`` presets.

Every query reads the store's DuckDB views (``enginescope.store.open_store``) and takes
DuckDB named parameters (``$t0``...). User input is only ever bound, never formatted
into SQL. Latency quantiles are computed from bucket counts summed element-wise per
time bucket (and per replica when asked), then ``histogram_quantile`` — never from
averaged percentiles.

Common parameters:
  ``t0``/``t1``  window (TIMESTAMPTZ, half-open ``[t0, t1)``)
  ``bucket_s``  time-bucket width in seconds
  ``replicas``  list of replica names; empty = all
  ``model``     model name; empty string = all
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from enginescope.collectors.signals import QUANTILES, SLOS, quantile_label

LATENCY_SIGNALS: tuple[str, ...] = tuple(slo.signal for slo in SLOS)
FLEET = "(fleet)"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FAR = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)

# ``date`` is the store's hive partition key: filtering on it skips whole day folders.
_FILTER = """ts >= $t0 AND ts < $t1
    AND date >= CAST($t0 AS DATE) AND date <= CAST($t1 AS DATE)
    AND (len($replicas) = 0 OR list_contains($replicas, replica))
    AND ($model = '' OR model = $model)"""


# The minute rollups cannot give finer buckets: a preset reading them fails loudly instead of
# silently returning 60 s buckets (``error()`` is evaluated only when the check fails).
_WHOLE_MINUTES = """(CASE WHEN $bucket_s < 60 OR $bucket_s % 60 <> 0 THEN error('bucket_s=' || $bucket_s ||
    ' s: this preset reads the minute rollup, so bucket_s must be a multiple of 60; use latency_raw or
    signal_series for finer buckets') ELSE true END)"""
_ROLLUP_CHECK = {"raw": "true", "1m": _WHOLE_MINUTES}

# ``<view>_in($t0, $t1)`` (store macros) open only the files of the window's hours.
_HISTOGRAMS = {"raw": "histograms_in($t0, $t1)", "1m": "histograms_1m_partials_in($t0, $t1)"}


# p50, p95, p99: the registry's default quantiles, one column each
_QUANTILE_COLUMNS = ",\n       ".join(
    f"histogram_quantile({q!r}, bounds, counts) AS {quantile_label(q)}" for q in QUANTILES
)


def _latency_sql(source: str, signal_filter: str = "signal = $signal", check: str = "true") -> str:
    """Quantiles of bucket counts summed (store macro ``sum_buckets``) per time bucket, series
    and signal; rows with another bucket layout (another engine) form their own group. The
    rollup is read as partials: summing them here equals summing the finished minutes.
    ``MATERIALIZED``: else DuckDB inlines ``lists`` and sums the buckets twice (filter, select)."""
    return f"""
WITH lists AS MATERIALIZED (
    SELECT time_bucket(to_seconds($bucket_s), ts) AS t,
           CASE WHEN $per_replica THEN replica ELSE '{FLEET}' END AS replica,
           signal, bounds, sum_buckets(counts) AS counts
    FROM {source}
    WHERE {signal_filter} AND {_FILTER} AND {check}
    GROUP BY ALL
)
SELECT t, replica, signal,
       {_QUANTILE_COLUMNS},
       counts[-1] AS observations
FROM lists
WHERE counts[-1] > 0
ORDER BY signal, t, replica"""


# Raw per-scrape rows (any bucket width) and the store's minute rollup (bucket_s multiple of 60).
LATENCY_QUANTILES_SQL = _latency_sql(_HISTOGRAMS["raw"])
LATENCY_QUANTILES_1M_SQL = _latency_sql(_HISTOGRAMS["1m"], check=_WHOLE_MINUTES)
# Every signal of ``$signals`` in one query (the incident view's latency panels).
_MANY = "list_contains($signals, signal)"
LATENCIES_SQL = {src: _latency_sql(table, _MANY, _ROLLUP_CHECK[src]) for src, table in _HISTOGRAMS.items()}

WINDOW_QUANTILE_SQL = f"""
WITH lists AS (
    SELECT bounds, sum_buckets(counts) AS counts
    FROM histograms_1m_partials_in($t0, $t1) WHERE signal = $signal AND {_FILTER} GROUP BY bounds
)
SELECT bounds, counts, histogram_quantile($q, bounds, counts) AS value, counts[-1] AS observations
FROM lists ORDER BY observations DESC"""

# Per bucket: gauge mean/peak/low; counters as exact rates Σincrease / Σinterval_s.
_SERIES_COLUMNS = {
    "raw": """avg(value) AS mean, max(value) AS peak, min(value) AS low,
       sum(value) / nullif(sum(interval_s), 0) AS rate""",
    "1m": """sum(value_sum) / nullif(sum(n), 0) AS mean, max(value_max) AS peak,
       min(value_min) AS low, sum(value_sum) / nullif(sum(interval_s), 0) AS rate""",
}
_SIGNALS = {"raw": "signals_in($t0, $t1)", "1m": "signals_1m_partials_in($t0, $t1)"}
SIGNAL_SERIES_SQLS = {
    src: f"""
SELECT time_bucket(to_seconds($bucket_s), ts) AS t, replica, signal,
       {_SERIES_COLUMNS[src]}
FROM {_SIGNALS[src]}
WHERE list_contains($signals, signal) AND {_FILTER} AND {_ROLLUP_CHECK[src]}
GROUP BY ALL ORDER BY t, replica, signal"""
    for src in ("raw", "1m")
}
SIGNAL_SERIES_SQL = SIGNAL_SERIES_SQLS["raw"]
SIGNAL_SERIES_1M_SQL = SIGNAL_SERIES_SQLS["1m"]

_UP = {"raw": "value > 0", "1m": "value_max > 0"}
REPLICA_COUNT_SQLS = {
    src: f"""
SELECT time_bucket(to_seconds($bucket_s), ts) AS t,
       count(DISTINCT replica) FILTER (WHERE {_UP[src]}) AS replicas_up,
       count(DISTINCT replica) AS replicas_reporting
FROM {_SIGNALS[src]}
WHERE signal = 'engine_up' AND {_FILTER} AND {_ROLLUP_CHECK[src]}
GROUP BY ALL ORDER BY t"""
    for src in ("raw", "1m")
}
REPLICA_COUNT_SQL = REPLICA_COUNT_SQLS["raw"]

EVENTS_SQL = f"""
SELECT ts, replica, kind, detail, replica_count
FROM events_in($t0, $t1)
WHERE (len($kinds) = 0 OR list_contains($kinds, kind)) AND {_FILTER}
ORDER BY ts, replica, kind, detail"""

SLOWEST_REQUESTS_SQL = f"""
SELECT ts, replica, request_id, ttft_s, e2e_s, queue_time_s, prompt_tokens,
       completion_tokens, cached_tokens, finish_reason
FROM requests_in($t0, $t1)
WHERE {_FILTER}
ORDER BY e2e_s DESC NULLS LAST
LIMIT $limit"""

REQUEST_LATENCIES_SQL = f"""
SELECT ts, replica, ttft_s, e2e_s FROM requests_in($t0, $t1) WHERE {_FILTER}"""

# Whole-store summaries. The time range reads only the oldest and the newest hour's files; the
# ``_1M`` forms read the small signals rollup (exact: it keeps each minute's first and last row
# time) and need a store whose rollup is complete.
_SPAN = "enginescope_hour_span('{table}')[{i}]"


def _time_range_sql(view: str, table: str, first: str, last: str) -> str:
    lo, hi = _SPAN.format(table=table, i=1), _SPAN.format(table=table, i=2)
    return f"""
SELECT (SELECT min({first}) FROM {view}_in({lo}, {lo})) AS first_ts,
       (SELECT max({last}) FROM {view}_in({hi}, {hi})) AS last_ts"""


TIME_RANGE_SQL = _time_range_sql("signals", "signals", "ts", "ts")
TIME_RANGE_1M_SQL = _time_range_sql("signals_1m_partials", "signals_1m", "first_ts", "last_ts")

REPLICAS_SQL = """
SELECT replica, any_value(model) AS model, any_value(engine) AS engine,
       any_value(gpu_type) AS gpu_type, min(ts) AS first_ts, max(ts) AS last_ts
FROM signals GROUP BY replica ORDER BY replica"""
REPLICAS_1M_SQL = """
SELECT replica, any_value(model) AS model, any_value(engine) AS engine,
       any_value(gpu_type) AS gpu_type, min(first_ts) AS first_ts, max(last_ts) AS last_ts
FROM signals_1m_partials GROUP BY replica ORDER BY replica"""

# ``enginescope bench`` runs (view ``bench``: one row per concurrency level, ``ts`` = level end).
BENCH_RUNS_SQL = """
SELECT run_id, any_value(recipe) AS recipe, any_value(model) AS model, any_value(target) AS target,
       any_value(url) AS url, max(ts) AS finished_ts, count(*) AS levels,
       max(concurrency) AS max_concurrency,
       max(concurrency) FILTER (WHERE meets_slo) AS max_concurrency_meeting_slo,
       max(output_tps) FILTER (WHERE meets_slo) AS max_output_tps_meeting_slo
FROM bench GROUP BY run_id ORDER BY finished_ts DESC, run_id DESC"""

# One run's curve; ``$run_id`` '' = the latest run.
BENCH_CURVE_SQL = """
SELECT * EXCLUDE (ts_s) FROM bench
WHERE run_id = CASE WHEN $run_id = '' THEN (SELECT max_by(run_id, ts) FROM bench) ELSE $run_id END
ORDER BY concurrency"""

GPU_DEVICES_SQL = f"""
SELECT * FROM gpu_in($t0, $t1) WHERE {_FILTER} ORDER BY ts, gpu_index"""


@dataclass(frozen=True, slots=True)
class Preset:
    """A named, parameterised query; ``params`` are defaults the caller may override."""

    name: str
    description: str
    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with overrides; unknown names are an error naming the preset."""
        extra = set(overrides or {}) - set(self.params)
        if extra:
            raise KeyError(f"preset {self.name!r} has no parameter(s) {sorted(extra)}")
        return {**self.params, **(overrides or {})}


def _window(**extra: Any) -> dict[str, Any]:
    return {"t0": _EPOCH, "t1": _FAR, "replicas": [], "model": "", **extra}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "latency_per_replica",
            "TTFT/ITL/e2e p50/p95/p99 per minute per replica, from the minute rollup's summed buckets",
            LATENCY_QUANTILES_1M_SQL,
            _window(bucket_s=60, signal="ttft_seconds", per_replica=True),
        ),
        Preset(
            "latency_fleet",
            "Fleet-wide p50/p95/p99 per time bucket, buckets summed across replicas",
            LATENCY_QUANTILES_1M_SQL,
            _window(bucket_s=60, signal="ttft_seconds", per_replica=False),
        ),
        Preset(
            "latency_raw",
            "p50/p95/p99 per time bucket from per-scrape rows (sub-minute buckets)",
            LATENCY_QUANTILES_SQL,
            _window(bucket_s=10, signal="ttft_seconds", per_replica=False),
        ),
        Preset(
            "window_quantile",
            "One quantile over the whole window from the summed buckets",
            WINDOW_QUANTILE_SQL,
            _window(signal="ttft_seconds", q=0.99),
        ),
        Preset(
            "signal_series",
            "Scalar signals per time bucket per replica: mean/peak/low (gauges), rate (counters, per s)",
            SIGNAL_SERIES_SQL,
            _window(bucket_s=60, signals=["queue_depth", "running_requests"]),
        ),
        Preset(
            "signal_series_1m",
            "Same as signal_series from the minute rollup (bucket_s a multiple of 60): exact mean, "
            "peak, low and rate",
            SIGNAL_SERIES_1M_SQL,
            _window(bucket_s=60, signals=["queue_depth", "running_requests"]),
        ),
        Preset(
            "queue_depth",
            "Queue depth and running requests per replica per time bucket",
            SIGNAL_SERIES_SQL,
            _window(bucket_s=60, signals=["queue_depth", "running_requests"]),
        ),
        Preset(
            "token_throughput",
            "Prompt and generation tokens/s per replica (counter increases / interval_s)",
            SIGNAL_SERIES_SQL,
            _window(bucket_s=60, signals=["prompt_tokens", "generation_tokens"]),
        ),
        Preset(
            "replica_count",
            "Replicas with engine_up=1 per time bucket",
            REPLICA_COUNT_SQL,
            _window(bucket_s=60),
        ),
        Preset("events", "Lifecycle, autoscaling and GPU events", EVENTS_SQL, _window(kinds=[])),
        Preset(
            "slowest_requests",
            "Slowest finished requests by e2e latency (needs the per-request export)",
            SLOWEST_REQUESTS_SQL,
            _window(limit=20),
        ),
        Preset(
            "bench_runs",
            "enginescope bench runs, latest first: levels, highest concurrency and output tokens/s "
            "that met the recipe's SLO",
            BENCH_RUNS_SQL,
        ),
        Preset(
            "bench_curve",
            "One bench run's rows by concurrency (client- and engine-side p50/p95/p99 in s, "
            "output_tps in tokens/s, throughput_rps in requests/s); run_id '' = the latest",
            BENCH_CURVE_SQL,
            {"run_id": ""},
        ),
        Preset("replicas", "Replicas in the store with model, engine and time span", REPLICAS_SQL),
        Preset("time_range", "First and last signal timestamp in the store", TIME_RANGE_SQL),
    )
}


def run_preset(
    con: duckdb.DuckDBPyConnection, name: str, overrides: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Run a preset by name with bound parameters; unknown names raise KeyError."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    return df(con, preset.sql, preset.bind(overrides))


def df(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """Execute on a fresh cursor (DuckDB connections are not thread-safe)."""
    return con.cursor().execute(sql, dict(params)).df()


def latency_preset(bucket_s: int, per_replica: bool) -> str:
    """Minute-rollup preset when the bucket is whole minutes (60x fewer rows), else raw."""
    if bucket_s % 60 == 0:
        return "latency_per_replica" if per_replica else "latency_fleet"
    return "latency_raw"


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.cursor().execute(
        "SELECT 1 FROM duckdb_views() WHERE view_name = $n UNION ALL "
        "SELECT 1 FROM duckdb_tables() WHERE table_name = $n",
        {"n": name},
    )
    return rows.fetchone() is not None
