"""Render families as Prometheus text 0.0.4 or OpenMetrics 1.0, whichever the scraper negotiated.

Written here rather than through ``prometheus_client.generate_latest``: its OpenMetrics writer
rewrites ``sglang:num_queue_reqs`` to ``sglang_num_queue_reqs`` in the sample lines while the
``# TYPE`` line keeps the colon (prometheus/client_python#1177), and Prometheus >= 2.x asks for
OpenMetrics first, so engine dashboards went empty. Colons are valid in metric names in both
formats; we keep every name as the engine spells it.

Format differences handled: a counter family is named without ``_total`` in OpenMetrics (its
samples carry it) and a counter whose samples lack ``_total`` cannot be an OpenMetrics counter,
so it is served as ``unknown`` there; ``untyped`` is ``unknown``; HELP escapes ``"`` too;
the body ends with ``# EOF``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Sample:
    suffix: str  # "", "_total", "_bucket", "_count", "_sum"
    labels: Labels
    value: float


@dataclass(slots=True)
class Family:
    name: str  # family name: a counter's without ``_total``
    kind: str  # counter | gauge | histogram | untyped
    help: str
    samples: list[Sample] = field(default_factory=list)


def wants_openmetrics(accept: str | None) -> bool:
    """True when the Accept header prefers OpenMetrics (Prometheus sends it first, q=1)."""
    if not accept:
        return False
    best_om, best_text = -1.0, -1.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text":
            best_om = max(best_om, q)
        elif media in ("text/plain", "*/*", "text/*"):
            best_text = max(best_text, q)
    return best_om > 0 and best_om >= best_text


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels) + "}"


def _om_kind(family: Family) -> str:
    if family.kind == "untyped":
        return "unknown"
    if family.kind == "counter" and any(s.suffix != "_total" for s in family.samples):
        return "unknown"
    return family.kind


def render(families: Iterable[Family], openmetrics: bool) -> str:
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        kind = _om_kind(family) if openmetrics else family.kind
        # Text 0.0.4 names a counter's HELP/TYPE like its samples (``foo_total``), OpenMetrics
        # names the family (``foo``); an OpenMetrics ``unknown`` is named like its samples.
        name = family.name
        if family.kind == "counter" and (not openmetrics or kind == "unknown"):
            name = family.name + family.samples[0].suffix
        lines.append(f"# HELP {name} {_escape_help(family.help, openmetrics)}")
        lines.append(f"# TYPE {name} {kind}")
        for s in family.samples:
            lines.append(f"{family.name}{s.suffix}{_labels(s.labels)} {format_value(s.value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"
