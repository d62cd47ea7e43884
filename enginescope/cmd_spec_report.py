"""``enginescope spec-report``: the evidence of speculative-acceptance drifts, as a Parquet dataset.

Layout of ``--out`` (ready for a drafter-retraining job to read with any Parquet reader)::

    evidence.parquet                 one row per drift: class, baseline vs current acceptance,
                                     p-value and alpha, windows, lost tok/s and GPU-hours
    requests/traffic_class=<c>/*.parquet
                                     the requests behind each drop (drift_id, request_id,
                                     replica, finish time, token counts, acceptance, histogram)
    manifest.json                    detector settings, time range, row counts

Never prompt or output content: the store holds none. ``--with-params`` adds the ``params``
column, filled only when the sidecar ran with the request-params opt-in (non-content sampling
parameters such as temperature and max_new_tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from enginescope.cli import CliError, add_store_argument
from enginescope.views.spec_drift import Drift, DriftConfig, scan

HELP = "Detect speculative-acceptance drops per traffic class and write the evidence as a Parquet dataset."

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
REQUEST_COLUMNS = (
    "ts", "replica", "request_id", "traffic_class", "custom_labels", "prompt_tokens", "completion_tokens",
    "spec_verify_ct", "spec_accept_length", "spec_num_correct_drafts", "spec_num_proposed_drafts",
    "spec_correct_drafts_histogram", "finish_reason",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    parser.add_argument(
        "--since", default="24h", help="start: ISO time (UTC) or a duration before --until (2h)"
    )
    parser.add_argument(
        "--until", default="", help="end: ISO time (UTC); default the newest request in the store"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("spec-report"), help="dataset folder (default ./spec-report)"
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it already holds files")
    parser.add_argument(
        "--with-params", action="store_true", help="add the opt-in non-content request parameters (params)"
    )
    defaults = DriftConfig()
    parser.add_argument("--window-s", type=float, default=defaults.window_s, help="tested window (s)")
    parser.add_argument(
        "--baseline-s", type=float, default=defaults.baseline_s, help="baseline before it (s)"
    )
    parser.add_argument(
        "--false-alarms-per-day",
        type=float,
        default=defaults.false_alarms_per_day,
        help="expected false alarms per day over all classes (sets the per-test alpha)",
    )
    parser.add_argument(
        "--min-drop", type=float, default=defaults.min_drop_ratio, help="smallest relative drop reported"
    )


def run(args: argparse.Namespace) -> int:
    from enginescope.store import open_store

    if isinstance(args.store, Path) and not args.store.is_dir():
        raise CliError(f"--store {args.store}: no such store folder")
    con = open_store(args.store)
    t1_s = _until(con, args.until)
    t0_s = parse_since(args.since, t1_s)
    if t0_s >= t1_s:
        raise CliError(f"--since {args.since!r} is not before the end {_iso(t1_s)}")
    config = _config(args)
    drifts = scan(con, t0_s, t1_s, config)
    requests = _requests(con, drifts, args.with_params)
    manifest = {
        "store": str(args.store.resolve()) if isinstance(args.store, Path) else args.store,
        "since": _iso(t0_s),
        "until": _iso(t1_s),
        "created": _iso(dt.datetime.now(dt.UTC).timestamp()),
        "detector": dataclasses.asdict(config)
        | {
            "method": "one-sided Welch t-test per class, alpha = "
            "false_alarms_per_day / (tests per day x classes)"
        },
        "drifts": len(drifts),
        "requests": requests.num_rows,
        "with_params": bool(args.with_params),
    }
    write_dataset(args.out, drifts, requests, manifest, args.force)
    _print_summary(drifts, args.out, t0_s, t1_s)
    return 0


def parse_since(text: str, end_s: float) -> float:
    """ISO time (naive = UTC) or a duration (``90s``, ``30m``, ``2h``, ``7d``) before ``end_s``."""
    m = _DURATION_RE.match(text.strip())
    if m:
        return end_s - float(m[1]) * _UNIT_S[m[2]]
    return _parse_iso(text, "--since")


def _parse_iso(text: str, flag: str) -> float:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{flag} {text!r}: expected an ISO time (2026-12-04T10:00) or a duration (2h)"
        ) from None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _until(con: Any, text: str) -> float:
    if text:
        return _parse_iso(text, "--until")
    newest = con.cursor().execute("SELECT max(epoch(ts)) FROM requests").fetchone()[0]
    if newest is None:
        raise CliError("the store has no per-request data (SGLang --export-metrics-to-file)")
    return float(newest) + 1e-6  # the window is half-open: include the newest request


def _config(args: argparse.Namespace) -> DriftConfig:
    for name in ("window_s", "baseline_s", "false_alarms_per_day"):
        if getattr(args, name) <= 0:
            raise CliError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    return DriftConfig(
        window_s=args.window_s,
        baseline_s=args.baseline_s,
        false_alarms_per_day=args.false_alarms_per_day,
        min_drop_ratio=args.min_drop,
    )


def _requests(con: Any, drifts: list[Drift], with_params: bool) -> pa.Table:
    """The store's rows of every drift's requests, with the drift they belong to."""
    ids = pa.table(
        {
            "drift_id": [i for i, d in enumerate(drifts) for _ in d.request_ids],
            "request_id": [r for d in drifts for r in d.request_ids],
        }
    )
    columns = ", ".join(f"r.{c}" for c in (*REQUEST_COLUMNS, *(("params",) if with_params else ())))
    cur = con.cursor()  # its own connection: the registered ids go away with it
    cur.register("spec_report_ids", ids)
    # One row per (drift, request): a request id can repeat across replicas, never within one.
    sql = (
        f"SELECT i.drift_id, {columns} FROM requests r JOIN spec_report_ids i USING (request_id) "
        "ORDER BY i.drift_id, r.ts"
    )
    table = cur.sql(sql).to_arrow_table()
    cur.close()
    return table


def write_dataset(out: Path, drifts: list[Drift], requests: pa.Table, manifest: dict, force: bool) -> None:
    """Write into a temp folder next to ``out``, then swap it in: readers never see half a report."""
    if out.exists() and any(out.iterdir()) and not force:
        raise CliError(f"--out {out} already holds files; pass --force to replace them")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        evidence = [d.record() | {"drift_id": i} for i, d in enumerate(drifts)]
        pq.write_table(_evidence_table(evidence), tmp / "evidence.parquet")
        if requests.num_rows:
            pads.write_dataset(
                requests, tmp / "requests", format="parquet", partitioning=["traffic_class"],
                partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore",
            )  # fmt: skip
        else:
            (tmp / "requests").mkdir()
            pq.write_table(requests, tmp / "requests" / "empty.parquet")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _evidence_table(rows: list[dict[str, Any]]) -> pa.Table:
    if rows:
        return pa.Table.from_pylist(rows)
    # No drift: the same columns, typed, so a job reading the report needs no special case.
    zero = {"str": "", "float": 0.0, "int": 0}
    sample = Drift(**{f.name: zero[f.type] for f in dataclasses.fields(Drift) if f.type in zero})
    return pa.Table.from_pylist([sample.record() | {"drift_id": 0}]).slice(0, 0)


def _print_summary(drifts: list[Drift], out: Path, t0_s: float, t1_s: float) -> None:
    print(f"spec-report {_iso(t0_s)} → {_iso(t1_s)}: {len(drifts)} drift(s); dataset in {out}")
    for d in drifts:
        print(
            f"  {d.traffic_class}: acceptance {d.baseline_accept_length:.2f} → {d.current_accept_length:.2f} "
            f"tokens/step (-{100 * d.drop_ratio:.1f}%) from {_iso(d.onset_s)}, p={d.p_value:.1e} "
            f"(alpha {d.alpha:.1e}); lost {d.lost_tokens_per_s:.0f} tok/s, {d.lost_gpu_hours:.3f} GPU-h; "
            f"{len(d.request_ids)} requests",
            file=sys.stdout,
        )


def _iso(ts_s: float) -> str:
    return dt.datetime.fromtimestamp(ts_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
