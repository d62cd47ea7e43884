"""``enginescope query``: run SQL or a named preset against the store's DuckDB views."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from enginescope.cli import CliError, add_store_argument

HELP = (
    "Query the store with SQL (views: samples, histograms, histograms_1m, signals, signals_1m, events, gpu,"
    " requests; X_in(t0, t1) reads only the files of a time window)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", nargs="?", help="SQL to run (omit with --preset or --list-presets)")
    add_store_argument(parser)
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--preset", help="run a named query from enginescope.views.queries (see --list-presets)"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="preset parameter (repeatable)"
    )
    parser.add_argument("--list-presets", action="store_true", help="list presets and their parameters")


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        sys.stdout.write(_list_presets(_presets()))
        return 0
    if bool(args.sql) == bool(args.preset):
        raise CliError("give either SQL or --preset NAME (see --list-presets)")
    sql, params = _resolve(args)
    columns, rows = _execute(args.store, sql, params)
    sys.stdout.write(FORMATTERS[args.format](columns, rows))
    return 0


def _resolve(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None]:
    if args.sql:
        if args.param:
            raise CliError("--param only applies to --preset")
        return args.sql, None
    presets = _presets()
    preset = presets.get(args.preset)
    if preset is None:
        raise CliError(f"unknown preset {args.preset!r}; known: {', '.join(sorted(presets)) or 'none'}")
    defaults = dict(getattr(preset, "params", {}) or {})
    overrides = {}
    for item in args.param:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param {item!r}: expected K=V")
        if key not in defaults:
            raise CliError(f"preset {preset.name!r} has no parameter {key!r}; it has: {', '.join(defaults)}")
        overrides[key] = parse_param(key, text, defaults[key])
    return preset.sql, {**defaults, **overrides}


def parse_param(key: str, text: str, default: Any) -> Any:
    """Convert ``text`` to the type of the preset's default value."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true/false")
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list | tuple):
            return [item for item in text.split(",") if item]
        if isinstance(default, dt.datetime):
            parsed = dt.datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise CliError(f"--param {key}={text!r}: {exc}") from exc
    return text


def _presets() -> Mapping[str, Any]:
    try:
        from enginescope.views.queries import PRESETS
    except ImportError:  # presets module not available in this build
        return {}
    return PRESETS


def _list_presets(presets: Mapping[str, Any]) -> str:
    if not presets:
        return "no presets available\n"
    lines = []
    for name in sorted(presets):
        preset = presets[name]
        params = ", ".join(f"{k}={_plain(v)}" for k, v in (getattr(preset, "params", {}) or {}).items())
        lines.append(f"{name}: {preset.description}" + (f"\n    params: {params}" if params else ""))
    return "\n".join(lines) + "\n"


def _execute(store: Path, sql: str, params: dict[str, Any] | None) -> tuple[list[str], list[tuple]]:
    import duckdb

    from enginescope.store import LegacyStoreError, open_store, query

    if isinstance(store, Path) and not store.is_dir():
        raise CliError(f"store {store} does not exist (set --store or $ENGINESCOPE_STORE)")
    try:
        con = open_store(store)
        cursor = query(con, sql, params)
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()
    except (duckdb.Error, LegacyStoreError) as exc:
        raise CliError(_one_line(exc)) from exc


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly version of a DuckDB result value."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, list | dict):
        return json.dumps(plain)
    return str(plain)


def format_table(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def format_csv(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def format_json(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    records = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(records, indent=1) + "\n"


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}
