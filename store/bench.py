"""The ``bench`` table: one immutable Parquet file per ``enginescope bench`` run, each committed
to the store's Delta table ``<store>/bench`` (unpartitioned; runs are few and never compacted).

The run file is written by ``enginescope.cmd_bench.write_bench`` at ``<store>/bench/<run>.parquet``
(temp name + rename); ``register_run`` then adds it to the table in one commit, so Delta readers
see whole runs only and a run file no commit added (a killed ``bench``) is not a run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from enginescope.store.delta import StoreTable, file_stats
from enginescope.store.location import StoreLocation, store_location

BENCH_TABLE = "bench"


def register_run(store: str | Path | StoreLocation, run_file: Path) -> None:
    """Commit ``run_file`` (already inside ``<store>/bench/``) to the ``bench`` Delta table."""
    location = store_location(store)
    table = StoreTable(location, BENCH_TABLE)
    schema = pq.read_schema(run_file)
    dt = table.create(schema, partitioned=False)
    known = set(pa.schema(dt.schema().to_arrow()).names)
    if set(schema.names) - known:
        table.ensure_columns(schema.empty_table())
    rel = os.path.relpath(run_file, location.path / BENCH_TABLE)
    stats = file_stats(pq.read_table(run_file, columns=[]))
    add = AddAction(rel, run_file.stat().st_size, {}, int(time.time() * 1000), True, stats)
    table.append([add], app_id=f"enginescope:bench:{rel}", version=1)
