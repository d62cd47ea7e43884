"""Fault scenarios (thermal throttle, spec collapse, engine crash, spec drift), run concurrently in one
event loop (the session fixture ``fault_scenario_stores`` in tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from enginescope.collectors.quantile import histogram_quantile
from enginescope.views.spec_events import parse_detail

pytestmark = pytest.mark.slow


@pytest.fixture()
def stores(fault_scenario_stores: dict[str, Path]) -> dict[str, Path]:
    """The session's fault-scenario stores (tests/conftest.py), shared with the diagnosis tests."""
    return fault_scenario_stores


def connect(store: Path):  # type: ignore[no-untyped-def]
    from enginescope.store import open_store

    return open_store(store)


def annotation_ts(con, prefix: str) -> float:  # type: ignore[no-untyped-def]
    (row,) = con.sql(
        "select epoch(ts) from events where kind = 'scenario' and starts_with(detail, ?)", params=[prefix]
    ).fetchall()
    return float(row[0])


def itl_p50(con, replica: str | None, after_s: float, until_s: float) -> float:  # type: ignore[no-untyped-def]
    rows = con.sql(
        "select counts, bounds from histograms where signal = 'itl_seconds' and epoch(ts) > ? and epoch(ts) <= ?"
        " and (? is null or replica = ?)",
        params=[after_s, until_s, replica, replica],
    ).fetchall()
    bounds = rows[0][1]
    counts = [sum(values) for values in zip(*(row[0] for row in rows), strict=True)]
    return histogram_quantile(0.5, bounds, counts)


def test_thermal_throttle_raises_temperature_lowers_clock_and_slows_itl(stores: dict[str, Path]) -> None:
    con = connect(stores["thermal-throttle"])
    fault_s = annotation_ts(con, "cooling failure")
    throttles = con.sql(
        "select replica, epoch(ts) from events where kind = 'gpu_throttle' and detail like '%hw_thermal (was none)%'"
    ).fetchall()
    assert len({replica for replica, _ in throttles}) == 1, throttles  # one replica only
    hot, throttled_s = throttles[0]
    assert throttled_s > fault_s
    before, during = con.sql(
        "select max(value) filter (where epoch(ts) < ?), min(value) filter (where epoch(ts) > ? + 2)"
        " from signals where replica = ? and signal = 'gpu_sm_clock_mhz' and value > 500",  # not idle (345 MHz)
        params=[fault_s, throttled_s, hot],
    ).fetchall()[0]
    assert during < 0.8 * before
    (peak_c,) = con.sql(
        "select max(value) from signals where replica = ? and signal = 'gpu_temperature_c'", params=[hot]
    ).fetchall()[0]
    assert peak_c >= 87
    cool = con.sql("select distinct replica from histograms where replica <> ?", params=[hot]).fetchall()[0][
        0
    ]
    end_s = throttled_s + 12
    assert itl_p50(con, hot, throttled_s + 2, end_s) > 1.3 * itl_p50(con, cool, throttled_s + 2, end_s)


def test_spec_collapse_drops_accept_length_and_raises_itl(stores: dict[str, Path]) -> None:
    con = connect(stores["spec-collapse"])
    change_s = annotation_ts(con, "traffic mix changes")
    before, after = con.sql(
        "select avg(value) filter (where epoch(ts) < ?), avg(value) filter (where epoch(ts) > ? + 3)"
        " from signals where signal = 'spec_accept_length'",
        params=[change_s, change_s],
    ).fetchall()[0]
    assert before == pytest.approx(3.0, abs=0.4)
    assert after == pytest.approx(1.3, abs=0.15)
    assert itl_p50(con, None, change_s + 3, change_s + 15) > 2 * itl_p50(con, None, change_s - 12, change_s)


def test_engine_crash_records_restart_and_requests_are_retried(stores: dict[str, Path]) -> None:
    store = stores["engine-crash"]
    con = connect(store)
    crash_s = annotation_ts(con, "engine crashes")
    restarts = con.sql(
        "select replica, min(epoch(ts)) from events where kind = 'engine_restart' group by replica"
    ).fetchall()
    assert len(restarts) == 1 and restarts[0][1] > crash_s
    crashed = restarts[0][0]
    (finished_after,) = con.sql(
        "select sum(value) from signals where replica = ? and signal = 'requests_finished' and epoch(ts) > ?",
        params=[crashed, restarts[0][1]],
    ).fetchall()[0]
    assert finished_after > 0  # back in service after its cold start
    client = [json.loads(line) for line in (store / "loadgen" / "requests.jsonl").read_text().splitlines()]
    retried = [r for r in client if r["attempts"] > 1]
    assert retried and all(r["ok"] for r in retried)
    assert all(r["replica"] != crashed for r in retried if r["start_ts_s"] < crash_s + 1)


def test_spec_drift_demo_records_the_drift_event_and_writes_the_spec_report(stores: dict[str, Path]) -> None:
    """Issue 13: ``enginescope demo --scenario spec-drift`` ends with the drift event, the affected
    class and a ``spec-report`` dataset (history in virtual time, the product's monitor, the
    default detector settings)."""
    store = stores["spec-drift"]
    con = connect(store)
    drift_s = annotation_ts(con, "code requests switch")
    events = con.sql(
        "select epoch(ts), replica, detail from events where kind = 'spec_acceptance_drift'"
    ).fetchall()
    assert len(events) == 1, events  # one episode, no false alarm in the other classes
    detected_s, replica, detail = events[0]
    assert replica == "fleet"
    parsed = parse_detail(detail)
    assert parsed is not None and parsed["class"] == "code", detail
    assert parsed["current_accept_length"] < 0.85 * parsed["baseline_accept_length"]
    assert abs(parsed["onset"].timestamp() - drift_s) <= 60.0
    assert drift_s < detected_s <= drift_s + 600.0  # within 10 minutes of simulated traffic
    report = store / "spec-report"
    evidence = pq.read_table(report / "evidence.parquet").to_pylist()
    assert [row["traffic_class"] for row in evidence] == ["code"]
    assert evidence[0]["fleet_gpus"] == 8  # two TP4 replicas: the history's GPU rows are replayed too
    requests = pads.dataset(report / "requests", format="parquet", partitioning="hive").to_table().to_pylist()
    ids = {row["request_id"] for row in requests}
    assert len(ids) >= 30 and {row["traffic_class"] for row in requests} == {"code"}
    stored = {
        rid for (rid,) in con.sql("select request_id from requests where traffic_class = 'code'").fetchall()
    }
    assert ids <= stored
    assert json.loads((report / "manifest.json").read_text())["drifts"] == 1
    log = (store.parent / "spec-drift.log").read_text()
    assert 'spec_acceptance_drift: class="code"' in log and f"dataset in {report}" in log
