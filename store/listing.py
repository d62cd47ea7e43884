"""What a reader scans: data files of each table's latest Delta snapshot, pruned by time.

A file is listed for ``[t0_s, t1_s]`` when its ``date`` partition and the UTC hours of its ``ts``
min/max statistics overlap the window (whole hours, the contract of the ``_in`` macros: a window
``[h, h]`` lists every file holding rows of hour ``h``); files without statistics always are. Everything here reads
the Delta log only, never a data file.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from enginescope.store.delta import DataFile, StoreTable
from enginescope.store.location import StoreLocation
from enginescope.store.pending import pending_files
from enginescope.store.rollups import SOURCE_OF

HOUR_S = 3600
DAY_S = 86400
_US = 1_000_000


class StoreListing:
    """One reader's view of a store's tables (snapshots refreshed on every call)."""

    def __init__(self, location: StoreLocation, tables: tuple[str, ...]) -> None:
        self.location = location
        self.tables = {t: StoreTable(location, t) for t in tables}
        # Answers derived from file lists (a page asks the same question several times per
        # render), valid while those lists are the same objects: StoreTable keeps one list per
        # snapshot version, and pending files make a new list.
        self._memo: dict[tuple, tuple[tuple[list[DataFile], ...], Any]] = {}

    def files(self, table: str, t0_s: float | None = None, t1_s: float | None = None) -> list[str]:
        store_table = self.tables[table]
        return [store_table.file_uri(f) for f in self.data_files(table, t0_s, t1_s)]

    def data_files(self, table: str, t0_s: float | None = None, t1_s: float | None = None) -> list[DataFile]:
        return [f for f in self.all_files(table) if overlaps(f, t0_s, t1_s)]

    def all_files(self, table: str) -> list[DataFile]:
        """The snapshot's files, plus (local stores) the live writers' pending ones, by path."""
        files = self.tables[table].files()
        if not self.location.is_local:
            return files
        extra = pending_files(self.location.path, table)
        if not extra:
            return files
        seen = {f.path for f in files}
        return files + [f for f in extra if f.path not in seen and not seen.add(f.path)]

    def final_and_open(
        self, table: str, t0_s: float | None = None, t1_s: float | None = None
    ) -> tuple[list[DataFile], list[DataFile]]:
        """The window's files of a rollup table split in two: ``final`` files share no (replica,
        instant) with any other file, so their rows (one per minute and series within a file,
        as every rollup file is written) are already the finished minutes; ``open`` files need
        the finishing GROUP BY. A file of several replicas meets every replica's files."""
        everything = self.all_files(table)

        def split() -> tuple[list[DataFile], list[DataFile]]:
            files = [f for f in everything if overlaps(f, t0_s, t1_s)]
            shared = _sharing_files(files)
            return (
                [f for i, f in enumerate(files) if i not in shared],
                [f for i, f in enumerate(files) if i in shared],
            )

        return self._remember(("split", table, t0_s, t1_s), (everything,), split)

    def _remember(self, key: tuple, sources: tuple[list[DataFile], ...], compute: Callable[[], Any]) -> Any:
        """``compute()``, or its remembered answer while ``sources`` are the same list objects."""
        hit = self._memo.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], sources, strict=True)):
            return hit[1]
        if len(self._memo) >= 64:  # live mode moves the window every refresh
            self._memo.clear()
        answer = compute()
        self._memo[key] = (sources, answer)
        return answer

    def hour_span(self, table: str) -> tuple[float, float] | None:
        """Start of the oldest and of the newest UTC hour holding a row of ``table``."""
        files = [f for f in self.all_files(table) if f.min_ts_us is not None and f.num_records]
        if not files:
            return None
        lo = min(f.min_ts_us for f in files if f.min_ts_us is not None) // _US
        hi = max(f.max_ts_us for f in files if f.max_ts_us is not None) // _US
        return float(lo - lo % HOUR_S), float(hi - hi % HOUR_S)

    def rollup_covers(self, rollup: str, t0_s: float | None, t1_s: float | None) -> bool:
        """True when every (replica, UTC hour) with rows of the rollup's source table in the
        window also has rollup rows (a store written before the rollup existed has none)."""

        rollup_files, source_files = self.all_files(rollup), self.all_files(SOURCE_OF[rollup])

        def hours(files: list[DataFile]) -> set[tuple[str | None, int]]:
            return {key for f in files if overlaps(f, t0_s, t1_s) for key in _replica_hours(f, t0_s, t1_s)}

        def covered() -> bool:
            have = hours(rollup_files)
            any_replica = {hour for replica, hour in have if replica is None}
            return all(key in have or key[1] in any_replica for key in hours(source_files))

        return self._remember(("covers", rollup, t0_s, t1_s), (rollup_files, source_files), covered)


