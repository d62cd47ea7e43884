"""Exact per-request timings of simulated requests, for checking what the store reconstructs.

Each record holds what SGLang's histograms observed for that request: ``queue_time_s`` (the one
``queue_time_seconds`` sample: first wait before the first forward), ``ttft_s``, ``e2e_s``,
``tpot_s`` and ``itl`` — a list of ``[interval_s, new_tokens]`` output chunks, each observed by
``inter_token_latency_seconds`` as ``new_tokens`` samples of ``interval_s / new_tokens``. Fields a
histogram did not observe (e.g. TTFT of a request aborted in the queue) are ``None``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from enginescope.simfleet.sim_request import SimRequest

if TYPE_CHECKING:
    from enginescope.simfleet.engine import SimEngine

FIELDS = (
    "replica", "rid", "stream", "endpoint", "prompt_tokens", "cached_tokens", "completion_tokens",
    "finish_type", "created_ts", "finished_ts", "queue_time_s", "queue_time_total_s", "ttft_s", "e2e_s",
    "tpot_s", "itl", "retractions", "spec_verify_ct",
)  # fmt: skip


class GroundTruth:
    """Collects records in memory and, given ``path``, also appends each as a JSON line."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self._file: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("a", encoding="utf-8")

    def record(self, req: SimRequest, engine: SimEngine) -> None:
        started = req.first_token_s is not None
        finish_type = (req.finish_reason or {}).get("type")
        tpot_s = None
        if started and req.output_tokens >= 2 and finish_type in ("stop", "length"):
            tpot_s = (req.finished_s - req.first_token_s) / (req.output_tokens - 1)
        entry = {
            "replica": engine.name,
            "rid": req.rid,
            "stream": req.stream,
            "endpoint": req.endpoint,
            "prompt_tokens": req.prompt_tokens,
            "cached_tokens": req.cached_tokens,
            "completion_tokens": req.output_tokens,
            "finish_type": finish_type,
            "created_ts": engine.epoch(req.created_s),
            "finished_ts": engine.epoch(req.finished_s),
            "queue_time_s": req.queue_time_first_s,
            "queue_time_total_s": req.queue_time_total_s if req.forward_entry_s is not None else None,
            "ttft_s": req.first_token_s - req.created_s if started else None,
            "e2e_s": req.finished_s - req.created_s if started else None,
            "tpot_s": tpot_s,
            "itl": [[interval, tokens] for interval, tokens in req.itl_chunks],
            "retractions": req.retractions,
            "spec_verify_ct": req.spec_verify_ct,
        }
        self.records.append(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()

    def values(self, field: str) -> list[float]:
        """Every non-null value of a scalar field, e.g. ``values("ttft_s")``."""
        return [r[field] for r in self.records if r.get(field) is not None]

    def itl_samples(self) -> list[tuple[float, int]]:
        """(per-token latency, weight) pairs exactly as the ITL histogram observed them."""
        return [(interval / tokens, tokens) for r in self.records for interval, tokens in r["itl"]]

    def write_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as out:
            for entry in self.records:
                out.write(json.dumps(entry) + "\n")

    def write_parquet(self, path: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [r[name] for r in self.records] for name in FIELDS}
        pq.write_table(pa.table(columns), str(path))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
