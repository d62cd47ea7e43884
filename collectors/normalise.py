"""One scrape's text -> rows of the store: raw samples, histogram increases, canonical signals.

The API the engine source calls once per tick::

    normaliser = Normaliser("auto")
    scrape = normaliser.process(body, now_s, content_type)

Choices: rows carry the scrape time ``ts_s`` (per-sample exposition timestamps are ignored);
histogram rows are emitted only for series whose count grew in the interval (an idle
histogram is no row, not a row of zeros); a histogram series without a ``+Inf`` bucket uses its
``_count`` as that bucket, and without either it is skipped with an error; counter and summary
``_created`` samples are stored as gauges (as text 0.0.4 exposes them), never given deltas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from enginescope.collectors.catalog import Catalog, Series, canonical_family, catalog_for, detect_engine
from enginescope.collectors.deltas import DeltaTracker, HistogramState
from enginescope.collectors.exposition import ExpositionError, ExpositionParser, MetricFamily
from enginescope.collectors.model import (
    EventKind,
    EventRow,
    HistogramRow,
    Labels,
    SampleRow,
    SeriesRow,
    SignalRow,
)

_GAUGE_LIKE = frozenset({"gauge", "untyped", "info", "stateset", "gaugehistogram"})
_MAX_RESET_FAMILIES_SHOWN = 5


@dataclass(slots=True)
class NormalisedScrape:
    engine: str  # detected: "sglang" | "vllm" | "unknown"
    samples: list[SampleRow] = field(default_factory=list)
    histograms: list[HistogramRow] = field(default_factory=list)
    signals: list[SignalRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    errors: list[ExpositionError] = field(default_factory=list)
    series: list[SeriesRow] = field(default_factory=list)  # every histogram series, idle included
    helps: dict[str, str] = field(default_factory=dict)  # family name -> the engine's HELP text


class Normaliser:
    """Stateful per engine endpoint: keeps the parser cache and the previous values."""

    def __init__(self, engine: str = "auto", forget_after_s: float = 900.0) -> None:
        if engine not in ("auto", "sglang", "vllm", "unknown"):
            raise ValueError(f"unknown engine {engine!r}: expected auto, sglang, vllm or unknown")
        self._auto = engine == "auto"
        self.engine = "unknown" if self._auto else engine
        self._parser = ExpositionParser()
        self._deltas = DeltaTracker(forget_after_s)
        self._last_ts_s: float | None = None

    def process(self, text: str, ts_s: float, content_type: str | None = None) -> NormalisedScrape:
        parsed = self._parser.parse(text, content_type)
        if self._auto:
            detected = detect_engine(f.name for f in parsed.families)
            if detected != "unknown":  # an empty body keeps what was seen before
                self.engine = detected
        interval_s = ts_s - self._last_ts_s if self._last_ts_s is not None else None
        self._last_ts_s = ts_s
        self._deltas.start(ts_s)
        run = _Run(ts_s, interval_s, catalog_for(self.engine), self._deltas)
        for family in parsed.families:
            run.family(family)
        resets = self._deltas.finish()
        out = NormalisedScrape(self.engine, run.samples, run.histograms, run.signals(), [], parsed.errors)
        out.series = run.series
        out.helps = {f.name: f.help for f in parsed.families if f.help}
        out.errors.extend(run.errors)
        if resets:
            out.events.append(EventRow(ts_s, EventKind.ENGINE_RESTART, _reset_detail(resets)))
        return out


class _Run:
    """Rows of one scrape, built family by family."""

    def __init__(self, ts_s: float, interval_s: float | None, catalog: Catalog, deltas: DeltaTracker) -> None:
        self.ts_s, self.interval_s, self.catalog, self.deltas = ts_s, interval_s, catalog, deltas
        self.wanted = catalog.wanted_families()
        self.samples: list[SampleRow] = []
        self.histograms: list[HistogramRow] = []
        self.series: list[SeriesRow] = []
        self.errors: list[ExpositionError] = []
        self.present: set[str] = set()
        self.gauges: dict[str, list[Series]] = {}
        self.increases: dict[str, list[Series]] = {}

    def family(self, family: MetricFamily) -> None:
        canonical = canonical_family(family.name)
        self.present.add(canonical)
        kind = family.type
        if kind == "counter":
            self._counters(
                family, self.increases.setdefault(canonical, []) if canonical in self.wanted else None
            )
        elif kind == "histogram":
            self._histograms(family, self.catalog.histograms.get(canonical))
        elif kind == "summary":
            self._summary(family)
        else:
            kept = self.gauges.setdefault(canonical, []) if canonical in self.wanted else None
            self._gauges(family, kind if kind in _GAUGE_LIKE else "untyped", kept)

    def signals(self) -> list[SignalRow]:
        interval_s = self.interval_s or 0.0
        increases = self.increases if self.interval_s is not None else {}
        pairs = self.catalog.signals(self.present, self.gauges, increases)
        return [SignalRow(self.ts_s, name, value, interval_s) for name, value in pairs]

    def _gauges(self, family: MetricFamily, kind: str, kept: list[Series] | None) -> None:
        ts_s, rows = self.ts_s, self.samples
        for ref, value in zip(family.refs, family.values, strict=True):
            rows.append(SampleRow(ts_s, ref.name, kind, ref.labels, value))
            if kept is not None:
                kept.append((ref.labels, value))

    def _counters(self, family: MetricFamily, kept: list[Series] | None) -> None:
        ts_s, interval_s, rows, counter = self.ts_s, self.interval_s, self.samples, self.deltas.counter
        name = family.name
        for ref, value, line_no in zip(family.refs, family.values, family.line_nos, strict=True):
            if ref.role == "created":
                rows.append(SampleRow(ts_s, ref.name, "gauge", ref.labels, value))
                continue
            if not value >= 0:  # also NaN: a counter can only count up from zero
                why = f"counter {name!r} has a negative or NaN value ({value!r})"
                self.errors.append(ExpositionError(line_no, ref.name, why))
                continue
            delta = counter(ref.key, name, value)
            rows.append(SampleRow(ts_s, ref.name, "counter", ref.labels, value, delta, interval_s))
            if kept is not None and delta is not None:
                kept.append((ref.labels, delta))

    def _summary(self, family: MetricFamily) -> None:
        ts_s, interval_s, rows = self.ts_s, self.interval_s, self.samples
        for ref, value in zip(family.refs, family.values, strict=True):
            if ref.role in ("sum", "count"):
                delta = self.deltas.counter(ref.key, family.name, value)
                rows.append(SampleRow(ts_s, ref.name, "summary", ref.labels, value, delta, interval_s))
            else:
                rows.append(
                    SampleRow(
                        ts_s, ref.name, "gauge" if ref.role == "created" else "summary", ref.labels, value
                    )
                )

    def _histograms(self, family: MetricFamily, signal: str | None) -> None:
        groups: dict[str, _HistogramParts] = {}
        parts: _HistogramParts | None = None
        for ref, value, line_no in zip(family.refs, family.values, family.line_nos, strict=True):
            role = ref.role
            if role == "created":
                self.samples.append(SampleRow(self.ts_s, ref.name, "gauge", ref.labels, value))
                continue
            if parts is None or parts.key is not ref.series_key:  # lines of a series are adjacent
                parts = groups.get(ref.series_key)
                if parts is None:
                    parts = groups[ref.series_key] = _HistogramParts(
                        ref.series_key, ref.series_labels, line_no
                    )
            if role == "bucket":
                parts.buckets.append((ref.bound, value))  # type: ignore[arg-type]
            elif role == "sum":
                parts.sum = value
            elif role == "count":
                parts.count = value
        for series_key, parts in groups.items():
            state = parts.state(family.name, self.errors)
            if state is None:
                continue
            self.series.append(
                SeriesRow(self.ts_s, family.name, "histogram", parts.labels, state.bounds, signal)
            )
            increase = self.deltas.histogram(series_key, family.name, state)
            if increase is None or self.interval_s is None or increase.count <= 0:
                continue
            self.histograms.append(
                HistogramRow(
                    self.ts_s, family.name, parts.labels, increase.bounds, increase.counts,
                    increase.sum, increase.count, self.interval_s, signal,
                )
            )  # fmt: skip


class _HistogramParts:
    """The lines of one histogram series, gathered before they become a HistogramState."""

    __slots__ = ("key", "labels", "line_no", "buckets", "sum", "count")

    def __init__(self, key: str, labels: Labels, line_no: int) -> None:
        self.key, self.labels, self.line_no = key, labels, line_no
        self.buckets: list[tuple[float, float]] = []
        self.sum: float | None = None
        self.count: float | None = None

    def state(self, family: str, errors: list[ExpositionError]) -> HistogramState | None:
        bounds, counts = zip(*self.buckets, strict=True) if self.buckets else ((), ())
        if list(bounds) != sorted(bounds):
            bounds, counts = zip(*sorted(self.buckets), strict=True)
        if len(set(bounds)) != len(bounds):
            return self._reject(family, "repeats an le bound", errors)
        if not _cumulative(counts):  # a falling bucket would give quantiles outside every bucket
            return self._reject(family, "has cumulative bucket counts that fall or are negative", errors)
        if not bounds or bounds[-1] != math.inf:
            if self.count is None:
                return self._reject(family, "has neither a +Inf bucket nor a _count", errors)
            bounds, counts = (*bounds, math.inf), (*counts, self.count)
        count = self.count if self.count is not None else counts[-1]
        total = self.sum if self.sum is not None else math.nan
        return HistogramState(bounds, counts, total, count)

    def _reject(self, family: str, why: str, errors: list[ExpositionError]) -> None:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels)
        errors.append(
            ExpositionError(self.line_no, f"{family}{{{labels}}}", f"histogram series {why}; skipped")
        )
        return None


def _cumulative(counts: tuple[float, ...]) -> bool:
    """Counts start at >= 0 and never fall (NaN fails both comparisons)."""
    return all(b >= a for a, b in zip((0.0, *counts), counts, strict=False))


def _reset_detail(families: list[str]) -> str:
    shown = ", ".join(families[:_MAX_RESET_FAMILIES_SHOWN])
    more = len(families) - _MAX_RESET_FAMILIES_SHOWN
    return f"counter reset in {shown}" + (f" and {more} more families" if more > 0 else "")
