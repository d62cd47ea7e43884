"""What the exposition parser returns: families of samples, resolved series and line errors.

Split from :mod:`enginescope.collectors.exposition` (which re-exports every name here) so the parser,
the line tokenizer and the per-scrape family assembly can share the types without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from enginescope.collectors.model import Labels

_LOG_LINE_CHARS = 200


class ExpositionError(ValueError):
    """One malformed line: where it is, what it says, and why it was rejected."""

    def __init__(self, line_no: int, line: str, reason: str) -> None:
        self.line_no, self.line, self.reason = line_no, line, reason
        shown = line if len(line) <= _LOG_LINE_CHARS else line[:_LOG_LINE_CHARS] + "..."
        super().__init__(f"line {line_no}: {reason}: {shown!r}")


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """What one sample line's series text means, shared by every scrape that repeats it."""

    family: str  # family name; counters without ``_total``
    type: str  # family type (MetricType value)
    name: str  # sample name with the family's own prefix (``sglang:``, not ``sglang_``)
    role: str  # value | total | created | bucket | sum | count | quantile
    labels: Labels  # every label, sorted by name
    series_labels: Labels  # without ``le`` (buckets) / ``quantile`` (summaries)
    bound: float | None  # le or quantile, as a float
    key: str  # stable identity of this sample series (name + labels)
    series_key: str  # stable identity of the histogram/summary series it belongs to
    decl: str  # the declaration it was resolved under ("" = undeclared)


class Sample(NamedTuple):
    """One sample line. ``timestamp_s`` is in seconds (0.0.4 milliseconds are converted)."""

    ref: SeriesRef
    value: float
    timestamp_s: float | None
    line_no: int

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def labels(self) -> Labels:
        return self.ref.labels


@dataclass(slots=True)
class MetricFamily:
    name: str
    type: str
    help: str = ""
    unit: str = ""
    # Parallel columns (cheaper than one object per line); ``samples`` zips them.
    refs: list[SeriesRef] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    line_nos: list[int] = field(default_factory=list)
    timestamps_s: dict[int, float] = field(default_factory=dict)  # sample index -> timestamp

    @property
    def samples(self) -> list[Sample]:
        stamps = self.timestamps_s
        return [
            Sample(ref, value, stamps.get(i), line_no)
            for i, (ref, value, line_no) in enumerate(zip(self.refs, self.values, self.line_nos, strict=True))
        ]

    def add(self, ref: SeriesRef, value: float, timestamp_s: float | None, line_no: int) -> None:
        if timestamp_s is not None:
            self.timestamps_s[len(self.values)] = timestamp_s
        self.refs.append(ref)
        self.values.append(value)
        self.line_nos.append(line_no)


@dataclass(slots=True)
class ParseResult:
    families: list[MetricFamily]
    errors: list[ExpositionError]
    openmetrics: bool
