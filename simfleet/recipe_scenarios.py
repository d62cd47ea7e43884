"""Scenarios played on a recipe's engine profile instead of the demo's.

With a recipe (:func:`for_recipe`) the recipe's profile and autoscaling replace the demo's, the
cold start is compressed to at most ``DEMO_MAX_COLD_START_S`` and every arrival rate is rescaled
to what one replica of that profile serves at the recipe's target concurrency (measured on the
simulator in virtual time), so an 8B classifier and an 8-GPU MoE both show the spike and scale up.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from enginescope.loadgen.generator import ArrivalPattern, Diurnal, LogNormalTokens, RequestMix
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.scenarios import DEMO_CLASSES, DEMO_MIX, LIVE, SPIKE_S, Scenario, spike_scenario
from enginescope.simfleet.sim_request import OutputEvent

DEMO_MAX_COLD_START_S = 10.0
# Arrival ceiling for recipe scenarios: the load generator, engines and sidecars share one Python
# process on a small machine (~0.25 % of a core per request/s of short requests, measured). It only
# trims excess: a spike always stays above what one replica serves at its target concurrency.
DEMO_MAX_RPS = 150.0
# Rates relative to one replica's throughput at the recipe's target concurrency.
BASE_LOAD = 0.35  # one replica well below target: no scale-up
SPIKE_LOAD = 2.5  # ~2.5 replicas' worth of demand: scale-up (to max_containers if lower)
PRELUDE_MAX_RPS = 10.0  # ~1.5 s of CPU per 1,000 requests played in virtual time
MIN_SPIKE_LOAD = 1.3  # the floor under the DEMO_MAX_RPS trim: demand still exceeds one replica's target
LIVE_LOAD = 0.5


@dataclass(frozen=True)
class Scaled:
    """An arrival pattern with every rate multiplied by ``factor``."""

    pattern: ArrivalPattern
    factor: float

    def rate_at(self, t_s: float) -> float:
        return self.factor * self.pattern.rate_at(t_s)

    def max_rate_rps(self) -> float:
        return self.factor * self.pattern.max_rate_rps()


def compress_cold_start(profile: EngineProfile, max_s: float) -> EngineProfile:
    """Every startup phase shrunk by one factor so the cold start takes at most ``max_s``."""
    total_s = profile.startup_total_s
    if total_s <= max_s:
        return profile
    scale = max_s / total_s
    phases = ("scheduler_init_other_s", "weight_load_s", "kv_cache_allocation_s", "cuda_graph_capture_s",
              "draft_cuda_graph_capture_s", "server_warmup_s")  # fmt: skip
    return dataclasses.replace(profile, **{name: getattr(profile, name) * scale for name in phases})


def profile_mix(profile: EngineProfile) -> RequestMix:
    """The demo's prompts with the profile's output length, capped at the demo mix's (light streaming)."""
    median = min(profile.output_tokens_mean, DEMO_MIX.output.median_tokens)
    output = LogNormalTokens(median, 0.7, 1, max(int(4 * median), 8))
    return RequestMix(DEMO_MIX.prompt, output, name=f"demo-{median:g}-tokens", classes=DEMO_CLASSES)


def replica_capacity_rps(
    profile: EngineProfile, mix: RequestMix, concurrency: int, horizon_s: float = 20.0, seed: int = 0
) -> float:
    """Requests/s one engine finishes with ``concurrency`` requests always in flight.

    A closed loop on the simulator itself in virtual time (no sockets, ~0.5 s of CPU), so it holds
    for any profile: batching, prefill chunks, KV limits and speculation included. The first
    quarter of the horizon is warm-up and is not counted.
    """
    engine = SimEngine(profile, name="capacity-probe", seed=seed)
    engine.advance_to(profile.startup_total_s)
    rng = random.Random(seed)
    finished_s: list[float] = []

    def on_output(event: OutputEvent) -> None:
        if event.finished:
            finished_s.append(event.time_s)

    submitted = 0
    start_s = now_s = engine.now_s()
    while now_s < start_s + horizon_s:
        for _ in range(concurrency - (submitted - len(finished_s))):
            prompt, output = mix.prompt.sample(rng), mix.output.sample(rng)
            engine.submit(prompt, max_new_tokens=output, ignore_eos=True, stream=True, sink=on_output)
            submitted += 1
        now_s += 0.01
        engine.advance_to(now_s)
    counted_from_s = start_s + horizon_s / 4
    return sum(1 for t_s in finished_s if t_s >= counted_from_s) / (now_s - counted_from_s)


