"""Background compaction, deletion of replaced segments, temp-file cleanup and retention.

Runs in the writer's thread, only on that writer's own partition folders (one writer per
replica), except retention, which removes whole old ``date=`` partitions of every replica.
See ``segments`` for the naming rule that keeps concurrent readers exact.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from enginescope.store.rollups import SOURCE_OF, resum
from enginescope.store.segments import (
    TMP_PREFIX,
    Segment,
    list_segments,
    segment_name,
    split_visible,
)

log = logging.getLogger(__name__)

HOUR_S = 3600
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    chunk_segments: int = 60  # merge this many fresh segments of an open hour into one file
    close_grace_s: float = 120.0  # an hour is closed (merged into one file) this long after it ends
    delete_grace_s: float = 60.0  # keep replaced files this long for queries that listed them
    tmp_max_age_s: float = 600.0  # a temp file older than this is debris of a killed writer


@dataclass(slots=True)
class CompactionStats:
    files_merged: int = 0
    files_written: int = 0
    files_deleted: int = 0


def write_atomic(table: pa.Table, folder: Path, name: str) -> Path:
    """Write ``table`` as ``folder/name`` via a temp name + rename, so readers never see half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{TMP_PREFIX}{name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / name)
    return folder / name


def _merge(folder: Path, sources: list[Segment]) -> pa.Table:
    tables = [pq.read_table(folder / seg.name) for seg in sources]
    merged = pa.concat_tables(tables, promote_options="permissive")
    table = folder.parent.parent.name
    if table in SOURCE_OF:
        return resum(table, merged)
    if merged.num_rows and "ts" in merged.column_names:
        merged = merged.take(pc.sort_indices(merged, [("ts", "ascending")]))
    return merged


def compact_partition(
    folder: Path, now_s: float, policy: CompactionPolicy, stats: CompactionStats | None = None
) -> CompactionStats:
    """Merge closed hours into one file and open hours' fresh segments into chunks; then delete
    files that were already hidden when the pass started, once their replacement is older than
    the grace period (so a file is removed one pass after it was replaced, at the earliest)."""
    stats = stats or CompactionStats()
    date_start_s = _folder_date_start_s(folder)
    visible, hidden = split_visible(list_segments(folder))
    day_closed = now_s >= date_start_s + DAY_S + policy.close_grace_s
    if day_closed and folder.parent.parent.name in SOURCE_OF:
        # A closed day's minute rollup (small) becomes one file: a day's query opens one file
        # per replica instead of 24.
        if len(visible) > 1:
            _publish_merge(folder, visible, stats)
        _delete_replaced(folder, hidden, policy, stats)
        return stats
    by_hour: dict[tuple[int, int], list[Segment]] = {}
    for seg in visible:
        by_hour.setdefault((seg.hour, seg.last_hour), []).append(seg)
    for (_, last_hour), segs in by_hour.items():
        hour_end_s = date_start_s + (last_hour + 1) * HOUR_S
        closed = now_s >= hour_end_s + policy.close_grace_s
        fresh = [s for s in segs if s.lo == s.hi]
        if closed and len(segs) > 1:
            _publish_merge(folder, segs, stats)
        elif not closed and len(fresh) >= policy.chunk_segments:
            _publish_merge(folder, fresh, stats)
    _delete_replaced(folder, hidden, policy, stats)
    return stats


def _publish_merge(folder: Path, sources: list[Segment], stats: CompactionStats) -> None:
    lo, hi = min(s.lo for s in sources), max(s.hi for s in sources)
    first, last = min(s.hour for s in sources), max(s.last_hour for s in sources)
    write_atomic(_merge(folder, sources), folder, segment_name(first, lo, hi, last))
    stats.files_merged += len(sources)
    stats.files_written += 1


def _delete_replaced(
    folder: Path,
    hidden: list[tuple[Segment, Segment]],
    policy: CompactionPolicy,
    stats: CompactionStats,
) -> None:
    # Wall clock against file mtimes (not the caller's now_s): the grace protects real readers.
    now_s = time.time()
    for seg, cover in hidden:
        try:
            published_s = (folder / cover.name).stat().st_mtime
        except FileNotFoundError:
            continue
        if now_s - published_s >= policy.delete_grace_s:
            _unlink(folder / seg.name, stats)


def clean_temp_files(folder: Path, max_age_s: float, now_s: float | None = None) -> int:
    """Remove ``.tmp-*`` debris older than ``max_age_s`` (0: all of them, e.g. at writer start)."""
    now_s = time.time() if now_s is None else now_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(TMP_PREFIX):
            try:
                if now_s - entry.stat().st_mtime >= max_age_s:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


def apply_retention(store_dir: Path, tables: tuple[str, ...], retention_days: float, now_s: float) -> int:
    """Delete whole ``date=`` partitions (all replicas) older than ``retention_days``."""
    cutoff = (datetime.fromtimestamp(now_s, UTC) - timedelta(days=retention_days)).date()
    removed = 0
    for table in tables:
        try:
            dates = [e for e in os.scandir(store_dir / table) if e.is_dir() and e.name.startswith("date=")]
        except FileNotFoundError:
            continue
        for entry in dates:
            try:
                day = datetime.strptime(entry.name[5:], "%Y-%m-%d").date()
            except ValueError:
                log.warning("store: ignoring unexpected partition folder %s", entry.path)
                continue
            if day < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)  # another writer may remove it too
                removed += 1
    return removed


def _folder_date_start_s(folder: Path) -> float:
    day = datetime.strptime(folder.parent.name.removeprefix("date="), "%Y-%m-%d").replace(tzinfo=UTC)
    return day.timestamp()


def _unlink(path: Path, stats: CompactionStats) -> None:
    try:
        path.unlink()
        stats.files_deleted += 1
    except FileNotFoundError:
        pass
