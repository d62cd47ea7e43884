"""The demo: a simulated Modal fleet observed by the production sidecars, playing an incident.

One asyncio process holds every simulated engine (each on its own loopback port), the fleet
and autoscaler, the router and the load generator; each replica's sidecar scrapes its engine
over HTTP from a thread and writes the shared store. Ground truth per request goes to
``<store>/groundtruth/<replica>.jsonl`` so tests can check what the store reconstructs, and the
load generator's client-side records to ``<store>/loadgen/requests.jsonl``.

With a recipe the fleet runs the recipe's simulation profile and autoscaling (the scenario's load
rescaled to that profile, the cold start compressed for the demo) and the recipe is copied to
``<store>/recipe.toml`` so its SLOs travel with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginescope.loadgen.generator import LoadConfig, LoadGenerator, RequestResult, write_results
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.fleet import Fleet, FleetConfig
from enginescope.simfleet.profile import profile_for_recipe
from enginescope.simfleet.scenarios import (
    DEMO_MAX_COLD_START_S,
    Scenario,
    ScenarioContext,
    class_accept_lengths,
    for_recipe,
    get_scenario,
)

# Headless runs stop arrivals this long before the end so requests finish before the final scrape.
_TAIL_S = 8.0
_COLD_START_GRACE_S = 30.0


@dataclass
class DemoOptions:
    store_dir: Path
    scenario: str = "spike"
    duration_s: float | None = None  # None: until cancelled (Ctrl-C)
    base_port: int = 0
    scrape_interval_s: float = 1.0
    seed: int = 0
    print_fn: Callable[[str], None] = print
    recipe: Any | None = None  # enginescope.recipes.schema.Recipe: its profile, autoscaling and SLOs
    max_cold_start_s: float = DEMO_MAX_COLD_START_S  # recipe profiles only


@dataclass
class DemoResult:
    scenario: str
    results: list[RequestResult] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    story_started_s: float | None = None  # epoch seconds when the story clock started


class _Progress:
    def __init__(self, print_fn: Callable[[str], None]) -> None:
        self._print = print_fn
        self._start_s = time.monotonic()

    def __call__(self, line: str) -> None:
        self._print(f"[{time.monotonic() - self._start_s:6.1f}s] {line}")


async def run_demo(options: DemoOptions) -> DemoResult:
    progress = _Progress(options.print_fn)
    scenario = _scenario(options, progress)
    fleet = Fleet(_fleet_config(scenario, options), on_change=progress)
    result = DemoResult(scenario.name)
    progress(f"scenario {scenario.name}: {scenario.summary}")
    progress(f"store: {options.store_dir}")
    try:
        await fleet.start(scenario.initial_replicas)
        progress(
            f"cold start of {scenario.initial_replicas} replica(s), ~{scenario.profile.startup_total_s:.0f}s"
        )
        if not await fleet.wait_ready(
            scenario.initial_replicas, scenario.profile.startup_total_s + _COLD_START_GRACE_S
        ):
            raise RuntimeError("replicas did not become ready")
        result.story_started_s = time.time()
        await _play(scenario, fleet, options, progress, result)
    finally:
        result.replicas = list(fleet.replicas)
        progress("stopping: final scrape and flush of every sidecar")
        await fleet.stop()
        write_results(result.results, options.store_dir / "loadgen" / "requests.jsonl")
        progress("stopped")
    return result


async def _play(
    scenario: Scenario,
    fleet: Fleet,
    options: DemoOptions,
    progress: Callable[[str], None],
    result: DemoResult,
) -> None:
    load = LoadGenerator(
        fleet.router,
        scenario.pattern,
        scenario.mix,
        # Clients give up after 30 s (timeouts and aborts show under overload, as in production).
        LoadConfig(model=scenario.profile.model_name, seed=options.seed, request_timeout_s=30.0),
    )
    result.results = load.results
    ctx = ScenarioContext(fleet, load)
    remaining_s = _story_budget(options, fleet)
    arrivals_s = max(remaining_s - _TAIL_S, 0.5 * remaining_s) if remaining_s is not None else math.inf
    load_task = asyncio.get_running_loop().create_task(load.run(arrivals_s))
    timeline = asyncio.get_running_loop().create_task(_timeline(scenario, ctx, progress))
    watcher = asyncio.get_running_loop().create_task(_watch(fleet, progress))
    try:
        if remaining_s is None:
            await load_task  # runs until cancelled
        else:
            deadline_s = time.monotonic() + remaining_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(load_task), remaining_s)
            await asyncio.sleep(max(0.0, deadline_s - time.monotonic()))  # keep the fleet up until the end
    finally:
        load.stop_arrivals()
        timeline.cancel()
        watcher.cancel()
        if not load_task.done():
            load_task.cancel()
        await asyncio.gather(load_task, timeline, watcher, return_exceptions=True)


def _scenario(options: DemoOptions, progress: Callable[[str], None]) -> Scenario:
    """The named scenario, with the recipe's profile and autoscaling when there is a recipe."""
    scenario = get_scenario(options.scenario)
    recipe = options.recipe
    if recipe is None:
        return scenario
    autoscaler = AutoscalerConfig(**recipe.autoscaling.simfleet_kwargs())
    scenario, derived = for_recipe(scenario, profile_for_recipe(recipe), autoscaler, options.max_cold_start_s)
    options.store_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, options.store_dir / "recipe.toml")  # SLOs travel with the store
    slo = recipe.slo
    cold = f"cold start {derived.cold_start_s:.0f}s"
    if derived.demo_cold_start_s < derived.cold_start_s:
        cold += f" compressed to {derived.demo_cold_start_s:.0f}s for the demo"
    progress(
        f"recipe {recipe.name}: {scenario.profile.model_name} on {recipe.gpu.modal_gpu}; {cold}; one replica "
        f"serves ~{derived.capacity_rps:.1f} req/s at target concurrency {autoscaler.target_inputs}"
    )
    progress(
        f"SLO p95: TTFT {slo.ttft_p95_s:g}s, ITL {slo.itl_p95_s:g}s, e2e {slo.e2e_p95_s:g}s (recipe.toml in the store)"
    )
    return scenario


