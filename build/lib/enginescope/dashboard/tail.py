"""Live refresh without re-reading the whole window: keep the settled time buckets of the last
result per query and fetch only the tail.

A bucket is *settled* once it ends ``settle_s`` before the window's end: writers flush every
few seconds, so rows for it are all in the store. Every refresh re-queries the unsettled tail
(at least ``settle_s``), and each key is re-queried in full after ``full_every_s``, so a writer
that was late by more than ``settle_s`` shows up at the latest then. Pure pandas, no Streamlit.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import pandas as pd

from enginescope.dashboard.data import Window


@dataclass(frozen=True, slots=True)
class _Entry:
    frame: pd.DataFrame  # buckets with t0 <= t < settled only
    t0: dt.datetime
    settled: dt.datetime
    full_at_s: float  # monotonic time of the last full query


class TailCache:
    def __init__(self, settle_s: float = 120.0, full_every_s: float = 300.0, max_entries: int = 32) -> None:
        self.settle_s = settle_s
        self.full_every_s = full_every_s
        self.max_entries = max_entries
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()

    def frame(self, key: Hashable, window: Window, fetch: Callable[[Window], pd.DataFrame]) -> pd.DataFrame:
        """Rows of ``fetch(window)`` (a frame with a bucket column ``t``); ``window`` must be
        snapped to its buckets. Settled buckets may come from an earlier call with ``key``."""
        now_s = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and self._reusable(entry, window, now_s):
            tail = fetch(Window(entry.settled, window.t1, window.replicas, window.model, window.bucket_s))
            head = entry.frame.loc[entry.frame["t"] >= pd.Timestamp(window.t0)]
            frames = [f for f in (head, tail) if not f.empty]
            result = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames or [tail])[0]
            full_at_s = entry.full_at_s
        else:
            result, full_at_s = fetch(window), now_s
        settled = self._settled(window)
        kept = result.loc[result["t"] < pd.Timestamp(settled)] if not result.empty else result
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(kept, window.t0, settled, full_at_s)
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        return result

    def _reusable(self, entry: _Entry, window: Window, now_s: float) -> bool:
        return (
            now_s - entry.full_at_s < self.full_every_s and entry.t0 <= window.t0 < entry.settled <= window.t1
        )

    def _settled(self, window: Window) -> dt.datetime:
        """Start of the first unsettled bucket (never before the window's start)."""
        bucket_s = window.effective_bucket_s
        edge_s = window.t1.timestamp() - self.settle_s
        edge_s -= edge_s % bucket_s
        return max(window.t0, dt.datetime.fromtimestamp(edge_s, dt.UTC))
