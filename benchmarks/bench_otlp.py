"""Cost of the OTLP sink and the Prometheus endpoint per sidecar tick, and backlog memory.

Run: .venv/bin/python benchmarks/bench_otlp.py   (prints a Markdown table)
"""

from __future__ import annotations

import math
import random
import statistics
import time
import tracemalloc
import urllib.request

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

from collectors.catalog import COUNTER_SIGNALS, GAUGE_SIGNALS, HISTOGRAM_SIGNALS
from collectors.model import Batch, GpuRow, HistogramRow, Identity, SampleRow, SignalRow
from exporters.otlp.config import NameStyle, OtlpConfig
from exporters.otlp.mapping import OtlpMapper
from exporters.otlp.sink import OtlpSink
from exporters.prom_endpoint import PromEndpointSink

IDENTITY = Identity(
    "ta-bench", "sglang", "llama-3.1-8b-instruct", "us-east-1", "H100", "aws", "app", "im", "h"
)
BOUNDS = (*[0.01 * 1.6**i for i in range(20)], math.inf)  # 21 buckets, like SGLang's TTFT
N_GPUS, N_RAW = 8, 1500


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


class _Down(MetricExporter):
    """An endpoint that is down: every export fails at once."""

    def __init__(self) -> None:
        super().__init__()

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


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
        size = encode_metrics(data).ByteSize()
        rows.append((f"encode_metrics + ByteSize ({names.value}, {size} bytes/tick)",
                     median_ms(lambda _b, d=data: encode_metrics(d).ByteSize(), ticks)))  # fmt: skip
        sink = OtlpSink(config, IDENTITY, exporter=_Down())
        rows.append((f"OtlpSink.write, endpoint down ({names.value})", median_ms(sink.write, ticks)))
        sink.close()

    # Python memory held per encoded backlog byte while the endpoint is down.
    config = OtlpConfig(endpoint="http://127.0.0.1:9/v1/metrics", interval_s=3600, backlog_bytes=4 * 2**20)
    tracemalloc.start()
    sink = OtlpSink(config, IDENTITY, exporter=_Down())
    base = tracemalloc.get_traced_memory()[0]
    for i in range(400):
        sink.write(tick(100 + i, rng) if i % 50 == 0 else ticks[i % 60])
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stats = sink.stats()
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
    print(f"\nBacklog: limit {config.backlog_bytes} B, held {stats.backlog_bytes} B encoded "
          f"({stats.backlog_batches} batches, {stats.dropped_batches} dropped); Python heap growth "
          f"{held / 2**20:.1f} MiB = {held / max(stats.backlog_bytes, 1):.1f}x the encoded bytes")  # fmt: skip


if __name__ == "__main__":
    main()
