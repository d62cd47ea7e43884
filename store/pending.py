"""Freshness buffer of a local store: data files written but not committed yet.

A sidecar commits to the Delta log every ``commit_interval_s`` (30 s: the log's commit rate and
the sidecar's CPU stay low), but flushes every ``flush_interval_s`` (2 s). Each flush's files are
written into the table's partition folder exactly as a commit would add them, and listed in the
writer's manifest ``<store>/_pending/<writer id>.json`` (temp file + rename). enginescope's views
read the snapshot's files plus every live manifest's files, as a set of paths, so a file being
committed right now is counted once whether the reader sees it in the log, the manifest or both.
Other engines read only the log: they lag by at most ``commit_interval_s``.

A manifest not rewritten for ``STALE_S`` belongs to a dead writer: readers ignore it, and the
next writer of any replica commits its files (adding a path already in the table is a no-op for
Delta's file set, so a race cannot duplicate rows) and deletes it.

**Deferred commits** (a store on a shared volume without atomic create, such as a Modal Volume,
where two containers writing the same ``_delta_log/<version>.json`` would silently lose one):
writers never touch the log. Each flush writes its files and one immutable manifest
``<store>/_pending/deferred/<writer id>/<seq>.json`` (a new file per flush, so no file has two
writers); one committer (the fleet watcher) commits every manifest's files and deletes the
manifest, then compacts. Readers treat deferred manifests as live until they are deleted.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path

from enginescope.store.delta import DataFile

FOLDER = "_pending"
DEFERRED = "deferred"
STALE_S = 300.0  # no rewrite for this long: the writer is gone (it rewrites at least every 30 s)


@dataclass(frozen=True, slots=True)
class PendingFile:
    table: str
    file: DataFile

    def entry(self) -> dict:
        """The manifest's JSON object for this file (``asdict`` was a fifth of the sidecar's
        store CPU: the manifest is rewritten every flush)."""
        return {"table": self.table, **{name: getattr(self.file, name) for name in _FILE_FIELDS}}


_FILE_FIELDS = tuple(f.name for f in fields(DataFile))


def manifest_path(store: Path, writer_id: str) -> Path:
    return store / FOLDER / f"{urllib.parse.quote(writer_id, safe='')}.json"


def write_manifest(store: Path, writer_id: str, replica: str, entries: list[dict]) -> None:
    """Replace the writer's manifest (or remove it when nothing is pending); ``entries`` are
    :meth:`PendingFile.entry` objects."""
    path = manifest_path(store, writer_id)
    if not entries:
        path.unlink(missing_ok=True)
        return
    _write_record(path, replica, entries)


def _write_record(path: Path, replica: str, entries: list[dict]) -> None:
    """The manifest at ``path``, whole or not at all (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "replica": replica,
        "written_s": time.time(),
        "files": entries,
    }
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def read_manifests(store: Path, now_s: float | None = None) -> list[tuple[Path, dict, bool]]:
    """(path, record, live) of every manifest; live = rewritten within ``STALE_S``."""
    now_s = time.time() if now_s is None else now_s
    folder = store / FOLDER
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = folder / name
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # vanished (its writer committed) or replaced mid-read
        out.append((path, record, now_s - float(record.get("written_s", 0)) < STALE_S))
    return out


def sweep_stale_temp_files(store: Path, now_s: float | None = None) -> int:
    """Remove temp manifests older than ``STALE_S``: a writer killed between writing its temp
    file and the rename leaves one that nothing would ever rename. Returns how many went."""
    now_s = time.time() if now_s is None else now_s
    removed = 0
    for path in (store / FOLDER).rglob(".tmp-*.json"):  # deferred writers' folders too
        try:
            if now_s - path.stat().st_mtime >= STALE_S:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
    return removed


def write_deferred_manifest(
    store: Path, writer_id: str, seq: int, replica: str, files: list[PendingFile]
) -> Path:
    """One flush's files for the committer: a new, never rewritten file (temp file + rename)."""
    path = store / FOLDER / DEFERRED / urllib.parse.quote(writer_id, safe="") / f"{seq:012d}.json"
    _write_record(path, replica, [f.entry() for f in files])
    return path


def read_deferred_manifests(store: Path) -> list[tuple[Path, dict]]:
    """(path, record) of every deferred manifest, oldest first per writer."""
    root = store / FOLDER / DEFERRED
    try:
        writers = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    out = []
    for writer in writers:
        try:
            names = sorted(
                n for n in os.listdir(root / writer) if n.endswith(".json") and not n.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            path = root / writer / name
            try:
                out.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue  # committed and deleted while listing
    return out


def files_by_table(record: dict) -> dict[str, list[DataFile]]:
    """A manifest's files grouped by table."""
    out: dict[str, list[DataFile]] = {}
    for entry in record.get("files", []):
        out.setdefault(entry["table"], []).append(
            DataFile(**{k: v for k, v in entry.items() if k != "table"})
        )
    return out


def pending_files(store: Path, table: str) -> list[DataFile]:
    """Files of live manifests (and of every deferred manifest) for ``table``."""
    records = [record for _, record, live in read_manifests(store) if live]
    records += [record for _, record in read_deferred_manifests(store)]
    return [f for record in records for f in files_by_table(record).get(table, [])]
