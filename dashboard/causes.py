"""The cause checks of a diagnosis: each looks at one incident's evidence and returns a scored
``Cause`` or None. ``diagnosis.diagnose`` runs them all (plus ``spec_cause``) per incident and
ranks what they return; every cause carries the numbers behind it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from enginescope.collectors.signals import THROTTLE_REASONS

EVENT_MARGIN_S = 120.0  # an event this long before the breach can still explain it


@dataclass(frozen=True, slots=True)
class Cause:
    key: str  # prefill_queueing, decode_saturation, kv_exhaustion, gpu_throttling, ...
    title: str
    score: float  # >= 1 means strong evidence; event-backed causes score highest
    evidence: tuple[str, ...]


@dataclass
class Incident:
    start: pd.Timestamp
    end: pd.Timestamp  # end of the last breaching bucket
    breaches: dict[str, str] = field(default_factory=dict)  # signal -> "p95 9.5 s > SLO 2 s from 10:02"
    first_breach: dict[str, pd.Timestamp] = field(default_factory=dict)
    ongoing: bool = False
    causes: list[Cause] = field(default_factory=list)  # best first
    scale_up_after_s: float | None = None
    new_replica_ready_after_s: float | None = None

    @property
    def cause(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Context:
    inc: Incident
    inside: pd.DataFrame
    outside: pd.DataFrame
    latency: dict[str, pd.DataFrame]
    events: pd.DataFrame
    bucket_s: float
    gpu: pd.DataFrame

    def stat(self, column: str, how: str = "max", where: str = "inside") -> float | None:
        frame = self.inside if where == "inside" else self.outside
        if column not in frame or frame[column].dropna().empty:
            return None
        values = frame[column].dropna()
        return float(values.max() if how == "max" else values.min() if how == "min" else values.median())

    def events_of(self, kind: str) -> pd.DataFrame:
        if self.events.empty:
            return self.events
        t0 = self.inc.start - pd.Timedelta(seconds=EVENT_MARGIN_S)
        return between(self.events.loc[self.events["kind"] == kind], "ts", t0, self.inc.end)

    def latency_ratio(self, signal: str) -> tuple[float, float, float] | None:
        """(peak p95 inside, median p95 outside, ratio)."""
        df = self.latency.get(signal)
        if df is None or df.empty:
            return None
        peak = between(df, "t", self.inc.start, self.inc.end)["p95"].max()
        base = df.loc[(df["t"] < self.inc.start) | (df["t"] >= self.inc.end), "p95"].median()
        if pd.isna(peak) or pd.isna(base) or base <= 0:
            return None
        return float(peak), float(base), float(peak / base)


def _restart(ctx: Context) -> Cause | None:
    hits = ctx.events_of("engine_restart")
    if hits.empty:
        return None
    ready = ctx.events.loc[ctx.events["kind"] == "engine_ready"]
    # A replica that restarted and was serving again before the breach began did not cause it.
    down = [r for r in hits.itertuples() if not (r.ts < ctx.inc.start and _ready_by(ready, r.replica, r.ts, ctx.inc.start))]  # fmt: skip
    who = ", ".join(f"{r.replica} at {hms(r.ts)}" for r in (down or list(hits.itertuples())))
    if not down:
        return Cause("engine_restart", "Engine restart", 0.5, (f"engine_restart events: {who}, ready again before the breach",))  # fmt: skip
    return Cause("engine_restart", "Engine restart", 3.0, (f"engine_restart events: {who}",))


def _throttle(ctx: Context) -> Cause | None:
    hits, evidence = ctx.events_of("gpu_throttle"), []
    margin = pd.Timedelta(seconds=EVENT_MARGIN_S)
    reasons = throttle_reasons(ctx.gpu, ctx.inc.start - margin, ctx.inc.end)
    if not hits.empty:
        who = sorted(set(hits["replica"]))
        evidence.append("gpu_throttle events: " + ", ".join(
            f"{r} ({', '.join(reasons[r])})" if r in reasons else f"{r} at {hms(hits.loc[hits['replica'] == r, 'ts'].min())}"
            for r in who))  # fmt: skip
    elif reasons:
        evidence.append("slowdown reasons: " + ", ".join(f"{r} ({', '.join(v)})" for r, v in reasons.items()))
    clock_in, clock_out = (
        ctx.stat("busy_sm_clock_mhz", "min"),
        ctx.stat("busy_sm_clock_mhz", "median", "outside"),
    )
    clock_drop = bool(clock_in and clock_out and clock_in < 0.8 * clock_out)
    if clock_drop:
        evidence.append(
            f"min SM clock of busy GPUs {clock_in:.0f} MHz vs {clock_out:.0f} MHz outside the incident"
        )
    if (ctx.stat("gpu_throttled") or 0) > 0:
        evidence.append("gpu_throttled = 1 (thermal/power/HW slowdown reason active)")
    temp = ctx.stat("gpu_temperature_c")
    if evidence and temp is not None:
        evidence.append(f"max GPU temperature {temp:.0f} °C")
    if not evidence:
        return None
    return Cause(
        "gpu_throttling", "GPU throttling", 2.5 if (not hits.empty or clock_drop) else 1.0, tuple(evidence)
    )


def _kv(ctx: Context) -> Cause | None:
    kv, retract = ctx.stat("kv_usage_ratio"), ctx.stat("retractions")
    if kv is None or kv < 0.95:
        return None
    evidence = [f"KV cache usage peaked at {kv:.2f}"]
    if retract:
        evidence.append(f"retractions up to {retract:.2g}/s")
    return Cause("kv_exhaustion", "KV cache exhaustion", 2.0 if retract else 1.2, tuple(evidence))


def _spec(ctx: Context) -> Cause | None:
    # Medians, not extremes: a replica that is starting reports 0 and must not look like a collapse.
    low, base = ctx.stat("spec_accept_length", "median"), ctx.stat("spec_accept_length", "median", "outside")
    if low is None or base is None or base <= 1.2 or low > 0.7 * base:
        return None
    evidence = [f"spec acceptance length (median) {low:.2f} tokens/step vs {base:.2f} outside"]
    itl = ctx.latency_ratio("itl_seconds")
    if itl:
        evidence.append(f"ITL p95 {itl[0]:.3g} s vs {itl[1]:.3g} s baseline")
    return Cause("spec_acceptance_drop", "Speculative-acceptance drop", 2.0, tuple(evidence))


def _prefill_queueing(ctx: Context) -> Cause | None:
    q_in, q_out = ctx.stat("queue_depth"), ctx.stat("queue_depth", "median", "outside") or 0.0
    if q_in is None or q_in < max(5.0, 3 * q_out):
        return None
    evidence = [f"queued requests (fleet) peaked at {q_in:.0f} vs median {q_out:.0f}"]
    qt = ctx.latency_ratio("queue_time_seconds")
    if qt:
        evidence.append(f"queue time p95 {qt[0]:.3g} s vs {qt[1]:.3g} s baseline")
    first = ctx.inc.first_breach
    if "ttft_seconds" in first and first["ttft_seconds"] <= first.get("itl_seconds", ctx.inc.end):
        evidence.append("TTFT breached before (or without) ITL")
    return Cause(
        "prefill_queueing",
        "Prefill queueing (load above capacity)",
        1.5 + 0.1 * len(evidence),
        tuple(evidence),
    )


def _decode_saturation(ctx: Context) -> Cause | None:
    run_in, run_out = ctx.stat("running_requests"), ctx.stat("running_requests", "median", "outside")
    itl = ctx.latency_ratio("itl_seconds")
    if run_in is None or not run_out or itl is None or run_in < 1.3 * run_out or itl[2] < 1.5:
        return None
    evidence = (
        f"running requests (fleet) {run_in:.0f} vs {run_out:.0f}",
        f"ITL p95 {itl[0]:.3g} s vs {itl[1]:.3g} s",
    )
    return Cause("decode_saturation", "Decode saturation (batch too large)", 1.4, evidence)


def _cold_start(ctx: Context) -> Cause | None:
    started = ctx.events_of("container_started")
    if started.empty:
        return None
    ready = ctx.events.loc[ctx.events["kind"] == "engine_ready"]
    waiting = sorted(
        {r.replica for r in started.itertuples() if not _ready_by(ready, r.replica, r.ts, ctx.inc.start)}
    )
    if not waiting:
        return None
    evidence = (f"replicas starting, not ready at breach start: {', '.join(waiting)}",)
    return Cause("cold_start", "Cold start (replicas not ready)", 0.8, evidence)


def _ready_by(ready: pd.DataFrame, replica: str, started: pd.Timestamp, deadline: pd.Timestamp) -> bool:
    """Did ``replica`` (started at ``started``) report engine_ready by ``deadline``?"""
    mine = ready.loc[(ready["replica"] == replica) & (ready["ts"] >= started), "ts"]
    return not mine.empty and mine.min() <= deadline


CHECKS = (_restart, _throttle, _kv, _spec, _prefill_queueing, _decode_saturation, _cold_start)


def throttle_reasons(gpu: pd.DataFrame, t0: pd.Timestamp, t1: pd.Timestamp) -> dict[str, list[str]]:
    """replica -> slowdown reasons (registry names) active in [t0, t1) per the gpu table."""
    if gpu is None or gpu.empty or "replica" not in gpu:
        return {}
    rows = between(gpu, "ts", t0, t1)
    out: dict[str, list[str]] = {}
    for reason in (r for r in THROTTLE_REASONS if r.slowdown and r.column in rows):
        hit = rows.loc[rows[reason.column].fillna(0) > 0, "replica"].unique()
        for replica in hit:
            out.setdefault(str(replica), []).append(reason.name)
    return out


def between(df: pd.DataFrame, col: str, t0: pd.Timestamp, t1: pd.Timestamp) -> pd.DataFrame:
    return df.loc[(df[col] >= t0) & (df[col] < t1)] if not df.empty else df


def hms(ts: pd.Timestamp | dt.datetime) -> str:
    return pd.Timestamp(ts).strftime("%H:%M:%S")
