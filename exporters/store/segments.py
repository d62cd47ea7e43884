"""Segment file naming and the visibility rule shared by the writer, compactor and reader.

A partition folder ``<store>/<table>/date=YYYY-MM-DD/replica=<id>/`` holds segments named
``h<HH>_<lo>_<hi>.parquet``: HH is the UTC hour of every row in the file; lo..hi is the range
of writer sequence numbers the file covers (a freshly flushed segment has lo == hi; a
compacted file covers the range of the segments it merged). Sequence numbers only grow per
replica, and compaction merges *every* segment of an hour inside its range, so:

    a file is hidden when another file of the same hour covers a range containing its own.

Compaction publishes the merged file first (atomic rename), which hides its sources at once
for every new listing, and deletes the sources only after a grace period, so a query that
listed the old set keeps reading it. A reader therefore never counts a row twice and never
loses one; only a query slower than the grace period can see a vanished file (retry once).
In-flight files are ``.tmp-*`` names that never match.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SEGMENT_RE = re.compile(r"^h(\d{2})_(\d{16})_(\d{16})\.parquet$")
TMP_PREFIX = ".tmp-"
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    hour: int
    lo: int
    hi: int
    name: str

    def covers(self, other: Segment) -> bool:
        return self.hour == other.hour and self.lo <= other.lo and other.hi <= self.hi and self != other


def segment_name(hour: int, lo: int, hi: int) -> str:
    return f"h{hour:02d}_{lo:016d}_{hi:016d}.parquet"


def parse_segment(name: str) -> Segment | None:
    match = SEGMENT_RE.match(name)
    if not match:
        return None
    return Segment(int(match[1]), int(match[2]), int(match[3]), name)


def list_segments(folder: Path) -> list[Segment]:
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(seg for name in names if (seg := parse_segment(name)) is not None)


def split_visible(segments: list[Segment]) -> tuple[list[Segment], list[tuple[Segment, Segment]]]:
    """(visible, [(hidden, covering file)]) for one partition folder."""
    by_hour: dict[int, list[Segment]] = {}
    for seg in segments:
        by_hour.setdefault(seg.hour, []).append(seg)
    visible: list[Segment] = []
    hidden: list[tuple[Segment, Segment]] = []
    for group in by_hour.values():
        # Widest ranges first: a file is hidden iff an earlier (wider) file covers it.
        group.sort(key=lambda s: (s.lo, -s.hi))
        kept: list[Segment] = []
        for seg in group:
            cover = next((k for k in kept if k.covers(seg)), None)
            if cover is None:
                kept.append(seg)
            else:
                hidden.append((seg, cover))
        visible.extend(kept)
    return sorted(visible), hidden


def partition_folders(store_dir: Path, table: str) -> list[Path]:
    """Every ``date=*/replica=*`` folder of ``table``, oldest date first."""
    table_dir = store_dir / table
    folders: list[Path] = []
    for date_dir in _subdirs(table_dir, "date="):
        folders.extend(_subdirs(date_dir, "replica="))
    return folders


def visible_files(store_dir: Path, table: str) -> list[str]:
    """Absolute paths of the files a reader should scan now for ``table``."""
    paths: list[str] = []
    for folder in partition_folders(store_dir, table):
        visible, _ = split_visible(list_segments(folder))
        paths.extend(str(folder / seg.name) for seg in visible)
    return paths


def _subdirs(folder: Path, prefix: str) -> list[Path]:
    try:
        entries = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name.startswith(prefix))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in entries]


def replica_dirname(replica: str) -> str:
    """``replica=<id>`` percent-encoded: DuckDB's hive reader decodes it back to the exact id."""
    return "replica=" + urllib.parse.quote(replica, safe=_SAFE)


def date_dirname(ts_s: float) -> str:
    return "date=" + datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%d")


def partition_dir(store_dir: Path, table: str, date_key: str, replica: str) -> Path:
    return store_dir / table / f"date={date_key}" / replica_dirname(replica)
