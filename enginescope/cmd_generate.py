"""``enginescope generate-configs``: write (or ``--check``) the observability configs.

They go where ``--out`` says, by default the current directory: never next to the installed
package (from a wheel that is site-packages).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from enginescope.cli import CliError

HELP = "generate the OTel Collector config, Grafana/Datadog dashboards and Prometheus alerts from the recipes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from enginescope.exporters.observability_gen import RECIPES_DIR

    parser.add_argument(
        "--out", type=Path, default=Path("."), help="output folder (default: the current directory)"
    )
    parser.add_argument(
        "--recipes", type=Path, default=RECIPES_DIR, help="recipe folder (default: %(default)s)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a checked-in file differs from a fresh one",
    )


def run(args: argparse.Namespace) -> int:
    from enginescope.exporters.observability_gen import generate_all, load_recipes, stale_files, write_all
    from enginescope.recipes.schema import RecipeError

    if not args.recipes.is_dir():
        raise CliError(f"--recipes {args.recipes}: not a folder")
    try:
        recipes = load_recipes(args.recipes)
    except RecipeError as exc:
        raise CliError(str(exc)) from None
    if not recipes:
        raise CliError(f"--recipes {args.recipes}: no *.toml recipe found")
    files = generate_all(recipes)
    if args.check:
        stale = stale_files(files, args.out)
        for name in stale:
            print(f"stale: {args.out / name} (run `enginescope generate-configs`)")
        if not stale:
            print(f"{len(files)} files in {args.out} are up to date")
        return 1 if stale else 0
    for path in write_all(files, args.out):
        print(f"wrote {path}")
    return 0
