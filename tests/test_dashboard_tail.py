"""Live refresh: the tail cache re-queries only unsettled buckets and returns what a full query would."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from enginescope.dashboard.data import Window
from enginescope.dashboard.tail import TailCache

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class FakeStore:
    """Rows per 60 s bucket whose value changes as "data arrives"; records every fetch."""

    def __init__(self) -> None:
        self.values: dict[pd.Timestamp, float] = {}
        self.fetches: list[tuple[dt.datetime, dt.datetime]] = []

    def fetch(self, window: Window) -> pd.DataFrame:
        self.fetches.append((window.t0, window.t1))
        rows = [(t, v) for t, v in sorted(self.values.items()) if window.t0 <= t < window.t1]
        return pd.DataFrame(rows, columns=["t", "value"])


def _window(minutes: int, start_minute: int = 0) -> Window:
    return Window(
        START + dt.timedelta(minutes=start_minute), START + dt.timedelta(minutes=minutes), bucket_s=60
    )


def test_refresh_queries_only_the_tail_and_equals_a_full_query() -> None:
    store, cache = FakeStore(), TailCache(settle_s=120)
    store.values = {pd.Timestamp(START + dt.timedelta(minutes=m)): float(m) for m in range(10)}
    first = cache.frame("k", _window(10), store.fetch)
    assert list(first["value"]) == [float(m) for m in range(10)]
    # Minute 9 gets more data, minute 10 appears, and the window slides by one minute.
    store.values[pd.Timestamp(START + dt.timedelta(minutes=9))] = 99.0
    store.values[pd.Timestamp(START + dt.timedelta(minutes=10))] = 10.0
    again = cache.frame("k", _window(11, start_minute=1), store.fetch)
    assert store.fetches[-1] == (START + dt.timedelta(minutes=8), START + dt.timedelta(minutes=11))
    full = store.fetch(_window(11, start_minute=1))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), full)
    assert again["value"].iloc[-2:].tolist() == [99.0, 10.0]


def test_other_key_or_jump_queries_everything() -> None:
    store, cache = FakeStore(), TailCache(settle_s=120)
    store.values = {pd.Timestamp(START + dt.timedelta(minutes=m)): 1.0 for m in range(30)}
    cache.frame("k", _window(10), store.fetch)
    cache.frame("other", _window(10), store.fetch)
    assert store.fetches[-1] == (START, START + dt.timedelta(minutes=10))
    cache.frame("k", _window(30, start_minute=20), store.fetch)  # nothing settled overlaps
    assert store.fetches[-1] == (START + dt.timedelta(minutes=20), START + dt.timedelta(minutes=30))


def test_full_query_again_after_full_every_s() -> None:
    store, cache = FakeStore(), TailCache(settle_s=120, full_every_s=0)
    store.values = {pd.Timestamp(START + dt.timedelta(minutes=m)): 1.0 for m in range(10)}
    cache.frame("k", _window(10), store.fetch)
    cache.frame("k", _window(10), store.fetch)
    assert store.fetches == [(START, START + dt.timedelta(minutes=10))] * 2
