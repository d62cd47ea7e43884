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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from collectors.model import Labels, MetricType

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_TYPES = {t.value: t.value for t in MetricType} | {"unknown": MetricType.UNTYPED.value}
# (sample-name suffix, role) a declared family of each type accepts.
_SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "counter": (("_total", "total"), ("_created", "created"), ("", "value")),
    "histogram": (("_bucket", "bucket"), ("_sum", "sum"), ("_count", "count"), ("_created", "created")),
    "gaugehistogram": (("_bucket", "bucket"), ("_gsum", "sum"), ("_gcount", "count")),
    "summary": (("", "quantile"), ("_sum", "sum"), ("_count", "count"), ("_created", "created")),
    "info": (("_info", "value"), ("", "value")),
}
_PLAIN = (("", "value"),)
_GROUPED_TYPES = frozenset({"histogram", "gaugehistogram", "summary"})
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


def is_openmetrics(text: str, content_type: str | None) -> bool:
    if content_type:
        return "openmetrics" in content_type.lower()
    return text.rstrip().endswith("# EOF")


class ExpositionParser:
    """Parses expositions; keep one per scraped endpoint so its series cache stays warm."""

    def __init__(self, max_cached_series: int = 200_000) -> None:
        self._refs: dict[str, SeriesRef] = {}
        self._suffix_cache: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self._max_cached_series = max_cached_series
        self._layout: _Layout | None = None

    def parse(self, text: str, content_type: str | None = None) -> ParseResult:
        openmetrics = is_openmetrics(text, content_type)
        lines = text.split("\n")
        if self._layout is not None and self._layout.openmetrics == openmetrics:
            replayed = self._layout.replay(lines)
            if replayed is not None:
                return replayed
        scrape = _Scrape(self, openmetrics)
        result = scrape.run(lines)
        self._layout = _Layout.build(lines, scrape, result) if scrape.layout_ok else None
        return result

    def _remember(self, key_text: str, ref: SeriesRef) -> None:
        if len(self._refs) >= self._max_cached_series:
            self._refs.clear()  # churned label sets (pids, ranks): start over rather than grow
        self._refs[key_text] = ref


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
        self.keys: list[str] = []
        self.comments: list[tuple[int, str]] = []
        self.value_rows: list[int] = []  # line index of each sample, in text order
        self.families: list[tuple[MetricFamily, slice | list[int]]] = []  # where its values are
        self.errors: list[ExpositionError] = []

    @classmethod
    def build(cls, lines: list[str], scrape: _Scrape, result: ParseResult) -> _Layout:
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


