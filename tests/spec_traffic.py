"""Synthetic speculative-decoding traffic for the drift detector's tests.

Chain acceptance as engines verify drafts: each verify step proposes ``DRAFTS_PER_STEP`` tokens
and accepts a prefix, stopping at the first rejection; per-position acceptance declines with
depth (``q0 * decay**k``); each request has its own difficulty (a normal shift of the logits),
so per-request acceptance lengths vary as real ones do. Records come out in SGLang 0.5.23's
export shape (``request_parameters`` a JSON string holding ``custom_labels``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from enginescope.collectors.model import Batch, Identity
from enginescope.collectors.requestlog import record_to_row
from enginescope.store import StoreWriter

NUM_DRAFT_TOKENS = 5  # SGLang --speculative-num-draft-tokens: histogram has this many bins
DRAFTS_PER_STEP = NUM_DRAFT_TOKENS - 1
T0_S = 1_796_083_200.0  # 2026-12-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class TrafficClass:
    name: str
    rate_rps: float
    q0: float  # acceptance of the first draft position
    decay: float  # per-position factor: acceptance declines with depth
    spread: float = 0.5  # sd of the per-request logit shift (request difficulty)


CLASSES = (
    TrafficClass("chat", 1.5, 0.82, 0.92),
    TrafficClass("code", 1.2, 0.88, 0.94),
    TrafficClass("json", 2.0, 0.93, 0.96),
    TrafficClass("summarize", 1.0, 0.78, 0.90),
)


def expected_accept_length(q0: float, decay: float) -> float:
    """1 + sum_k P(first k+1 drafts accepted), without per-request spread."""
    survive, total = 1.0, 1.0
    for k in range(DRAFTS_PER_STEP):
        survive *= min(1.0, q0 * decay**k)
        total += survive
    return total


def scale_for_drop(cls: TrafficClass, drop_ratio: float) -> float:
    """Factor on every position's acceptance that cuts the nominal acceptance length by ``drop_ratio``."""
    target = expected_accept_length(cls.q0, cls.decay) * (1.0 - drop_ratio)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_accept_length(cls.q0 * mid, cls.decay) < target else (lo, mid)
    return (lo + hi) / 2


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def generate(
    t0_s: float,
    duration_s: float,
    seed: int,
    classes: tuple[TrafficClass, ...] = CLASSES,
    drop: tuple[str, float, float] | None = None,  # (class, at_s since t0, drop ratio)
) -> pd.DataFrame:
    """One row per finished request: the columns the detector loads, plus the SGLang fields."""
    rng = np.random.default_rng(seed)
    parts = []
    for ci, cls in enumerate(classes):
        n = rng.poisson(cls.rate_rps * duration_s)
        arrive = np.sort(rng.uniform(0, duration_s, n))
        q0 = np.full(n, cls.q0)
        if drop and drop[0] == cls.name:
            q0 = np.where(arrive >= drop[1], cls.q0 * scale_for_drop(cls, drop[2]), q0)
        positions = q0[:, None] * cls.decay ** np.arange(DRAFTS_PER_STEP)[None, :]
        shift = rng.normal(0, cls.spread, n)[:, None]
        q = 1 / (1 + np.exp(-(_logit(np.clip(positions, 1e-4, 1 - 1e-4)) + shift)))
        tokens = np.clip(np.round(rng.lognormal(math.log(180), 0.7, n)), 8, 1500).astype(int)
        verify, histogram = _chain(rng, np.cumprod(q, axis=1), tokens)
        accept = tokens / verify
        e2e = 0.08 + verify * 0.02  # prefill plus one 20 ms verify step per step
        parts.append(
            pd.DataFrame(
                {
                    "ts_s": t0_s + arrive + e2e,
                    "received_s": t0_s + arrive,
                    "replica": f"replica-{ci % 2}",
                    "request_id": [f"{cls.name}-{seed}-{i:06d}" for i in range(n)],
                    "traffic_class": cls.name,
                    "accept_length": accept,
                    "tokens": tokens,
                    "steps": verify,
                    "is_spec": True,
                    "histogram": list(histogram),
                }
            )
        )
    return pd.concat(parts).sort_values("ts_s", ignore_index=True)


def _chain(
    rng: np.random.Generator, survive: np.ndarray, tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Verify steps until each request has its tokens; accepted drafts stop at the first rejection.

    ``survive[i, k]`` = P(request i's first k+1 drafts are all accepted). Returns verify_ct and
    the per-request histogram of drafts accepted per step.
    """
    n = len(tokens)
    per_step = 1 + survive.sum(axis=1)
    cap = np.minimum(tokens, np.ceil(tokens / per_step * 1.6 + 12)).astype(int)
    owner = np.repeat(np.arange(n), cap)
    starts = np.concatenate([[0], np.cumsum(cap)[:-1]])
    local = np.arange(len(owner)) - starts[owner]
    accepted = (rng.random(len(owner))[:, None] < survive[owner]).sum(axis=1)
    emitted = np.cumsum(accepted + 1)
    before = np.concatenate([[0], emitted])[starts]
    reached = emitted - before[owner] >= tokens[owner]
    first = np.minimum.reduceat(np.where(reached, local, np.iinfo(np.int64).max), starts)
    short = first == np.iinfo(np.int64).max  # ran out of drawn steps: finish at one token per step
    last_total = np.add.reduceat(accepted + 1, starts)
    verify = np.where(short, cap + np.maximum(0, tokens - last_total), first + 1)
    used = local < verify[owner]
    cells = np.bincount(owner[used] * NUM_DRAFT_TOKENS + accepted[used], minlength=n * NUM_DRAFT_TOKENS)
    return verify, cells.reshape(n, NUM_DRAFT_TOKENS)


def export_records(frame: pd.DataFrame) -> list[dict]:
    """The rows as SGLang 0.5.23 ``--export-metrics-to-file`` records with custom labels."""
    records = []
    for r in frame.itertuples():
        params = {"rid": r.request_id, "input_ids": [128000, 882, 271], "stream": True, "no_logs": False,
                  "custom_labels": {"task": r.traffic_class}, "return_bytes": False}  # fmt: skip
        verify, tokens = int(r.steps), int(r.tokens)
        records.append(
            {
                "request_parameters": json.dumps(params),
                "id": r.request_id,
                "finish_reason": {"type": "stop", "matched": 128009},
                "prompt_tokens": 512,
                "completion_tokens": tokens,
                "e2e_latency": r.ts_s - r.received_s,
                "spec_accept_rate": (tokens - verify) / (verify * DRAFTS_PER_STEP),
                "spec_accept_length": tokens / verify,
                "spec_num_correct_drafts": tokens - verify,
                "spec_num_proposed_drafts": verify * DRAFTS_PER_STEP,
                "spec_verify_ct": verify,
                "spec_correct_drafts_histogram": [int(c) for c in r.histogram],
                "request_received_ts": r.received_s,
                "request_finished_ts": r.ts_s,
            }
        )
    return records


def write_traffic(store: Path, frame: pd.DataFrame, store_params: bool = False) -> None:
    """Each synthetic replica's records through requestlog's record_to_row and its own StoreWriter."""
    for replica, part in frame.groupby("replica"):
        ident = Identity(replica=str(replica), engine="sglang", model="m", gpu_type="H100")
        writer = StoreWriter(store, ident, background=False)
        rows = [record_to_row(r, store_params=store_params) for r in export_records(part)]
        writer.write(Batch(ident, requests=rows))
        writer.close()
