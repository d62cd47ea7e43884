"""The pre-Delta layout, kept only to recognise it and to migrate it (``store migrate``).

Old tables were ``<store>/<table>/date=YYYY-MM-DD/replica=<id>/h<HH>[-<KK>]_<lo>_<hi>.parquet``
segments; a file was hidden when another file of the same folder covered both its hours and its
sequence range (a compacted file published before its sources were deleted). ``bench`` was one
``<store>/bench/<run>.parquet`` per run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from enginescope.store.location import StoreLocation

SEGMENT_RE = re.compile(r"^h(\d{2})(?:-(\d{2}))?_(\d{16})_(\d{16})\.parquet$")
DELTA_LOG = "_delta_log"


class LegacyStoreError(RuntimeError):
    """The store folder holds the old Parquet-segment layout."""


@dataclass(frozen=True, slots=True)
class Segment:
    hour: int
    last_hour: int
    lo: int
    hi: int
    name: str

    def covers(self, other: Segment) -> bool:
        return (
            self.hour <= other.hour
            and other.last_hour <= self.last_hour
            and self.lo <= other.lo
            and other.hi <= self.hi
            and self != other
        )


def parse_segment(name: str) -> Segment | None:
    match = SEGMENT_RE.match(name)
    if not match:
        return None
    hour = int(match[1])
    last = hour if match[2] is None else int(match[2])
    if not hour <= last <= 23:
        return None
    return Segment(hour, last, int(match[3]), int(match[4]), name)


def visible_segments(folder: Path) -> list[Path]:
    """The files of one old ``date=/replica=`` folder a reader counted (covered ones left out)."""
    try:
        segments = [s for n in os.listdir(folder) if (s := parse_segment(n)) is not None]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(folder / s.name for s in segments if not any(o.covers(s) for o in segments))


def legacy_partitions(store: Path, table: str) -> list[Path]:
    """Old ``date=*/replica=*`` folders of ``table`` holding segments, oldest date first."""
    table_dir = store / table
    if (table_dir / DELTA_LOG).is_dir() or not table_dir.is_dir():
        return []
    return [
        replica_dir
        for date_dir in sorted(table_dir.glob("date=*"))
        for replica_dir in sorted(date_dir.glob("replica=*"))
        if replica_dir.is_dir() and any(parse_segment(n) for n in os.listdir(replica_dir))
    ]


def legacy_bench_runs(store: Path) -> list[Path]:
    folder = store / "bench"
    if (folder / DELTA_LOG).is_dir() or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def legacy_tables(location: StoreLocation, tables: tuple[str, ...]) -> list[str]:
    """Tables of a local store still in the old layout (object stores never had it)."""
    if not location.is_local:
        return []
    store = location.path
    found = [t for t in tables if legacy_partitions(store, t)]
    return found + (["bench"] if legacy_bench_runs(store) else [])


def refuse_legacy(location: StoreLocation) -> None:
    """Raise a clear error (not a traceback deep in a reader) for an unconverted store."""
    from enginescope.store.schema import TABLES

    old = legacy_tables(location, TABLES)
    if old:
        raise LegacyStoreError(
            f"store {location.root} holds the old Parquet-segment layout (tables: {', '.join(old)}); "
            f"convert it with: enginescope store migrate --store {location.root}"
        )
