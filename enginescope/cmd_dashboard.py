"""``enginescope dashboard``: start the Streamlit incident dashboard (headless) on a store."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import enginescope.dashboard
from enginescope.cli import CliError, add_store_argument
from enginescope.collectors.signals import SLOS

HELP = "Open the incident dashboard (Streamlit) on a store folder."
APP = Path(next(iter(enginescope.dashboard.__path__))) / "app.py"
CONFIG = APP.parent / ".streamlit" / "config.toml"  # one definition of the server's options
SLO_FLAGS = tuple(slo.key for slo in SLOS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    parser.add_argument("--port", type=int, default=8501, help="HTTP port (default 8501)")
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--recipe", type=Path, help="recipe TOML whose [slo] table sets the SLO lines")
    for key in SLO_FLAGS:
        flag = "--slo-" + key.replace("_", "-")
        parser.add_argument(flag, type=float, dest=f"slo_{key}", help=f"SLO {key} (overrides the recipe)")


def build_env(args: argparse.Namespace, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment handed to the Streamlit process (the app reads it in enginescope.dashboard.state)."""
    env = dict(os.environ if base is None else base)
    env["ENGINESCOPE_STORE"] = str(args.store.resolve()) if isinstance(args.store, Path) else args.store
    if args.recipe is not None:
        if not args.recipe.is_file():
            raise CliError(f"--recipe {args.recipe}: no such file")
        from enginescope.dashboard.state import slo_from_recipe

        try:
            slo_from_recipe(args.recipe)  # fail here, with the file name, not in the browser
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        env["ENGINESCOPE_RECIPE"] = str(args.recipe.resolve())
    for key in SLO_FLAGS:
        value = getattr(args, f"slo_{key}")
        if value is not None:
            if value <= 0:
                raise CliError(f"--slo-{key.replace('_', '-')} must be > 0 (seconds)")
            env[f"ENGINESCOPE_SLO_{key.upper()}"] = repr(value)
    return env


def streamlit_options(config: Path = CONFIG) -> list[str]:
    """The dashboard's ``.streamlit/config.toml`` as command-line flags: Streamlit reads config
    files only from the working directory and ~/.streamlit, flags apply from anywhere."""
    try:
        table = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{config}: cannot read the dashboard's Streamlit config: {exc}") from exc
    flags = []
    for section, options in table.items():
        for key, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{key}", text]
    return flags


def command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), *streamlit_options(),
            "--server.port", str(args.port), "--server.address", args.address]  # fmt: skip


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def run(args: argparse.Namespace) -> int:
    if not _installed("streamlit"):
        raise CliError("needs 'streamlit': pip install 'enginescope[dashboard]' (or '[all]')")
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: not a TCP port")
    env = build_env(args)
    print(f"enginescope dashboard: http://{args.address}:{args.port} (store {env['ENGINESCOPE_STORE']})")
    return subprocess.call(command(args), env=env)
