"""One store table as a Delta Lake table (delta-rs): data files written by pyarrow, commits of
add/remove actions through delta-rs, so every reader that speaks Delta sees whole commits.

A data file lives at ``<table>/date=YYYY-MM-DD/<kind>-<uuid>.parquet`` (``kind`` ``f`` for a
flush, ``c`` for a compaction output); it is invisible until a commit adds it, so a writer
killed between the upload and the commit leaves only a file no reader lists (``vacuum`` removes
it later). Appends are blind (no read set), so concurrent writers never conflict with each
other; delta-rs retries the version race itself. Each append also records an application
transaction ``(app_id, version)``: a retry after an ambiguous failure (the commit landed but the
answer was lost) sees its own version and does not add the rows a second time.

Every add action carries exact ``numRecords`` and ``min``/``max`` of ``ts`` and ``replica``
(``ts`` widened to whole milliseconds, as Delta readers compare at that precision), which is
what time-window pruning and per-replica compaction read.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    Transaction,
)

from enginescope.store.location import StoreLocation, pyarrow_filesystem

log = logging.getLogger(__name__)

PARTITION = "date"
# Table properties set at creation. Checkpoints every 20 commits keep a snapshot load (and every
# commit, which replays the JSON commits since the checkpoint) cheap: 100 cost 3x the CPU per commit
# in benchmarks/bench_store_sidecar.py. Commit files older than an hour are removed at checkpoints.
TABLE_CONFIG = {
    "delta.checkpointInterval": "20",
    "delta.logRetentionDuration": "interval 1 hours",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
    "delta.setTransactionRetentionDuration": "interval 30 days",
}
COMMIT_ATTEMPTS = 8
_US = 1_000_000


class ConflictError(RuntimeError):
    """A rewrite lost its race: a file it replaces was removed by another commit."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """One live data file of a table (from the add actions of the current snapshot)."""

    path: str  # relative to the table root
    size_bytes: int
    num_records: int
    date: str
    min_ts_us: int | None
    max_ts_us: int | None
    min_replica: str | None
    max_replica: str | None

    @property
    def replica(self) -> str | None:
        """The only replica in the file, or None for a file of several replicas."""
        return self.min_replica if self.min_replica == self.max_replica else None

    @property
    def fresh(self) -> bool:
        return self.path.rsplit("/", 1)[-1].startswith("f-")


def with_date(arrow: pa.Table) -> pa.Schema:
    """The Delta table schema: the data columns plus the ``date`` partition column."""
    return arrow.schema.append(pa.field(PARTITION, pa.date32()))


class StoreTable:
    """A Delta table of the store, opened lazily; thread-safe for one process's writer."""

    def __init__(self, location: StoreLocation, name: str) -> None:
        self.location = location
        self.name = name
        self.uri = location.table_uri(name)
        self._dt: DeltaTable | None = None
        self._files: tuple[int, list[DataFile]] | None = None  # (version, files) of the last listing
        self._schema: tuple[tuple[int, int], pa.Schema] | None = None
        self._lock = threading.Lock()
        self._fs, base = pyarrow_filesystem(location)
        self._base = f"{base}/{name}"

    # --- snapshot ------------------------------------------------------------------------
    def open(self) -> DeltaTable | None:
        """The table at its latest version, or None when it does not exist yet."""
        with self._lock:
            if self._dt is None:
                try:
                    self._dt = DeltaTable(self.uri, storage_options=self.location.storage_options or None)
                except TableNotFoundError:
                    return None
            else:
                try:
                    self._dt.update_incremental()
                except (DeltaError, OSError):
                    # The commits after our version were cleaned up (a reader idle for longer
                    # than the log retention): load afresh from the latest checkpoint.
                    self._dt = DeltaTable(self.uri, storage_options=self.location.storage_options or None)
            return self._dt

    def exists(self) -> bool:
        return self.open() is not None

    def create(self, schema: pa.Schema, partitioned: bool = True) -> DeltaTable:
        """Open, or create with ``schema`` (+ ``date``) partitioned by date; a concurrent
        creation by another writer wins and is simply opened."""
        dt = self.open()
        if dt is not None:
            return dt
        try:
            DeltaTable.create(
                self.uri,
                schema=schema.append(pa.field(PARTITION, pa.date32())) if partitioned else schema,
                mode="ignore",
                partition_by=[PARTITION] if partitioned else None,
                configuration=TABLE_CONFIG,
                storage_options=self.location.storage_options or None,
            )
        except DeltaError as exc:  # lost the creation race: the other writer's table is fine
            log.debug("store: %s created concurrently: %s", self.uri, exc)
        dt = self.open()
        if dt is None:
            raise RuntimeError(f"store: could not create Delta table {self.uri}")
        return dt

    def files(self) -> list[DataFile]:
        """Live files at the latest version (listed once per version)."""
        dt = self.open()
        if dt is None:
            return []
        version = dt.version()
        if self._files is None or self._files[0] != version:
            self._files = (version, data_files(dt))
        return self._files[1]

    def file_uri(self, f: DataFile) -> str:
        return f"{self.uri}/{urllib.parse.unquote(f.path)}"

    # --- data files ------------------------------------------------------------------------
    def write_file(
        self, arrow: pa.Table, date: str, kind: str = "f", row_group_rows: int | None = None
    ) -> AddAction:
        """Upload ``arrow`` (one date's rows, without ``date``) as a new, uncommitted data file."""
        rel = f"{PARTITION}={date}/{kind}-{uuid.uuid4().hex}.parquet"
        sink = io.BytesIO()
        pq.write_table(arrow, sink, compression="zstd", row_group_size=row_group_rows)
        data = sink.getvalue()
        path = f"{self._base}/{rel}"
        if self.location.is_local:
            self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self._fs.open_output_stream(path) as out:
            out.write(data)
        return AddAction(rel, len(data), {PARTITION: date}, int(time.time() * 1000), True, file_stats(arrow))

    def read_files(self, files: Sequence[DataFile]) -> pa.Table:
        tables = [
            pq.read_table(f"{self._base}/{urllib.parse.unquote(f.path)}", filesystem=self._fs) for f in files
        ]
        return pa.concat_tables(tables, promote_options="permissive")

    # --- commits ---------------------------------------------------------------------------
    def ensure_columns(self, arrow: pa.Table) -> pa.Table:
        """Create the table if needed; add columns ``arrow`` has and the table lacks (gpu fields
        are open-ended); cast the others to the table's types (a column that cannot be cast is
        written as NULL, logged). Uses the cached snapshot: no store round trip when nothing is new."""
        dt = self._dt or self.create(arrow.schema)
        table_schema = self._arrow_schema(dt)
        if table_schema == arrow.schema:
            return arrow  # the common case: nothing to add or cast
        new = [f for f in arrow.schema if f.name not in table_schema.names]
        if new:
            dt = self.open() or dt
            try:
                dt.alter.add_columns([Field.from_arrow(f) for f in new])
            except DeltaError as exc:  # another writer added them first
                log.debug("store: add columns to %s: %s", self.uri, exc)
            dt = self.open() or dt
            table_schema = self._arrow_schema(dt)
        for i, f in enumerate(arrow.schema):
            want = table_schema.field(f.name).type if f.name in table_schema.names else f.type
            if want != f.type:
                try:
                    arrow = arrow.set_column(i, f.name, arrow.column(i).cast(want))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    log.error("store: %s.%s is %s, dropping a %s column", self.name, f.name, want, f.type)
                    arrow = arrow.set_column(i, f.name, pa.nulls(arrow.num_rows, want))
        return arrow

    def _arrow_schema(self, dt: DeltaTable) -> pa.Schema:
        """The table's data columns as Arrow (without ``date``), converted once per version."""
        key = (dt.version(), id(dt))
        if self._schema is None or self._schema[0] != key:
            schema = pa.schema(dt.schema().to_arrow())
            if PARTITION in schema.names:
                schema = schema.remove(schema.get_field_index(PARTITION))
            self._schema = (key, schema)
        return self._schema[1]

    def append(self, adds: list[AddAction], app_id: str | None = None, version: int = 0) -> bool:
        """Commit ``adds`` as one blind append; False if ``(app_id, version)`` already landed."""
        return self._commit(list(adds), app=(app_id, version) if app_id else None)

    def rewrite(self, removed: Sequence[DataFile], adds: list[AddAction], data_change: bool) -> None:
        """Replace ``removed`` by ``adds`` in one commit; ConflictError if one is already gone."""
        now_ms = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            RemoveAction(f.path, data_change, now_ms, f.size_bytes, {PARTITION: f.date}) for f in removed
        ]
        for add in adds:
            add.data_change = data_change
        self._commit(actions + adds, must_exist={f.path for f in removed})

    def _commit(
        self,
        actions: list[AddAction | RemoveAction],
        app: tuple[str, int] | None = None,
        must_exist: set[str] | None = None,
    ) -> bool:
        props = CommitProperties(
            app_transactions=[Transaction(app[0], app[1])] if app else None, max_commit_retries=20
        )
        hooks = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=True)
        for attempt in range(COMMIT_ATTEMPTS):
            dt = self.open()
            if dt is None:
                raise RuntimeError(f"store: table {self.uri} vanished")
            if app is not None and (dt.transaction_version(app[0]) or -1) >= app[1]:
                return False  # an earlier attempt landed
            if must_exist and not must_exist <= {f.path for f in data_files(dt)}:
                raise ConflictError(f"{self.uri}: files to replace were removed by another commit")
            try:
                dt.create_write_transaction(
                    actions, "append", dt.schema(), commit_properties=props, post_commithook_properties=hooks
                )
                return True
            except (CommitFailedError, OSError) as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                log.debug("store: commit to %s failed (%s), retrying", self.uri, exc)
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)  # writers collide less after backoff
        return False  # pragma: no cover - the loop returns or raises


