"""A simulated vLLM 0.33.0 (V1) engine: the same queueing model, vLLM's metrics and HTTP quirks.

Select it per recipe with ``[engine] name = "vllm"`` (the profile's ``engine = "vllm"``). The
scheduler, KV cache, preemption (SGLang's retraction), speculative decoding and the HTTP API are
shared with the SGLang simulation; what differs is what the engine reports:

* families, labels and buckets of ``enginescope.simfleet.vllm_families``: ``model_name`` and
  ``engine="0"`` on every ``vllm:`` series, counters exposed with ``_total`` plus a ``_created``
  gauge family each (vLLM runs prometheus_client without multiprocess mode), histograms rendered
  buckets, ``_count``, ``_sum``; ``text/plain; version=1.0.0`` whatever the Accept header says;
* gauges (``num_requests_running``/``waiting``, ``kv_cache_usage_perc``) written on every stats
  report; requests counted in ``request_success_total{finished_reason}`` (aborts included);
  per-request phase histograms (queue, prefill, decode, inference) observed at finish;
* ITL observed once per engine step per request (not divided by the tokens of an accepted
  speculative block, unlike SGLang), TTFT without ``is_streaming``;
* speculative decoding as counters: drafts, draft tokens, accepted tokens and accepted tokens per
  draft position (``position`` label), from which rate and mean length are derived;
* HTTP metrics from prometheus_fastapi_instrumentator (``handler``/``method``/``status="2xx"``),
  which skips /metrics, /health, /version;
* no per-request export file: vLLM has no equivalent of SGLang's ``--export-metrics-to-file``, so a
  vLLM replica's ``requests`` view stays empty.
"""

from __future__ import annotations

from enginescope.simfleet.gpus import implied_mem_fraction
from enginescope.simfleet.metric_registry import (
    Family,
    HistogramChild,
    LabelSet,
    MetricRegistry,
    float_to_go_string,
)
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.sim_request import SimRequest
from enginescope.simfleet.vllm_families import (
    CACHED_SOURCES,
    FAMILIES,
    FINISHED_REASONS,
    PROMPT_SOURCES,
    SLEEP_STATES,
    UNINSTRUMENTED,
)

VLLM_VERSION = "0.33.0"
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block on CUDA
_HISTOGRAMS = tuple(
    spec.name for spec in FAMILIES if spec.kind == "histogram" and spec.name.startswith("vllm:")
)


def new_registry() -> MetricRegistry:
    return MetricRegistry(FAMILIES, style="vllm")


