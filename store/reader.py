"""Read side: an in-memory DuckDB connection with views over the store's Delta tables.

Each view reads ``read_parquet(enginescope_files('<table>', NULL, NULL))``: a Python function
that returns the data files of the table's latest Delta snapshot every time a query binds the
view (delta-rs reads the new commits since the last call), so every query sees whole commits,
never a file being compacted twice nor an uncommitted upload. The first file of every list is a
small typed "anchor" (no rows) kept outside the store, so an empty or missing store still has
typed views.

Each view ``<v>`` also has a table macro ``<v>_in(t0, t1)``: the same rows, but only files whose
``date`` partition and ``ts`` statistics can hold a row in ``[t0, t1]`` are opened. Windowed
queries should read ``signals_in($t0, $t1)`` and still filter on ``ts``.
``enginescope_hour_span(table)`` is [start of the oldest hour, start of the newest hour] with
rows, ``enginescope_rollup_complete(rollup, t0, t1)`` whether the rollup has rows for every
replica and hour of its source table in the window; both read only the Delta log.

``bench`` reads the runs of ``enginescope bench`` (a Delta table like the others).
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from enginescope.store import legacy, macros, schema
from enginescope.store.inventory import SERIES_VIEW_SQL
from enginescope.store.listing import StoreListing
from enginescope.store.location import StoreLocation, store_location

log = logging.getLogger(__name__)

VIEW_TABLES = ("samples", "histograms", "signals", "events", "gpu", "requests")
# view name -> store table whose files it reads; rollup partials get finishing views in ``macros``.
_FILE_VIEWS = {name: name for name in VIEW_TABLES} | {
    "series_log": "series_log",
    "histograms_1m_partials": "histograms_1m",
    "signals_1m_partials": "signals_1m",
}
# The columns ``enginescope.cmd_bench.write_bench`` writes (this package may not import it); the
# anchor gives them types, so a store without runs, or a run without engine metrics, still has them.
_BENCH_LATENCIES = tuple(
    f"{side}_{signal}_p{q}_s"
    for side in ("client", "engine")
    for signal in ("ttft", "itl", "e2e")
    for q in (50, 95, 99)
)
BENCH_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("run_id", "recipe", "model", "url", "target", "itl_slo_side")]
    + [("ts_s", pa.float64()), ("concurrency", pa.int64())]
    + [(name, pa.float64()) for name in ("duration_s", "requests", "ok", "failed", "throughput_rps")]
    + [(name, pa.float64()) for name in ("output_tps", *_BENCH_LATENCIES)]
    + [("meets_slo", pa.bool_())]
)
BENCH_TABLE = "bench"
_ANCHOR_DATE = "1970-01-01"
ROLLUP_TABLES = ("histograms_1m", "signals_1m")


def open_store(store_dir: str | Path | StoreLocation, sandbox: bool = False) -> duckdb.DuckDBPyConnection:
    """Connection with views ``samples``, ``histograms``, ``histograms_1m``, ``signals``,
    ``events``, ``gpu``, ``requests``, ``bench`` and the SQL macros of ``enginescope.store.macros``.

    ``store_dir`` is a folder or an object-store URL (``s3://bucket/prefix``, credentials from
    the AWS environment variables). ``sandbox=True`` is for untrusted ad-hoc SQL: files are read
    through a read-only filesystem rooted at the store, the local filesystem is disabled and the
    configuration locked, so writing files (COPY TO, ATTACH), reading outside the store and
    loading extensions all fail with a Permission Error.
    """
    from enginescope.store import sandbox as fs

    location = store_location(store_dir)
    legacy.refuse_legacy(location)
    listing = StoreListing(location, (*schema.TABLES, BENCH_TABLE))
    anchors = _write_anchors()
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    prefix, anchor_prefix = location.root, str(anchors)
    if sandbox:
        prefix, anchor_prefix = fs.mount_read_only(con, location, anchors)
    elif not location.is_local:
        fs.mount_object_store(con, location)

    # While the views are created (DuckDB binds each one), list only the anchor: its schema is
    # the view's, and reading every file's footer for 8 views cost ~0.3 s per connection.
    creating = True

    def files(table: str, t0: dt.datetime | None, t1: dt.datetime | None) -> list[str]:
        paths = [f"{anchor_prefix}/{_anchor_relpath(table)}"]
        if creating:
            return paths
        found = listing.files(table, _epoch_s(t0), _epoch_s(t1))
        paths.extend(prefix + p[len(location.root) :] for p in found)
        return paths

    pinned = threading.local()  # this thread's last final/open split, for its open half

    def part_files(table: str, t0: dt.datetime | None, t1: dt.datetime | None, final: bool) -> list[str]:
        """``files`` of a rollup table, only its final (True) or open (False) ones. A finished
        view binds its final half, then its open half (in that order, in the querying thread):
        the open half reuses the split of the final half, so both come from one snapshot even
        when a commit lands in between (else a merge could drop or double rows)."""
        paths = [f"{anchor_prefix}/{_anchor_relpath(table)}"]
        if creating:
            return paths
        key = (table, _epoch_s(t0), _epoch_s(t1))
        stash, pinned.split = getattr(pinned, "split", None), None
        if final or stash is None or stash[0] != key:
            split = listing.final_and_open(*key)
            pinned.split = (key, split) if final else None
        else:
            split = stash[1]
        chosen = split[0 if final else 1]
        store_table = listing.tables[table]
        paths.extend(prefix + store_table.file_uri(f)[len(location.root) :] for f in chosen)
        return paths

    def rollup_complete(table: str, t0: dt.datetime | None, t1: dt.datetime | None) -> bool:
        return listing.rollup_covers(table, _epoch_s(t0), _epoch_s(t1))

    def span(table: str) -> list[dt.datetime] | None:
        hours = listing.hour_span(table)
        return None if hours is None else [dt.datetime.fromtimestamp(h, dt.UTC) for h in hours]

    window_args = ["VARCHAR", "TIMESTAMPTZ", "TIMESTAMPTZ"]
    con.create_function(
        "enginescope_files", files, window_args, "VARCHAR[]", null_handling="special", side_effects=False
    )
    con.create_function(
        "enginescope_rollup_files",
        part_files,
        [*window_args, "BOOLEAN"],
        "VARCHAR[]",
        null_handling="special",
        side_effects=False,
    )
    con.create_function(
        "enginescope_rollup_complete", rollup_complete, window_args, "BOOLEAN", null_handling="special"
    )
    con.create_function(
        "enginescope_hour_span",
        span,
        ["VARCHAR"],
        "TIMESTAMPTZ[]",
        null_handling="special",
        side_effects=False,
    )
    # Footers of immutable segment files: read once per connection, not once per query.
    con.execute("SET parquet_metadata_cache = true")
    for view, table in _FILE_VIEWS.items():
        con.execute(f"CREATE VIEW {view} AS {_view_sql(table, 'NULL', 'NULL')}")
        con.execute(f"CREATE MACRO {view}_in(t0, t1) AS TABLE {_view_sql(table, 't0', 't1')}")
    for table in ROLLUP_TABLES:  # the finishing views of ``macros`` read these two halves
        for part, final in (("final", "true"), ("open", "false")):
            files = f"enginescope_rollup_files('{table}', {{t0}}::TIMESTAMPTZ, {{t1}}::TIMESTAMPTZ, {final})"
            con.execute(
                f"CREATE MACRO {table}_{part}_in(t0, t1) AS TABLE {_read_sql(table, files.format(t0='t0', t1='t1'))}"
            )
    con.execute(f"CREATE VIEW series AS {SERIES_VIEW_SQL}")
    _create_bench_view(con)
    macros.register(con)
    creating = False
    if sandbox:
        from enginescope.store.sandbox import lock_down

        lock_down(con)
    return con


def _epoch_s(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _view_sql(table: str, t0: str, t1: str) -> str:
    return _read_sql(table, f"enginescope_files('{table}', {t0}::TIMESTAMPTZ, {t1}::TIMESTAMPTZ)")


def _read_sql(table: str, files: str) -> str:
    replace = ", ".join(
        f"{col}::JSON AS {col}" for col in schema.JSON_COLUMNS if col in schema.SCHEMAS[table].names
    )
    star = f"* REPLACE ({replace})" if replace else "*"
    return (
        f"SELECT {star} FROM read_parquet({files}, "
        "union_by_name = true, hive_partitioning = true, hive_types = {'date': DATE})"
    )


def _create_bench_view(con: duckdb.DuckDBPyConnection) -> None:
    """``bench``: every run's rows plus ``ts`` (the level's end, UTC); ``bench_in(t0, t1)``
    filters on ``ts`` (NULL = unbounded)."""
    con.execute(
        f"CREATE VIEW {BENCH_TABLE} AS SELECT *, to_timestamp(ts_s) AS ts FROM read_parquet("
        f"enginescope_files('{BENCH_TABLE}', NULL::TIMESTAMPTZ, NULL::TIMESTAMPTZ), union_by_name = true)"
    )
    con.execute(
        f"CREATE MACRO {BENCH_TABLE}_in(t0, t1) AS TABLE SELECT * FROM {BENCH_TABLE} "
        "WHERE (t0 IS NULL OR ts >= t0) AND (t1 IS NULL OR ts <= t1)"
    )


def _anchor_relpath(table: str) -> str:
    if table == BENCH_TABLE:  # run files are not partitioned
        return f"{table}/anchor.parquet"
    # A hive-style path like the real files', so the hive column ``date`` lines up.
    return f"{table}/date={_ANCHOR_DATE}/anchor.parquet"


@functools.cache
def _write_anchors() -> Path:
    """Typed empty files, written once per process outside the store (the store may be read-only)."""
    folder = Path(tempfile.mkdtemp(prefix="enginescope-anchors-"))
    atexit.register(shutil.rmtree, folder, True)
    for table in schema.TABLES:
        path = folder / _anchor_relpath(table)
        path.parent.mkdir(parents=True)
        pq.write_table(schema.empty_table(table), path)
    bench = folder / _anchor_relpath(BENCH_TABLE)
    bench.parent.mkdir(parents=True)
    pq.write_table(BENCH_SCHEMA.empty_table(), bench)
    return folder


def is_vanished_file_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException | duckdb.HTTPException) or (
        "No such file" in text or "No files found" in text
    )


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
    """Execute ``sql``; retry once if a file vanished under the query (retention or a query
    slower than the compaction grace period). Returns the cursor-like connection."""
    try:
        return con.execute(sql, params)
    except duckdb.Error as exc:
        if not is_vanished_file_error(exc):
            raise
        log.debug("store query hit a vanished file, retrying once: %s", exc)
        return con.execute(sql, params)
