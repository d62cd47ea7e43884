"""SQL macros and derived views registered on every store connection.

``histogram_quantile(q, bounds, counts)`` is ``enginescope.collectors.quantile.histogram_quantile`` in SQL
(PromQL linear interpolation over cumulative ``le`` buckets), except that "no observations"
(and a NaN ``q``) give NULL instead of NaN, so charts and aggregates skip them.

``sum_buckets(counts)`` is an aggregate: element-wise sum of the ``counts`` arrays of the rows
in a group. Quantile over any window and any set of replicas, summing buckets first::

    SELECT histogram_quantile(0.99, bounds, sum_buckets(counts)) AS p99
    FROM histograms_1m
    WHERE signal = 'ttft_seconds' AND ts >= now() - INTERVAL 1 HOUR
    GROUP BY bounds
"""

from __future__ import annotations

import duckdb

# Helpers take already-computed pieces so each expression stays readable; DuckDB inlines them,
# so ``histogram_quantile`` binds rank and bucket index once each as lambda parameters
# (``list_transform([x], lambda v: ...)[1]``): written inline, the bucket search was expanded and
# evaluated once per use inside ``_hq_interpolate``, 4-5x slower on 288k rows.
_MACROS = (
    # 1-based index of the first bucket whose cumulative count reaches rank (last if none).
    """CREATE OR REPLACE MACRO _hq_index(rank, counts) AS
       coalesce(list_position(list_transform(counts, lambda c: c >= rank), true), len(counts))""",
    """CREATE OR REPLACE MACRO _hq_largest_finite(bounds) AS
       list_filter(bounds, lambda b: NOT isinf(b))[-1]""",
    # Interpolate inside bucket idx (1-based); mirrors the Python branch by branch.
    """CREATE OR REPLACE MACRO _hq_interpolate(rank, bounds, counts, idx) AS
       CASE
         WHEN isinf(bounds[idx]) THEN _hq_largest_finite(bounds)
         WHEN idx = 1 AND bounds[1] <= 0 THEN bounds[1]
         WHEN counts[idx] - (CASE WHEN idx = 1 THEN 0.0 ELSE counts[idx - 1] END) <= 0 THEN bounds[idx]
         ELSE (CASE WHEN idx = 1 THEN 0.0 ELSE bounds[idx - 1] END)
              + (bounds[idx] - (CASE WHEN idx = 1 THEN 0.0 ELSE bounds[idx - 1] END))
                * (rank - (CASE WHEN idx = 1 THEN 0.0 ELSE counts[idx - 1] END))
                / (counts[idx] - (CASE WHEN idx = 1 THEN 0.0 ELSE counts[idx - 1] END))
       END""",
    """CREATE OR REPLACE MACRO histogram_quantile(q, bounds, counts) AS
       CASE
         WHEN q IS NULL OR bounds IS NULL OR counts IS NULL THEN NULL
         WHEN len(bounds) <> len(counts) OR len(bounds) = 0
           THEN error('histogram_quantile: bounds and counts must be non-empty and of equal length')
         WHEN isnan(q::DOUBLE) THEN NULL
         WHEN q < 0 THEN '-inf'::DOUBLE
         WHEN q > 1 THEN 'inf'::DOUBLE
         WHEN counts[-1] IS NULL OR isnan(counts[-1]) OR counts[-1] <= 0 THEN NULL
         ELSE list_transform([q * counts[-1]], lambda rank:
                list_transform([_hq_index(rank, counts)], lambda idx:
                  _hq_interpolate(rank, bounds, counts, idx))[1])[1]
       END""",
    # Aggregate: element-wise sum of the arrays in a group.
    """CREATE OR REPLACE MACRO sum_buckets(counts) AS
       list_reduce(list(counts), lambda a, b: list_transform(a, lambda x, i: x + b[i]))""",
)

# Minute rollups: the writer stores per-flush partials per minute (re-summed when an hour is
# compacted); these views finish the sum, so each (minute, replica, series) is one row. Files that
# share no (replica, instant) with another file already hold finished minutes (every rollup file
# has one row per minute and series) and are read as they are; only the others are grouped,
# which at 200 replicas x 30 days was 2.6x the cost of the whole query. The ``_in(t0, t1)``
# macros read only the files of the window (see ``reader``).
_HISTOGRAMS_1M = """
    SELECT ts, replica, engine, model, region, gpu_type, metric, signal, labels, bounds,
           sum_buckets(counts) AS counts, sum(sum) AS sum, sum(count) AS count,
           sum(interval_s) AS interval_s, date
    FROM {source} GROUP BY ALL"""
_SIGNALS_1M = """
    SELECT ts, replica, engine, model, region, gpu_type, signal, labels,
           sum(n) AS n, sum(value_sum) AS value_sum, min(value_min) AS value_min,
           max(value_max) AS value_max, arg_max_null(value_last, last_ts) AS value_last,
           min(first_ts) AS first_ts, max(last_ts) AS last_ts, sum(interval_s) AS interval_s, date
    FROM {source} GROUP BY ALL"""
# A finished row as the GROUP BY would give it (sum() of a BIGINT is a HUGEINT).
_HISTOGRAMS_1M_FINAL = """
    SELECT ts, replica, engine, model, region, gpu_type, metric, signal, labels, bounds, counts,
           sum, count, interval_s, date
    FROM {source}"""
_SIGNALS_1M_FINAL = """
    SELECT ts, replica, engine, model, region, gpu_type, signal, labels, n::HUGEINT AS n,
           value_sum, value_min, value_max, value_last, first_ts, last_ts, interval_s, date
    FROM {source}"""


def _finished(name: str, final: str, body: str, t0: str, t1: str) -> str:
    return (
        final.format(source=f"{name}_final_in({t0}, {t1})")
        + " UNION ALL "
        + body.format(source=f"{name}_open_in({t0}, {t1})")
    )


_ROLLUPS = (
    ("histograms_1m", _HISTOGRAMS_1M_FINAL, _HISTOGRAMS_1M),
    ("signals_1m", _SIGNALS_1M_FINAL, _SIGNALS_1M),
)
_DERIVED_VIEWS = tuple(
    statement
    for name, final, body in _ROLLUPS
    for statement in (
        f"CREATE OR REPLACE VIEW {name} AS {_finished(name, final, body, 'NULL', 'NULL')}",
        f"CREATE OR REPLACE MACRO {name}_in(t0, t1) AS TABLE {_finished(name, final, body, 't0', 't1')}",
    )
)


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Create the macros and derived views on ``con`` (views over the base tables must exist)."""
    for statement in _MACROS + _DERIVED_VIEWS:
        con.execute(statement)
