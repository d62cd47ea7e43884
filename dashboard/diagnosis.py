"""'What happened': incidents in a window and their most likely cause, from the data alone.

Pure functions over the incident view's DataFrames (no Streamlit, no DuckDB):
  latency  signal -> DataFrame(t, p50, p95, p99) fleet-wide, from summed buckets
  series   DataFrame(t, replica, signal, mean, peak, low, rate)
  events   DataFrame(ts, replica, kind, detail, replica_count)

  gpu      DataFrame(ts, replica, throttle_<reason>...) rows of the gpu table (optional)

An incident is a run of time buckets whose fleet p95 breaches the SLO (or, without an SLO,
a multiple of the window's normal level: ``baseline_rule()``), or a fault event (engine
restart, GPU throttle or XID) that opens a span of its own when it breaches no latency
threshold. Each cause is scored from evidence in the incident window against the rest of
the window (the checks are in ``causes.py``); every conclusion carries its numbers.
Throttling is read from structured data (the gpu table's ``throttle_<reason>`` columns, else
the ``gpu_throttled`` signal), never from the text of an event's detail.
"""

from __future__ import annotations

import pandas as pd

from enginescope.collectors.signals import SLO_BY_SIGNAL, SLO_SIGNALS, THROTTLE_REASONS
from enginescope.dashboard import causes
from enginescope.dashboard.causes import EVENT_MARGIN_S, Context, Incident, between, hms
from enginescope.dashboard.spec_cause import spec_drift_cause

# Every check, the per-class speculative-acceptance drift (spec_cause.py) last.
CHECKS = (*causes.CHECKS, spec_drift_cause)

SLOWDOWN_COLUMNS = tuple(r.column for r in THROTTLE_REASONS if r.slowdown)
BASELINE_FACTOR = 3.0
# Decode steps are steady, so a sustained ITL rise of half is already a regression;
# queueing moves TTFT and e2e by much more than their noise.
BASELINE_FACTORS = {"ttft_seconds": BASELINE_FACTOR, "itl_seconds": 1.5, "e2e_seconds": BASELINE_FACTOR}
# The 25th percentile, not the median: in a short window an incident can cover half of it.
BASELINE_QUANTILE = 0.25


def baseline_rule() -> str:
    """The rule ``thresholds`` applies without an SLO, in words (the page's caption)."""
    factors = ", ".join(f"{SLO_BY_SIGNAL[s].label} {f:g}x" for s, f in BASELINE_FACTORS.items())
    return f"{factors} the window's {BASELINE_QUANTILE * 100:g}th-percentile p95"


# Events that are incidents even without a latency breach (availability, hardware).
FAULT_EVENT_KINDS = ("engine_restart", "gpu_throttle", "gpu_xid", "gpu_lost")
BUSY_UTILIZATION_PCT = 80.0  # idle GPUs drop their clocks: only busy ones show throttling


def thresholds(
    latency: dict[str, pd.DataFrame], slo: dict[str, float] | None
) -> dict[str, tuple[float, str]]:
    """signal -> (p95 threshold in s, how it was chosen)."""
    out: dict[str, tuple[float, str]] = {}
    for key, signal in SLO_SIGNALS.items():
        if slo and slo.get(key):
            out[signal] = (float(slo[key]), f"SLO {slo[key]:g} s")
        elif not slo and signal in latency and not latency[signal].empty:
            base, factor = float(latency[signal]["p95"].quantile(BASELINE_QUANTILE)), BASELINE_FACTORS[signal]
            if base > 0:
                out[signal] = (factor * base, f"{factor:g}x the window's normal p95 {base:.3g} s")
    return out


MIN_INCIDENT_S = 30.0  # shorter breaches are noise of a few slow requests, not incidents
MIN_INCIDENT_BUCKETS = 5  # ... but with fine buckets, 5 in a row (each with its own requests) are not


def min_incident_s(bucket_s: float) -> float:
    """Shortest breach that counts: 30 s, or 5 buckets when that is shorter, at least 1 bucket."""
    return max(bucket_s, min(MIN_INCIDENT_S, MIN_INCIDENT_BUCKETS * bucket_s))


