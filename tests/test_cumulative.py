"""CumulativeState: per-series cumulative state on a reader's clock (resets, TTL, cap)."""

from __future__ import annotations

import math

import pytest

from enginescope.collectors.cumulative import OVERFLOW_LABELS, CumulativeState
from enginescope.collectors.deltas import HistogramState

A = (("model", "m"),)
B = (("model", "n"),)
BOUNDS = (0.1, 1.0, math.inf)


def by_key(points):
    return {(p.name, p.labels): p for p in points}


def test_cumulative_collect_exports_every_live_series_with_a_stable_start():
    state = CumulativeState()
    state.add("tokens", A, 5.0, ts_s=101.0, interval_s=1.0)
    state.add("tokens", A, 3.0, ts_s=102.0, interval_s=1.0)
    state.set("queue", A, 4.0, ts_s=102.0)
    first = by_key(state.collect(105.0))
    assert first["tokens", A].value == 8.0 and first["tokens", A].start_s == 100.0
    assert first["tokens", A].time_s == 105.0 and first["queue", A].value == 4.0
    # nothing new: idle series are exported again, same start, same total
    second = by_key(state.collect(110.0))
    assert second["tokens", A].value == 8.0 and second["tokens", A].start_s == 100.0
    assert second["tokens", A].time_s == 110.0 and set(second) == set(first)


def test_delta_collect_is_the_change_since_the_previous_collect():
    state = CumulativeState()
    state.add("tokens", A, 5.0, 101.0, 1.0)
    state.add("tokens", B, 1.0, 101.0, 1.0)
    first = by_key(state.collect(105.0, delta=True))
    assert first["tokens", A].value == 5.0 and first["tokens", A].start_s == 100.0
    state.add("tokens", A, 2.0, 106.0, 1.0)
    state.add("tokens", A, 0.0, 107.0, 1.0)
    second = by_key(state.collect(110.0, delta=True))
    assert second["tokens", A].value == 2.0 and second["tokens", A].start_s == 105.0
    assert ("tokens", B) not in second  # not updated since the previous export
    state.add("tokens", B, 0.0, 111.0, 1.0)  # scraped, grew by nothing: a zero point
    third = by_key(state.collect(115.0, delta=True))
    assert third["tokens", B].value == 0.0 and ("tokens", A) not in third


def test_raw_totals_baseline_then_reset_starts_over_never_negative():
    state = CumulativeState()
    state.add_total("energy", A, 1000.0, 100.0)
    assert by_key(state.collect(100.5))["energy", A].value == 0.0  # baseline
    state.add_total("energy", A, 1500.0, 101.0)
    state.add_total("energy", A, 40.0, 102.0)  # driver reload: back near zero
    point = by_key(state.collect(103.0))["energy", A]
    assert point.value == 40.0 and 101.0 < point.start_s < 102.0
    state.add_total("energy", A, 100.0, 104.0)
    delta_state = CumulativeState()
    for ts, v in ((100.0, 1000.0), (101.0, 1500.0), (102.0, 40.0)):
        delta_state.add_total("energy", A, v, ts)
    (d,) = delta_state.collect(103.0, delta=True)
    assert d.value == 540.0  # 500 before the reset + 40 after, never negative
    assert by_key(state.collect(105.0))["energy", A].value == 100.0


def test_negative_increase_is_clamped_and_counted():
    state = CumulativeState()
    state.add("tokens", A, -3.0, 101.0, 1.0)
    assert state.collect(102.0)[0].value == 0.0 and state.clamped == 1


