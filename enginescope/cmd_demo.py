"""``enginescope demo``: a simulated fleet, the production sidecars, a store and the dashboard.

The store is a local folder or an object-store URL (``--store s3://bucket/prefix``, credentials
from the standard AWS environment variables). What is not a store table (ground truth, the
simulated per-request export the sidecars tail, load generator records, recipe copy,
spec-report) goes to a local work folder: the store folder itself for a local store, else
``--work-dir`` (default ``./enginescope-demo/<timestamp>``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from enginescope.cli import CliError, store_arg
from enginescope.demo import SPEC_REPORT_DIR, DemoOptions, run_demo
from enginescope.simfleet.profile import profile_for_recipe
from enginescope.simfleet.recipe_scenarios import check_fits
from enginescope.simfleet.scenarios import SCENARIOS

HELP = "play an incident on a simulated Modal fleet (sidecars + store + dashboard); Ctrl-C to stop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="spike", help="incident to play")
    parser.add_argument(
        "--store",
        type=store_arg,
        help="store folder or s3://bucket/prefix (default: ./enginescope-demo/<timestamp>)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="local folder for what is not a store table: ground truth, request logs, load generator "
        "records (default: the store folder; for an s3:// store ./enginescope-demo/<timestamp>)",
    )
    parser.add_argument("--headless", action="store_true", help="no dashboard; needs --duration-s")
    parser.add_argument("--duration-s", type=float, help="stop after this many seconds (default: Ctrl-C)")
    parser.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    parser.add_argument("--engine-port", type=int, default=0, help="first engine port (default: any free)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipe",
        type=Path,
        help="recipe TOML: its [simulation] profile, [autoscaling] and [slo] replace the scenario's",
    )


def run(args: argparse.Namespace) -> int:
    if args.duration_s is not None and args.duration_s <= 0:
        raise CliError(f"--duration-s must be > 0, got {args.duration_s}")
    if args.headless and args.duration_s is None:
        raise CliError("--headless needs --duration-s")
    recipe = _load_recipe(args.recipe, args.scenario) if args.recipe is not None else None
    if not getattr(args, "verbose", False):
        _quiet_components()
    default_dir = Path("enginescope-demo") / time.strftime("%Y%m%d-%H%M%S")
    store: Path | str = args.store or default_dir
    work: Path = args.work_dir or (store if isinstance(store, Path) else default_dir)
    if isinstance(store, Path):
        store.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    dashboard = None if args.headless else _start_dashboard(store, args.port, args.recipe)
    options = DemoOptions(
        store_dir=store,
        work_dir=work,
        scenario=args.scenario,
        duration_s=args.duration_s,
        base_port=args.engine_port,
        seed=args.seed,
        recipe=recipe,
    )
    try:
        asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        print("interrupted: store flushed and closed")
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(10)
    print(f"store: {_shown(store)}")
    print(f"work dir: {work.resolve()} (ground truth, request logs, load generator records)")
    report = work / SPEC_REPORT_DIR
    if (report / "manifest.json").exists():  # written at the end of a demo with speculative decoding
        print(f"spec-report: {report.resolve()} (evidence.parquet, requests/traffic_class=*/)")
    return 0


def _load_recipe(path: Path, scenario: str) -> Any:
    from enginescope.recipes.schema import RecipeError, load_recipe

    try:
        recipe = load_recipe(path)
        check_fits(SCENARIOS[scenario], profile_for_recipe(recipe))
    except RecipeError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"--recipe {path}: {exc}") from None
    return recipe


def _shown(store: Path | str) -> str:
    return str(store.resolve()) if isinstance(store, Path) else store


def _start_dashboard(store: Path | str, port: int, recipe: Path | None) -> subprocess.Popen[bytes] | None:
    """``streamlit run`` the dashboard app if this install has it (its owner builds the command)."""
    if importlib.util.find_spec("enginescope.cmd_dashboard") is None:
        print("dashboard not installed; the store is still written")
        return None
    from enginescope import cmd_dashboard

    # The recipe's [slo] table draws the SLO lines (the dashboard reads it from ENGINESCOPE_RECIPE).
    # A URL store reaches the dashboard as the URL (build_env passes it through unchanged).
    dash_args = argparse.Namespace(store=store, port=port, address="127.0.0.1", recipe=recipe)
    for key in cmd_dashboard.SLO_FLAGS:
        setattr(dash_args, f"slo_{key}", None)
    process = subprocess.Popen(
        cmd_dashboard.command(dash_args),
        env=cmd_dashboard.build_env(dash_args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"dashboard: http://127.0.0.1:{port}  (store {_shown(store)})")
    return process


def _quiet_components() -> None:
    """The demo narrates phases itself; the sidecars' per-replica state lines would drown them.

    Warnings (engine down, scrape errors) still show; ``enginescope -v demo`` shows everything.
    """
    for name in ("collectors", "enginescope.sidecar", "exporters", "enginescope.spec_monitor"):
        logging.getLogger(name).setLevel(logging.WARNING)
