"""Translate a recipe into Modal objects and decorator arguments.

``deploy/modal_app.py`` applies these at module level (Modal imports that module again inside
every container, so its classes must be global). Keeping the translation here makes it easy to
test and to print for ``enginescope endpoint create --dry-run``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import modal
import modal.exception

from enginescope.collectors.signals import SLOS
from enginescope.deploy.sources import CORE_REQUIREMENTS, MODAL_REQUIREMENTS, with_sources
from enginescope.recipes.schema import Recipe

# Our packages, shipped into every image as source (never baked-in settings or secrets).
PACKAGES = ("collectors", "exporters", "store", "views", "loadgen", "recipes", "deploy", "simfleet")
RECIPE_IN_IMAGE = "/root/enginescope-recipe.toml"
REQUEST_LOG_DIR = "/tmp/sglang-request-metrics"  # container-local; the sidecar tails it into the store
HF_CACHE_PATH = "/root/.cache/huggingface"
DEFAULT_SERVER_NAME = "sglang"
WATCH_PERIOD_S = 60
ENV_RECIPE = "ENGINESCOPE_RECIPE"
ENV_APP_NAME = "ENGINESCOPE_APP_NAME"
ENV_SERVER_NAME = "ENGINESCOPE_SERVER_NAME"
ENV_GPU = "ENGINESCOPE_GPU"  # a --gpu override; the recipe file in the image stays as written


def app_name_for(recipe: Recipe, endpoint_name: str | None = None) -> str:
    """``enginescope-<endpoint name>``, or ``enginescope-<recipe name>`` without one."""
    return f"enginescope-{endpoint_name or recipe.name}"


def container_env(recipe: Recipe, app_name: str, server_name: str) -> dict[str, str]:
    """Non-secret settings every container of the app sees (Modal has no app-name variable)."""
    return {
        ENV_RECIPE: RECIPE_IN_IMAGE,
        ENV_APP_NAME: app_name,
        ENV_SERVER_NAME: server_name,
        ENV_GPU: recipe.gpu.modal_gpu,
        "MODAL_APP_NAME": app_name,  # read by enginescope.collectors.identity
        "ENGINESCOPE_GPU_TYPE": recipe.gpu.type.rstrip("!+"),
        "ENGINESCOPE_STORE": recipe.sidecar.store_path,
        "HF_HUB_CACHE": f"{HF_CACHE_PATH}/hub",
        "HF_XET_HIGH_PERFORMANCE": "1",
        **recipe.engine.env,
    }


def _with_sources(image: modal.Image, recipe: Recipe) -> modal.Image:
    # add_local_* must come last: Modal mounts them at container start instead of rebuilding.
    return with_sources(image.add_local_file(recipe.path, RECIPE_IN_IMAGE), PACKAGES)


def engine_image(recipe: Recipe, app_name: str, server_name: str = DEFAULT_SERVER_NAME) -> modal.Image:
    """SGLang's official image (entrypoint cleared) + sidecar dependencies + our sources."""
    image = (
        modal.Image.from_registry(recipe.engine.image)
        .entrypoint([])
        .uv_pip_install(*CORE_REQUIREMENTS)
        .env(container_env(recipe, app_name, server_name))
    )
    return _with_sources(image, recipe)


def watcher_image(recipe: Recipe, app_name: str, server_name: str = DEFAULT_SERVER_NAME) -> modal.Image:
    """A small CPU image for the fleet watcher (no engine)."""
    image = (
        modal.Image.debian_slim(python_version="3.11")
        .uv_pip_install(*MODAL_REQUIREMENTS, *CORE_REQUIREMENTS)
        .env(container_env(recipe, app_name, server_name))
    )
    return _with_sources(image, recipe)


def store_volume(recipe: Recipe) -> modal.Volume:
    return modal.Volume.from_name(recipe.sidecar.store_volume, create_if_missing=True)


def engine_volumes(recipe: Recipe, store: modal.Volume) -> dict[str, modal.Volume]:
    return {
        recipe.sidecar.store_path: store,
        HF_CACHE_PATH: modal.Volume.from_name(recipe.model.cache_volume, create_if_missing=True),
    }


def secret_names(recipe: Recipe) -> list[str]:
    """Modal Secret names the engine container needs; OTLP settings arrive only this way."""
    return [name for name in (recipe.model.hf_secret, recipe.sidecar.otlp_secret) if name]


def _can_look_up_secrets() -> bool:
    """A Modal token is configured and we are the deploying client, not a running container."""
    if os.environ.get("MODAL_IS_REMOTE") == "1":
        return False
    return bool(os.environ.get("MODAL_TOKEN_ID")) or (Path.home() / ".modal.toml").is_file()


