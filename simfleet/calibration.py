"""Measured operating points of the simulated engine next to the published ones they are tuned to.

Every figure here is measured on the simulator itself in virtual time (closed loop, no sockets),
so it holds for whatever the queueing model does: batching, prefill chunks, KV limits, chain or
block speculation. ``docs/simulator.md`` prints :func:`calibration_table`; ``tests/test_sim_spec.py``
holds the speculative points to +-30 %.

Published points (sources in each ``Point.source``):

* SGLang docs, speculative_decoding.md @067ad4d3: Llama-3.1-8B-Instruct on 1x H100, MT-Bench,
  batch 1: 158.34 tok/s without speculation, 373.25 tok/s with EAGLE-3 (2.36x).
* EAGLE-3 paper (Li et al., arXiv 2503.01840), SGLang on H100: 1.38x throughput at batch 64.
* DFlash (Chen et al., arXiv 2602.06036; z-lab.ai/projects/dflash: up to 6.17x in Transformers
  at batch 1, ~2.5x EAGLE-3's speed-up): ~2.8x single-stream in SGLang serving, vs ~1.7x for MTP
  on the same model (that MTP figure has no primary source we could find). Cross-checks: DCTR/ours-draft-DFlash
  model card (SGLang 0.5.23, 2x H100, block 8): 233 vs 66 tok/s = 3.5x at 4.2 tokens/verify;
  ConstBob/tpu-spec-decode (TPU v5p, Llama-3.1-8B): DFlash 2.29x vs EAGLE-3 1.30x.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.profile import PROFILES, EngineProfile
from enginescope.simfleet.sim_request import OutputEvent


def decode_tokens_per_s(
    profile: EngineProfile, batch: int, prompt_tokens: int = 400, output_tokens: int = 256,
    horizon_s: float = 20.0, seed: int = 0,
) -> float:  # fmt: skip
    """Output tokens/s with ``batch`` requests always in flight (first quarter is warm-up)."""
    engine = SimEngine(profile, name="calibration", seed=seed)
    engine.advance_to(profile.startup_total_s)
    produced: list[tuple[float, int]] = []
    finished = [0]

    def on_output(event: OutputEvent) -> None:
        produced.append((event.time_s, event.new_tokens))
        finished[0] += event.finished

    submitted = 0
    start_s = now_s = engine.now_s()
    while now_s < start_s + horizon_s:
        for _ in range(batch - (submitted - finished[0])):
            engine.submit(prompt_tokens, max_new_tokens=output_tokens, ignore_eos=True, stream=True,
                          sink=on_output)  # fmt: skip
            submitted += 1
        now_s += 0.005
        engine.advance_to(now_s)
    counted_from_s = start_s + horizon_s / 4
    tokens = sum(n for t_s, n in produced if t_s >= counted_from_s)
    return tokens / (now_s - counted_from_s)


def poisson_medians(
    profile: EngineProfile, rate_rps: float, duration_s: float = 60.0, seed: int = 0
) -> tuple[float, float]:
    """(TTFT median, ITL median) in seconds under Poisson arrivals of ShareGPT-like requests,
    exact from the per-request ground truth (ITL weighted by tokens, as SGLang's histogram is)."""
    from enginescope.loadgen.generator import SHAREGPT_LIKE

    truth = GroundTruth()
    engine = SimEngine(profile, name="calibration", seed=seed, groundtruth=truth)
    engine.advance_to(profile.startup_total_s)
    rng = random.Random(seed)
    start_s = t_s = engine.now_s()
    while (t_s := t_s + rng.expovariate(rate_rps)) < start_s + duration_s:
        engine.advance_to(t_s)
        _, prompt, output = SHAREGPT_LIKE.sample(rng)
        engine.submit(prompt, max_new_tokens=output, ignore_eos=True, stream=True)
    while not engine.drained:
        engine.step(1.0)
    ttfts = sorted(r["ttft_s"] for r in truth.records if r["ttft_s"] is not None)
    gaps = sorted(gap for r in truth.records for interval, n in r["itl"] for gap in [interval / n] * n)
    return ttfts[len(ttfts) // 2], gaps[len(gaps) // 2]


def spec_speedup(profile: EngineProfile, batch: int, horizon_s: float = 20.0) -> float:
    """Output throughput with the profile's speculation over the same profile without it."""
    plain = dataclasses.replace(profile, spec_accept_length=1.0)
    return decode_tokens_per_s(profile, batch, horizon_s=horizon_s) / decode_tokens_per_s(
        plain, batch, horizon_s=horizon_s
    )


@dataclass(frozen=True)
class Point:
    name: str
    profile: str  # a key of PROFILES
    batch: int
    published: float
    unit: str  # "tok/s" (decode throughput), "x" (speculative speed-up), "ms TTFT" / "ms ITL" (medians)
    source: str
    fitted: bool = True  # False: reported, not tuned to (docs/simulator.md says why)


_SGL_030 = "SGLang 0.3.0, sgl-project/sglang benchmark/benchmark_vllm_060/README.md @120affb9"
POINTS = (
    Point("Llama-3.1-8B, no speculation, batch 1", "llama-8b-h100", 1, 158.34, "tok/s",
          "SGLang docs speculative_decoding.md @067ad4d3"),
    Point("EAGLE-3 speed-up, batch 1", "llama-8b-h100-eagle3", 1, 2.36, "x",
          "SGLang docs speculative_decoding.md @067ad4d3 (373.25 / 158.34 tok/s)"),
    Point("EAGLE-3 speed-up, batch 64", "llama-8b-h100-eagle3", 64, 1.38, "x", "EAGLE-3 paper, arXiv 2503.01840"),
    Point("MTP speed-up, batch 1", "qwen3-8b-h100-mtp", 1, 1.7, "x",
          "the DFlash-vs-MTP comparison our issue quotes (same model, SGLang); no primary source found, see below"),
    Point("Llama-3.1-8B, 4 req/s ShareGPT: TTFT median", "llama-8b-a100", 4, 31.98, "ms TTFT", _SGL_030, fitted=False),
    Point("Llama-3.1-8B, 4 req/s ShareGPT: ITL median", "llama-8b-a100", 4, 11.93, "ms ITL", _SGL_030),
    Point("Llama-3.1-8B, 8 req/s ShareGPT: TTFT median", "llama-8b-a100", 8, 35.68, "ms TTFT", _SGL_030, fitted=False),
    Point("Llama-3.1-8B, 8 req/s ShareGPT: ITL median", "llama-8b-a100", 8, 14.41, "ms ITL", _SGL_030),
    Point("Llama-3.1-70B TP4, 4 req/s: TTFT median", "llama-70b-4xh100", 4, 53.94, "ms TTFT", _SGL_030, fitted=False),
    Point("Llama-3.1-70B TP4, 4 req/s: ITL median", "llama-70b-4xh100", 4, 21.67, "ms ITL", _SGL_030),
    Point("Llama-3.1-70B TP4, 8 req/s: TTFT median", "llama-70b-4xh100", 8, 58.11, "ms TTFT", _SGL_030, fitted=False),
    Point("Llama-3.1-70B TP4, 8 req/s: ITL median", "llama-70b-4xh100", 8, 24.45, "ms ITL", _SGL_030),
    Point("DFlash speed-up, batch 1", "qwen3-8b-h100-dflash", 1, 2.8, "x",
          "DFlash, arXiv 2602.06036 (serving, single stream); z-lab.ai/projects/dflash"),
)  # fmt: skip


def measure(point: Point, horizon_s: float = 20.0) -> float:
    profile = PROFILES[point.profile]
    if point.unit == "x":
        return spec_speedup(profile, point.batch, horizon_s)
    if point.unit.startswith("ms"):  # batch holds the arrival rate (req/s) for latency points
        ttft_s, itl_s = poisson_medians(profile, float(point.batch), duration_s=3 * horizon_s)
        return 1000.0 * (ttft_s if point.unit == "ms TTFT" else itl_s)
    return decode_tokens_per_s(profile, point.batch, horizon_s=horizon_s)


def calibration_table(horizon_s: float = 20.0) -> list[tuple[Point, float, float]]:
    """(point, simulated, simulated / published) for every published point."""
    rows = []
    for point in POINTS:
        simulated = measure(point, horizon_s)
        rows.append((point, simulated, simulated / point.published))
    return rows


if __name__ == "__main__":  # python -m enginescope.simfleet.calibration: the docs table
    print("| operating point | profile | published | simulated | ratio | fitted | source |")
    print("|---|---|---|---|---|---|---|")
    for point, simulated, ratio in calibration_table():
        unit = point.unit
        print(f"| {point.name} | {point.profile} | {point.published:g} {unit} | {simulated:.2f} {unit} | {ratio:.2f} "
              f"| {'yes' if point.fitted else 'no'} | {point.source} |")  # fmt: skip
