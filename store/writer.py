"""``StoreWriter``: a Sink that buffers Batches and appends them to the store's Delta tables.

``write`` only appends to an in-memory buffer; a thread flushes every ``flush_interval_s``:
per table, the buffered rows become Arrow tables (one Parquet file per replica and UTC hour),
uploaded and then committed as one blind Delta append (plus the minute-rollup partials, in the
rollup table's own commit). Many writers, in any number of processes or containers, append to
the same tables; each compacts only its own replicas' files. A commit that fails keeps its
uploaded files and its transaction version and is retried on the next flush, so rows are
neither lost (up to ``MAX_RETRY_ROWS``) nor added twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from enginescope.collectors.model import Batch, Identity
from enginescope.store import compaction, legacy, rollups, schema
from enginescope.store.arrow_rows import (
    Rows,
    arrow_partials,
    conform,
    minute_partials,
    partition_rows,
    rows_to_arrow,
    split_replica_hours,
)
from enginescope.store.compaction import CompactionPolicy, CompactionStats
from enginescope.store.delta import DataFile, StoreTable, add_action_of, data_file_of
from enginescope.store.inventory import SeriesInventory
from enginescope.store.location import StoreLocation, store_location
from enginescope.store.pending import (
    PendingFile,
    files_by_table,
    read_deferred_manifests,
    read_manifests,
    sweep_stale_temp_files,
    write_deferred_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

ROW_TABLES = ("samples", "histograms", "signals", "events", "gpu", "requests", "series_log")
BATCH_TABLES = ROW_TABLES[:-1]  # filled from Batch fields of the same name; series_log by the inventory
MAX_RETRY_ROWS = 1_000_000  # per table, kept across failed flushes (bounded memory if the store is down)


@dataclass(slots=True)
class _Pending:
    """One table's rows waiting for the log: Arrow parts not yet uploaded, uploaded files not yet
    in a commit, and the commit in flight (its version fixed at its first attempt, so a retry
    after an ambiguous failure is idempotent)."""

    parts: list[tuple[str, pa.Table, int]] = field(default_factory=list)  # (date, arrow, raw rows)
    staged: list[tuple[AddAction, int]] = field(default_factory=list)  # (file, raw rows)
    inflight: tuple[int, list[AddAction], int] | None = None  # (version, files, raw rows)

    def rows(self) -> int:
        inflight = self.inflight[2] if self.inflight else 0
        return sum(n for _, _, n in self.parts) + sum(n for _, n in self.staged) + inflight

    def files(self) -> list[AddAction]:
        return [a for a, _ in self.staged] + (self.inflight[1] if self.inflight else [])


class StoreWriter:
    """Sink appending to ``<store>/<table>`` Delta tables (a folder or an ``s3://`` URL)."""

    def __init__(
        self,
        store_dir: str | Path | StoreLocation,
        identity: Identity,
        flush_interval_s: float = 2.0,
        compact_interval_s: float = 30.0,
        commit_interval_s: float = 30.0,
        retention_days: float | None = None,
        policy: CompactionPolicy | None = None,
        background: bool = True,
        raw_retention_days: float | None = None,
        deferred_commits: bool = False,
    ) -> None:
        self.location = store_location(store_dir)
        self.store_dir: Path | str = self.location.path if self.location.is_local else self.location.root
        legacy.refuse_legacy(self.location)
        self.identity = identity
        self.flush_interval_s = flush_interval_s
        self.compact_interval_s = compact_interval_s
        # The background thread writes files every flush_interval_s but commits them to the
        # Delta log every commit_interval_s (local stores list the files in between in a
        # pending manifest that enginescope's views read, see ``pending``); an explicit
        # flush() always commits. Object stores commit on every flush.
        self.commit_interval_s = commit_interval_s if self.location.is_local else flush_interval_s
        # Deferred: never touch the Delta log (a shared volume without atomic create, see
        # ``pending``); each flush leaves a manifest for the one committer, compaction is its job.
        self.deferred_commits = deferred_commits
        if deferred_commits and not self.location.is_local:
            raise ValueError("deferred_commits is for a shared folder; object stores commit atomically")
        self._deferred_seq = time.time_ns() // 1000  # manifests of one writer sort in flush order
        self.retention_days = retention_days
        # Raw tables that have a minute rollup (histograms, signals) may be kept for less time
        # than everything else: old days then answer from the rollup alone.
        self.raw_retention_days = raw_retention_days
        self.policy = policy or CompactionPolicy()
        self.rows_written = 0
        self.commits = 0
        self.compaction_stats = CompactionStats()
        self.app_id = f"enginescope:{identity.replica}:{uuid.uuid4().hex[:12]}"
        self._tables = {t: StoreTable(self.location, t) for t in schema.TABLES}
        self._buffer: dict[str, Rows] = {t: [] for t in ROW_TABLES}
        self._inventory = SeriesInventory()
        self._pending = {t: _Pending() for t in schema.TABLES}
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()  # one flush/compaction at a time: keeps commit order
        self._stop = threading.Event()
        self._replicas: dict[str, Identity] = {}
        self._first_seen_s: dict[str, float] = self._read_first_seen(identity.replica)
        self._last_compact_s = 0.0
        self._last_commit_s = time.time()
        self._last_vacuum_s = time.time()
        self._last_version = 0
        self._manifest_written = False
        self._manifest_entries: dict[str, dict] = {}  # add path -> manifest entry
        self._closed = False
        self._thread: threading.Thread | None = None
        if not deferred_commits:
            self._adopt_stale_manifests()
        if background:
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()

    # --- Sink protocol -------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """Buffer ``batch`` (cheap; thread-safe). Nothing touches the store here."""
        ident = batch.identity
        with self._buffer_lock:
            for table in BATCH_TABLES:
                rows = getattr(batch, table)
                if rows:
                    self._buffer[table].extend((ident, row) for row in rows)
            self._buffer["series_log"].extend(self._inventory.observe(batch))
            self._replicas.setdefault(ident.replica, ident)
            if ident != self._replicas[ident.replica]:
                self._replicas[ident.replica] = ident  # identity may be refined (model learned later)

    def write_table(self, table: str, arrow: pa.Table) -> None:
        """Bulk append: Arrow rows of store table ``table`` (columns by name as in
        ``schema.SCHEMAS``, identity columns included; missing ones are NULL). Split per replica
        and UTC hour like ``write`` rows, minute rollups derived the same way; committed by the
        next ``flush``. For loaders (``store migrate``, history generators), not for sidecars."""
        if table not in ROW_TABLES:
            raise ValueError(f"write_table: {table!r} is not one of {', '.join(ROW_TABLES)}")
        arrow = conform(table, arrow)
        with self._io_lock:
            rollup = rollups.ROLLUP_OF.get(table)
            # One re-sum of all rows (grouped by minute and replica), then split like the raw
            # rows: the same rollup rows as one re-sum per replica-hour, one DuckDB query.
            partials = dict(split_replica_hours(arrow_partials(table, arrow))) if rollup else {}
            for key, part in split_replica_hours(arrow):
                self._pending[table].parts.append((key[0], part, part.num_rows))
                if rollup and key in partials:
                    self._pending[rollup].parts.append((key[0], partials[key], 0))
            for replica in pc.unique(arrow.column("replica")).to_pylist():
                self._replicas.setdefault(replica, Identity(replica))

    def flush(self) -> None:
        """Commit everything buffered so far (visible to readers on return)."""
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
        """Run one compaction (and retention, and vacuum if due) pass now."""
        with self._io_lock:
            return self._compact_locked(time.time() if now_s is None else now_s)

    def vacuum(self) -> int:
        """Delete replaced and never-committed files older than the policy's grace, now."""
        with self._io_lock:
            return self._vacuum_locked()

    # --- internals -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                with self._io_lock:
                    now_s = time.time()
                    self._flush_locked(commit=now_s - self._last_commit_s >= self.commit_interval_s)
                    if not self.deferred_commits and now_s - self._last_compact_s >= self.compact_interval_s:
                        self._compact_locked(now_s)
            except Exception:  # the sidecar must keep running; the next tick retries
                log.exception("store writer: flush/compaction failed in %s", self.location)

    def _next_version(self) -> int:
        # Monotonic microseconds: versions only grow for this writer's application id.
        self._last_version = max(self._last_version + 1, time.time_ns() // 1000)
        return self._last_version

    def _flush_locked(self, commit: bool = True) -> None:
        with self._buffer_lock:
            buffered, self._buffer = self._buffer, {t: [] for t in ROW_TABLES}
            replicas = dict(self._replicas)
        for table, rows in buffered.items():
            if rows:
                self._stage_rows(table, rows)
        failed: Exception | None = None
        wrote = False
        commit = commit and not self.deferred_commits
        for table, pending in self._pending.items():
            try:
                self._upload(table, pending)
                if commit:
                    wrote |= self._commit_pending(table, pending)
            except Exception as exc:  # a transient store error: the next flush retries this table
                failed = failed or exc
                self._bound(table, pending)
        if commit:
            self._last_commit_s = time.time()
        if self.deferred_commits:
            wrote = self._hand_over_staged()
        if self.location.is_local:
            if not self.deferred_commits:
                self._write_manifest()
            if wrote:
                self._write_replica_files(replicas)
        if failed is not None:
            raise failed

    def _stage_rows(self, table: str, rows: Rows) -> None:
        """Buffered rows -> Arrow parts (one per replica and hour), rollup partials alongside."""
        for (_, date_key, _), group in partition_rows(rows).items():
            arrow, kept = rows_to_arrow(table, group)
            if arrow is None:
                continue
            self._pending[table].parts.append((date_key, arrow, len(kept)))
            if table in rollups.ROLLUP_OF:
                partials = minute_partials(table, kept)
                self._pending[rollups.ROLLUP_OF[table]].parts.append((date_key, partials, 0))

    def _upload(self, table: str, pending: _Pending) -> None:
        store_table = self._tables[table]
        while pending.parts:
            date_key, arrow, rows = pending.parts[0]
            if not self.deferred_commits:  # deferred: the committer creates tables and columns
                arrow = store_table.ensure_columns(arrow)
            pending.staged.append((store_table.write_file(arrow, date_key), rows))
            pending.parts.pop(0)

    def _commit_pending(self, table: str, pending: _Pending) -> bool:
        if pending.inflight is None and pending.staged:
            adds = [a for a, _ in pending.staged]
            pending.inflight = (self._next_version(), adds, sum(n for _, n in pending.staged))
            pending.staged = []
        if pending.inflight is None:
            return False
        version, adds, raw_rows = pending.inflight
        self._tables[table].append(adds, self.app_id, version)
        pending.inflight = None
        self.rows_written += raw_rows
        self.commits += 1
        if pending.staged:  # staged while a retried commit was in flight: commit them now too
            return self._commit_pending(table, pending)
        return True

    def _hand_over_staged(self) -> bool:
        """Deferred commits: this flush's uploaded files become one manifest for the committer."""
        files = [PendingFile(t, data_file_of(a)) for t, p in self._pending.items() for a, _ in p.staged]
        if not files:
            return False
        self._deferred_seq = max(self._deferred_seq + 1, time.time_ns() // 1000)
        write_deferred_manifest(
            self.location.path, self.app_id, self._deferred_seq, self.identity.replica, files
        )
        for pending in self._pending.values():
            self.rows_written += sum(n for _, n in pending.staged)
            pending.staged = []
        return True

    def commit_deferred(self) -> int:
        """Committer side of deferred commits: commit every deferred manifest's files (one
        append per table), delete the manifests, and take their replicas into this writer's
        compaction. Only one process per store may do this. Returns the files committed."""
        if not self.location.is_local:
            return 0
        with self._io_lock:
            # A manifest whose files are not all visible yet (its container's Volume commit is
            # still on the way) waits for the next round; deleting it would lose them.
            manifests = [(p, r) for p, r in read_deferred_manifests(self.location.path) if self._complete(r)]
            if not manifests:
                return 0
            by_table: dict[str, list[DataFile]] = {}
            for _, record in manifests:
                for table, files in files_by_table(record).items():
                    by_table.setdefault(table, []).extend(files)
                replica = record.get("replica")
                if replica:
                    self._replicas.setdefault(replica, Identity(replica))
            committed = sum(self._commit_files(table, files) for table, files in by_table.items())
            for path, _ in manifests:  # only after the commit: a reader must never miss the rows
                path.unlink(missing_ok=True)
            return committed

    def _complete(self, record: dict) -> bool:
        root = self.location.path
        return all(
            (root / t / f.path).is_file() for t, files in files_by_table(record).items() for f in files
        )

    def _commit_files(self, table: str, files: list[DataFile]) -> int:
        """Append the files not yet in ``table`` that exist on disk; returns how many."""
        store_table = self._tables.get(table)
        if store_table is None or not files:
            return 0
        live_paths = {f.path for f in store_table.files()} if store_table.open() is not None else set()
        table_dir = self.location.path / table
        present = [f for f in files if f.path not in live_paths and (table_dir / f.path).is_file()]
        if not present:
            return 0
        for file_schema in {pq.read_schema(table_dir / f.path) for f in present}:
            store_table.ensure_columns(file_schema.empty_table())  # a deferred writer never created them
        store_table.append([add_action_of(f) for f in present])
        return len(present)

    def _write_manifest(self) -> None:
        # Entries are built once per file (stats parsed once), not on every flush's rewrite.
        cache, files = self._manifest_entries, []
        for table, pending in self._pending.items():
            for add in pending.files():
                entry = cache.get(add.path)
                if entry is None:
                    entry = cache[add.path] = PendingFile(table, data_file_of(add)).entry()
                files.append(entry)
        if len(cache) > len(files):
            live = {entry["path"] for entry in files}
            self._manifest_entries = {path: e for path, e in cache.items() if path in live}
        if files or self._manifest_written:
            write_manifest(self.location.path, self.app_id, self.identity.replica, files)
            self._manifest_written = bool(files)

    def _adopt_stale_manifests(self) -> None:
        """Commit the pending files a dead writer left (see ``pending``), whatever its replica:
        on Modal every container is a new replica id, so waiting for the same replica to come
        back would leave them to vacuum."""
        if not self.location.is_local:
            return
        for path, record, live in read_manifests(self.location.path):
            if live:
                continue
            for table, files in files_by_table(record).items():
                adopted = self._commit_files(table, files)
                if adopted:
                    log.info("store writer: committed %d files a dead writer left in %s", adopted, table)
            path.unlink(missing_ok=True)
        sweep_stale_temp_files(self.location.path)

    def _bound(self, table: str, pending: _Pending) -> None:
        """Keep at most ``MAX_RETRY_ROWS`` waiting rows of ``table``: drop the oldest parts."""
        while pending.parts and pending.rows() > MAX_RETRY_ROWS:
            _, arrow, _ = pending.parts.pop(0)
            log.error("store writer: dropping %d unwritten %s rows", arrow.num_rows, table)

    def _compact_locked(self, now_s: float) -> CompactionStats:
        self._last_compact_s = now_s
        self._adopt_stale_manifests()
        own = self._replicas or {self.identity.replica: self.identity}
        for replica in own:
            for store_table in self._tables.values():  # one snapshot update each; [] if missing
                compaction.compact_replica(store_table, replica, now_s, self.policy, self.compaction_stats)
        for table in rollups.SOURCE_OF:
            compaction.compact_days(self._tables[table], set(own), now_s, self.policy, self.compaction_stats)
        for store_table in self._tables.values():
            days = self._retention_of(store_table.name)
            if days is not None:
                try:
                    compaction.apply_retention(store_table, days, now_s)
                except Exception as exc:  # another writer's retention commit won the race
                    log.info("store retention on %s: %s", store_table.uri, exc)
        if time.time() - self._last_vacuum_s >= self.policy.vacuum_interval_s:
            self._vacuum_locked()
        return self.compaction_stats

    def _retention_of(self, table: str) -> float | None:
        """Days of ``table`` to keep (None: all); raw tables with a rollup keep the shorter of
        ``raw_retention_days`` and ``retention_days``."""
        if table in rollups.ROLLUP_OF and self.raw_retention_days is not None:
            if self.retention_days is None:
                return self.raw_retention_days
            return min(self.raw_retention_days, self.retention_days)
        return self.retention_days

    def _vacuum_locked(self) -> int:
        self._last_vacuum_s = time.time()
        deleted = sum(compaction.vacuum(t, self.policy.delete_grace_s) for t in self._tables.values())
        self.compaction_stats.files_deleted += deleted
        return deleted

    def _replica_file(self, replica: str) -> Path:
        name = urllib.parse.quote(replica, safe="")
        return self.location.path / "replicas" / f"{name}.json"

    def _write_replica_files(self, replicas: dict[str, Identity]) -> None:
        """``replicas/<id>.json``: identity and first/last flush of each replica (local stores)."""
        now_s = time.time()
        for replica, ident in replicas.items():
            first_s = self._first_seen_s.setdefault(replica, now_s)
            record = asdict(ident) | {"first_seen": _iso(first_s), "last_seen": _iso(now_s)}
            record |= {"first_seen_s": first_s, "last_seen_s": now_s}
            path = self._replica_file(replica)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            tmp.replace(path)

    def _read_first_seen(self, replica: str) -> dict[str, float]:
        if not self.location.is_local:
            return {}
        try:
            return {replica: float(json.loads(self._replica_file(replica).read_text())["first_seen_s"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}


def _iso(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="seconds")