def secret_exists(name: str) -> bool:
    """True unless Modal says the Secret does not exist (offline: assume it does)."""
    if not _can_look_up_secrets():
        return True
    try:
        modal.Secret.from_name(name).hydrate()
    except modal.exception.NotFoundError:
        return False
    except Exception:  # noqa: BLE001 (network/auth trouble: let the deploy itself report it)
        return True
    return True


def secrets_for(recipe: Recipe, exists: Callable[[str], bool] | None = None) -> list[modal.Secret]:
    """The Secrets to attach. The OTLP Secret is optional (recipes say so): a missing one is
    left out with a warning and the container writes the store only; a missing HF Secret is
    an error at deploy time as before."""
    exists = exists or secret_exists
    names = []
    for name in secret_names(recipe):
        if name == recipe.sidecar.otlp_secret and name != recipe.model.hf_secret and not exists(name):
            print(f"warning: Modal Secret {name!r} (sidecar.otlp_secret) not found: deploying without OTLP "
                  "export", file=sys.stderr)  # fmt: skip
            continue
        names.append(name)
    return [modal.Secret.from_name(name) for name in names]


def server_options(recipe: Recipe) -> dict[str, Any]:
    """``@app.server`` scaling, placement and lifecycle arguments (no Modal objects)."""
    a, s = recipe.autoscaling, recipe.server
    return {
        "gpu": recipe.gpu.modal_gpu,
        "port": s.port,
        "startup_timeout": s.startup_timeout_s,
        "exit_grace_period": s.exit_grace_period_s,
        "target_concurrency": float(a.target_concurrency),
        "max_concurrency": a.max_concurrency,
        "min_containers": a.min_containers,
        "max_containers": a.max_containers,
        "buffer_containers": a.buffer_containers,
        "scaledown_window": a.scaledown_window_s,
        "scaleup_window": a.scaleup_window_s or None,  # Modal rejects 0; None = scale up at once
        "routing_region": recipe.regions[0] if recipe.regions else "us-east",
        "compute_region": list(recipe.regions) or None,
        "unauthenticated": False,  # Modal proxy-token auth in front of the engine
    }


def server_kwargs(recipe: Recipe, app_name: str, server_name: str, store: modal.Volume) -> dict[str, Any]:
    """Everything ``@app.server(...)`` takes for this recipe."""
    return {
        **server_options(recipe),
        "name": server_name,
        "image": engine_image(recipe, app_name, server_name),
        "volumes": engine_volumes(recipe, store),
        "secrets": secrets_for(recipe),
    }


def watcher_kwargs(recipe: Recipe, app_name: str, server_name: str, store: modal.Volume) -> dict[str, Any]:
    """``@app.function(...)`` arguments for the scheduled fleet watcher."""
    return {
        "image": watcher_image(recipe, app_name, server_name),
        "schedule": modal.Period(seconds=WATCH_PERIOD_S),
        "volumes": {recipe.sidecar.store_path: store},
        "timeout": WATCH_PERIOD_S + 60,
        "max_containers": 1,  # one writer for replica "fleet" of this app
    }


def resolved_config(recipe: Recipe, app_name: str, server_name: str = DEFAULT_SERVER_NAME) -> dict[str, Any]:
    """The deployment as plain data: what ``--dry-run`` prints (names only, no secret values)."""
    from enginescope.deploy.container import sglang_command

    return {
        "recipe": str(recipe.path),
        "app": app_name,
        "server": server_name,
        "model": {
            "hf_id": recipe.model.hf_id,
            "revision": recipe.model.revision,
            "served_name": recipe.model.served_name,
        },  # fmt: skip
        "image": recipe.engine.image,
        "server_options": server_options(recipe),
        "volumes": {
            recipe.sidecar.store_path: recipe.sidecar.store_volume,
            HF_CACHE_PATH: recipe.model.cache_volume,
        },
        "secrets": secret_names(recipe),
        "engine_command": shlex.join(
            sglang_command(recipe, port=recipe.server.port, metrics_dir=_request_log_dir(recipe))
        ),
        "slo": {slo.key: getattr(recipe.slo, slo.key) for slo in SLOS},
        "watcher": {"period_s": WATCH_PERIOD_S, "replica": f"fleet-{app_name}"},
    }


def _request_log_dir(recipe: Recipe) -> Path | None:
    return Path(REQUEST_LOG_DIR) if recipe.sidecar.request_log else None


def deploy_env(recipe: Recipe, app_name: str, server_name: str = DEFAULT_SERVER_NAME) -> Mapping[str, str]:
    """Environment that makes ``deploy/modal_app.py`` build this recipe's app when imported."""
    return {
        **os.environ,
        ENV_RECIPE: str(recipe.path),
        ENV_APP_NAME: app_name,
        ENV_SERVER_NAME: server_name,
        ENV_GPU: recipe.gpu.modal_gpu,
    }
