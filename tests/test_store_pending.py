"""The local freshness buffer: background flushes are visible to enginescope's views at once and
to other engines at the next commit, never twice; a killed writer's pending files are committed
by the next writer of any replica; deferred writers (a shared volume) leave commits to one committer."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.store import StoreWriter, open_store
from enginescope.store.delta import StoreTable
from enginescope.store.location import store_location
from enginescope.store.pending import FOLDER, STALE_S

T0 = time.time() - 600


def _batch(replica: str, i: int, rows: int = 10) -> Batch:
    batch = Batch(Identity(replica))
    batch.signals = [SignalRow(T0 + i + k / 100, "queue_depth", 1.0, 1.0) for k in range(rows)]
    return batch


def _committed(store: Path) -> int:
    return sum(f.num_records for f in StoreTable(store_location(store), "signals").files())


def _wait(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_background_flushes_are_visible_before_their_commit(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, Identity("rep-p"), flush_interval_s=0.05, commit_interval_s=3600)
    con = open_store(tmp_path)
    writer.write(_batch("rep-p", 0))
    _wait(lambda: con.execute("SELECT count(*) FROM signals").fetchone()[0] == 10)
    assert _committed(tmp_path) == 0  # other engines do not see it yet
    assert list((tmp_path / FOLDER).glob("*.json"))
    writer.write(_batch("rep-p", 1))
    _wait(lambda: con.execute("SELECT count(*) FROM signals").fetchone()[0] == 20)
    writer.close()  # commits: the same rows, now in the log, counted once
    assert _committed(tmp_path) == 20
    assert con.execute("SELECT count(*), count(DISTINCT ts) FROM signals").fetchone() == (20, 20)
    assert not list((tmp_path / FOLDER).glob("*.json"))


def _buffering_writer(store: str) -> None:  # pragma: no cover - child, killed
    writer = StoreWriter(store, Identity("rep-d"), flush_interval_s=0.05, commit_interval_s=3600)
    for i in range(5):
        writer.write(_batch("rep-d", i))
    while True:
        time.sleep(1)


def test_dead_writers_pending_files_are_committed_by_the_next(tmp_path: Path) -> None:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["enginescope.store"])
    proc = ctx.Process(target=_buffering_writer, args=(str(tmp_path),))
    proc.start()
    con = open_store(tmp_path)
    _wait(lambda: con.execute("SELECT count(*) FROM signals").fetchone()[0] == 50, 60)
    proc.kill()
    proc.join(10)
    assert _committed(tmp_path) == 0
    (manifest,) = (tmp_path / FOLDER).glob("*.json")
    record = json.loads(manifest.read_text())
    record["written_s"] -= STALE_S + 1  # as if the writer had been gone for STALE_S
    manifest.write_text(json.dumps(record))
    assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == 0  # stale: not read
    # Any replica's writer adopts it: on Modal a replica id never comes back (before: only rep-d's
    # next writer did, so the rows were lost to vacuum).
    StoreWriter(tmp_path, Identity("rep-other"), background=False).close()
    assert not manifest.exists() and _committed(tmp_path) == 50
    assert con.execute("SELECT count(*), count(DISTINCT ts) FROM signals").fetchone() == (50, 50)


def test_a_live_writer_adopts_a_dead_writers_files_at_its_next_compaction(tmp_path: Path) -> None:
    live = StoreWriter(tmp_path, Identity("rep-live"), background=False)
    dead = StoreWriter(tmp_path, Identity("rep-dead"), background=False, commit_interval_s=3600)
    dead.write(_batch("rep-dead", 0))
    dead._flush_locked(commit=False)  # files written and listed, not committed; then the writer dies
    (manifest,) = (tmp_path / FOLDER).glob("*.json")
    record = json.loads(manifest.read_text())
    record["written_s"] -= STALE_S + 1
    manifest.write_text(json.dumps(record))
    live.compact()
    assert not manifest.exists() and _committed(tmp_path) == 10
    live.close()


def test_a_dead_writers_half_written_temp_manifest_is_swept_once_stale(tmp_path: Path) -> None:
    """SIGKILL between writing ``.tmp-<id>.json`` and the rename leaves an empty or partial temp
    file (a CI run read one). Readers skip it; once stale, the next writer removes it."""
    import os

    folder = tmp_path / FOLDER
    folder.mkdir()
    fresh, stale = folder / ".tmp-rep-a.json", folder / ".tmp-rep-b.json"
    fresh.write_text("")
    stale.write_text('{"replica": "rep-b", "wri')  # cut mid-write
    old_s = time.time() - STALE_S - 1
    os.utime(stale, (old_s, old_s))
    assert open_store(tmp_path).execute("SELECT count(*) FROM signals").fetchone()[0] == 0
    StoreWriter(tmp_path, Identity("rep-other"), background=False).close()
    assert fresh.exists()  # its writer may still be renaming it
    assert not stale.exists()


def _deferred_writer(store: str, replica: str, batches: int) -> None:  # pragma: no cover - child
    writer = StoreWriter(store, Identity(replica), flush_interval_s=0.05, deferred_commits=True)
    for i in range(batches):
        writer.write(_batch(replica, i))
        time.sleep(0.06)
    writer.close()


def test_deferred_writers_never_touch_the_log_and_one_committer_commits_everything(tmp_path: Path) -> None:
    """A Modal Volume has no atomic create: two containers committing version N would keep one
    of them. Deferred writers only add files and immutable manifests; the committer commits."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["enginescope.store"])
    replicas = ("rep-x", "rep-y", "rep-z")
    procs = [ctx.Process(target=_deferred_writer, args=(str(tmp_path), r, 6)) for r in replicas]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert not list(tmp_path.glob("*/_delta_log"))  # no table created, no commit made by a writer
    con = open_store(tmp_path)  # enginescope's views read the manifests meanwhile
    assert con.execute("SELECT count(*), count(DISTINCT replica) FROM signals").fetchone() == (180, 3)
    committer = StoreWriter(tmp_path, Identity("fleet-watcher"), background=False)
    assert committer.commit_deferred() > 0
    assert not list((tmp_path / FOLDER).rglob("*.json"))
    assert _committed(tmp_path) == 180  # every engine that reads the log sees every row
    committer.compact()  # the committer compacts the replicas it committed for
    committer.close()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT (replica, ts)) FROM signals").fetchone() == (180, 180)
    assert _committed(tmp_path) == 180


def test_a_manifest_whose_files_are_not_visible_yet_waits_for_the_next_round(tmp_path: Path) -> None:
    """On a Volume the manifest can arrive before a file it lists: committing the rest and
    deleting the manifest would lose that file for good."""
    writer = StoreWriter(tmp_path, Identity("rep-v"), background=False, deferred_commits=True)
    writer.write(_batch("rep-v", 0))
    writer.flush()
    (manifest,) = (tmp_path / FOLDER).rglob("*.json")
    (data,) = (tmp_path / "signals").rglob("*.parquet")
    hidden = data.with_name("hidden")
    data.rename(hidden)
    committer = StoreWriter(tmp_path, Identity("fleet-c"), background=False)
    assert committer.commit_deferred() == 0 and manifest.exists()
    hidden.rename(data)
    assert committer.commit_deferred() > 0 and not manifest.exists()
    assert _committed(tmp_path) == 10
    committer.close()
