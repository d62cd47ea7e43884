"""In-memory metric state of one simulated SGLang process group.

It mimics what SGLang's prometheus_client multiprocess files hold after merging: a family exists
only once a child has been touched, children keep their creation order, labels render sorted.
Rendered label text is built once per child, so a scrape only formats numbers.
"""

from __future__ import annotations

import bisect
import math
import time

from enginescope.simfleet.sgl_families import FAMILIES, FamilySpec

_SPECS: dict[str, tuple[int, FamilySpec]] = {spec.name: (i, spec) for i, spec in enumerate(FAMILIES)}


def float_to_go_string(value: float) -> str:
    """Format a number the way prometheus_client does (Go-style exponent for large values)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        digits = (text[:dot] + text[dot + 1 :]).rstrip("0")
        mantissa = f"{digits[0]}.{digits[1:]}".rstrip(".")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LabelSet:
    """An immutable label set with its exposition text (names sorted, as the real endpoint does)."""

    __slots__ = ("pairs", "text")

    def __init__(self, labels: dict[str, str]) -> None:
        self.pairs: tuple[tuple[str, str], ...] = tuple(sorted((k, str(v)) for k, v in labels.items()))
        self.text = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in self.pairs)

    def with_extra(self, **extra: str) -> LabelSet:
        return LabelSet({**dict(self.pairs), **extra})

    def braces(self, le: str | None = None) -> str:
        pairs = self.pairs if le is None else tuple(sorted(self.pairs + (("le", le),)))
        if not pairs:
            return ""
        return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in pairs) + "}"

    def __repr__(self) -> str:
        return f"LabelSet({self.text})"


class ScalarChild:
    __slots__ = ("labels", "value", "braces", "created_s")

    def __init__(self, labels: LabelSet) -> None:
        self.labels = labels
        self.value = 0.0
        self.braces = labels.braces()
        self.created_s = time.time()  # the ``_created`` sample of a single-process exposition


class HistogramChild:
    __slots__ = ("labels", "bounds", "counts", "sum", "braces", "bucket_braces", "created_s")

    def __init__(self, labels: LabelSet, bounds: tuple[float, ...]) -> None:
        self.labels = labels
        self.created_s = time.time()
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)  # per bucket, last = +Inf; not cumulative
        self.sum = 0.0
        self.braces = labels.braces()
        les = [float_to_go_string(b) for b in bounds] + ["+Inf"]
        self.bucket_braces = [labels.braces(le) for le in les]

    def observe(self, value: float, count: float = 1.0, sum_add: float | None = None) -> None:
        """Add ``count`` observations of ``value``; ``sum_add`` overrides the sum increment.

        SGLang's ITL histogram adds the whole chunk interval to _sum but ``new_tokens`` observations
        of interval/new_tokens to the buckets, hence the two-argument form.
        """
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count if sum_add is None else sum_add

    @property
    def count(self) -> float:
        return sum(self.counts)

    def cumulative(self) -> list[float]:
        out, running = [], 0.0
        for c in self.counts:
            running += c
            out.append(running)
        return out


class Family:
    __slots__ = ("spec", "order", "children")

    def __init__(self, spec: FamilySpec, order: int) -> None:
        self.spec = spec
        self.order = order
        self.children: dict[str, ScalarChild | HistogramChild] = {}


class MetricRegistry:
    """Families of one engine's exposition: SGLang's by default, or another table (vLLM's)."""

    def __init__(self, families: tuple[FamilySpec, ...] | None = None, style: str = "sglang") -> None:
        self._families: dict[str, Family] = {}
        self._specs = (
            _SPECS if families is None else {spec.name: (i, spec) for i, spec in enumerate(families)}
        )
        self.style = style  # how enginescope.simfleet.exposition renders it

    def _child(self, name: str, labels: LabelSet) -> ScalarChild | HistogramChild:
        family = self._families.get(name)
        if family is None:
            if name not in self._specs:
                raise KeyError(f"unknown {self.style} metric family {name!r}")
            order, spec = self._specs[name]
            family = self._families[name] = Family(spec, order)
        child = family.children.get(labels.text)
        if child is None:
            if family.spec.kind == "histogram":
                child = HistogramChild(labels, family.spec.buckets)
            else:
                child = ScalarChild(labels)
            family.children[labels.text] = child
        return child

    def inc(self, name: str, labels: LabelSet, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"counter {name} cannot decrease (amount={amount})")
        self._child(name, labels).value += amount  # type: ignore[union-attr]

    def set(self, name: str, labels: LabelSet, value: float) -> None:
        self._child(name, labels).value = float(value)  # type: ignore[union-attr]

    def add(self, name: str, labels: LabelSet, amount: float) -> None:
        """Gauge add (livesum gauges such as http_requests_active)."""
        self._child(name, labels).value += amount  # type: ignore[union-attr]

    def observe(
        self, name: str, labels: LabelSet, value: float, count: float = 1.0, sum_add: float | None = None
    ) -> None:
        self._child(name, labels).observe(value, count, sum_add)  # type: ignore[union-attr]

    def touch(self, name: str, labels: LabelSet) -> None:
        """Create a zero child, as SGLang does for a few series up front."""
        self._child(name, labels)

    def value(self, name: str, labels: LabelSet) -> float | None:
        family = self._families.get(name)
        child = family.children.get(labels.text) if family else None
        return None if child is None or isinstance(child, HistogramChild) else child.value

    def histogram(self, name: str, labels: LabelSet) -> HistogramChild | None:
        family = self._families.get(name)
        child = family.children.get(labels.text) if family else None
        return child if isinstance(child, HistogramChild) else None

    def families(self) -> list[Family]:
        return sorted(self._families.values(), key=lambda f: f.order)
