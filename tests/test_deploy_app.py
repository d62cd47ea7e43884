"""The generated Modal apps, inspected offline through the client's local ``info()`` surface."""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

import pytest

from enginescope.deploy import app_builder
from enginescope.deploy.container import sglang_command
from enginescope.recipes import RECIPES_DIR, load_recipe

SHIPPED = sorted(RECIPES_DIR.glob("*.toml"))


def _import_app(monkeypatch, recipe, app_name="enginescope-test", gpu=None):
    env = app_builder.deploy_env(recipe, app_name)
    for key in (app_builder.ENV_RECIPE, app_builder.ENV_APP_NAME, app_builder.ENV_SERVER_NAME):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv(app_builder.ENV_GPU, gpu or recipe.gpu.modal_gpu)
    if "enginescope.deploy.modal_app" in sys.modules:
        return importlib.reload(sys.modules["enginescope.deploy.modal_app"])
    return importlib.import_module("enginescope.deploy.modal_app")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_server_matches_recipe(monkeypatch, path):
    recipe = load_recipe(path)
    module = _import_app(monkeypatch, recipe)
    info = module.Engine.info()
    assert module.app.name == "enginescope-test"
    assert info.gpus == [(recipe.gpu.type, recipe.gpu.count)]
    assert (info.port, info.startup_timeout, info.exit_grace_period) == (
        recipe.server.port, recipe.server.startup_timeout_s, recipe.server.exit_grace_period_s)  # fmt: skip
    assert info.exit_grace_period <= 25  # in-flight work must end inside Modal's 30 s exit budget
    assert info.unauthenticated is False  # proxy auth in front of the engine
    assert info.routing_region == recipe.regions[0] and info.compute_regions == list(recipe.regions)
    assert {p: v.name for p, v in info.volumes.items()} == {
        recipe.sidecar.store_path: recipe.sidecar.store_volume,
        app_builder.HF_CACHE_PATH: recipe.model.cache_volume,
    }
    assert not any(v.read_only for v in info.volumes.values())
    expected_secrets = [n for n in (recipe.model.hf_secret, recipe.sidecar.otlp_secret) if n]
    assert info.secrets == [f"modal.Secret.from_name('{n}')" for n in expected_secrets]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_autoscaler_arguments_come_from_the_recipe(path):
    # Modal does not expose autoscaler settings offline: check what we pass to @app.server.
    recipe = load_recipe(path)
    opts = app_builder.server_options(recipe)
    a = recipe.autoscaling
    assert (opts["min_containers"], opts["max_containers"], opts["buffer_containers"]) == (
        a.min_containers, a.max_containers, a.buffer_containers)  # fmt: skip
    assert (opts["target_concurrency"], opts["max_concurrency"]) == (a.target_concurrency, a.max_concurrency)
    assert opts["scaledown_window"] == a.scaledown_window_s
    assert opts["scaleup_window"] == (a.scaleup_window_s or None)  # Modal rejects 0


def test_watcher_is_scheduled_and_writes_the_same_volume(monkeypatch):
    recipe = load_recipe(RECIPES_DIR / "glm-5.2-fp8-8xh200.toml")
    info = _import_app(monkeypatch, recipe).fleet_watcher.info()
    assert info.schedule == f"Period(seconds={float(app_builder.WATCH_PERIOD_S)})"
    assert info.gpus == []  # CPU only
    assert {p: v.name for p, v in info.volumes.items()} == {"/store": "enginescope-store"}
    assert info.timeout > app_builder.WATCH_PERIOD_S


def test_gpu_override_reaches_the_server(monkeypatch):
    recipe = load_recipe(RECIPES_DIR / "llama-3.1-8b-h100.toml")
    info = _import_app(monkeypatch, recipe, gpu="H200").Engine.info()
    assert info.gpus == [("H200", 1)]


