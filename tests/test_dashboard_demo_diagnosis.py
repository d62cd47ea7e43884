"""Cause detection on stores the demo really produced (tests/conftest.py): one per scenario,
diagnosed exactly as the incident view does (whole store, span-chosen buckets, no SLO)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from enginescope.dashboard import diagnosis
from enginescope.dashboard.data import Window, load_incident, open_connection, store_time_range

pytestmark = pytest.mark.slow


def _diagnose(store: Path) -> tuple[list[diagnosis.Incident], pd.DataFrame]:
    con = open_connection(store)
    first, last = store_time_range(con)
    window = Window(first, last + dt.timedelta(seconds=1))
    data = load_incident(con, window)
    found = diagnosis.diagnose(
        data.latency,
        data.series,
        data.events,
        None,
        window.effective_bucket_s,
        pd.Timestamp(window.t1),
        data.gpu,
    )  # as dashboard/cached.py calls it: the gpu table's throttle reasons included
    return found, data.events


def _annotation(events: pd.DataFrame, prefix: str) -> pd.Timestamp:
    rows = events.loc[(events["kind"] == "scenario") & events["detail"].str.startswith(prefix), "ts"]
    assert len(rows) == 1, events[["ts", "kind", "detail"]]
    return rows.iloc[0]


@pytest.mark.parametrize(
    ("scenario", "fault", "cause"),
    [
        ("thermal-throttle", "cooling failure", "gpu_throttling"),
        ("spec-collapse", "traffic mix changes", "spec_acceptance_drop"),
        ("engine-crash", "engine crashes", "engine_restart"),
    ],
)
def test_fault_scenario_is_one_incident_with_its_cause(
    fault_scenario_stores: dict[str, Path], scenario: str, fault: str, cause: str
) -> None:
    found, events = _diagnose(fault_scenario_stores[scenario])
    text = "\n".join(diagnosis.summary_lines(found))
    assert len(found) == 1, text
    (incident,) = found
    assert incident.cause is not None and incident.cause.key == cause, text
    assert incident.cause.evidence
    # The incident starts with the fault, not at some unrelated blip. Incidents are aligned to the
    # 1 s time buckets, so the bucket holding the fault may start up to one bucket before the note.
    lag_s = (incident.start - _annotation(events, fault)).total_seconds()
    assert -1.0 <= lag_s <= 10, text


def test_thermal_throttle_evidence_names_the_hot_replica(fault_scenario_stores: dict[str, Path]) -> None:
    (incident,), events = _diagnose(fault_scenario_stores["thermal-throttle"])
    (hot,) = events.loc[events["kind"] == "gpu_throttle", "replica"].unique()
    evidence = " ".join(incident.cause.evidence)
    assert hot in evidence and "hw_thermal" in evidence and "gpu_throttled = 1" in evidence


def test_spike_demo_is_prefill_queueing_with_scale_up_reaction(spike_demo_store: Path) -> None:
    found, events = _diagnose(spike_demo_store)
    text = "\n".join(diagnosis.summary_lines(found))
    assert len(found) == 1, text
    (incident,) = found
    assert incident.cause is not None and incident.cause.key == "prefill_queueing", text
    spike_at, spike_end = _annotation(events, "spike starts"), _annotation(events, "spike ends")
    # Incidents live on the 1 s bucket grid: a breach in the spike's first second starts at its
    # floor, and one noisy bucket just before it joins the run (a one-bucket gap does not split
    # one; the simulated engines share 2 cores with the whole suite): 2 s, not an unrelated blip.
    assert spike_at.floor("s") - pd.Timedelta(seconds=2) <= incident.start <= spike_end, text
    assert not incident.ongoing, text
    assert "ttft_seconds" in incident.breaches
    # Reaction times are measured from the breach start to the store's own events.
    scale_ups = events.loc[events["kind"] == "scale_up", "ts"]
    first_scale = scale_ups.loc[scale_ups >= spike_at].min()
    assert incident.scale_up_after_s == pytest.approx((first_scale - incident.start).total_seconds())
    assert abs(incident.scale_up_after_s) < 30
    started = events.loc[(events["kind"] == "container_started") & (events["ts"] >= first_scale), "replica"]
    ready = events.loc[(events["kind"] == "engine_ready") & events["replica"].isin(started), "ts"].min()
    assert incident.new_replica_ready_after_s == pytest.approx((ready - incident.start).total_seconds())
    assert incident.new_replica_ready_after_s > incident.scale_up_after_s
    assert "scale_up" in text and "engine_ready after" in text