class VllmMetrics:
    """Records the shared engine's events into vLLM's families (same hooks as ``EngineMetrics``)."""

    def __init__(self, profile: EngineProfile, registry: MetricRegistry, pid_base: int) -> None:
        self.profile = profile
        self.reg = registry
        self.base = LabelSet({"engine": "0", "model_name": profile.model_name})
        self._cache: dict[tuple[tuple[str, str], ...], LabelSet] = {}
        self.groups: list[list[object]] = [[] for _ in range(profile.dp_size)]  # no per-rank series
        self._first_tokens = 0

    def ls(self, **extra: str) -> LabelSet:
        key = tuple(sorted(extra.items()))
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self.base.with_extra(**extra)
        return found

    # ---- startup: vLLM creates its series when the engine core is up -----------------------------
    def startup_phase(self, phase: str, seconds: float) -> None:
        """vLLM exports no startup-phase gauges."""

    def cuda_graph_captured(self) -> None:
        """vLLM exports no graph-capture gauges."""

    def scheduler_ready(self) -> None:
        p, reg, b = self.profile, self.reg, self.base
        for name in (
            "estimated_flops_per_gpu",
            "estimated_read_bytes_per_gpu",
            "estimated_write_bytes_per_gpu",
        ):
            reg.touch(f"vllm:{name}_total", b)
        reg.set("vllm:num_requests_running", b, 0)
        reg.set("vllm:num_requests_waiting", b, 0)
        for reason in ("capacity", "deferred"):
            reg.set("vllm:num_requests_waiting_by_reason", self.ls(reason=reason), 0)
        for state in SLEEP_STATES:
            reg.set("vllm:engine_sleep_state", self.ls(sleep_state=state), 1.0 if state == "awake" else 0.0)
        reg.set("vllm:kv_cache_usage_perc", b, 0.0)
        for name in ("prefix_cache_queries", "prefix_cache_hits", "external_prefix_cache_queries",
                     "external_prefix_cache_hits", "mm_cache_queries", "mm_cache_hits", "num_preemptions",
                     "prompt_tokens"):  # fmt: skip
            reg.touch(f"vllm:{name}_total", b)
        for source in PROMPT_SOURCES:
            reg.touch("vllm:prompt_tokens_by_source_total", self.ls(source=source))
        reg.touch("vllm:prompt_tokens_cached_total", b)
        for source in CACHED_SOURCES:
            reg.touch("vllm:prompt_tokens_cached_by_source_total", self.ls(source=source))
        reg.touch("vllm:generation_tokens_total", b)
        for reason in FINISHED_REASONS:
            reg.touch("vllm:request_success_total", self.ls(finished_reason=reason))
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            reg.touch(
                "vllm:admission_rejections_total", LabelSet({"model_name": p.model_name, "reason": reason})
            )
        if p.spec_enabled:
            for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
                reg.touch(f"vllm:spec_decode_{name}_total", b)
            for position in range(p.spec_drafts):
                reg.touch(
                    "vllm:spec_decode_num_accepted_tokens_per_pos_total", self.ls(position=str(position))
                )
        for name in _HISTOGRAMS:
            reg.touch(name, b)
        reg.set("vllm:cache_config_info", self._cache_config(), 1.0)

    def _cache_config(self) -> LabelSet:
        p = self.profile
        info = {"block_size": str(BLOCK_SIZE_TOKENS), "cache_dtype": "auto", "enable_prefix_caching": "True",
                "engine": "0", "gpu_memory_utilization": f"{implied_mem_fraction(p):.2g}",
                "num_cpu_blocks": "None", "num_gpu_blocks": str(p.kv_capacity_tokens // BLOCK_SIZE_TOKENS),
                "sliding_window": "None"}  # fmt: skip
        return LabelSet(info)

    # ---- scheduler side ------------------------------------------------------------------------
    def publish_gauges(self, dp_rank: int, gauges: dict[str, float], retracted_reqs: int = 0) -> None:
        b = self.base
        self.reg.set("vllm:num_requests_running", b, gauges.get("num_running_reqs", 0.0))
        waiting = gauges.get("num_queue_reqs", 0.0)
        self.reg.set("vllm:num_requests_waiting", b, waiting)
        self.reg.set("vllm:num_requests_waiting_by_reason", self.ls(reason="capacity"), waiting)
        self.reg.set("vllm:kv_cache_usage_perc", b, gauges.get("full_token_usage", 0.0))

    def log_interval_tokens(
        self, dp_rank: int, prefill_compute: int, prefill_cache: int, decode: int
    ) -> None:
        """vLLM counts tokens per engine step (forward_pass), not per stats-log interval."""

    def forward_pass(
        self, dp_rank: int, prefill: bool, decode_batch: int, tokens: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        """One engine step: ``tokens`` = (prefill computed, prefill from cache, decoded)."""
        prefill_compute, prefill_cache, decode = tokens
        reg, b = self.reg, self.base
        if prefill_compute + decode:
            reg.observe("vllm:iteration_tokens_total", b, prefill_compute + decode)
        prompt = prefill_compute + prefill_cache
        if prompt:
            reg.inc("vllm:prompt_tokens_total", b, prompt)
            reg.inc("vllm:prompt_tokens_by_source_total", self.ls(source="local_compute"), prefill_compute)
            reg.inc("vllm:prompt_tokens_by_source_total", self.ls(source="local_cache_hit"), prefill_cache)
            reg.inc("vllm:prefix_cache_queries_total", b, prompt)
            reg.inc("vllm:prefix_cache_hits_total", b, prefill_cache)
            reg.inc("vllm:prompt_tokens_cached_total", b, prefill_cache)
            reg.inc("vllm:prompt_tokens_cached_by_source_total", self.ls(source="device"), prefill_cache)
        # the token sampled at the end of a prefill is a generation token too
        reg.inc("vllm:generation_tokens_total", b, decode + self._first_tokens)
        self._first_tokens = 0

    def request_started(self, dp_rank: int, req: SimRequest, queue_time_s: float) -> None:
        """vLLM observes the queue phase at finish (with the other phases)."""

    def prefill_stage(self, dp_rank: int, stage: str, seconds: float) -> None:
        """No per-stage histogram in vLLM."""

    def retracted(self, dp_rank: int, reqs: list[SimRequest]) -> None:
        self.reg.inc("vllm:num_preemptions_total", self.base, len(reqs))

    def evicted(self, dp_rank: int, tokens: int, seconds: float) -> None:
        """vLLM exports no eviction series."""

    def time_accounting(self, dp_rank: int, busy_s: float, overhead_s: float, idle_s: float) -> None:
        """vLLM exports no scheduler time accounting."""

    def spec_verified(self, drafts: int, accepted: int) -> None:
        reg, b = self.reg, self.base
        reg.inc("vllm:spec_decode_num_drafts_total", b)
        reg.inc("vllm:spec_decode_num_draft_tokens_total", b, drafts)
        reg.inc("vllm:spec_decode_num_accepted_tokens_total", b, accepted)
        for position in range(accepted):
            reg.inc("vllm:spec_decode_num_accepted_tokens_per_pos_total", self.ls(position=str(position)))

    # ---- front-end side ------------------------------------------------------------------------
    def first_token(self, req: SimRequest, ttft_s: float) -> None:
        self.reg.observe("vllm:time_to_first_token_seconds", self.base, ttft_s)
        self._first_tokens += 1

    def output_chunk(self, req: SimRequest, interval_s: float, new_tokens: int) -> None:
        self.reg.observe("vllm:inter_token_latency_seconds", self.base, interval_s)  # one per engine step

    def request_finished(self, req: SimRequest, e2e_s: float, tpot_s: float | None) -> None:
        reg, b = self.reg, self.base
        reason = (req.finish_reason or {}).get("type", "stop")
        reg.inc("vllm:request_success_total", self.ls(finished_reason=reason))
        reg.observe("vllm:e2e_request_latency_seconds", b, e2e_s)
        if tpot_s is not None:
            reg.observe("vllm:request_time_per_output_token_seconds", b, tpot_s)
        reg.observe("vllm:request_prompt_tokens", b, req.prompt_tokens)
        reg.observe("vllm:request_generation_tokens", b, req.output_tokens)
        reg.observe("vllm:request_max_num_generation_tokens", b, req.max_new_tokens)
        reg.observe("vllm:request_params_n", b, 1)
        reg.observe("vllm:request_params_max_tokens", b, req.max_new_tokens)
        reg.observe("vllm:request_num_preemptions", b, req.retractions)
        reg.observe("vllm:request_prefill_kv_computed_tokens", b, req.prompt_tokens - req.cached_tokens)
        reg.observe("vllm:request_queue_time_seconds", b, req.queue_time_total_s)
        if req.forward_entry_s is not None and req.finished_s is not None:
            prefill_end_s = req.prefill_finished_s or req.finished_s
            reg.observe("vllm:request_prefill_time_seconds", b, prefill_end_s - req.forward_entry_s)
            reg.observe("vllm:request_decode_time_seconds", b, req.finished_s - prefill_end_s)
            reg.observe("vllm:request_inference_time_seconds", b, req.finished_s - req.forward_entry_s)

    def request_aborted(self, req: SimRequest | None = None) -> None:
        self.reg.inc("vllm:request_success_total", self.ls(finished_reason="abort"))

    def process_cpu(self, tokenizer_s: float, detokenizer_s: float) -> None:
        """prometheus_client's process collector is not simulated."""

    def http_started(self, endpoint: str, method: str) -> None:
        """The instrumentator records on completion only."""

    def http_finished(self, endpoint: str, method: str, status: int, duration_s: float = 0.0) -> None:
        if endpoint in UNINSTRUMENTED:
            return
        group = f"{status // 100}xx"
        self.reg.inc(
            "http_requests_total", LabelSet({"handler": endpoint, "method": method, "status": group})
        )
        self.reg.observe("http_request_duration_highr_seconds", LabelSet({}), duration_s)
        self.reg.observe("http_request_duration_seconds", LabelSet({"handler": endpoint, "method": method}),
                         duration_s)  # fmt: skip


def render_text(registry: MetricRegistry) -> str:
    """prometheus_client 0.26's text exposition without multiprocess mode, as vLLM serves it."""
    out: list[str] = []
    fmt = float_to_go_string
    for family in registry.families():
        spec = family.spec
        out.append(f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.kind}\n")
        for child in family.children.values():
            if isinstance(child, HistogramChild):
                running = 0.0
                for braces, count in zip(child.bucket_braces, child.counts, strict=True):
                    running += count
                    out.append(f"{spec.name}_bucket{braces} {fmt(running)}\n")
                out.append(f"{spec.name}_count{child.braces} {fmt(running)}\n")
                out.append(f"{spec.name}_sum{child.braces} {fmt(child.sum)}\n")
            else:
                out.append(f"{spec.name}{child.braces} {fmt(child.value)}\n")
        if spec.kind in ("counter", "histogram"):
            _created(family, out)
    return "".join(out)


def _created(family: Family, out: list[str]) -> None:
    spec = family.spec
    name = (spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name) + "_created"
    out.append(f"# HELP {name} {spec.help}\n# TYPE {name} gauge\n")
    for child in family.children.values():
        out.append(f"{name}{child.braces} {float_to_go_string(child.created_s)}\n")
