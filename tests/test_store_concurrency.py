"""Writer and reader in separate processes: exact, monotonic counts; a SIGKILLed writer."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.store import CompactionPolicy, StoreWriter
from enginescope.store.segments import visible_files

ROWS_PER_BATCH = 50
T_BASE = time.time() - 4 * 3600  # rows span past hours, so hours close and get compacted


def _batch(replica: str, i: int) -> Batch:
    batch = Batch(Identity(replica))
    ts = T_BASE + i * 30.0  # 120 batches = one hour of rows
    batch.signals = [SignalRow(ts + k / 100, "queue_depth", 1.0, 1.0) for k in range(ROWS_PER_BATCH)]
    return batch


def _writer(store: str, replica: str, batches: int, flushed, done) -> None:  # pragma: no cover - child
    from enginescope.store import CompactionPolicy, StoreWriter

    policy = CompactionPolicy(chunk_segments=4, close_grace_s=0, delete_grace_s=0.05)
    writer = StoreWriter(store, Identity(replica), flush_interval_s=3600, compact_interval_s=0, policy=policy)
    for i in range(batches):
        writer.write(_batch(replica, i))
        if i % 3 == 2:
            flushed.value = (i + 1) * ROWS_PER_BATCH  # upper bound, published before rows appear
            writer.flush()
            writer.compact()
        time.sleep(0.002)
    flushed.value = batches * ROWS_PER_BATCH
    writer.close()
    writer.compact()
    done.set()


def _reader(store: str, flushed, done, results) -> None:  # pragma: no cover - child
    from enginescope.store import open_store, query

    con = open_store(store)
    seen: list[tuple[int, int, int]] = []
    errors: list[str] = []
    while True:
        finished = done.is_set()
        try:
            count, distinct = query(con, "SELECT count(*), count(DISTINCT ts) FROM signals").fetchone()
            seen.append((count, distinct, flushed.value))
        except Exception as exc:  # recorded and asserted on in the parent
            errors.append(repr(exc))
        if finished:
            break
    results.put((seen, errors))


def test_concurrent_writer_and_reader_processes(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    flushed, done, results = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
    batches = 300
    writer = ctx.Process(target=_writer, args=(str(tmp_path), "rep-a", batches, flushed, done))
    reader = ctx.Process(target=_reader, args=(str(tmp_path), flushed, done, results))
    reader.start()
    writer.start()
    seen, errors = results.get(timeout=240)
    writer.join(60)
    reader.join(60)
    assert writer.exitcode == 0 and reader.exitcode == 0
    assert errors == []
    counts = [c for c, _, _ in seen]
    assert counts == sorted(counts), "counts went backwards"
    assert all(count == distinct for count, distinct, _ in seen), "a row was read twice"
    assert all(count <= bound for count, _, bound in seen), "more rows than written"
    assert counts[-1] == batches * ROWS_PER_BATCH
    assert len(set(counts)) > 5  # the reader really overlapped the writer
    # 2.5 closed hours of rows -> one file per hour once replaced files are gone.
    assert len(visible_files(tmp_path, "signals")) <= 4
    time.sleep(0.1)
    StoreWriter(
        tmp_path, Identity("rep-a"), background=False, policy=CompactionPolicy(delete_grace_s=0)
    ).compact()
    assert len(list((tmp_path / "signals").rglob("*.parquet"))) == len(visible_files(tmp_path, "signals"))


def _endless_writer(store: str, flushed) -> None:  # pragma: no cover - child, killed
    from enginescope.store import StoreWriter

    writer = StoreWriter(store, Identity("rep-k"), flush_interval_s=0.01, compact_interval_s=0.05)
    i = 0
    while True:
        writer.write(_batch("rep-k", i % 100))
        i += 1
        flushed.value = writer.rows_written
        time.sleep(0.001)


def test_sigkilled_writer_leaves_readable_store(tmp_path: Path) -> None:
    from enginescope.store import open_store

    ctx = mp.get_context("spawn")
    flushed = ctx.Value("q", 0)
    proc = ctx.Process(target=_endless_writer, args=(str(tmp_path), flushed))
    proc.start()
    deadline = time.time() + 60
    while flushed.value < 20 * ROWS_PER_BATCH and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no close(), no final flush
    proc.join(10)
    reported = flushed.value
    con = open_store(tmp_path)
    count = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    assert count >= reported > 0  # lost at most what was not yet flushed
    assert count % ROWS_PER_BATCH == 0  # no half-written segment is visible
    restarted = StoreWriter(tmp_path, Identity("rep-k"), background=False)
    assert not [p for p in tmp_path.rglob(".tmp-*") if "replicas" not in p.parts]
    restarted.write(_batch("rep-k", 0))
    restarted.close()
    assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == count + ROWS_PER_BATCH
