"""The endpoint's live series: accumulated values, last-seen times, a TTL and a series cap.

A series that no write has touched for ``ttl_s`` leaves the endpoint, so a pid, rank or label
set that went away stops being served (Prometheus then marks it stale instead of plotting a
frozen value). ``max_series`` bounds memory: a new label set beyond it is folded into one
overflow series per family labelled ``otel_metric_overflow="true"`` (OpenTelemetry's
``otel.metric.overflow`` attribute after the OTLP->Prometheus translation) and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from enginescope.exporters.prom_text import Family, Labels, Sample, format_value

OVERFLOW_LABELS: Labels = (("otel_metric_overflow", "true"),)


class Origin(StrEnum):
    """Who a family's values come from: engine families leave when the engine is down."""

    ENGINE = "engine"
    GPU = "gpu"
    SIDECAR = "sidecar"


@dataclass(slots=True)
class Series:
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: list[float] = field(default_factory=list)
    sum: float = 0.0
    last_seen_s: float = 0.0
    # Increase written before the series was first served: served as 0 once, so Prometheus'
    # increase() sees 0 -> n instead of a series that starts at n (which it cannot count).
    unserved: float = 0.0
    served: bool = False


@dataclass(slots=True)
class _Family:
    kind: str  # counter | gauge | histogram | untyped
    help: str
    origin: Origin
    suffix: str  # a counter's sample suffix: "_total", or "" for an engine counter without it
    series: dict[Labels, Series] = field(default_factory=dict)


class SeriesTable:
    """Families by name; not thread-safe (the endpoint holds one lock around it)."""

    def __init__(self, ttl_s: float, max_series: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_series <= 0:
            raise ValueError(f"series ttl_s and max_series must be > 0 (got {ttl_s}, {max_series})")
        self.ttl_s = ttl_s
        self.max_series = max_series
        self.clock = clock
        self.folded = 0  # label sets folded into an overflow series since start
        self._families: dict[str, _Family] = {}
        self._live = 0

    @property
    def live_series(self) -> int:
        return self._live

    def get(
        self, name: str, kind: str, help_text: str, origin: Origin, labels: Labels, suffix: str = ""
    ) -> Series | None:
        """The series to update (created if new, the overflow series past the cap); None if the
        family already exists with another kind (an engine changing a family's type)."""
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, help_text, origin, suffix)
        elif family.kind != kind:
            return None
        series = family.series.get(labels)
        if series is None:
            if self._live >= self.max_series:
                self.folded += 1
                labels = OVERFLOW_LABELS
                series = family.series.get(labels)
            if series is None:
                series = family.series[labels] = Series()
                self._live += 1
        series.last_seen_s = self.clock()
        return series

    def drop(self, keep: Callable[[str, _Family, Labels], bool]) -> int:
        """Remove every series for which ``keep`` is False; returns how many went."""
        dropped = 0
        for name, family in list(self._families.items()):
            for labels in [lb for lb in family.series if not keep(name, family, lb)]:
                del family.series[labels]
                dropped += 1
            if not family.series:
                del self._families[name]
        self._live -= dropped
        return dropped

    def expire(self) -> int:
        cutoff = self.clock() - self.ttl_s
        return self.drop(lambda _n, family, labels: family.series[labels].last_seen_s >= cutoff)

    def families(self) -> Iterator[Family]:
        for name, family in self._families.items():
            out = Family(name, family.kind, family.help)
            for labels, s in family.series.items():
                if family.kind == "histogram":
                    for bound, count in zip(s.bounds, s.counts, strict=True):
                        out.samples.append(Sample("_bucket", (*labels, ("le", format_value(bound))), count))
                    out.samples.append(Sample("_count", labels, s.counts[-1] if s.counts else 0.0))
                    out.samples.append(Sample("_sum", labels, s.sum))
                else:
                    out.samples.append(Sample(family.suffix, labels, s.value - s.unserved))
                    s.unserved, s.served = 0.0, True
            yield out
