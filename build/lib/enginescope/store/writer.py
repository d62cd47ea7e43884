"""``StoreWriter``: a Sink that buffers Batches and flushes Parquet segments in the background.

One writer per replica; every file it creates lies under its own ``replica=<id>`` folders, so
many sidecars share one store folder without locks. ``write`` only appends to a buffer; a
thread flushes every ``flush_interval_s`` (write temp, atomic rename) and compacts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from enginescope.collectors.model import Batch, Identity
from enginescope.store import compaction, rollups, schema
from enginescope.store.compaction import CompactionPolicy, CompactionStats
from enginescope.store.segments import (
    list_segments,
    partition_dir,
    replica_dirname,
    segment_name,
)

log = logging.getLogger(__name__)

Rows = list[tuple[Identity, Any]]
ROW_TABLES = ("samples", "histograms", "signals", "events", "gpu", "requests")
MAX_RETRY_ROWS = 1_000_000  # per table, kept across failed flushes (bounded memory if the store is down)


class StoreWriter:
    """Sink writing ``<store>/<table>/date=YYYY-MM-DD/replica=<id>/<segment>.parquet``."""

    def __init__(
        self,
        store_dir: str | Path,
        identity: Identity,
        flush_interval_s: float = 2.0,
        compact_interval_s: float = 30.0,
        retention_days: float | None = None,
        policy: CompactionPolicy | None = None,
        background: bool = True,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.identity = identity
        self.flush_interval_s = flush_interval_s
        self.compact_interval_s = compact_interval_s
        self.retention_days = retention_days
        self.policy = policy or CompactionPolicy()
        self.rows_written = 0
        self.compaction_stats = CompactionStats()
        self._buffer: dict[str, Rows] = {t: [] for t in ROW_TABLES}
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()  # one flush/compaction at a time: keeps sequence order
        self._stop = threading.Event()
        self._replicas: dict[str, Identity] = {}
        self._first_seen_s: dict[str, float] = {}
        self._last_compact_s = 0.0
        self._last_seq = 0
        self._closed = False
        self._start_up()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()

    # --- Sink protocol -------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """Buffer ``batch`` (cheap; thread-safe). Nothing touches the disk here."""
        ident = batch.identity
        with self._buffer_lock:
            for table in ROW_TABLES:
                rows = getattr(batch, table)
                if rows:
                    self._buffer[table].extend((ident, row) for row in rows)
            self._replicas.setdefault(ident.replica, ident)
            if ident != self._replicas[ident.replica]:
                self._replicas[ident.replica] = ident  # identity may be refined (model learned later)

    def flush(self) -> None:
        """Write everything buffered so far as new segments (visible to readers on return)."""
        with self._io_lock:
            self._flush_locked()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def compact(self, now_s: float | None = None) -> CompactionStats:
        """Run one compaction (and retention) pass now."""
        with self._io_lock:
            return self._compact_locked(time.time() if now_s is None else now_s)

    # --- internals -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                with self._io_lock:
                    self._flush_locked()
                    now_s = time.time()
                    if now_s - self._last_compact_s >= self.compact_interval_s:
                        self._compact_locked(now_s)
            except Exception:  # the sidecar must keep running; the next tick retries
                log.exception("store writer: flush/compaction failed in %s", self.store_dir)

    def _start_up(self) -> None:
        """Continue sequence numbers after existing files; remove a killed writer's temp files."""
        for folder in self._own_folders(self.identity.replica):
            compaction.clean_temp_files(folder, max_age_s=0)
            for seg in list_segments(folder):
                self._last_seq = max(self._last_seq, seg.hi)
        self._first_seen_s.update(self._read_first_seen(self.identity.replica))

    def _next_seq(self) -> int:
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
        return self._last_seq

    def _flush_locked(self) -> None:
        with self._buffer_lock:
            buffered, self._buffer = self._buffer, {t: [] for t in ROW_TABLES}
            replicas = dict(self._replicas)
        groups = [
            (table, key, group)
            for table, rows in buffered.items()
            if rows
            for key, group in _partition(rows).items()
        ]
        written = done = 0
        try:
            for table, (replica, date_key, hour), group in groups:
                written += self._write_group(table, replica, date_key, hour, group)
                done += 1
        except Exception:  # a transient I/O error: what was not written goes to the next flush
            self._requeue(groups[done:])
            raise
        finally:
            self.rows_written += written
            if written:
                self._write_replica_files(replicas)

    def _write_group(self, table: str, replica: str, date_key: str, hour: int, group: Rows) -> int:
        """One segment (and its rollup partials), both or neither; returns the rows written."""
        arrow, group = _to_arrow(table, group)
        if arrow is None:
            return 0
        path = self._write_segment(partition_dir(self.store_dir, table, date_key, replica), hour, arrow)
        if table in rollups.ROLLUP_OF:
            rollup_dir = partition_dir(self.store_dir, rollups.ROLLUP_OF[table], date_key, replica)
            try:
                self._write_segment(rollup_dir, hour, _minute_partials(table, group))
            except Exception:
                path.unlink(missing_ok=True)  # retried whole: no raw row without its rollup, none twice
                raise
        return len(group)

    def _requeue(self, groups: list[tuple[str, Any, Rows]]) -> None:
        """Put unwritten rows back in front of the buffer, keeping at most ``MAX_RETRY_ROWS``."""
        with self._buffer_lock:
            for table, _, group in reversed(groups):
                self._buffer[table][:0] = group
            for rows in self._buffer.values():
                if len(rows) > MAX_RETRY_ROWS:  # the store stays unwritable: drop the oldest
                    log.error("store writer: dropping %d unwritten rows", len(rows) - MAX_RETRY_ROWS)
                    del rows[: len(rows) - MAX_RETRY_ROWS]

    def _write_segment(self, folder: Path, hour: int, arrow: Any) -> Path:
        seq = self._next_seq()
        return compaction.write_atomic(arrow, folder, segment_name(hour, seq, seq))

    def _compact_locked(self, now_s: float) -> CompactionStats:
        self._last_compact_s = now_s
        for replica in self._replicas or {self.identity.replica: self.identity}:
            for folder in self._own_folders(replica):
                compaction.compact_partition(folder, now_s, self.policy, self.compaction_stats)
                compaction.clean_temp_files(folder, self.policy.tmp_max_age_s, now_s)
        if self.retention_days is not None:
            compaction.apply_retention(self.store_dir, schema.TABLES, self.retention_days, now_s)
        return self.compaction_stats

    def _own_folders(self, replica: str) -> list[Path]:
        name = replica_dirname(replica)
        folders = []
        for table in schema.TABLES:
            table_dir = self.store_dir / table
            if table_dir.is_dir():
                folders.extend(p / name for p in sorted(table_dir.glob("date=*")) if (p / name).is_dir())
        return folders

    def _write_replica_files(self, replicas: dict[str, Identity]) -> None:
        now_s = time.time()
        for replica, ident in replicas.items():
            first_s = self._first_seen_s.setdefault(replica, now_s)
            record = asdict(ident) | {"first_seen": _iso(first_s), "last_seen": _iso(now_s)}
            record |= {"first_seen_s": first_s, "last_seen_s": now_s}
            path = self.store_dir / "replicas" / f"{replica_dirname(replica)[8:]}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            tmp.replace(path)

    def _read_first_seen(self, replica: str) -> dict[str, float]:
        path = self.store_dir / "replicas" / f"{replica_dirname(replica)[8:]}.json"
        try:
            return {replica: float(json.loads(path.read_text())["first_seen_s"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}


def _partition(rows: Rows) -> dict[tuple[str, str, int], Rows]:
    """Group rows by (replica, UTC date, UTC hour): each segment holds one hour of one replica."""
    groups: dict[tuple[str, str, int], Rows] = {}
    day_cache: dict[int, str] = {}
    for ident, row in rows:
        hour_index = int(row.ts_s // 3600)
        date_key = day_cache.get(hour_index)
        if date_key is None:
            date_key = datetime.fromtimestamp(hour_index * 3600, UTC).strftime("%Y-%m-%d")
            day_cache[hour_index] = date_key
        groups.setdefault((ident.replica, date_key, hour_index % 24), []).append((ident, row))
    return groups


def _to_arrow(table: str, group: Rows) -> tuple[Any, Rows]:
    """Arrow table of ``group``; rows whose values do not fit the schema are dropped, not the group."""
    try:
        return schema.to_arrow(table, group), group
    except (pa.ArrowException, TypeError, ValueError):
        pass
    kept = []
    for item in group:
        try:
            schema.to_arrow(table, [item])
        except (pa.ArrowException, TypeError, ValueError) as exc:
            log.error("store writer: dropping a %s row that does not fit the schema: %s", table, exc)
        else:
            kept.append(item)
    return (schema.to_arrow(table, kept) if kept else None), kept


def _minute_partials(table: str, rows: Rows) -> Any:
    """Flush-time partials of the minute rollup of ``table`` (same hour as ``rows``)."""
    if table == "histograms":
        return schema.to_arrow(rollups.HISTOGRAMS_1M, rollups.histogram_partials(rows))
    return rollups.signal_partials(rows)


def _iso(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="seconds")
