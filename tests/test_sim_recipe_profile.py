"""A recipe's engine flags and GPU shape the simulated engine (admission caps, KV pool, GPU speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginescope.recipes.schema import load_recipe, with_gpu
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.gpus import GPUS, on_gpu
from enginescope.simfleet.profile import DEFAULT, PROFILES, profile_for_recipe
from enginescope.simfleet.recipe_profile import engine_arg_overrides

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_recipe_engine_flags_set_the_admission_caps() -> None:
    glm = profile_for_recipe(load_recipe(RECIPES / "glm-5.2-fp8-8xh200.toml"))
    assert glm.max_running_requests == 128  # --max-running-requests 128, not the profile's 256
    classifier = profile_for_recipe(load_recipe(RECIPES / "qwen3-8b-classifier-h100.toml"))
    assert (classifier.max_running_requests, classifier.chunked_prefill_size_tokens) == (64, 2048)
    vlm = profile_for_recipe(load_recipe(RECIPES / "qwen2.5-vl-7b-h100.toml"))
    base = PROFILES["vlm-7b-h100"]
    assert vlm.kv_capacity_tokens < base.kv_capacity_tokens  # --mem-fraction-static 0.8 shrinks the pool


def test_engine_args_parse_and_bad_values_name_the_flag() -> None:
    got = engine_arg_overrides(("--max-running-requests", "32", "--chunked-prefill-size=4096",
                                "--tokenizer-metrics-allowed-custom-labels", "task", "lang"), DEFAULT)  # fmt: skip
    assert got == {"max_running_requests": 32, "chunked_prefill_size_tokens": 4096,
                   "tokenizer_metrics_allowed_custom_labels": "task,lang"}  # fmt: skip
    assert engine_arg_overrides(("--max-num-seqs", "48"), DEFAULT) == {"max_running_requests": 48}  # vLLM
    with pytest.raises(ValueError, match="--max-running-requests"):
        engine_arg_overrides(("--max-running-requests", "many"), DEFAULT)


def test_running_batch_is_capped_and_the_rest_queues() -> None:
    profile = profile_for_recipe(load_recipe(RECIPES / "qwen3-8b-classifier-h100.toml"))
    engine = SimEngine(profile, seed=0)
    engine.advance_to(profile.startup_total_s)
    for _ in range(200):
        engine.submit(300, max_new_tokens=400, ignore_eos=True)
    engine.step(2.0)
    assert engine.num_running() == 64 and engine.num_waiting() == 136


def test_gpu_profiles_scale_speed_and_kv_with_the_hardware() -> None:
    assert set(GPUS) >= {"A100", "H100", "H200", "B200"}
    a100, h200, b200 = (on_gpu(DEFAULT, name) for name in ("A100", "H200", "B200"))
    assert (
        a100.decode_step_base_s
        > DEFAULT.decode_step_base_s
        > h200.decode_step_base_s
        > b200.decode_step_base_s
    )
    assert h200.kv_capacity_tokens > 1.8 * DEFAULT.kv_capacity_tokens  # 141 GB vs 80 GB, same weights
    assert a100.prefill_tokens_per_s < DEFAULT.prefill_tokens_per_s < b200.prefill_tokens_per_s
    moved = profile_for_recipe(with_gpu(load_recipe(RECIPES / "llama-3.1-8b-h100.toml"), "H200"))
    assert moved.gpu_type == "H200" and moved.decode_step_base_s == pytest.approx(h200.decode_step_base_s)


def test_low_load_ttft_of_a_large_tp8_model_is_80_to_280_ms() -> None:
    """Tokenisation, scheduling and an eager TP8 prefill of a long prompt (issue 13: real runs
    show 80-280 ms at concurrency 1 for large models)."""
    profile = profile_for_recipe(load_recipe(RECIPES / "glm-5.2-fp8-8xh200.toml"))
    engine = SimEngine(profile, seed=0)
    engine.advance_to(profile.startup_total_s)
    ttfts = []
    for prompt in (300, 1500, 3000):
        req = engine.submit(prompt, max_new_tokens=4, ignore_eos=True)
        engine.step(2.0)
        ttfts.append(req.first_token_s - req.created_s)
    assert all(0.08 <= t <= 0.28 for t in ttfts), ttfts
    assert ttfts == sorted(ttfts)
