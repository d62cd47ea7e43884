"""StoreWriter + reader round trip, compaction, rollup, retention and uncommitted-file handling."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enginescope.collectors.model import (
    Batch,
    EventRow,
    GpuRow,
    HistogramRow,
    Identity,
    RequestRow,
    SampleRow,
    SignalRow,
)
from enginescope.collectors.quantile import histogram_quantile
from enginescope.store import CompactionPolicy, StoreWriter, open_store
from enginescope.store.delta import DataFile, StoreTable
from enginescope.store.location import store_location

IDENT = Identity("rep-1", engine="sglang", model="llama", region="us-east", gpu_type="H100")
T0 = datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC).timestamp()
BOUNDS = (0.1, 0.5, 1.0, math.inf)


def _batch(ts_s: float, ident: Identity = IDENT, n: int = 1) -> Batch:
    batch = Batch(ident)
    for i in range(n):
        batch.samples.append(
            SampleRow(ts_s, "sglang:num_requests", "counter", (("b", "2"), ("a", "1")), i, 1.0, 1.0)
        )
        batch.histograms.append(
            HistogramRow(
                ts_s, "sglang:ttft", (), BOUNDS, (1.0, 3.0, 4.0, 4.0 + i), 2.0, 4.0 + i, 1.0, "ttft_seconds"
            )
        )
    batch.signals.append(SignalRow(ts_s, "queue_depth", 3.0, 1.0))
    batch.events.append(EventRow(ts_s, "engine_up", "ok", 2))
    batch.gpu.append(GpuRow(ts_s, "GPU-a", {"gpu_index": 0, "power_w": 250.5, "gpu_name": "H100"}))
    batch.requests.append(RequestRow(ts_s, {"request_id": "r1", "e2e_s": 0.5, "request_finished_ts": ts_s}))
    return batch


def _writer(store: Path, **kw) -> StoreWriter:
    return StoreWriter(store, IDENT, background=False, **kw)


def _files(store: Path, table: str = "samples") -> list[DataFile]:
    return StoreTable(store_location(store), table).files()


def _hour(f: DataFile) -> int:
    return datetime.fromtimestamp(f.min_ts_us / 1e6, UTC).hour


def test_missing_store_opens_with_typed_empty_views(tmp_path: Path) -> None:
    con = open_store(tmp_path / "nope")
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE histograms)").fetchall())
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["bounds"] == "DOUBLE[]" and types["labels"] == "JSON"
    for view in ("samples", "histograms", "histograms_1m", "signals", "events", "gpu", "requests"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    assert not (tmp_path / "nope").exists()


def test_round_trip_every_table(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.write(_batch(T0))
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (0,)  # write() only buffers
    writer.flush()
    row = con.execute(
        "SELECT ts, replica, engine, model, region, gpu_type, labels->>'a', labels::VARCHAR, delta FROM samples"
    ).fetchone()
    assert row[0] == datetime.fromtimestamp(T0, UTC)
    assert row[1:6] == ("rep-1", "sglang", "llama", "us-east", "H100")
    assert row[6] == "1" and row[7] == '{"a":"1","b":"2"}' and row[8] == 1.0
    hist = con.execute("SELECT bounds, counts, signal FROM histograms").fetchone()
    assert hist == (list(BOUNDS), [1.0, 3.0, 4.0, 4.0], "ttft_seconds")
    assert con.execute("SELECT kind, detail, replica_count FROM events").fetchone() == ("engine_up", "ok", 2)
    assert con.execute("SELECT gpu_index, power_w, gpu_name FROM gpu").fetchone() == (0, 250.5, "H100")
    req = con.execute("SELECT request_id, e2e_s, request_finished_ts FROM requests").fetchone()
    assert req == ("r1", 0.5, datetime.fromtimestamp(T0, UTC))
    ident = json.loads((tmp_path / "replicas" / "rep-1.json").read_text())
    assert ident["model"] == "llama" and ident["first_seen_s"] <= ident["last_seen_s"]


def test_rows_split_by_hour_and_date(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    midnight = datetime(2026, 11, 29, tzinfo=UTC).timestamp()
    for ts in (midnight - 1, midnight + 1, midnight + 3601):
        writer.write(_batch(ts))
    writer.flush()
    names = {(f.date, _hour(f), f.replica) for f in _files(tmp_path)}
    assert names == {("2026-11-28", 23, "rep-1"), ("2026-11-29", 0, "rep-1"), ("2026-11-29", 1, "rep-1")}
    assert {p.parent.name for p in (tmp_path / "samples").rglob("*.parquet")} == {
        "date=2026-11-28", "date=2026-11-29"
    }  # fmt: skip
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM samples WHERE date = DATE '2026-11-29'").fetchone() == (2,)


def test_compaction_merges_hours_without_double_counting(tmp_path: Path) -> None:
    policy = CompactionPolicy(chunk_segments=5, close_grace_s=60, delete_grace_s=3600)
    writer = _writer(tmp_path, policy=policy)
    for i in range(12):  # 12 flush files in hour 10, then one in hour 11 (open)
        writer.write(_batch(T0 + i, n=2))
        writer.flush()
    writer.write(_batch(T0 + 3600))
    writer.flush()
    con = open_store(tmp_path)
    before = con.execute("SELECT count(*), sum(value) FROM samples").fetchone()
    now_s = T0 + 3600 + 10  # hour 10 not closed yet (grace): fresh files merge into a chunk
    writer.compact(now_s)
    assert con.execute("SELECT count(*), sum(value) FROM samples").fetchone() == before
    assert sorted((_hour(f), f.fresh) for f in _files(tmp_path)) == [(10, False), (11, True)]  # 12 -> 1 chunk
    on_disk = len(list((tmp_path / "samples").rglob("*.parquet")))
    assert on_disk == 13 + 1  # replaced files stay for readers that listed them (vacuum grace)
    writer.write(_batch(T0 + 20))  # one more flush file in hour 10
    writer.flush()
    before = con.execute("SELECT count(*), sum(value) FROM samples").fetchone()
    writer.compact(T0 + 3600 + 120)  # hour 10 closed: one file; hour 11 keeps its flush file
    assert con.execute("SELECT count(*), sum(value) FROM samples").fetchone() == before
    assert sorted((_hour(f), f.fresh) for f in _files(tmp_path)) == [(10, False), (11, True)]
    writer.policy = CompactionPolicy(chunk_segments=5, close_grace_s=60, delete_grace_s=0)
    assert writer.vacuum() >= 14  # replaced files removed from disk, the live ones kept
    assert len(list((tmp_path / "samples").rglob("*.parquet"))) == 2
    assert con.execute("SELECT count(*), sum(value) FROM samples").fetchone() == before
    ordered = con.execute("SELECT ts FROM samples WHERE date_part('hour', ts) = 10").fetchall()
    assert ordered == sorted(ordered)


def test_late_file_after_hour_compaction_is_kept(tmp_path: Path) -> None:
    writer = _writer(tmp_path, policy=CompactionPolicy(close_grace_s=0, delete_grace_s=0))
    for i in range(3):
        writer.write(_batch(T0 + i))
        writer.flush()
    writer.compact(T0 + 7200)
    assert len(_files(tmp_path)) == 1
    writer.write(_batch(T0 + 10))  # late row for the closed hour: a new file
    writer.flush()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (4,)
    writer.compact(T0 + 7300)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (4,)
    assert len(_files(tmp_path)) == 1


def test_minute_rollup_matches_raw_quantiles(tmp_path: Path) -> None:
    writer = _writer(tmp_path, policy=CompactionPolicy(close_grace_s=0, delete_grace_s=0))
    ident2 = Identity("rep-2", engine="sglang", model="llama")
    for i in range(130):
        writer.write(_batch(T0 + i, n=1 + i % 3))
        writer.write(_batch(T0 + i, ident=ident2))
        if i % 20 == 0:
            writer.flush()
    writer.flush()
    con = open_store(tmp_path)
    raw = con.execute(
        "SELECT date_trunc('minute', ts) m, sum_buckets(counts) FROM histograms GROUP BY m ORDER BY m"
    ).fetchall()
    rolled = con.execute(
        "SELECT ts, sum_buckets(counts) FROM histograms_1m GROUP BY ts ORDER BY ts"
    ).fetchall()
    assert rolled == raw and len(raw) == 3
    writer.compact(T0 + 7200)
    assert con.execute("SELECT count(*) FROM histograms_1m_partials").fetchone() == (6,)  # 3 min x 2 replicas
    again = con.execute(
        "SELECT ts, sum_buckets(counts) FROM histograms_1m GROUP BY ts ORDER BY ts"
    ).fetchall()
    assert again == raw
    p99 = con.execute(
        "SELECT histogram_quantile(0.99, bounds, sum_buckets(counts)) FROM histograms_1m GROUP BY bounds"
    ).fetchone()[0]
    total = [sum(r[1][k] for r in raw) for k in range(len(BOUNDS))]
    assert p99 == histogram_quantile(0.99, BOUNDS, total)


def test_retention_deletes_old_date_partitions(tmp_path: Path) -> None:
    writer = _writer(tmp_path, retention_days=2, policy=CompactionPolicy(delete_grace_s=0))
    writer.write(_batch(T0 - 5 * 86400))
    writer.write(_batch(T0))
    writer.flush()
    writer.compact(T0 + 60)
    assert {f.date for f in _files(tmp_path)} == {"2026-11-28"}
    assert open_store(tmp_path).execute("SELECT count(*) FROM events").fetchone() == (1,)
    writer.vacuum()
    dates = {p.parent.name for p in (tmp_path / "samples").rglob("*.parquet")}
    assert dates == {"date=2026-11-28"}


def test_uncommitted_files_are_invisible_and_vacuumed(tmp_path: Path) -> None:
    writer = _writer(tmp_path, policy=CompactionPolicy(delete_grace_s=0))
    writer.write(_batch(T0))
    writer.flush()
    # What a writer killed between upload and commit leaves: a data file no commit added.
    debris = tmp_path / "samples" / "date=2026-11-28" / "f-0123456789abcdef.parquet"
    debris.write_bytes((tmp_path / "samples" / _files(tmp_path)[0].path).read_bytes())
    half = tmp_path / "samples" / "date=2026-11-28" / "f-half.parquet"
    half.write_bytes(b"PAR1 half a file")
    assert open_store(tmp_path).execute("SELECT count(*) FROM samples").fetchone() == (1,)
    writer.vacuum()
    assert not debris.exists() and not half.exists()
    restarted = _writer(tmp_path)
    restarted.write(_batch(T0 + 1))
    restarted.flush()
    assert open_store(tmp_path).execute("SELECT count(*) FROM samples").fetchone() == (2,)


def test_background_thread_flushes_and_close_flushes_rest(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, IDENT, flush_interval_s=3600)
    writer.write(_batch(T0))
    writer.close()
    assert open_store(tmp_path).execute("SELECT count(*) FROM samples").fetchone() == (1,)
    assert len(_files(tmp_path)) == 1


@pytest.mark.parametrize("replica", ["modal/ta-01 x", "ünï"])
def test_odd_replica_ids_round_trip(tmp_path: Path, replica: str) -> None:
    writer = StoreWriter(tmp_path, Identity(replica), background=False)
    writer.write(_batch(T0, ident=Identity(replica)))
    writer.flush()
    con = open_store(tmp_path)
    assert con.execute("SELECT DISTINCT replica FROM samples").fetchall() == [(replica,)]
    assert {f.replica for f in _files(tmp_path)} == {replica}


def test_failed_flush_keeps_rows_for_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient write error (full disk, Volume hiccup) must not drop the buffered rows."""
    from enginescope.store import delta

    writer = _writer(tmp_path)
    writer.write(_batch(T0, n=3))
    real_write = delta.StoreTable.write_file
    calls = {"n": 0}

    def flaky(self, arrow, date, kind="f"):
        calls["n"] += 1
        if calls["n"] == 3:  # fail midway: some tables already committed, the rest not
            raise OSError(28, "No space left on device")
        return real_write(self, arrow, date, kind)

    monkeypatch.setattr(delta.StoreTable, "write_file", flaky)
    with pytest.raises(OSError):
        writer.flush()
    writer.write(_batch(T0 + 1))
    writer.flush()
    con = open_store(tmp_path)
    for view, expected in (("samples", 4), ("histograms", 4), ("signals", 2), ("events", 2), ("requests", 2)):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (expected,), view
    rolled = con.execute("SELECT sum(count) FROM histograms_1m").fetchone()[0]
    assert rolled == con.execute("SELECT sum(count) FROM histograms").fetchone()[0]