def check_fits(scenario: Scenario, profile: EngineProfile) -> None:
    """Raise ValueError when ``scenario`` cannot play on ``profile`` (its fault needs a feature)."""
    if scenario.profile.spec_enabled and not profile.spec_enabled:
        raise ValueError(
            f"scenario {scenario.name} needs speculative decoding; this recipe has speculative.method = NONE"
        )
    if scenario.needs_request_export and profile.engine != "sglang":
        raise ValueError(
            f"scenario {scenario.name} needs SGLang's per-request export (each request's acceptance "
            f"length and custom labels); {profile.engine} writes none (see docs/simulator.md)"
        )


@dataclass(frozen=True)
class RecipeLoad:
    """What :func:`for_recipe` derived, for the demo's progress line."""

    capacity_rps: float  # one replica at the target concurrency
    cold_start_s: float  # the profile's own
    demo_cold_start_s: float


def for_recipe(
    scenario: Scenario,
    profile: EngineProfile,
    autoscaler: AutoscalerConfig,
    max_cold_start_s: float = DEMO_MAX_COLD_START_S,
) -> tuple[Scenario, RecipeLoad]:
    """``scenario`` with a recipe's profile and autoscaling, its load scaled to that profile."""
    check_fits(scenario, profile)
    demo_profile = compress_cold_start(profile, max_cold_start_s)
    mix = profile_mix(profile)
    capacity_rps = replica_capacity_rps(demo_profile, mix, autoscaler.target_inputs)
    derived = RecipeLoad(capacity_rps, profile.startup_total_s, demo_profile.startup_total_s)
    initial = max(scenario.initial_replicas, autoscaler.min_containers, 1)
    if autoscaler.max_containers is not None:
        initial = min(initial, autoscaler.max_containers)
    if scenario.name == "spike":
        spike_rps = max(min(SPIKE_LOAD * capacity_rps, DEMO_MAX_RPS), MIN_SPIKE_LOAD * capacity_rps)
        base_rps = BASE_LOAD * capacity_rps
        start = "one replica" if initial == 1 else f"{initial} replicas"
        summary = (f"steady load on {start}, a {spike_rps / base_rps:.0f}x spike to {spike_rps:.0f} req/s, "
                   f"scale-up (max {autoscaler.max_containers}), recovery")  # fmt: skip
        live = Diurnal(LIVE_LOAD * capacity_rps, LIVE.amplitude, LIVE.period_s)
        # The spike outlasts the recipe's scale-up window, or the autoscaler would rightly ignore it.
        spike_s = max(SPIKE_S, autoscaler.scaleup_window_s + 12.0)
        built = spike_scenario(demo_profile, autoscaler, base_rps=base_rps, spike_rps=spike_rps, live=live,
                               summary=summary, spike_s=spike_s, initial_replicas=initial, mix=mix)  # fmt: skip
        return built, derived
    own_rps = replica_capacity_rps(scenario.profile, scenario.mix, scenario.autoscaler.target_inputs)
    factor = min(capacity_rps / own_rps, DEMO_MAX_RPS / scenario.pattern.max_rate_rps())
    prelude = scenario.prelude
    if prelude is not None:  # the same load, capped: virtual time costs CPU per request
        prelude_factor = min(factor, PRELUDE_MAX_RPS / prelude.pattern.max_rate_rps())
        prelude = dataclasses.replace(prelude, pattern=Scaled(prelude.pattern, prelude_factor))
    scaled = dataclasses.replace(
        scenario,
        profile=demo_profile,
        autoscaler=autoscaler,
        initial_replicas=initial,
        pattern=Scaled(scenario.pattern, factor),
        mix=mix,
        prelude=prelude,
    )
    return scaled, derived
