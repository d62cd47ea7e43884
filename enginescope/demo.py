"""The demo: a simulated Modal fleet observed by the production sidecars, playing an incident.

One asyncio process holds every simulated engine (each on its own loopback port), the fleet
and autoscaler, the router and the load generator; each replica's sidecar scrapes its engine
over HTTP from a thread and writes the shared store: a local folder or an object-store URL
(``s3://bucket/prefix``, credentials from the standard AWS environment variables). What is not a
store table goes to a local working folder ``<work>`` (``DemoOptions.work_dir``; default the store
folder, so a local store holds everything): ground truth per request in
``<work>/groundtruth/<replica>.jsonl`` so tests can check what the store reconstructs, SGLang's
simulated per-request export in ``<work>/requestlog/<replica>/`` (the sidecars tail it; their
tailer state in ``<work>/state/``), and the load generator's client-side records in
``<work>/loadgen/requests.jsonl``.

With a recipe the fleet runs the recipe's simulation profile and autoscaling (the scenario's load
rescaled to that profile, the cold start compressed for the demo) and the recipe is copied to
``<work>/recipe.toml`` so its SLOs travel with a local store.

A scenario with a prelude (spec-drift) first plays its history on earlier replicas in virtual
time (``enginescope.simfleet.prelude``) while the demo's own replicas cold-start; the history's
per-request export reaches the store through the sidecar's request-log tailer before the story
begins. With speculative decoding the demo runs the product's drift monitor over the store
(``enginescope.spec_monitor``: a ``spec_acceptance_drift`` event per drop, recorded by the fleet)
and at the end writes ``enginescope spec-report``'s dataset to ``<work>/spec-report/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginescope.collectors.model import EventRow
from enginescope.loadgen.generator import LoadConfig, LoadGenerator, RequestResult, write_results
from enginescope.simfleet import prelude as prelude_play
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.fleet import Fleet, FleetConfig, local_work_dir
from enginescope.simfleet.profile import profile_for_recipe
from enginescope.simfleet.recipe_scenarios import DEMO_MAX_COLD_START_S, for_recipe
from enginescope.simfleet.scenarios import Scenario, ScenarioContext, class_accept_lengths, get_scenario
from enginescope.spec_monitor import SpecDriftMonitor
from enginescope.store.location import store_location

# Headless runs stop arrivals this long before the end so requests finish before the final scrape.
_TAIL_S = 8.0
_COLD_START_GRACE_S = 30.0
# The drift monitor checks this often (its tests run at step_s boundaries; a check finds the new ones).
_DRIFT_CHECK_S = 15.0
SPEC_REPORT_DIR = "spec-report"  # under the work folder: enginescope spec-report's dataset


@dataclass
class DemoOptions:
    store_dir: Path | str  # a folder or an object-store URL (s3://bucket/prefix)
    scenario: str = "spike"
    duration_s: float | None = None  # None: until cancelled (Ctrl-C)
    base_port: int = 0
    scrape_interval_s: float = 1.0
    seed: int = 0
    print_fn: Callable[[str], None] = print
    recipe: Any | None = None  # enginescope.recipes.schema.Recipe: its profile, autoscaling and SLOs
    max_cold_start_s: float = DEMO_MAX_COLD_START_S  # recipe profiles only
    # Local folder for what is not a store table (ground truth, request logs, ...); None: the
    # store folder. A URL store needs one.
    work_dir: Path | None = None

    @property
    def work(self) -> Path:
        """The local working folder (``work_dir``, else the store folder)."""
        work = local_work_dir(self.store_dir, self.work_dir)
        assert work is not None
        return work


@dataclass
class DemoResult:
    scenario: str
    results: list[RequestResult] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    story_started_s: float | None = None  # epoch seconds when the story clock started
    prelude_replicas: list[str] = field(default_factory=list)  # earlier replicas (virtual time)
    drifts: list[Any] = field(default_factory=list)  # views.spec_drift.Drift the monitor recorded
    spec_report: Path | None = None  # enginescope spec-report's dataset, when the demo wrote one
    work_dir: Path | None = None  # the local working folder (ground truth, request logs, loadgen)


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
    result = DemoResult(scenario.name, work_dir=options.work)
    progress(f"scenario {scenario.name}: {scenario.summary}")
    progress(f"store: {options.store_dir}")
    if not _work_is_store(options):
        progress(f"work dir: {options.work} (ground truth, request logs, load generator records)")
    monitor = _drift_monitor(scenario, fleet, options)
    try:
        started_s = time.time()
        await fleet.start(scenario.initial_replicas)
        progress(
            f"cold start of {scenario.initial_replicas} replica(s), ~{scenario.profile.startup_total_s:.0f}s"
        )
        history = None
        if scenario.prelude is not None:  # while the replicas cold-start
            history = await _prelude(scenario, fleet, options, started_s, progress)
            result.prelude_replicas = [r.identity.replica for r in history.replicas]
        if not await fleet.wait_ready(
            scenario.initial_replicas, scenario.profile.startup_total_s + _COLD_START_GRACE_S
        ):
            raise RuntimeError("replicas did not become ready")
        result.story_started_s = time.time()
        if monitor is not None and history is not None:
            monitor.since_s = history.start_s  # the first check covers the history
        await _play(scenario, fleet, options, progress, result, monitor)
    finally:
        result.replicas = list(fleet.replicas)
        if monitor is not None:
            progress("last drift check")
            await asyncio.to_thread(monitor.check)
            result.drifts = list(monitor.drifts)
        progress("stopping: final scrape and flush of every sidecar")
        await fleet.stop()
        write_results(result.results, options.work / "loadgen" / "requests.jsonl")
        if monitor is not None:
            result.spec_report = await asyncio.to_thread(
                _spec_report, options.store_dir, options.work / SPEC_REPORT_DIR, progress
            )
        progress("stopped")
    return result


async def _prelude(
    scenario: Scenario,
    fleet: Fleet,
    options: DemoOptions,
    end_s: float,
    progress: Callable[[str], None],
) -> prelude_play.PreludeRun:
    """Play the scenario's history in virtual time, ending as the demo's replicas start; load its
    per-request export into the store; record its annotations; carry its class acceptance over."""
    prelude = scenario.prelude
    assert prelude is not None
    progress(
        f"history: {prelude.duration_s / 60:.0f} min of traffic on {prelude.replicas} earlier replica(s), "
        "played on the simulator in virtual time"
    )
    began_s = time.monotonic()
    run = await asyncio.to_thread(
        prelude_play.play,
        prelude,
        scenario.profile,
        scenario.mix,
        fleet.config.class_accept_lengths,
        end_s=end_s,
        store_dir=options.store_dir,
        seed=options.seed,
        work_dir=options.work,
    )
    stored = await asyncio.to_thread(
        prelude_play.ingest,
        run,
        options.store_dir,
        fleet.config.store_request_params,
        time.time(),
        options.work,
    )
    for ts_s, detail in run.annotations:
        fleet.annotate(detail, ts_s=ts_s, replica_count=prelude.replicas)
    for key, accept_length in run.class_accept_lengths.items():
        if fleet.config.class_accept_lengths.get(key) != accept_length:
            fleet.set_class_accept_length(key, accept_length)
    progress(
        f"history: {run.submitted} requests ({stored} in the store via the request-log tailer), "
        f"played and loaded in {time.monotonic() - began_s:.1f}s"
    )
    return run


async def _play(
    scenario: Scenario,
    fleet: Fleet,
    options: DemoOptions,
    progress: Callable[[str], None],
    result: DemoResult,
    monitor: SpecDriftMonitor | None = None,
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
    stop_monitor = asyncio.Event()
    checks = None
    if monitor is not None:
        checks = asyncio.get_running_loop().create_task(monitor.run(_DRIFT_CHECK_S, stop_monitor))
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
        stop_monitor.set()
        if not load_task.done():
            load_task.cancel()
        await asyncio.gather(
            load_task, timeline, watcher, *([checks] if checks else []), return_exceptions=True
        )


def _scenario(options: DemoOptions, progress: Callable[[str], None]) -> Scenario:
    """The named scenario, with the recipe's profile and autoscaling when there is a recipe."""
    scenario = get_scenario(options.scenario)
    recipe = options.recipe
    if recipe is None:
        return scenario
    autoscaler = AutoscalerConfig(**recipe.autoscaling.simfleet_kwargs())
    scenario, derived = for_recipe(scenario, profile_for_recipe(recipe), autoscaler, options.max_cold_start_s)
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, work / "recipe.toml")  # SLOs travel with a local store
    slo = recipe.slo
    cold = f"cold start {derived.cold_start_s:.0f}s"
    if derived.demo_cold_start_s < derived.cold_start_s:
        cold += f" compressed to {derived.demo_cold_start_s:.0f}s for the demo"
    progress(
        f"recipe {recipe.name}: {scenario.profile.model_name} on {recipe.gpu.modal_gpu}; {cold}; one replica "
        f"serves ~{derived.capacity_rps:.1f} req/s at target concurrency {autoscaler.target_inputs}"
    )
    progress(
        f"SLO p95: TTFT {slo.ttft_p95_s:g}s, ITL {slo.itl_p95_s:g}s, e2e {slo.e2e_p95_s:g}s (recipe.toml in {_where(options)})"
    )
    return scenario


