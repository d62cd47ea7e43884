"""Fleet history in the Delta store vs Prometheus 2.42 holding the same data, side by side.

Generates ``--replicas`` x ``--days`` of TTFT histograms at one row per minute per replica (what
the minute rollup holds for old days), through the real writer path (``StoreWriter.write_table``:
per replica-hour files, rollups derived, Delta commits, compaction of closed days). The same
cumulative buckets go to Prometheus as OpenMetrics (``promtool tsdb create-blocks-from
openmetrics``), then a local ``prometheus`` serves the blocks. Measured on both: bytes per sample
on disk, file count, the incident query (TTFT p99 per minute per replica, last 1 h and 24 h) and a
30-day fleet query (p99 per hour over all replicas), cold (first query of a fresh connection /
server) and warm; answers compared value by value.

    .venv/bin/python benchmarks/bench_store_history.py [--replicas 4] [--days 30] [--work DIR]

A sample is one number: a histogram row of B buckets is B bucket samples + sum + count, as
Prometheus stores it (B+2 series).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enginescope.collectors.model import Identity  # noqa: E402
from enginescope.simfleet.sgl_families import TTFT_BUCKETS_S  # noqa: E402
from enginescope.store import CompactionPolicy, StoreWriter, open_store  # noqa: E402

BOUNDS = (*TTFT_BUCKETS_S, math.inf)
METRIC = "sglang:time_to_first_token_seconds"
STEP_S = 60


def minute_counts(replica: int, minutes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute bucket increases (non-cumulative) and sums: Poisson arrivals, lognormal TTFT
    whose median follows the day and rises 10x in one incident per replica."""
    t = np.arange(minutes)
    load = 1.0 + 0.3 * np.sin(2 * np.pi * t / 1440 + replica)
    median = 0.15 * (1 + 9 * ((t % 5000) < 30 + replica))  # a 30-min incident every ~3.5 days
    n = rng.poisson(120 * load)
    edges = np.log(np.asarray(TTFT_BUCKETS_S))
    cdf = 0.5 * (1 + _erf((edges[None, :] - np.log(median)[:, None]) / (0.6 * math.sqrt(2))))
    probs = np.diff(np.concatenate([np.zeros((minutes, 1)), cdf, np.ones((minutes, 1))], axis=1), axis=1)
    counts = rng.multinomial(n, np.clip(probs, 0, None) / probs.sum(axis=1, keepdims=True))
    mids = np.asarray((*TTFT_BUCKETS_S, TTFT_BUCKETS_S[-1] * 2))
    return counts.astype(np.float64), counts @ mids * 0.7


