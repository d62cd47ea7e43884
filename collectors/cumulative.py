"""Cumulative state per series, on a reader's clock: what a sink keeps between exports.

The pipeline hands sinks per-interval *increases* (``SignalRow`` counters, ``HistogramRow``),
raw totals (GPU energy, engine counters) and gauges. A sink that serves cumulative data
(OTLP cumulative, a Prometheus endpoint) or exports once per interval (OTLP delta) needs, per
series, the running total since a stable start time, the change since its last export, and
when the series was last seen. This module is that state, shared by every sink.

API (small on purpose)::

    state = CumulativeState(ttl_s=300, max_series=10_000)
    state.add(name, labels, increase, ts_s, interval_s)         # counter increase
    state.add_total(name, labels, total, ts_s)                  # raw counter reading (reset-aware)
    state.add_histogram(name, labels, bounds, counts, sum_, count, ts_s, interval_s)
    state.touch_histogram(name, labels, bounds, ts_s)           # exposed but idle: seen, +0
    state.set(name, labels, value, ts_s)                        # gauge (last value)
    state.restart(ts_s, where)                                  # engine restart: new start times
    state.forget(where) / state.expire(now_s)                   # engine down / TTL
    points = state.collect(now_s, delta=False)                  # one export's points

Semantics (the OTel SDK's periodic-reader semantics, applied to pre-aggregated input):

- **Cumulative** ``collect``: every live series, idle ones included, value = total since
  ``start_s`` (stable until a reset). **Delta** ``collect``: every series updated since the
  previous collect (a zero increase counts as an update), value = the change since then,
  start = the previous collect (or the series start when newer). Gauges: last value, always.
- **Resets**: a raw total going down, histogram buckets going down, changed bucket bounds, or
  :meth:`restart` start the series over: total 0, ``start_s`` just after its last update.
  Increases are never negative (a negative input is clamped and counted in ``clamped``).
- **Lifetime**: a series not updated for ``ttl_s`` leaves at :meth:`expire`; :meth:`forget`
  drops every series a predicate selects (all series of an engine that is down).
- **Cardinality**: at most ``max_series`` live series. An update for a new series beyond the
  cap is folded into one overflow series per metric name, labelled only
  ``otel.metric.overflow="true"`` (the OTel SDK's cardinality-limit convention);
  ``overflow_updates`` counts the folded updates.

Histogram ``counts`` are Prometheus-style cumulative ``le`` counts (last bound +Inf), as in
``HistogramRow``. Not thread-safe: a sink calls it under its own lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from enginescope.collectors.deltas import HistogramState, counter_increase, histogram_increase
from enginescope.collectors.model import Labels

OVERFLOW_LABELS: Labels = (("otel.metric.overflow", "true"),)
RESET_GAP_S = 1e-6  # a restarted series starts just after the last point of the old one

Key = tuple[str, Labels]
_DELTA_KINDS = frozenset({"counter", "histogram"})


@dataclass(slots=True)
class Series:
    """One live series. ``value``: counter total since ``start_s`` or the gauge's last value."""

    name: str
    labels: Labels
    kind: str  # "counter" | "gauge" | "histogram"
    start_s: float
    last_s: float  # last update (seen in a scrape)
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: list[float] = field(default_factory=list)  # cumulative le, since start_s
    sum: float = 0.0
    count: float = 0.0
    # change since the previous collect (delta export)
    pending: float = 0.0
    pending_counts: list[float] = field(default_factory=list)
    pending_sum: float = 0.0
    pending_count: float = 0.0
    updated: bool = False  # updated since the previous collect
    raw: float | None = None  # last raw total (add_total)
    raw_hist: HistogramState | None = None  # last raw histogram (add_histogram_total)


@dataclass(frozen=True, slots=True)
class Point:
    """One exported point. ``counts`` are cumulative ``le`` counts (last bound +Inf)."""

    name: str
    labels: Labels
    kind: str
    start_s: float
    time_s: float
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    sum: float = 0.0
    count: float = 0.0


Where = Callable[[str, Labels], bool]


