"""Scenario load on simulated engines in virtual time: the spike fills the KV cache, the
spec-drift scenario's history lowers one traffic class's acceptance in the per-request export."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from enginescope.loadgen.generator import next_arrival_s
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.metric_registry import LabelSet
from enginescope.simfleet.prelude import play
from enginescope.simfleet.scenarios import (
    DEMO_MIX,
    SPIKE_MIX,
    class_accept_lengths,
    get_scenario,
)


def sched_labels(engine: SimEngine) -> LabelSet:
    return engine.metrics.groups[0][0].base


def drive(engine: SimEngine, scenario_name: str, duration_s: float, on_second=None, seed: int = 1) -> None:
    scenario = get_scenario(scenario_name)
    rng = random.Random(seed)
    start_s = engine.now_s()
    t_s, next_tick_s = 0.0, 1.0
    while (t_s := next_arrival_s(scenario.pattern, t_s, rng, duration_s)) is not None:
        while next_tick_s <= t_s:
            engine.advance_to(start_s + next_tick_s)
            if on_second:
                on_second(next_tick_s)
            next_tick_s += 1.0
        engine.advance_to(start_s + t_s)
        for action in scenario.actions:
            if action.at_s <= t_s and action.detail not in applied:
                applied.add(action.detail)
                hooks.get(action.detail, lambda: None)()
        mix = SPIKE_MIX if scenario_name == "spike" and 12.0 <= t_s < 30.0 else DEMO_MIX
        task, prompt, output = mix.sample(rng)
        engine.submit(prompt, max_new_tokens=output, ignore_eos=True, stream=True,
                      custom_labels={"task": task} if task else None)  # fmt: skip


applied: set[str] = set()
hooks: dict[str, object] = {}


def test_spike_with_long_prompts_fills_the_kv_cache() -> None:
    """Issue 14: the spike's KV chart peaked at 0.03; a real spike on a loaded engine fills it."""
    scenario = get_scenario("spike")
    engine = SimEngine(scenario.profile, seed=0)
    engine.advance_to(scenario.profile.startup_total_s)
    usage: dict[float, float] = {}
    applied.clear()
    hooks.clear()
    drive(
        engine,
        "spike",
        40.0,
        lambda t: usage.__setitem__(t, engine.ranks[0].kv_used / scenario.profile.kv_capacity_tokens),
    )
    before = max(v for t, v in usage.items() if t < 12)
    during = max(v for t, v in usage.items() if 12 <= t <= 32)
    assert before < 0.15 and during > 0.7, (before, during)
    gauge = engine.registry.value("sglang:token_usage", sched_labels(engine))
    assert gauge is not None and gauge > 0.3  # published in the stats reports, not just internal


def test_spec_drift_lowers_one_class_in_the_request_export(tmp_path: Path) -> None:
    """The spec-drift scenario's history (its prelude, played in virtual time) with the drift
    brought forward: only the code class's acceptance falls in the per-request export."""
    scenario = get_scenario("spec-drift")
    assert scenario.prelude is not None
    drift = next(a for a in scenario.prelude.actions if a.apply is not None)
    prelude = dataclasses.replace(
        scenario.prelude, duration_s=240.0, actions=(dataclasses.replace(drift, at_s=120.0),)
    )
    lengths = class_accept_lengths(scenario.profile, scenario.class_accept_factors)
    end_s = 1_800_000_000.0
    run = play(prelude, scenario.profile, scenario.mix, lengths, end_s=end_s, store_dir=tmp_path, seed=3)
    assert run.annotations == [(end_s - 120.0, drift.detail)]
    assert run.class_accept_lengths[("task", "code")] < lengths[("task", "code")]
    assert all(r.engine.class_accept_lengths == run.class_accept_lengths for r in run.replicas)
    by: dict[tuple[str, bool], list[float]] = {}
    records = [
        json.loads(line) for f in tmp_path.glob("requestlog/*/*.log") for line in f.read_text().splitlines()
    ]
    assert len(records) == run.submitted > 800 and {r.identity.replica for r in run.replicas} == {
        p.name for p in (tmp_path / "requestlog").iterdir()
    }
    for record in records:
        assert end_s - 240.0 < record["request_received_ts"] < record["request_finished_ts"] <= end_s
        task = json.loads(record["request_parameters"])["custom_labels"]["task"]
        late = record["request_received_ts"] > end_s - 118.0
        by.setdefault((task, late), []).append(record["spec_accept_length"])
    mean = {k: sum(v) / len(v) for k, v in by.items()}
    assert mean[("code", True)] < 0.85 * mean[("code", False)]
    for task in ("chat", "summarize"):
        assert abs(mean[(task, True)] / mean[(task, False)] - 1) < 0.08
    assert mean[("code", False)] > mean[("chat", False)] > mean[("summarize", False)]
    # what the replicas' sidecars would have scraped, on the virtual clock
    batches = [b for r in run.replicas for b in r.sidecar.batches]  # type: ignore[union-attr]
    assert len(batches) == 2 * (240 // 5 + 2)
    assert all(end_s - 240.0 <= row.ts_s <= end_s for b in batches for row in (*b.histograms, *b.gpu))
    assert {row.gpu_uuid for b in batches for row in b.gpu} and sum(len(b.histograms) for b in batches) > 100
