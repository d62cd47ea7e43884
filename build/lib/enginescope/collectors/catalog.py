"""Engine catalogues: SGLang 0.5.x and vLLM v1 metric families -> canonical signals.

Family names here are as the parser names them (counters without ``_total``) with the
``sglang:``/``vllm:`` prefix; ``sglang_``/``vllm_`` spellings are folded onto them.
For each signal the rules are tried in order and the first whose family is present wins.

Aggregation across the series of one replica (documented choices):

- ``sum_dp``: ranks that mirror one scheduler's state (``tp_rank``, ``pp_rank``,
  ``moe_ep_rank``, ``attn_*``, ``pid``) are collapsed with max (only rank 0 updates, the others
  read 0, or all read the same with ``--enable-metrics-for-all-schedulers``), then the groups
  left (``dp_rank``, vLLM ``engine``, ``is_streaming``, ...) are summed. Used for queue and
  running requests, engine throughput and every counter increase.
- ``max``: usage ratios and startup durations (the fullest pool / the slowest phase).
- ``mean``: SGLang's per-rank cache-hit-rate gauge (fallback only).
- ``mean_nonzero``: SGLang spec gauges (0 means spec decoding off or no verify step in the
  window on that rank; no row when every rank reads 0).
- SGLang priority scheduling writes a ``priority=""`` total plus per-priority children: with a
  ``priority`` label present only the total is used (``total_only``).
- Ratios of counter increases (windowed cache hit ratio, vLLM spec decode) produce no row in an
  interval whose denominator did not grow (no traffic is not a ratio of 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from enginescope.collectors.model import Labels
from enginescope.collectors.signals import Kind, names

# Signal tuples by kind, from the one registry (collectors/signals.py).
HISTOGRAM_SIGNALS = names(Kind.HISTOGRAM)
GAUGE_SIGNALS = names(Kind.GAUGE)
COUNTER_SIGNALS = names(Kind.COUNTER)
ENGINES = ("sglang", "vllm")
REPLICA_LABELS = frozenset({"tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank", "attn_cp_rank", "pid"})

Filter = tuple[tuple[str, tuple[str, ...]], ...]  # (label, allowed values)
Series = tuple[Labels, float]  # (labels, value or delta)


@dataclass(frozen=True, slots=True)
class Rule:
    """A signal read from one family: gauge values or counter increases, filtered, aggregated."""

    signal: str
    family: str
    kind: str  # "gauge" | "counter"
    agg: str = "sum_dp"
    where: Filter = ()
    exclude: Filter = ()
    total_only: bool = False

    @property
    def families(self) -> tuple[str, ...]:
        return (self.family,)


@dataclass(frozen=True, slots=True)
class RatioRule:
    """offset + Σ increase(numerator) / Σ increase(denominator), when the denominator grew."""

    signal: str
    numerator: str
    denominator: str
    numerator_where: Filter = ()
    offset: float = 0.0

    @property
    def families(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)


@dataclass(frozen=True, slots=True)
class Catalog:
    engine: str
    histograms: dict[str, str]  # family -> histogram signal
    rules: tuple[Rule | RatioRule, ...]  # in priority order per signal

    def wanted_families(self) -> frozenset[str]:
        return frozenset(f for rule in self.rules for f in rule.families)

    def signals(
        self, present: set[str], gauges: dict[str, list[Series]], increases: dict[str, list[Series]]
    ) -> list[tuple[str, float]]:
        """Canonical scalars of one scrape.

        ``present``: canonical family names in the scrape; ``gauges``: their values;
        ``increases``: counter increases (empty on the baseline scrape). A signal uses its first
        rule whose families are present, even when that rule has no value this time.
        """
        done: set[str] = set()
        out: list[tuple[str, float]] = []
        for rule in self.rules:
            if rule.signal in done or not all(f in present for f in rule.families):
                continue
            done.add(rule.signal)
            value = _evaluate(rule, gauges, increases)
            if value is not None:
                out.append((rule.signal, value))
        return out


def _evaluate(
    rule: Rule | RatioRule, gauges: dict[str, list[Series]], increases: dict[str, list[Series]]
) -> float | None:
    if isinstance(rule, RatioRule):
        if rule.numerator not in increases or rule.denominator not in increases:
            return None
        return _ratio(rule, increases)
    source = increases if rule.kind == "counter" else gauges
    series = source.get(rule.family)
    return _apply(rule, series) if series is not None else None


def canonical_family(name: str) -> str:
    """Fold ``sglang_x``/``vllm_x`` onto ``sglang:x``/``vllm:x``."""
    for engine in ENGINES:
        if name.startswith(engine + "_"):
            return engine + ":" + name[len(engine) + 1 :]
    return name


def detect_engine(family_names: Iterable[str]) -> str:
    """ "sglang" | "vllm" | "unknown" by which prefix most families carry."""
    counts = dict.fromkeys(ENGINES, 0)
    for name in family_names:
        head = name[:7]
        if head.startswith(("sglang:", "sglang_")):
            counts["sglang"] += 1
        elif head.startswith(("vllm:", "vllm_")):
            counts["vllm"] += 1
    best = max(ENGINES, key=lambda e: counts[e])
    return best if counts[best] else "unknown"


def catalog_for(engine: str) -> Catalog:
    return _CATALOGS.get(engine, _EMPTY)


def _matches(labels: Labels, where: Filter, exclude: Filter) -> bool:
    values = dict(labels)
    if any(values.get(name) not in allowed for name, allowed in where):
        return False
    return not any(values.get(name) in banned for name, banned in exclude)


def _select(rule: Rule, series: list[Series]) -> list[Series]:
    chosen = [s for s in series if s[1] == s[1] and _matches(s[0], rule.where, rule.exclude)]  # drop NaN
    if rule.total_only and any(name == "priority" for labels, _ in chosen for name, _ in labels):
        chosen = [s for s in chosen if ("priority", "") in s[0]]
    return chosen


def _apply(rule: Rule, series: list[Series]) -> float | None:
    chosen = _select(rule, series)
    return _AGGREGATORS[rule.agg](chosen) if chosen else None


def _ratio(rule: RatioRule, increases: dict[str, list[Series]]) -> float | None:
    numerator = sum_dp([s for s in increases[rule.numerator] if _matches(s[0], rule.numerator_where, ())])
    denominator = sum_dp(increases[rule.denominator])
    if not denominator or denominator <= 0:
        return None
    return rule.offset + numerator / denominator


def rank_groups(series: list[Series]) -> list[float]:
    """One value per group of mirroring ranks (their max); see the module docstring."""
    groups: dict[Labels, float] = {}
    for labels, value in series:
        group = tuple(p for p in labels if p[0] not in REPLICA_LABELS)
        previous = groups.get(group)
        if previous is None or value > previous:
            groups[group] = value
    return list(groups.values())


def sum_dp(series: list[Series]) -> float:
    """Max within a group of mirroring ranks, summed across the remaining groups."""
    return sum(rank_groups(series))


def _mean(series: list[Series]) -> float:
    values = rank_groups(series)
    return sum(values) / len(values)


def _mean_nonzero(series: list[Series]) -> float | None:
    nonzero = [v for v in rank_groups(series) if v]
    return sum(nonzero) / len(nonzero) if nonzero else None


_AGGREGATORS: dict[str, Callable[[list[Series]], float | None]] = {
    "sum_dp": sum_dp,
    "max": lambda series: max(v for _, v in series),
    "mean": _mean,
    "mean_nonzero": _mean_nonzero,
}

_PROCESSING_HITS = ("device_hit", "host_hit", "storage_hit")

SGLANG = Catalog(
    engine="sglang",
    histograms={
        "sglang:time_to_first_token_seconds": "ttft_seconds",
        "sglang:inter_token_latency_seconds": "itl_seconds",
        "sglang:request_time_per_output_token_seconds": "tpot_seconds",
        "sglang:time_per_output_token_seconds": "tpot_seconds",  # name before 0.5
        "sglang:e2e_request_latency_seconds": "e2e_seconds",
        "sglang:queue_time_seconds": "queue_time_seconds",
    },
    rules=(
        Rule("queue_depth", "sglang:num_queue_reqs", "gauge", total_only=True),
        Rule("running_requests", "sglang:num_running_reqs", "gauge", total_only=True),
        Rule("kv_usage_ratio", "sglang:token_usage", "gauge", "max"),
        RatioRule(
            "cache_hit_ratio",
            "sglang:prefill_effective_tokens",
            "sglang:prefill_effective_tokens",
            numerator_where=(("mode", _PROCESSING_HITS),),
        ),
        Rule("cache_hit_ratio", "sglang:cache_hit_rate", "gauge", "mean"),
        Rule("spec_accept_length", "sglang:spec_accept_length", "gauge", "mean_nonzero"),
        Rule("spec_accept_rate", "sglang:spec_accept_rate", "gauge", "mean_nonzero"),
        Rule("gen_throughput_tps", "sglang:gen_throughput", "gauge"),
        Rule("startup_seconds", "sglang:startup_time_seconds", "gauge", "max"),
        Rule("weight_load_seconds", "sglang:weight_load_duration_seconds", "gauge", "max"),
        Rule(
            "weight_load_seconds",
            "sglang:startup_time_seconds",
            "gauge",
            "max",
            where=(("phase", ("load_weight",)),),
        ),
        Rule("prompt_tokens", "sglang:prompt_tokens", "counter"),
        Rule("generation_tokens", "sglang:generation_tokens", "counter"),
        Rule("requests_finished", "sglang:num_requests", "counter"),
        Rule("requests_aborted", "sglang:num_aborted_requests", "counter"),
        Rule("retractions", "sglang:num_retracted_requests", "counter"),
        Rule("cached_tokens", "sglang:cached_tokens", "counter"),
    ),
)

VLLM = Catalog(
    engine="vllm",
    histograms={
        "vllm:time_to_first_token_seconds": "ttft_seconds",
        "vllm:inter_token_latency_seconds": "itl_seconds",
        "vllm:time_per_output_token_seconds": "itl_seconds",  # pre-v1 name; it was per-step ITL
        "vllm:request_time_per_output_token_seconds": "tpot_seconds",
        "vllm:e2e_request_latency_seconds": "e2e_seconds",
        "vllm:request_queue_time_seconds": "queue_time_seconds",
    },
    rules=(
        Rule("queue_depth", "vllm:num_requests_waiting", "gauge"),
        Rule("running_requests", "vllm:num_requests_running", "gauge"),
        Rule("kv_usage_ratio", "vllm:kv_cache_usage_perc", "gauge", "max"),
        Rule("kv_usage_ratio", "vllm:gpu_cache_usage_perc", "gauge", "max"),  # pre-0.10 name
        RatioRule("cache_hit_ratio", "vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
        RatioRule("cache_hit_ratio", "vllm:gpu_prefix_cache_hits", "vllm:gpu_prefix_cache_queries"),
        RatioRule(
            "spec_accept_length",
            "vllm:spec_decode_num_accepted_tokens",
            "vllm:spec_decode_num_drafts",
            offset=1.0,
        ),
        RatioRule(
            "spec_accept_rate", "vllm:spec_decode_num_accepted_tokens", "vllm:spec_decode_num_draft_tokens"
        ),
        Rule("prompt_tokens", "vllm:prompt_tokens", "counter"),
        Rule("generation_tokens", "vllm:generation_tokens", "counter"),
        Rule(
            "requests_finished", "vllm:request_success", "counter", exclude=(("finished_reason", ("abort",)),)
        ),
        Rule("requests_aborted", "vllm:request_success", "counter", where=(("finished_reason", ("abort",)),)),
        Rule("retractions", "vllm:num_preemptions", "counter"),
        Rule("cached_tokens", "vllm:prompt_tokens_cached", "counter"),
        Rule("cached_tokens", "vllm:prefix_cache_hits", "counter"),  # before prompt_tokens_cached
    ),
)

_EMPTY = Catalog(engine="unknown", histograms={}, rules=())
_CATALOGS = {"sglang": SGLANG, "vllm": VLLM}
