"""``enginescope demo --headless`` end to end: one run, many assertions on the store it leaves."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pytest

from enginescope.collectors.quantile import bucket_width_bound, histogram_quantile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(spike_demo_store: Path) -> Path:
    """The session's ``enginescope demo --headless --scenario spike`` run (tests/conftest.py):
    a second CLI demo of the same scenario here cost 75 s of the suite and checked nothing more."""
    assert "spike starts" in (spike_demo_store.parent / "demo.log").read_text(errors="replace")
    return spike_demo_store


@pytest.fixture(scope="module")
def con(store: Path):  # type: ignore[no-untyped-def]
    from enginescope.store import open_store

    return open_store(store)


def annotation_ts(con, detail_prefix: str) -> float:  # type: ignore[no-untyped-def]
    rows = con.sql(
        "select epoch(ts) from events where kind = 'scenario' and starts_with(detail, ?)",
        params=[detail_prefix],
    ).fetchall()
    assert rows, f"no scenario annotation {detail_prefix!r}"
    return float(rows[0][0])


def summed(con, signal: str, after_s: float = -math.inf, until_s: float = math.inf):  # type: ignore[no-untyped-def]
    """Bucket counts summed over every replica and interval with ts in (after_s, until_s]."""
    rows = con.sql(
        "select bounds, counts from histograms where signal = ? and epoch(ts) > ? and epoch(ts) <= ?",
        params=[signal, max(after_s, 0.0), min(until_s, 1e12)],
    ).fetchall()
    assert rows, f"no {signal} rows in window"
    bounds = rows[0][0]
    counts = [0.0] * len(bounds)
    for row_bounds, row_counts in rows:
        assert list(row_bounds) == list(bounds)
        counts = [a + b for a, b in zip(counts, row_counts, strict=True)]
    return list(bounds), counts


def p99(con, signal: str, after_s: float, until_s: float) -> float:  # type: ignore[no-untyped-def]
    return histogram_quantile(0.99, *summed(con, signal, after_s, until_s))


def test_fleet_scaled_to_three_replicas(con, store: Path) -> None:  # type: ignore[no-untyped-def]
    replicas = {r for (r,) in con.sql("select distinct replica from histograms").fetchall()}
    assert len(replicas) >= 3
    assert all(r.startswith("ta-") and len(r) == 29 for r in replicas)  # ta- + ULID, like MODAL_TASK_ID
    ups = con.sql(
        "select epoch(ts), replica_count, detail from events where kind = 'scale_up' and replica = 'fleet' order by ts"
    ).fetchall()
    spike_s = annotation_ts(con, "spike starts")
    after_spike = [row for row in ups if row[0] >= spike_s]
    assert after_spike, ups
    assert max(row[1] for row in after_spike) == 3
    assert all("concurrency" in row[2] for row in after_spike)


def test_lifecycle_events_per_replica(con) -> None:  # type: ignore[no-untyped-def]
    kinds = con.sql(
        "select replica, list(distinct kind) from events where replica <> 'fleet' group by replica"
    ).fetchall()
    assert len(kinds) >= 3
    for replica, replica_kinds in kinds:
        for kind in ("container_started", "engine_ready", "container_stopped"):
            assert kind in replica_kinds, (replica, replica_kinds)


def test_spike_visible_in_ttft_p99_then_recovers(con) -> None:  # type: ignore[no-untyped-def]
    baseline_s = annotation_ts(con, "baseline")
    spike_s = annotation_ts(con, "spike starts")
    spike_end_s = annotation_ts(con, "spike ends")
    baseline = p99(con, "ttft_seconds", baseline_s, spike_s)
    spike = p99(con, "ttft_seconds", spike_s, spike_end_s + 5)
    recovery = p99(con, "ttft_seconds", spike_end_s + 10, math.inf)
    assert spike >= 2 * baseline, (baseline, spike)
    assert recovery < spike / 3, (spike, recovery)
    # Decode queueing: the batch grows, so ITL p99 rises during the spike too.
    assert p99(con, "itl_seconds", spike_s, spike_end_s) > 1.5 * p99(con, "itl_seconds", baseline_s, spike_s)


def ground_truth(store: Path, min_replicas: int = 3) -> list[dict]:
    files = sorted((store / "groundtruth").glob("*.jsonl"))
    assert len(files) >= min_replicas
    return [json.loads(line) for path in files for line in path.read_text().splitlines() if line]


def exact_quantile(q: float, weighted: Iterable[tuple[float, float]]) -> float:
    """Smallest value whose cumulative weight reaches q * total (the rank a histogram interpolates)."""
    ordered = sorted(weighted)
    total = sum(weight for _, weight in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= q * total:
            return value
    return ordered[-1][0]


@pytest.mark.parametrize("signal", ["ttft_seconds", "e2e_seconds", "itl_seconds"])
def test_store_quantiles_match_ground_truth_within_bucket_bound(con, store: Path, signal: str) -> None:  # type: ignore[no-untyped-def]
    records = ground_truth(store)
    if signal == "itl_seconds":
        truth = [(interval / tokens, tokens) for r in records for interval, tokens in r["itl"]]
    else:
        field = signal.replace("_seconds", "_s")
        truth = [(r[field], 1.0) for r in records if r[field] is not None]
    bounds, counts = summed(con, signal)
    observed = sum(weight for _, weight in truth)
    # Requests cut off by the final scrape may be missing on either side; nearly all must match.
    assert counts[-1] == pytest.approx(observed, rel=0.02), (counts[-1], observed)
    for q in (0.5, 0.9, 0.99):
        exact = exact_quantile(q, truth)
        estimate = histogram_quantile(q, bounds, counts)
        bound = max(bucket_width_bound(exact, bounds), bucket_width_bound(estimate, bounds))
        assert abs(estimate - exact) <= bound, (signal, q, exact, estimate, bound)


def test_requests_view_fills_for_every_replica(con, store: Path) -> None:  # type: ignore[no-untyped-def]
    """Each engine's per-request export reaches the store through its own sidecar (issue 13)."""
    check_requests_view(con, store, min_replicas=3)


@pytest.mark.parametrize("scenario", ["thermal-throttle", "spec-collapse", "engine-crash", "spec-drift"])
def test_requests_view_fills_for_every_replica_in_every_scenario(
    fault_scenario_stores: dict[str, Path], scenario: str
) -> None:
    """Issue 13 asks for every demo scenario, not only the spike: the session's scenario stores
    (tests/conftest.py), spec drift's earlier replicas (history in virtual time) included."""
    from enginescope.store import open_store

    store = fault_scenario_stores[scenario]
    check_requests_view(open_store(store), store, min_replicas=4 if scenario == "spec-drift" else 2)


def check_requests_view(con, store: Path, min_replicas: int) -> None:  # type: ignore[no-untyped-def]
    truth: dict[str, list[float]] = {}
    for record in ground_truth(store, min_replicas):
        if record["e2e_s"] is not None and record["finish_type"] in ("stop", "length"):
            truth.setdefault(record["replica"], []).append(record["e2e_s"])
    rows = con.sql(
        "select replica, list(e2e_s) from requests where finish_reason in ('stop', 'length') group by replica"
    ).fetchall()
    stored = {replica: values for replica, values in rows}
    assert set(stored) == set(truth) and len(truth) >= min_replicas
    for replica, values in truth.items():
        assert len(stored[replica]) >= 0.97 * len(values), replica  # cut off by the final scrape at most
        exact, got = sorted(values), sorted(stored[replica])
        assert got[len(got) // 2] == pytest.approx(exact[len(got) // 2], rel=0.05)