def _where(options: DemoOptions) -> str:
    return "the store" if _work_is_store(options) else "the work dir"


def _work_is_store(options: DemoOptions) -> bool:
    """The work folder is the store folder (a local store without a separate work_dir)."""
    location = store_location(options.store_dir)
    return location.is_local and options.work.resolve() == location.path


def _story_budget(options: DemoOptions, fleet: Fleet) -> float | None:
    """Seconds left for load in a bounded run, counting the cold start already spent."""
    if options.duration_s is None:
        return None
    first = min((r.started_s for r in fleet.replicas.values()), default=time.time())
    return max(options.duration_s - (time.time() - first), 1.0)


async def _timeline(scenario: Scenario, ctx: ScenarioContext, progress: Callable[[str], None]) -> None:
    start_s, wall_start_s = time.monotonic(), time.time()
    for action in scenario.actions:
        await asyncio.sleep(max(0.0, start_s + action.at_s - time.monotonic()))
        # Stamped at the scheduled instant (when the load pattern switches), not when this task
        # woke up: a busy event loop must not make the fault look later than its effects.
        ctx.fleet.annotate(action.detail, ts_s=wall_start_s + action.at_s)
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


def _drift_monitor(scenario: Scenario, fleet: Fleet, options: DemoOptions) -> SpecDriftMonitor | None:
    """The product's speculative-acceptance drift monitor over the demo's store, when the engines
    speculate and write SGLang's per-request export; its events are the fleet's."""
    profile = scenario.profile
    if not profile.spec_enabled or profile.engine != "sglang" or not fleet.config.request_log:
        return None

    def emit(event: EventRow) -> None:
        fleet.record(event.kind, event.detail, ts_s=event.ts_s)

    return SpecDriftMonitor(options.store_dir, emit=emit)


