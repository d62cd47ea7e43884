"""Every recipe's simulation profile drives a short headless demo; recipe load shapes and ``simulate``.

All recipes play the spike scenario concurrently in one event loop (as ``enginescope demo
--headless --recipe FILE`` does, one process each). The classifier runs a little longer so its
spike starts: it checks that the rescaled load really scales the fleet up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path

import pytest

from enginescope import cmd_simulate
from enginescope.cli import CliError
from enginescope.collectors.quantile import histogram_quantile
from enginescope.demo import DemoOptions, run_demo
from enginescope.recipes.schema import Recipe, load_all, load_recipe
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.profile import profile_for_recipe
from enginescope.simfleet.recipe_scenarios import (
    DEMO_MAX_COLD_START_S,
    MIN_SPIKE_LOAD,
    compress_cold_start,
    for_recipe,
    profile_mix,
    replica_capacity_rps,
)
from enginescope.simfleet.scenarios import get_scenario

RECIPES = {recipe.name: recipe for recipe in load_all()}
SPIKE_RECIPE = "qwen3-8b-classifier-h100"  # scale-up window 0: the spike scales it up at once
DURATION_S = {name: 38.0 if name == SPIKE_RECIPE else 30.0 for name in RECIPES}


def autoscaler_of(recipe: Recipe) -> AutoscalerConfig:
    return AutoscalerConfig(**recipe.autoscaling.simfleet_kwargs())


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("recipe-demo")
    played = {name: (root / name, []) for name in RECIPES}

    async def play_all() -> None:
        await asyncio.gather(
            *(
                run_demo(
                    DemoOptions(
                        store_dir=store,
                        duration_s=DURATION_S[name],
                        recipe=RECIPES[name],
                        print_fn=lines.append,
                        seed=index,
                    )
                )
                for index, (name, (store, lines)) in enumerate(played.items())
            )
        )

    asyncio.run(play_all())
    return played


def connect(store: Path):  # type: ignore[no-untyped-def]
    from enginescope.store import open_store

    return open_store(store)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_demo_store_reflects_the_recipe(demos, name: str) -> None:  # type: ignore[no-untyped-def]
    recipe = RECIPES[name]
    store, lines = demos[name]
    model = recipe.model.served_name
    con = connect(store)

    identities = [json.loads(p.read_text()) for p in (store / "replicas").glob("*.json")]
    replicas = [i for i in identities if i["replica"] != "fleet"]
    assert len(replicas) >= 1
    assert {i["model"] for i in identities} == {model}
    gpu = recipe.gpu.type if recipe.gpu.count == 1 else f"{recipe.gpu.type}:{recipe.gpu.count}"
    assert {i["gpu_type"] for i in replicas} == {gpu}

    ready = {row[0] for row in con.sql("select replica from events where kind = 'engine_ready'").fetchall()}
    assert ready and ready <= {i["replica"] for i in replicas}

    rows = con.sql("select model, bounds, counts from histograms where signal = 'ttft_seconds'").fetchall()
    assert {row[0] for row in rows} == {model}
    bounds = list(rows[0][1])
    counts = [sum(row[2][i] for row in rows) for i in range(len(bounds))]
    assert counts[-1] > 0
    quantiles = [histogram_quantile(q, bounds, counts) for q in (0.5, 0.95, 0.99)]
    assert all(math.isfinite(q) and q > 0 for q in quantiles), quantiles
    assert quantiles == sorted(quantiles)

    # The SLOs travel with the store, for the dashboard (--recipe <store>/recipe.toml).
    assert load_recipe(store / "recipe.toml").slo == recipe.slo
    cold_s = profile_for_recipe(recipe).startup_total_s
    assert any(
        f"cold start {cold_s:.0f}s compressed to {DEMO_MAX_COLD_START_S:.0f}s" in line for line in lines
    )
    results = [json.loads(line) for line in (store / "loadgen" / "requests.jsonl").read_text().splitlines()]
    assert sum(r["ok"] for r in results) >= 10


@pytest.mark.slow
def test_spike_scales_the_classifier_fleet_up(demos) -> None:  # type: ignore[no-untyped-def]
    store, _ = demos[SPIKE_RECIPE]
    con = connect(store)
    spike = con.sql(
        "select epoch(ts) from events where kind = 'scenario' and detail = 'spike starts'"
    ).fetchall()
    assert spike, "the spike never started"
    scale_ups = con.sql("select epoch(ts), replica_count from events where kind = 'scale_up'").fetchall()
    before = max(count for ts_s, count in scale_ups if ts_s < spike[0][0])
    during = [count for ts_s, count in scale_ups if ts_s >= spike[0][0]]
    assert during and max(during) > before, (before, scale_ups)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_spike_load_is_derived_from_the_profile(name: str) -> None:
    recipe = RECIPES[name]
    autoscaler = autoscaler_of(recipe)
    scenario, derived = for_recipe(get_scenario("spike"), profile_for_recipe(recipe), autoscaler)
    base_rps, spike_rps = scenario.pattern.rate_at(1.0), scenario.pattern.rate_at(13.0)
    # One replica below its target concurrency before the spike, over it during the spike.
    assert base_rps < 0.5 * derived.capacity_rps
    assert spike_rps >= MIN_SPIKE_LOAD * derived.capacity_rps * 0.999
    spike_s = [a.at_s for a in scenario.actions if a.detail == "spike ends"][0] - 12.0
    assert spike_s > autoscaler.scaleup_window_s
    assert scenario.profile.startup_total_s == pytest.approx(min(DEMO_MAX_COLD_START_S, derived.cold_start_s))
    assert scenario.profile.model_name == recipe.model.served_name
    assert scenario.autoscaler == autoscaler


def test_capacity_follows_the_profile() -> None:
    classifier = profile_for_recipe(RECIPES["qwen3-8b-classifier-h100"])
    moe = profile_for_recipe(RECIPES["glm-5.2-fp8-8xh200"])
    assert profile_mix(classifier).output.median_tokens == 4
    small = replica_capacity_rps(classifier, profile_mix(classifier), 16)
    large = replica_capacity_rps(moe, profile_mix(moe), 16)
    # 4-token labels finish an order of magnitude faster than 120-token MoE answers.
    assert small > 5 * large > 0
    # More concurrency, more throughput (continuous batching), below the running cap.
    assert replica_capacity_rps(moe, profile_mix(moe), 32) > 1.3 * large


def test_cold_start_compression_keeps_phase_shares() -> None:
    profile = profile_for_recipe(RECIPES["glm-5.2-fp8-8xh200"])
    short = compress_cold_start(profile, 10.0)
    assert short.startup_total_s == pytest.approx(10.0)
    assert short.weight_load_s / short.startup_total_s == pytest.approx(
        profile.weight_load_s / profile.startup_total_s
    )
    assert compress_cold_start(short, 60.0) is short


def test_spec_collapse_needs_a_speculative_recipe() -> None:
    llama = RECIPES["llama-3.1-8b-h100"]
    with pytest.raises(ValueError, match="speculative"):
        for_recipe(get_scenario("spec-collapse"), profile_for_recipe(llama), autoscaler_of(llama))


def simulate_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cmd_simulate.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_simulate_serves_the_recipe_profile() -> None:
    recipe = RECIPES["glm-5.2-fp8-8xh200"]
    profile, label = cmd_simulate._profile(simulate_args("--recipe", str(recipe.path), "--replicas", "2"))
    assert profile == profile_for_recipe(recipe)
    assert (profile.model_name, profile.tp_size, profile.ep_size) == ("glm-5.2-fp8", 8, 8)
    assert label == "recipe glm-5.2-fp8-8xh200"
    default, label = cmd_simulate._profile(simulate_args())
    assert label == "llama-8b-h100" and default.tp_size == 1


def test_simulate_rejects_a_bad_recipe(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        RECIPES["llama-3.1-8b-h100"].path.read_text().replace("max_containers = 4", "max_containers = 0")
    )
    with pytest.raises(CliError, match=r"bad\.toml: autoscaling\.max_containers"):
        cmd_simulate._profile(simulate_args("--recipe", str(bad)))
    with pytest.raises(SystemExit):
        simulate_args("--recipe", str(bad), "--profile", "llama-8b-h100")
