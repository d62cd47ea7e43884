"""Cause detection on synthetic stores: one injected incident each, diagnosed from the data."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import pytest

from enginescope.dashboard import diagnosis
from enginescope.dashboard.data import Window, load_incident, open_connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tests.history import Fleet, Incident, generate  # noqa: E402

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DURATION_S = 2400
INCIDENT_AT_S = 1200


def _diagnose(
    tmp_path: Path, incident: Incident, slo: dict[str, float] | None = None
) -> list[diagnosis.Incident]:
    generate(tmp_path, Fleet(START, DURATION_S, replicas=3, incidents=[incident], request_rate=3.0))
    con = open_connection(tmp_path)
    window = Window(START, START + dt.timedelta(seconds=DURATION_S), bucket_s=30)
    data = load_incident(con, window)
    return diagnosis.diagnose(data.latency, data.series, data.events, slo, 30, pd.Timestamp(window.t1))


@pytest.mark.parametrize(
    ("incident", "slo", "cause"),
    [
        (Incident("spike", INCIDENT_AT_S, 600), None, "prefill_queueing"),
        # One slow replica of three moves the fleet p95 less than 3x: needs an SLO to count.
        (Incident("throttle", INCIDENT_AT_S, 600, replica=1), {"itl_p95_s": 0.06}, "gpu_throttling"),
        (Incident("spec_collapse", INCIDENT_AT_S, 600), None, "spec_acceptance_drop"),
        (Incident("restart", INCIDENT_AT_S, 300, replica=2), None, "engine_restart"),
        (Incident("kv", INCIDENT_AT_S, 300), None, "kv_exhaustion"),
    ],
)
def test_injected_incident_is_found_with_its_cause(
    tmp_path: Path, incident: Incident, slo: dict[str, float] | None, cause: str
) -> None:
    incidents = _diagnose(tmp_path, incident, slo)
    assert len(incidents) == 1, diagnosis.summary_lines(incidents)
    found = incidents[0]
    injected = pd.Timestamp(START + dt.timedelta(seconds=incident.start_s))
    assert abs((found.start - injected).total_seconds()) <= 60
    assert found.cause is not None and found.cause.key == cause, diagnosis.summary_lines(incidents)
    assert found.cause.evidence
    assert not found.ongoing


def test_spike_reports_scale_up_reaction_and_recovery(tmp_path: Path) -> None:
    (found,) = _diagnose(tmp_path, Incident("spike", INCIDENT_AT_S, 600), slo={"ttft_p95_s": 1.0})
    # gen_history: scale_up 90 s after the spike, new replicas ready 120 + 180 s after it.
    assert found.scale_up_after_s == pytest.approx(90, abs=30)
    assert found.new_replica_ready_after_s == pytest.approx(300, abs=30)
    assert "ttft_seconds" in found.breaches and "SLO 1 s" in found.breaches["ttft_seconds"]
    text = "\n".join(diagnosis.summary_lines([found]))
    assert "Prefill queueing" in text and "recovered after" in text and "scale_up" in text


def test_quiet_window_has_no_incident() -> None:
    t = pd.date_range("2026-01-01", periods=60, freq="10s", tz="UTC")
    latency = {"ttft_seconds": pd.DataFrame({"t": t, "p50": 0.1, "p95": 0.2, "p99": 0.3})}
    assert diagnosis.diagnose(latency, pd.DataFrame(), pd.DataFrame(), None, 10) == []
    assert diagnosis.summary_lines([]) == ["No latency incident in this window."]


def test_breach_runs_merge_one_bucket_gaps_and_split_longer_ones() -> None:
    t = pd.date_range("2026-01-01", periods=10, freq="10s", tz="UTC")
    p95 = [0, 5, 0, 5, 5, 0, 0, 0, 5, 0]
    runs = diagnosis.breach_intervals(pd.DataFrame({"t": t, "p95": p95}), 1.0, 10)
    assert runs == [(t[1], t[5]), (t[8], t[9])]


def test_slo_threshold_wins_over_baseline_and_blips_are_ignored() -> None:
    t = pd.date_range("2026-01-01", periods=12, freq="10s", tz="UTC")
    p95 = [0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1]  # 30 s breach, then a 10 s blip
    latency = {"ttft_seconds": pd.DataFrame({"t": t, "p95": p95})}
    assert diagnosis.find_incidents(latency, {"ttft_p95_s": 1.0}, 10) == []
    (inc,) = diagnosis.find_incidents(latency, None, 10)  # 0.9 > 3 x median 0.1
    assert (inc.start, inc.end) == (t[2], t[5])


def test_fault_events_open_incidents_and_a_flapping_throttle_is_one() -> None:
    t0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")
    ts = [t0 + pd.Timedelta(seconds=s) for s in (10, 15, 16, 60)]
    detail = [
        "GPU 0: hw_thermal (was none)",
        "GPU 0: none (was hw_thermal)",
        "GPU 0: hw_thermal (was none)",
        "x",
    ]
    events = pd.DataFrame({"ts": ts, "replica": ["r1", "r1", "r1", "r2"], "detail": detail,
                           "kind": ["gpu_throttle", "gpu_throttle", "gpu_throttle", "engine_restart"]})  # fmt: skip
    found = diagnosis.diagnose({}, pd.DataFrame(), events, None, 1, t0 + pd.Timedelta(seconds=600))
    assert [(inc.start, inc.cause.key) for inc in found] == [
        (ts[0], "gpu_throttling"),
        (ts[3], "engine_restart"),
    ]
    assert found[0].end >= ts[2] and not found[0].breaches
    assert "a fault event opened this incident" in "\n".join(diagnosis.summary_lines(found))