def _spec_report(store: Path | str, out: Path, progress: Callable[[str], None]) -> Path | None:
    """``enginescope spec-report --store STORE --out WORK/spec-report --force``, as a user would."""
    from enginescope import cmd_spec_report
    from enginescope.cli import CliError

    parser = argparse.ArgumentParser()
    cmd_spec_report.add_arguments(parser)
    args = parser.parse_args(["--store", str(store), "--out", str(out), "--force"])
    try:
        with contextlib.redirect_stdout(io.StringIO()) as summary:
            cmd_spec_report.run(args)
    except CliError as exc:
        progress(f"spec-report: not written ({exc})")
        return None
    for line in summary.getvalue().splitlines():
        progress(line.strip())
    return out


def _fleet_config(scenario: Scenario, options: DemoOptions) -> FleetConfig:
    gpu_spec = None
    if scenario.fast_thermals:
        from enginescope.simfleet.nvml import SimGpuSpec

        gpu_spec = SimGpuSpec(thermal_tau_s=3.0)  # minutes of heating compressed into seconds
    return FleetConfig(
        profile=scenario.profile,
        autoscaler=scenario.autoscaler,
        store_dir=options.store_dir,
        work_dir=options.work,
        base_port=options.base_port,
        scrape_interval_s=options.scrape_interval_s,
        gpu_spec=gpu_spec,
        seed=options.seed,
        class_accept_lengths=class_accept_lengths(scenario.profile, scenario.class_accept_factors),
    )
