"""``enginescope endpoint`` and ``enginescope recipes``: resolution, dry runs, clear errors."""

from __future__ import annotations

import json

import pytest

from enginescope.cli import main
from enginescope.cmd_endpoint import modal_token_present
from enginescope.recipes import RECIPES_DIR


@pytest.fixture(autouse=True)
def no_modal_token(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr("modal.config.config.get", lambda key, *a, **k: None)


def _json_prefix(out: str) -> dict:
    return json.loads(out[: out.index("\n}\n") + 2])


def test_dry_run_resolves_the_moe_recipe_for_the_agent_endpoint(capsys):
    assert main(["endpoint", "create", "--name", "agent", "--model", "zai-org/GLM-5.2-FP8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    config = _json_prefix(out)
    assert config["app"] == "enginescope-agent"
    assert config["recipe"].endswith("glm-5.2-fp8-8xh200.toml")
    assert config["server_options"]["gpu"] == "H200:8"
    assert "--speculative-algorithm EAGLE" in config["engine_command"]
    assert config["secrets"] == ["huggingface-secret", "enginescope-otlp"]
    assert "dry run: nothing deployed." in out


def test_missing_token_prints_the_config_then_a_clear_error(capsys):
    assert not modal_token_present({})
    assert (
        main(
            [
                "endpoint",
                "create",
                "--name",
                "chat",
                "--model",
                "meta-llama/Llama-3.1-8B-Instruct",
                "--recipe",
                str(RECIPES_DIR / "llama-3.1-8b-h100.toml"),
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert _json_prefix(captured.out)["app"] == "enginescope-chat"
    assert "no Modal credentials" in captured.err and "Traceback" not in captured.err


def test_token_from_environment_counts():
    assert modal_token_present({"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"})
    assert not modal_token_present({"MODAL_TOKEN_ID": "ak-1"})


def test_unknown_model_lists_known_models(capsys):
    assert main(["endpoint", "create", "--name", "x", "--model", "acme/unknown-7b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no recipe for model 'acme/unknown-7b'" in err and "zai-org/GLM-5.2-FP8" in err


def test_recipe_that_serves_another_model_is_refused(capsys):
    recipe = str(RECIPES_DIR / "qwen2.5-vl-7b-h100.toml")
    assert main(["endpoint", "create", "--name", "x", "--model", "Qwen/Qwen3-8B", "--recipe", recipe]) == 2
    assert "serves 'Qwen/Qwen2.5-VL-7B-Instruct', not --model 'Qwen/Qwen3-8B'" in capsys.readouterr().err


def test_gpu_override_is_validated(capsys):
    args = ["endpoint", "create", "--name", "x", "--model", "Qwen/Qwen3-8B", "--dry-run"]
    assert main([*args, "--gpu", "H100:2"]) == 2
    assert "parallel.tp: tp * dp must equal gpu.count (got 1 * 1 != 2)" in capsys.readouterr().err
    assert main([*args, "--gpu", "L40S"]) == 0
    assert _json_prefix(capsys.readouterr().out)["server_options"]["gpu"] == "L40S"


def test_bad_endpoint_name(capsys):
    assert main(["endpoint", "create", "--name", "no spaces", "--model", "Qwen/Qwen3-8B", "--dry-run"]) == 2
    assert "--name must be" in capsys.readouterr().err


def test_endpoint_list_without_token_is_a_clear_error(capsys):
    assert main(["endpoint", "list"]) == 2
    assert "no Modal credentials" in capsys.readouterr().err


def test_recipes_list_show_validate(tmp_path, capsys):
    assert main(["recipes", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["NAME", "MODEL", "GPU", "SPECULATIVE", "SCALE", "TTFT_P95_S"]
    assert len(listing) == 1 + len(list(RECIPES_DIR.glob("*.toml")))
    assert main(["recipes", "show", "qwen3-8b-classifier-h100"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["simulation"]["output_tokens_mean"] == 4 and shown["slo"]["ttft_p95_s"] == 0.15
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = 1\n")
    assert main(["recipes", "validate", str(bad), str(RECIPES_DIR / "llama-3.1-8b-h100.toml")]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {bad}: gpu: missing table" in out and "ok   " in out
