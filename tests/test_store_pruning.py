"""Time-pruned file lists (``<view>_in(t0, t1)``) never drop a row of the window."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.dashboard.data import Window, load_incident, use_rollup
from enginescope.store import CompactionPolicy, StoreWriter, open_store
from enginescope.store.delta import StoreTable
from enginescope.store.listing import StoreListing
from enginescope.store.location import store_location

MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC)
IDENT = Identity("rep-1", engine="sglang", model="m")
US = timedelta(microseconds=1)


def _write(writer: StoreWriter, start: datetime, seconds: int, step_s: int = 20) -> None:
    for offset_s in range(0, seconds, step_s):
        batch = Batch(IDENT)
        batch.signals.append(
            SignalRow((start + timedelta(seconds=offset_s)).timestamp(), "queue_depth", 1.0, 1.0)
        )
        writer.write(batch)
        if offset_s % (3 * step_s) == 0:
            writer.flush()
    writer.flush()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """22:00 → 02:00 across a date boundary: hours 22 and 23 compacted (sources still on disk
    inside the delete grace, i.e. a file being compacted), 00 chunked, 01 fresh segments only,
    plus a late segment for the compacted hour 23."""
    policy = CompactionPolicy(chunk_segments=50, close_grace_s=0, delete_grace_s=3600)
    tmp_path = tmp_path_factory.mktemp("pruning")
    writer = StoreWriter(tmp_path, IDENT, background=False, policy=policy)
    _write(writer, MIDNIGHT - timedelta(hours=2), 2 * 3600)
    writer.compact((MIDNIGHT + timedelta(seconds=5)).timestamp())
    _write(writer, MIDNIGHT, 3600)
    writer.compact((MIDNIGHT + timedelta(minutes=59)).timestamp())  # open hour: chunks
    _write(writer, MIDNIGHT + timedelta(hours=1), 3600, step_s=300)
    _write(writer, MIDNIGHT - timedelta(seconds=1), 1)  # late row for hour 23
    files = StoreTable(store_location(tmp_path), "signals").files()
    assert any(not f.fresh for f in files) and len([f for f in files if f.date == "2026-11-28"]) > 2
    return tmp_path


def visible_files(store: Path, table: str, t0_s: float | None = None, t1_s: float | None = None) -> list[str]:
    return StoreListing(store_location(store), (table,)).files(table, t0_s, t1_s)


def _hours(files: list[str], store: Path) -> set[int]:
    by_uri = {StoreTable(store_location(store), "signals").file_uri(f): f for f in _table_files(store)}
    return {datetime.fromtimestamp(by_uri[f].min_ts_us / 1e6, UTC).hour for f in files}


def _table_files(store: Path):
    return StoreTable(store_location(store), "signals").files()


EDGES = [MIDNIGHT + timedelta(hours=h) for h in (-2, -1, 0, 1, 2)]
SHIFTS = [
    (timedelta(0), timedelta(0)),
    (-US, timedelta(0)),
    (US, timedelta(0)),
    (timedelta(0), -US),
    (timedelta(0), US),
]
WINDOWS = [(a + d0, b + d1) for a in EDGES for b in EDGES if a < b for d0, d1 in SHIFTS] + [
    (MIDNIGHT - timedelta(seconds=1), MIDNIGHT),
    (MIDNIGHT - timedelta(minutes=7), MIDNIGHT + timedelta(minutes=3)),
]


def test_pruned_views_return_exactly_the_rows_of_the_window(store: Path) -> None:
    con = open_store(store)
    sql = "SELECT count(*), sum(epoch(ts)) FROM {src} WHERE ts >= $t0 AND ts < $t1"
    for t0, t1 in WINDOWS:
        params = {"t0": t0, "t1": t1}
        full = con.execute(sql.format(src="signals"), params).fetchone()
        pruned = con.execute(sql.format(src="signals_in($t0, $t1)"), params).fetchone()
        assert pruned == full, (t0, t1)
        rolled = con.execute(sql.format(src="signals_1m_partials_in($t0, $t1)"), params).fetchone()
        assert rolled[0] == con.execute(sql.format(src="signals_1m_partials"), params).fetchone()[0]
    assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == 360 + 180 + 12 + 1


def test_pruning_skips_hours_outside_and_keeps_hidden_files_hidden(store: Path) -> None:
    all_files = visible_files(store, "signals")
    one_hour = visible_files(
        store, "signals", MIDNIGHT.timestamp(), (MIDNIGHT + timedelta(minutes=59)).timestamp()
    )
    assert one_hour and all("date=2026-11-29" in f for f in one_hour) and _hours(one_hour, store) == {0}
    assert set(one_hour) < set(all_files)
    # A window ending exactly on the hour also lists that hour (closed bound: never too few).
    edge = visible_files(store, "signals", (MIDNIGHT - timedelta(hours=1)).timestamp(), MIDNIGHT.timestamp())
    assert _hours(edge, store) == {23, 0}
    # Compaction sources still on disk (vacuum grace) are not in any list: the snapshot decides.
    on_disk = {str(p) for p in (store / "signals").rglob("*.parquet")}
    assert len(on_disk) > len(all_files) and set(all_files) < on_disk
    day_before = visible_files(store, "signals", None, (MIDNIGHT - US).timestamp())
    assert set(day_before) == {f for f in all_files if "date=2026-11-28" in f}


def test_store_without_rollup_files_falls_back_to_raw(store: Path, tmp_path: Path) -> None:
    store = Path(shutil.copytree(store, tmp_path / "copy"))
    con = open_store(store)
    window = Window(MIDNIGHT - timedelta(hours=2), MIDNIGHT + timedelta(hours=2), bucket_s=60)
    assert use_rollup(con, "signals_1m", window)
    with_rollup = load_incident(con, window).series
    rollup = StoreTable(store_location(store), "signals_1m")
    hour_00 = [f for f in rollup.files() if datetime.fromtimestamp(f.min_ts_us / 1e6, UTC).hour == 0]
    rollup.rewrite(hour_00, [], data_change=True)  # an hour written before the rollup existed
    assert not use_rollup(con, "signals_1m", window)
    raw = load_incident(con, window).series
    assert len(raw) == len(with_rollup) > 0
    assert raw["mean"].to_numpy() == pytest.approx(with_rollup["mean"].to_numpy(), rel=1e-12)