class _Scrape:
    """State of one parse: declared families, the current block, errors."""

    def __init__(self, parser: ExpositionParser, openmetrics: bool) -> None:
        self.parser = parser
        self.openmetrics = openmetrics
        self.families: dict[str, MetricFamily] = {}
        self.helps: dict[str, str] = {}
        self.units: dict[str, str] = {}
        self.sample_names: dict[str, tuple[MetricFamily, str, str, str]] = {}  # raw -> fam, role, name, decl
        self.errors: list[ExpositionError] = []
        self.damaged: set[str] = set()
        self.decl = ""  # declaration of the current # TYPE block
        self.current: MetricFamily | None = None
        self.layout_ok = True

    def run(self, lines: list[str]) -> ParseResult:
        refs = self.parser._refs
        decl, add = self.decl, None
        eof_line = 0
        for line_no, line in enumerate(lines, 1):
            if not line:
                continue
            if line[0] == "#" or eof_line:
                if self._comment_or_trailer(line_no, line, eof_line):
                    eof_line = line_no
                decl, add = self.decl, self.current.add if self.current else None
                continue
            # Steady state: the text before the last space is a known series and the rest its value.
            key, _, value_text = line.rpartition(" ")
            ref = refs.get(key)
            if ref is not None:
                try:
                    value = float(value_text)
                except ValueError:
                    pass  # the slow path names the bad token
                else:
                    if ref.decl == decl and add is not None:
                        add(ref, value, None, line_no)
                        continue
                    if self._still_valid(ref):
                        self.families[ref.family].add(ref, value, None, line_no)
                        continue
            if not line.isspace():
                self._slow_line(line_no, line, key)
        if self.openmetrics and not eof_line:
            self.errors.append(ExpositionError(0, "", "OpenMetrics exposition does not end with '# EOF'"))
        return ParseResult(self._finish(), self.errors, self.openmetrics)

    # -- comments ---------------------------------------------------------------------------

    def _comment_or_trailer(self, line_no: int, line: str, eof_line: int) -> bool:
        """Handle a ``#`` line or anything after ``# EOF``; returns True for ``# EOF``."""
        if eof_line:
            if not line.isspace():
                self._error(line_no, line, f"content after '# EOF' on line {eof_line}")
            return False
        parts = line.rstrip("\r").split(None, 3)
        if len(parts) == 2 and parts[1] == "EOF":
            return True
        if len(parts) < 3 or parts[1] not in ("HELP", "TYPE", "UNIT"):
            return False  # free-form comment (allowed in 0.0.4)
        keyword, name = parts[1], parts[2]
        if not _NAME_RE.fullmatch(name):
            self._error(line_no, line, f"invalid metric name in # {keyword}")
        elif keyword == "HELP":
            self.helps.setdefault(name, _unescape_help(parts[3] if len(parts) > 3 else ""))
        elif keyword == "UNIT":
            self.units[name] = parts[3].strip() if len(parts) > 3 else ""
        else:
            self._declare(line_no, line, name, parts[3].strip() if len(parts) > 3 else "")
        return False

    def _declare(self, line_no: int, line: str, name: str, type_text: str) -> None:
        kind = _TYPES.get(type_text)
        if kind is None:
            self._error(line_no, line, f"unknown metric type {type_text!r}")
            return
        family_name = name[:-6] if kind == "counter" and name.endswith("_total") else name
        if family_name in self.families:
            self._error(
                line_no, line, f"second # TYPE for family {family_name!r} (or TYPE after its samples)"
            )
            return
        family = MetricFamily(family_name, kind)
        self.families[family_name] = family
        self.current = family
        self.decl = f"{family_name}\x00{kind}"
        for raw, role, canonical in self._sample_names(family_name, kind):
            entry = (family, role, canonical, self.decl)
            if raw == canonical:
                self.sample_names[raw] = entry
            else:  # an alias never shadows a real declaration
                self.sample_names.setdefault(raw, entry)

    def _sample_names(self, family: str, kind: str) -> list[tuple[str, str, str]]:
        cached = self.parser._suffix_cache.get((family, kind))
        if cached is None:
            cached = []
            for suffix, role in _SUFFIXES.get(kind, _PLAIN):
                canonical = family + suffix
                cached.append((canonical, role, canonical))
                if ":" in family:  # client_python #1177: OpenMetrics samples with ':' -> '_'
                    cached.append((canonical.replace(":", "_"), role, canonical))
            self.parser._suffix_cache[(family, kind)] = cached
        return cached

    # -- sample lines -----------------------------------------------------------------------

    def _still_valid(self, ref: SeriesRef) -> bool:
        """A cached series outside its # TYPE block: is it still resolved the same way?"""
        entry = self.sample_names.get(ref.name)
        return entry is not None and entry[3] == ref.decl

    def _slow_line(self, line_no: int, line: str, key_text: str) -> None:
        try:
            raw_name, labels, key_end, rest = _split_sample(line)
            value, stamp = _parse_value(rest, self.openmetrics)
            ref = self._resolve(raw_name, labels)
        except ValueError as exc:
            self._error(line_no, line, str(exc))
            return
        if line[:key_end] == key_text:
            self.parser._remember(key_text, ref)
        else:
            self.layout_ok = False  # timestamp/exemplar/odd spacing: only the line path reads it
        self.families[ref.family].add(ref, value, stamp, line_no)

    def _resolve(self, raw_name: str, pairs: list[tuple[str, str]]) -> SeriesRef:
        entry = self.sample_names.get(raw_name)
        if entry is None:
            if raw_name in self.families:
                kind = self.families[raw_name].type
                raise ValueError(f"sample name {raw_name!r} is not valid for {kind} family {raw_name!r}")
            family = MetricFamily(raw_name, MetricType.UNTYPED.value)
            self.families[raw_name] = family
            entry = (family, "value", raw_name, "")
            self.sample_names[raw_name] = entry
        family, role, name, decl = entry
        labels = tuple(sorted(pairs))
        bound_label = "le" if role == "bucket" else "quantile" if role == "quantile" else None
        bound = None
        series_labels = labels
        if bound_label:
            bound_text = dict(pairs).get(bound_label)
            if bound_text is None:
                raise ValueError(f"{family.type} sample {name!r} has no {bound_label!r} label")
            bound = _parse_float(bound_text, f"{bound_label} label")
            series_labels = tuple(p for p in labels if p[0] != bound_label)
        return SeriesRef(
            family.name, family.type, name, role, labels, series_labels, bound,
            key=_series_text(name, labels), series_key=_series_text(family.name, series_labels), decl=decl,
        )  # fmt: skip

    def _error(self, line_no: int, line: str, reason: str) -> None:
        self.layout_ok = False
        match = _NAME_RE.match(line)
        entry = self.sample_names.get(match.group()) if match and line[0] != "#" else None
        if entry and entry[0].type in _GROUPED_TYPES:
            self.damaged.add(entry[0].name)
            reason += f"; {entry[0].type} family {entry[0].name!r} dropped"
        self.errors.append(ExpositionError(line_no, line, reason))

    def _finish(self) -> list[MetricFamily]:
        out = []
        for family in self.families.values():
            if family.name in self.damaged:
                continue
            help_text = self.helps.get(family.name)
            if help_text is None and family.type == "counter":
                help_text = self.helps.get(family.name + "_total")
            family.help = help_text or ""
            family.unit = self.units.get(family.name, "")
            out.append(family)
        return out


