"""SGLang 0.5.23's per-request export (``--export-metrics-to-file``) for simulated requests.

One JSON object per finished request, appended to ``<dir>/sglang-request-metrics-YYYYMMDD_HH.log``
(server local time of the write, a new file each hour). Keys, order and types follow the
SGLang 0.5.23 wheel's ``sglang/srt/observability/request_metrics_exporter.py`` and
``sglang/srt/managers/tokenizer_manager.py``: ``request_parameters`` is a JSON string of the
request's non-null ``GenerateReqInput`` fields, then the response meta_info; timestamps are epoch
seconds except ``received_time`` (a perf_counter value); spec fields only with speculative decoding;
a waiting-queue abort has the reduced shape.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from enginescope.simfleet.sim_request import SimRequest

if TYPE_CHECKING:
    from enginescope.simfleet.engine import SimEngine

_CHAT_PREFIX = [128000, 128006, 882, 128007, 271]  # <|begin_of_text|><|start_header_id|>user...
_CHAT_SUFFIX = [128009, 128006, 78191, 128007]  # <|eot_id|><|start_header_id|>assistant...
_rng = random.Random(1234)
_BODY_TOKENS = [_rng.randrange(1000, 100000) for _ in range(4096)]
_SEND_DELAY_S = 0.0001  # tokenizer -> HTTP response write


def _pseudo_input_ids(prompt_tokens: int, chat: bool) -> list[int]:
    prefix, suffix = (_CHAT_PREFIX, _CHAT_SUFFIX) if chat else ([128000], [])
    body_len = max(0, prompt_tokens - len(prefix) - len(suffix))
    body = (_BODY_TOKENS * (body_len // len(_BODY_TOKENS) + 1))[:body_len]
    return (prefix + body + suffix)[:prompt_tokens]


def request_parameters(req: SimRequest) -> dict[str, Any]:
    """The non-null GenerateReqInput fields SGLang would log, in declaration order."""
    sampling = req.params
    return {
        "rid": req.rid,
        "input_ids": _pseudo_input_ids(req.prompt_tokens, req.endpoint == "/v1/chat/completions"),
        "use_audio_in_video": False,
        "sampling_params": {
            "temperature": float(sampling.get("temperature", 1.0)),
            "max_new_tokens": req.max_new_tokens,
            "min_new_tokens": 0,
            "stop": [],
            "stop_token_ids": None,
            "stop_regex": None,
            "top_p": float(sampling.get("top_p", 1.0)),
            "top_k": -1,
            "min_p": 0.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "repetition_penalty": 1.0,
            "regex": None,
            "ebnf": None,
            "n": 1,
            "no_stop_trim": False,
            "ignore_eos": bool(sampling.get("ignore_eos", False)),
            "skip_special_tokens": True,
            "logit_bias": None,
            "custom_params": None,
            "sampling_seed": sampling.get("seed"),
            "spaces_between_special_tokens": True,
            "watermark": None,
        },
        "return_logprob": False,
        "logprob_start_len": -1,
        "top_logprobs_num": 0,
        "return_sampling_mask": False,
        "return_text_in_logprobs": True,
        "return_flat_raw_top_logprobs": False,
        "return_flat_raw_output_top_logprobs": False,
        "return_flat_raw_top_logprobs_b64": False,
        "stream": req.stream,
        "log_metrics": True,
        "return_hidden_states": False,
        "return_routed_experts": False,
        "routed_experts_start_len": 0,
        "return_indexer_topk": False,
        **({"custom_labels": dict(req.custom_labels)} if req.custom_labels else {}),
        "background": False,
        "require_reasoning": False,
        "no_logs": False,
        "return_bytes": False,
        "return_entropy": False,
        "return_prompt_token_ids": False,
        "received_time": sampling["received_time"],
    }


def finished_record(req: SimRequest, engine: SimEngine) -> dict[str, Any]:
    ep = engine.epoch
    record: dict[str, Any] = {
        "request_parameters": json.dumps(request_parameters(req)),
        "id": req.rid,
        "finish_reason": req.finish_reason,
        "prompt_tokens": req.prompt_tokens,
        "weight_version": "default",
        "num_retractions": req.retractions,
        "storage_prefetch_wait": 0.0,
        "storage_staging_wait": 0.0,
        "forward_entry_time": ep(req.forward_entry_s),
        "prefill_finished_time": ep(req.prefill_finished_s),
        "queue_time": req.queue_time_total_s,
        "reasoning_tokens": 0,
        "completion_tokens": req.output_tokens,
        "cached_tokens": req.cached_tokens,
        "weight_versions": [{"version": "default", "start": 0, "end": req.output_tokens}],
        "cached_tokens_details": {"device": req.cached_tokens, "host": 0} if req.cached_tokens else None,
        "dp_rank": req.dp_rank if engine.profile.dp_size > 1 else None,
        "e2e_latency": req.finished_s - req.created_s,
    }
    if req.spec_verify_ct:
        proposed = req.spec_verify_ct * (engine.profile.spec_num_draft_tokens - 1)
        record["spec_accept_rate"] = req.spec_correct_drafts / proposed
        record["spec_accept_length"] = req.output_tokens / req.spec_verify_ct
        record["spec_num_correct_drafts"] = req.spec_correct_drafts
        record["spec_num_proposed_drafts"] = proposed
        record["spec_verify_ct"] = req.spec_verify_ct
        record["spec_correct_drafts_histogram"] = list(req.spec_drafts_histogram)
    record["request_received_ts"] = ep(req.created_s)
    ttft_s = req.first_token_s - req.created_s
    if ttft_s > 0:
        record["first_token_latency"] = ttft_s
    record["api_server_dispatch_finish_ts"] = ep(req.scheduler_arrival_s)
    if req.stream:
        record["response_sent_to_client_ts"] = ep(req.first_token_s + _SEND_DELAY_S)
    record["request_finished_ts"] = ep(req.finished_s)
    if req.output_tokens > 1:
        record["decode_throughput"] = (req.output_tokens - 1) / (req.finished_s - req.first_token_s)
    if not req.stream:
        record["response_sent_to_client_ts"] = ep(req.finished_s + _SEND_DELAY_S)
    return record


def abort_record(req: SimRequest, engine: SimEngine) -> dict[str, Any]:
    """The reduced record of a request aborted while still in the waiting queue."""
    return {
        "request_parameters": json.dumps(request_parameters(req)),
        "id": req.rid,
        "finish_reason": req.finish_reason,
        "weight_version": "default",
        "e2e_latency": req.finished_s - req.created_s,
        "weight_versions": [{"version": "default", "start": 0, "end": 0}],
        "completion_tokens": 0,
        "response_sent_to_client_ts": engine.epoch(req.finished_s + _SEND_DELAY_S),
    }


class RequestExporter:
    """Appends records to hourly files; one open file at a time, flushed after each record."""

    def __init__(self, export_dir: str | Path) -> None:
        self.export_dir = Path(export_dir)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self._hour: str | None = None
        self._file: IO[str] | None = None

    def path_for(self, epoch_s: float) -> Path:
        hour = dt.datetime.fromtimestamp(epoch_s).strftime("%Y%m%d_%H")
        return self.export_dir / f"sglang-request-metrics-{hour}.log"

    def write(self, record: dict[str, Any], epoch_s: float) -> None:
        hour = dt.datetime.fromtimestamp(epoch_s).strftime("%Y%m%d_%H")
        if hour != self._hour or self._file is None:
            self.close()
            self._file = self.path_for(epoch_s).open("a", encoding="utf-8")
            self._hour = hour
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
