"""Incident-view speed over a large store: data queries + diagnosis, cold and warm, and an
AppTest render. Appends a section to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/gen_history.py --store /tmp/es_bench   # 24 h x 20 replicas @ 1 s
    .venv/bin/python benchmarks/bench_dashboard.py --store /tmp/es_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import pandas as pd

from dashboard import diagnosis
from dashboard.data import Window, load_incident, open_connection, store_time_range

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def incident_pass(store: Path, window: Window, con=None) -> tuple[float, int]:
    """Open (if no connection given), query everything the incident view draws, diagnose."""
    t0 = time.perf_counter()
    con = con or open_connection(store)
    data = load_incident(con, window)
    found = diagnosis.diagnose(
        data.latency, data.series, data.events, None, window.effective_bucket_s, pd.Timestamp(window.t1)
    )
    return time.perf_counter() - t0, len(found)


def apptest_render(store: Path, range_key: str) -> float:
    from streamlit.testing.v1 import AppTest

    os.environ["ENGINESCOPE_STORE"] = str(store)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.query_params["range"] = range_key
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception)
    return elapsed


def _machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    return f"{os.cpu_count()} cores (nproc), {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    con = open_connection(args.store)
    first, last = store_time_range(con)
    rows = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    hist_rows = con.execute("SELECT count(*) FROM histograms").fetchone()[0]
    end = last + dt.timedelta(seconds=1)
    lines = [f"Store: {args.store} ({first:%Y-%m-%d %H:%M} → {last:%H:%M} UTC), {rows:,} signal rows, "
             f"{hist_rows:,} histogram rows. Machine: {_machine()}.", "",
             "| window | bucket | first render (new connection) | refresh (warm) | incidents |",
             "|---|---|---|---|---|"]  # fmt: skip
    for label, span_s in (("24 h", 86400), ("1 h", 3600), ("15 min", 900)):
        window = Window(max(first, end - dt.timedelta(seconds=span_s)), end)
        cold_s, n = incident_pass(args.store, window)
        warm = [incident_pass(args.store, window, con)[0] for _ in range(3)]
        lines.append(
            f"| {label} | {window.effective_bucket_s} s | {cold_s:.2f} s | {min(warm):.2f} s | {n} |"
        )
        print(lines[-1], flush=True)
    render_s = apptest_render(args.store, "24h")
    lines += [
        "",
        f"AppTest full render of the incident view, 24 h window (Streamlit script incl. Altair): {render_s:.2f} s",
    ]
    print(lines[-1])
    section = "\n## Dashboard (incident view)\n\n" + "\n".join(lines) + "\n"
    with args.results.open("a") as fh:
        fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
