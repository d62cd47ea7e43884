"""One request inside the simulated engine, and the output events it produces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EOS_TOKEN_ID = 128009  # Llama-3 <|eot_id|>, what SGLang reports as finish_reason.matched
WAITING_TIMEOUT_MESSAGE = "Request waiting timeout reached."


@dataclass(slots=True)
class OutputEvent:
    """Tokens a request produced in one scheduler iteration (times on the engine clock, seconds)."""

    rid: str
    new_tokens: int
    completion_tokens: int
    time_s: float
    finished: bool = False
    finish_reason: dict[str, Any] | None = None
    error_status: int | None = None  # set when the request failed (HTTP status to answer)


@dataclass(slots=True, eq=False)
class SimRequest:
    rid: str
    prompt_tokens: int
    max_new_tokens: int
    target_output_tokens: int  # EOS position; >= max_new_tokens means finish by length
    stream: bool
    endpoint: str
    created_s: float  # tokenizer receipt (engine clock)
    tokenize_s: float  # tokenizer work before the scheduler sees it
    params: dict[str, Any] = field(default_factory=dict)  # request_parameters for the export
    sink: Callable[[OutputEvent], None] | None = None
    structured: bool = False
    dp_rank: int = 0
    custom_labels: dict[str, str] | None = None  # x-custom-labels header (traffic class, e.g. task)
    spec_offset: float = 0.0  # this request's acceptance offset (logit scale), drawn once
    # scheduler state
    cached_tokens: int = 0  # prefix-cache hit decided at first admission
    prefill_target: int = 0  # tokens the current prefill must cover (prompt + output after retraction)
    prefill_done: int = 0
    kv_tokens: int = 0  # KV slots held (cached prefix included)
    output_tokens: int = 0
    queue_enter_s: float = 0.0
    forward_entry_s: float | None = None  # first forward (epoch via engine)
    queue_time_first_s: float | None = None
    queue_time_total_s: float = 0.0
    prefill_finished_s: float | None = None
    first_token_s: float | None = None
    last_output_s: float | None = None
    last_output_tokens: int = 0
    finished_s: float | None = None
    retractions: int = 0
    spec_verify_ct: int = 0
    spec_correct_drafts: int = 0
    spec_drafts_histogram: list[int] = field(default_factory=list)
    itl_chunks: list[tuple[float, int]] = field(default_factory=list)  # (interval_s, new_tokens)
    finish_reason: dict[str, Any] | None = None
    aborted: bool = False
    admitted_once: bool = False

    @property
    def scheduler_arrival_s(self) -> float:
        return self.created_s + self.tokenize_s

    @property
    def remaining_new_tokens(self) -> int:
        return self.max_new_tokens - self.output_tokens

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def in_prefill(self) -> bool:
        return self.prefill_done < self.prefill_target

    def finish_reason_at(self, output_tokens: int) -> dict[str, Any] | None:
        if output_tokens >= self.max_new_tokens:
            return {"type": "length", "length": self.max_new_tokens}
        if output_tokens >= self.target_output_tokens:
            return {"type": "stop", "matched": EOS_TOKEN_ID}
        return None

    def emit(self, event: OutputEvent) -> None:
        if self.sink is not None:
            self.sink(event)
