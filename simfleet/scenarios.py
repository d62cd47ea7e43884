"""Incident scenarios for the demo: a fleet shape, a load timeline and timed fault injections.

Times are seconds since the first replicas became ready ("story time"). Each action's
``detail`` is annotated into the events table (``kind = scenario``). Every scenario tells its
whole story within ``story_s`` and then continues with live diurnal traffic.

The demo profile is Llama-3.1-70B on 4xH100 (TP4) with a compressed ~8.5 s cold start (as if
restored from a GPU memory snapshot) and a 48-request running cap, so one replica saturates at
~6-7 requests/s and queueing shows at rates a 2-core machine can stream comfortably.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simfleet.autoscaler import AutoscalerConfig
from simfleet.loadgen import ArrivalPattern, Diurnal, LogNormalTokens, Poisson, RequestMix, Schedule
from simfleet.profile import PROFILES, EngineProfile

if TYPE_CHECKING:
    from simfleet.fleet import Fleet
    from simfleet.loadgen import LoadGenerator

DEMO_PROFILE = dataclasses.replace(
    PROFILES["llama-70b-4xh100"],
    max_running_requests=48,
    decode_step_per_seq_s=0.0004,  # batch growth visibly stretches ITL ("decode queueing")
    scheduler_init_other_s=2.0,
    weight_load_s=2.5,
    kv_cache_allocation_s=0.5,
    cuda_graph_capture_s=2.0,
    server_warmup_s=1.5,
)
SPEC_PROFILE = dataclasses.replace(
    DEMO_PROFILE, spec_accept_length=3.0, spec_num_steps=3, spec_num_draft_tokens=4
)

DEMO_MIX = RequestMix(
    LogNormalTokens(180, 1.0, 8, 3000), LogNormalTokens(120, 0.7, 8, 320), name="sharegpt-demo"
)
# Long generated code/JSON after the traffic-mix change: drafts stop matching the target model.
CODEGEN_MIX = RequestMix(
    LogNormalTokens(400, 0.8, 16, 3000), LogNormalTokens(150, 0.6, 8, 320), name="codegen"
)

LIVE = Diurnal(mean_rps=2.0, amplitude=0.5, period_s=300.0)


@dataclass
class ScenarioContext:
    fleet: Fleet
    load: LoadGenerator
    state: dict[str, object] = field(default_factory=dict)  # facts actions hand to later actions


@dataclass(frozen=True)
class Action:
    at_s: float
    detail: str
    apply: Callable[[ScenarioContext], None] | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    profile: EngineProfile
    autoscaler: AutoscalerConfig
    initial_replicas: int
    pattern: ArrivalPattern
    story_s: float
    actions: tuple[Action, ...]
    mix: RequestMix = DEMO_MIX
    fast_thermals: bool = False


def _first_ready(ctx: ScenarioContext) -> object:
    replica = ctx.fleet.ready()[0]
    ctx.state["target"] = replica
    return replica


def _cooling_failure(failed: bool) -> Callable[[ScenarioContext], None]:
    def apply(ctx: ScenarioContext) -> None:
        replica = ctx.state.get("target") or _first_ready(ctx)
        replica.nvml.set_cooling_failure(0, failed)  # type: ignore[attr-defined]

    return apply


def _spec_collapse(ctx: ScenarioContext) -> None:
    ctx.load.mix = CODEGEN_MIX
    for replica in ctx.fleet.replicas.values():
        replica.engine.set_spec_accept_length(1.3)


def _crash(ctx: ScenarioContext) -> None:
    _first_ready(ctx).engine.crash()  # type: ignore[attr-defined]


def _restart(ctx: ScenarioContext) -> None:
    ctx.state["target"].engine.restart()  # type: ignore[attr-defined]


def _steady(rate_rps: float, story_s: float) -> Schedule:
    return Schedule(((0.0, Poisson(rate_rps)), (story_s, LIVE)))


SCENARIOS: dict[str, Scenario] = {
    "spike": Scenario(
        name="spike",
        summary="steady load on one replica, an 8x spike, queueing, scale-up to 3, recovery",
        profile=DEMO_PROFILE,
        autoscaler=AutoscalerConfig(
            min_containers=1, max_containers=3, target_inputs=16, max_inputs=200, scaledown_window_s=30.0
        ),
        initial_replicas=1,
        pattern=Schedule(((0.0, Poisson(1.5)), (12.0, Poisson(12.0)), (30.0, Poisson(1.5)), (45.0, LIVE))),
        story_s=45.0,
        actions=(
            Action(0.0, "baseline: steady load on one replica"),
            Action(12.0, "spike starts"),
            Action(30.0, "spike ends"),
            Action(45.0, "story complete: live diurnal traffic"),
        ),
    ),
    "thermal-throttle": Scenario(
        name="thermal-throttle",
        summary="cooling fails on one replica's GPU: temperature up, SM clock down, ITL up",
        profile=DEMO_PROFILE,
        autoscaler=AutoscalerConfig(min_containers=2, max_containers=2, target_inputs=32, max_inputs=200),
        initial_replicas=2,
        pattern=_steady(4.0, 40.0),
        story_s=40.0,
        actions=(
            Action(0.0, "baseline: steady load on two replicas"),
            Action(8.0, "cooling failure on GPU 0 of one replica", _cooling_failure(True)),
            Action(32.0, "cooling restored", _cooling_failure(False)),
            Action(40.0, "story complete: live diurnal traffic"),
        ),
        fast_thermals=True,
    ),
    "spec-collapse": Scenario(
        name="spec-collapse",
        summary="traffic mix shifts to code generation: spec accept length 3.0 -> 1.3, ITL up",
        profile=SPEC_PROFILE,
        autoscaler=AutoscalerConfig(min_containers=2, max_containers=2, target_inputs=32, max_inputs=200),
        initial_replicas=2,
        pattern=_steady(4.0, 40.0),
        story_s=40.0,
        actions=(
            Action(0.0, "baseline: chat traffic, EAGLE drafts accepted ~3 tokens/step"),
            Action(12.0, "traffic mix changes to code generation: spec acceptance collapses", _spec_collapse),
            Action(40.0, "story complete: live diurnal traffic"),
        ),
    ),
    "engine-crash": Scenario(
        name="engine-crash",
        summary="one engine crashes and restarts: counters reset, cold start, requests retried elsewhere",
        profile=DEMO_PROFILE,
        autoscaler=AutoscalerConfig(min_containers=2, max_containers=2, target_inputs=32, max_inputs=200),
        initial_replicas=2,
        pattern=_steady(3.0, 40.0),
        story_s=40.0,
        actions=(
            Action(0.0, "baseline: steady load on two replicas"),
            Action(6.0, "engine crashes", _crash),
            Action(7.0, "engine process restarts (cold start)", _restart),
            Action(40.0, "story complete: live diurnal traffic"),
        ),
    ),
}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