def test_histograms_accumulate_touch_keeps_idle_series_and_new_bounds_reset():
    state = CumulativeState()
    state.touch_histogram("ttft", A, BOUNDS, 100.0)  # exposed, never observed yet
    (idle,) = state.collect(101.0)
    assert idle.kind == "histogram" and idle.bounds == BOUNDS and idle.counts == (0.0, 0.0, 0.0)
    state.add_histogram("ttft", A, BOUNDS, (1.0, 3.0, 4.0), 2.5, 4.0, 102.0, 1.0)
    state.touch_histogram("ttft", A, BOUNDS, 103.0)
    (p,) = state.collect(105.0)
    assert p.counts == (1.0, 3.0, 4.0) and p.count == 4.0 and p.sum == 2.5 and p.start_s == 100.0
    state.add_histogram("ttft", A, (0.5, math.inf), (2.0, 2.0), 0.4, 2.0, 106.0, 1.0)
    (q,) = state.collect(107.0)
    assert q.bounds == (0.5, math.inf) and q.counts == (2.0, 2.0) and q.start_s > 103.0
    with pytest.raises(ValueError, match="ttft"):
        state.add_histogram("ttft", A, BOUNDS, (1.0,), 0.0, 1.0, 108.0, 1.0)


def test_raw_histogram_totals_reset_when_a_bucket_drops():
    state = CumulativeState()
    state.add_histogram_total("h", A, HistogramState(BOUNDS, (5.0, 8.0, 9.0), 3.0, 9.0), 100.0)
    state.add_histogram_total("h", A, HistogramState(BOUNDS, (6.0, 9.0, 11.0), 4.0, 11.0), 101.0)
    assert state.collect(101.5)[0].counts == (1.0, 1.0, 2.0)
    state.add_histogram_total("h", A, HistogramState(BOUNDS, (1.0, 1.0, 1.0), 0.2, 1.0), 102.0)
    (p,) = state.collect(103.0)
    assert p.counts == (1.0, 1.0, 1.0) and p.count == 1.0 and p.start_s > 101.0


def test_ttl_expiry_and_forget():
    state = CumulativeState(ttl_s=10.0)
    state.set("gpu.temp", A, 60.0, 100.0)
    state.set("gpu.temp", B, 45.0, 100.0)
    state.add("tokens", A, 1.0, 100.0, 1.0)
    state.set("gpu.temp", A, 61.0, 105.0)
    assert state.expire(109.0) == 0
    assert state.expire(111.0) == 2  # B and tokens not seen for 10 s
    assert set(by_key(state.collect(111.0))) == {("gpu.temp", A)}
    state.add("tokens", A, 1.0, 112.0, 1.0)
    assert state.forget(lambda name, labels: name == "tokens") == 1
    assert set(by_key(state.collect(113.0))) == {("gpu.temp", A)}


def test_cap_folds_new_series_into_one_overflow_series_per_metric():
    state = CumulativeState(max_series=2)
    state.add("req", (("pid", "1"),), 1.0, 101.0, 1.0)
    state.add("req", (("pid", "2"),), 1.0, 101.0, 1.0)
    state.add("req", (("pid", "3"),), 5.0, 101.0, 1.0)
    state.add("req", (("pid", "4"),), 7.0, 101.0, 1.0)
    state.add("req", (("pid", "1"),), 1.0, 102.0, 1.0)  # existing series keep updating
    points = by_key(state.collect(103.0))
    assert points["req", OVERFLOW_LABELS].value == 12.0 and points["req", (("pid", "1"),)].value == 2.0
    assert len(points) == 3 and state.overflow_updates == 2
    # a series leaving frees room for a new one
    state2 = CumulativeState(ttl_s=5.0, max_series=1)
    state2.set("g", A, 1.0, 100.0)
    state2.expire(106.0)
    state2.set("g", B, 2.0, 106.0)
    assert set(by_key(state2.collect(107.0))) == {("g", B)} and state2.overflow_updates == 0


def test_restart_starts_counters_and_histograms_over_not_gauges():
    state = CumulativeState()
    state.add("tokens", A, 5.0, 101.0, 1.0)
    state.set("queue", A, 3.0, 101.0)
    assert state.restart(102.0) == 1
    state.add("tokens", A, 2.0, 103.0, 1.0)
    points = by_key(state.collect(104.0))
    assert points["tokens", A].value == 2.0 and 101.0 < points["tokens", A].start_s <= 102.0
    assert points["queue", A].value == 3.0
