"""The incident view's status strip: what is broken, since when, is it recovering, in numbers.

Pure: the incident view's DataFrames and the diagnosis in, a ``Status`` out (no Streamlit).
"SLO attainment" here is the share of time buckets whose fleet p95 met every threshold
(the SLO, else the diagnosis's baseline rule): the page has bucketed quantiles, not requests,
so it says what it counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from enginescope.collectors.signals import SLO_BY_SIGNAL
from enginescope.dashboard import diagnosis
from enginescope.views.spec_events import EVENT_KIND, parse_detail

NOW_S = 300.0  # "now" is the last 5 minutes of the window ...
NOW_SHARE = 0.25  # ... or its last quarter when the window is shorter than 20 minutes


@dataclass(frozen=True, slots=True)
class Status:
    attainment_now: float | None  # 0..1, share of buckets meeting every threshold
    attainment_window: float | None
    threshold_kind: str  # "SLO" or "threshold" (baseline rule, no SLO set)
    replicas_up: int | None
    replicas_wanted: int | None  # the autoscaler's latest target (scale event replica_count)
    queue_now: float | None  # fleet queued requests, last bucket
    queue_peak: float | None
    cause_line: str


def now_start(t0: pd.Timestamp, t1: pd.Timestamp) -> pd.Timestamp:
    span = t1 - t0
    return t1 - min(pd.Timedelta(seconds=NOW_S), span * NOW_SHARE)


def attainment(
    latency: dict[str, pd.DataFrame], limits: dict[str, tuple[float, str]], since: pd.Timestamp | None = None
) -> float | None:
    """Share of time buckets (at or after ``since``) in which every thresholded signal's fleet
    p95 was within its threshold; buckets without data for a signal do not count against it."""
    flags = []
    for signal, (limit_s, _) in limits.items():
        df = latency.get(signal)
        if df is None or df.empty:
            continue
        part = df if since is None else df.loc[df["t"] >= since]
        flags.append(part.set_index("t")["p95"].le(limit_s).rename(signal))
    if not flags:
        return None
    ok = pd.concat(flags, axis=1, sort=True)
    ok = ok.loc[ok.notna().any(axis=1)]
    if ok.empty:
        return None
    return float(ok.fillna(True).all(axis=1).mean())


def replicas_wanted(events: pd.DataFrame) -> int | None:
    """The autoscaler's latest target: ``replica_count`` of the last scale event."""
    if events.empty or "replica_count" not in events:
        return None
    scale = events.loc[events["kind"].isin(("scale_up", "scale_down"))].dropna(subset=["replica_count"])
    return None if scale.empty else int(scale.sort_values("ts")["replica_count"].iloc[-1])


def fleet_queue(series: pd.DataFrame) -> pd.Series:
    """Fleet queued requests per bucket (sum over replicas of the bucket mean)."""
    if series.empty:
        return pd.Series(dtype="float64")
    part = series.loc[series["signal"] == "queue_depth"]
    return part.groupby("t")["mean"].sum().sort_index()


def cause_line(
    incidents: list[diagnosis.Incident],
    latency: dict[str, pd.DataFrame],
    since_now: pd.Timestamp,
    events: pd.DataFrame | None = None,
) -> str:
    """One line: the latest incident's cause, when it started, and whether it is recovering."""
    if not incidents:
        drift = _latest_drift(events)
        if drift is not None:
            return f"No latency incident in this window, but {drift} (acceptance by class below)."
        return "No incident in this window: every threshold held and no fault event was recorded."
    inc = next((i for i in reversed(incidents) if i.ongoing), incidents[-1])
    cause = inc.cause.title if inc.cause else "cause not determined from the data"
    evidence = f" ({inc.cause.evidence[0]})" if inc.cause and inc.cause.evidence else ""
    if not inc.ongoing:
        return (
            f"Recovered: {cause}{evidence}, {_hms(inc.start)} → {_hms(inc.end)} UTC "
            f"({diagnosis.duration_text(inc.duration_s)})"
        )
    return f"Ongoing since {_hms(inc.start)} UTC: {cause}{evidence}{_trend(inc, latency, since_now)}"


def _latest_drift(events: pd.DataFrame | None) -> str | None:
    """The newest recorded speculative-acceptance drift, in words (it costs throughput before
    it shows in latency, so it is news even when every threshold held)."""
    if events is None or events.empty:
        return None
    drifts = events.loc[events["kind"] == EVENT_KIND].sort_values("ts")
    if drifts.empty:
        return None
    last = drifts.iloc[-1]
    found = parse_detail(str(last["detail"])) or {}
    what = "a speculative-acceptance drift was recorded"
    if "class" in found:
        what += (
            f" for class {found['class']!r} (accept length {found['baseline_accept_length']:.2f} → "
            f"{found['current_accept_length']:.2f} tokens/step)"
        )
    return f"{what} at {_hms(last['ts'])} UTC"


def _trend(inc: diagnosis.Incident, latency: dict[str, pd.DataFrame], since_now: pd.Timestamp) -> str:
    """'recovering' when the breached p95 now is well below its peak in the incident."""
    for signal in inc.first_breach:
        df = latency.get(signal)
        if df is None or df.empty:
            continue
        during = df.loc[df["t"] >= inc.start, "p95"]
        now = df.loc[df["t"] >= since_now, "p95"]
        if during.empty or now.empty:
            continue
        peak, last = float(during.max()), float(now.iloc[-1])
        word = "recovering" if last < 0.5 * peak else "not recovering yet"
        return f" — {word}: {SLO_BY_SIGNAL[signal].label} p95 now {last:.3g} s, peak {peak:.3g} s"
    return ""


def status(
    latency: dict[str, pd.DataFrame],
    series: pd.DataFrame,
    replica_count: pd.DataFrame,
    events: pd.DataFrame,
    incidents: list[diagnosis.Incident],
    limits: dict[str, tuple[float, str]],
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> Status:
    since = now_start(*window)
    queue = fleet_queue(series)
    up = None if replica_count.empty else int(replica_count.sort_values("t")["replicas_up"].iloc[-1])
    kind = "SLO" if any(why.startswith("SLO") for _, why in limits.values()) else "threshold"
    return Status(
        attainment_now=attainment(latency, limits, since),
        attainment_window=attainment(latency, limits),
        threshold_kind=kind,
        replicas_up=up,
        replicas_wanted=replicas_wanted(events),
        queue_now=float(queue.iloc[-1]) if not queue.empty else None,
        queue_peak=float(queue.max()) if not queue.empty else None,
        cause_line=cause_line(incidents, latency, since, events),
    )


def _hms(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).strftime("%H:%M:%S")
