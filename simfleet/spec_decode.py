"""Speculative-decoding acceptance for the simulated engines: chain (EAGLE, MTP) and block (DFlash).

A verify step checks ``drafts`` draft tokens left to right and keeps the longest accepted prefix,
plus the target model's own bonus token. Position ``k`` (0-based) is accepted with conditional
probability ``q * decay**k`` *given every earlier position was accepted*; the first rejection ends
the step. So with a constant ``q`` the number of accepted drafts is a truncated geometric
distribution: q = 0.775 over 4 drafts gives .23/.17/.14/.11/.36 for 0..4 accepted, and the
unconditional per-position rates (vLLM's ``spec_decode_num_accepted_tokens_per_pos``) fall
.78/.61/.47/.36 with depth, the shape vLLM's per-position counters show on real traffic. An
independent (binomial) model with the same mean would give .04/.20/.36/.31/.10: same mean
acceptance length, wrong distribution, wrong per-request variance, wrong per-position counters.

``decay < 1`` makes deeper positions harder still (drafters conditioned on their own earlier
guesses drift; DFlash's acceptance falls along the block). Each request gets a logit offset drawn
once (``request_offset``), so requests of one traffic class differ as real prompts do, and a class
whose base acceptance changes (a new prompt template) moves its in-flight requests too.

DFlash (Chen, Liang, Liu, "DFlash: Block Diffusion for Flash Speculative Decoding", arXiv
2602.06036, 2026) drafts a whole block (``--speculative-num-draft-tokens``, 8 or 16, sets the block
size in SGLang) in one drafter pass; its cost is one heavier drafter forward instead of
``num_steps`` sequential ones, and verification is ``block`` tokens wide.
"""

from __future__ import annotations

import functools
import math
import random

SPEC_METHODS = ("EAGLE", "EAGLE3", "MTP", "DFLASH")
BLOCK_METHODS = ("DFLASH",)
_LOGIT_LIMIT = 12.0


def conditional_rates(q: float, drafts: int, decay: float = 1.0) -> list[float]:
    """Acceptance probability of each position given every earlier one was accepted."""
    return [min(1.0, max(0.0, q * decay**k)) for k in range(drafts)]


def position_rates(q: float, drafts: int, decay: float = 1.0) -> list[float]:
    """Unconditional acceptance rate of each draft position (vLLM's per-position counters / drafts)."""
    rates, survive = [], 1.0
    for rate in conditional_rates(q, drafts, decay):
        survive *= rate
        rates.append(survive)
    return rates


def step_distribution(q: float, drafts: int, decay: float = 1.0) -> list[float]:
    """P(k drafts accepted) for k = 0..drafts in one verify step."""
    reach = [1.0, *position_rates(q, drafts, decay)]
    return [reach[k] - reach[k + 1] for k in range(drafts)] + [reach[drafts]]


def mean_accept_length(q: float, drafts: int, decay: float = 1.0) -> float:
    """Mean tokens per verify step (accepted drafts + the bonus token)."""
    return 1.0 + sum(position_rates(q, drafts, decay))


@functools.lru_cache(maxsize=4096)
def solve_q(accept_length: float, drafts: int, decay: float = 1.0) -> float:
    """The base acceptance ``q`` whose chain has mean length ``accept_length`` (bisection)."""
    if drafts < 1 or accept_length <= 1.0:
        return 0.0
    low, high = 0.0, 1.0
    if accept_length >= mean_accept_length(1.0, drafts, decay):
        return 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if mean_accept_length(mid, drafts, decay) < accept_length:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def shifted(q: float, offset_logit: float) -> float:
    """``q`` moved by ``offset_logit`` on the logit scale (a request's own acceptance)."""
    if offset_logit == 0.0 or q <= 0.0 or q >= 1.0:
        return q
    logit = math.log(q / (1.0 - q)) + offset_logit
    return 1.0 / (1.0 + math.exp(-max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, logit))))


def request_offset(rng: random.Random, sigma_logit: float) -> float:
    """One request's acceptance offset (logit scale), drawn once per request."""
    return rng.gauss(0.0, sigma_logit) if sigma_logit > 0 else 0.0


def sample_accepted_drafts(rng: random.Random, q: float, drafts: int, decay: float = 1.0) -> int:
    """Drafts accepted in one verify step: walk the chain until the first rejection."""
    accepted = 0
    rate = q
    while accepted < drafts and rng.random() < rate:
        accepted += 1
        rate *= decay
    return accepted


def drafts_per_step(method: str, num_steps: int, num_draft_tokens: int) -> int:
    """Draft positions one verify step checks: the block minus the bonus slot for DFlash, else the
    chain depth (topk 1: ``min(num_steps, num_draft_tokens - 1)``)."""
    if method in BLOCK_METHODS:
        return num_draft_tokens - 1
    return max(0, min(num_steps, num_draft_tokens - 1))