def test_container_env_carries_names_not_secrets():
    recipe = load_recipe(RECIPES_DIR / "glm-5.2-fp8-8xh200.toml")
    env = app_builder.container_env(recipe, "enginescope-agent", "sglang")
    assert env["MODAL_APP_NAME"] == "enginescope-agent"
    assert env["ENGINESCOPE_RECIPE"] == app_builder.RECIPE_IN_IMAGE
    assert env["SGLANG_ENABLE_SPEC_V2"] == "1"  # [engine.env]
    assert not [k for k in env if k.startswith("OTEL_") or "TOKEN" in k or "SECRET" in k]


def test_sglang_command_for_the_moe_recipe():
    recipe = load_recipe(RECIPES_DIR / "glm-5.2-fp8-8xh200.toml")
    cmd = shlex.join(sglang_command(recipe, port=8000, metrics_dir=app_builder.Path("/tmp/m")))
    for flag in ("--model-path zai-org/GLM-5.2-FP8", "--tp 8", "--ep-size 8", "--enable-metrics",
                 "--export-metrics-to-file --export-metrics-to-file-dir /tmp/m",
                 "--speculative-algorithm EAGLE", "--speculative-num-steps 3",
                 "--speculative-eagle-topk 1", "--speculative-num-draft-tokens 4",
                 "--tool-call-parser glm45"):  # fmt: skip
        assert flag in cmd
    assert "--speculative-draft-model-path" not in cmd  # MTP: no separate draft


def test_sglang_command_without_speculation_or_request_log():
    recipe = load_recipe(RECIPES_DIR / "qwen2.5-vl-7b-h100.toml")
    cmd = sglang_command(recipe, port=9000, metrics_dir=None)
    assert cmd[cmd.index("--port") + 1] == "9000"
    assert not [a for a in cmd if a.startswith(("--speculative", "--export-metrics"))]
    assert cmd[-6:] == list(recipe.engine.extra_args)


def test_dashboard_is_read_only_and_behind_proxy_auth():
    dashboard = importlib.import_module("enginescope.deploy.dashboard_app")
    info = dashboard.dashboard.info()
    assert info.web_info is not None and info.web_info.unauthenticated is False
    assert [(p, v.name, v.read_only) for p, v in info.volumes.items()] == [
        ("/store", "enginescope-store", True)
    ]
    assert info.concurrency_info.max_inputs == 64
    assert info.gpus == []


def test_a_missing_otlp_secret_is_left_out_not_a_failed_deploy(capsys):
    recipe = load_recipe(RECIPES_DIR / "llama-3.1-8b-h100.toml")
    assert recipe.sidecar.otlp_secret  # the recipe names one and calls it optional
    secrets = app_builder.secrets_for(recipe, exists=lambda name: name != recipe.sidecar.otlp_secret)
    names = [repr(s) for s in secrets]
    assert not any(recipe.sidecar.otlp_secret in n for n in names)
    if recipe.model.hf_secret:
        assert any(recipe.model.hf_secret in n for n in names)
    assert f"{recipe.sidecar.otlp_secret!r} (sidecar.otlp_secret) not found" in capsys.readouterr().err
    present = app_builder.secrets_for(recipe, exists=lambda name: True)
    assert len(present) == len(app_builder.secret_names(recipe))


def test_secrets_are_not_looked_up_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.modal.toml
    assert app_builder.secret_exists("enginescope-otlp") is True  # offline: the deploy decides


def test_images_install_what_pyproject_declares():
    """Before: the engine and watcher images lacked deltalake (the store writer's table format)
    and prometheus-client, the dashboard image deltalake: the sidecar could not import the store."""
    import tomllib

    from enginescope.deploy import sources

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert sorted(sources.CORE_REQUIREMENTS) == sorted(project["dependencies"])
    assert sorted(sources.DASHBOARD_REQUIREMENTS) == sorted(project["optional-dependencies"]["dashboard"])
    assert sorted(sources.MODAL_REQUIREMENTS) == sorted(project["optional-dependencies"]["modal"])
