"""Fleet history in the Delta store vs Prometheus 2.42 holding the same data, side by side.

Three phases (separate processes, so the two sides can be built at the same time):

``store``: ``--replicas`` x ``--days`` of TTFT histograms at one row per minute per replica (what
the minute rollup holds), written day by day through the real writer path
(``StoreWriter.write_table`` into ``histograms``: per replica-hour files, minute rollup derived,
Delta commits), then one compaction pass as the fleet's sidecars would run it an hour after the
day closed (``raw_retention_days=1``: raw rows of older days are deleted, their minute rollup
stays; the closed day's rollup of all replicas becomes one file) and a vacuum.

``prom``: the same cumulative buckets as OpenMetrics, one input file per aligned 2 h block
(promtool 2.42 re-reads its whole input for each 2 h block it cuts, so one big input is
quadratic), ``promtool tsdb create-blocks-from openmetrics`` per file into one TSDB folder, then
``prometheus`` is started on it until its compactor has merged the blocks.

``compare``: bytes per sample on disk, file count, the incident query (TTFT p99 per minute per
replica, last 1 h and 24 h) and a 30-day fleet query (p99 per hour over all replicas), cold
(first query of a fresh connection / server) and warm, answers compared value by value.

    .venv/bin/python benchmarks/bench_store_history.py store --replicas 200 --days 30 --work DIR
    .venv/bin/python benchmarks/bench_store_history.py prom --replicas 200 --days 30 --work DIR
    .venv/bin/python benchmarks/bench_store_history.py compare --replicas 200 --days 30 --work DIR

A sample is one number: a histogram row of B buckets is B bucket samples + sum + count, as
Prometheus stores it (B+2 series). Data end at the last UTC midnight before now.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
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
DAY_MIN = 1440
BLOCK_S = 7200


def minute_counts(replica: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute bucket increases (non-cumulative) and sums of one replica-day: Poisson
    arrivals, lognormal TTFT whose median follows the day and rises 10x in a 30-min incident
    every ~3.5 days. Seeded by (replica, day): both sides get the same numbers."""
    rng = np.random.default_rng((5, replica, day))
    t = np.arange(day * DAY_MIN, (day + 1) * DAY_MIN)
    load = 1.0 + 0.3 * np.sin(2 * np.pi * t / DAY_MIN + replica)
    median = 0.15 * (1 + 9 * ((t % 5000) < 30 + replica % 60))
    n = rng.poisson(120 * load)
    edges = np.log(np.asarray(TTFT_BUCKETS_S))
    z = (edges[None, :] - np.log(median)[:, None]) / (0.6 * math.sqrt(2))
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z))
    probs = np.diff(np.concatenate([np.zeros((DAY_MIN, 1)), cdf, np.ones((DAY_MIN, 1))], axis=1), axis=1)
    counts = rng.multinomial(n, np.clip(probs, 0, None) / probs.sum(axis=1, keepdims=True))
    mids = np.asarray((*TTFT_BUCKETS_S, TTFT_BUCKETS_S[-1] * 2))
    return counts.astype(np.float64), np.round(counts @ mids * 0.7, 3)


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


def span(days: int) -> tuple[int, int]:
    end_s = int(time.time()) // 86400 * 86400
    return end_s - days * 86400, end_s