def data_files(dt: DeltaTable) -> list[DataFile]:
    """The live files of ``dt``'s snapshot with their stats."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    cols = actions.column_names

    def col(name: str, cast: pa.DataType | None = None) -> list:
        if name not in cols:
            return [None] * actions.num_rows
        column = actions.column(name)
        if cast is not None and column.type != cast:
            column = pc.cast(column, cast)
        return column.to_pylist()

    ts_min = col("min.ts", pa.timestamp("us", tz="UTC"))
    ts_max = col("max.ts", pa.timestamp("us", tz="UTC"))
    dates = col(f"partition.{PARTITION}")
    return [
        DataFile(path, size, n, _date_text(day), _us(lo), _us(hi), rlo, rhi)
        for path, size, n, day, lo, hi, rlo, rhi in zip(
            col("path"),
            col("size_bytes"),
            col("num_records"),
            dates,
            ts_min,
            ts_max,
            col("min.replica"),
            col("max.replica"),
            strict=True,
        )  # fmt: skip
    ]


def data_file_of(add: AddAction) -> DataFile:
    """The DataFile an add action will be once committed (stats parsed back)."""
    stats = json.loads(add.stats) if add.stats else {}
    low, high = stats.get("minValues", {}), stats.get("maxValues", {})
    return DataFile(
        add.path, add.size, int(stats.get("numRecords", 0)), str(add.partition_values.get(PARTITION)),
        _parse_us(low.get("ts")), _parse_us(high.get("ts")), low.get("replica"), high.get("replica"),
    )  # fmt: skip


def add_action_of(f: DataFile) -> AddAction:
    """An add action for a file written earlier (a dead writer's pending file)."""
    stats: dict = {"numRecords": f.num_records, "minValues": {}, "maxValues": {}}
    if f.min_ts_us is not None and f.max_ts_us is not None:
        stats["minValues"]["ts"] = _ts_text(datetime.fromtimestamp(f.min_ts_us / _US, UTC), math.floor)
        stats["maxValues"]["ts"] = _ts_text(datetime.fromtimestamp(f.max_ts_us / _US, UTC), math.ceil)
    if f.min_replica is not None:
        stats["minValues"]["replica"], stats["maxValues"]["replica"] = f.min_replica, f.max_replica
    return AddAction(
        f.path, f.size_bytes, {PARTITION: f.date}, int(time.time() * 1000), True, json.dumps(stats)
    )


def _parse_us(text: str | None) -> int | None:
    if not text:
        return None
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * _US)


def file_stats(arrow: pa.Table) -> str:
    """Delta ``stats`` JSON: row count, min/max/nulls of ``ts`` and ``replica``."""
    stats: dict = {"numRecords": arrow.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for name in ("ts", "replica"):
        if name not in arrow.column_names or arrow.num_rows == 0:
            continue
        column = arrow.column(name)
        stats["nullCount"][name] = column.null_count
        low, high = pc.min(column).as_py(), pc.max(column).as_py()
        if low is None:
            continue
        if name == "ts":
            low, high = _ts_text(low, math.floor), _ts_text(high, math.ceil)
        stats["minValues"][name], stats["maxValues"][name] = low, high
    return json.dumps(stats, separators=(",", ":"))


def _ts_text(value: datetime, rounding) -> str:
    us = round(value.timestamp() * _US)
    ms = rounding(us / 1000)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _us(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * _US)


def _date_text(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def delta_schema(schema: pa.Schema) -> DeltaSchema:
    return DeltaSchema.from_arrow(schema)
