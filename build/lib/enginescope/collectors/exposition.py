"""Prometheus text 0.0.4 / OpenMetrics parser, built for scraping the same engine every few seconds.

Consecutive scrapes repeat the same series text and only values change, so the text before the
value (``name{labels}``) is parsed once into a :class:`SeriesRef` and cached; steady state per
line is a split, a dict lookup and ``float()``. The cache holds pure functions of that text plus
the family declaration it was resolved under, so series appearing or disappearing never make it
wrong. On top, a scrape whose series text matches the previous one line for line replays that
layout and only reads the values (:class:`_Layout`).

Tolerated quirks: SGLang's OpenMetrics body under prometheus_client 0.23-0.26 (``# TYPE
sglang:x counter`` over ``sglang_x_total`` samples, client_python #1177) maps back to the
declared family; counters declared with or without ``_total``; labels in any order.
Bad lines become :class:`ExpositionError` entries and the rest of the scrape survives; a bad
line inside a histogram or summary drops that whole family, because a family with a missing
bucket would give wrong quantiles.

Layout: this module holds the parser, its layout replay and the renderer; the result types
live in ``exposition_model``, the line tokenizer in ``exposition_lines`` and the line-by-line
family assembly in ``exposition_scrape``. Their public names are re-exported here.
"""

from __future__ import annotations

import math

from enginescope.collectors.exposition_lines import escape_label_value
from enginescope.collectors.exposition_model import (
    ExpositionError,
    MetricFamily,
    ParseResult,
    Sample,
    SeriesRef,
)
from enginescope.collectors.exposition_scrape import Scrape, SeriesCache

__all__ = [
    "ExpositionError",
    "ExpositionParser",
    "MetricFamily",
    "ParseResult",
    "Sample",
    "SeriesRef",
    "escape_label_value",
    "is_openmetrics",
    "parse_exposition",
    "render_text",
]


def is_openmetrics(text: str, content_type: str | None) -> bool:
    if content_type:
        return "openmetrics" in content_type.lower()
    return text.rstrip().endswith("# EOF")


class ExpositionParser:
    """Parses expositions; keep one per scraped endpoint so its series cache stays warm."""

    def __init__(self, max_cached_series: int = 200_000) -> None:
        self._cache = SeriesCache(max_cached_series)
        self._layout: _Layout | None = None

    def parse(self, text: str, content_type: str | None = None) -> ParseResult:
        openmetrics = is_openmetrics(text, content_type)
        lines = text.split("\n")
        if self._layout is not None and self._layout.openmetrics == openmetrics:
            replayed = self._layout.replay(lines)
            if replayed is not None:
                return replayed
        scrape = Scrape(self._cache, openmetrics)
        result = scrape.run(lines)
        self._layout = _Layout.build(lines, result) if scrape.layout_ok else None
        return result


class _Layout:
    """The line layout of the last clean scrape.

    When a scrape has exactly the same series text, line for line, and the same comment lines,
    only the values are new: they are read in one pass with no per-line resolution. Any
    difference (a series appears or disappears, a value does not parse) falls back to the
    line-by-line path, which is always right.
    """

    __slots__ = ("openmetrics", "keys", "comments", "value_rows", "families", "errors")

    def __init__(self) -> None:
        self.openmetrics = False
        self.keys: list[str] = []  # series text of every line (text before the last space)
        self.comments: list[tuple[int, str]] = []
        self.value_rows: list[int] = []  # line index of each sample, in text order
        self.families: list[tuple[MetricFamily, slice | list[int]]] = []  # where its values are
        self.errors: list[ExpositionError] = []

    @classmethod
    def build(cls, lines: list[str], result: ParseResult) -> _Layout:
        layout = cls()
        layout.openmetrics = result.openmetrics
        layout.keys = [line.rpartition(" ")[0] for line in lines]
        layout.comments = [(i, line) for i, line in enumerate(lines) if line[:1] == "#"]
        lines_in_order = sorted(n for family in result.families for n in family.line_nos)
        order = {line_no: i for i, line_no in enumerate(lines_in_order)}
        layout.value_rows = [line_no - 1 for line_no in lines_in_order]
        for family in result.families:
            slots = [order[n] for n in family.line_nos]
            contiguous = slots == list(range(slots[0], slots[0] + len(slots))) if slots else True
            span = slice(slots[0], slots[0] + len(slots)) if slots else slice(0, 0)
            layout.families.append((family, span if contiguous else slots))
        layout.errors = list(result.errors)  # only the trailing-EOF kind can be here
        return layout

    def replay(self, lines: list[str]) -> ParseResult | None:
        """The parse of ``lines`` if only values changed since the build; None otherwise."""
        if len(lines) != len(self.keys):
            return None
        parts = [line.rpartition(" ") for line in lines]
        if [p[0] for p in parts] != self.keys or any(lines[i] != text for i, text in self.comments):
            return None
        try:
            values = [float(parts[i][2]) for i in self.value_rows]
        except ValueError:
            return None
        families = []
        for template, where in self.families:
            family = MetricFamily(template.name, template.type, template.help, template.unit)
            family.refs = list(template.refs)
            family.line_nos = list(template.line_nos)
            family.values = values[where] if isinstance(where, slice) else [values[i] for i in where]
            families.append(family)
        return ParseResult(families, list(self.errors), self.openmetrics)


def parse_exposition(text: str, content_type: str | None = None, *, strict: bool = False) -> ParseResult:
    """One-shot parse. ``strict=True`` raises the first :class:`ExpositionError` instead."""
    result = ExpositionParser().parse(text, content_type)
    if strict and result.errors:
        raise result.errors[0]
    return result


def render_text(families: list[MetricFamily]) -> str:
    """Render families as text 0.0.4 (used by round-trip tests and simulators)."""
    out: list[str] = []
    for family in families:
        declared = family.name + "_total" if family.type == "counter" else family.name
        if family.help:
            help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {declared} {help_text}")
        out.append(f"# TYPE {declared} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
            series = f"{sample.name}{{{labels}}}" if labels else sample.name
            out.append(f"{series} {_format_float(sample.value)}")
    return "\n".join(out) + "\n"


def _format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
