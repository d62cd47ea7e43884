"""Several writer processes and a reader process on one store; SIGKILLed writers (>= 20 kills,
during appends and compaction) leave a table that opens with every committed row exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from pathlib import Path

import pytest

from enginescope.collectors.model import Batch, Identity, SignalRow

ROWS_PER_BATCH = 50
T_BASE = time.time() - 6 * 3600  # rows span past hours, so hours close and get compacted
WRITERS = ("rep-a", "rep-b", "rep-c")


def _ctx() -> mp.context.BaseContext:
    # forkserver: children fork from a process that imported the store once (fast starts) and
    # never ran delta-rs's runtime or DuckDB's threads (safe forks).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["enginescope.store", "tests.test_store_concurrency"])
    return ctx


def _batch(replica: str, i: int, offset_s: float = 0.0) -> Batch:
    batch = Batch(Identity(replica))
    ts = T_BASE + offset_s + i * 30.0  # 120 batches = one hour of rows
    batch.signals = [SignalRow(ts + k / 100, "queue_depth", 1.0, 1.0) for k in range(ROWS_PER_BATCH)]
    return batch


def _writer(store: str, replica: str, batches: int, flushed, done) -> None:  # pragma: no cover - child
    from enginescope.store import CompactionPolicy, StoreWriter

    policy = CompactionPolicy(chunk_segments=4, close_grace_s=0)
    writer = StoreWriter(store, Identity(replica), flush_interval_s=3600, compact_interval_s=0, policy=policy)
    for i in range(batches):
        writer.write(_batch(replica, i))
        if i % 3 == 2:
            writer.flush()
            with flushed.get_lock():
                flushed.value += 3 * ROWS_PER_BATCH  # after the commit: a lower bound
            writer.compact()
    writer.close()  # batches % 3 == 0: nothing left to count
    writer.compact()
    done.release()


def _reader(store: str, flushed, stop, results) -> None:  # pragma: no cover - child
    from enginescope.store import open_store, query

    con = open_store(store)
    seen: list[tuple[int, int, int, int]] = []
    errors: list[str] = []
    while True:
        finished = stop.is_set()
        bound = flushed.value
        try:
            # The minute rollup (its view reads final files as they are and groups the open
            # ones) first: its commit follows the raw one, so it can only be behind.
            rolled = query(con, "SELECT coalesce(sum(n), 0) FROM signals_1m").fetchone()[0]
            count, distinct = query(
                con, "SELECT count(*), count(DISTINCT (replica, ts)) FROM signals"
            ).fetchone()
            seen.append((count, distinct, bound, int(rolled)))
        except Exception as exc:  # recorded and asserted on in the parent
            errors.append(repr(exc))
        if finished:
            break
    results.put((seen, errors))


@pytest.mark.slow
def test_concurrent_writer_processes_and_a_reader(tmp_path: Path) -> None:
    from enginescope.store import open_store
    from enginescope.store.delta import StoreTable
    from enginescope.store.location import store_location

    ctx = _ctx()
    flushed, done, stop, results = ctx.Value("q", 0), ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    batches = 150
    reader = ctx.Process(target=_reader, args=(str(tmp_path), flushed, stop, results))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), r, batches, flushed, done)) for r in WRITERS]
    for proc in writers:
        proc.start()
    for _ in writers:
        assert done.acquire(timeout=240)
    stop.set()
    seen, errors = results.get(timeout=120)
    for proc in (*writers, reader):
        proc.join(60)
        assert proc.exitcode == 0
    assert errors == []
    counts = [c for c, _, _, _ in seen]
    assert counts == sorted(counts), "counts went backwards"
    assert all(count == distinct for count, distinct, _, _ in seen), "a row was read twice"
    assert all(count >= bound for count, _, bound, _ in seen), "a committed row was missing"
    total = len(WRITERS) * batches * ROWS_PER_BATCH
    assert counts[-1] == total and all(c <= total for c in counts)
    rolled = [r for _, _, _, r in seen]  # rows counted by the minute rollup, across its merges
    assert rolled == sorted(rolled), "the rollup's count went backwards"
    assert all(bound <= r <= count for count, _, bound, r in seen), "the rollup lost or doubled rows"
    assert rolled[-1] == total
    assert len(set(counts)) > 5  # the reader really overlapped the writers
    # Each replica's ~1.25 h of rows: one file per closed hour + one for the rest, per replica.
    files = StoreTable(store_location(tmp_path), "signals").files()
    assert {f.replica for f in files} == set(WRITERS) and len(files) <= 3 * len(WRITERS)
    con = open_store(tmp_path)
    assert con.execute("SELECT count(DISTINCT replica) FROM signals").fetchone() == (3,)


def _endless_writer(store: str, run: int, committed, ready) -> None:  # pragma: no cover - killed
    from enginescope.store import CompactionPolicy, StoreWriter

    # Tiny chunks, hours closed at once: nearly every pass rewrites files (a compaction commit).
    policy = CompactionPolicy(chunk_segments=2, close_grace_s=0, delete_grace_s=0)
    writer = StoreWriter(store, Identity("rep-k"), background=False, policy=policy)
    ready.set()
    i = 0
    while True:
        writer.write(_batch("rep-k", i, offset_s=run * 400 * 30.0))
        i += 1
        writer.flush()
        committed.value = writer.rows_written  # only after the commit returned
        if i % 2 == 0:
            writer.compact()
        if i % 7 == 0:
            writer.vacuum()  # the previous (killed) writer's uploads are debris now


@pytest.mark.slow
def test_sigkilled_writers_lose_no_committed_row_and_add_none_twice(tmp_path: Path) -> None:
    from enginescope.store import StoreWriter, open_store

    ctx = _ctx()
    rng = random.Random(12)
    total_committed = 0
    kills = 20
    for run in range(kills):
        committed, ready = ctx.Value("q", 0), ctx.Event()
        proc = ctx.Process(target=_endless_writer, args=(str(tmp_path), run, committed, ready))
        proc.start()
        assert ready.wait(60)
        time.sleep(rng.uniform(0.05, 0.6))  # lands in uploads, commits, compactions, vacuums
        proc.kill()  # SIGKILL: no close(), no final flush
        proc.join(10)
        total_committed += committed.value
        con = open_store(tmp_path)
        count, distinct = con.execute("SELECT count(*), count(DISTINCT ts) FROM signals").fetchone()
        assert count == distinct, f"run {run}: a row appears twice"
        assert count >= total_committed, f"run {run}: a committed row was lost"
        assert count % ROWS_PER_BATCH == 0  # whole commits only
        rolled = con.execute("SELECT coalesce(sum(n), 0) FROM signals_1m").fetchone()[0]
        assert rolled <= count  # the rollup commit follows the raw one
    assert total_committed > 0
    restarted = StoreWriter(tmp_path, Identity("rep-k"), background=False)
    restarted.write(_batch("rep-k", 0, offset_s=-3600.0))
    restarted.close()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == count + ROWS_PER_BATCH


def _buffering_writer(store: str, run: int, written, ready) -> None:  # pragma: no cover - killed
    from enginescope.store import StoreWriter

    # The shipped default: files every flush, listed in the pending manifest, committed every 30 s.
    writer = StoreWriter(store, Identity(f"rep-b{run}"), flush_interval_s=0.02, commit_interval_s=30.0)
    ready.set()
    for i in range(10_000):
        writer.write(_batch(f"rep-b{run}", i, offset_s=run * 400 * 30.0))
        written.value = i + 1
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkilled_buffering_writers_lose_nothing_once_their_files_are_adopted(tmp_path: Path) -> None:
    """The default commit cadence: a writer killed between commits leaves files only its
    manifest lists. Another replica's writer adopts them once the manifest is stale (on Modal
    the replica never returns): every row that was visible is committed, none twice."""
    import json

    from enginescope.store import StoreWriter, open_store
    from enginescope.store.pending import FOLDER, STALE_S

    ctx = _ctx()
    rng = random.Random(7)
    visible_total = 0
    for run in range(5):
        written, ready = ctx.Value("q", 0), ctx.Event()
        proc = ctx.Process(target=_buffering_writer, args=(str(tmp_path), run, written, ready))
        proc.start()
        assert ready.wait(60)
        time.sleep(rng.uniform(0.3, 1.0))
        proc.kill()
        proc.join(10)
        visible = open_store(tmp_path).execute("SELECT count(*) FROM signals").fetchone()[0]
        assert visible > visible_total  # the killed writer's flushed rows, through its manifest
        visible_total = visible
        aged_s = time.time() - STALE_S - 1
        for manifest in (tmp_path / FOLDER).glob("*.json"):  # as if STALE_S had passed
            if manifest.name.startswith(".tmp-"):  # killed mid-write: never renamed
                os.utime(manifest, (aged_s, aged_s))
                continue
            record = json.loads(manifest.read_text())
            record["written_s"] -= STALE_S + 1
            manifest.write_text(json.dumps(record))
        StoreWriter(tmp_path, Identity("rep-other"), background=False).close()  # adopts them
        assert not list((tmp_path / FOLDER).glob("*.json"))  # temp files swept too
        con = open_store(tmp_path)
        count, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (replica, ts)) FROM signals"
        ).fetchone()
        assert count == distinct == visible_total, f"run {run}"
        committed = sum(f.num_records for f in _signal_files(tmp_path))
        assert committed == visible_total  # other engines (the log) now see the same rows


def _signal_files(store: Path):
    from enginescope.store.delta import StoreTable
    from enginescope.store.location import store_location

    return StoreTable(store_location(store), "signals").files()
