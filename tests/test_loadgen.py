"""Load generator: arrival processes, length mix, router policies, OpenAI client vs a simulated engine."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import statistics
import time

import pytest

from enginescope.loadgen.generator import (
    Diurnal,
    LoadConfig,
    LoadGenerator,
    LogNormalTokens,
    Poisson,
    RequestMix,
    RequestResult,
    Schedule,
    Spike,
    Step,
    arrival_offsets,
    make_pattern,
    percentile,
    summarize,
)
from enginescope.loadgen.router import NoBackendError, Router
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.profile import DEFAULT
from enginescope.simfleet.server import serve


def test_poisson_mean_rate_within_tolerance() -> None:
    rate_rps, duration_s = 20.0, 500.0
    offsets = arrival_offsets(Poisson(rate_rps), duration_s, seed=7)
    expected = rate_rps * duration_s  # 10_000 arrivals, sd = 100
    assert abs(len(offsets) - expected) < 4 * math.sqrt(expected)
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    # Exponential gaps: mean = sd = 1 / rate.
    assert statistics.mean(gaps) == pytest.approx(1 / rate_rps, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / rate_rps, rel=0.05)


def count_in(offsets: list[float], start_s: float, end_s: float) -> int:
    return sum(1 for t in offsets if start_s <= t < end_s)


def test_spike_shape() -> None:
    pattern = Spike(base_rps=5.0, peak_rps=40.0, start_s=100.0, duration_s=50.0)
    offsets = arrival_offsets(pattern, 250.0, seed=3)
    before = count_in(offsets, 0, 100) / 100
    during = count_in(offsets, 100, 150) / 50
    after = count_in(offsets, 150, 250) / 100
    assert before == pytest.approx(5.0, rel=0.2)
    assert during == pytest.approx(40.0, rel=0.1)
    assert after == pytest.approx(5.0, rel=0.2)


def test_step_and_diurnal_and_schedule_rates() -> None:
    assert [Step(2, 6, 10).rate_at(t) for t in (0, 9.9, 10, 50)] == [2, 2, 6, 6]
    day = Diurnal(mean_rps=10, amplitude=0.5, period_s=100)
    assert day.rate_at(0) == pytest.approx(5)  # trough first
    assert day.rate_at(50) == pytest.approx(15)
    assert day.max_rate_rps() == pytest.approx(15)
    offsets = arrival_offsets(day, 1000.0, seed=1)
    assert len(offsets) == pytest.approx(10_000, rel=0.05)  # mean over whole periods
    schedule = Schedule(((0.0, Poisson(1)), (20.0, Step(3, 9, 5))))
    assert [schedule.rate_at(t) for t in (0, 19, 20, 24.9, 25, 99)] == [1, 1, 3, 3, 9, 9]
    assert schedule.max_rate_rps() == 9


def test_make_pattern_names_and_errors() -> None:
    spike = make_pattern("spike", 2.0, 100.0)
    assert spike.rate_at(10) == 2.0 and spike.rate_at(50) == 8.0
    with pytest.raises(ValueError, match="unknown pattern 'burst'"):
        make_pattern("burst", 1.0, 10.0)
    with pytest.raises(ValueError, match="rate"):
        make_pattern("poisson", 0.0, 10.0)


def test_lognormal_lengths_median_and_clipping() -> None:
    rng = random.Random(5)
    dist = LogNormalTokens(median_tokens=200, sigma=1.0, min_tokens=10, max_tokens=2000)
    samples = [dist.sample(rng) for _ in range(20_000)]
    assert statistics.median(samples) == pytest.approx(200, rel=0.05)
    assert min(samples) >= 10 and max(samples) <= 2000
    assert max(samples) == 2000  # the long tail is clipped, not dropped


def test_percentile_is_exact_linear_interpolation() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 0.5))


def test_summary_uses_every_gap_and_only_successes() -> None:
    ok = RequestResult("a", 0, 0, 10, 5, ok=True, ttft_s=0.1, e2e_s=1.0, itl_s=[0.01, 0.03], output_tokens=3)
    slow = RequestResult("b", 0, 0, 10, 5, ok=True, ttft_s=0.3, e2e_s=2.0, itl_s=[0.05], output_tokens=2)
    failed = RequestResult("c", 0, 0, 10, 5, ok=False, ttft_s=9.0, attempts=3, error="boom")
    summary = summarize([ok, slow, failed])
    assert summary["requests"] == 3 and summary["ok"] == 2 and summary["failed"] == 1
    assert summary["retried"] == 1 and summary["output_tokens"] == 5
    assert summary["ttft_s"]["p50"] == pytest.approx(0.2)
    assert summary["itl_s"]["p50"] == pytest.approx(0.03)


# --- router -----------------------------------------------------------------------------


def test_least_outstanding_balances_and_caps() -> None:
    async def scenario() -> None:
        router = Router("least-outstanding", max_inputs=2)
        router.set_backends({"a": "http://a", "b": "http://b"})
        leases = [await router.acquire() for _ in range(4)]
        assert sorted(lease.replica for lease in leases) == ["a", "a", "b", "b"]
        assert router.outstanding() == {"a": 2, "b": 2}
        waiting = asyncio.ensure_future(router.acquire())
        await asyncio.sleep(0.01)
        assert router.backlog == 1 and not waiting.done()
        router.release(leases[2])
        lease = await asyncio.wait_for(waiting, 1.0)
        assert lease.replica == leases[2].replica and router.backlog == 0

    asyncio.run(scenario())


def test_router_waits_for_first_backend_and_times_out() -> None:
    async def scenario() -> None:
        router = Router("p2c", seed=1)
        with pytest.raises(NoBackendError):
            await router.acquire(timeout_s=0.05)
        waiting = asyncio.ensure_future(router.acquire())
        await asyncio.sleep(0.01)
        router.set_backends({"late": "http://late"})
        assert (await asyncio.wait_for(waiting, 1.0)).replica == "late"

    asyncio.run(scenario())


def test_p2c_prefers_less_loaded_and_exclude() -> None:
    async def scenario() -> None:
        router = Router("p2c", seed=2)
        router.set_backends({name: f"http://{name}" for name in "abc"})
        picked = set()
        for _ in range(30):
            lease = await router.acquire(exclude=["a"])
            picked.add(lease.replica)
            router.release(lease)
        assert picked == {"b", "c"}
        # Load "a" alone, then offer all three: p2c never picks the unique most loaded one.
        router.set_backends({"a": "http://a"})
        held = [await router.acquire() for _ in range(3)]
        router.set_backends({name: f"http://{name}" for name in "abc"})
        for _ in range(50):
            lease = await router.acquire()
            assert lease.replica != "a"
            router.release(lease)
        assert router.outstanding() == {"a": len(held)}

    asyncio.run(scenario())


# --- against a simulated engine -----------------------------------------------------------

FAST = dataclasses.replace(
    DEFAULT,
    scheduler_init_other_s=0.1,
    weight_load_s=0.1,
    kv_cache_allocation_s=0.05,
    cuda_graph_capture_s=0.1,
    server_warmup_s=0.05,
)


async def drive_engine(pattern, duration_s: float, stream: bool):  # type: ignore[no-untyped-def]
    truth = GroundTruth()
    engine = SimEngine(FAST, name="sim", clock=time.monotonic, groundtruth=truth)
    server = await serve(engine)
    runner = asyncio.ensure_future(engine.run())
    try:
        while not engine.ready:
            await asyncio.sleep(0.05)
        router = Router()
        router.set_backends({"sim": f"http://127.0.0.1:{server.port}"})
        mix = RequestMix(LogNormalTokens(100, 0.5, 8, 400), LogNormalTokens(8, 0.3, 2, 16))
        start_s = time.time()
        results = await LoadGenerator(router, pattern, mix, LoadConfig(model="m", stream=stream, seed=4)).run(
            duration_s
        )
    finally:
        await server.stop()
        engine.close()
        await runner
    return results, truth, start_s


def test_poisson_rate_and_spike_shape_seen_by_engine() -> None:
    pattern = Spike(base_rps=8.0, peak_rps=40.0, start_s=3.0, duration_s=2.0)
    results, truth, start_s = asyncio.run(drive_engine(pattern, 8.0, stream=False))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    created = [r["created_ts"] - start_s for r in truth.records]
    assert len(created) == len(results)
    base = count_in(created, 0, 3) + count_in(created, 5.05, 8)
    peak = count_in(created, 3.05, 5.05)
    # Expected 48 base arrivals (sd ~7) and 80 in the spike (sd ~9).
    assert abs(base - 48) < 4 * math.sqrt(48)
    assert abs(peak - 80) < 4 * math.sqrt(80)


def test_streaming_records_client_ttft_and_every_gap() -> None:
    results, truth, _ = asyncio.run(drive_engine(Poisson(10.0), 3.0, stream=True))
    assert results and all(r.ok for r in results)
    by_tokens = {r["completion_tokens"] for r in truth.records}
    for result in results:
        assert result.output_tokens == result.max_tokens  # ignore_eos: exactly max_tokens
        assert result.output_tokens in by_tokens
        assert 0 < result.ttft_s <= result.e2e_s
        assert len(result.itl_s) >= 1 and all(gap >= 0 for gap in result.itl_s)
    # The client sees the engine's TTFT plus loopback/tick delay, never less.
    assert percentile([r.ttft_s for r in results], 0.5) >= percentile(truth.values("ttft_s"), 0.5)
