"""``enginescope recipes list|show|validate``: inspect the deployable configurations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enginescope.cli import CliError
from enginescope.simfleet.profile import profile_for_recipe

HELP = "List, show and validate deployment recipes (recipes/*.toml)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="recipes folder (default: the packaged recipes/)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="one line per recipe")
    show = sub.add_parser("show", help="the resolved recipe and the engine command, as JSON")
    show.add_argument("recipe", help="recipe name, file, or model id")
    validate = sub.add_parser("validate", help="validate files (default: every recipe); exit 1 on errors")
    validate.add_argument("files", nargs="*", type=Path)


def run(args: argparse.Namespace) -> int:
    from enginescope.recipes.schema import RECIPES_DIR

    directory = args.dir or RECIPES_DIR
    if args.action == "list":
        return _list(directory)
    if args.action == "show":
        return _show(resolve_recipe(args.recipe, directory))
    return _validate(args.files or sorted(Path(directory).glob("*.toml")))


def resolve_recipe(ref: str, directory: Path):
    """A recipe from a file path, a recipe name in ``directory``, or a model id."""
    from enginescope.recipes.schema import RecipeError, find_recipe_for_model, load_all, load_recipe

    try:
        if ref.endswith(".toml") or Path(ref).is_file():
            return load_recipe(ref)
        for recipe in load_all(directory):
            if recipe.name == ref:
                return recipe
        return find_recipe_for_model(ref, directory)
    except RecipeError as exc:
        raise CliError(str(exc)) from None


def _list(directory: Path) -> int:
    from enginescope.recipes.schema import RecipeError, load_all

    try:
        recipes = load_all(directory)
    except RecipeError as exc:
        raise CliError(str(exc)) from None
    rows = [("NAME", "MODEL", "GPU", "SPECULATIVE", "SCALE", "TTFT_P95_S")]
    for r in recipes:
        scale = f"{r.autoscaling.min_containers}-{r.autoscaling.max_containers}"
        rows.append(
            (r.name, r.model.hf_id, r.gpu.modal_gpu, r.speculative.method, scale, f"{r.slo.ttft_p95_s:g}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(recipe) -> int:
    from enginescope.deploy.app_builder import app_name_for, resolved_config

    config = resolved_config(recipe, app_name_for(recipe))
    config["simulation"] = profile_for_recipe(recipe).to_mapping()
    print(json.dumps(config, indent=2, default=str))
    return 0


def _validate(files: list[Path]) -> int:
    from enginescope.recipes.schema import RecipeError, load_recipe

    if not files:
        raise CliError("no recipe files to validate")
    failed = 0
    for path in files:
        try:
            recipe = load_recipe(path)
            profile_for_recipe(recipe)  # [simulation] against the simulator's fields
        except RecipeError as exc:
            print(f"FAIL {exc}")
            failed += 1
        else:
            print(f"ok   {path}: {recipe.name} ({recipe.model.hf_id} on {recipe.gpu.modal_gpu})")
    return 1 if failed else 0
