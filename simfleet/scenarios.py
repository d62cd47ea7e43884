"""Incident scenarios for the demo: a fleet shape, a load timeline and timed fault injections.

Times are seconds since the first replicas became ready ("story time"). Each action's
``detail`` is annotated into the events table (``kind = scenario``). Every scenario tells its
whole story within ``story_s`` and then continues with live diurnal traffic.

The demo runs in real time (engines on ``time.monotonic``, sidecars scraping every second), so a
story that needs more simulated time than a demo should take (the spec-drift detector compares a
300 s window with its class's own baseline of at least 200 requests) starts with a ``Prelude``:
earlier replicas serve the scenario's traffic on the same simulated engines in virtual time
(``enginescope.simfleet.prelude``, seconds of CPU for a quarter of an hour), and their per-request
export reaches the store through the production request-log tailer before the live story begins.

The demo profile is Llama-3.1-70B on 4xH100 (TP4) with a compressed ~8.5 s cold start (as if
restored from a GPU memory snapshot) and a 48-request running cap, so one replica saturates at
~6-7 requests/s and queueing shows at rates a 2-core machine can stream comfortably.

With a recipe, ``recipe_scenarios.for_recipe`` rescales a scenario to the recipe's profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from enginescope.loadgen.generator import (
    ArrivalPattern,
    Diurnal,
    LogNormalTokens,
    Poisson,
    RequestMix,
    Schedule,
    TrafficClass,
)
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.gpus import kv_capacity_tokens
from enginescope.simfleet.profile import PROFILES, EngineProfile

if TYPE_CHECKING:
    from enginescope.loadgen.generator import LoadGenerator
    from enginescope.simfleet.fleet import Fleet

_BASE_70B = PROFILES["llama-70b-4xh100"]
DEMO_PROFILE = dataclasses.replace(
    _BASE_70B,
    max_running_requests=48,
    # --mem-fraction-static 0.48 (a smaller pool than the 0.88 default): a burst of long prompts
    # fills it within seconds and retracts, as a loaded engine's does, at rates this machine runs.
    kv_capacity_tokens=kv_capacity_tokens(
        80.0, 0.48, _BASE_70B.weight_memory_gb, _BASE_70B.graph_memory_gb, _BASE_70B.kv_bytes_per_token
    ),
    request_waiting_timeout_s=20.0,  # SGLANG_REQ_WAITING_TIMEOUT: 503 + an abort record after 20 s
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

# Traffic classes by task (x-custom-labels {"task": ...}); each has its own draft acceptance.
DEMO_CLASSES = (TrafficClass("chat", 0.55), TrafficClass("code", 0.25), TrafficClass("summarize", 0.20))
DEMO_MIX = RequestMix(
    LogNormalTokens(180, 1.0, 8, 3000), LogNormalTokens(120, 0.7, 8, 320), name="sharegpt-demo",
    classes=DEMO_CLASSES,
)  # fmt: skip
# The spike is partly a batch of long-document (RAG) requests: long prompts fill the KV cache.
RAG_CLASS = TrafficClass(
    "rag", 0.25, LogNormalTokens(3000, 0.5, 600, 12000), LogNormalTokens(150, 0.6, 16, 600)
)
SPIKE_MIX = dataclasses.replace(DEMO_MIX, name="spike-with-rag", classes=(*DEMO_CLASSES, RAG_CLASS))
# Mean accepted tokens per verify step by class, relative to the engine's (accept_length - 1):
# drafts match code and templated text better than open chat, summaries worse (the per-task
# spread EAGLE-3's paper reports across MT-Bench/HumanEval/GSM8K/CNN-DM, arXiv 2503.01840).
CLASS_ACCEPT_FACTORS = {"chat": 1.0, "code": 1.15, "summarize": 0.8, "rag": 0.85}
SPEC_DRIFT_FACTOR = 0.6  # the code class after a new prompt template: 3.3 -> 2.4 tokens/step
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

    def class_accept_lengths(self) -> dict[tuple[str, str], float]:
        return dict(self.fleet.config.class_accept_lengths)

    def set_class_accept_length(self, key: tuple[str, str], accept_length: float) -> None:
        """One traffic class's mean acceptance, on every replica and on those started later."""
        self.fleet.set_class_accept_length(key, accept_length)


