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


def _file(path: str, replica: str | None, t0_min: int, t1_min: int):
    from enginescope.store.delta import DataFile

    base_us = int(T0 // 3600 * 3600) * 1_000_000
    low, high = ("rep-a", "rep-z") if replica is None else (replica, replica)
    return DataFile(path, 1, 1, "2026-11-28", base_us + t0_min * 60_000_000, base_us + t1_min * 60_000_000,
                    low, high)  # fmt: skip


def test_a_file_is_final_only_when_no_other_file_meets_it() -> None:
    from enginescope.store.listing import _sharing_files

    files = [
        _file("a-closed", "rep-a", 0, 59),  # alone in its hour: final
        _file("a-open-1", "rep-a", 60, 70),  # two flushes of one open hour meet at minute 70
        _file("a-open-2", "rep-a", 70, 80),
        _file("b-same-minutes", "rep-b", 60, 80),  # another replica: final
        _file("fleet-day-before", None, -1440, -60),  # all replicas, an earlier day: final
        _file("fleet-late", None, 100, 110),  # all replicas ...
        _file("c-late", "rep-c", 105, 105),  # ... met by one replica's late file: both open
    ]
    shared = {files[i].path for i in _sharing_files(files)}
    assert shared == {"a-open-1", "a-open-2", "fleet-late", "c-late"}


def test_finished_rollup_views_read_final_files_as_they_are_and_group_the_rest(tmp_path: Path) -> None:
    """The views read closed, compacted files without the finishing GROUP BY; a late flush into a
    compacted hour makes that hour's files open again. Either way: the grouped answer, exactly."""
    writer = _fill(tmp_path)
    writer.compact(T0 + 7200)  # both hours closed: one final file per replica-hour
    late = Batch(REPLICAS[0])  # a scrape that arrives after its hour was compacted
    late.signals.append(SignalRow(T0 + 90, "queue_depth", 7.0, 1.0))
    writer.write(late)
    writer.flush()
    con = open_store(tmp_path)
    listing = StoreListing(store_location(tmp_path), ("signals_1m",))
    final, open_ = listing.final_and_open("signals_1m")
    assert final and open_  # both halves of the view are exercised
    assert {f.replica for f in open_} == {"rep-a"}  # the late row's hour only
    grouped = """
        SELECT ts, replica, signal, labels::VARCHAR, sum(n), min(first_ts), max(last_ts), sum(value_sum),
               min(value_min), max(value_max), arg_max_null(value_last, last_ts), sum(interval_s)
        FROM signals_1m_partials GROUP BY ALL ORDER BY ALL"""
    _close(con.execute(ROLLUP_SQL).fetchall(), con.execute(grouped).fetchall())
    assert con.execute("DESCRIBE signals_1m").fetchall()[8][1] == "HUGEINT"  # n as the GROUP BY gives it
    t0, t1 = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 3600, UTC)
    windowed = con.execute("SELECT count(*), sum(n) FROM signals_1m_in($t0, $t1) WHERE ts >= $t0 AND ts < $t1",
                           {"t0": t0, "t1": t1}).fetchone()  # fmt: skip
    assert windowed == con.execute("SELECT count(*), sum(n) FROM signals_1m WHERE ts >= $t0 AND ts < $t1",
                                   {"t0": t0, "t1": t1}).fetchone()  # fmt: skip


def test_both_halves_of_a_finished_view_come_from_one_snapshot(tmp_path: Path, monkeypatch) -> None:
    """A compaction that commits between the binding of the view's final half and its open
    half must not drop the merged rows (the open half of the newer snapshot no longer lists
    them) nor count them twice: the open half reuses the final half's split."""
    writer = _fill(tmp_path)  # hour 10 and hour 11 files, several partials each, none merged
    con = open_store(tmp_path)
    expected = con.execute("SELECT sum(n), count(*) FROM signals_1m").fetchone()
    original = StoreListing.final_and_open
    merged = []

    def compact_after_listing(self, table, t0_s=None, t1_s=None):  # type: ignore[no-untyped-def]
        split = original(self, table, t0_s, t1_s)
        if not merged:  # the first (final) half is listed: now a writer merges every hour
            merged.append(writer.compact(T0 + 7200))
        return split

    monkeypatch.setattr(StoreListing, "final_and_open", compact_after_listing)
    assert con.execute("SELECT sum(n), count(*) FROM signals_1m").fetchone() == expected
    assert merged and merged[0].files_written > 0  # the merge really committed in between
