"""CPU cost of per-decode-step streaming vs the old 25 ms tick flush, on the real-time path.

Run: .venv/bin/python benchmarks/sim_stream_bench.py
One simulated Llama-3.1-8B engine (recipe llama-3.1-8b-h100) + its HTTP server + the load
generator in one process, closed loop at concurrency 16 for 5 s per mode. Prints process CPU
seconds per wall second and the client's ITL p50 next to the engine's histogram p50.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from enginescope import cmd_bench
from enginescope.recipes.schema import load_recipe
from enginescope.simfleet.engine import SimEngine

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "llama-3.1-8b-h100.toml"


async def one(mode: str, concurrency: int, duration_s: float) -> tuple[float, dict]:
    recipe = load_recipe(RECIPE)
    original = SimEngine._until_next_iteration_s
    if mode == "tick":  # the previous driver: flush whatever ended once per 25 ms tick
        SimEngine._until_next_iteration_s = lambda self, tick_s: tick_s  # type: ignore[method-assign]
    try:
        async with cmd_bench.simulated_engine(recipe) as url:
            cpu0, wall0 = time.process_time(), time.monotonic()
            (row,) = await cmd_bench.sweep(url, recipe, [concurrency], duration_s)
            return (time.process_time() - cpu0) / (time.monotonic() - wall0), row
    finally:
        SimEngine._until_next_iteration_s = original  # type: ignore[method-assign]


def main() -> None:
    for mode in ("tick", "per-step"):
        cpu, row = asyncio.run(one(mode, 16, 5.0))
        print(f"{mode:9s} cpu {cpu:.2f} s/s  out {row['output_tps']:.0f} tok/s  client ITL p50 "
              f"{row['client_itl_p50_s'] * 1000:.2f} ms  engine ITL p50 {row['engine_itl_p50_s'] * 1000:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