@dataclass(frozen=True)
class Action:
    at_s: float
    detail: str
    apply: Callable[[ScenarioContext], None] | None = None


@dataclass(frozen=True)
class Prelude:
    """Traffic the fleet served before the demo's live story, played in virtual time.

    ``replicas`` earlier replicas (their own task ids) serve ``pattern`` with the scenario's mix
    for ``duration_s`` ending when the demo's own replicas start; ``actions`` (``at_s`` seconds
    since the prelude's start) act on the prelude's engines and carry over to the live fleet.
    Arrivals stop ``drain_s`` before the end, so every request has finished by then.
    """

    duration_s: float
    replicas: int
    pattern: ArrivalPattern
    actions: tuple[Action, ...] = ()
    drain_s: float = 15.0
    scrape_interval_s: float = 5.0  # the replayed sidecars' scrape interval (virtual time)


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
    class_accept_factors: dict[str, float] = field(default_factory=lambda: dict(CLASS_ACCEPT_FACTORS))
    prelude: Prelude | None = None
    # Needs SGLang's per-request export (per-request acceptance, custom labels): not on vLLM.
    needs_request_export: bool = False


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
    ctx.fleet.config.class_accept_lengths = {}
    for replica in ctx.fleet.replicas.values():
        replica.engine.class_accept_lengths.clear()
        replica.engine.set_spec_accept_length(1.3)


def class_accept_lengths(profile: EngineProfile, factors: dict[str, float]) -> dict[tuple[str, str], float]:
    """Per-class mean acceptance for a spec profile ({} without speculation)."""
    if not profile.spec_enabled:
        return {}
    top = float(profile.spec_max_accept_tokens)
    extra = profile.spec_accept_length - 1.0
    return {("task", name): min(top, 1.0 + extra * factor) for name, factor in factors.items()}


def _spec_drift(ctx: ScenarioContext) -> None:
    """One class's acceptance falls (a client ships a new prompt template); the rest stay.

    ``ctx`` is the live fleet's context or the prelude's (``enginescope.simfleet.prelude``)."""
    key = ("task", "code")
    before = ctx.class_accept_lengths()[key]
    after = 1.0 + (before - 1.0) * SPEC_DRIFT_FACTOR
    ctx.state["spec_drift"] = (key, before, after)
    ctx.set_class_accept_length(key, after)


def _mix(mix: RequestMix) -> Callable[[ScenarioContext], None]:
    def apply(ctx: ScenarioContext) -> None:
        ctx.load.mix = mix

    return apply


def _crash(ctx: ScenarioContext) -> None:
    _first_ready(ctx).engine.crash()  # type: ignore[attr-defined]


def _restart(ctx: ScenarioContext) -> None:
    ctx.state["target"].engine.restart()  # type: ignore[attr-defined]


def _steady(rate_rps: float, story_s: float) -> Schedule:
    return Schedule(((0.0, Poisson(rate_rps)), (story_s, LIVE)))


SPEC_DRIFT_PRELUDE_S = 900.0
SPEC_DRIFT_BEFORE_LIVE_S = 240.0  # the drift happens this long before the live replicas start
SPEC_DRIFT_STORY_S = 20.0

_SPIKE_AT_S = 12.0
SPIKE_S = 18.0
_RECOVERY_S = 15.0


