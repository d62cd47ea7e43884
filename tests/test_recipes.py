"""Recipe loading and validation: every shipped file, and errors that name file + field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from enginescope.recipes import (
    RECIPES_DIR,
    RecipeError,
    find_recipe_for_model,
    load_all,
    load_recipe,
    with_gpu,
)
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.profile import PROFILES, profile_for_recipe

SHIPPED = sorted(RECIPES_DIR.glob("*.toml"))


def _write(tmp_path: Path, base: Path, edit) -> Path:
    """Copy ``base`` with ``edit(raw)`` applied, written back as TOML (tables only, flat values)."""
    raw = tomllib.loads(base.read_text())
    edit(raw)
    lines: list[str] = []
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    for key, value in raw.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml(value)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            lines.append(f"{key} = {_toml(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.append(f"[{name}.{key}]")
                lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
    path = tmp_path / "x.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


LLAMA = RECIPES_DIR / "llama-3.1-8b-h100.toml"


def test_ships_the_four_kinds_of_recipe():
    recipes = load_all()
    assert len(recipes) == len(SHIPPED) >= 4
    by_model = {r.model.hf_id: r for r in recipes}
    glm = by_model["zai-org/GLM-5.2-FP8"]
    assert (glm.gpu.count, glm.speculative.method, glm.parallel.ep) == (8, "EAGLE", 8)
    assert any("VL" in r.model.hf_id for r in recipes)  # a vision-language model
    classifier = min(recipes, key=lambda r: r.slo.ttft_p95_s)
    assert classifier.slo.ttft_p95_s <= 0.2 and profile_for_recipe(classifier).output_tokens_mean <= 8
    assert classifier.autoscaling.min_containers >= 1  # no cold start in a tight-TTFT path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_recipe_validates_and_builds_its_simulation(path: Path):
    recipe = load_recipe(path)
    assert recipe.schema_version == 1
    profile = profile_for_recipe(recipe)
    # topology comes from the recipe unless [simulation] overrides it
    assert (profile.tp_size, profile.dp_size) == (recipe.parallel.tp, recipe.parallel.dp)
    assert profile.model_name == recipe.simulation.get("model_name", recipe.model.served_name)
    assert profile.spec_enabled == recipe.speculative.enabled
    assert recipe.simulation["profile"] in PROFILES
    AutoscalerConfig(**recipe.autoscaling.simfleet_kwargs())  # the simulator accepts the scaling knobs
    assert recipe.slo.ttft_p95_s < recipe.slo.e2e_p95_s


def test_find_recipe_for_model_is_case_insensitive_and_lists_known_models():
    assert find_recipe_for_model("zai-org/glm-5.2-fp8").name == "glm-5.2-fp8-8xh200"
    assert find_recipe_for_model("llama-3.1-8b-instruct").model.hf_id == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(
        RecipeError, match=r"no recipe for model 'acme/none'.*known models: .*zai-org/GLM-5.2-FP8"
    ):
        find_recipe_for_model("acme/none")


def _set(table: str, key: str, value):
    def edit(raw):
        raw.setdefault(table, {})[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("autoscaling", "max_containers", 1), None),
        (
            lambda raw: raw["autoscaling"].update(min_containers=2, max_containers=1),
            "x.toml: autoscaling.max_containers: must be >= min_containers (got 1 < 2)",
        ),
        (
            _set("speculative", "method", "MEDUSA"),
            "x.toml: speculative.method: must be one of NONE, EAGLE, EAGLE3, DFLASH (got 'MEDUSA')",
        ),
        (_set("gpu", "type", "H1OO"), "x.toml: gpu.type: must be one of"),
        (_set("gpu", "count", 9), "x.toml: gpu.count: must be <= 8"),
        (_set("parallel", "tp", 2), "x.toml: parallel.tp: tp * dp must equal gpu.count (got 2 * 1 != 1)"),
        (_set("model", "hf_id", "llama"), "x.toml: model.hf_id: must be a Hugging Face id"),
        (_set("slo", "ttft_p95_s", -1), "x.toml: slo.ttft_p95_s: must be > 0 (got -1)"),
        (_set("slo", "colour", "red"), "x.toml: slo.colour: unknown field"),
        (
            _set("engine", "image", "lmsysorg/sglang:v0.4.0"),
            "x.toml: engine.image: tag must contain engine.version",
        ),
        (
            _set("engine", "extra_args", ["--port", "1"]),
            "x.toml: engine.extra_args: --port is set from other",
        ),
        (_set("server", "exit_grace_period_s", 4000), "x.toml: server.exit_grace_period_s: must be <= 3600"),
        (lambda raw: raw.update(schema_version=2), "x.toml: schema_version: must be 1 (got 2)"),
        (lambda raw: raw.pop("slo"), "x.toml: slo: missing table"),
        (_set("simulation", "warp_factor", 9), "x.toml: simulation: unknown simulation key(s) warp_factor"),
        (_set("simulation", "profile", "nope"), "x.toml: simulation: unknown profile 'nope'"),
        (
            lambda raw: raw.update(speculative={"method": "EAGLE3"}),
            "x.toml: speculative.draft_model: is required for method EAGLE3",
        ),
        (
            lambda raw: raw.update(speculative={"method": "EAGLE", "num_steps": 2, "num_draft_tokens": 5}),
            "x.toml: speculative.num_draft_tokens: must be <= num_steps * topk + 1 (got 5 > 3)",
        ),
    ],
)
def test_bad_fields_name_file_field_and_allowed_values(tmp_path, edit, message):
    path = _write(tmp_path, LLAMA, edit)
    if message is None:  # the round-trip writer itself produces valid recipes
        assert load_recipe(path).autoscaling.max_containers == 1
        return
    with pytest.raises(RecipeError) as info:
        profile_for_recipe(load_recipe(path))  # [simulation] is checked by the simulator that reads it
    assert str(info.value).startswith(str(tmp_path)), info.value
    assert message in str(info.value)


def test_spec_acceptance_beyond_what_the_recipe_drafts_is_rejected(tmp_path):
    def edit(raw):
        raw["speculative"].update(num_steps=1, num_draft_tokens=2)

    path = _write(tmp_path, RECIPES_DIR / "glm-5.2-fp8-8xh200.toml", edit)
    # the recipe now drafts 2 tokens per step, but [simulation] claims 2.6 accepted per step
    with pytest.raises(RecipeError, match=r"x.toml: simulation: spec_accept_length must be within 1..2"):
        profile_for_recipe(load_recipe(path))


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(RecipeError, match=r"missing.toml: cannot read"):
        load_recipe(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = = 1\n")
    with pytest.raises(RecipeError, match=r"bad.toml: invalid TOML"):
        load_recipe(bad)


def test_with_gpu_revalidates_parallelism():
    glm = find_recipe_for_model("zai-org/GLM-5.2-FP8")
    with pytest.raises(RecipeError, match=r"parallel.tp: tp \* dp must equal gpu.count \(got 8 \* 1 != 4\)"):
        with_gpu(glm, "H200:4")
    moved = with_gpu(load_recipe(LLAMA), "h200")
    assert (moved.gpu.type, moved.gpu.modal_gpu, profile_for_recipe(moved).gpu_type) == (
        "H200",
        "H200",
        "H200",
    )
    with pytest.raises(RecipeError, match="TYPE:COUNT"):
        with_gpu(glm, "H100:x")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_simulated_engine_meets_the_recipe_slo_at_light_load(path: Path):
    """Each recipe's simulation profile boots and serves 8 requests within its own SLOs."""
    from enginescope.simfleet.engine import SimEngine

    recipe = load_recipe(path)
    profile = profile_for_recipe(recipe)
    engine = SimEngine(profile, seed=1)
    start_s = profile.startup_total_s + 0.01
    engine.advance_to(start_s)
    assert engine.ready
    events = []
    for _ in range(8):
        engine.submit(300, output_tokens=profile.output_tokens_mean, sink=events.append)
    t_s = start_s
    while t_s < start_s + 60 and sum(e.finished for e in events) < 8:
        t_s += 0.01
        engine.advance_to(t_s)
    finished = [e for e in events if e.finished]
    assert len(finished) == 8 and all(e.error_status is None for e in finished)
    assert {e.completion_tokens for e in finished} == {profile.output_tokens_mean}
    first_token_s = {}
    for e in events:
        first_token_s.setdefault(e.rid, e.time_s)
    assert max(first_token_s.values()) - start_s < recipe.slo.ttft_p95_s
    assert max(e.time_s for e in finished) - start_s < recipe.slo.e2e_p95_s
    assert (engine.spec_accept_length > 1.0) == recipe.speculative.enabled
