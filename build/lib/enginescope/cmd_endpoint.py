"""``enginescope endpoint create|list``: deploy a recipe as a Modal app, or list deployed ones."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from enginescope.cli import CliError

HELP = "Deploy an SGLang endpoint with the enginescope sidecar on Modal (from a recipe), or list them."
APP_PREFIX = "enginescope-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="resolve a recipe for MODEL and deploy it")
    create.add_argument("--name", required=True, help="endpoint name (the Modal app is enginescope-NAME)")
    create.add_argument("--model", required=True, help="Hugging Face model id, e.g. zai-org/GLM-5.2-FP8")
    create.add_argument("--recipe", type=Path, help="recipe file (default: the recipe serving --model)")
    create.add_argument("--gpu", help="override the recipe's GPUs: TYPE or TYPE:COUNT, e.g. H200:8")
    create.add_argument(
        "--dry-run", action="store_true", help="print the resolved recipe and app; deploy nothing"
    )
    sub.add_parser("list", help="deployed enginescope apps and their running containers")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    return _create(args)


def _create(args: argparse.Namespace) -> int:
    from enginescope.deploy.app_builder import app_name_for, resolved_config

    recipe = _resolve(args)
    app_name = app_name_for(recipe, _check_name(args.name))
    print(json.dumps(resolved_config(recipe, app_name), indent=2))
    print(f"\ngenerated app: deploy/modal_app.py for {recipe.path} -> Modal app {app_name!r}")
    if args.dry_run:
        print("dry run: nothing deployed.")
        return 0
    if not modal_token_present():
        raise CliError(
            "no Modal credentials (run `modal token new` or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET); "
            "the configuration above was resolved but not deployed"
        )
    return _deploy(recipe, app_name)


def _check_name(name: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
    if not name or set(name.lower()) - allowed or len(name) > 50:
        raise CliError(f"--name must be 1-50 letters, digits, '-', '_' or '.' (got {name!r})")
    return name


def _resolve(args: argparse.Namespace):
    from enginescope.recipes.schema import RecipeError, find_recipe_for_model, load_recipe, with_gpu

    try:
        if args.recipe is not None:
            recipe = load_recipe(args.recipe)
            wanted = args.model.lower()
            if wanted not in (recipe.model.hf_id.lower(), recipe.model.served_name.lower()):
                raise CliError(f"{args.recipe}: serves {recipe.model.hf_id!r}, not --model {args.model!r}")
        else:
            recipe = find_recipe_for_model(args.model)
        return with_gpu(recipe, args.gpu) if args.gpu else recipe
    except RecipeError as exc:
        raise CliError(str(exc)) from None


def modal_token_present(env: dict[str, str] | None = None) -> bool:
    """True if the Modal client would find a token (environment or ~/.modal.toml profile)."""
    env = dict(os.environ) if env is None else env
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    try:
        from modal.config import config
    except ImportError:
        return False
    return bool(config.get("token_id") and config.get("token_secret"))


def _deploy(recipe, app_name: str) -> int:
    import modal
    from modal.exception import Error as ModalError

    from enginescope.deploy.app_builder import deploy_env

    os.environ.update(deploy_env(recipe, app_name))  # deploy/modal_app.py reads these at import
    module = importlib.reload(sys.modules["enginescope.deploy.modal_app"]) if "enginescope.deploy.modal_app" in sys.modules else (
        importlib.import_module("enginescope.deploy.modal_app")
    )  # fmt: skip
    try:
        with modal.enable_output():
            module.app.deploy(name=app_name)
        url = module.Engine.get_url()
    except ModalError as exc:
        raise CliError(f"Modal deploy of {app_name!r} failed: {type(exc).__name__}: {exc}") from None
    print(f"deployed {app_name}: {url or '(URL pending)'}")
    print("requests need Modal proxy auth headers (Modal-Key / Modal-Secret) from a proxy auth token")
    return 0


def _list() -> int:
    if not modal_token_present():
        raise CliError(
            "no Modal credentials (run `modal token new` or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"
        )
    from modal.exception import Error as ModalError
    from modal.experimental import list_deployed_apps

    try:
        apps = [a for a in list_deployed_apps() if (a.name or "").startswith(APP_PREFIX)]
    except ModalError as exc:
        raise CliError(f"listing Modal apps failed: {type(exc).__name__}: {exc}") from None
    if not apps:
        print("no enginescope endpoints deployed")
    for app in apps:
        print(f"{app.name}\t{app.app_id}\tcontainers={app.containers}")
    return 0