def _split_sample(line: str) -> tuple[str, list[tuple[str, str]], int, str]:
    """Split ``name{labels} rest`` -> (name, label pairs, end of series text, rest)."""
    match = _NAME_RE.match(line)
    if not match:
        raise ValueError("no metric name at the start of the line")
    pos = match.end()
    pairs: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, pairs)
    elif pos < len(line) and not line[pos].isspace():
        raise ValueError(f"unexpected character {line[pos]!r} after metric name")
    return match.group(), pairs, pos, line[pos:]


def _parse_labels(line: str, pos: int, pairs: list[tuple[str, str]]) -> int:
    """Parse labels after ``{``; returns the index after ``}``."""
    seen: set[str] = set()
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == "}":
            return pos + 1
        match = _LABEL_NAME_RE.match(line, pos)
        if not match:
            raise ValueError(f"invalid label name at column {pos + 1}")
        name = match.group()
        pos = match.end()
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if line[pos : pos + 2] != '="':
            raise ValueError(f"expected '=\"' after label {name!r}")
        value, pos = _parse_label_value(line, pos + 2)
        if name in seen:
            raise ValueError(f"duplicate label {name!r}")
        seen.add(name)
        pairs.append((name, value))
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise ValueError(f"expected ',' or '}}' after label {name!r}")


def _parse_label_value(line: str, pos: int) -> tuple[str, int]:
    chunks = []
    while True:
        quote = line.find('"', pos)
        slash = line.find("\\", pos, quote if quote >= 0 else len(line))
        if quote < 0 and slash < 0:
            raise ValueError("unterminated label value")
        if slash < 0:
            chunks.append(line[pos:quote])
            return "".join(chunks), quote + 1
        chunks.append(line[pos:slash])
        escaped = _ESCAPES.get(line[slash + 1 : slash + 2])
        if escaped is None:
            raise ValueError(f"invalid escape {line[slash : slash + 2]!r} in label value")
        chunks.append(escaped)
        pos = slash + 2


def _parse_value(rest: str, openmetrics: bool) -> tuple[float, float | None]:
    if openmetrics and " # " in rest:
        rest = rest.split(" # ", 1)[0]  # drop the exemplar
    tokens = rest.split()
    if not tokens:
        raise ValueError("missing value")
    if len(tokens) > 2:
        raise ValueError(f"unexpected text after the timestamp: {' '.join(tokens[2:])!r}")
    value = _parse_float(tokens[0], "value")
    if len(tokens) == 1:
        return value, None
    stamp = _parse_float(tokens[1], "timestamp")
    if not math.isfinite(stamp):
        raise ValueError(f"invalid timestamp {tokens[1]!r}")
    return value, stamp if openmetrics else stamp / 1000.0


def _parse_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"invalid {what} {text!r}") from None


def _unescape_help(text: str) -> str:
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _series_text(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f"{k}={v!r}" for k, v in labels) + "}"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
