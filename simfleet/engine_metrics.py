"""Records the simulated engine's events into SGLang 0.5.23's metric families.

Who records what mirrors SGLang: the tokenizer manager (request-level families, no rank labels),
every scheduler rank (per-request timing, decode CUDA-graph passes, retractions, time accounting,
the zero series created up front), only the stats-logging rank (tp_rank 0 of each DP group) for the
queue/KV gauges and the log-interval token counters, the radix cache (evictions), and the HTTP
middleware. Label sets are built once and reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginescope.simfleet.metric_registry import LabelSet, MetricRegistry
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.sgl_families import (
    GRAPH_PHASES,
    ROUTING_KEY_BOUNDS,
    SCHEDULER_GAUGE_NAMES,
    STAGE_CATEGORIES,
)
from enginescope.simfleet.sim_request import SimRequest

_GIB = float(1 << 30)
# Share of per-iteration scheduler overhead by loop stage (run_batch is the GPU time itself).
_OVERHEAD_SHARES = {
    "process_batch_result": 0.45,
    "other": 0.15,
    "get_next_batch_to_run": 0.15,
    "process_input_requests": 0.12,
    "recv_requests": 0.09,
    "process_queue": 0.04,
}

# Gauges a stats log writes (the ones set once at init come before num_running_reqs).
DYNAMIC_GAUGES = tuple(
    n
    for n in SCHEDULER_GAUGE_NAMES[SCHEDULER_GAUGE_NAMES.index("num_running_reqs") :]
    if not n.startswith("routing_key_")
)


@dataclass
class RankLabels:
    base: LabelSet
    pid: int
    logs_stats: bool
    radix: LabelSet | None = None


class EngineMetrics:
    def __init__(self, profile: EngineProfile, registry: MetricRegistry, pid_base: int) -> None:
        self.profile = profile
        self.reg = registry
        self.pid_base = pid_base
        tok = {"model_name": profile.model_name, "engine_type": "unified"}
        self.tok = LabelSet(tok)
        self.tok_stream = {
            s: LabelSet({**tok, "is_streaming": "true" if s else "false"}) for s in (True, False)
        }
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], LabelSet] = {}
        # --tokenizer-metrics-allowed-custom-labels: these x-custom-labels keys label tokenizer series
        allowed = profile.tokenizer_metrics_allowed_custom_labels.split(",")
        self.allowed_custom = tuple(name.strip() for name in allowed if name.strip())
        self.groups: list[list[RankLabels]] = [self._group_ranks(dp) for dp in range(profile.dp_size)]

    def _group_ranks(self, dp_rank: int) -> list[RankLabels]:
        p = self.profile
        ranks = []
        for pp in range(p.pp_size):
            for tp in range(p.tp_size):
                labels = {
                    "model_name": p.model_name,
                    "engine_type": "unified",
                    "tp_rank": str(tp),
                    "pp_rank": str(pp),
                    "moe_ep_rank": str(tp % p.ep_size),
                }
                if p.dp_size > 1:
                    labels["dp_rank"] = str(dp_rank)
                pid = self.pid_base + 1 + len(ranks) + dp_rank * p.tp_size * p.pp_size
                ranks.append(RankLabels(LabelSet(labels), pid, logs_stats=(tp == 0 and pp == 0)))
        return ranks

    def ls(self, base: LabelSet, **extra: str) -> LabelSet:
        key = (base.text, tuple(sorted(extra.items())))
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = base.with_extra(**extra)
        return found

    def _radix(self, rank: RankLabels, dp_rank: int) -> LabelSet:
        if rank.radix is None:
            pairs = dict(rank.base.pairs)
            rank.radix = LabelSet({"cache_type": "UnifiedRadixCache", "tp_rank": pairs["tp_rank"],
                                   "pp_rank": pairs["pp_rank"], "dp_rank": str(dp_rank)})  # fmt: skip
        return rank.radix

    # ---- startup -------------------------------------------------------------------------------
    def startup_phase(self, phase: str, seconds: float) -> None:
        self.reg.set("sglang:startup_time_seconds", self.ls(self.tok, phase=phase), round(seconds, 2))

    def cuda_graph_captured(self) -> None:
        p = self.profile
        captured = {"decode": p.cuda_graph_capture_s}
        if p.spec_enabled:
            captured["target_verify"] = round(p.cuda_graph_capture_s * 0.6, 2)
            captured["draft_decode"] = p.draft_cuda_graph_capture_s
            captured["draft_extend"] = round(p.draft_cuda_graph_capture_s * 0.3, 2)
        for phase in GRAPH_PHASES:
            self.reg.set(
                "sglang:startup_cuda_graph_time_seconds",
                self.ls(self.tok, phase=phase),
                captured.get(phase, 0.0),
            )

    def scheduler_ready(self) -> None:
        """Series SGLang's schedulers create or set once at the end of their init."""
        p = self.profile
        kv_gib = p.kv_capacity_tokens * p.kv_bytes_per_token / _GIB
        graph = {"decode": p.graph_memory_gb}
        if p.spec_enabled:
            graph.update(
                target_verify=round(p.graph_memory_gb * 0.8, 2),
                draft_decode=round(p.graph_memory_gb * 0.3, 2),
            )
        for _dp_rank, group in enumerate(self.groups):
            for rank in group:
                b = rank.base
                for mode in ("input", "device_hit", "host_hit", "storage_hit"):
                    self.reg.touch("sglang:prefill_effective_tokens_total", self.ls(b, mode=mode))
                self.reg.touch("sglang:scheduler_idle_seconds_total", b)
                self.reg.touch("sglang:scheduler_process_cpu_seconds_total", b)
                for category in STAGE_CATEGORIES:
                    self.reg.touch(
                        "sglang:scheduler_stage_seconds_total",
                        self.ls(b, category=category, forward_overlap="none"),
                    )
                for kind in ("scheduled", "imbalance"):
                    self.reg.touch("sglang:dp_attention_tokens_total", self.ls(b, kind=kind))
                for state in ("active", "idle"):
                    self.reg.touch("sglang:dp_attention_steps_total", self.ls(b, rank_state=state))
                for kind in ("scheduled", "imbalance"):
                    self.reg.touch("sglang:dp_attention_pairs_total", self.ls(b, kind=kind))
                self.reg.touch("sglang:dp_attention_token_imbalance_ratio", b)
                self.reg.touch("sglang:dp_attention_sync_wait_seconds", b)
                self.reg.set("sglang:max_total_num_tokens", b, p.kv_capacity_tokens)
                self.reg.set("sglang:weight_memory_usage_gb", b, p.weight_memory_gb)
                self.reg.set("sglang:kv_cache_memory_usage_gb", b, round(kv_gib, 2))
                for phase in GRAPH_PHASES:
                    self.reg.set(
                        "sglang:graph_memory_usage_gb", self.ls(b, phase=phase), graph.get(phase, 0.0)
                    )
                self.reg.set("sglang:page_size", b, p.page_size_tokens)
                self.reg.set("sglang:num_pages", b, p.kv_capacity_tokens // p.page_size_tokens)
                self.reg.set("sglang:context_len", b, p.context_len_tokens)
                self.reg.set("sglang:startup_available_gpu_memory_gb", b, round(p.gpu_memory_gb * 0.98275, 2))
                self.reg.set("sglang:num_retracted_reqs", self.ls(b, pid=str(rank.pid)), 0)
                self.reg.set("sglang:num_paused_reqs", self.ls(b, pid=str(rank.pid)), 0)

    # ---- scheduler side ------------------------------------------------------------------------
    def publish_gauges(self, dp_rank: int, gauges: dict[str, float], retracted_reqs: int = 0) -> None:
        """One stats report; ``retracted_reqs`` = retractions since the previous report."""
        for rank in self.groups[dp_rank]:
            if not rank.logs_stats:
                continue
            for name in DYNAMIC_GAUGES:
                self.reg.set(f"sglang:{name}", rank.base, gauges.get(name, 0.0))
            self.reg.set("sglang:num_retracted_reqs", self.ls(rank.base, pid=str(rank.pid)), retracted_reqs)
            for family in ("sglang:routing_key_running_req_count", "sglang:routing_key_all_req_count"):
                lower = "0"
                for upper in ROUTING_KEY_BOUNDS:
                    self.reg.set(family, self.ls(rank.base, gt=lower, le=upper), 0)
                    lower = upper

    def log_interval_tokens(
        self, dp_rank: int, prefill_compute: int, prefill_cache: int, decode: int
    ) -> None:
        for rank in self.groups[dp_rank]:
            if not rank.logs_stats:
                continue
            b = rank.base
            for mode, amount in (
                ("prefill_compute", prefill_compute),
                ("decode", decode),
                ("prefill_cache", prefill_cache),
            ):
                if amount:
                    self.reg.inc("sglang:realtime_tokens_total", self.ls(b, mode=mode), amount)
            self.reg.inc("sglang:prefill_effective_tokens_total", self.ls(b, mode="input"), prefill_compute)
            self.reg.inc(
                "sglang:prefill_effective_tokens_total", self.ls(b, mode="device_hit"), prefill_cache
            )

    def spec_verified(self, drafts: int, accepted: int) -> None:
        """SGLang has no per-position counter; the request export carries the histogram."""

    def forward_pass(
        self, dp_rank: int, prefill: bool, decode_batch: int, tokens: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        for rank in self.groups[dp_rank]:
            if prefill and rank.logs_stats:
                self.reg.inc("sglang:cuda_graph_passes_total", self.ls(rank.base, mode="prefill_none"))
            if decode_batch:
                graph = decode_batch <= self.profile.cuda_graph_max_bs
                mode = "decode_cuda_graph" if graph else "decode_none"
                self.reg.inc("sglang:cuda_graph_passes_total", self.ls(rank.base, mode=mode))

    def request_started(self, dp_rank: int, req: SimRequest, queue_time_s: float) -> None:
        for rank in self.groups[dp_rank]:
            self.reg.observe("sglang:queue_time_seconds", rank.base, queue_time_s)
            self.reg.observe(
                "sglang:per_stage_req_latency_seconds",
                self.ls(rank.base, stage="request_process"),
                req.tokenize_s,
            )

    def prefill_stage(self, dp_rank: int, stage: str, seconds: float) -> None:
        for rank in self.groups[dp_rank]:
            self.reg.observe("sglang:per_stage_req_latency_seconds", self.ls(rank.base, stage=stage), seconds)

    def retracted(self, dp_rank: int, reqs: list[SimRequest]) -> None:
        input_tokens = sum(r.prompt_tokens for r in reqs)
        output_tokens = sum(r.output_tokens for r in reqs)
        for rank in self.groups[dp_rank]:
            self.reg.inc("sglang:num_retracted_requests_total", rank.base, len(reqs))
            self.reg.inc("sglang:num_retracted_input_tokens_total", rank.base, input_tokens)
            self.reg.inc("sglang:num_retracted_output_tokens_total", rank.base, output_tokens)

    def evicted(self, dp_rank: int, tokens: int, seconds: float) -> None:
        for rank in self.groups[dp_rank]:
            radix = self._radix(rank, dp_rank)
            self.reg.inc("sglang:evicted_tokens_total", radix, tokens)
            self.reg.observe("sglang:eviction_duration_seconds", radix, seconds)

    def time_accounting(self, dp_rank: int, busy_s: float, overhead_s: float, idle_s: float) -> None:
        for rank in self.groups[dp_rank]:
            b = rank.base
            self.reg.inc("sglang:scheduler_idle_seconds_total", b, idle_s)
            # the scheduler busy-polls, so its CPU time tracks wall time
            self.reg.inc(
                "sglang:scheduler_process_cpu_seconds_total", b, 0.94 * (busy_s + overhead_s + idle_s)
            )
            stage = "sglang:scheduler_stage_seconds_total"
            self.reg.inc(stage, self.ls(b, category="run_batch", forward_overlap="none"), busy_s)
            self.reg.inc(stage, self.ls(b, category="idle", forward_overlap="none"), idle_s)
            for category, share in _OVERHEAD_SHARES.items():
                self.reg.inc(stage, self.ls(b, category=category, forward_overlap="none"), overhead_s * share)

    # ---- tokenizer side ------------------------------------------------------------------------
    def tok_labels(self, req: SimRequest | None, streaming: bool | None = None) -> LabelSet:
        """Tokenizer labels of ``req``: + is_streaming when given, + every allowed custom label
        (its value from the request's x-custom-labels header, "" when absent, as SGLang does)."""
        base = self.tok if streaming is None else self.tok_stream[streaming]
        if not self.allowed_custom:
            return base
        labels = (req.custom_labels or {}) if req is not None else {}
        return self.ls(base, **{name: labels.get(name, "") for name in self.allowed_custom})

    def first_token(self, req: SimRequest, ttft_s: float) -> None:
        self.reg.observe("sglang:time_to_first_token_seconds", self.tok_labels(req, req.stream), ttft_s)

    def output_chunk(self, req: SimRequest, interval_s: float, new_tokens: int) -> None:
        self.reg.observe(
            "sglang:inter_token_latency_seconds",
            self.tok_labels(req),
            interval_s / new_tokens,
            count=new_tokens,
            sum_add=interval_s,
        )

    def request_finished(self, req: SimRequest, e2e_s: float, tpot_s: float | None) -> None:
        labels = self.tok_labels(req, req.stream)
        tok = self.tok_labels(req)
        self.reg.observe("sglang:e2e_request_latency_seconds", labels, e2e_s)
        if tpot_s is not None:
            self.reg.observe("sglang:request_time_per_output_token_seconds", labels, tpot_s)
        self.reg.observe("sglang:prompt_tokens_histogram", tok, req.prompt_tokens)
        self.reg.observe(
            "sglang:uncached_prompt_tokens_histogram", tok, req.prompt_tokens - req.cached_tokens
        )
        self.reg.observe("sglang:generation_tokens_histogram", tok, req.output_tokens)
        self.reg.inc("sglang:prompt_tokens_total", labels, req.prompt_tokens)
        self.reg.inc("sglang:generation_tokens_total", labels, req.output_tokens)
        self.reg.inc("sglang:num_requests_total", labels)
        if req.cached_tokens:
            self.reg.inc("sglang:cached_tokens_total", self.ls(tok, cache_source="device"), req.cached_tokens)
        if req.structured:
            self.reg.inc("sglang:num_so_requests_total", tok)
        if req.spec_verify_ct:
            self.reg.inc("sglang:spec_verify_calls_total", tok, req.spec_verify_ct)

    def request_aborted(self, req: SimRequest | None = None) -> None:
        self.reg.inc("sglang:num_aborted_requests_total", self.tok_labels(req))

    def process_cpu(self, tokenizer_s: float, detokenizer_s: float) -> None:
        empty = LabelSet({})
        self.reg.inc(
            "sglang:process_cpu_seconds_total", self.ls(empty, component="detokenizer"), detokenizer_s
        )
        self.reg.inc("sglang:process_cpu_seconds_total", self.ls(empty, component="tokenizer"), tokenizer_s)

    # ---- HTTP middleware -----------------------------------------------------------------------
    def http_started(self, endpoint: str, method: str) -> None:
        labels = LabelSet({"endpoint": endpoint, "method": method})
        self.reg.touch("sglang:routing_keys_active", LabelSet({}))
        self.reg.add("sglang:http_requests_active", self.ls(labels), 1.0)
        self.reg.inc("sglang:http_requests_total", self.ls(labels))

    def http_finished(self, endpoint: str, method: str, status: int, duration_s: float = 0.0) -> None:
        labels = LabelSet({"endpoint": endpoint, "method": method})
        self.reg.add("sglang:http_requests_active", self.ls(labels), -1.0)
        self.reg.inc("sglang:http_responses_total", self.ls(labels, status_code=str(status)))
