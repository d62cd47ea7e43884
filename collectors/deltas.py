"""Reset-aware per-interval increases of counters and histograms (PromQL ``increase`` semantics).

Choices (documented in one place so every consumer reads the same numbers):

- The sidecar's first scrape is a **baseline**: every series returns ``None`` (no delta, no
  histogram row), so a sidecar restart never shows the engine's whole history as one spike.
- After the baseline, a series never seen before (or forgotten, see below) started from zero
  after the sidecar did: its first value **is** its increase. SGLang creates most series on
  their first event, so this is what keeps the first request of a new label set.
- A value below the previous one means the process restarted from zero: the increase is the
  new value (never negative, no interval lost) and the family is reported as reset.
  Histograms reset when the count or any bucket drops, or when the bucket layout changes.
- A series that vanishes keeps its last value for between ``forget_after_s`` and twice that,
  so one failed or partial scrape is not mistaken for a brand-new series (which would count
  its whole history again). After that it is forgotten and counts as new when it returns.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HistogramState:
    bounds: tuple[float, ...]
    counts: tuple[float, ...]  # cumulative, one per bound
    sum: float
    count: float


def counter_increase(previous: float, current: float) -> tuple[float, bool]:
    """(increase, reset) between two raw counter readings: a drop is a restart from zero."""
    if current >= previous:
        return current - previous, False
    return current, True


def histogram_increase(previous: HistogramState, current: HistogramState) -> tuple[HistogramState, bool]:
    """(increase, reset) between two raw histogram readings.

    A reset is the count or any bucket going down, a bucket gaining more than the buckets above it
    (observations never move between buckets), or a changed bucket layout; the increase is
    then the whole current reading (the process started from zero), never negative.
    """
    if previous.bounds == current.bounds and current.count >= previous.count:
        counts = tuple(map(operator.sub, current.counts, previous.counts))
        # the increase is itself a histogram: bucket increases >= 0 and cumulative
        if all(b >= a for a, b in zip((0.0, *counts), counts, strict=False)):
            increase = HistogramState(
                current.bounds, counts, current.sum - previous.sum, current.count - previous.count
            )
            return increase, False
    return current, True


class DeltaTracker:
    """Remembers the last value of each series (keyed by a stable series string)."""

    def __init__(self, forget_after_s: float = 900.0) -> None:
        self.forget_after_s = forget_after_s
        self.baseline = True
        self._values: dict[str, float] = {}
        self._old_values: dict[str, float] = {}
        self._hists: dict[str, HistogramState] = {}
        self._old_hists: dict[str, HistogramState] = {}
        self._generation_start_s: float | None = None
        self.reset_families: list[str] = []

    def start(self, ts_s: float) -> None:
        """Begin one scrape; rotates the series memory every ``forget_after_s``."""
        self.reset_families = []
        if self._generation_start_s is None:
            self._generation_start_s = ts_s
        elif ts_s - self._generation_start_s >= self.forget_after_s:
            self._old_values, self._values = self._values, {}
            self._old_hists, self._hists = self._hists, {}
            self._generation_start_s = ts_s

    def finish(self) -> list[str]:
        """End the scrape; returns the families that reset during it (in order, unique)."""
        self.baseline = False
        return list(dict.fromkeys(self.reset_families))

    def counter(self, key: str, family: str, value: float) -> float | None:
        """Increase since the previous scrape, or None (baseline, NaN)."""
        if value != value:  # NaN: no information, keep the previous value
            return None
        prev = self._values.get(key)
        if prev is None:
            prev = self._old_values.pop(key, None)
        self._values[key] = value
        if prev is None:
            return None if self.baseline else value
        increase, reset = counter_increase(prev, value)
        if reset:
            self.reset_families.append(family)
        return increase

    def histogram(self, key: str, family: str, current: HistogramState) -> HistogramState | None:
        """Per-interval increase of one histogram series, or None on the baseline."""
        prev = self._hists.get(key)
        if prev is None:
            prev = self._old_hists.pop(key, None)
        self._hists[key] = current
        if prev is None:
            return None if self.baseline else current
        increase, reset = histogram_increase(prev, current)
        if reset:
            self.reset_families.append(family)  # count or a bucket dropped, or the layout changed
        return increase
