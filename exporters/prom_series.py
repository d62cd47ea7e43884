"""The endpoint's live series on the shared cumulative helper, plus what Prometheus needs on top.

Values, last-seen times, the TTL and the series cap are ``collectors.cumulative.CumulativeState``
(shared with the OTLP sink): a series no write touched for ``ttl_s`` leaves, so a pid, rank or
label set that went away stops being served (Prometheus marks it stale instead of plotting a
frozen value); a new label set beyond ``max_series`` is folded into one overflow series per
family (``otel.metric.overflow="true"``, served as ``otel_metric_overflow``) and counted.

Kept here: each family's Prometheus type, HELP, origin and sample suffix, and a counter's
increase written before its first scrape (served as 0 once, so ``increase()`` sees 0 -> n).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from enginescope.collectors.cumulative import CumulativeState
from enginescope.exporters.prom_text import Family, Labels, Sample, format_value

OVERFLOW_LABELS: Labels = (("otel_metric_overflow", "true"),)
_HELPER_OVERFLOW = "otel.metric.overflow"


class Origin(StrEnum):
    """Who a family's values come from: engine families leave when the engine is down."""

    ENGINE = "engine"
    GPU = "gpu"
    SIDECAR = "sidecar"


@dataclass(frozen=True, slots=True)
class _Meta:
    kind: str  # counter | gauge | histogram | untyped
    help: str
    origin: Origin
    suffix: str  # a counter's sample suffix: "_total", or "" for an engine counter without it


Keep = Callable[[str, Origin, Labels], bool]


class SeriesTable:
    """Families by name; not thread-safe (the endpoint holds one lock around it)."""

    def __init__(self, ttl_s: float, max_series: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_series <= 0:
            raise ValueError(f"series ttl_s and max_series must be > 0 (got {ttl_s}, {max_series})")
        self.clock = clock
        self._state = CumulativeState(ttl_s, max_series)
        self._meta: dict[str, _Meta] = {}
        self._unserved: dict[tuple[str, Labels], float] = {}
        self._served: set[tuple[str, Labels]] = set()

    @property
    def live_series(self) -> int:
        return len(self._state)

    @property
    def folded(self) -> int:
        """Updates of new label sets folded into an overflow series since start."""
        return self._state.overflow_updates

    def _family(self, name: str, kind: str, help_text: str, origin: Origin, suffix: str) -> bool:
        """Register a family; False if it exists with another type (an engine changed it).
        A HELP text that changed (the engine's own, learnt after a generic one) replaces it."""
        meta = self._meta.setdefault(name, _Meta(kind, help_text, origin, suffix))
        if meta.kind != kind:
            return False
        if meta.help != help_text:
            self._meta[name] = dataclasses.replace(meta, help=help_text)
        return True

    def add(self, name: str, kind: str, help_text: str, origin: Origin, labels: Labels, value: float,
            *, accumulate: bool, suffix: str = "") -> None:  # fmt: skip
        if not self._family(name, kind, help_text, origin, suffix):
            return
        now_s = self.clock()
        if not accumulate:
            self._state.set(name, labels, value, now_s)
            return
        self._state.add(name, labels, value, now_s, 0.0)
        key = (name, labels)
        if key not in self._served:
            self._unserved[key] = self._unserved.get(key, 0.0) + max(0.0, value)

    def add_histogram(self, name: str, help_text: str, labels: Labels, bounds: tuple[float, ...],
                      counts: tuple[float, ...], sum_: float, count: float) -> None:  # fmt: skip
        if self._family(name, "histogram", help_text, Origin.ENGINE, ""):
            self._state.add_histogram(name, labels, bounds, counts, sum_, count, self.clock(), 0.0)

    def touch_histogram(self, name: str, help_text: str, labels: Labels, bounds: tuple[float, ...]) -> None:
        """The engine still exposes this histogram series but nothing was observed: it stays
        served (a new one is served with all-zero buckets)."""
        if self._family(name, "histogram", help_text, Origin.ENGINE, ""):
            self._state.touch_histogram(name, labels, bounds, self.clock())

    def drop(self, keep: Keep) -> int:
        """Remove every series for which ``keep`` is False; returns how many went."""
        return self._state.forget(lambda name, labels: not keep(name, self._meta[name].origin, labels))

    def expire(self) -> int:
        return self._state.expire(self.clock())

    def families(self) -> Iterator[Family]:
        out: dict[str, Family] = {}
        live: set[tuple[str, Labels]] = set()
        for p in self._state.collect(self.clock()):
            meta = self._meta[p.name]
            family = out.setdefault(p.name, Family(p.name, meta.kind, meta.help))
            labels = OVERFLOW_LABELS if p.labels and p.labels[0][0] == _HELPER_OVERFLOW else p.labels
            key = (p.name, p.labels)
            live.add(key)
            if meta.kind == "histogram":
                for bound, n in zip(p.bounds, p.counts, strict=True):
                    family.samples.append(Sample("_bucket", (*labels, ("le", format_value(bound))), n))
                family.samples.append(Sample("_count", labels, p.counts[-1] if p.counts else 0.0))
                family.samples.append(Sample("_sum", labels, p.sum))
            else:
                family.samples.append(Sample(meta.suffix, labels, p.value - self._unserved.pop(key, 0.0)))
                self._served.add(key)
        self._served &= live  # a series that left and comes back is new again
        yield from out.values()
