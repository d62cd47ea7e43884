"""Cost of the OTLP sink and the Prometheus endpoint per sidecar tick, and backlog memory.

Run: .venv/bin/python benchmarks/bench_otlp.py   (prints Markdown tables; ~2 minutes)
"""

from __future__ import annotations

import gc
import gzip
import logging
import math
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections import deque
from dataclasses import replace

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

from enginescope.collectors.catalog import COUNTER_SIGNALS, GAUGE_SIGNALS, HISTOGRAM_SIGNALS
from enginescope.collectors.model import Batch, GpuRow, HistogramRow, Identity, SampleRow, SignalRow
from enginescope.exporters.otlp.config import NameStyle, OtlpConfig
from enginescope.exporters.otlp.mapping import OtlpMapper
from enginescope.exporters.otlp.sink import OtlpSink
from enginescope.exporters.otlp.transport import Outcome, SendResult
from enginescope.exporters.prom_endpoint import PromEndpointSink

IDENTITY = Identity(
    "ta-bench", "sglang", "llama-3.1-8b-instruct", "us-east-1", "H100", "aws", "app", "im", "h"
)
BOUNDS = (*[0.01 * 1.6**i for i in range(20)], math.inf)  # 21 buckets, like SGLang's TTFT
N_GPUS, N_RAW = 8, 1500
LIMIT_BYTES = 16 * 2**20  # the --otlp-backlog-bytes default
N_GZIP_TICKS = 9000  # gzipped ticks are ~7x smaller: this many overflow 16 MiB


