"""Compaction, retention and vacuum of the store's Delta tables, each a Delta transaction.

A writer compacts only the files that hold nothing but its own replica's rows (their
``replica`` stats say so), so writers of different replicas never rewrite the same file and
never conflict; appends of other writers into the same ``date`` partition do not conflict with
a rewrite either (it reads no predicate, it only removes the files it names). Per replica:

- an hour's flush files are merged into chunks of ``chunk_segments`` while the hour is open and
  into one file (sorted by ``ts``) once it closed (``close_grace_s`` after its end);
- the minute rollups re-sum their per-flush partials when they are merged, so a closed hour
  holds one row per (minute, replica, series), and a closed day becomes one file per replica;
- ``fleet_merge_after_s`` after a day closed, the writer of the day's first replica (by name;
  any writer one day later) merges the whole day of a rollup table, every replica, into one
  file sorted by (ts, replica), in row groups of ``ROW_GROUP_ROWS``: a 30-day, 200-replica
  rollup is 30 files, and a day's query opens one (``compact_days``).

Replaced files stay on disk for readers that listed them until ``vacuum`` removes them, at the
earliest ``delete_grace_s`` after the commit that removed them (delta-rs counts whole hours).
Vacuum also deletes data files no commit ever added (debris of a killed writer) older than that.
Retention is a metadata-only ``DELETE`` of whole old ``date`` partitions, then vacuum.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from enginescope.store.delta import ConflictError, DataFile, StoreTable
from enginescope.store.rollups import SOURCE_OF, resum

log = logging.getLogger(__name__)

HOUR_S = 3600
DAY_S = 86400
_US = 1_000_000
# Rows per Parquet row group of a compaction output: sorted by ts, a group's ts statistics let a
# reader skip the rest of a day file (an hour of 200 replicas' minute rollup is 12,000 rows).
ROW_GROUP_ROWS = 16_384


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    chunk_segments: int = 60  # merge this many flush files of an open hour into one file
    close_grace_s: float = 120.0  # an hour is closed (merged into one file) this long after it ends
    delete_grace_s: float = 3600.0  # vacuum keeps replaced (and never-committed) files this long
    vacuum_interval_s: float = 3600.0  # how often a writer vacuums (lists the whole table)
    # A rollup day of all replicas becomes one file this long after the day closed (None: never).
    fleet_merge_after_s: float | None = 3600.0
    fleet_merge_max_bytes: int = 256 << 20  # larger days stay per replica (memory of the merge)


@dataclass(slots=True)
class CompactionStats:
    files_merged: int = 0
    files_written: int = 0
    files_deleted: int = 0
    conflicts: int = 0


def compact_replica(
    table: StoreTable, replica: str, now_s: float, policy: CompactionPolicy, stats: CompactionStats
) -> CompactionStats:
    """One compaction pass over ``replica``'s own files of ``table``."""
    own = [f for f in table.files() if f.replica == replica and f.min_ts_us is not None]
    by_date: dict[str, list[DataFile]] = {}
    for f in own:
        by_date.setdefault(f.date, []).append(f)
    rollup = table.name in SOURCE_OF
    for date, files in sorted(by_date.items()):
        day_start_s = _date_start_s(date)
        if rollup and _fleet_due(day_start_s, now_s, policy):
            continue  # the whole day is merged across replicas (compact_days)
        if rollup and now_s >= day_start_s + DAY_S + policy.close_grace_s:
            if len(files) > 1:  # a closed day's rollup: one file per replica per day
                _merge(table, files, stats)
            continue
        for hour_start_s, hour_files in sorted(_by_hour(files).items()):
            closed = now_s >= hour_start_s + HOUR_S + policy.close_grace_s
            fresh = [f for f in hour_files if f.fresh]
            if closed and len(hour_files) > 1:
                _merge(table, hour_files, stats)
            elif not closed and len(fresh) >= policy.chunk_segments:
                _merge(table, fresh, stats)
    return stats


