"""Data points per minute (DPM) one replica sends over OTLP: per scrape (before) vs per export
interval (after), side by side with the OTel SDK's PeriodicExportingMetricReader.

Workload: the real SGLang 0.5.23 exposition (tests/fixtures) scraped every 1 s, unchanging
(an idle replica: the case where per-scrape export was worst and idle histograms vanished),
plus one GPU. Our numbers run on virtual time (10 scraped minutes); the SDK runs in real time
with its own periodic reader and an exporter that counts points.

Run: .venv/bin/python benchmarks/bench_otlp_dpm.py   (~25 s; prints a Markdown table)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader

from enginescope.collectors.model import Batch, GpuRow, Identity
from enginescope.collectors.normalise import Normaliser
from enginescope.exporters.otlp.config import NameStyle, OtlpConfig, Temporality
from enginescope.exporters.otlp.mapping import OtlpMapper

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/sglang/0.5.23-single-gpu/metrics.txt"
IDENTITY = Identity("ta-bench", "sglang", "meta-llama/Llama-3.1-8B-Instruct")
SCRAPE_S, MINUTES = 1.0, 10
T0_S = 1.78e9
GPU = {"gpu_index": 0, "gpu_name": "NVIDIA H100 80GB HBM3", "power_w": 300.0, "temperature_c": 60,
       "gpu_utilization_pct": 0.0, "fb_used_bytes": 7e10, "fb_total_bytes": 8e10, "sm_clock_mhz": 1980,
       "clock_event_reasons": 0}  # fmt: skip


def scrapes() -> list[Batch]:
    text, normaliser = FIXTURE.read_text(), Normaliser("sglang")
    out = []
    for i in range(int(MINUTES * 60 / SCRAPE_S)):
        ts = T0_S + i * SCRAPE_S
        scrape = normaliser.process(text, ts)
        gpu = [GpuRow(ts, "GPU-0", {**GPU, "energy_j": 1e6 + 300 * i})]
        out.append(Batch(IDENTITY, samples=scrape.samples, histograms=scrape.histograms, signals=scrape.signals,
                         series=scrape.series, gpu=gpu))  # fmt: skip
    return out


def points(data) -> int:
    return 0 if data is None else sum(
        len(m.data_points) for rm in encode_metrics(data).resource_metrics for sm in rm.scope_metrics
        for m in (getattr(x, x.WhichOneof("data")) for x in sm.metrics)
    )  # fmt: skip


def ours(
    batches: list[Batch],
    interval_s: float | None,
    temporality=Temporality.CUMULATIVE,
    names=NameStyle.SEMCONV,
) -> float:
    """DPM of the mapper; ``interval_s=None``: one export per scrape (the behaviour before)."""
    config = OtlpConfig(endpoint="http://x/v1/metrics", temporality=temporality, names=names)
    mapper = OtlpMapper(config, IDENTITY)
    every_s = interval_s or SCRAPE_S
    total, exports, next_export = 0, 0, T0_S + every_s
    for batch in batches:
        mapper.update(batch)
        now = batch.signals[0].ts_s if batch.signals else next_export
        if interval_s is None or now + 1e-9 >= next_export:
            total += points(mapper.collect(now))
            exports += 1
            next_export += every_s
    return total / exports * 60.0 / every_s  # points per export x exports per minute


class _Counting(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[int] = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.exports.append(points(metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def sdk(batches: list[Batch], interval_s: float, run_s: float) -> tuple[float, int]:
    """The same series fed to SDK instruments once per scrape, exported by its periodic reader."""
    exporter = _Counting()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("bench")
    hists, counters, gauges = {}, {}, {}
    began = time.monotonic()
    for i, batch in enumerate(batches):
        for row in batch.series:  # every histogram series, with the engine's bounds
            h = hists.get(row.metric) or hists.setdefault(
                row.metric,
                meter.create_histogram(
                    row.metric.replace(":", "."), explicit_bucket_boundaries_advisory=list(row.bounds[:-1])
                ),
            )
            if i == 0:
                h.record(0.0, dict(row.labels))  # a series exists once it has a measurement
        for s in batch.samples:
            labels = dict(s.labels)
            if s.type == "counter":
                c = counters.get(s.metric) or counters.setdefault(
                    s.metric, meter.create_counter(s.metric.replace(":", "."))
                )
                c.add(s.delta or 0.0, labels)
            else:
                g = gauges.get(s.metric) or gauges.setdefault(
                    s.metric, meter.create_gauge(s.metric.replace(":", "."))
                )
                g.set(s.value, labels)
        target = began + (i + 1) * run_s / len(batches)
        time.sleep(max(0.0, target - time.monotonic()))
    provider.shutdown()
    per_export = max(exporter.exports[:-1] or exporter.exports)  # the last is shutdown's extra collect
    return per_export * 60.0 / interval_s, per_export


def main() -> None:
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # NaN gauges of the fixture
    batches = scrapes()
    sdk_points_5, per_export = sdk(batches[:12], 5.0, 11.0)  # 12 scrapes in 11 s: 2 periodic exports
    native = NameStyle.NATIVE
    rows = [
        ("semconv", "enginescope, one export per 1 s scrape (before)", ours(batches, None)),
        ("semconv", "enginescope, cumulative, 5 s export", ours(batches, 5.0)),
        ("semconv", "enginescope, cumulative, 60 s export", ours(batches, 60.0)),
        ("semconv", "enginescope, delta, 60 s export", ours(batches, 60.0, Temporality.DELTA)),
        ("native", "enginescope, one export per 1 s scrape (before)", ours(batches, None, names=native)),
        ("native", "enginescope, cumulative, 5 s export", ours(batches, 5.0, names=native)),
        ("native", "enginescope, cumulative, 60 s export", ours(batches, 60.0, names=native)),
        ("native", "OTel SDK PeriodicExportingMetricReader, cumulative, 5 s (measured)", sdk_points_5),
        (
            "native",
            "OTel SDK PeriodicExportingMetricReader, cumulative, 60 s (points/export x 1)",
            per_export,
        ),
    ]
    print("| names | exporter (1 s scrape, idle SGLang 0.5.23 replica + 1 GPU) | DPM per replica |")
    print("|---|---|---:|")
    for style, name, dpm in rows:
        print(f"| {style} | {name} | {dpm:,.0f} |")


if __name__ == "__main__":
    main()