def _erf(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def histogram_table(replica: str, start_s: int, counts: np.ndarray, sums: np.ndarray) -> pa.Table:
    n = counts.shape[0]
    cum = np.cumsum(counts, axis=1)
    ts = pa.array((start_s + np.arange(n) * STEP_S) * 1_000_000, pa.timestamp("us", tz="UTC"))
    offsets = pa.array(np.arange(0, n * len(BOUNDS) + 1, len(BOUNDS), dtype=np.int32))
    const = lambda v: pa.array([v] * n)  # noqa: E731
    return pa.table({
        "ts": ts, "replica": const(replica), "engine": const("sglang"), "model": const("m"),
        "region": const("us"), "gpu_type": const("H100"), "metric": const(METRIC),
        "signal": const("ttft_seconds"), "labels": const("{}"),
        "bounds": pa.ListArray.from_arrays(offsets, pa.array(np.tile(BOUNDS, n))),
        "counts": pa.ListArray.from_arrays(offsets, pa.array(cum.ravel())),
        "sum": pa.array(sums), "count": pa.array(cum[:, -1]), "interval_s": pa.array(np.full(n, 60.0)),
    })  # fmt: skip


def openmetrics_lines(replica: str, start_s: int, counts: np.ndarray, sums: np.ndarray):
    """Cumulative-over-time counters at each minute (the rows are increases over the minute
    before them, so rate(x[1m]) at minute M is exactly row M)."""
    running = np.cumsum(np.cumsum(counts, axis=1), axis=0)
    running_sum = np.cumsum(sums)
    les = [("+Inf" if math.isinf(b) else repr(b)) for b in BOUNDS]
    for i in range(counts.shape[0]):
        ts = start_s + i * STEP_S
        for le, value in zip(les, running[i], strict=True):
            yield f'ttft_seconds_bucket{{replica="{replica}",le="{le}"}} {value:.0f} {ts}\n'
        yield f'ttft_seconds_count{{replica="{replica}"}} {running[i, -1]:.0f} {ts}\n'
        yield f'ttft_seconds_sum{{replica="{replica}"}} {float(running_sum[i])!r} {ts}\n'


def disk(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prom_query(base: str, expr: str, start_s: float, end_s: float, step_s: int) -> dict:
    qs = urllib.parse.urlencode({"query": expr, "start": start_s, "end": end_s, "step": step_s})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{qs}", timeout=600) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise RuntimeError(body)
    return body["data"]


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-history-"))
    store, om, tsdb = work / "store", work / "history.om", work / "tsdb"
    minutes = args.days * 1440
    end_s = int(time.time()) // 3600 * 3600 - 3600
    start_s = end_s - minutes * STEP_S
    rng = np.random.default_rng(5)
    writer = StoreWriter(
        store, Identity("history"), background=False, policy=CompactionPolicy(delete_grace_s=0)
    )
    gen_s = write_s = om_s = 0.0
    with om.open("w") as out:
        for r in range(args.replicas):
            name = f"replica-{r:03d}"
            (counts, sums), took = timed(minute_counts, r, minutes, rng)
            gen_s += took
            t0 = time.perf_counter()
            writer.write_table("histograms", histogram_table(name, start_s, counts, sums))
            writer.flush()
            write_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            out.writelines(openmetrics_lines(name, start_s, counts, sums))
            om_s += time.perf_counter() - t0
        out.write("# EOF\n")
    t0 = time.perf_counter()
    writer.compact()
    writer.vacuum()
    writer.close()
    compact_s = time.perf_counter() - t0
    rows = args.replicas * minutes
    samples = rows * (len(BOUNDS) + 2)
    print(f"generated {args.replicas} replicas x {args.days} days x 1/min = {rows} histogram rows "
          f"({samples} samples); numpy {gen_s:.1f} s, StoreWriter {write_s:.1f} s + compaction {compact_s:.1f} s, "
          f"OpenMetrics text {om_s:.1f} s", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"promtool failed: {done.stderr[-2000:]}")
    print(f"promtool create-blocks-from openmetrics: {time.perf_counter() - t0:.1f} s", flush=True)
    om.unlink()
    # Only the histograms table and its rollup hold this data.
    ours = [disk(store / t) for t in ("histograms", "histograms_1m")]
    our_bytes, our_files = sum(b for b, _ in ours), sum(f for _, f in ours)
    prom_bytes, prom_files = disk(tsdb)
    print(f"disk: store {our_bytes / samples:.3f} B/sample, {our_files} files (histograms + histograms_1m, "
          f"incl. _delta_log); prometheus {prom_bytes / samples:.3f} B/sample, {prom_files} files")  # fmt: skip
    print(f"  store raw table alone: {disk(store / 'histograms')[0] / samples:.3f} B/sample")

    port = _port()
    prom = subprocess.Popen(
        ["prometheus", f"--storage.tsdb.path={tsdb}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=100y", "--config.file=/dev/null", "--query.max-samples=500000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        compare(base, store, start_s, end_s)
    finally:
        prom.terminate()
        prom.wait(20)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# Buckets are summed in a subquery: inlined into histogram_quantile(...) the aggregate would be
# expanded once per use of ``counts`` in the macro (DuckDB does not share it), ~40x slower.
PER_MINUTE_SQL = """
SELECT epoch(ts)::BIGINT AS t, replica, histogram_quantile(0.99, bounds, c) AS p99 FROM (
  SELECT ts, replica, bounds, sum_buckets(counts) AS c
  FROM histograms_1m_in(to_timestamp($t0), to_timestamp($t1))
  WHERE signal = 'ttft_seconds' AND ts >= to_timestamp($t0) AND ts < to_timestamp($t1)
  GROUP BY ts, replica, bounds)"""
FLEET_SQL = """
SELECT epoch(h)::BIGINT AS t, histogram_quantile(0.99, bounds, c) AS p99 FROM (
  SELECT date_trunc('hour', ts) AS h, bounds, sum_buckets(counts) AS c
  FROM histograms_1m_in(to_timestamp($t0), to_timestamp($t1))
  WHERE signal = 'ttft_seconds' AND ts >= to_timestamp($t0) AND ts < to_timestamp($t1)
  GROUP BY h, bounds)"""


def _fetch(con, sql: str, params: dict) -> list[tuple]:
    return con.execute(sql, params).fetchall()


def compare(base: str, store: Path, start_s: int, end_s: int) -> None:
    last_s = end_s - STEP_S  # the newest minute row
    cases = [
        ("incident 1 h", PER_MINUTE_SQL, last_s - 3600 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        ("incident 24 h", PER_MINUTE_SQL, last_s - 86400 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        # Hour H holds rows H..H+59 min; increase over [1h] evaluated at H+59 min covers exactly them.
        ("fleet whole history", FLEET_SQL, start_s + 3600, end_s - 1, 3600,
         "histogram_quantile(0.99, sum by (le) (increase(ttft_seconds_bucket[1h])))", 3540),
    ]  # fmt: skip
    for label, sql, t0, t1, step, promql, shift_s in cases:
        params = {"t0": t0, "t1": t1 + (STEP_S if step == 60 else 0)}
        con, open_s = timed(open_store, store)
        ours_rows, cold_s = timed(_fetch, con, sql, params)
        _, warm_s = timed(_fetch, con, sql, params)
        q0, q1 = t0 + shift_s, (t1 if step == 60 else t1 - 3600 + shift_s + 1)
        data, p_cold = timed(prom_query, base, promql, q0, q1, step)
        _, p_warm = timed(prom_query, base, promql, q0, q1, step)
        ours = {(t, r if step == 60 else ""): p for t, r, p in ours_rows if p is not None} if step == 60 else {
            (t, ""): p for t, p in ours_rows if p is not None}  # fmt: skip
        theirs = {}
        for series in data["result"]:
            replica = series["metric"].get("replica", "")
            for ts, value in series["values"]:
                if value not in ("NaN", "+Inf", "-Inf"):
                    theirs[(int(float(ts)) - shift_s, replica)] = float(value)
        same = ours.keys() == theirs.keys() and all(
            math.isclose(ours[k], theirs[k], rel_tol=1e-9) for k in ours
        )
        bad = sorted(
            k for k in ours.keys() & theirs.keys() if not math.isclose(ours[k], theirs[k], rel_tol=1e-9)
        )
        if bad:
            print(f"  {len(bad)} differing points, first: {bad[:3]} ours {[ours[k] for k in bad[:3]]} "
                  f"prometheus {[theirs[k] for k in bad[:3]]}")  # fmt: skip
        worst = max(
            (abs(ours[k] - theirs[k]) / ours[k] for k in ours.keys() & theirs.keys()), default=float("nan")
        )
        print(f"{label}: store cold {(open_s + cold_s) * 1000:.0f} ms (open {open_s * 1000:.0f}), warm "
              f"{warm_s * 1000:.0f} ms; prometheus cold {p_cold * 1000:.0f} ms, warm {p_warm * 1000:.0f} ms; "
              f"points {len(ours)} vs {len(theirs)}, identical: {same} (max rel diff {worst:.1e})", flush=True)  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    raise SystemExit(main())
