"""Minute rollups: ``histograms_1m`` and ``signals_1m``.

At flush time the writer stores *partials*: one row per (minute, replica, series) of that
flush, summed in plain Python (a flush holds few rows). When an hour's files are merged,
compaction re-sums the partials with DuckDB (``resum``). Readers may sum partials again in
any grouping: every column is a sum, min, max or an (ts, value) pair resolved by arg_max, so
a minute split over several partials gives the same numbers as one row.

``signals_1m`` columns (besides the common ones, ``signal`` and ``labels``):
``n`` (non-NULL values), ``value_sum``, ``value_min``, ``value_max``, ``value_last`` (value of
the newest row), ``first_ts``/``last_ts`` (oldest/newest row), ``interval_s`` (sum).
Gauge mean = Σvalue_sum / Σn; counter rate = Σvalue_sum / Σinterval_s, exactly as over raw rows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from enginescope.collectors.model import HistogramRow, Identity
from enginescope.store.schema import IDENTITY_COLUMNS, labels_json, ts_us
from enginescope.store.schema import SIGNALS_1M as SIGNALS_1M_SCHEMA

HISTOGRAMS_1M = "histograms_1m"
SIGNALS_1M = "signals_1m"
SOURCE_OF: dict[str, str] = {HISTOGRAMS_1M: "histograms", SIGNALS_1M: "signals"}
ROLLUP_OF: dict[str, str] = {src: rollup for rollup, src in SOURCE_OF.items()}

Rows = Sequence[tuple[Identity, Any]]


# --- flush time: plain Python over one flush's rows -----------------------------------------
def histogram_partials(rows: Rows) -> list[tuple[Identity, HistogramRow]]:
    """Sum one flush's histogram rows per (identity, minute, series, bounds)."""
    sums: dict[tuple, HistogramRow] = {}
    for ident, row in rows:
        minute_s = row.ts_s - row.ts_s % 60
        key = (ident, minute_s, row.metric, row.signal, row.labels, row.bounds)
        acc = sums.get(key)
        if acc is None or len(acc.counts) != len(row.counts):
            sums[key] = HistogramRow(
                minute_s, row.metric, row.labels, row.bounds, row.counts, row.sum, row.count,
                row.interval_s, row.signal,
            )  # fmt: skip
            continue
        acc.counts = tuple(a + b for a, b in zip(acc.counts, row.counts, strict=True))
        acc.sum += row.sum
        acc.count += row.count
        acc.interval_s += row.interval_s
    return [(key[0], row) for key, row in sums.items()]


class _SignalAcc:
    """Running aggregate of one signal series over one minute (DuckDB's NULL/NaN rules)."""

    __slots__ = ("first_s", "interval_s", "last", "last_s", "high", "low", "n", "total")

    def __init__(self, ts_s: float) -> None:
        self.n, self.total, self.interval_s = 0, None, None
        self.low = self.high = self.last = None
        self.first_s = self.last_s = ts_s

    def add(self, ts_s: float, value: float | None, interval_s: float | None) -> None:
        self.first_s = min(self.first_s, ts_s)
        if ts_s >= self.last_s:
            self.last_s, self.last = ts_s, value
        if interval_s is not None:
            self.interval_s = interval_s if self.interval_s is None else self.interval_s + interval_s
        if value is None:
            return
        self.n += 1
        self.total = value if self.total is None else self.total + value
        self.low = value if self.low is None else _nan_min(self.low, value)
        self.high = value if self.high is None else _nan_max(self.high, value)


def _nan_max(a: float, b: float) -> float:
    # DuckDB orders NaN above every number: max() is NaN if any value is.
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _nan_min(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def signal_partials(rows: Rows) -> pa.Table:
    """One flush's ``signals`` rows -> ``signals_1m`` partial rows."""
    accs: dict[tuple, _SignalAcc] = {}
    for ident, row in rows:
        minute_s = row.ts_s - row.ts_s % 60
        key = (ident, minute_s, row.signal, row.labels)
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _SignalAcc(row.ts_s)
        acc.add(row.ts_s, row.value, row.interval_s)
    keys = list(accs)
    values = list(accs.values())
    cols: dict[str, list[Any]] = {
        "ts": [ts_us(k[1]) for k in keys],
        **{name: [getattr(k[0], name) for k in keys] for name in IDENTITY_COLUMNS},
        "signal": [k[2] for k in keys],
        "labels": [labels_json(k[3]) for k in keys],
        "n": [a.n for a in values],
        "value_sum": [a.total for a in values],
        "value_min": [a.low for a in values],
        "value_max": [a.high for a in values],
        "value_last": [a.last for a in values],
        "first_ts": [ts_us(a.first_s) for a in values],
        "last_ts": [ts_us(a.last_s) for a in values],
        "interval_s": [a.interval_s for a in values],
    }
    return pa.Table.from_arrays(
        [pa.array(cols[f.name], f.type) for f in SIGNALS_1M_SCHEMA], schema=SIGNALS_1M_SCHEMA
    )


def signals_as_partials(signals: pa.Table) -> pa.Table:
    """Raw ``signals`` rows as one-row partials (for bulk loads that then ``resum``)."""
    value = signals.column("value").cast(pa.float64())
    n = pc.cast(pc.is_valid(value), pa.int64())
    cols = {name: signals.column(name) for name in ("ts", *IDENTITY_COLUMNS, "signal", "labels")}
    cols |= {"n": n, "value_sum": value, "value_min": value, "value_max": value, "value_last": value,
             "first_ts": signals.column("ts"), "last_ts": signals.column("ts"),
             "interval_s": signals.column("interval_s")}  # fmt: skip
    cols["ts"] = pc.floor_temporal(signals.column("ts"), unit="minute")
    arrays = [pc.cast(cols[f.name], f.type) for f in SIGNALS_1M_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SIGNALS_1M_SCHEMA)


# --- compaction time: DuckDB re-sums the partials of an hour ---------------------------------
_COMMON = "date_trunc('minute', ts) AS ts, replica, engine, model, region, gpu_type"
_RESUM_SQL = {
    HISTOGRAMS_1M: f"""
        SELECT {_COMMON}, metric, signal, labels, bounds,
               list_reduce(list(counts), lambda a, b: list_transform(a, lambda x, i: x + b[i])) AS counts,
               sum(sum) AS sum, sum(count) AS count, sum(interval_s) AS interval_s
        FROM partials GROUP BY ALL ORDER BY ts, replica""",
    SIGNALS_1M: f"""
        SELECT {_COMMON}, signal, labels,
               sum(n) AS n, sum(value_sum) AS value_sum, min(value_min) AS value_min,
               max(value_max) AS value_max, arg_max_null(value_last, last_ts) AS value_last,
               min(first_ts) AS first_ts, max(last_ts) AS last_ts, sum(interval_s) AS interval_s
        FROM partials GROUP BY ALL ORDER BY ts, replica""",
}

_lock = threading.Lock()
_con: duckdb.DuckDBPyConnection | None = None  # opening one costs ~30 ms: reuse it


def resum(rollup_table: str, partials: pa.Table) -> pa.Table:
    """Partials -> one row per (minute, replica, series): what compaction stores."""
    global _con
    if partials.num_rows == 0:
        return partials
    with _lock:
        if _con is None:
            _con = duckdb.connect()
            _con.execute("SET TimeZone = 'UTC'")
            _con.execute("SET threads = 1")  # a sidecar shares the host's cores
        _con.register("partials", partials)
        try:
            return _con.sql(_RESUM_SQL[rollup_table]).to_arrow_table().cast(partials.schema)
        finally:
            _con.unregister("partials")