def test_one_unconvertible_request_row_does_not_drop_other_tables(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    batch = _batch(T0)
    batch.requests.append(RequestRow(T0, {"request_id": 12345, "prompt_tokens": "many"}))
    writer.write(batch)
    writer.flush()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (1,)
    assert con.execute("SELECT request_id FROM requests").fetchall() == [("r1",)]


def test_raw_retention_keeps_the_minute_rollup_answering(tmp_path: Path) -> None:
    """Raw histograms/signals older than ``raw_retention_days`` go, their minute rollups stay
    and answer the same per-minute quantiles as before; other tables keep every day."""
    writer = _writer(tmp_path, raw_retention_days=1, policy=CompactionPolicy(delete_grace_s=0))
    for day in (3, 2, 0):
        for s in range(0, 180, 7):
            writer.write(_batch(T0 - day * 86400 + s, n=1 + s % 3))
    writer.flush()
    sql = """SELECT ts, histogram_quantile(0.9, bounds, c) FROM (
               SELECT ts, bounds, sum_buckets(counts) AS c FROM histograms_1m GROUP BY ts, bounds)
             ORDER BY ts"""
    before = open_store(tmp_path).execute(sql).fetchall()
    assert len(before) == 12  # 4 minutes on each of 3 days
    writer.compact(T0 + 3600)
    writer.vacuum()
    assert {f.date for f in _files(tmp_path, "histograms")} == {"2026-11-28"}
    assert {f.date for f in _files(tmp_path, "signals")} == {"2026-11-28"}
    assert len({f.date for f in _files(tmp_path, "histograms_1m")}) == 3
    assert len({f.date for f in _files(tmp_path, "signals_1m")}) == 3
    assert len({f.date for f in _files(tmp_path, "samples")}) == 3
    con = open_store(tmp_path)
    assert con.execute(sql).fetchall() == before
    assert con.execute("SELECT count(DISTINCT date) FROM signals_1m").fetchone() == (3,)
    assert con.execute("SELECT count(DISTINCT date) FROM histograms").fetchone() == (1,)


def test_closed_rollup_day_becomes_one_file_of_all_replicas(tmp_path: Path) -> None:
    """An hour after a day closed, the writer of its first replica merges the day's rollup
    files of every replica into one (any writer a day later); answers do not change."""
    policy = CompactionPolicy(delete_grace_s=0)
    a = StoreWriter(tmp_path, Identity("rep-a", engine="sglang"), background=False, policy=policy)
    b = StoreWriter(tmp_path, Identity("rep-b", engine="sglang"), background=False, policy=policy)
    day = T0 - 86400  # 2026-11-27; T0 is 10 h after it closed
    for s in range(0, 7200, 300):
        a.write(_batch(day + s, Identity("rep-a", engine="sglang"), n=2))
        b.write(_batch(day + s + 1, Identity("rep-b", engine="sglang")))
    a.flush()
    b.flush()
    sql = """SELECT replica, ts, histogram_quantile(0.5, bounds, counts), count, n
             FROM histograms_1m JOIN signals_1m USING (ts, replica) ORDER BY ALL"""
    before = open_store(tmp_path).execute(sql).fetchall()
    assert len(before) == 48

    def day_files(table: str) -> list[DataFile]:
        return [f for f in _files(tmp_path, table) if f.date == "2026-11-27"]

    b.compact(T0)  # not the day's first replica: leaves rep-a's files alone
    assert len(day_files("histograms_1m")) > 1 and all(f.replica for f in day_files("histograms_1m"))
    a.compact(T0)
    for table in ("histograms_1m", "signals_1m"):
        (merged,) = day_files(table)
        assert (merged.min_replica, merged.max_replica) == ("rep-a", "rep-b")
    assert len(day_files("histograms")) == 4  # raw tables stay per replica and hour
    assert open_store(tmp_path).execute(sql).fetchall() == before
    b.write(_batch(day + 6930, Identity("rep-b", engine="sglang")))  # a late row of that day
    b.flush()
    b.compact(T0 + 86400)  # a day overdue: any writer merges
    assert len(day_files("histograms_1m")) == 1
    after = open_store(tmp_path).execute(sql).fetchall()
    assert len(after) == 48 and after != before
    late = ("rep-b", datetime.fromtimestamp((day + 6900) // 60 * 60, UTC))
    assert [r for r in after if r[:2] != late] == [r for r in before if r[:2] != late]
