"""Engine states and request admission for the simulated engine (``enginescope.simfleet.engine``).

Which states take requests, the context-length check with SGLang's error text, and the
random draws that shape each request (output length, prefix-cache hit, speculative
acceptance). Draws take the engine's ``random.Random`` so a seeded engine stays deterministic.
"""

from __future__ import annotations

import enum
import math
import random

from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.sim_request import SimRequest

_OUTPUT_LEN_SIGMA = 0.8  # lognormal spread of sampled output lengths (ShareGPT-like)
_CACHE_HIT_SIGMA = 0.12  # spread of one request's prefix-cache share around the engine ratio


class EngineState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CRASHED = "crashed"


class EngineUnavailable(Exception):
    """The engine cannot take the request: status 503 (starting/draining) or None (process gone)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_admission(
    state: EngineState, profile: EngineProfile, prompt_tokens: int, max_new_tokens: int | None
) -> tuple[int, int]:
    """(prompt tokens incl. the template's extra, max new tokens) of an admissible request.

    Raises EngineUnavailable unless the engine is ready, ValueError when it cannot fit the context.
    """
    if state is EngineState.CRASHED:
        raise EngineUnavailable(None, "connection refused")
    if state is not EngineState.READY:
        raise EngineUnavailable(503, f"engine is {state.value}")
    context_tokens = profile.context_len_tokens
    prompt_tokens = int(prompt_tokens) + profile.extra_prompt_tokens
    if prompt_tokens < 1:
        raise ValueError("prompt must have at least one token")
    if max_new_tokens is None:
        max_new_tokens = context_tokens - prompt_tokens
    if max_new_tokens < 1 or prompt_tokens + max_new_tokens > context_tokens:
        raise ValueError(
            f"Requested token count exceeds the model's maximum context length of {context_tokens} tokens. "
            f"You requested a total of {prompt_tokens + max_new_tokens} tokens: {prompt_tokens} tokens from the "
            f"input messages and {max_new_tokens} tokens for the completion."
        )
    return prompt_tokens, max_new_tokens


def sample_output_tokens(rng: random.Random, mean_tokens: float) -> int:
    """A lognormal output length with the profile's mean."""
    mu = math.log(mean_tokens) - _OUTPUT_LEN_SIGMA**2 / 2
    return max(1, int(rng.lognormvariate(mu, _OUTPUT_LEN_SIGMA)))


def sample_cached_tokens(rng: random.Random, hit_ratio: float, prompt_tokens: int) -> int:
    """Prompt tokens served from the prefix cache for one request."""
    if hit_ratio <= 0.0:
        return 0
    share = min(1.0, max(0.0, rng.gauss(hit_ratio, _CACHE_HIT_SIGMA)))
    return min(prompt_tokens - 1, int(prompt_tokens * share))  # the last token is always computed


def sample_accepted_tokens(
    rng: random.Random, profile: EngineProfile, accept_length: float, req: SimRequest, room: int
) -> int:
    """Tokens one verify step emits for ``req`` (accepted drafts + bonus), mean = ``accept_length``.

    Also records the step in the request's speculative-decoding counters.
    """
    drafts = min(profile.spec_num_steps + 1, profile.spec_num_draft_tokens) - 1
    accept_p = (accept_length - 1.0) / drafts
    tokens = min(room, 1 + sum(1 for _ in range(drafts) if rng.random() < accept_p))
    if not req.spec_drafts_histogram:
        req.spec_drafts_histogram = [0] * profile.spec_num_draft_tokens
    req.spec_verify_ct += 1
    req.spec_correct_drafts += tokens - 1
    req.spec_drafts_histogram[tokens - 1] += 1
    return tokens
