"""Reset-aware deltas: baseline, counter resets, histogram resets, series that come and go."""

from __future__ import annotations

from enginescope.collectors.deltas import DeltaTracker, HistogramState


def scrape(tracker: DeltaTracker, ts_s: float, values: dict[str, float]) -> tuple[dict, list[str]]:
    tracker.start(ts_s)
    deltas = {key: tracker.counter(key, key.split("{")[0], value) for key, value in values.items()}
    return deltas, tracker.finish()


def test_first_scrape_is_a_baseline_then_increases():
    tracker = DeltaTracker()
    assert scrape(tracker, 0, {"c": 100.0}) == ({"c": None}, [])
    assert scrape(tracker, 5, {"c": 130.0}) == ({"c": 30.0}, [])
    assert scrape(tracker, 10, {"c": 130.0}) == ({"c": 0.0}, [])


def test_counter_drop_means_restart_from_zero_never_negative():
    tracker = DeltaTracker()
    scrape(tracker, 0, {"c{a}": 100.0, "d": 5.0})
    deltas, resets = scrape(tracker, 5, {"c{a}": 7.0, "d": 6.0})
    assert deltas == {"c{a}": 7.0, "d": 1.0}
    assert resets == ["c"]
    assert scrape(tracker, 10, {"c{a}": 9.0, "d": 6.0}) == ({"c{a}": 2.0, "d": 0.0}, [])


def test_series_created_after_the_baseline_counts_from_zero():
    tracker = DeltaTracker()
    scrape(tracker, 0, {"old": 50.0})
    deltas, _ = scrape(tracker, 5, {"old": 50.0, "new": 3.0})
    assert deltas == {"old": 0.0, "new": 3.0}


def test_missing_scrape_does_not_count_history_twice_but_forgotten_series_are_new():
    tracker = DeltaTracker(forget_after_s=100)
    scrape(tracker, 0, {"c": 10.0})
    scrape(tracker, 5, {})  # partial scrape: c missing
    assert scrape(tracker, 10, {"c": 12.0})[0] == {"c": 2.0}
    scrape(tracker, 120, {})  # rotates memory once: c still remembered
    scrape(tracker, 230, {})  # rotates again: c forgotten
    assert scrape(tracker, 240, {"c": 15.0})[0] == {"c": 15.0}


def test_nan_counter_gives_no_delta_and_keeps_previous():
    tracker = DeltaTracker()
    scrape(tracker, 0, {"c": 1.0})
    assert scrape(tracker, 5, {"c": float("nan")})[0] == {"c": None}
    assert scrape(tracker, 10, {"c": 4.0})[0] == {"c": 3.0}


def hist(counts, total, bounds=(0.1, 1.0, float("inf"))):
    return HistogramState(tuple(bounds), tuple(counts), total, counts[-1])


def test_histogram_baseline_increase_and_reset():
    tracker = DeltaTracker()
    tracker.start(0)
    assert tracker.histogram("h", "h", hist((1, 3, 4), 2.0)) is None
    tracker.finish()
    tracker.start(5)
    increase = tracker.histogram("h", "h", hist((2, 5, 7), 3.5))
    assert tracker.finish() == []
    assert increase == hist((1, 2, 3), 1.5)
    tracker.start(10)  # one bucket drops while the count still grows: a restart
    increase = tracker.histogram("h", "h", hist((1, 9, 9), 4.0))
    assert tracker.finish() == ["h"]
    assert increase == hist((1, 9, 9), 4.0)


def test_histogram_layout_change_is_a_reset():
    tracker = DeltaTracker()
    tracker.start(0)
    tracker.histogram("h", "fam", hist((1, 3, 4), 2.0))
    tracker.finish()
    tracker.start(5)
    changed = hist((5, 6, 9), 7.0, bounds=(0.5, 2.0, float("inf")))
    assert tracker.histogram("h", "fam", changed) == changed
    assert tracker.finish() == ["fam"]
