"""Segment file naming and the visibility rule shared by the writer, compactor and reader.

A partition folder ``<store>/<table>/date=YYYY-MM-DD/replica=<id>/`` holds segments named
``h<HH>_<lo>_<hi>.parquet``: HH is the UTC hour of every row in the file; lo..hi is the range
of writer sequence numbers the file covers (a freshly flushed segment has lo == hi; a
compacted file covers the range of the segments it merged). A file merged from several hours
(the minute rollups of a closed day) is ``h<HH>-<KK>_<lo>_<hi>.parquet``: its rows lie in
hours HH..KK. Sequence numbers only grow per replica, and compaction merges *every* segment
of its hours inside its range, so:

    a file is hidden when another file's hours and sequence range both contain its own.

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

from enginescope.store.rollups import SOURCE_OF

SEGMENT_RE = re.compile(r"^h(\d{2})(?:-(\d{2}))?_(\d{16})_(\d{16})\.parquet$")
TMP_PREFIX = ".tmp-"
HOUR_S = 3600
DAY_S = 86400
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    hour: int  # first (or only) UTC hour of the rows
    lo: int
    hi: int
    name: str
    last_hour: int  # == hour except for a file merged from several hours

    @property
    def hours(self) -> range:
        return range(self.hour, self.last_hour + 1)

    @property
    def multi_hour(self) -> bool:
        return self.last_hour != self.hour

    def covers(self, other: Segment) -> bool:
        return (
            self.hour <= other.hour
            and other.last_hour <= self.last_hour
            and self.lo <= other.lo
            and other.hi <= self.hi
            and self != other
        )


def segment_name(hour: int, lo: int, hi: int, last_hour: int | None = None) -> str:
    hours = f"{hour:02d}" if last_hour is None or last_hour == hour else f"{hour:02d}-{last_hour:02d}"
    return f"h{hours}_{lo:016d}_{hi:016d}.parquet"


def parse_segment(name: str) -> Segment | None:
    match = SEGMENT_RE.match(name)
    if not match:
        return None
    hour = int(match[1])
    last_hour = hour if match[2] is None else int(match[2])
    if last_hour < hour or last_hour > 23:
        return None
    return Segment(hour, int(match[3]), int(match[4]), name, last_hour)


def list_segments(folder: Path) -> list[Segment]:
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(seg for name in names if (seg := parse_segment(name)) is not None)


def split_visible(segments: list[Segment]) -> tuple[list[Segment], list[tuple[Segment, Segment]]]:
    """(visible, [(hidden, covering file)]) for one partition folder."""
    hidden: list[tuple[Segment, Segment]] = []
    # Multi-hour files are few (one per merged day): check every file against them first, then
    # single-hour files only against their own hour's.
    spans = _keep_uncovered([s for s in segments if s.multi_hour], hidden)
    by_hour: dict[int, list[Segment]] = {}
    for seg in segments:
        if seg.multi_hour:
            continue
        cover = next((k for k in spans if k.covers(seg)), None)
        if cover is None:
            by_hour.setdefault(seg.hour, []).append(seg)
        else:
            hidden.append((seg, cover))
    visible = spans + [seg for group in by_hour.values() for seg in _keep_uncovered(group, hidden)]
    return sorted(visible), hidden


def _keep_uncovered(group: list[Segment], hidden: list[tuple[Segment, Segment]]) -> list[Segment]:
    # Widest first: a file is hidden iff an earlier (wider) file covers it.
    kept: list[Segment] = []
    for seg in sorted(group, key=lambda s: (s.lo, -s.hi, s.hour, -s.last_hour)):
        cover = next((k for k in kept if k.covers(seg)), None)
        if cover is None:
            kept.append(seg)
        else:
            hidden.append((seg, cover))
    return kept


def partition_folders(
    store_dir: Path, table: str, t0_s: float | None = None, t1_s: float | None = None
) -> list[Path]:
    """Every ``date=*/replica=*`` folder of ``table``, oldest date first; with bounds, only the
    dates that can hold a row in ``[t0_s, t1_s]`` (an unparsable date folder is kept)."""
    table_dir = store_dir / table
    folders: list[Path] = []
    for date_dir in _subdirs(table_dir, "date="):
        day_s = _date_start_s(date_dir.name)
        if day_s is not None and not _overlaps(day_s, DAY_S, t0_s, t1_s):
            continue
        folders.extend(_subdirs(date_dir, "replica="))
    return folders


def visible_files(
    store_dir: Path, table: str, t0_s: float | None = None, t1_s: float | None = None
) -> list[str]:
    """Absolute paths of the files a reader should scan now for ``table``.

    With ``t0_s``/``t1_s`` (epoch seconds, either may be None = unbounded) only files whose
    hours can hold a row with ``t0_s <= ts <= t1_s`` are listed. A covering file spans every
    hour of the files it covers, so leaving files out never un-hides one."""
    return [
        os.path.join(folder, seg.name)
        for folder, segments in _visible_by_folder(store_dir, table, t0_s, t1_s)
        for seg in segments
    ]


def rollup_covers(store_dir: Path, rollup: str, t0_s: float | None, t1_s: float | None) -> bool:
    """True when every (date, replica, hour) holding a file of the rollup's source table in the
    window also holds a file of ``rollup`` (a store written before the rollup existed does not)."""

    def hours(table: str) -> set[tuple[str, str, int]]:
        return {
            (folder.parent.name, folder.name, hour)
            for folder, segments in _visible_by_folder(store_dir, table, t0_s, t1_s)
            for seg in segments
            for hour in seg.hours
        }

    return hours(SOURCE_OF[rollup]) <= hours(rollup)


def hour_span(store_dir: Path, table: str) -> tuple[float, float] | None:
    """Start of the oldest and of the newest UTC hour holding a visible file of ``table``
    (listing only: the oldest and newest rows lie in those hours' files)."""
    starts: list[float] = []
    dates = [d for d in _subdirs(store_dir / table, "date=") if _date_start_s(d.name) is not None]
    for ordered in (dates, dates[::-1]):
        for date_dir in ordered:
            day_s = _date_start_s(date_dir.name)
            segs = [s for r in _subdirs(date_dir, "replica=") for s in split_visible(list_segments(r))[0]]
            if segs and day_s is not None:
                hour = min(s.hour for s in segs) if ordered is dates else max(s.last_hour for s in segs)
                starts.append(day_s + hour * HOUR_S)
                break
    return (starts[0], starts[1]) if len(starts) == 2 else None


def _visible_by_folder(
    store_dir: Path, table: str, t0_s: float | None, t1_s: float | None
) -> list[tuple[Path, list[Segment]]]:
    out = []
    bounded = t0_s is not None or t1_s is not None
    for folder in partition_folders(store_dir, table, t0_s, t1_s):
        day_s = _date_start_s(folder.parent.name)
        segments = list_segments(folder)
        if bounded and day_s is not None:
            segments = [
                s for s in segments if _overlaps(day_s + s.hour * HOUR_S, len(s.hours) * HOUR_S, t0_s, t1_s)
            ]
        out.append((folder, split_visible(segments)[0]))
    return out


def _overlaps(start_s: float, length_s: float, t0_s: float | None, t1_s: float | None) -> bool:
    """Does ``[start_s, start_s + length_s)`` meet the closed window ``[t0_s, t1_s]``?"""
    return (t1_s is None or start_s <= t1_s) and (t0_s is None or start_s + length_s > t0_s)


def _date_start_s(dirname: str) -> float | None:
    try:
        day = datetime.strptime(dirname.removeprefix("date="), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day.timestamp()


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
