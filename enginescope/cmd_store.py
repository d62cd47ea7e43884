"""``enginescope store migrate``: convert a store of the old Parquet-segment layout to Delta."""

from __future__ import annotations

import argparse
from pathlib import Path

from enginescope.cli import CliError

HELP = "Store maintenance: migrate an old-layout store to Delta Lake tables."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = sub.add_parser("migrate", help="convert the old Parquet-segment layout to Delta tables")
    migrate.add_argument("--store", type=Path, required=True, help="store folder of the old layout")
    migrate.add_argument(
        "--to", default=None, help="write the Delta store here instead (folder or s3:// URL)"
    )


def run(args: argparse.Namespace) -> int:
    from enginescope.store.migrate import MigrationError, migrate

    if not args.store.is_dir():
        raise CliError(f"--store {args.store}: no such folder")
    try:
        report = migrate(args.store, args.to, progress=print)
    except MigrationError as exc:
        raise CliError(str(exc)) from None
    total = sum(report.rows.values())
    print(f"migrated {total} rows ({', '.join(f'{t} {n}' for t, n in report.rows.items())}), "
          f"{report.bench_runs} bench runs into {report.target}")  # fmt: skip
    if report.backup is not None:
        print(f"the old files are kept in {report.backup}; delete it once you are satisfied")
    return 0
