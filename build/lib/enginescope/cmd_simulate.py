"""``enginescope simulate``: simulated SGLang engines on ports N..N+K-1 (no sidecar, no store)."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from enginescope.cli import CliError
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.profile import (
    PROFILES,
    EngineProfile,
    ProfileError,
    get_profile,
    profile_for_recipe,
)
from enginescope.simfleet.server import serve

HELP = "run simulated SGLang engines (OpenAI API + /metrics) until Ctrl-C"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=30000, help="first port (default 30000)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profile", help=f"one of: {', '.join(PROFILES)} (default llama-8b-h100)")
    source.add_argument("--recipe", type=Path, help="recipe TOML whose [simulation] profile to serve")
    parser.add_argument("--replicas", type=int, default=1, help="engines on consecutive ports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise CliError(f"--replicas must be >= 1, got {args.replicas}")
    if not 0 < args.port <= 65535 - args.replicas + 1:
        raise CliError(
            f"--port {args.port}: ports {args.port}..{args.port + args.replicas - 1} are not all valid"
        )
    profile, label = _profile(args)
    try:
        asyncio.run(_serve_all(args, profile, label))
    except KeyboardInterrupt:
        print("stopped")
    return 0


def _profile(args: argparse.Namespace) -> tuple[EngineProfile, str]:
    """The engine profile and how to name it: a recipe's simulation profile, or a named one."""
    if args.recipe is not None:
        from enginescope.recipes.schema import RecipeError, load_recipe

        try:
            recipe = load_recipe(args.recipe)
            return profile_for_recipe(recipe), f"recipe {recipe.name}"
        except RecipeError as exc:
            raise CliError(str(exc)) from None
    name = args.profile or "llama-8b-h100"
    try:
        return get_profile(name, "--profile"), name
    except ProfileError as exc:
        raise CliError(str(exc)) from None


async def _serve_all(args: argparse.Namespace, profile: EngineProfile, label: str) -> None:
    engines = [
        SimEngine(profile, name=f"sim-{index}", seed=args.seed + index, clock=time.monotonic)
        for index in range(args.replicas)
    ]
    servers = []
    try:
        for index, engine in enumerate(engines):
            try:
                servers.append(await serve(engine, args.host, args.port + index))
            except OSError as exc:
                raise CliError(f"cannot listen on {args.host}:{args.port + index}: {exc}") from None
        for server in servers:
            print(f"simulated {profile.model_name} ({label}) at http://{args.host}:{server.port}", flush=True)
        print(f"ready in ~{profile.startup_total_s:.0f}s (cold start); Ctrl-C to stop", flush=True)
        await asyncio.gather(*(engine.run() for engine in engines))
    finally:
        for server in servers:
            await server.stop()
        for engine in engines:
            engine.close()