def tick(i: int, rng: random.Random) -> Batch:
    ts = 1.78e9 + i
    hists = []
    for signal in HISTOGRAM_SIGNALS:
        for streaming in ("true", "false"):
            running, counts = 0.0, []
            for _ in BOUNDS:
                running += rng.randint(0, 5)
                counts.append(running)
            hists.append(HistogramRow(ts, f"sglang:{signal}", (("is_streaming", streaming),), BOUNDS, tuple(counts),
                                      running * 0.2, running, 1.0, signal))  # fmt: skip
    signals = [SignalRow(ts, s, rng.random(), 1.0) for s in (*GAUGE_SIGNALS, *COUNTER_SIGNALS)]
    gpu = [GpuRow(ts, f"GPU-{g}", {"gpu_index": g, "power_w": 500.0, "energy_j": 1e6 + i * 500, "temperature_c": 60,
                                   "gpu_utilization_pct": 90.0, "fb_used_bytes": 7e10, "fb_total_bytes": 8e10,
                                   "sm_clock_mhz": 1980, "clock_event_reasons": 0})
           for g in range(N_GPUS)]  # fmt: skip
    raw = [SampleRow(ts, f"sglang:m{k % 150}", "counter", (("tp_rank", str(k // 150)),), 1000.0 + i, 1.0, 1.0)
           for k in range(N_RAW)]  # fmt: skip
    return Batch(IDENTITY, samples=raw, histograms=hists, signals=signals, gpu=gpu)


class _Down:
    """A transport whose endpoint is down: every send fails at once (retryable)."""

    body_encoding = "none"

    def send(self, body: bytes, timeout_s: float | None = None) -> SendResult:
        return SendResult(Outcome.RETRY, "ConnectionError: endpoint down")

    def close(self) -> None:
        pass


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _SdkObjectBacklog:
    """The previous design, for comparison: SDK MetricsData kept, bounded by encoded size."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes, self.items, self.used = limit_bytes, deque(), 0

    def write(self, data) -> None:
        size = encode_metrics(data).ByteSize()
        while self.items and self.used + size > self.limit_bytes:
            self.used -= self.items.popleft()[1]
        self.items.append((data, size))
        self.used += size


def fill(write, n: int, rng: random.Random, ticks: list[Batch]) -> None:
    for i in range(n):
        write(tick(1000 + i, rng) if i % 50 == 0 else ticks[i % 60])


MEMORY_CASES = {  # name: (row label, ticks to write: enough to overflow 16 MiB)
    "sdk-objects": ("before: SDK MetricsData objects (encoded size counted)", 1600),
    "bytes-none": ("now: serialized bytes, compression none", 1600),
    "bytes-gzip": ("now: serialized bytes, compression gzip", N_GZIP_TICKS),
}


def memory_row(case: str) -> str:
    """Heap (tracemalloc) and RSS growth while the endpoint is down. Run in a fresh process so
    RSS is not skewed by what an earlier case freed; RSS is measured first, without tracemalloc."""
    rng = random.Random(1)
    ticks = [tick(i, rng) for i in range(60)]
    config = OtlpConfig(endpoint="http://127.0.0.1:9/v1/metrics", interval_s=3600, backlog_bytes=LIMIT_BYTES)

    def make_writer():
        if case == "sdk-objects":
            old, mapper = _SdkObjectBacklog(LIMIT_BYTES), OtlpMapper(config, IDENTITY)
            old.write_batch = lambda batch: old.write(mapper.convert(batch))  # type: ignore[attr-defined]
            return old, old.write_batch, lambda: old.used
        compression = case.removeprefix("bytes-")
        sink = OtlpSink(replace(config, compression=compression), IDENTITY, transport=_Down())
        return sink, sink.write, lambda: sink.stats().backlog_bytes

    label, n = MEMORY_CASES[case]
    results = []
    for traced in (False, True):
        writer, write, held = make_writer()
        write(ticks[0])  # series state and first-use caches are not backlog
        gc.collect()
        if traced:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
        fill(write, n, rng, ticks)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
        tracemalloc.stop()
        results.append(after - before)
        counted = held()
        if isinstance(writer, OtlpSink):
            writer.close()
        del writer, write, held
        gc.collect()
    rss, heap = results
    return (f"| {label} | {counted / 2**20:.2f} | {heap / 2**20:.1f} | {heap / LIMIT_BYTES:.2f}x | "
            f"{rss / 2**20:.1f} | {rss / LIMIT_BYTES:.2f}x |")  # fmt: skip


def median_ms(fn, batches: list[Batch]) -> float:
    times = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[5:])


def main() -> None:
    rng = random.Random(1)
    ticks = [tick(i, rng) for i in range(60)]
    rows = []
    for names in (NameStyle.SEMCONV, NameStyle.NATIVE):
        config = OtlpConfig(endpoint="http://127.0.0.1:9/v1/metrics", names=names, interval_s=3600)
        mapper = OtlpMapper(config, IDENTITY)
        rows.append((f"OtlpMapper.convert ({names.value})", median_ms(mapper.convert, ticks)))
        data = OtlpMapper(config, IDENTITY).convert(ticks[0])
        raw = encode_metrics(data).SerializeToString()
        rows.append((f"encode_metrics + serialize ({names.value}, {len(raw)} bytes/tick, "
                     f"{len(gzip.compress(raw))} gzipped)",
                     median_ms(lambda _b, d=data: encode_metrics(d).SerializeToString(), ticks)))  # fmt: skip
        for compression in ("none", "gzip"):
            sink = OtlpSink(replace(config, compression=compression), IDENTITY, transport=_Down())
            rows.append((f"OtlpSink.write, endpoint down ({names.value}, compression {compression})",
                         median_ms(sink.write, ticks)))  # fmt: skip
            sink.close()

    prom = PromEndpointSink(port=0)
    rows.append(("PromEndpointSink.write (incl. raw samples)", median_ms(prom.write, ticks)))
    start = time.perf_counter()
    for _ in range(20):
        body = urllib.request.urlopen(prom.url).read()
    rows.append((f"GET /metrics ({len(body)} bytes)", (time.perf_counter() - start) * 1000 / 20))
    prom.close()

    print("| what | ms per tick |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")

    print(f"\nBacklog memory, endpoint down, limit {LIMIT_BYTES} B, semconv ticks:\n")
    print("| backlog | counted MiB | heap growth MiB | heap / limit | RSS growth MiB | RSS / limit |")
    print("|---|---|---|---|---|---|")
    for case in MEMORY_CASES:
        child = [sys.executable, __file__, "--memory", case]
        print(subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        logging.getLogger("enginescope.exporters.otlp.sink").setLevel(
            logging.ERROR
        )  # "endpoint down" warnings
        print(memory_row(sys.argv[2]))
    else:
        logging.getLogger("enginescope.exporters.otlp.sink").setLevel(logging.ERROR)
        main()
