"""``store migrate``: convert a store of the old Parquet-segment layout to Delta tables.

Every row a reader of the old layout counted (the visible segments of each ``date=/replica=``
folder) is appended through ``StoreWriter.write_table``, so the minute rollups are rebuilt from
the raw rows by the writer's own code, and bench run files are committed to the ``bench`` table.
In place, the old table folders are first moved to ``<store>/.legacy-<UTC stamp>/`` (kept: the
operator deletes them once satisfied); to a new path, the source is only read. The result is
checked: each table's row count must equal the old layout's, else MigrationError.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from enginescope.collectors.model import Identity
from enginescope.store import legacy, schema
from enginescope.store.bench import BENCH_TABLE, register_run
from enginescope.store.location import store_location
from enginescope.store.rollups import SOURCE_OF
from enginescope.store.writer import ROW_TABLES, StoreWriter

log = logging.getLogger(__name__)

FLUSH_ROWS = 500_000  # commit once this many rows are staged (bounded memory, few commits)


class MigrationError(RuntimeError):
    """Nothing to migrate, a target that already holds tables, or a count that does not match."""


@dataclass
class MigrationReport:
    target: str
    backup: Path | None = None
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows migrated
    bench_runs: int = 0


def migrate(
    source: Path, target: str | Path | None = None, progress: Callable[[str], None] = print
) -> MigrationReport:
    """Convert ``source`` (old layout) in place, or into ``target`` (a new folder or URL)."""
    source = source.resolve()
    old = legacy.legacy_tables(store_location(source), schema.TABLES)
    if not old:
        delta = [t for t in schema.TABLES if (source / t / legacy.DELTA_LOG).is_dir()]
        state = "already holds Delta tables" if delta else "holds no store tables"
        raise MigrationError(f"nothing to migrate: {source} {state}")
    in_place = target is None or store_location(target) == store_location(source)
    read_root = source
    report = MigrationReport(str(source if in_place else target))
    if in_place:
        report.backup = read_root = source / f".legacy-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        read_root.mkdir()
        for table in old:
            if table != BENCH_TABLE:  # bench run files stay where they are and get committed
                (source / table).rename(read_root / table)
        progress(f"old tables moved to {read_root}")
    else:
        _check_empty_target(target)
    if BENCH_TABLE in old:  # first: a bench folder of run files alone marks the old layout
        report.bench_runs = _copy_bench(source, report.target, in_place)
    writer = StoreWriter(report.target, Identity("migrate"), background=False)
    expected = {t: _copy_table(writer, read_root, t, progress) for t in old if t in ROW_TABLES}
    writer.flush()
    writer.compact()  # closed days' rollups: one file per replica per day, as a live store's
    writer.close()
    report.rows = expected
    if not in_place:
        _copy_other_files(source, Path(str(target)), old)
    _verify(report.target, expected)
    return report


def _copy_table(writer: StoreWriter, root: Path, table: str, progress: Callable[[str], None]) -> int:
    rows = staged = 0
    folders = legacy.legacy_partitions(root, table)
    for folder in folders:
        files = legacy.visible_segments(folder)
        if not files:
            continue
        arrow = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        writer.write_table(table, arrow)
        rows += arrow.num_rows
        staged += arrow.num_rows
        if staged >= FLUSH_ROWS:
            writer.flush()
            staged = 0
    progress(f"{table}: {rows} rows from {len(folders)} partitions")
    return rows


def _copy_bench(source: Path, target: str, in_place: bool) -> int:
    runs = legacy.legacy_bench_runs(source)
    folder = store_location(target).path / BENCH_TABLE
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        dest = run if in_place else folder / run.name
        if not in_place:
            shutil.copy2(run, dest)
        register_run(target, dest)
    return len(runs)


def _check_empty_target(target: str | Path) -> None:
    location = store_location(target)
    if location.is_local and any((location.path / t / legacy.DELTA_LOG).exists() for t in schema.TABLES):
        raise MigrationError(f"target {target} already holds store tables; choose an empty folder")


def _copy_other_files(source: Path, target: Path, tables: list[str]) -> None:
    """Everything that is not a table (replicas/, state/, recipe.toml, ...) travels along."""
    skip = {*tables, *schema.TABLES, BENCH_TABLE}
    for entry in source.iterdir():
        if entry.name in skip or entry.name.startswith(".legacy-"):
            continue
        dest = target / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, dest)


def _verify(target: str, expected: dict[str, int]) -> None:
    from enginescope.store.reader import open_store

    con = open_store(target)
    for table, rows in expected.items():
        got = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if got != rows:
            raise MigrationError(f"{table}: {got} rows after migration, {rows} before")
    # The rebuilt rollups re-sum to the raw rows exactly (observations and values counted).
    checks = {"histograms_1m": ("sum(count)", "sum(count)"), "signals_1m": ("sum(n)", "count(value)")}
    for rollup, (rolled_expr, raw_expr) in checks.items():
        if expected.get(SOURCE_OF[rollup]):
            rolled = con.execute(f"SELECT {rolled_expr} FROM {rollup}").fetchone()[0]
            raw = con.execute(f"SELECT {raw_expr} FROM {SOURCE_OF[rollup]}").fetchone()[0]
            if rolled != raw:
                raise MigrationError(f"{rollup}: rebuilt rollup sums to {rolled}, raw rows to {raw}")
