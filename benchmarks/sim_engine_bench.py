"""CPU cost and calibration of the simulated SGLang engine (virtual clock, no sleeping).

Run: .venv/bin/python benchmarks/sim_engine_bench.py
Prints CPU seconds per simulated second for N replicas at a given load, and the median TTFT/ITL
the default profile produces at several arrival rates (ShareGPT-like lengths).
"""

from __future__ import annotations

import random
import statistics
import time

from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.profile import DEFAULT


def run(replicas: int, rate_per_replica: float, sim_s: float, tick_s: float = 0.025, seed: int = 0):
    rng = random.Random(seed)
    gt = GroundTruth()
    engines = [SimEngine(DEFAULT, seed=i, groundtruth=gt) for i in range(replicas)]
    for e in engines:
        e.step(DEFAULT.startup_total_s)
    next_arrival = [e.now_s() + rng.expovariate(rate_per_replica) for e in engines]
    start = time.process_time()
    t = engines[0].now_s()
    end = t + sim_s
    while t < end:
        t += tick_s
        for i, e in enumerate(engines):
            while next_arrival[i] <= t:
                e.advance_to(next_arrival[i])
                prompt = max(4, int(rng.lognormvariate(5.5, 1.0)))
                e.submit(prompt, max_new_tokens=2048, stream=rng.random() < 0.7)
                next_arrival[i] += rng.expovariate(rate_per_replica)
            e.advance_to(t)
    cpu = time.process_time() - start
    itl = [v for v, w in gt.itl_samples() for _ in range(w)]
    return cpu / sim_s, statistics.median(gt.values("ttft_s")), statistics.median(itl), len(gt.records)


if __name__ == "__main__":
    for replicas, rate in ((1, 4.0), (6, 4.0), (6, 8.0)):
        cpu, ttft, itl, n = run(replicas, rate, 60.0)
        print(
            f"{replicas} replicas x {rate} req/s: {cpu * 100:.1f}% of one core; "
            f"median TTFT {ttft * 1000:.1f} ms, ITL {itl * 1000:.2f} ms ({n} requests)"
        )
    for rate in (2.0, 8.0, 16.0, 24.0, 32.0):
        cpu, ttft, itl, n = run(1, rate, 60.0)
        print(
            f"calibration 1 replica {rate:>4} req/s: median TTFT {ttft * 1000:8.1f} ms, ITL {itl * 1000:.2f} ms"
        )
