"""``signals_1m``: flush-time partials and compaction re-sums give the raw aggregates exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.store import CompactionPolicy, StoreWriter, open_store
from enginescope.store.delta import StoreTable
from enginescope.store.listing import StoreListing
from enginescope.store.location import store_location
from enginescope.views import queries

T0 = datetime(2026, 11, 28, 10, 58, 30, tzinfo=UTC).timestamp()  # spans an hour boundary
NEXT_DAY_S = datetime(
    2026, 11, 29, 0, 30, tzinfo=UTC
).timestamp()  # 2026-11-28 closed, before the all-replica merge
REPLICAS = (Identity("rep-a", engine="sglang", model="m"), Identity("rep-b", engine="vllm", model="m"))

# Per (minute, replica, signal, labels) over raw rows: what the rollup must reproduce.
RAW_SQL = """
SELECT date_trunc('minute', ts) AS ts, replica, signal, labels::VARCHAR AS labels,
       count(value) AS n, min(ts) AS first_ts, max(ts) AS last_ts, sum(value) AS value_sum,
       min(value) AS value_min, max(value) AS value_max, arg_max(value, ts) AS value_last,
       sum(interval_s) AS interval_s
FROM signals GROUP BY ALL ORDER BY ALL"""
ROLLUP_SQL = """
SELECT ts, replica, signal, labels::VARCHAR AS labels, n, first_ts, last_ts, value_sum, value_min,
       value_max, value_last, interval_s
