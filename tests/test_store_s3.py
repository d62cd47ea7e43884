"""``s3://`` stores through a local S3-compatible server (moto, server mode, started here):
several writer processes commit to one table with conditional PUTs; DuckDB, Polars and
ClickHouse (chdb) read the same rows."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterator

import pytest

from enginescope.collectors.model import Batch, Identity, SignalRow
from tests.s3server import BUCKET, s3_server

ROWS = 20
FLUSHES = 6
WRITERS = ("s3-a", "s3-b", "s3-c")
T_BASE = time.time() - 3600


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with s3_server(BUCKET) as env:
        yield env


@pytest.fixture
def aws(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    return s3_env


def _batch(replica: str, flush: int) -> Batch:
    batch = Batch(Identity(replica, engine="sglang", model="m"))
    ts = T_BASE + flush * 10.0
    batch.signals = [SignalRow(ts + k / 10, "queue_depth", float(k), 1.0) for k in range(ROWS)]
    return batch


def _s3_writer(env: dict[str, str], store: str, replica: str, ready, start) -> None:  # pragma: no cover
    os.environ.update(env)  # a forkserver child has the environment of the forkserver
    from enginescope.store import StoreWriter

    writer = StoreWriter(store, Identity(replica, engine="sglang", model="m"), background=False)
    ready.release()
    start.wait(30)
    for flush in range(FLUSHES):
        writer.write(_batch(replica, flush))
        writer.flush()
    writer.close()


def _assert_server_refuses_overwrites(env: dict[str, str]) -> None:
    """The test means something only if the server enforces ``If-None-Match: *`` like S3."""
    import boto3
    import botocore.exceptions

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key="probe", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=BUCKET, Key="probe", Body=b"2", IfNoneMatch="*")


def test_concurrent_writer_processes_on_s3(aws: dict[str, str]) -> None:
    from enginescope.store import open_store
    from enginescope.store.delta import StoreTable
    from enginescope.store.location import store_location

    store = f"s3://{BUCKET}/concurrent"
    _assert_server_refuses_overwrites(aws)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["enginescope.store"])
    ready, start = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_s3_writer, args=(aws, store, r, ready, start)) for r in WRITERS]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert ready.acquire(timeout=60)
    start.set()  # all writers race for the same log versions
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    con = open_store(store)
    total = len(WRITERS) * FLUSHES * ROWS
    count, distinct = con.execute("SELECT count(*), count(DISTINCT (replica, ts)) FROM signals").fetchone()
    assert (count, distinct) == (total, total)  # no commit lost to a race, none applied twice
    assert con.execute("SELECT sum(n) FROM signals_1m").fetchone() == (total,)
    dt = StoreTable(store_location(store), "signals").open()
    # One commit per flush at least (a racing creation may add a metadata commit).
    assert dt is not None and dt.version() >= len(WRITERS) * FLUSHES


def test_other_engines_read_the_s3_table(aws: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    import chdb
    import polars as pl

    from enginescope.store import StoreWriter, open_store

    store = f"s3://{BUCKET}/engines"
    writer = StoreWriter(store, Identity("s3-x", engine="sglang", model="m"), background=False)
    for flush in range(3):
        writer.write(_batch("s3-x", flush))
        writer.flush()
    duck = open_store(store).execute("SELECT count(*), sum(value) FROM signals").fetchone()
    options = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "aws_region": "us-east-1", "aws_endpoint_url": aws["AWS_ENDPOINT_URL"], "aws_allow_http": "true"}  # fmt: skip
    frame = (
        pl.scan_delta(f"{store}/signals", storage_options=options)
        .select(pl.len(), pl.col("value").sum())
        .collect()
    )
    endpoint = aws["AWS_ENDPOINT_URL"]
    ch = chdb.query(
        f"SELECT count(), sum(value) FROM deltaLake('{endpoint}/{BUCKET}/engines/signals/', 'testing', 'testing')",
        "CSV",
    )
    ch_row = tuple(float(x) for x in str(ch).strip().split(","))
    assert duck == (3 * ROWS, 3 * sum(range(ROWS)))
    from enginescope.cli import main

    assert main(["query", "--store", store, "--format", "csv", "SELECT count(*) AS n FROM signals"]) == 0
    assert capsys.readouterr().out.split() == ["n", str(3 * ROWS)]
    assert tuple(frame.row(0)) == duck
    assert ch_row == (float(duck[0]), float(duck[1]))
