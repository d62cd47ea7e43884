"""The simulated vLLM 0.33.0 engine: exposition like the real one, counters that add up, demo,
bench and sidecar paths on a vLLM recipe."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from enginescope.collectors.exposition import parse_exposition
from enginescope.recipes.schema import load_recipe
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.exposition import render
from enginescope.simfleet.profile import DEFAULT, profile_for_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "vllm" / "0.33.0-plain" / "metrics.txt"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mistral-7b-vllm-h100.toml"
VLLM = dataclasses.replace(DEFAULT, engine="vllm", model_name="meta-llama/Llama-3.1-8B-Instruct")


def served(profile=VLLM, count: int = 30, **submit) -> SimEngine:
    engine = SimEngine(profile, seed=0)
    engine.advance_to(profile.startup_total_s)
    for i in range(count):
        engine.submit(300 + 10 * i, max_new_tokens=40, ignore_eos=True, stream=i % 2 == 0, **submit)
    for _ in range(200):
        if engine.drained:
            break
        engine.step(0.5)
    engine.step(5.0)
    return engine


def shape(text: str) -> dict[str, tuple[str, frozenset[str], tuple[float, ...]]]:
    """family -> (type, label keys, bucket bounds) of the vllm: families in an exposition."""
    out = {}
    for family in parse_exposition(text).families:
        if not family.name.startswith("vllm:") or family.name.endswith("_created"):
            continue
        keys = frozenset(k for ref in family.refs for k, _ in ref.series_labels)
        bounds = tuple(sorted({ref.bound for ref in family.refs if ref.role == "bucket"}))
        out[family.name] = (family.type, keys, bounds)
    return out


def test_exposition_matches_the_real_vllm_families_labels_and_buckets() -> None:
    content_type, body = render(served().registry, "application/openmetrics-text;version=1.0.0")
    assert content_type == "text/plain; version=1.0.0; charset=utf-8"  # vLLM ignores Accept
    ours, real = shape(body.decode()), shape(FIXTURE.read_text())
    shared = set(real) - {"vllm:cache_config_info"}  # its label set is vLLM's whole CacheConfig
    assert shared <= set(ours), sorted(shared - set(ours))
    for name in shared:
        assert ours[name] == real[name], name
    text = body.decode()
    assert "# TYPE vllm:request_success_created gauge" in text  # _created as its own gauge family
    bucket = text.index('vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf"')
    assert (
        bucket
        < text.index("vllm:time_to_first_token_seconds_count")
        < text.index("vllm:time_to_first_token_seconds_sum")
    )  # buckets, _count, _sum: the single-process order


def value(text: str, pattern: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer("^" + pattern + r"(?:\{[^}]*\})? (\S+)$", text, re.M))


def test_counters_add_up_and_spec_positions_decline() -> None:
    spec = dataclasses.replace(VLLM, spec_accept_length=3.0, spec_num_steps=3, spec_num_draft_tokens=4)
    engine = served(spec)
    _, body = render(engine.registry)
    text = body.decode()
    finished = value(text, r'vllm:request_success_total\{engine="0",finished_reason="length",[^}]*\}')
    assert finished == 30
    assert value(text, "vllm:time_to_first_token_seconds_count") == 30
    assert value(text, "vllm:generation_tokens_total") == 30 * 40
    drafts = value(text, "vllm:spec_decode_num_drafts_total")
    accepted = value(text, "vllm:spec_decode_num_accepted_tokens_total")
    per_pos = [value(text, rf'vllm:spec_decode_num_accepted_tokens_per_pos_total\{{engine="0",[^}}]*position="{k}"\}}')
               for k in range(3)]  # fmt: skip
    assert sum(per_pos) == accepted and per_pos[0] > per_pos[1] > per_pos[2] > 0
    assert value(text, "vllm:spec_decode_num_draft_tokens_total") == 3 * drafts
    assert 1 + accepted / drafts == pytest.approx(engine.spec_accept_length, abs=0.35)


def test_vllm_recipe_selects_the_vllm_engine_with_its_caps() -> None:
    profile = profile_for_recipe(load_recipe(RECIPE))
    assert profile.engine == "vllm" and profile.max_running_requests == 256
    assert "sglang:" not in render(served(profile, count=3).registry)[1].decode()


def test_bench_and_sidecar_catalog_run_on_a_simulated_vllm_engine() -> None:
    from enginescope import cmd_bench
    from enginescope.collectors.catalog import detect_engine

    recipe = load_recipe(RECIPE)

    async def main() -> tuple[list[dict], str]:
        async with cmd_bench.simulated_engine(recipe) as url:
            rows = await cmd_bench.sweep(url, recipe, [4], 1.5)
            from enginescope.loadgen.openai_client import http_request

            _, body = await http_request("GET", f"{url}/metrics", {})
            return rows, b"".join([chunk async for chunk in body]).decode()

    (row,), text = asyncio.run(main())
    assert row["ok"] > 0 and row["failed"] == 0
    assert row["engine_itl_p50_s"] > 0 and row["engine_ttft_p95_s"] > 0  # vLLM's own histograms
    assert detect_engine(f.name for f in parse_exposition(text).families) == "vllm"


def test_vllm_has_no_per_request_export_so_nothing_tails_one_and_spec_drift_says_why(tmp_path: Path) -> None:
    """Real vLLM writes no per-request file (its per-request data is an OpenTelemetry span without
    acceptance or custom labels, docs/simulator.md): the simulated engine writes none, the fleet
    gives its sidecars no request log to tail, and spec-drift refuses a vLLM recipe with the reason."""
    from enginescope.simfleet.fleet import Fleet, FleetConfig
    from enginescope.simfleet.recipe_scenarios import check_fits
    from enginescope.simfleet.scenarios import get_scenario

    engine = SimEngine(VLLM, seed=0, export_dir=tmp_path / "export")
    engine.advance_to(VLLM.startup_total_s)
    engine.submit(300, max_new_tokens=20, ignore_eos=True)
    engine.step(10.0)
    engine.close()
    assert not list(tmp_path.glob("export/*"))
    vllm_fleet, sglang_fleet = (
        Fleet(FleetConfig(VLLM, store_dir=tmp_path)),
        Fleet(FleetConfig(DEFAULT, store_dir=tmp_path)),
    )
    try:
        assert vllm_fleet._request_log_dir("ta-x") is None
        assert sglang_fleet._request_log_dir("ta-x") == tmp_path / "requestlog" / "ta-x"
    finally:
        for fleet in (vllm_fleet, sglang_fleet):
            fleet._events.close()
    spec = dataclasses.replace(VLLM, spec_accept_length=3.0, spec_num_steps=3, spec_num_draft_tokens=4)
    with pytest.raises(ValueError, match="per-request export"):
        check_fits(get_scenario("spec-drift"), spec)
    check_fits(get_scenario("spec-collapse"), spec)  # vLLM's spec counters show a collapse
