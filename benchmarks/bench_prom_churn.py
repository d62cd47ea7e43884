"""Endpoint memory with 100k churned series: PromEndpointSink (TTL + cap) vs prometheus_client.

Churn: every tick, 1,000 new label sets (a pid/rank/container id that replaces the old one)
each write one gauge; 100 ticks = 100,000 distinct series over the run. Measured with
tracemalloc (Python heap held after the run) and the size of one /metrics body.

- ``PromEndpointSink(ttl_s=...)``: series not written for the TTL leave; ticks are 1 s of a
  fake clock, TTL 5 s, so ~5k series stay live.
- ``prometheus_client.Gauge`` with labels (the peer): keeps every label set until the program
  calls ``remove()``; we do not, as a sidecar re-serving label sets it did not create cannot
  know when one is gone.

Run: .venv/bin/python benchmarks/bench_prom_churn.py
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import urllib.request

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.exporters.prom_endpoint import PromEndpointSink

TICKS = 100
PER_TICK = 1_000
IDENTITY = Identity("bench-replica", "sglang", "m", "us-east-1", "H100")


class Clock:
    now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def run_ours() -> tuple[int, int, int, float]:
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    sink = PromEndpointSink(port=0, ttl_s=5.0, max_series=200_000, clock=clock)
    started = time.perf_counter()
    for tick in range(TICKS):
        rows = [SignalRow(float(tick), "queue_depth", 1.0, 1.0, (("pid", str(tick * PER_TICK + i)),))
                for i in range(PER_TICK)]  # fmt: skip
        sink.write(Batch(IDENTITY, signals=rows))
        clock.now_s += 1.0
        if tick % 10 == 0:  # a scrape every 10 s expires what the TTL dropped
            urllib.request.urlopen(sink.url, timeout=30).read()
    elapsed_s = time.perf_counter() - started
    body = urllib.request.urlopen(sink.url, timeout=30).read()
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    live = sink._table.live_series  # noqa: SLF001 (benchmark introspection)
    sink.close()
    return held, len(body), live, elapsed_s


def run_client_python() -> tuple[int, int, int, float]:
    gc.collect()
    tracemalloc.start()
    registry = CollectorRegistry()
    gauge = Gauge("enginescope_queue_depth", "Requests waiting", ["replica", "pid"], registry=registry)
    started = time.perf_counter()
    for tick in range(TICKS):
        for i in range(PER_TICK):
            gauge.labels(IDENTITY.replica, str(tick * PER_TICK + i)).set(1.0)
        if tick % 10 == 0:
            generate_latest(registry)
    elapsed_s = time.perf_counter() - started
    body = generate_latest(registry)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held, len(body), TICKS * PER_TICK, elapsed_s


def main() -> None:
    print(f"{TICKS * PER_TICK:,} churned series ({PER_TICK:,} new label sets per 1 s tick)")
    print(f"{'':34}{'heap held':>12}{'/metrics body':>15}{'live series':>13}{'run':>8}")
    for name, fn in (
        ("PromEndpointSink (ttl 5 s)", run_ours),
        ("prometheus_client Gauge", run_client_python),
    ):
        held, body, live, elapsed_s = fn()
        print(f"{name:34}{held / 2**20:>10.1f} MiB{body / 2**20:>11.1f} MiB{live:>13,}{elapsed_s:>7.1f}s")


if __name__ == "__main__":
    main()
