"""Tokenizer for one exposition line: metric name, label pairs, value and timestamp.

Only the slow path of :mod:`enginescope.collectors.exposition` comes here (a series text not seen before,
or a line that failed the fast split); every error is a ``ValueError`` whose message says
what is wrong, and the caller turns it into an ``ExpositionError`` naming the line.
"""

from __future__ import annotations

import math
import re

from enginescope.collectors.model import Labels

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_BLANKS = " \t"


def split_sample(line: str) -> tuple[str, list[tuple[str, str]], int, str]:
    """Split ``name{labels} rest`` -> (name, label pairs, end of series text, rest)."""
    match = NAME_RE.match(line)
    if not match:
        raise ValueError("no metric name at the start of the line")
    pos = match.end()
    pairs: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, pairs)
    elif pos < len(line) and not line[pos].isspace():
        raise ValueError(f"unexpected character {line[pos]!r} after metric name")
    return match.group(), pairs, pos, line[pos:]


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _BLANKS:
        pos += 1
    return pos


def _parse_labels(line: str, pos: int, pairs: list[tuple[str, str]]) -> int:
    """Parse labels after ``{`` into ``pairs``; returns the index after ``}``."""
    seen: set[str] = set()
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return pos + 1
        match = _LABEL_NAME_RE.match(line, pos)
        if not match:
            raise ValueError(f"invalid label name at column {pos + 1}")
        name = match.group()
        pos = _skip_blanks(line, match.end())
        if line[pos : pos + 2] != '="':
            raise ValueError(f"expected '=\"' after label {name!r}")
        value, pos = _parse_label_value(line, pos + 2)
        if name in seen:
            raise ValueError(f"duplicate label {name!r}")
        seen.add(name)
        pairs.append((name, value))
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise ValueError(f"expected ',' or '}}' after label {name!r}")


def _parse_label_value(line: str, pos: int) -> tuple[str, int]:
    """A quoted label value starting after its opening quote -> (unescaped value, index after it)."""
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


def parse_value(rest: str, openmetrics: bool) -> tuple[float, float | None]:
    """The text after the series -> (value, timestamp in seconds or None)."""
    if openmetrics and " # " in rest:
        rest = rest.split(" # ", 1)[0]  # drop the exemplar
    tokens = rest.split()
    if not tokens:
        raise ValueError("missing value")
    if len(tokens) > 2:
        raise ValueError(f"unexpected text after the timestamp: {' '.join(tokens[2:])!r}")
    value = parse_float(tokens[0], "value")
    if len(tokens) == 1:
        return value, None
    stamp = parse_float(tokens[1], "timestamp")
    if not math.isfinite(stamp):
        raise ValueError(f"invalid timestamp {tokens[1]!r}")
    return value, stamp if openmetrics else stamp / 1000.0  # 0.0.4 stamps are milliseconds


def parse_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"invalid {what} {text!r}") from None


def unescape_help(text: str) -> str:
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def series_text(name: str, labels: Labels) -> str:
    """A stable identity for a series (not exposition syntax: values are Python reprs)."""
    return name + "{" + ",".join(f"{k}={v!r}" for k, v in labels) + "}"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
