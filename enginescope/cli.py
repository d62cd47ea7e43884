"""``enginescope`` command line. Each subcommand lives in its own ``cmd_*`` module.

A subcommand module provides ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so ``enginescope --help`` stays fast and one broken optional
dependency cannot take down every command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from enginescope import __version__

COMMANDS: dict[str, str] = {
    "sidecar": "enginescope.cmd_sidecar",
    "query": "enginescope.cmd_query",
    "demo": "enginescope.cmd_demo",
    "simulate": "enginescope.cmd_simulate",
    "load": "enginescope.cmd_load",
    "dashboard": "enginescope.cmd_dashboard",
    "generate-configs": "enginescope.cmd_generate",
    "endpoint": "enginescope.cmd_endpoint",
    "recipes": "enginescope.cmd_recipes",
    "bench": "enginescope.cmd_bench",
    "spec-report": "enginescope.cmd_spec_report",
    "store": "enginescope.cmd_store",
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


DEFAULT_STORE = "./enginescope-store"


def store_arg(text: str) -> Path | str:
    """argparse ``type``: a folder (Path), or an object-store URL such as s3://bucket/prefix."""
    from enginescope.store.location import store_arg as parse  # lazily: --help stays fast

    return parse(text)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store``, as every command that reads or writes the store takes it."""
    parser.add_argument(
        "--store",
        type=store_arg,
        default=os.environ.get("ENGINESCOPE_STORE", DEFAULT_STORE),  # argparse applies type
        help=f"store folder or s3://bucket/prefix (default $ENGINESCOPE_STORE or {DEFAULT_STORE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enginescope", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"enginescope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not built yet
            _add_unavailable(sub, name, exc.name or "?")  # an extra is not installed
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _add_unavailable(sub: argparse._SubParsersAction, name: str, missing: str) -> None:
    """A command whose optional dependency is missing (``pip install enginescope`` is the
    sidecar alone): listed, and naming the extra that brings it instead of a traceback."""
    top = missing.split(".")[0]
    extra = "modal" if top == "modal" else "dashboard"
    why = f"needs {top!r}: pip install 'enginescope[{extra}]' (or '[all]')"
    cmd = sub.add_parser(name, help=f"(unavailable: {why})", description=why)
    cmd.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def unavailable(_args: argparse.Namespace) -> int:
        raise CliError(why)

    cmd.set_defaults(_run=unavailable)


def _is_store_error(exc: Exception) -> bool:
    """An old-layout store or a bad ``--store`` value: the message says what to do."""
    from enginescope.store.legacy import LegacyStoreError
    from enginescope.store.location import StoreLocationError

    return isinstance(exc, LegacyStoreError | StoreLocationError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except CliError as exc:
        print(f"enginescope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        print(f"enginescope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Re-import so CliError raised by subcommands is the class main() catches (not __main__'s copy).
    from enginescope.cli import main as _main

    sys.exit(_main())