class CumulativeState:
    def __init__(self, ttl_s: float = 300.0, max_series: int = 10_000) -> None:
        if ttl_s <= 0 or max_series < 1:
            raise ValueError(f"ttl_s must be > 0 and max_series >= 1 (got {ttl_s}, {max_series})")
        self.ttl_s, self.max_series = ttl_s, max_series
        self._series: dict[Key, Series] = {}
        self._live = 0  # series that are not overflow series (what the cap counts)
        self._last_collect_s: float | None = None
        self.overflow_updates = 0
        self.clamped = 0  # negative increases seen in the input (should not happen)

    def __len__(self) -> int:
        return len(self._series)

    def series(self) -> list[Series]:
        return list(self._series.values())

    # -- updates -----------------------------------------------------------------------

    def add(self, name: str, labels: Labels, increase: float, ts_s: float, interval_s: float) -> None:
        """A counter's increase over ``interval_s`` ending at ``ts_s``."""
        if increase != increase:  # NaN: no information
            return
        if increase < 0:
            self.clamped += 1
            increase = 0.0
        s = self._get(name, labels, "counter", ts_s - interval_s, ts_s)
        s.value += increase
        s.pending += increase
        self._seen(s, ts_s)

    def add_total(self, name: str, labels: Labels, total: float, ts_s: float) -> None:
        """A raw cumulative reading; the first one is a baseline, a drop is a reset."""
        if not math.isfinite(total):
            return
        s = self._get(name, labels, "counter", ts_s, ts_s)
        if s.raw is not None:
            increase, reset = counter_increase(s.raw, total)
            if reset:
                self._start_over(s, ts_s)
            s.value += increase
            s.pending += increase
        s.raw = total
        self._seen(s, ts_s)

    def add_histogram(
        self,
        name: str,
        labels: Labels,
        bounds: tuple[float, ...],
        counts: tuple[float, ...],
        sum_: float,
        count: float,
        ts_s: float,
        interval_s: float,
    ) -> None:
        """One interval's histogram increase (cumulative ``le`` counts, as ``HistogramRow``)."""
        if not bounds or len(bounds) != len(counts):
            raise ValueError(f"{name}: {len(bounds)} bounds but {len(counts)} bucket counts")
        s = self._histogram(name, labels, bounds, ts_s - interval_s, ts_s)
        if s is None:
            return
        if min(counts, default=0.0) < 0 or count < 0:
            self.clamped += 1
            counts, count = tuple(max(0.0, c) for c in counts), max(0.0, count)
        _add_into(s.counts, counts)
        _add_into(s.pending_counts, counts)
        total = sum_ if sum_ == sum_ else 0.0
        s.sum += total
        s.pending_sum += total
        s.count += count
        s.pending_count += count
        self._seen(s, ts_s)

    def add_histogram_total(self, name: str, labels: Labels, current: HistogramState, ts_s: float) -> None:
        """A raw cumulative histogram reading (first one a baseline; drops are resets)."""
        s = self._histogram(name, labels, current.bounds, ts_s, ts_s)
        if s is None:
            return
        if s.raw_hist is not None:
            increase, reset = histogram_increase(s.raw_hist, current)
            if reset:
                self._start_over(s, ts_s)
            _add_into(s.counts, increase.counts)
            _add_into(s.pending_counts, increase.counts)
            s.sum += increase.sum
            s.pending_sum += increase.sum
            s.count += increase.count
            s.pending_count += increase.count
        s.raw_hist = current
        self._seen(s, ts_s)

    def touch_histogram(self, name: str, labels: Labels, bounds: tuple[float, ...], ts_s: float) -> None:
        """The engine exposes this histogram series but it grew by nothing: seen, +0."""
        s = self._histogram(name, labels, bounds, ts_s, ts_s)
        if s is not None:
            self._seen(s, ts_s)

    def set(self, name: str, labels: Labels, value: float, ts_s: float) -> None:
        """A gauge reading (NaN is skipped)."""
        if value != value:
            return
        s = self._get(name, labels, "gauge", ts_s, ts_s)
        s.value = value
        self._seen(s, ts_s)

    # -- lifetime ----------------------------------------------------------------------

    def restart(self, ts_s: float, where: Where | None = None) -> int:
        """Start the selected counter/histogram series over (the engine restarted)."""
        n = 0
        for s in self._series.values():
            if s.kind != "gauge" and (where is None or where(s.name, s.labels)):
                self._start_over(s, ts_s)
                n += 1
        return n

    def forget(self, where: Where) -> int:
        """Drop the selected series (e.g. every engine series while the engine is down)."""
        return self._drop([k for k in self._series if where(*k)])

    def expire(self, now_s: float) -> int:
        """Drop series not updated for ``ttl_s``; returns how many left."""
        cutoff_s = now_s - self.ttl_s
        return self._drop([k for k, s in self._series.items() if s.last_s < cutoff_s])

    # -- export ------------------------------------------------------------------------

    def collect(self, now_s: float, delta: bool | Collection[str] = False) -> list[Point]:
        """One export. Cumulative: every live series. Delta (``True``, or the kinds to export as
        delta, e.g. ``{"histogram"}``): series updated since the last collect, with their
        change; the change is cleared. Gauges always carry their last value."""
        kinds = _DELTA_KINDS if delta is True else frozenset(delta or ())
        previous_s, self._last_collect_s = self._last_collect_s, now_s
        out = []
        for s in self._series.values():
            if s.kind == "gauge":
                out.append(Point(s.name, s.labels, s.kind, s.start_s, now_s, s.value))
            elif s.kind not in kinds:
                out.append(_point(s, s.start_s, now_s, s.value, s.counts, s.sum, s.count))
            elif s.updated:
                start_s = s.start_s if previous_s is None else max(s.start_s, previous_s)
                out.append(
                    _point(s, start_s, now_s, s.pending, s.pending_counts, s.pending_sum, s.pending_count)
                )
            _clear_pending(s)
            s.updated = False
        return out

    # -- internals ---------------------------------------------------------------------

    def _get(self, name: str, labels: Labels, kind: str, start_s: float, ts_s: float) -> Series:
        key = (name, labels)
        s = self._series.get(key)
        if s is not None:
            return s
        if self._live >= self.max_series:
            self.overflow_updates += 1
            key = (name, OVERFLOW_LABELS)
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = Series(name, OVERFLOW_LABELS, kind, start_s, ts_s)
            return s
        s = self._series[key] = Series(name, labels, kind, start_s, ts_s)
        self._live += 1
        return s

    def _histogram(
        self, name: str, labels: Labels, bounds: tuple[float, ...], start_s: float, ts_s: float
    ) -> Series | None:
        s = self._get(name, labels, "histogram", start_s, ts_s)
        if s.kind != "histogram":
            return None  # the same name used for another kind: keep the first
        if s.bounds != bounds:
            if s.bounds:
                self._start_over(s, ts_s)  # a changed layout is a new series
            s.bounds = bounds
            s.counts = [0.0] * len(bounds)
            s.pending_counts = [0.0] * len(bounds)
        return s

    def _start_over(self, s: Series, ts_s: float) -> None:
        s.start_s = max(s.start_s, min(ts_s, s.last_s + RESET_GAP_S))
        s.value = s.sum = s.count = 0.0
        s.counts = [0.0] * len(s.bounds)

    def _seen(self, s: Series, ts_s: float) -> None:
        s.last_s = max(s.last_s, ts_s)
        s.updated = True

    def _drop(self, keys: list[Key]) -> int:
        for key in keys:
            del self._series[key]
            if key[1] != OVERFLOW_LABELS:
                self._live -= 1
        return len(keys)


def _add_into(target: list[float], increase: tuple[float, ...] | list[float]) -> None:
    for i, value in enumerate(increase):
        target[i] += value


def _clear_pending(s: Series) -> None:
    s.pending = s.pending_sum = s.pending_count = 0.0
    s.pending_counts = [0.0] * len(s.bounds)


def _point(
    s: Series, start_s: float, now_s: float, value: float, counts: list[float], sum_: float, count: float
) -> Point:
    return Point(s.name, s.labels, s.kind, start_s, now_s, value, s.bounds, tuple(counts), sum_, count)