FROM signals_1m ORDER BY ALL"""


def _fill(store: Path) -> StoreWriter:
    """~4 minutes at an uneven scrape interval, flushed every few scrapes (several partials per
    minute), a gauge, a counter increase and a labelled signal per replica."""
    rng = random.Random(3)
    writer = StoreWriter(store, REPLICAS[0], background=False, policy=CompactionPolicy(close_grace_s=0))
    ts_s = T0
    for step in range(160):
        interval_s = rng.choice((1.0, 1.5, 2.0))
        ts_s += interval_s
        for ident in REPLICAS:
            batch = Batch(ident)
            batch.signals += [
                SignalRow(ts_s, "queue_depth", float(rng.randint(0, 40)), interval_s),
                SignalRow(ts_s, "generation_tokens", rng.uniform(0, 900), interval_s),
                SignalRow(ts_s, "gpu_power_w", rng.uniform(200, 700), interval_s, (("gpu", str(step % 2)),)),
            ]
            writer.write(batch)
        if step % 7 == 0:
            writer.flush()
    writer.flush()
    return writer


def _close(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b) > 0
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a[:7] == row_b[:7]  # keys, n, first and last row time exactly
        assert row_a[7:] == pytest.approx(row_b[7:], rel=1e-12)


def test_rollup_equals_raw_before_and_after_compaction(tmp_path: Path) -> None:
    writer = _fill(tmp_path)
    con = open_store(tmp_path)
    raw = con.execute(RAW_SQL).fetchall()
    partials = con.execute("SELECT count(*) FROM signals_1m_partials").fetchone()[0]
    assert partials > len(raw)  # minutes really are split over several flushes
    _close(con.execute(ROLLUP_SQL).fetchall(), raw)
    writer.compact(T0 + 7200)  # both hours closed: partials re-summed per minute
    assert con.execute("SELECT count(*) FROM signals_1m_partials").fetchone()[0] == len(raw)
    _close(con.execute(ROLLUP_SQL).fetchall(), raw)
    _close(con.execute(RAW_SQL).fetchall(), raw)  # raw rows merged too: same sums


@pytest.mark.parametrize("bucket_s", [60, 120, 300])
def test_series_from_rollup_equal_raw_series(tmp_path: Path, bucket_s: int) -> None:
    """Gauge mean/peak/low and exact counter rates (Σincrease / Σinterval_s) per bucket."""
    _fill(tmp_path)
    con = open_store(tmp_path)
    t0 = datetime.fromtimestamp(T0 - T0 % 60, UTC)
    params = {"t0": t0, "t1": datetime.fromtimestamp(T0 + 600, UTC), "replicas": [], "model": "",
              "bucket_s": bucket_s, "signals": ["queue_depth", "generation_tokens", "gpu_power_w"]}  # fmt: skip
    raw = queries.df(con, queries.SIGNAL_SERIES_SQLS["raw"], params)
    rolled = queries.df(con, queries.SIGNAL_SERIES_SQLS["1m"], params)
    assert len(raw) == len(rolled) > 0
    assert (raw[["t", "replica", "signal"]] == rolled[["t", "replica", "signal"]]).all().all()
    for column in ("mean", "peak", "low", "rate"):
        assert rolled[column].to_numpy() == pytest.approx(raw[column].to_numpy(), rel=1e-12)
    tokens = raw.loc[(raw["signal"] == "generation_tokens") & (raw["replica"] == "rep-a")].iloc[0]
    rows = con.execute(
        "SELECT sum(value), sum(interval_s) FROM signals WHERE signal = 'generation_tokens' "
        "AND replica = 'rep-a' AND ts >= $t AND ts < $t + to_seconds($b)",
        {"t": tokens["t"].to_pydatetime(), "b": bucket_s},
    ).fetchone()
    assert tokens["rate"] == pytest.approx(rows[0] / rows[1], rel=1e-12)


def test_replica_list_and_time_range_from_rollup_are_exact(tmp_path: Path) -> None:
    _fill(tmp_path)
    con = open_store(tmp_path)
    raw = con.execute(queries.REPLICAS_SQL).fetchall()
    assert con.execute(queries.REPLICAS_1M_SQL).fetchall() == raw
    span = con.execute("SELECT min(ts), max(ts) FROM signals").fetchone()
    assert con.execute(queries.TIME_RANGE_1M_SQL).fetchone() == span
    assert con.execute(queries.TIME_RANGE_SQL).fetchone() == span


def _own(store: Path, table: str, replica: str = "rep-a") -> list[tuple[int, int]]:
    """(first hour, last hour) of each live file of ``replica`` in ``table``."""
    files = StoreTable(store_location(store), table).files()
    hour = lambda us: datetime.fromtimestamp(us / 1e6, UTC).hour  # noqa: E731
    return sorted((hour(f.min_ts_us), hour(f.max_ts_us - 1)) for f in files if f.replica == replica)


def test_closed_day_rollup_becomes_one_file_counted_once(tmp_path: Path) -> None:
    """A closed day's rollup is merged into one file per replica (one commit replaces the
    hourly files), a late flush into that day stays visible and is merged next time."""
    writer = _fill(tmp_path)
    con = open_store(tmp_path)
    raw = con.execute(RAW_SQL).fetchall()
    # 30 min into the next day: 2026-11-28 is closed, not yet due for the all-replica merge.
    writer.compact(NEXT_DAY_S)
    assert _own(tmp_path, "signals_1m") == [(10, 11)]
    assert _own(tmp_path, "signals") == [(10, 10), (11, 11)]  # raw stays hourly
    _close(con.execute(ROLLUP_SQL).fetchall(), raw)
    assert con.execute("SELECT count(*) FROM signals_1m_partials").fetchone()[0] == len(raw)
    # A one-hour window lists each replica's day file (it holds that hour's rows), nothing else.
    hour_11 = datetime(2026, 11, 28, 11, tzinfo=UTC).timestamp()
    listed = StoreListing(store_location(tmp_path), ("signals_1m",)).data_files(
        "signals_1m", hour_11, hour_11 + 60
    )
    assert sorted(f.replica for f in listed) == ["rep-a", "rep-b"]

    late = Batch(REPLICAS[0])
    late.signals.append(SignalRow(T0 + 5, "queue_depth", 1000.0, 1.0))
    writer.write(late)
    writer.flush()
    raw = con.execute(RAW_SQL).fetchall()
    assert _own(tmp_path, "signals_1m") == [(10, 10), (10, 11)]  # day file + the late file
    _close(con.execute(ROLLUP_SQL).fetchall(), raw)
    writer.compact(NEXT_DAY_S)
    assert _own(tmp_path, "signals_1m") == [(10, 11)]
    _close(con.execute(ROLLUP_SQL).fetchall(), raw)
    assert con.execute("SELECT count(*) FROM signals_1m_partials").fetchone()[0] == len(raw)
