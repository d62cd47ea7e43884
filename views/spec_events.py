"""Store access around the drift detector: its events (one readable ``detail`` line that
``parse_detail`` reads back) and the per-class acceptance series the dashboard draws."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from enginescope.collectors.model import EventKind

if TYPE_CHECKING:
    from enginescope.views.spec_drift import Drift

EVENT_KIND = str(EventKind.SPEC_ACCEPTANCE_DRIFT)
UNLABELLED = "(unlabelled)"  # traffic_class of requests without the class label

EVENTS_SQL = """
SELECT epoch(ts) AS ts_s, detail FROM events_in($t0, $t1)
WHERE kind = $kind AND ts >= $t0 AND ts <= $t1 ORDER BY ts"""


def recorded_drifts(con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float) -> list[tuple[str, float]]:
    """(class, event time) of the drift events already in the store."""
    rows = con.cursor().execute(EVENTS_SQL, {"t0": _utc(t0_s), "t1": _utc(t1_s), "kind": EVENT_KIND})
    found = []
    for ts_s, detail in rows.fetchall():
        parsed = parse_detail(detail or "")
        if parsed and "class" in parsed:
            found.append((str(parsed["class"]), float(ts_s)))
    return found


# --- event detail: one readable line that ``parse_detail`` reads back ------------------------
def event_detail(d: Drift) -> str:
    return (
        f"class={json.dumps(d.traffic_class)} accept_length={d.baseline_accept_length:.3f}->{d.current_accept_length:.3f} "
        f"tokens/step (-{100 * d.drop_ratio:.1f}%) onset={_utc(d.onset_s):%Y-%m-%dT%H:%M:%SZ} "
        f"p={d.p_value:.2e} alpha={d.alpha:.2e} lost_tps={d.lost_tokens_per_s:.1f} "
        f"lost_gpu_h={d.lost_gpu_hours:.4f} requests={d.window_requests}/{d.baseline_requests}"
    )


_DETAIL_RE = re.compile(
    r'class=(?P<cls>"(?:[^"\\]|\\.)*") accept_length=(?P<a>[\d.]+)->(?P<b>[\d.]+) .*?onset=(?P<onset>\S+) '
    r"p=(?P<p>\S+) .*?lost_tps=(?P<lost>[\d.]+) lost_gpu_h=(?P<gpuh>[\d.]+)"
)


def parse_detail(detail: str) -> dict[str, Any] | None:
    """The numbers of an ``event_detail`` line, or None for any other text."""
    m = _DETAIL_RE.search(detail)
    if m is None:
        return None
    return {
        "class": json.loads(m["cls"]),
        "baseline_accept_length": float(m["a"]),
        "current_accept_length": float(m["b"]),
        "onset": pd.Timestamp(m["onset"]),
        "p_value": float(m["p"]),
        "lost_tokens_per_s": float(m["lost"]),
        "lost_gpu_hours": float(m["gpuh"]),
    }


ACCEPTANCE_BY_CLASS_SQL = """
SELECT time_bucket(to_seconds($bucket_s), ts) AS t, coalesce(traffic_class, $unlabelled) AS traffic_class,
       avg(spec_accept_length) AS accept_length, count(*) AS requests,
       sum(completion_tokens) / sum(spec_verify_ct) AS tokens_per_step
FROM requests_in($t0, $t1)
WHERE ts >= $t0 AND ts < $t1 AND spec_verify_ct > 0 AND spec_accept_length IS NOT NULL
  AND coalesce(finish_reason, '') <> 'abort'
GROUP BY ALL ORDER BY t, traffic_class"""


def acceptance_series(
    con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float, bucket_s: int
) -> pd.DataFrame:
    """Per time bucket and class: mean acceptance length per request (tokens/verify step), the
    request count, and token-weighted tokens/step. Aggregated in DuckDB (the window may be long)."""
    params = {"t0": _utc(t0_s), "t1": _utc(t1_s), "bucket_s": int(bucket_s), "unlabelled": UNLABELLED}
    return con.cursor().execute(ACCEPTANCE_BY_CLASS_SQL, params).df()


def recorded_drift_details(con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float) -> pd.DataFrame:
    """The drift events in [t0, t1] with their parsed numbers (one row per event)."""
    rows = (
        con.cursor().execute(EVENTS_SQL, {"t0": _utc(t0_s), "t1": _utc(t1_s), "kind": EVENT_KIND}).fetchall()
    )
    parsed = [
        {"detected": pd.Timestamp(ts_s, unit="s", tz="UTC"), **p}
        for ts_s, detail in rows
        if (p := parse_detail(detail or "")) is not None
    ]
    columns = ["detected", "class", "baseline_accept_length", "current_accept_length", "onset", "p_value",
               "lost_tokens_per_s", "lost_gpu_hours"]  # fmt: skip
    return pd.DataFrame(parsed, columns=columns)


def _utc(ts_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_s, dt.UTC)
