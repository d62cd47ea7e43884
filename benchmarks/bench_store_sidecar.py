"""Sidecar CPU at a 1 s scrape: the Delta store vs the previous Parquet-segment store, one run.

A simulated SGLang engine (``enginescope simulate``, its own process) serves /metrics; a real
``Sidecar`` (scrape, parse, normalise, StoreWriter with flush every 2 s and compaction every
30 s) runs in a child process for ``--seconds``, once with today's writer and once with the
writer of git commit ``--old`` (its ``store/`` package loaded under another name), alternating
``--rounds`` times. Reported: CPU seconds (user+sys, all threads) per scrape, Delta commits per
table per hour, log files and bytes.

    .venv/bin/python benchmarks/bench_store_sidecar.py [--seconds 45] [--rounds 2] [--old 6e2450c]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_FILES = (
    "__init__",
    "compaction",
    "macros",
    "reader",
    "rollups",
    "sandbox",
    "schema",
    "segments",
    "writer",
)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {old_root!r})
variant, url, store, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
import enginescope.store as store_pkg
if variant == "old":
    import inspect, oldstore
    accepted = inspect.signature(oldstore.StoreWriter).parameters  # newer options are left out
    store_pkg.StoreWriter = lambda *a, **k: oldstore.StoreWriter(*a, **{{n: v for n, v in k.items() if n in accepted}})
from pathlib import Path
from enginescope.sidecar import Sidecar, SidecarConfig
sidecar = Sidecar(SidecarConfig(engine_url=url, store_dir=Path(store), replica="bench", engine="sglang"))
t0, c0 = time.time(), time.process_time()
sidecar.start()
time.sleep(seconds)
sidecar.stop()
print(json.dumps({{"cpu_s": time.process_time() - c0, "wall_s": time.time() - t0}}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def extract_old_store(commit: str, folder: Path) -> None:
    """``store/`` of ``commit`` as package ``oldstore`` (imports rewritten)."""
    pkg = folder / "oldstore"
    pkg.mkdir(parents=True)
    for name in OLD_FILES:
        text = subprocess.run(
            ["git", "show", f"{commit}:store/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (pkg / f"{name}.py").write_text(re.sub(r"enginescope\.store\b", "oldstore", text))


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/metrics", timeout=1).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"simulated engine at {url} did not come up")


def log_stats(store: Path) -> dict[str, float]:
    logs = [p for p in store.glob("*/_delta_log/*") if p.is_file()]
    commits = [p for p in logs if p.suffix == ".json"]
    per_table = {}
    for p in commits:
        per_table[p.parent.parent.name] = per_table.get(p.parent.parent.name, 0) + 1
    return {
        "log_files": len(logs),
        "log_bytes": sum(p.stat().st_size for p in logs),
        "checkpoints": sum(1 for p in logs if "checkpoint" in p.name and p.suffix == ".parquet"),
        "max_commits_per_table": max(per_table.values(), default=0),
        "data_files": sum(1 for _ in store.rglob("*.parquet"))
        - sum(1 for p in logs if p.suffix == ".parquet"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old", default="6e2450c", help="git commit of the previous store")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    extract_old_store(args.old, work / "old")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    engine = subprocess.Popen(
        [sys.executable, "-m", "enginescope", "simulate", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[dict]] = {"old": [], "new": []}
    try:
        _wait_ready(url)
        child = CHILD.format(old_root=str(work / "old"))
        for r in range(args.rounds):
            for variant in ("old", "new"):
                store = work / f"{variant}-{r}"
                out = subprocess.run(
                    [sys.executable, "-c", child, variant, url, str(store), str(args.seconds)],
                    check=True, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)},
                )  # fmt: skip
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["scrapes"] = args.seconds  # 1 s interval
                if variant == "new":
                    row |= log_stats(store)
                results[variant].append(row)
                print(variant, r, row, flush=True)
    finally:
        engine.terminate()
        engine.wait(10)
    for variant, rows in results.items():
        cpu = sum(x["cpu_s"] for x in rows) / sum(x["scrapes"] for x in rows)
        print(f"{variant}: {cpu * 1000:.1f} ms CPU per scrape ({cpu * 100:.1f}% of one core at 1 Hz)")
    old = sum(x["cpu_s"] for x in results["old"])
    new = sum(x["cpu_s"] for x in results["new"])
    print(f"new/old CPU: {new / old:.2f}x")
    last = results["new"][-1]
    hour = 3600 / args.seconds
    print(f"commits per table per hour (one sidecar): {last['max_commits_per_table'] * hour:.0f}; "
          f"log: {last['log_files']} files, {last['log_bytes'] / 1024:.0f} KiB after {args.seconds:.0f} s, "
          f"{last['checkpoints']} checkpoints; data files: {last['data_files']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
