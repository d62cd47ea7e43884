"""``--header K:V`` (repeatable) and ``--modal-key/--modal-secret`` for commands that call an endpoint.

Modal's proxy auth in front of a deployed endpoint (the recipes' apps are not
``unauthenticated``) wants ``Modal-Key`` and ``Modal-Secret`` headers on every request; the
values default to the environment (``MODAL_KEY``/``MODAL_SECRET``) so they stay out of shell
history.
"""

from __future__ import annotations

import argparse
import os

from enginescope.cli import CliError

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def add_header_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--header", action="append", default=[], metavar="K:V",
        help="extra HTTP header on every request (repeatable), e.g. --header 'X-Team: infra'",
    )  # fmt: skip
    parser.add_argument("--modal-key", help="Modal proxy-auth token id (default: $MODAL_KEY)")
    parser.add_argument("--modal-secret", help="Modal proxy-auth token secret (default: $MODAL_SECRET)")


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or set(name) - _TOKEN:
        raise CliError(f"--header {text!r}: expected NAME:VALUE with a valid header name")
    if "\r" in value or "\n" in value:
        raise CliError(f"--header {name}: the value must be one line")
    return name, value


def request_headers(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """Headers from --header plus Modal-Key/Modal-Secret (flags, else the environment)."""
    env = dict(os.environ) if env is None else env
    headers = [parse_header(h) for h in args.header]
    key = args.modal_key or env.get("MODAL_KEY", "")
    secret = args.modal_secret or env.get("MODAL_SECRET", "")
    if bool(key) != bool(secret):
        raise CliError(
            "Modal proxy auth needs both --modal-key and --modal-secret (or MODAL_KEY and MODAL_SECRET)"
        )
    if key:
        headers += [("Modal-Key", key), ("Modal-Secret", secret)]
    return tuple(headers)
