"""vLLM 0.33.0 (V1 engine) metric families as its /metrics endpoint exposes them.

Names, types, HELP texts and buckets follow the real 0.33.0 exposition in
``tests/fixtures/vllm/0.33.0-plain/metrics.txt`` (rendered by vLLM's own ``v1/metrics`` classes and
prometheus_client 0.26) and vLLM's ``docs/usage/metrics.md``; the speculative-decoding counters
follow ``vllm/v1/spec_decode/metrics.py``. Order = exposition order.
Counters are registered without ``_total`` and exposed with it; every counter and histogram child
also gets a ``<name>_created`` gauge family (no multiprocess mode).
"""

from __future__ import annotations

from enginescope.simfleet.sgl_families import FamilySpec

TOKEN_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
                 50000.0, 100000.0)  # fmt: skip
ITERATION_BUCKETS = (1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0)
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                  40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                 40.0, 80.0)  # fmt: skip
PHASE_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
PREEMPTION_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0)
N_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0)
HTTP_HIGHR_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5,
                        5.0, 7.5, 10.0, 30.0, 60.0)  # fmt: skip
HTTP_BUCKETS_S = (0.1, 0.5, 1.0)

FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
# prometheus_fastapi_instrumentator in vLLM skips these handlers
UNINSTRUMENTED = ("/metrics", "/health", "/load", "/ping", "/version", "/server_info")


def _c(name: str, help_text: str) -> FamilySpec:
    return FamilySpec(f"vllm:{name}", "counter", help_text)


def _g(name: str, help_text: str) -> FamilySpec:
    return FamilySpec(f"vllm:{name}", "gauge", help_text)


def _h(name: str, help_text: str, buckets: tuple[float, ...]) -> FamilySpec:
    return FamilySpec(f"vllm:{name}", "histogram", help_text, buckets)


_MFU = "(for Model Flops Utilization calculations)."
FAMILIES: tuple[FamilySpec, ...] = (
    _c("estimated_flops_per_gpu_total", f"Estimated number of floating point operations per GPU {_MFU}"),
    _c("estimated_read_bytes_per_gpu_total", f"Estimated number of bytes read from memory per GPU {_MFU}"),
    _c("estimated_write_bytes_per_gpu_total", f"Estimated number of bytes written to memory per GPU {_MFU}"),
    _g("num_requests_running", "Number of requests in model execution batches."),
    _g("num_requests_waiting", "Number of requests waiting to be processed."),
    _g("num_requests_waiting_by_reason",
       "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
       "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all "
       "reasons equals vllm:num_requests_waiting."),
    _g("engine_sleep_state",
       "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
       "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2."),
    _g("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
    _c("prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens."),
    _c("prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens."),
    _c("external_prefix_cache_queries_total",
       "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of "
       "queried tokens."),
    _c("external_prefix_cache_hits_total",
       "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of "
       "cached tokens."),
    _c("mm_cache_queries_total", "Multi-modal cache queries, in terms of number of queried items."),
    _c("mm_cache_hits_total", "Multi-modal cache hits, in terms of number of cached items."),
    _c("num_preemptions_total", "Cumulative number of preemption from the engine."),
    _c("prompt_tokens_total", "Number of prefill tokens processed."),
    _c("prompt_tokens_by_source_total", "Number of prompt tokens by source."),
    _c("prompt_tokens_cached_total", "Number of cached prompt tokens (local + external)."),
    _c("prompt_tokens_cached_by_source_total",
       "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to "
       "DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; "
       "sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits."),
    _c("generation_tokens_total", "Number of generation tokens processed."),
    _c("request_success_total", "Count of successfully processed requests."),
    _c("admission_rejections_total", "Number of admission attempts rejected by a queue limit, by reason."),
    _c("spec_decode_num_drafts_total", "Number of spec decoding drafts."),
    _c("spec_decode_num_draft_tokens_total", "Number of draft tokens."),
    _c("spec_decode_num_accepted_tokens_total", "Number of accepted tokens."),
    _c("spec_decode_num_accepted_tokens_per_pos_total", "Accepted tokens per draft position."),
    _h("request_prompt_tokens", "Number of prefill tokens processed.", TOKEN_BUCKETS),
    _h("request_generation_tokens", "Number of generation tokens processed.", TOKEN_BUCKETS),
    _h("iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_BUCKETS),
    _h("request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens.",
       TOKEN_BUCKETS),
    _h("request_params_n", "Histogram of the n request parameter.", N_BUCKETS),
    _h("request_params_max_tokens", "Histogram of the max_tokens request parameter.", TOKEN_BUCKETS),
    _h("time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S),
    _h("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS_S),
    _h("request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
       ITL_BUCKETS_S),
    _h("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", PHASE_BUCKETS_S),
    _h("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", PHASE_BUCKETS_S),
    _h("request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", PHASE_BUCKETS_S),
    _h("request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", PHASE_BUCKETS_S),
    _h("request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", PHASE_BUCKETS_S),
    _h("request_num_preemptions", "Histogram of the number of times a request was preempted.", PREEMPTION_BUCKETS),
    _h("request_prefill_kv_computed_tokens",
       "Histogram of new KV tokens computed during prefill (excluding cached tokens).", TOKEN_BUCKETS),
    _g("cache_config_info", "Information of the LLMEngine CacheConfig"),
    FamilySpec("http_requests_total", "counter", "Total number of requests by method, status and handler."),
    FamilySpec("http_request_duration_highr_seconds", "histogram",
               "Latency with many buckets but no API specific labels. Made for more accurate percentile "
               "calculations. ", HTTP_HIGHR_BUCKETS_S),
    FamilySpec("http_request_duration_seconds", "histogram",
               "Latency with only few buckets by handler. Made to be only used if aggregation by handler is "
               "important. ", HTTP_BUCKETS_S),
)  # fmt: skip
