"""Speculative decoding in the simulated engine: chain acceptance, DFlash blocks, speed-ups."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from enginescope.simfleet.calibration import POINTS, Point, measure, spec_speedup
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.profile import DEFAULT, PROFILES, EngineProfile, ProfileError
from enginescope.simfleet.spec_decode import (
    mean_accept_length,
    position_rates,
    sample_accepted_drafts,
    solve_q,
    step_distribution,
)

CHAIN5 = dataclasses.replace(DEFAULT, spec_accept_length=3.2, spec_num_steps=4, spec_num_draft_tokens=5,
                             spec_request_sigma=0.0)  # fmt: skip


def ready(profile: EngineProfile, seed: int = 0, **kwargs) -> SimEngine:
    engine = SimEngine(profile, seed=seed, **kwargs)
    engine.step(profile.startup_total_s)
    return engine


def run_requests(engine: SimEngine, count: int, output: int = 200, **submit) -> None:
    for _ in range(count):
        engine.submit(500, max_new_tokens=output, ignore_eos=True, **submit)
    for _ in range(4000):
        if engine.drained:
            return
        engine.step(0.5)
    raise AssertionError("requests did not finish")


def test_chain_distribution_stops_at_first_rejection() -> None:
    # Issue 13: q = 0.775 per position over a 5-token step gives .23/.17/.14/.11/.36, not binomial.
    dist = step_distribution(0.775, drafts=4)
    assert dist == pytest.approx([0.23, 0.17, 0.14, 0.11, 0.36], abs=0.006)
    assert position_rates(0.775, drafts=4) == pytest.approx([0.78, 0.61, 0.47, 0.36], abs=0.011)
    assert mean_accept_length(0.775, 4) == pytest.approx(1 + sum(position_rates(0.775, 4)))
    assert solve_q(mean_accept_length(0.775, 4), 4) == pytest.approx(0.775, abs=1e-6)
    rng = random.Random(3)
    draws = [sample_accepted_drafts(rng, 0.775, 4) for _ in range(40000)]
    for k, expected in enumerate(dist):
        assert draws.count(k) / len(draws) == pytest.approx(expected, abs=0.01)


def test_declining_conditional_acceptance_with_depth() -> None:
    flat, steep = position_rates(0.8, 6), position_rates(0.8, 6, decay=0.9)
    assert all(a > b for a, b in zip(flat, steep[1:], strict=False))
    assert steep[0] == pytest.approx(0.8) and steep[1] == pytest.approx(0.8 * 0.72)


def test_engine_histogram_follows_the_chain_shape(tmp_path: Path) -> None:
    engine = ready(CHAIN5, export_dir=tmp_path)
    run_requests(engine, 40, stream=True)
    engine.close()
    records = [json.loads(line) for f in tmp_path.glob("*.log") for line in f.read_text().splitlines()]
    hist = [sum(r["spec_correct_drafts_histogram"][k] for r in records) for k in range(5)]
    shares = [h / sum(hist) for h in hist]
    for share, expected in zip(shares, (0.23, 0.17, 0.14, 0.11, 0.36), strict=True):
        assert share == pytest.approx(expected, abs=0.03)  # the binomial model gave .04/.20/.36/.31/.10
    for r in records:
        assert r["spec_num_proposed_drafts"] == r["spec_verify_ct"] * 4
        assert r["spec_accept_length"] == pytest.approx(r["completion_tokens"] / r["spec_verify_ct"])
        assert sum(r["spec_correct_drafts_histogram"]) == r["spec_verify_ct"]


def test_per_request_acceptance_varies_around_the_class_mean(tmp_path: Path) -> None:
    spread = dataclasses.replace(CHAIN5, spec_request_sigma=0.6)
    engine = ready(spread, export_dir=tmp_path)
    run_requests(engine, 60, stream=True)
    engine.close()
    lengths = [json.loads(line)["spec_accept_length"] for f in tmp_path.glob("*.log")
               for line in f.read_text().splitlines()]  # fmt: skip
    lengths.sort()
    assert lengths[-6] - lengths[5] > 0.6  # requests differ, as real prompts do
    assert 2.7 < sum(lengths) / len(lengths) < 3.6


def test_traffic_class_has_its_own_acceptance(tmp_path: Path) -> None:
    engine = ready(CHAIN5, export_dir=tmp_path)
    engine.set_class_accept_length("task", "code", 4.2)
    engine.set_class_accept_length("task", "summarize", 2.0)
    run_requests(engine, 20, stream=True, custom_labels={"task": "code"})
    run_requests(engine, 20, stream=True, custom_labels={"task": "summarize"})
    engine.close()
    by_class: dict[str, list[float]] = {}
    for f in tmp_path.glob("*.log"):
        for line in f.read_text().splitlines():
            record = json.loads(line)
            task = json.loads(record["request_parameters"])["custom_labels"]["task"]
            by_class.setdefault(task, []).append(record["spec_accept_length"])
    mean = {k: sum(v) / len(v) for k, v in by_class.items()}
    assert mean["code"] == pytest.approx(4.2, abs=0.25) and mean["summarize"] == pytest.approx(2.0, abs=0.2)


def test_dflash_block_profile_validates_its_block() -> None:
    dflash = EngineProfile.from_mapping({"spec_method": "DFLASH", "spec_num_draft_tokens": 16,
                                         "spec_accept_length": 4.5, "spec_num_steps": 1})  # fmt: skip
    assert dflash.spec_max_accept_tokens == 16  # one drafter pass drafts the whole block
    with pytest.raises(ProfileError, match="spec_method"):
        EngineProfile.from_mapping({"spec_method": "MEDUSA"})


@pytest.mark.parametrize("point", [p for p in POINTS if p.fitted], ids=lambda p: p.name)
def test_published_operating_points_within_30_percent(point: Point) -> None:
    assert 0.7 <= measure(point, horizon_s=12.0) / point.published <= 1.3


def test_spec_speedup_falls_with_batch_and_dflash_beats_mtp_single_stream() -> None:
    eagle = PROFILES["llama-8b-h100-eagle3"]
    gains = [spec_speedup(eagle, batch, horizon_s=10.0) for batch in (1, 16, 64)]
    assert gains[0] > gains[1] > gains[2] > 1.0
    dflash, mtp = (
        spec_speedup(PROFILES[k], 1, horizon_s=10.0) for k in ("qwen3-8b-h100-dflash", "qwen3-8b-h100-mtp")
    )
    assert dflash > 1.4 * mtp
    # the block verify is 16 tokens wide, so DFlash's gain shrinks faster with batch than the chain's
    assert spec_speedup(PROFILES["qwen3-8b-h100-dflash"], 64, horizon_s=10.0) < 0.75 * dflash
