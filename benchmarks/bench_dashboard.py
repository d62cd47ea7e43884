"""Incident-view speed over a large store: data queries + diagnosis, cold and warm, and an
AppTest render. Appends a section to benchmarks/RESULTS.md.

A pass is what one render of the incident view queries: the store's time range and replica
list, then ``load_incident`` and the diagnosis. "First render" is the first pass of a new
process (new connection, empty DuckDB caches; imports excluded, as a running Streamlit server
has them; the OS page cache is not dropped). "Refresh, full re-query" is the best of 3 more
passes on that connection with no result cache; "live refresh" the best of 3 passes with the
dashboard's ``TailCache`` (settled buckets kept, the last ``settle_s`` re-queried), which is what
live mode does every few seconds. First renders are repeated in ``--repeat`` new processes
(median); each also reports the process's CPU time (all threads), which other users of the
shared cores inflate less than the wall time.

    .venv/bin/python benchmarks/gen_history.py --store /tmp/es_bench   # 24 h x 20 replicas @ 1 s
    .venv/bin/python benchmarks/bench_dashboard.py --store /tmp/es_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from enginescope.dashboard import diagnosis
from enginescope.dashboard.data import Window, list_replicas, load_incident, open_connection, store_time_range
from enginescope.dashboard.tail import TailCache

ROOT = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def incident_pass(store: Path, span_s: float, con=None, cache=None) -> tuple[float, int, Window]:
    """Open (if no connection given), query everything the incident view draws, diagnose.
    The replica list is part of a first render only (the app refreshes it every 30 s)."""
    t0 = time.perf_counter()
    if con is None or cache is None:
        con = con or open_connection(store)
        list_replicas(con)
    first, last = store_time_range(con)
    end = last + dt.timedelta(seconds=1)
    window = Window(max(first, end - dt.timedelta(seconds=span_s)), end)
    data = load_incident(con, window, cache=cache)
    found = diagnosis.diagnose(
        data.latency, data.series, data.events, None, window.effective_bucket_s, pd.Timestamp(window.t1)
    )
    return time.perf_counter() - t0, len(found), window


def one_window(store: Path, span_s: float) -> dict:
    """First pass in this (new) process, then warm passes on the same connection."""
    cpu0_s = _cpu_s()
    cold_s, n, window = incident_pass(store, span_s)
    cold_cpu_s = _cpu_s() - cpu0_s
    con, cache = open_connection(store), TailCache()
    incident_pass(store, span_s, con, cache)
    warm = [incident_pass(store, span_s, con)[0] for _ in range(3)]
    live = [incident_pass(store, span_s, con, cache)[0] for _ in range(3)]
    return {"cold_s": cold_s, "cold_cpu_s": cold_cpu_s, "warm_s": min(warm), "live_s": min(live),
            "incidents": n, "bucket_s": window.effective_bucket_s}  # fmt: skip


def _in_new_processes(repeat: int, *args: str) -> dict:
    """Median of each number over ``repeat`` runs of this script, each in a new process."""
    cmd = [sys.executable, __file__, *args]
    runs = []
    for _ in range(repeat):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def apptest_render(store: Path, range_key: str) -> tuple[float, float, float, int]:
    """(first render, its CPU time, best rerun on cached data, most points per series in a
    chart): the whole Streamlit script of the incident view, charts included. Run in a fresh
    process."""
    from streamlit.testing.v1 import AppTest

    os.environ["ENGINESCOPE_STORE"] = str(store)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.query_params["range"] = range_key
    t0, cpu0_s = time.perf_counter(), _cpu_s()
    at.run()
    first_s, first_cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0_s
    if at.exception:
        raise RuntimeError(at.exception)
    reruns = []
    for _ in range(3):
        t0 = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t0)
    return first_s, first_cpu_s, min(reruns), _max_points(at)


def _max_points(at) -> int:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    most = 0
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            table = pa.ipc.open_stream(dataset.data.data).read_all()
            if "series" in table.column_names:
                most = max(most, max(table.column("series").value_counts().field(1).to_pylist(), default=0))
    return most


def page_main(store: Path) -> int:
    first_s, first_cpu_s, rerun_s, points = apptest_render(store, "24h")
    print(
        json.dumps({"first_s": first_s, "first_cpu_s": first_cpu_s, "rerun_s": rerun_s, "max_points": points})
    )
    return 0


def _machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    return f"{os.cpu_count()} cores (nproc), {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--one-window", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--title", default="Dashboard (incident view)")
    parser.add_argument("--page-only", action="store_true", help="only the Streamlit page render (24 h)")
    parser.add_argument("--repeat", type=int, default=3, help="new processes per first render (median)")
    args = parser.parse_args(argv)
    if args.page_only:
        return page_main(args.store)
    if args.one_window:
        print(json.dumps(one_window(args.store, args.one_window)))
        return 0
    con = open_connection(args.store)
    first, last = store_time_range(con)
    rows = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    hist_rows = con.execute("SELECT count(*) FROM histograms").fetchone()[0]
    lines = [f"Store: {args.store} ({first:%Y-%m-%d %H:%M} → {last:%H:%M} UTC), {rows:,} signal rows, "
             f"{hist_rows:,} histogram rows. Machine: {_machine()}. Median of {args.repeat} new processes.", "",
             "| window | bucket | first render (new process), wall / CPU | refresh, full re-query | "
             "live refresh (tail only) | incidents |", "|---|---|---|---|---|---|"]  # fmt: skip
    store = str(args.store)
    for label, span_s in (("24 h", 86400), ("1 h", 3600), ("15 min", 900)):
        r = _in_new_processes(args.repeat, "--store", store, "--one-window", str(span_s))
        lines.append(
            f"| {label} | {r['bucket_s']:.0f} s | {r['cold_s']:.2f} s / {r['cold_cpu_s']:.2f} s | "
            f"{r['warm_s']:.2f} s | {r['live_s']:.2f} s | {r['incidents']:.0f} |"
        )
        print(lines[-1], flush=True)
    page = _in_new_processes(args.repeat, "--store", store, "--page-only")
    lines += [
        "",
        f"AppTest full render of the incident view, 24 h window (Streamlit script incl. 13 charts), new "
        f"process: first render {page['first_s']:.2f} s (CPU {page['first_cpu_s']:.2f} s), rerun on cached "
        f"data {page['rerun_s']:.2f} s, at most {page['max_points']:,.0f} points per series in a chart",
    ]
    print(lines[-1])
    section = f"\n## {args.title}\n\n" + "\n".join(lines) + "\n"
    with args.results.open("a") as fh:
        fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
