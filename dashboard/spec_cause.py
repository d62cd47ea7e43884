"""The What-happened cause for a speculative-acceptance drift (``diagnosis.CHECKS`` calls it).

It names the drift when a ``spec_acceptance_drift`` event's drop was under way during the
incident (onset before the incident's end, detected no longer ago than the detector's span)
and decode latency rose: ITL (or e2e) p95 in the incident at least ``MIN_LATENCY_RATIO`` times
the rest of the window. A drift without a latency change is no cause of a latency incident.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from enginescope.dashboard.causes import Cause
from enginescope.views.spec_drift import DriftConfig
from enginescope.views.spec_events import EVENT_KIND, parse_detail

MIN_LATENCY_RATIO = 1.1  # fewer tokens per verify step lengthen decode by the same factor
SCORE = 2.3  # above the fleet-wide acceptance-gauge rule: this one names the class and its cost


def spec_drift_cause(ctx: Any) -> Any:
    """A ``Cause`` or None; ``ctx`` is the incident's ``causes.Context``."""
    drops = _drops_during(ctx.events, ctx.inc.start, ctx.inc.end)
    if not drops:
        return None
    rises = [(name, r) for name in ("itl_seconds", "e2e_seconds") if (r := ctx.latency_ratio(name))]
    rises = [(name, r) for name, r in rises if r[2] >= MIN_LATENCY_RATIO]
    if not rises:
        return None
    evidence = [
        f"speculative acceptance of class {d['class']} fell from {d['baseline_accept_length']:.2f} to "
        f"{d['current_accept_length']:.2f} tokens/step at {d['onset']:%H:%M} UTC (p={d['p_value']:.1e}); "
        f"lost {d['lost_tokens_per_s']:.0f} tok/s"
        for d in drops
    ]
    name, (peak, base, _) = rises[0]
    evidence.append(f"{'ITL' if name == 'itl_seconds' else 'e2e'} p95 {peak:.3g} s vs {base:.3g} s outside")
    classes = ", ".join(sorted({d["class"] for d in drops}))
    return Cause(
        "spec_acceptance_drift", f"Speculative acceptance drop (class {classes})", SCORE, tuple(evidence)
    )


def _drops_during(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> list[dict[str, Any]]:
    if events.empty or "kind" not in events:
        return []
    span = pd.Timedelta(seconds=DriftConfig().span_s)  # a detected drop is the baseline after this
    hits = events.loc[(events["kind"] == EVENT_KIND) & (events["ts"] >= start - span) & (events["ts"] <= end)]
    drops = [p for p in (parse_detail(str(d)) for d in hits["detail"]) if p is not None]
    return [d for d in drops if d["onset"] <= end]
