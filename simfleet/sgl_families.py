"""SGLang 0.5.23 metric families as its /metrics endpoint exposes them.

Names, types, HELP texts and default buckets follow the SGLang 0.5.23 wheel's
``sglang/srt/observability/metrics_collector.py`` and the real 0.5.23 single-GPU exposition
(``tests/fixtures/sglang/``). The list order is the order the real multiprocess collector
emitted families in (grouped by process and file kind: tokenizer histograms, livesum gauges,
scheduler counters/histograms/gauges, tokenizer gauges, pid gauges, tokenizer counters); families
the fixture lacks sit in the group of the process that records them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilySpec:
    name: str  # as registered; counters end in _total
    kind: str  # counter | gauge | histogram
    help: str
    buckets: tuple[float, ...] = ()  # histograms only, ascending, without +Inf


TTFT_BUCKETS_S = (
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    2.0,
    4.0,
    6.0,
    8.0,
    10.0,
    20.0,
    40.0,
    60.0,
    80.0,
    100.0,
    200.0,
    400.0,
)
E2E_BUCKETS_S = TTFT_BUCKETS_S + (600.0, 1200.0, 1800.0, 2400.0)
ITL_BUCKETS_S = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
    0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0, 6.0, 8.0,
)  # fmt: skip
QUEUE_BUCKETS_S = (
    (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0)
    + tuple(float(v) for v in range(30, 101, 10))
    + tuple(float(v) for v in range(200, 1001, 100))
    + (1200.0, 1400.0, 1600.0, 1800.0, 2000.0, 2500.0, 3000.0)
)
TOKEN_BUCKETS = (
    (100.0, 300.0, 500.0, 700.0, 1000.0, 1500.0)
    + tuple(float(v) for v in range(2000, 10001, 1000))
    + (12500.0, 15000.0, 17500.0, 20000.0, 22500.0, 25000.0, 27500.0, 30000.0, 35000.0, 40000.0)
    + (60000.0, 80000.0, 100000.0, 200000.0, 300000.0, 400000.0, 600000.0, 800000.0, 1e6, 1.1e6)
)
PER_STAGE_BUCKETS_S = tuple(0.001 * 1.62**i for i in range(30))
DP_IMBALANCE_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
DP_SYNC_WAIT_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
EVICTION_BUCKETS_S = tuple(i / 1000 for i in range(1, 10)) + (
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)
ROUTING_KEY_BOUNDS = ("1", "2", "3", "5", "7", "10", "20", "50", "100", "200", "+Inf")

STARTUP_PHASES = ("load_weight", "kv_cache_allocation", "scheduler_e2e", "tokenizer_e2e")
GRAPH_PHASES = ("prefill", "decode", "target_verify", "draft_prefill", "draft_decode", "draft_extend")
STAGE_CATEGORIES = (
    "other", "recv_requests", "process_input_requests", "get_next_batch_to_run", "process_queue",
    "run_batch", "process_batch_result", "sanity_check_cache", "idle",
)  # fmt: skip
HTTP_ENDPOINTS = ("/health", "/health_generate", "/v1/models", "/v1/chat/completions", "/v1/completions",
                  "/generate", "/metrics", "/get_server_info")  # fmt: skip

_SCHED_GAUGES: tuple[tuple[str, str], ...] = (
    ("max_total_num_tokens", "Maximum total number of tokens in the KV cache pool."),
    ("weight_memory_usage_gb", "Memory used by model weights in GB."),
    ("kv_cache_memory_usage_gb", "Memory used by the KV cache pools in GB."),
    ("graph_memory_usage_gb", "Memory used by captured device graphs in GB."),
    ("page_size", "KV cache page size in tokens."),
    ("num_pages", "Number of KV cache pages."),
    ("context_len", "Maximum context length."),
    ("startup_available_gpu_memory_gb", "Available GPU memory in GB at startup."),
    ("num_running_reqs", "The number of running requests."),
    ("num_queue_reqs", "The number of requests in the waiting queue."),
    ("num_grammar_queue_reqs", "The number of requests in the grammar waiting queue."),
    ("gen_throughput", "The generation throughput (token/s)."),
    ("cache_hit_rate", "The prefix cache hit rate."),
    ("decode_sum_seq_lens", "The sum of all sequence lengths in decode."),
    ("token_usage", "The token usage."),
    ("full_token_usage", "The token usage for full attention layers."),
    ("swa_token_usage", "The token usage for SWA layers."),
    ("mamba_usage", "The token usage for Mamba layers."),
    ("num_used_tokens", "The number of used tokens."),
    ("kv_available_tokens", "Number of free token slots in the KV cache pool."),
    ("kv_evictable_tokens", "Number of evictable (radix-cached) token slots in the KV cache pool."),
    ("kv_used_tokens", "Number of actively used token slots in the KV cache pool."),
    ("swa_available_tokens", "Number of free token slots in the SWA pool (hybrid-SWA only)."),
    ("swa_evictable_tokens", "Number of evictable (radix-cached) token slots in the SWA pool."),
    ("swa_used_tokens", "Number of actively used token slots in the SWA pool."),
    ("mamba_available_tokens", "Number of free state slots in the mamba SSM pool (hybrid-SSM only)."),
    ("mamba_evictable_tokens", "Number of evictable (radix-cached) state slots in the mamba SSM pool."),
    ("mamba_used_tokens", "Number of actively used state slots in the mamba SSM pool."),
    ("spec_accept_length", "Mean acceptance length of speculative decoding (accepted drafts + bonus token per forward)."),
    ("spec_accept_rate", "Speculative acceptance rate (`accepted drafts / proposed drafts` in batch)."),
    ("spec_cap_length", "Mean DSpark confidence-scheduled verify window per verify step, incl the bonus slot (0 when no cap is scheduled)."),
    ("spec_block_accept_length", "Mean uncapped full-block accept length per verify step (accept + cap-trimmed drafts; exact only in DSpark cap-accept mode)."),
    ("spec_num_steps", "Currently active speculative_num_steps."),
    ("spec_num_draft_tokens", "Currently active speculative_num_draft_tokens (decouples from steps under topk>1)."),
    ("num_prefill_bootstrap_queue_reqs", "The number of requests in the prefill bootstrap queue."),
    ("num_prefill_inflight_queue_reqs", "The number of requests in the prefill inflight queue."),
    ("num_decode_prealloc_queue_reqs", "The number of requests in the decode prealloc queue."),
    ("num_decode_transfer_queue_reqs", "The number of requests in the decode transfer queue."),
    ("num_decode_host_receive_queue_reqs", "Requests in the decode transfer queue receiving into host memory or waiting for device admission."),
    ("num_decode_deferred_kv_release_reqs", "The number of failed decode requests whose KV allocations are held pending transfer drain acknowledgement or timeout."),
    ("pending_prealloc_token_usage", "The token usage for pending preallocated tokens (not preallocated yet)."),
    ("prealloc_full_token_usage", "Share of the full-attention KV pool held by decode requests whose KV transfer is pending (preallocated, not yet running); same capacity basis as sglang:full_token_usage."),
    ("prealloc_swa_token_usage", "Share of the SWA KV pool held by decode requests whose KV transfer is pending; same capacity basis as sglang:swa_token_usage."),
    ("utilization", "The utilization."),
    ("fwd_occupancy", "Forward pass GPU occupancy percentage."),
    ("new_token_ratio", "The new token ratio."),
    ("is_cuda_graph", "Whether the batch is using CUDA graph."),
    ("num_unique_running_routing_keys", "Number of unique routing keys in running batch."),
    ("routing_key_running_req_count", "Distribution of routing keys by running request count (gt < count <= le)."),
    ("routing_key_all_req_count", "Distribution of routing keys by running+waiting request count (gt < count <= le)."),
)  # fmt: skip


def _c(name: str, help_text: str) -> FamilySpec:
    return FamilySpec(f"sglang:{name}", "counter", help_text)


def _g(name: str, help_text: str) -> FamilySpec:
    return FamilySpec(f"sglang:{name}", "gauge", help_text)


def _h(name: str, help_text: str, buckets: tuple[float, ...]) -> FamilySpec:
    return FamilySpec(f"sglang:{name}", "histogram", help_text, buckets)


FAMILIES: tuple[FamilySpec, ...] = (
    _c("process_cpu_seconds_total", "Total CPU time consumed by this process (user + system)"),
    _h("time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S),
    _h("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS_S),
    _h("e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", E2E_BUCKETS_S),
    _h("request_time_per_output_token_seconds",
       "Per-request TPOT in seconds: (finished_time - first_token_time) / (completion_tokens - 1).", ITL_BUCKETS_S),
    _h("prompt_tokens_histogram", "Histogram of prompt token length.", TOKEN_BUCKETS),
    _h("uncached_prompt_tokens_histogram", "Histogram of uncached (compute) prompt token length.", TOKEN_BUCKETS),
    _h("generation_tokens_histogram", "Histogram of generation token length.", TOKEN_BUCKETS),
    _g("routing_keys_active", "Number of unique routing keys with active requests"),
    _g("http_requests_active", "Number of currently active HTTP requests"),
    _c("prefill_effective_tokens_total",
       "Effective prefill tokens with retracted-request re-counts excluded, updated on each log interval. mode: device_hit, host_hit, storage_hit, input. Windowed prefix cache hit rate = rate(sum of *_hit) / rate(sum of all modes); per-tier rate uses a single *_hit mode in the numerator."),
    _c("scheduler_idle_seconds_total", "Total wall time while the scheduler has no runnable or queued work."),
    _c("scheduler_process_cpu_seconds_total", "Total CPU time consumed by the scheduler process across all threads."),
    _c("scheduler_stage_seconds_total",
       "Total scheduler-loop wall time exclusively attributed to each stage. forward_overlap (full, partial, none): full=both endpoints active, partial=one, none=no observed overlap (including unavailable timing). Not exact overlapped/exposed seconds."),
    _c("dp_attention_tokens_total",
       "Tokens of MLP-sync steps on this DP rank. kind=scheduled: tokens this rank ran; kind=imbalance: tokens the busiest rank ran beyond this rank, i.e. capacity lost to DP imbalance on this rank. On speculative-decode steps the unit is batch rows (requests)."),
    _c("dp_attention_steps_total",
       "MLP-sync steps on this DP rank. rank_state=idle: this rank had no tokens and only ran to keep the DP collectives in lockstep."),
    _c("dp_attention_pairs_total",
       "Causal (query, key) pairs attended by MLP-sync steps on this DP rank, pricing every layer as full attention: a decode row reads its sequence, a prefill chunk its prefix plus the pairs within the chunk. kind=scheduled: this rank; kind=imbalance: the busiest rank's excess over this rank. The context-length counterpart of sglang:dp_attention_tokens_total; like it, speculative-decode steps count one query per row. Sliding-window layers execute fewer pairs than counted, so on hybrid-SWA models long rows are overstated."),
    _c("cuda_graph_passes_total", "Total number of forward passes categorized by CUDA graph."),
    _c("realtime_tokens_total",
       "Total number of tokens processed (updated on each log interval). mode: prefill_compute, prefill_cache, decode."),
    _c("num_retracted_requests_total", "Total number of retracted requests."),
    _c("num_retracted_input_tokens_total", "Total number of retracted input tokens."),
    _c("num_retracted_output_tokens_total", "Total number of retracted output tokens."),
    _c("evicted_tokens_total", "The number of tokens evicted from GPU to CPU."),
    _h("dp_attention_token_imbalance_ratio",
       "Per MLP-sync step, max tokens over mean tokens across the DP ranks (1.0 = balanced, num_dp_ranks = one busy rank). Reported once per engine, by the scheduler of DP rank 0.",
       DP_IMBALANCE_BUCKETS),
    _h("dp_attention_sync_wait_seconds",
       "Wall time of this DP rank's scheduler MLP-sync all-gather per step. On the gloo path (the default with overlap scheduling) this is waiting for the slowest rank; on the device-group paths it also includes the gather's stream sync.",
       DP_SYNC_WAIT_BUCKETS_S),
    _h("per_stage_req_latency_seconds", "The latency of each stage of requests.", PER_STAGE_BUCKETS_S),
    _h("queue_time_seconds", "Histogram of queueing time in seconds.", QUEUE_BUCKETS_S),
    _h("eviction_duration_seconds", "Time taken to evict memory from GPU to CPU in seconds.", EVICTION_BUCKETS_S),
    *(_g(name, help_text) for name, help_text in _SCHED_GAUGES),
    _g("startup_time_seconds", "Engine startup duration by phase in seconds."),
    _g("startup_cuda_graph_time_seconds", "CUDA graph capture duration by phase in seconds."),
    _g("num_retracted_reqs", "The number of retracted requests."),
    _g("num_paused_reqs", "The number of paused requests by async weight sync."),
    _c("http_requests_total", "Total number of HTTP requests by endpoint and method"),
    _c("http_responses_total", "Total number of HTTP responses by endpoint and status code"),
    _c("prompt_tokens_total", "Number of prefill tokens processed."),
    _c("generation_tokens_total", "Number of generation tokens processed."),
    _c("num_requests_total", "Number of requests processed."),
    _c("num_aborted_requests_total", "Number of requests aborted."),
    _c("cached_tokens_total", "Number of cached prompt tokens by source (device/host/storage)."),
    _c("num_so_requests_total", "Number of structured output requests processed."),
    _c("spec_verify_calls_total", "Number of speculative decoding verification calls."),
)  # fmt: skip

SCHEDULER_GAUGE_NAMES = tuple(name for name, _ in _SCHED_GAUGES)