def spike_scenario(
    profile: EngineProfile,
    autoscaler: AutoscalerConfig,
    *,
    base_rps: float,
    spike_rps: float,
    live: ArrivalPattern,
    summary: str,
    spike_s: float = SPIKE_S,
    initial_replicas: int = 1,
    mix: RequestMix = DEMO_MIX,
    spike_mix: RequestMix | None = None,
) -> Scenario:
    """Steady load, a spike of ``spike_s`` seconds from story time 12 s, recovery, live traffic.
    ``spike_mix`` (e.g. with long RAG prompts) replaces ``mix`` while the spike lasts."""
    end_s = _SPIKE_AT_S + spike_s
    story_s = end_s + _RECOVERY_S
    return Scenario(
        name="spike",
        summary=summary,
        profile=profile,
        autoscaler=autoscaler,
        initial_replicas=initial_replicas,
        pattern=Schedule(
            (
                (0.0, Poisson(base_rps)),
                (_SPIKE_AT_S, Poisson(spike_rps)),
                (end_s, Poisson(base_rps)),
                (story_s, live),
            )
        ),
        story_s=story_s,
        actions=(
            Action(
                0.0,
                "baseline: steady load on one replica"
                if initial_replicas == 1
                else f"baseline: steady load on {initial_replicas} replicas",
            ),
            Action(_SPIKE_AT_S, "spike starts", _mix(spike_mix) if spike_mix else None),
            Action(end_s, "spike ends", _mix(mix) if spike_mix else None),
            Action(story_s, "story complete: live diurnal traffic"),
        ),
        mix=mix,
    )


SCENARIOS: dict[str, Scenario] = {
    "spike": spike_scenario(
        DEMO_PROFILE,
        AutoscalerConfig(
            min_containers=1, max_containers=3, target_inputs=16, max_inputs=200, scaledown_window_s=30.0
        ),
        base_rps=1.5,
        spike_rps=12.0,
        live=LIVE,
        summary="steady load on one replica, an 8x spike with long RAG prompts (KV fills), queueing, "
        "scale-up to 3, recovery",
        spike_mix=SPIKE_MIX,
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
        # The collapse more than halves decode speed. At 4 req/s the batch simply grew (5 -> 18
        # running) and ITL p95 barely moved (it is set by the one-token steps, common before
        # and after): a borderline incident. At 8 req/s the lost capacity shows as it does in
        # production, a decode-saturated batch (8 -> ~65 running), ITL p95 3-5x, e2e 5x.
        pattern=_steady(8.0, 50.0),
        story_s=50.0,
        actions=(
            Action(0.0, "baseline: chat traffic, EAGLE drafts accepted ~3 tokens/step"),
            Action(15.0, "traffic mix changes to code generation: spec acceptance collapses", _spec_collapse),
            Action(50.0, "story complete: live diurnal traffic"),
        ),
    ),
    "spec-drift": Scenario(
        name="spec-drift",
        summary="code requests get a new prompt template 4 min before the demo's replicas start (15 min of "
        "history played in virtual time): their draft acceptance falls ~27 %; the drift monitor records "
        "it and spec-report writes the evidence",
        profile=SPEC_PROFILE,
        autoscaler=AutoscalerConfig(min_containers=2, max_containers=2, target_inputs=32, max_inputs=200),
        initial_replicas=2,
        pattern=_steady(4.0, SPEC_DRIFT_STORY_S),
        story_s=SPEC_DRIFT_STORY_S,
        actions=(
            Action(0.0, "live: the demo's replicas serve the same traffic; code acceptance stays low"),
            Action(SPEC_DRIFT_STORY_S, "story complete: live diurnal traffic"),
        ),
        # The detector needs >= 200 requests of a class in its baseline and a 300 s window: 15
        # minutes of history at 4 req/s (code: ~1 req/s) played in virtual time before going live.
        needs_request_export=True,
        prelude=Prelude(
            duration_s=SPEC_DRIFT_PRELUDE_S,
            replicas=2,
            pattern=Poisson(4.0),
            actions=(
                Action(
                    0.0,
                    "history: chat, code and summarize traffic on two earlier replicas, EAGLE "
                    "acceptance by class (replayed on the simulator in virtual time)",
                ),  # fmt: skip
                Action(
                    SPEC_DRIFT_PRELUDE_S - SPEC_DRIFT_BEFORE_LIVE_S,
                    "code requests switch to a new prompt template: their draft acceptance falls",
                    _spec_drift,
                ),
                Action(SPEC_DRIFT_PRELUDE_S, "history ends: the demo's replicas take over"),
            ),
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
