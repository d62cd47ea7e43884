"""The Modal app for one recipe: ``modal deploy deploy/modal_app.py`` (or ``enginescope endpoint create``).

Which recipe: ``$ENGINESCOPE_RECIPE`` (a path; default the Llama-8B recipe), optionally on other
GPUs (``$ENGINESCOPE_GPU``, e.g. ``H200:8``). App and server names: ``$ENGINESCOPE_APP_NAME`` /
``$ENGINESCOPE_SERVER_NAME``. Inside a container these
variables come from the image, so the module rebuilds the same app there.

One GPU Server class runs SGLang plus the sidecar (``enginescope.deploy.container.ContainerEntry``); a
scheduled CPU function (``fleet_watcher``) records replica count, backlog and scale events.
"""

from __future__ import annotations

import os
from pathlib import Path

import modal

from enginescope.deploy import app_builder as build
from enginescope.recipes.schema import RECIPES_DIR, load_recipe, with_gpu

RECIPE = load_recipe(os.environ.get(build.ENV_RECIPE) or RECIPES_DIR / "llama-3.1-8b-h100.toml")
if os.environ.get(build.ENV_GPU):
    RECIPE = with_gpu(RECIPE, os.environ[build.ENV_GPU])
APP_NAME = os.environ.get(build.ENV_APP_NAME) or build.app_name_for(RECIPE)
SERVER_NAME = os.environ.get(build.ENV_SERVER_NAME) or build.DEFAULT_SERVER_NAME

app = modal.App(APP_NAME)
store = build.store_volume(RECIPE)


@app.server(**build.server_kwargs(RECIPE, APP_NAME, SERVER_NAME, store))
class Engine:
    @modal.enter()
    def start(self) -> None:
        from enginescope.deploy.container import ContainerEntry, sglang_command

        log_dir = Path(build.REQUEST_LOG_DIR) if RECIPE.sidecar.request_log else None
        self.entry = ContainerEntry(
            RECIPE,
            sglang_command(RECIPE, port=RECIPE.server.port, metrics_dir=log_dir),
            Path(RECIPE.sidecar.store_path),
            request_log_dir=log_dir,
            engine_env=dict(RECIPE.engine.env),
            commit=store.commit,
            deferred_commits=True,  # containers never write the Volume's Delta logs: the watcher does
            nvml=_nvml(),
            extra_sinks=_otlp_sinks(),
        )
        self.entry.start()

    @modal.exit()
    def stop(self) -> None:
        # Modal has already taken this container out of routing; finish, record, flush, commit.
        self.entry.drain("modal exit (SIGTERM)")
        self.entry.stop()


@app.function(**build.watcher_kwargs(RECIPE, APP_NAME, SERVER_NAME, store))
def fleet_watcher() -> None:
    from enginescope.deploy.watcher import ModalServerProbe, watch_window

    probe = ModalServerProbe(APP_NAME, SERVER_NAME)
    watch_window(
        probe,
        RECIPE,
        Path(RECIPE.sidecar.store_path),
        app_name=APP_NAME,
        commit=store.commit,
        reload=store.reload,
    )


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml  # the GPU source disables itself cleanly without a driver


def _otlp_sinks() -> list:
    """An OTLP sink when the recipe's Secret provides OTEL_EXPORTER_OTLP_* (values never logged)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    ):
        return []
    try:
        from enginescope.exporters.otlp import otlp_sink_from_env
    except ImportError:
        return []
    return [otlp_sink_from_env(dict(os.environ))]