def compact_days(
    table: StoreTable, own: set[str], now_s: float, policy: CompactionPolicy, stats: CompactionStats
) -> CompactionStats:
    """Merge each due day of a rollup table (all replicas) into one file. The writer that owns
    the day's first replica does it (so 200 sidecars do not race for it); any writer does once
    the day is one more day overdue (that replica's writer may be gone)."""
    if table.name not in SOURCE_OF or policy.fleet_merge_after_s is None:
        return stats
    by_date: dict[str, list[DataFile]] = {}
    for f in table.files():
        if f.min_ts_us is not None:
            by_date.setdefault(f.date, []).append(f)
    for date, files in sorted(by_date.items()):
        day_start_s = _date_start_s(date)
        if len(files) < 2 or not _fleet_due(day_start_s, now_s, policy):
            continue
        if sum(f.size_bytes for f in files) > policy.fleet_merge_max_bytes:
            continue
        first = min((f.min_replica for f in files if f.min_replica is not None), default=None)
        if first not in own and not _fleet_due(day_start_s + DAY_S, now_s, policy):
            continue
        _merge(table, files, stats)
    return stats


def _fleet_due(day_start_s: float, now_s: float, policy: CompactionPolicy) -> bool:
    after = policy.fleet_merge_after_s
    return after is not None and now_s >= day_start_s + DAY_S + policy.close_grace_s + after


def _by_hour(files: list[DataFile]) -> dict[int, list[DataFile]]:
    """Files whose rows lie in one UTC hour, by that hour's start (epoch s); others are left out."""
    groups: dict[int, list[DataFile]] = {}
    for f in files:
        assert f.min_ts_us is not None and f.max_ts_us is not None
        first, last = f.min_ts_us // (_US * HOUR_S), (f.max_ts_us - 1) // (_US * HOUR_S)
        if last <= first:  # max is rounded up to the millisecond: an exact hour end is still inside
            groups.setdefault(first * HOUR_S, []).append(f)
    return groups


def _merge(table: StoreTable, files: list[DataFile], stats: CompactionStats) -> None:
    merged = table.read_files(files)
    if table.name in SOURCE_OF:
        merged = resum(table.name, merged)
    elif merged.num_rows and "ts" in merged.column_names:
        merged = merged.take(pc.sort_indices(merged, [("ts", "ascending")]))
    add = table.write_file(merged, files[0].date, kind="c", row_group_rows=ROW_GROUP_ROWS)
    try:
        # Re-summed partials are different rows (same totals): a data change for Delta readers.
        table.rewrite(files, [add], data_change=table.name in SOURCE_OF)
    except ConflictError as exc:  # the uploaded file stays uncommitted; vacuum removes it
        stats.conflicts += 1
        log.info("store compaction skipped: %s", exc)
        return
    stats.files_merged += len(files)
    stats.files_written += 1


def apply_retention(table: StoreTable, retention_days: float, now_s: float) -> int:
    """Remove every ``date`` partition older than ``retention_days`` (one commit); files removed."""
    cutoff = (datetime.fromtimestamp(now_s, UTC) - timedelta(days=retention_days)).date()
    if not any(f.date < cutoff.isoformat() for f in table.files()):
        return 0
    dt = table.open()
    assert dt is not None
    metrics = dt.delete(f"date < '{cutoff.isoformat()}'")
    return int(metrics.get("num_removed_files", 0))


def vacuum(table: StoreTable, grace_s: float) -> int:
    """Delete replaced and never-committed data files older than ``grace_s``; files deleted."""
    dt = table.open()
    if dt is None:
        return 0
    deleted = dt.vacuum(
        retention_hours=math.ceil(grace_s / HOUR_S),
        dry_run=False,
        enforce_retention_duration=False,
        full=True,  # full: also the files no commit added (a killed writer's uploads)
    )
    return len(deleted)


def _date_start_s(date: str) -> float:
    return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def partition_date(ts_us: pa.Array) -> pa.Array:
    """UTC date of each ``ts`` as ``YYYY-MM-DD``."""
    return pc.strftime(ts_us, format="%Y-%m-%d")