def overlaps(f: DataFile, t0_s: float | None, t1_s: float | None) -> bool:
    day_s = _date_start_s(f.date)
    if day_s is not None and not _meets(day_s, day_s + DAY_S, t0_s, t1_s):
        return False
    if f.min_ts_us is None or f.max_ts_us is None:
        return True
    first_s = f.min_ts_us // _US // HOUR_S * HOUR_S
    end_s = ((f.max_ts_us - 1) // _US // HOUR_S + 1) * HOUR_S  # max is rounded up to the ms
    return _meets(first_s, max(end_s, first_s + HOUR_S), t0_s, t1_s)


def _sharing_files(files: list[DataFile]) -> set[int]:
    """Indexes of files whose [min_ts, max_ts] meets another file's of the same replica (a file
    of several replicas counts for all); files without statistics always count."""
    shared = {i for i, f in enumerate(files) if f.min_ts_us is None or f.max_ts_us is None}
    fleet = [i for i, f in enumerate(files) if i not in shared and f.replica is None]
    by_replica: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        if i not in shared and f.replica is not None:
            by_replica.setdefault(f.replica, []).append(i)
    for group in [*by_replica.values(), []]:  # [] + fleet: fleet files meeting each other
        shared |= _clustered(files, group + fleet)
    return shared


def _clustered(files: list[DataFile], indexes: list[int]) -> set[int]:
    """Members of every run of two or more time ranges that meet (a sweep over start times)."""
    out: set[int] = set()
    run: list[int] = []
    run_end = -1
    for i in sorted(indexes, key=lambda i: files[i].min_ts_us or 0):
        f = files[i]
        if run and (f.min_ts_us or 0) <= run_end:
            run.append(i)
        else:
            if len(run) > 1:
                out.update(run)
            run = [i]
            run_end = -1
        run_end = max(run_end, f.max_ts_us or 0)
    if len(run) > 1:
        out.update(run)
    return out


def _meets(start_s: float, end_s: float, t0_s: float | None, t1_s: float | None) -> bool:
    """Does ``[start_s, end_s)`` meet the closed window ``[t0_s, t1_s]``?"""
    return (t1_s is None or start_s <= t1_s) and (t0_s is None or end_s > t0_s)


def _replica_hours(f: DataFile, t0_s: float | None, t1_s: float | None) -> list[tuple[str | None, int]]:
    if f.min_ts_us is None or f.max_ts_us is None or not f.num_records:
        return []
    first = f.min_ts_us // _US // HOUR_S
    last = (f.max_ts_us - 1) // _US // HOUR_S  # max is rounded up to the millisecond
    if t0_s is not None:
        first = max(first, int(t0_s // HOUR_S))
    if t1_s is not None:
        last = min(last, int(t1_s // HOUR_S))
    return [(f.replica, hour) for hour in range(first, max(first, last) + 1)]


@lru_cache(maxsize=4096)
def _date_start_s(date: str) -> float | None:
    from datetime import UTC, datetime

    try:
        return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