def disk(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def samples_of(replicas: int, days: int) -> int:
    return replicas * days * DAY_MIN * (len(BOUNDS) + 2)


# --- store ---------------------------------------------------------------------------------
def build_store(args: argparse.Namespace) -> None:
    store = args.work / "store"
    start_s, end_s = span(args.days)
    policy = CompactionPolicy(delete_grace_s=0)
    writer = StoreWriter(store, Identity("history"), background=False, policy=policy, raw_retention_days=1)
    gen_s = write_s = compact_s = 0.0
    wall0 = time.perf_counter()
    for day in range(args.days):
        t0 = time.perf_counter()
        day_s = start_s + day * 86400
        parts = [
            histogram_table(f"replica-{r:03d}", day_s, *minute_counts(r, day)) for r in range(args.replicas)
        ]
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.write_table("histograms", pa.concat_tables(parts))
        writer.flush()
        write_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        # What the sidecars do an hour after the day closed (compaction takes "now" as given).
        writer.compact(day_s + 86400 + policy.close_grace_s + (policy.fleet_merge_after_s or 0) + 60)
        writer.vacuum()
        compact_s += time.perf_counter() - t0
        print(f"day {day + 1}/{args.days}: {time.perf_counter() - wall0:.0f} s", flush=True)
    writer.close()
    result = {
        "replicas": args.replicas, "days": args.days, "rows": args.replicas * args.days * DAY_MIN,
        "samples": samples_of(args.replicas, args.days), "numpy_s": gen_s, "write_s": write_s,
        "compact_s": compact_s, "wall_s": time.perf_counter() - wall0, "commits": writer.commits,
    }  # fmt: skip
    (args.work / "store.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


# --- prometheus ----------------------------------------------------------------------------
def _block_text(replicas: int, day: int, lo: int, hi: int, start_s: int, state: dict) -> str:
    """OpenMetrics lines of minutes [lo, hi) of ``day`` for every replica; ``state`` carries
    each replica's running counters (cumulative over time, so rate(x[1m]) at minute M is row M)."""
    les = ["+Inf" if math.isinf(b) else repr(b) for b in BOUNDS]
    out = []
    for r in range(replicas):
        counts, sums = state["day"][r]
        run_b, run_s = state["run"].get(r, (np.zeros(len(BOUNDS)), 0.0))
        cum = np.cumsum(counts[lo:hi], axis=1)
        running = run_b + np.cumsum(cum, axis=0)
        running_sum = run_s + np.cumsum(sums[lo:hi])
        state["run"][r] = (running[-1], float(running_sum[-1]))
        name = f"replica-{r:03d}"
        bucket = [f'ttft_seconds_bucket{{replica="{name}",le="{le}"}} ' for le in les]
        for i in range(hi - lo):
            ts = start_s + (day * DAY_MIN + lo + i) * STEP_S
            row = running[i]
            out.extend(f"{bucket[k]}{row[k]:.0f} {ts}\n" for k in range(len(les)))
            out.append(f'ttft_seconds_count{{replica="{name}"}} {row[-1]:.0f} {ts}\n')
            out.append(f'ttft_seconds_sum{{replica="{name}"}} {float(running_sum[i])!r} {ts}\n')
    return "".join(out)


def build_prom(args: argparse.Namespace) -> None:
    tsdb, inputs = args.work / "tsdb", args.work / "om"
    inputs.mkdir(parents=True, exist_ok=True)
    start_s, _ = span(args.days)
    wall0 = time.perf_counter()
    state: dict = {"run": {}}
    text_s = promtool_s = 0.0

    def promtool(path: Path) -> float:
        t0 = time.perf_counter()
        done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(path), str(tsdb)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            raise SystemExit(f"promtool failed on {path}: {done.stderr[-2000:]}")
        path.unlink()
        return time.perf_counter() - t0

    per_block = BLOCK_S // STEP_S
    with ThreadPoolExecutor(max_workers=1) as pool:  # promtool on one core, text on the other
        running = []
        for day in range(args.days):
            state["day"] = [minute_counts(r, day) for r in range(args.replicas)]
            for lo in range(0, DAY_MIN, per_block):
                t0 = time.perf_counter()
                path = inputs / f"d{day:03d}-{lo:04d}.om"
                path.write_text(
                    _block_text(args.replicas, day, lo, lo + per_block, start_s, state) + "# EOF\n"
                )
                text_s += time.perf_counter() - t0
                running.append(pool.submit(promtool, path))
            print(f"day {day + 1}/{args.days}: {time.perf_counter() - wall0:.0f} s", flush=True)
        promtool_s = sum(f.result() for f in running)
    blocks_before = len([p for p in tsdb.iterdir() if p.is_dir()])
    bytes_before, files_before = disk(tsdb)
    built_s = time.perf_counter() - wall0
    print(f"promtool done: {built_s:.0f} s, {blocks_before} blocks, {files_before} files", flush=True)
    # Let Prometheus's compactor merge the 2 h blocks (it plans every minute while it runs).
    prom, base = start_prometheus(tsdb, args.work)
    t0 = time.perf_counter()
    try:
        last, stable = None, 0
        while time.perf_counter() - t0 < args.compact_wait_s and stable < 3:
            time.sleep(20)
            blocks = sorted(p.name for p in tsdb.iterdir() if p.is_dir() and len(p.name) == 26)
            stable = stable + 1 if blocks == last else 0
            last = blocks
            print(f"  compacting: {len(blocks)} blocks after {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        stop(prom)
    result = {
        "replicas": args.replicas, "days": args.days, "samples": samples_of(args.replicas, args.days),
        "text_s": text_s, "promtool_s": promtool_s, "built_wall_s": built_s,
        "blocks_before_compaction": blocks_before, "bytes_before_compaction": bytes_before,
        "files_before_compaction": files_before, "compaction_wait_s": time.perf_counter() - t0,
        "blocks_after": len(last or []),
    }  # fmt: skip
    (args.work / "prom.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(tsdb: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    prom = subprocess.Popen(
        ["prometheus", f"--storage.tsdb.path={tsdb}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=100y", "--config.file=/dev/null", "--query.max-samples=500000000"],
        stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("a"), cwd=work,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/-/ready", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return prom, base


def stop(prom: subprocess.Popen) -> None:
    prom.terminate()
    prom.wait(60)


def prom_query(base: str, expr: str, start_s: float, end_s: float, step_s: int) -> dict:
    qs = urllib.parse.urlencode({"query": expr, "start": start_s, "end": end_s, "step": step_s})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{qs}", timeout=600) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise RuntimeError(body)
    return body["data"]


# --- compare -------------------------------------------------------------------------------
# Buckets are summed in a subquery: inlined into histogram_quantile(...) the aggregate would be
# expanded once per use of ``counts`` in the macro (DuckDB does not share it), ~40x slower.
PER_MINUTE_SQL = """
SELECT epoch(ts)::BIGINT AS t, replica, histogram_quantile(0.99, bounds, c) AS p99 FROM (
  SELECT ts, replica, bounds, sum_buckets(counts) AS c
  FROM histograms_1m_in(to_timestamp($t0), to_timestamp($t1))
  WHERE signal = 'ttft_seconds' AND ts >= to_timestamp($t0) AND ts < to_timestamp($t1)
  GROUP BY ts, replica, bounds)"""
# The same per minute and replica straight from the rollup's partial rows: sum_buckets does the
# finishing sum the histograms_1m view would do, in one GROUP BY instead of two (same numbers).
PER_MINUTE_PARTIALS_SQL = PER_MINUTE_SQL.replace("histograms_1m_in(", "histograms_1m_partials_in(")
# 30 days are 8.6M minute rows. The view now reads closed files (all but the open hours) as
# they are; before, its per-minute finishing GROUP BY over all of them took 16 s vs 5.5 s from
# the partials. Both forms are measured.
FLEET_SQL = """
SELECT epoch(h)::BIGINT AS t, histogram_quantile(0.99, bounds, c) AS p99 FROM (
  SELECT date_trunc('hour', ts) AS h, bounds, sum_buckets(counts) AS c
  FROM histograms_1m_partials_in(to_timestamp($t0), to_timestamp($t1))
  WHERE signal = 'ttft_seconds' AND ts >= to_timestamp($t0) AND ts < to_timestamp($t1)
  GROUP BY h, bounds)"""


FLEET_VIEW_SQL = FLEET_SQL.replace("histograms_1m_partials_in(", "histograms_1m_in(")
# The view as it was (every row through the finishing GROUP BY), for the before/after line.
_OLD_VIEW = """(SELECT ts, replica, engine, model, region, gpu_type, metric, signal, labels, bounds,
  sum_buckets(counts) AS counts, sum(sum) AS sum, sum(count) AS count, sum(interval_s) AS interval_s, date
  FROM histograms_1m_partials_in(to_timestamp($t0), to_timestamp($t1)) GROUP BY ALL)"""
FLEET_OLD_VIEW_SQL = FLEET_SQL.replace(
    "histograms_1m_partials_in(to_timestamp($t0), to_timestamp($t1))", _OLD_VIEW
)


def _fetch(con, sql: str, params: dict) -> list[tuple]:
    return con.execute(sql, params).fetchall()


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def compare(args: argparse.Namespace) -> None:
    store, tsdb = args.work / "store", args.work / "tsdb"
    start_s, end_s = span(args.days)
    samples = samples_of(args.replicas, args.days)
    result: dict = {"samples": samples}
    for label, path in (("store", store), ("store_histograms_1m", store / "histograms_1m"),
                        ("store_histograms_raw", store / "histograms"), ("prometheus", tsdb)):  # fmt: skip
        if path.exists():
            size, files = disk(path)
            if label == "store":
                size, files = map(
                    sum, zip(*(disk(store / t) for t in ("histograms", "histograms_1m")), strict=True)
                )
            result[label] = {"bytes": size, "files": files, "bytes_per_sample": size / samples}
    for table in ("histograms", "histograms_1m"):
        log_dir = store / table / "_delta_log"
        if log_dir.exists():
            checkpoints = sorted(log_dir.glob("*.checkpoint.parquet"))
            result[f"{table}_delta_log"] = {
                "bytes": disk(log_dir)[0], "files": disk(log_dir)[1],
                "latest_checkpoint_bytes": checkpoints[-1].stat().st_size if checkpoints else 0,
            }  # fmt: skip
    print(json.dumps(result), flush=True)
    have_prom = tsdb.exists() and not args.store_only
    prom, base = start_prometheus(tsdb, args.work) if have_prom else (None, "")
    last_s = end_s - STEP_S  # the newest minute row
    cases = [
        ("incident 1 h", PER_MINUTE_SQL, last_s - 3600 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        ("incident 24 h", PER_MINUTE_SQL, last_s - 86400 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        ("incident 1 h, partials", PER_MINUTE_PARTIALS_SQL, last_s - 3600 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        ("incident 24 h, partials", PER_MINUTE_PARTIALS_SQL, last_s - 86400 + STEP_S, last_s, 60,
         "histogram_quantile(0.99, sum by (le, replica) (rate(ttft_seconds_bucket[1m])))", 0),
        # Hour H holds rows H..H+59 min; increase over [1h] evaluated at H+59 min covers exactly them.
        # The first hour is left out: Prometheus has no sample before it to take the increase from.
        (f"fleet {args.days} days", FLEET_SQL, start_s + 3600, end_s - 1, 3600,
         "histogram_quantile(0.99, sum by (le) (increase(ttft_seconds_bucket[1h])))", 3540),
        (f"fleet {args.days} days, view", FLEET_VIEW_SQL, start_s + 3600, end_s - 1, 3600,
         "histogram_quantile(0.99, sum by (le) (increase(ttft_seconds_bucket[1h])))", 3540),
        (f"fleet {args.days} days, view before final files", FLEET_OLD_VIEW_SQL, start_s + 3600, end_s - 1, 3600,
         "histogram_quantile(0.99, sum by (le) (increase(ttft_seconds_bucket[1h])))", 3540),
    ]  # fmt: skip
    try:
        for label, sql, t0, t1, step, promql, shift_s in cases:
            params = {"t0": t0, "t1": t1 + (STEP_S if step == 60 else 0)}
            con, open_s = timed(open_store, store)
            ours_rows, cold_s = timed(_fetch, con, sql, params)
            warm = [timed(_fetch, con, sql, params)[1] for _ in range(3)]
            row = {"store_cold_ms": (open_s + cold_s) * 1000, "store_open_ms": open_s * 1000,
                   "store_warm_ms": sorted(warm)[1] * 1000}  # fmt: skip
            ours = {(t, r if step == 60 else ""): p for t, r, p in ours_rows if p is not None} if step == 60 else {
                (t, ""): p for t, p in ours_rows if p is not None}  # fmt: skip
            row["points"] = len(ours)
            if prom is not None:
                q0, q1 = t0 + shift_s, (t1 if step == 60 else t1 - 3600 + shift_s + 1)
                data, p_cold = timed(prom_query, base, promql, q0, q1, step)
                p_warm = [timed(prom_query, base, promql, q0, q1, step)[1] for _ in range(3)]
                theirs = {}
                for series in data["result"]:
                    replica = series["metric"].get("replica", "")
                    for ts, value in series["values"]:
                        if value not in ("NaN", "+Inf", "-Inf"):
                            theirs[(int(float(ts)) - shift_s, replica)] = float(value)
                both = ours.keys() & theirs.keys()
                bad = sorted(k for k in both if not math.isclose(ours[k], theirs[k], rel_tol=1e-9))
                row |= {"prom_cold_ms": p_cold * 1000, "prom_warm_ms": sorted(p_warm)[1] * 1000,
                        "prom_points": len(theirs), "only_store": len(ours.keys() - theirs.keys()),
                        "only_prom": len(theirs.keys() - ours.keys()), "differ": len(bad),
                        "differ_first": [(k, ours[k], theirs[k]) for k in bad[:3]],
                        "max_rel_diff_same": max((abs(ours[k] - theirs[k]) / ours[k] for k in set(both) - set(bad)),
                                                 default=None)}  # fmt: skip
            result[label] = row
            print(label, json.dumps(row), flush=True)
    finally:
        if prom is not None:
            stop(prom)
    name = "compare-store-only.json" if args.store_only else "compare.json"
    (args.work / name).write_text(json.dumps(result, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("store", "prom", "compare"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--compact-wait-s", type=float, default=900, help="prom: wait for compaction")
    parser.add_argument("--store-only", action="store_true", help="compare: without Prometheus")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"store": build_store, "prom": build_prom, "compare": compare}[args.phase](args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    raise SystemExit(main())
