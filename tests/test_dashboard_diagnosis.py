"""Cause detection on synthetic stores: one injected incident each, diagnosed from the data."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
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


# --- confusable incidents: two causes could explain the latency change; the right one must win ---

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")
BUCKET_S = 10
REPLICAS = ("r1", "r2", "r3")


def _t(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def _scene(signals: dict, latency: dict) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Synthetic incident-view frames over 20 min in 10 s buckets. ``signals``: signal ->
    f(replica, seconds array) -> values; ``latency``: signal -> f(seconds) -> fleet p95."""
    s = np.arange(0, 1200, BUCKET_S, dtype=float)
    t = [_t(x) for x in s]
    rows = []
    for signal, f in signals.items():
        for replica in REPLICAS:
            v = np.asarray(f(replica, s), dtype=float) * np.ones_like(s)
            rows.append(pd.DataFrame({"t": t, "replica": replica, "signal": signal, "mean": v, "peak": v,
                                      "low": v, "rate": v}))  # fmt: skip
    lat = {
        sig: pd.DataFrame({"t": t, "p50": f(s) / 2, "p95": f(s), "p99": f(s) * 1.5})
        for sig, f in latency.items()
    }
    return lat, pd.concat(rows, ignore_index=True).dropna(subset=["mean"])  # NaN: no row


def _events(*rows: tuple[float, str, str]) -> pd.DataFrame:
    return pd.DataFrame({"ts": [_t(s) for s, _, _ in rows], "replica": [r for _, r, _ in rows],
                         "kind": [k for _, _, k in rows], "detail": "", "replica_count": None})  # fmt: skip


def _hot(start_s: float, end_s: float, high: float, low: float):
    return lambda s: np.where((s >= start_s) & (s < end_s), high, low)


BASE = {"running_requests": lambda r, s: 20.0, "gpu_utilization_pct": lambda r, s: 90.0,
        "gpu_sm_clock_mhz": lambda r, s: 1980.0, "kv_usage_ratio": lambda r, s: 0.4,
        "spec_accept_length": lambda r, s: 3.0, "retractions": lambda r, s: 0.0}  # fmt: skip


def _only(cause: str, latency, series, events) -> diagnosis.Incident:
    found = diagnosis.diagnose(latency, series, events, None, BUCKET_S, _t(1200))
    assert len(found) == 1, diagnosis.summary_lines(found)
    assert found[0].cause is not None and found[0].cause.key == cause, diagnosis.summary_lines(found)
    return found[0]


def test_load_spike_after_a_finished_restart_is_queueing_not_the_restart() -> None:
    """r3 restarted 100 s before a load spike and was serving again 40 s later: the queue,
    not the restart, explains the TTFT breach (the restart is still listed)."""
    spike = _hot(300, 600, 40.0, 0.0)
    latency, series = _scene(
        {**BASE, "queue_depth": lambda r, s: spike(s)}, {"ttft_seconds": _hot(300, 600, 5.0, 0.2)}
    )
    events = _events((200, "r3", "engine_restart"), (240, "r3", "engine_ready"))
    found = _only("prefill_queueing", latency, series, events)
    assert "engine_restart" in [c.key for c in found.causes]


def test_spike_with_cold_starting_replicas_is_not_a_speculative_collapse() -> None:
    """New replicas report acceptance length 0 until they serve: that is no acceptance drop."""
    spike = _hot(300, 700, 40.0, 0.0)

    def spec(replica: str, s: np.ndarray) -> np.ndarray:
        if replica != "r3":  # r3 is a scale-up replica: no rows before 330 s, 0 until it serves at 650 s
            return 3.0 + 0 * s
        return np.where(s < 330, np.nan, np.where(s < 650, 0.0, 3.0))

    signals = {**BASE, "queue_depth": lambda r, s: spike(s), "spec_accept_length": spec}
    latency, series = _scene(signals, {"ttft_seconds": _hot(300, 700, 5.0, 0.2)})
    found = _only("prefill_queueing", latency, series, _events((330, "r3", "container_started")))
    assert "spec_acceptance_drop" not in [c.key for c in found.causes]


def test_throttled_replica_that_backs_up_a_queue_is_throttling() -> None:
    """A throttled busy GPU makes its replica slow and its queue grow: the clock is the cause."""
    hot = _hot(300, 600, 1.0, 0.0)
    signals = {**BASE, "queue_depth": lambda r, s: 8 * hot(s) if r == "r2" else 0 * s,
               "gpu_sm_clock_mhz": lambda r, s: 1980 - 880 * hot(s) if r == "r2" else 1980 + 0 * s,
               "gpu_throttled": lambda r, s: hot(s) if r == "r2" else 0 * s}  # fmt: skip
    latency, series = _scene(signals, {"itl_seconds": _hot(300, 600, 0.06, 0.02)})
    _only("gpu_throttling", latency, series, _events((300, "r2", "gpu_throttle")))


def test_acceptance_collapse_with_a_growing_batch_is_speculative_not_decode_saturation() -> None:
    """Lower acceptance makes each request decode longer, so the running batch grows too."""
    hit = _hot(300, 600, 1.0, 0.0)
    signals = {**BASE, "queue_depth": lambda r, s: 0 * s, "running_requests": lambda r, s: 20 + 14 * hit(s),
               "spec_accept_length": lambda r, s: 3.0 - 1.9 * hit(s)}  # fmt: skip
    latency, series = _scene(signals, {"itl_seconds": _hot(300, 600, 0.05, 0.02)})
    found = _only("spec_acceptance_drop", latency, series, _events())
    assert "decode_saturation" in [c.key for c in found.causes]


def test_full_kv_cache_whose_retractions_requeue_requests_is_kv_not_load() -> None:
    """Retracted requests go back to the queue: queue growth follows a full cache here."""
    hit = _hot(300, 600, 1.0, 0.0)
    signals = {**BASE, "queue_depth": lambda r, s: 15 * hit(s), "kv_usage_ratio": lambda r, s: 0.4 + 0.59 * hit(s),
               "retractions": lambda r, s: 2 * hit(s)}  # fmt: skip
    latency, series = _scene(
        signals, {"ttft_seconds": _hot(300, 600, 2.0, 0.2), "itl_seconds": _hot(300, 600, 0.06, 0.02)}
    )
    found = _only("kv_exhaustion", latency, series, _events())
    assert "prefill_queueing" in [c.key for c in found.causes]
