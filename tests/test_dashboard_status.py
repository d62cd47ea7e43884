"""The status strip's cause line when no latency threshold broke but a drift was recorded."""

from __future__ import annotations

import pandas as pd

from enginescope.dashboard import status
from enginescope.views.spec_drift import Drift
from enginescope.views.spec_events import EVENT_KIND, event_detail

T0 = pd.Timestamp("2026-12-07 10:00:00", tz="UTC")


def _drift() -> Drift:
    fields = {f: 0 for f in Drift.__dataclass_fields__}
    fields.update(traffic_class="code", baseline_accept_length=2.9, current_accept_length=2.1,
                  window_accept_length=2.1, onset_s=T0.timestamp(), detected_s=T0.timestamp() + 300)  # fmt: skip
    return Drift(**fields)


def test_a_recorded_drift_is_named_when_no_threshold_broke() -> None:
    """Before: 'no fault event was recorded' while the store held a spec_acceptance_drift event."""
    events = pd.DataFrame(
        {
            "ts": [T0 - pd.Timedelta(minutes=1), T0 + pd.Timedelta(minutes=5)],
            "kind": ["engine_ready", EVENT_KIND],
            "replica": ["r1", "spec-monitor"],
            "detail": ["", event_detail(_drift())],
        }
    )
    line = status.cause_line([], {}, T0, events)
    assert "no fault event" not in line
    assert "'code'" in line and "2.90 → 2.10" in line and "10:05:00 UTC" in line


def test_quiet_window_says_so() -> None:
    events = pd.DataFrame({"ts": [T0], "kind": ["engine_ready"], "replica": ["r1"], "detail": [""]})
    assert status.cause_line([], {}, T0, events).startswith("No incident in this window")
