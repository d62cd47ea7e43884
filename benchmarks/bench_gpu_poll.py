"""Cost of one GPU poll (8 simulated H100s) and RSS growth over an hour's worth of polls.

    .venv/bin/python benchmarks/bench_gpu_poll.py [--polls 3000] [--rss-polls 3600]

CPU per poll is ``time.process_time`` over many back-to-back ``GpuSource.collect`` calls.
It includes the simulator's own cost, so it is an upper bound for the source's overhead
on the Python side (real NVML calls add driver time; see gpu_check_real.py). Two runs:
the simulated clock advancing 1 s per poll (model updates on every call) and a frozen
clock (the simulator only builds its return values). RSS is VmRSS from /proc/self/status
before and after ``--rss-polls`` polls, with XID events and a thermal fault on the way;
the run is repeated under tracemalloc to read the Python heap without allocator noise.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enginescope.collectors.gpu import GpuSource  # noqa: E402
from enginescope.collectors.model import Identity  # noqa: E402
from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml  # noqa: E402

GPUS = 8


class FakeClock:
    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def make_source(clock: FakeClock) -> tuple[GpuSource, SimulatedNvml]:
    loads = [(lambda i=i: 0.1 * i + 0.2) for i in range(GPUS)]
    sim = SimulatedNvml([SimGpuSpec()] * GPUS, loads, clock=clock)
    return GpuSource(sim, Identity(replica="bench"), now_fn=clock), sim


def cpu_ms_per_poll(polls: int, advance_s: float) -> float:
    clock = FakeClock()
    source, _ = make_source(clock)
    for _ in range(50):  # warm-up: discovery, first slow read, unsupported-field caching
        clock.now_s += 1.0
        source.collect(clock.now_s)
    gc.collect()
    start = time.process_time()
    for _ in range(polls):
        clock.now_s += advance_s
        source.collect(clock.now_s)
    return (time.process_time() - start) / polls * 1e3


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def rss_growth(polls: int, measure: Callable[[], int]) -> tuple[int, int, int]:
    """(``measure()`` before, after, events seen) over ``polls`` polls at 1 simulated second each."""
    clock = FakeClock()
    source, sim = make_source(clock)
    for _ in range(200):
        clock.now_s += 1.0
        source.collect(clock.now_s)
    gc.collect()
    before = measure()
    events = 0
    for i in range(polls):
        clock.now_s += 1.0
        if i % 100 == 0:
            sim.inject_xid(i % GPUS, 31)
        if i == polls // 3:
            sim.set_cooling_failure(0, True)
        if i == 2 * polls // 3:
            sim.set_cooling_failure(0, False)
        events += len(source.collect(clock.now_s).events)
    gc.collect()
    return before, measure(), events


def traced_heap_bytes() -> int:
    return tracemalloc.get_traced_memory()[0]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=3000)
    parser.add_argument("--rss-polls", type=int, default=3600)
    args = parser.parse_args()
    advancing = cpu_ms_per_poll(args.polls, 1.0)
    frozen = cpu_ms_per_poll(args.polls, 0.0)
    before, after, events = rss_growth(args.rss_polls, rss_kib)
    tracemalloc.start()  # same run again: Python heap bytes, free of allocator noise
    heap_before, heap_after, _ = rss_growth(args.rss_polls, traced_heap_bytes)
    tracemalloc.stop()
    print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(f"| CPU per poll of {GPUS} GPUs, simulated clock +1 s/poll | {advancing:.3f} ms |")
    print(f"| CPU per poll of {GPUS} GPUs, frozen simulated clock | {frozen:.3f} ms |")
    print(
        f"| RSS over {args.rss_polls} polls ({events} events) | {before} -> {after} KiB ({after - before:+d} KiB) |"
    )
    print(
        f"| Python heap over {args.rss_polls} polls | {heap_before} -> {heap_after} B ({heap_after - heap_before:+d} B) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
