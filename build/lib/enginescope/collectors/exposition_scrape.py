"""One line-by-line parse of an exposition: declarations, family assembly and the series cache.

:class:`SeriesCache` outlives scrapes (one per :class:`enginescope.collectors.exposition.ExpositionParser`);
:class:`Scrape` lives for one parse. A cached :class:`SeriesRef` is used as-is inside the
``# TYPE`` block it was resolved under, and elsewhere only if that sample name still resolves
to the same declaration, so a family appearing or disappearing never makes the cache wrong.
"""

from __future__ import annotations

from enginescope.collectors.exposition_lines import (
    NAME_RE,
    parse_float,
    parse_value,
    series_text,
    split_sample,
    unescape_help,
)
from enginescope.collectors.exposition_model import ExpositionError, MetricFamily, ParseResult, SeriesRef
from enginescope.collectors.model import MetricType

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

# raw sample name -> (family, role, canonical sample name, declaration)
SampleNameEntry = tuple[MetricFamily, str, str, str]


class SeriesCache:
    """Series text -> :class:`SeriesRef`, and each declaration's accepted sample names."""

    def __init__(self, max_series: int) -> None:
        self.refs: dict[str, SeriesRef] = {}
        self.sample_names: dict[tuple[str, str], list[tuple[str, str, str]]] = {}  # (family, type) ->
        self.max_series = max_series

    def remember(self, key_text: str, ref: SeriesRef) -> None:
        if len(self.refs) >= self.max_series:
            self.refs.clear()  # churned label sets (pids, ranks): start over rather than grow
        self.refs[key_text] = ref

    def names_for(self, family: str, kind: str) -> list[tuple[str, str, str]]:
        """(raw sample name, role, canonical name) a family declared as ``kind`` accepts."""
        cached = self.sample_names.get((family, kind))
        if cached is None:
            cached = []
            for suffix, role in _SUFFIXES.get(kind, _PLAIN):
                canonical = family + suffix
                cached.append((canonical, role, canonical))
                if ":" in family:  # client_python #1177: OpenMetrics samples with ':' -> '_'
                    cached.append((canonical.replace(":", "_"), role, canonical))
            self.sample_names[(family, kind)] = cached
        return cached


class Scrape:
    """State of one parse: declared families, the current block, errors."""

    def __init__(self, cache: SeriesCache, openmetrics: bool) -> None:
        self.cache = cache
        self.openmetrics = openmetrics
        self.families: dict[str, MetricFamily] = {}
        self.helps: dict[str, str] = {}
        self.units: dict[str, str] = {}
        self.sample_names: dict[str, SampleNameEntry] = {}
        self.errors: list[ExpositionError] = []
        self.damaged: set[str] = set()  # grouped families with a bad line: dropped at the end
        self.decl = ""  # declaration of the current # TYPE block
        self.current: MetricFamily | None = None
        self.layout_ok = True  # False: the layout replay could not reproduce this parse

    def run(self, lines: list[str]) -> ParseResult:
        refs = self.cache.refs
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
        argument = parts[3] if len(parts) > 3 else ""
        if not NAME_RE.fullmatch(name):
            self._error(line_no, line, f"invalid metric name in # {keyword}")
        elif keyword == "HELP":
            self.helps.setdefault(name, unescape_help(argument))
        elif keyword == "UNIT":
            self.units[name] = argument.strip()
        else:
            self._declare(line_no, line, name, argument.strip())
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
        for raw, role, canonical in self.cache.names_for(family_name, kind):
            entry = (family, role, canonical, self.decl)
            if raw == canonical:
                self.sample_names[raw] = entry
            else:  # an alias never shadows a real declaration
                self.sample_names.setdefault(raw, entry)

    # -- sample lines -----------------------------------------------------------------------

    def _still_valid(self, ref: SeriesRef) -> bool:
        """A cached series outside its # TYPE block: is it still resolved the same way?"""
        entry = self.sample_names.get(ref.name)
        return entry is not None and entry[3] == ref.decl

    def _slow_line(self, line_no: int, line: str, key_text: str) -> None:
        try:
            raw_name, labels, key_end, rest = split_sample(line)
            value, stamp = parse_value(rest, self.openmetrics)
            ref = self._resolve(raw_name, labels)
        except ValueError as exc:
            self._error(line_no, line, str(exc))
            return
        if line[:key_end] == key_text:
            self.cache.remember(key_text, ref)
        else:
            self.layout_ok = False  # timestamp/exemplar/odd spacing: only the line path reads it
        self.families[ref.family].add(ref, value, stamp, line_no)

    def _entry_for(self, raw_name: str) -> SampleNameEntry:
        """The declaration a sample name belongs to; an undeclared name becomes an untyped family."""
        entry = self.sample_names.get(raw_name)
        if entry is not None:
            return entry
        if raw_name in self.families:
            kind = self.families[raw_name].type
            raise ValueError(f"sample name {raw_name!r} is not valid for {kind} family {raw_name!r}")
        family = MetricFamily(raw_name, MetricType.UNTYPED.value)
        self.families[raw_name] = family
        entry = (family, "value", raw_name, "")
        self.sample_names[raw_name] = entry
        return entry

    def _resolve(self, raw_name: str, pairs: list[tuple[str, str]]) -> SeriesRef:
        family, role, name, decl = self._entry_for(raw_name)
        labels = tuple(sorted(pairs))
        bound_label = "le" if role == "bucket" else "quantile" if role == "quantile" else None
        bound = None
        series_labels = labels
        if bound_label:
            bound_text = dict(pairs).get(bound_label)
            if bound_text is None:
                raise ValueError(f"{family.type} sample {name!r} has no {bound_label!r} label")
            bound = parse_float(bound_text, f"{bound_label} label")
            series_labels = tuple(p for p in labels if p[0] != bound_label)
        return SeriesRef(
            family.name, family.type, name, role, labels, series_labels, bound,
            key=series_text(name, labels), series_key=series_text(family.name, series_labels), decl=decl,
        )  # fmt: skip

    def _error(self, line_no: int, line: str, reason: str) -> None:
        self.layout_ok = False
        match = NAME_RE.match(line)
        entry = self.sample_names.get(match.group()) if match and line[0] != "#" else None
        if entry and entry[0].type in _GROUPED_TYPES:
            # a histogram/summary missing one bucket would give wrong quantiles: drop it whole
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
