"""``enginescope store migrate``: an old Parquet-segment store becomes Delta tables with every
visible row exactly once; an unconverted store gets a clear message, not a traceback."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enginescope.cli import main
from enginescope.collectors.model import EventRow, GpuRow, HistogramRow, Identity, SignalRow
from enginescope.store import LegacyStoreError, StoreWriter, open_store, schema

T0 = datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC).timestamp()
BOUNDS = (0.1, 1.0, math.inf)


def _segment(store: Path, table: str, replica: str, hour: int, lo: int, hi: int, arrow: pa.Table) -> None:
    folder = store / table / "date=2026-11-28" / f"replica={replica}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow, folder / f"h{hour:02d}_{lo:016d}_{hi:016d}.parquet")


def _signals(ident: Identity, *ts: float) -> pa.Table:
    return schema.to_arrow("signals", [(ident, SignalRow(t, "queue_depth", 2.0, 1.0)) for t in ts])


def _old_store(store: Path) -> None:
    """Two replicas; rep-a's hour 10 was compacted (1..3 merged) and its sources 1 and 2 are
    still on disk (the old layout hid them): a reader counted 3 signal rows for rep-a's hour."""
    for replica in ("rep-a", "rep-b"):
        ident = Identity(replica, engine="sglang", model="m")
        if replica == "rep-a":
            _segment(store, "signals", replica, 10, 1, 1, _signals(ident, T0))
            _segment(store, "signals", replica, 10, 2, 2, _signals(ident, T0 + 1))
            _segment(store, "signals", replica, 10, 1, 3, _signals(ident, T0, T0 + 1, T0 + 2))
        else:
            _segment(store, "signals", replica, 10, 5, 5, _signals(ident, T0, T0 + 1))
        _segment(store, "signals", replica, 11, 9, 9, _signals(ident, T0 + 3600))
        hist = [(ident, HistogramRow(T0 + i, "sglang:ttft", (), BOUNDS, (1.0, 2.0, 3.0), 1.5, 3.0, 1.0, "ttft_seconds")) for i in range(4)]  # fmt: skip
        _segment(store, "histograms", replica, 10, 7, 7, schema.to_arrow("histograms", hist))
        _segment(
            store,
            "events",
            replica,
            10,
            8,
            8,
            schema.to_arrow("events", [(ident, EventRow(T0, "engine_up", "", 1))]),
        )
        gpu = [(ident, GpuRow(T0, "GPU-0", {"gpu_index": 0, "power_w": 300.0 + len(replica)}))]
        _segment(store, "gpu", replica, 10, 8, 8, schema.gpu_table(gpu))
    (store / "bench").mkdir()
    pq.write_table(
        pa.table({"run_id": ["r1"], "ts_s": [T0], "concurrency": [4]}), store / "bench" / "r1.parquet"
    )
    (store / "replicas").mkdir()
    (store / "replicas" / "rep-a.json").write_text(json.dumps({"replica": "rep-a"}))


EXPECTED = {"signals": 3 + 1 + 2 + 1, "histograms": 8, "events": 2, "gpu": 2}


def _counts(store: Path | str) -> dict[str, int]:
    con = open_store(store)
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in EXPECTED}


def test_old_layout_gets_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _old_store(tmp_path)
    with pytest.raises(LegacyStoreError, match=f"enginescope store migrate --store {tmp_path}"):
        open_store(tmp_path)
    with pytest.raises(LegacyStoreError, match="old Parquet-segment layout"):
        StoreWriter(tmp_path, Identity("rep-a"), background=False)
    assert main(["query", "--store", str(tmp_path), "SELECT 1"]) == 2
    assert "enginescope store migrate" in capsys.readouterr().err


def test_migrate_in_place_keeps_every_visible_row_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _old_store(tmp_path)
    assert main(["store", "migrate", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "migrated 19 rows" in out and "1 bench runs" in out
    assert _counts(tmp_path) == EXPECTED
    con = open_store(tmp_path)
    assert con.execute("SELECT sum(value) FROM signals WHERE replica = 'rep-a'").fetchone() == (8.0,)
    assert con.execute("SELECT sum(n) FROM signals_1m").fetchone() == (7,)  # rebuilt from raw
    assert con.execute("SELECT sum(count) FROM histograms_1m").fetchone() == (24.0,)
    assert con.execute("SELECT run_id, concurrency FROM bench").fetchall() == [("r1", 4)]
    assert sorted(con.execute("SELECT power_w FROM gpu").fetchall()) == [(305.0,), (305.0,)]
    backups = list(tmp_path.glob(".legacy-*"))
    assert len(backups) == 1 and (backups[0] / "signals" / "date=2026-11-28").is_dir()
    # Running it again is refused with a message, and a new writer appends normally.
    assert main(["store", "migrate", "--store", str(tmp_path)]) == 2
    assert "already holds Delta tables" in capsys.readouterr().err
    StoreWriter(tmp_path, Identity("rep-a"), background=False).close()


def test_migrate_to_a_new_path_leaves_the_source(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    _old_store(old)
    before = sorted(p.relative_to(old) for p in old.rglob("*"))
    assert main(["store", "migrate", "--store", str(old), "--to", str(new)]) == 0
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before
    assert _counts(new) == EXPECTED
    assert (new / "replicas" / "rep-a.json").is_file()
    assert open_store(new).execute("SELECT count(*) FROM bench").fetchone() == (1,)
