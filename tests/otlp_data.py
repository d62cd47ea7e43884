"""Deterministic batches for the OTLP tests, and the expected OTLP numbers derived from them."""

from __future__ import annotations

import dataclasses
import math
import random

from enginescope.collectors.model import Batch, GpuRow, HistogramRow, Identity, SignalRow

IDENTITY = Identity(
    replica="ta-01ABC", engine="sglang", model="llama-3.1-8b-instruct", region="us-east-1",
    gpu_type="H100", cloud_provider="aws", app="llm-serve", image_id="im-1", host="host-7",
)  # fmt: skip
TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
INTERVAL_S = 5.0
T0_S = 1_780_000_000.0


def ttft_row(rng: random.Random, ts_s: float, bounds: tuple[float, ...] = TTFT_BOUNDS) -> HistogramRow:
    per_bucket = [rng.randint(0, 9) for _ in bounds]
    cumulative, running = [], 0
    for n in per_bucket:
        running += n
        cumulative.append(float(running))
    total = float(running)
    return HistogramRow(
        ts_s, "sglang:time_to_first_token_seconds", (("model_name", IDENTITY.model),), bounds,
        tuple(cumulative), round(total * 0.3, 6), total, INTERVAL_S, "ttft_seconds",
    )  # fmt: skip


def batches(n: int, seed: int = 7, t0_s: float = T0_S) -> list[Batch]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = t0_s + (i + 1) * INTERVAL_S
        out.append(
            Batch(
                IDENTITY,
                histograms=[ttft_row(rng, ts)],
                signals=[
                    SignalRow(ts, "queue_depth", float(rng.randint(0, 20)), INTERVAL_S),
                    SignalRow(ts, "generation_tokens", float(rng.randint(100, 900)), INTERVAL_S),
                    SignalRow(ts, "prompt_tokens", float(rng.randint(100, 900)), INTERVAL_S),
                    SignalRow(ts, "gpu_power_w", 500.0, INTERVAL_S),
                ],
                gpu=[
                    GpuRow(
                        ts,
                        "GPU-aaaa",
                        {
                            "gpu_index": 0,
                            "gpu_name": "NVIDIA H100 80GB HBM3",
                            "power_w": 300.0 + i,
                            "energy_j": 1000.0 + 1500.0 * i,
                            "temperature_c": 60 + i,
                            "gpu_utilization_pct": 50.0,
                            "fb_used_bytes": 70e9,
                            "fb_total_bytes": 80e9,
                            "clock_event_reasons": 0x4 if i % 2 else 0,
                            "throttle_sw_power_cap": bool(i % 2),
                        },
                    )  # fmt: skip
                ],
            )
        )
    return out


def per_bucket(cumulative: tuple[float, ...]) -> list[int]:
    out, previous = [], 0.0
    for c in cumulative:
        out.append(int(c - previous))
        previous = c
    return out


def full_batch(
    identity: Identity, ts_s: float, rng: random.Random | None, events: tuple[str, ...] = ()
) -> Batch:
    """Every canonical signal once; ``rng=None`` gives all-zero increases (a baseline)."""
    from enginescope.collectors.catalog import COUNTER_SIGNALS, GAUGE_SIGNALS, HISTOGRAM_SIGNALS
    from enginescope.collectors.model import EventRow

    def hist(signal: str) -> HistogramRow:
        if rng is None:
            zeros = tuple(0.0 for _ in TTFT_BOUNDS)
            return HistogramRow(
                ts_s, f"sglang:{signal}", (), TTFT_BOUNDS, zeros, 0.0, 0.0, INTERVAL_S, signal
            )
        row = ttft_row(rng, ts_s)
        return dataclasses.replace(row, metric=f"sglang:{signal}", labels=(), signal=signal)

    gauges = [SignalRow(ts_s, s, 1.0 if s == "engine_up" else (rng.uniform(0, 10) if rng else 0.0), INTERVAL_S)
              for s in GAUGE_SIGNALS]  # fmt: skip
    gpu = ("gpu_power_w", "gpu_temperature_c", "gpu_utilization_pct", "gpu_sm_clock_mhz", "gpu_throttled")
    gauges += [SignalRow(ts_s, s, 1.0 if s == "gpu_throttled" else 100.0, INTERVAL_S) for s in gpu]
    counters = [
        SignalRow(ts_s, s, float(rng.randint(10, 500)) if rng else 0.0, INTERVAL_S) for s in COUNTER_SIGNALS
    ]
    return Batch(
        identity,
        histograms=[hist(s) for s in HISTOGRAM_SIGNALS],
        signals=gauges + counters,
        gpu=[GpuRow(ts_s, "GPU-aaaa", {"gpu_index": 0, "power_w": 100.0, "energy_j": 10.0 * ts_s})],
        events=[EventRow(ts_s, kind) for kind in events],
    )
