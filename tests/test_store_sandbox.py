"""open_store(sandbox=True): store readable, everything else refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.store import StoreWriter, open_store


@pytest.fixture()
def sandbox(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, Path]:
    store = tmp_path / "store"
    writer = StoreWriter(store, Identity("r1"), background=False)
    batch = Batch(Identity("r1"))
    batch.signals = [SignalRow(1_800_000_000.0 + i, "queue_depth", float(i), 1.0) for i in range(5)]
    writer.write(batch)
    writer.close()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    return open_store(store, sandbox=True), tmp_path


def test_sandbox_reads_the_store(sandbox) -> None:
    con, _ = sandbox
    assert con.execute("SELECT count(*), sum(value) FROM signals").fetchone() == (5, 10.0)
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (0,)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("COPY (SELECT 1) TO '{store}/x.csv'", "Permission"),
        ("COPY (SELECT 1) TO 'esstore://x.csv'", "read-only"),
        ("COPY (SELECT 1) TO '{tmp}/x.csv'", "Permission"),
        ("ATTACH '{store}/x.duckdb' AS x", "Permission"),
        ("ATTACH 'esstore://x.duckdb' AS x", "read-only"),
        ("SELECT * FROM read_csv('{tmp}/secret.csv')", "Permission"),
        ("SELECT * FROM read_csv('esstore://../secret.csv')", "outside the store"),
        ("SET enable_external_access = true", "locked"),
        ("SET disabled_filesystems = ''", "locked"),
        ("LOAD httpfs", "Permission"),
    ],
)
def test_sandbox_refuses(sandbox, sql: str, reason: str) -> None:
    con, tmp = sandbox
    with pytest.raises(duckdb.Error, match=reason):
        con.execute(sql.format(store=tmp / "store", tmp=tmp)).fetchall()
    assert sorted(p.name for p in tmp.iterdir()) == ["secret.csv", "store"]
    assert not list((tmp / "store").glob("x.*"))