def _story_budget(options: DemoOptions, fleet: Fleet) -> float | None:
    """Seconds left for load in a bounded run, counting the cold start already spent."""
    if options.duration_s is None:
        return None
    first = min((r.started_s for r in fleet.replicas.values()), default=time.time())
    return max(options.duration_s - (time.time() - first), 1.0)


async def _timeline(scenario: Scenario, ctx: ScenarioContext, progress: Callable[[str], None]) -> None:
    start_s = time.monotonic()
    for action in scenario.actions:
        await asyncio.sleep(max(0.0, start_s + action.at_s - time.monotonic()))
        ctx.fleet.annotate(action.detail)
        if action.apply is not None:
            try:
                action.apply(ctx)
            except Exception as exc:  # a failed injection must not end the demo
                progress(f"scenario action {action.detail!r} failed: {exc}")


async def _watch(fleet: Fleet, progress: Callable[[str], None]) -> None:
    """Progress lines for what the engines do: queue building up and draining."""
    queued_before = False
    while True:
        await asyncio.sleep(1.0)
        waiting = sum(r.engine.num_waiting() for r in fleet.ready())
        running = sum(r.engine.num_running() for r in fleet.ready())
        if waiting >= 5 and not queued_before:
            progress(f"queueing: {waiting} requests waiting, {running} running")
            queued_before = True
        elif waiting == 0 and queued_before:
            progress(f"queue drained: {running} running on {len(fleet.ready())} replicas")
            queued_before = False


def _fleet_config(scenario: Scenario, options: DemoOptions) -> FleetConfig:
    gpu_spec = None
    if scenario.fast_thermals:
        from enginescope.simfleet.nvml import SimGpuSpec

        gpu_spec = SimGpuSpec(thermal_tau_s=3.0)  # minutes of heating compressed into seconds
    return FleetConfig(
        profile=scenario.profile,
        autoscaler=scenario.autoscaler,
        store_dir=options.store_dir,
        base_port=options.base_port,
        scrape_interval_s=options.scrape_interval_s,
        gpu_spec=gpu_spec,
        seed=options.seed,
        class_accept_lengths=class_accept_lengths(scenario.profile, scenario.class_accept_factors),
    )