def breach_intervals(
    df: pd.DataFrame, limit_s: float, bucket_s: float, min_duration_s: float = 0.0
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Runs of buckets with p95 > limit; a one-bucket gap does not split a run."""
    hot = df.loc[df["p95"] > limit_s, "t"].sort_values()
    runs: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    step = pd.Timedelta(seconds=bucket_s)
    for t in hot:
        if runs and t - runs[-1][1] <= step:
            runs[-1] = (runs[-1][0], t + step)
        else:
            runs.append((t, t + step))
    return [(t0, t1) for t0, t1 in runs if (t1 - t0).total_seconds() >= min_duration_s]


def find_incidents(
    latency: dict[str, pd.DataFrame],
    slo: dict[str, float] | None,
    bucket_s: float,
    window_end: pd.Timestamp | None = None,
) -> list[Incident]:
    """Breach runs of every latency signal, merged where they overlap."""
    spans: list[tuple[pd.Timestamp, pd.Timestamp, str, str, float]] = []
    for signal, (limit_s, why) in thresholds(latency, slo).items():
        df = latency.get(signal, pd.DataFrame())
        min_s = min_incident_s(bucket_s)
        for t0, t1 in breach_intervals(df, limit_s, bucket_s, min_s) if not df.empty else []:
            peak = float(df.loc[(df["t"] >= t0) & (df["t"] < t1), "p95"].max())
            spans.append((t0, t1, signal, why, peak))
    incidents: list[Incident] = []
    for t0, t1, signal, why, peak in sorted(spans, key=lambda s: s[0]):
        if not incidents or t0 > incidents[-1].end:
            incidents.append(Incident(t0, t1))
        inc = incidents[-1]
        inc.end = max(inc.end, t1)
        if signal not in inc.first_breach:
            inc.first_breach[signal] = t0
            inc.breaches[signal] = (
                f"{SLO_BY_SIGNAL[signal].label} p95 peaked at {peak:.3g} s (> {why}) from {hms(t0)}"
            )
    for inc in incidents:
        inc.ongoing = window_end is not None and inc.end >= window_end - pd.Timedelta(seconds=bucket_s)
    return incidents


def diagnose(
    latency: dict[str, pd.DataFrame],
    series: pd.DataFrame,
    events: pd.DataFrame,
    slo: dict[str, float] | None,
    bucket_s: float,
    window_end: pd.Timestamp | None = None,
    gpu: pd.DataFrame | None = None,
) -> list[Incident]:
    """Incidents with causes (best first) and the autoscaler's reaction times. ``gpu`` holds
    gpu-table rows (ts, replica, throttle_<reason> columns) of replicas with throttle events."""
    gpu = pd.DataFrame(columns=["ts", "replica"]) if gpu is None else gpu
    incidents = find_incidents(latency, slo, bucket_s, window_end)
    incidents = add_fault_incidents(incidents, events, series, bucket_s, window_end, gpu)
    fleet = fleet_frame(series)
    for inc in incidents:
        inside = between(fleet, "t", inc.start, inc.end)
        outside = fleet[~fleet.index.isin(inside.index)]
        ctx = Context(inc, inside, outside, latency, events, bucket_s, gpu)
        found = [c for c in (check(ctx) for check in CHECKS) if c is not None]
        inc.causes = sorted(found, key=lambda c: -c.score)
        _reaction(inc, events)
    return incidents


def add_fault_incidents(
    incidents: list[Incident],
    events: pd.DataFrame,
    series: pd.DataFrame,
    bucket_s: float,
    window_end: pd.Timestamp | None = None,
    gpu: pd.DataFrame | None = None,
) -> list[Incident]:
    """Fault events no latency incident explains open their own incident, from the event
    until the replica recovers (engine_ready again, or gpu_throttled back to 0). A
    gpu_throttle event after which no slowdown reason is active is a throttle ending."""
    if events.empty:
        return incidents
    margin = pd.Timedelta(seconds=EVENT_MARGIN_S)
    # A flapping fault (throttle on, off, on) within the shortest incident is one incident.
    gap = pd.Timedelta(seconds=min_incident_s(bucket_s))
    out = list(incidents)
    faults = events.loc[events["kind"].isin(FAULT_EVENT_KINDS)].sort_values("ts")
    for ev in faults.itertuples():
        if ev.kind == "gpu_throttle" and throttle_active_after(ev, series, gpu, bucket_s) is False:
            continue  # the slowdown ended: not a new fault
        end = _recovered_at(ev, events, series, bucket_s)
        near = [inc for inc in out if inc.start - margin <= ev.ts <= inc.end + gap]
        if near:
            near[0].end = max(near[0].end, end) if not near[0].breaches else near[0].end
            continue
        out.append(Incident(ev.ts, end))
    out.sort(key=lambda inc: inc.start)
    for inc in out:
        inc.ongoing = window_end is not None and inc.end >= window_end - pd.Timedelta(seconds=bucket_s)
    return out


def _recovered_at(ev, events: pd.DataFrame, series: pd.DataFrame, bucket_s: float) -> pd.Timestamp:
    step = pd.Timedelta(seconds=bucket_s)
    if ev.kind == "engine_restart":
        ready = events.loc[(events["kind"] == "engine_ready") & (events["replica"] == ev.replica), "ts"]
        ready = ready.loc[ready > ev.ts]
        return ready.min() if not ready.empty else ev.ts + step
    if ev.kind == "gpu_throttle" and not series.empty:
        hot = series.loc[(series["signal"] == "gpu_throttled") & (series["replica"] == ev.replica)]
        hot = hot.loc[(hot["t"] >= ev.ts - step) & (hot["peak"] > 0), "t"]
        return max(hot.max() + step, ev.ts + step) if not hot.empty else ev.ts + step
    return ev.ts + step


def throttle_active_after(ev, series: pd.DataFrame, gpu: pd.DataFrame | None, bucket_s: float) -> bool | None:
    """Is a slowdown reason active on ``ev.replica`` right after the event? From the gpu
    table's first row at or after it (``throttle_<reason>`` columns), else from the
    ``gpu_throttled`` signal's next bucket; None when neither source has the replica."""
    if gpu is not None and not gpu.empty and "replica" in gpu:
        rows = gpu.loc[(gpu["replica"] == ev.replica) & (gpu["ts"] >= ev.ts)]
        cols = [c for c in SLOWDOWN_COLUMNS if c in rows]
        if cols and not rows.empty:
            first = rows.loc[rows["ts"] == rows["ts"].min(), cols]
            return bool((first.fillna(0) > 0).to_numpy().any())
    if series.empty:
        return None
    hot = series.loc[(series["signal"] == "gpu_throttled") & (series["replica"] == ev.replica)]
    after = hot.loc[hot["t"] > ev.ts - pd.Timedelta(seconds=bucket_s)].sort_values("t")
    if after.empty:
        return None
    # The bucket holding the event mixes before and after; the next one is all "after".
    row = after.iloc[1] if len(after) > 1 and after["t"].iloc[0] <= ev.ts else after.iloc[0]
    return bool(row["peak"] > 0)


def fleet_frame(series: pd.DataFrame) -> pd.DataFrame:
    """One row per time bucket with the fleet aggregate each cause check needs."""
    if series.empty:
        return pd.DataFrame(columns=["t"])
    agg = {"queue_depth": ("mean", "sum"), "running_requests": ("mean", "sum"), "kv_usage_ratio": ("peak", "max"),
           "spec_accept_length": ("mean", "mean"), "gpu_sm_clock_mhz": ("low", "min"),
           "gpu_temperature_c": ("peak", "max"), "gpu_throttled": ("peak", "max"), "retractions": ("rate", "sum")}  # fmt: skip
    cols = {}
    for signal, (stat, how) in agg.items():
        part = series.loc[series["signal"] == signal]
        if signal == "spec_accept_length" and not part.empty:
            # 0 = no verify steps (a replica starting, idle or down), not an acceptance of 0:
            # averaging it in makes every scale-up look like a speculative collapse.
            part = part.loc[part["low" if "low" in part else "mean"] > 0]
        if not part.empty:
            cols[signal] = part.groupby("t")[stat].agg(how)
    busy = _busy_clock(series)
    if busy is not None:
        cols["busy_sm_clock_mhz"] = busy
    return pd.DataFrame(cols).reset_index(names="t") if cols else pd.DataFrame(columns=["t"])


def _busy_clock(series: pd.DataFrame) -> pd.Series | None:
    """Lowest mean SM clock per bucket among replicas whose GPUs were busy in it."""
    part = series.loc[series["signal"].isin(("gpu_sm_clock_mhz", "gpu_utilization_pct"))]
    if part.empty:
        return None
    wide = part.pivot_table(index=["t", "replica"], columns="signal", values="mean")
    if "gpu_sm_clock_mhz" not in wide or "gpu_utilization_pct" not in wide:
        return None
    busy = wide.loc[wide["gpu_utilization_pct"] >= BUSY_UTILIZATION_PCT, "gpu_sm_clock_mhz"]
    return busy.groupby(level="t").min() if not busy.empty else None


def _reaction(inc: Incident, events: pd.DataFrame) -> None:
    """Breach start -> first scale_up -> first replica started after it is engine_ready."""
    if events.empty:
        return
    scale = events.loc[
        (events["kind"] == "scale_up") & (events["ts"] >= inc.start - pd.Timedelta(seconds=EVENT_MARGIN_S))
    ]
    scale = scale.loc[scale["ts"] <= inc.end]
    if scale.empty:
        return
    t_scale = scale["ts"].min()
    inc.scale_up_after_s = (t_scale - inc.start).total_seconds()
    started = events.loc[
        (events["kind"] == "container_started") & (events["ts"] >= t_scale - pd.Timedelta(seconds=5))
    ]
    ready = events.loc[
        (events["kind"] == "engine_ready")
        & events["replica"].isin(started["replica"])
        & (events["ts"] >= t_scale)
    ]
    if not ready.empty:
        inc.new_replica_ready_after_s = (ready["ts"].min() - inc.start).total_seconds()


def summary_lines(incidents: list[Incident]) -> list[str]:
    """Markdown, one block per incident: when, what breached, cause + evidence, reaction."""
    if not incidents:
        return ["No latency incident in this window."]
    lines: list[str] = []
    for n, inc in enumerate(incidents, 1):
        state = "ongoing" if inc.ongoing else f"recovered after {_dur(inc.duration_s)}"
        cause = inc.cause.title if inc.cause else "cause not determined from the data"
        lines.append("")  # a blank line ends the previous bullet list in Markdown
        lines.append(
            f"**Incident {n}: {hms(inc.start)} → {hms(inc.end)} UTC ({state}) — likely cause: {cause}**"
        )
        lines += [f"- {text}" for text in inc.breaches.values()]
        if not inc.breaches:
            lines.append("- no latency threshold breached: a fault event opened this incident")
        if inc.cause:
            lines += [f"- evidence: {e}" for e in inc.cause.evidence]
        if len(inc.causes) > 1:
            lines.append("- also seen: " + "; ".join(f"{c.title} ({c.evidence[0]})" for c in inc.causes[1:]))
        lines.append(f"- {_reaction_text(inc)}")
    return lines


def _reaction_text(inc: Incident) -> str:
    if inc.scale_up_after_s is None:
        return "no scale_up event during the incident"
    when = "after" if inc.scale_up_after_s >= 0 else "before"
    text = f"scale_up {_dur(abs(inc.scale_up_after_s))} {when} the breach started"
    if inc.new_replica_ready_after_s is not None:
        text += f"; new replica engine_ready after {_dur(inc.new_replica_ready_after_s)}"
    return text


def duration_text(seconds: float) -> str:
    """'45 s' or '3.5 min'."""
    return _dur(seconds)


def _dur(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
