"""Store ingest throughput (rows/s through StoreWriter) and quantile query latency.

    .venv/bin/python benchmarks/bench_store_ingest.py [--ticks 600] [--replicas 4]

Each tick is one realistic scrape for one replica: 300 samples, 8 histograms x 20 buckets,
30 signals. Rows are timestamped 1 s apart in the past, flushed every 2 ticks (like
flush_interval_s=2 at a 1 s scrape) and compacted at the end.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

from enginescope.collectors.model import Batch, HistogramRow, Identity, SampleRow, SignalRow
from enginescope.store import CompactionPolicy, StoreWriter, open_store

BOUNDS = tuple([0.005 * 2**i for i in range(19)] + [math.inf])


def tick(ident: Identity, ts_s: float, i: int) -> Batch:
    batch = Batch(ident)
    batch.samples = [
        SampleRow(
            ts_s, f"sglang:metric_{k % 60}", "counter", (("model", "m"), ("k", str(k))), i * 1.0, 1.0, 1.0
        )
        for k in range(300)
    ]
    batch.histograms = [
        HistogramRow(
            ts_s,
            f"sglang:h{k}",
            (),
            BOUNDS,
            tuple(float(min(b, 19) + i % 3) for b in range(20)),
            1.0,
            22.0,
            1.0,
            "ttft_seconds" if k == 0 else None,
        )
        for k in range(8)
    ]
    batch.signals = [SignalRow(ts_s, f"signal_{k}", float(i), 1.0) for k in range(30)]
    return batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=600)
    parser.add_argument("--replicas", type=int, default=4)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="bench-store-")
    start_s = time.time() - args.ticks - 7200
    policy = CompactionPolicy(delete_grace_s=0)
    write_s = flush_s = 0.0
    rows = 0
    for r in range(args.replicas):
        ident = Identity(f"replica-{r}", engine="sglang", model="m")
        writer = StoreWriter(store, ident, background=False, policy=policy)
        for i in range(args.ticks):
            batch = tick(ident, start_s + i, i)
            t = time.perf_counter()
            writer.write(batch)
            write_s += time.perf_counter() - t
            if i % 2 == 1:
                t = time.perf_counter()
                writer.flush()
                flush_s += time.perf_counter() - t
        t = time.perf_counter()
        writer.close()
        writer.compact()
        flush_s += time.perf_counter() - t
        rows += writer.rows_written
    print(
        f"rows={rows} write()={write_s * 1e6 / (args.ticks * args.replicas):.0f}us/batch "
        f"flush+compact={flush_s:.2f}s ingest={rows / (write_s + flush_s):,.0f} rows/s"
    )
    con = open_store(store)
    for view in ("histograms", "histograms_1m"):
        sql = (
            f"SELECT replica, histogram_quantile(0.99, bounds, sum_buckets(counts)) FROM {view} "
            "WHERE signal = 'ttft_seconds' GROUP BY replica, bounds"
        )
        con.execute(sql).fetchall()  # warm
        t = time.perf_counter()
        result = con.execute(sql).fetchall()
        print(f"p99 per replica over {view}: {(time.perf_counter() - t) * 1000:.0f} ms ({len(result)} rows)")


if __name__ == "__main__":
    main()
