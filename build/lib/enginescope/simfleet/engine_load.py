"""Read-only load figures of a simulated engine: what the simulated GPU and autoscaler see.

:class:`EngineLoadFigures` is a mixin of :class:`enginescope.simfleet.engine.SimEngine`; it only reads
the engine's scheduler ranks, profile and clock horizon, never changes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enginescope.simfleet.engine_admission import EngineState
from enginescope.simfleet.profile import EngineProfile

if TYPE_CHECKING:
    from enginescope.simfleet.scheduler import SchedulerRank

_GIB = float(1 << 30)
_CUDA_CONTEXT_GIB = 0.9
_GRAPH_CAPTURE_BUSY_FRACTION = 0.6  # CUDA graph capture keeps the GPU fairly busy
_GRAPH_CAPTURE_INTENSITY = 0.5
_DECODE_BASE_INTENSITY = 0.55
_FULL_POWER_BATCH = 64  # decode batch at which the GPU draws close to TDP
# columns of SchedulerRank.load_log entries: (t_s, busy_s, prompt tokens, generated tokens)
_BUSY_S, _PROMPT_TOKENS, _GENERATED_TOKENS = 1, 2, 3


class EngineLoadFigures:
    """Load over recent windows and memory use per GPU, for the engine that mixes this in."""

    # provided by SimEngine
    state: EngineState
    profile: EngineProfile
    ranks: list[SchedulerRank]
    boot_s: float
    scheduler_ready_s: float
    _horizon_s: float

    def _window(self, window_s: float, column: int) -> float:
        since = self._horizon_s - window_s
        return sum(entry[column] for rank in self.ranks for entry in rank.load_log if entry[0] > since)

    def gpu_busy_fraction(self, window_s: float = 1.0) -> float:
        """Share of the last window the GPUs spent computing (0..1), averaged over DP groups."""
        if self.state is EngineState.CRASHED:
            return 0.0
        if not self.ranks:  # startup: weight load is I/O bound, graph capture keeps the GPU busy
            graph_start_s = (
                self.scheduler_ready_s
                - self.profile.cuda_graph_capture_s
                - self.profile.draft_cuda_graph_capture_s
            )
            return _GRAPH_CAPTURE_BUSY_FRACTION if graph_start_s <= self._horizon_s else 0.0
        return min(1.0, self._window(window_s, _BUSY_S) / (window_s * len(self.ranks)))

    def gpu_intensity(self, window_s: float = 1.0) -> float:
        """Power drawn while busy relative to a compute-bound kernel (0..1).

        Decode is memory-bound: an H100 decoding a batch of one draws roughly half its TDP while
        NVML already reports 100% utilisation; large batches and prefill approach TDP.
        """
        if not self.ranks:
            return _GRAPH_CAPTURE_INTENSITY
        batch_share = self.num_running() / (_FULL_POWER_BATCH * len(self.ranks))
        prefill_share = self._window(window_s, _PROMPT_TOKENS) / (
            window_s * self.profile.prefill_tokens_per_s
        )
        return _DECODE_BASE_INTENSITY + (1.0 - _DECODE_BASE_INTENSITY) * min(
            1.0, max(batch_share, prefill_share)
        )

    def tokens_per_s(self, window_s: float = 1.0) -> float:
        """Prompt (computed) plus generated tokens per second over the window."""
        return (self._window(window_s, _PROMPT_TOKENS) + self._window(window_s, _GENERATED_TOKENS)) / window_s

    def generation_tokens_per_s(self, window_s: float = 1.0) -> float:
        return self._window(window_s, _GENERATED_TOKENS) / window_s

    def kv_used_bytes(self) -> int:
        """KV bytes held by running requests on one GPU (mean over DP groups)."""
        if not self.ranks:
            return 0
        used_tokens = sum(rank.kv_used for rank in self.ranks) / len(self.ranks)
        return int(used_tokens * self.profile.kv_bytes_per_token)

    def gpu_memory_used_bytes(self) -> int:
        """What NVML would report per GPU: CUDA context, weights, the preallocated KV pool, graphs."""
        p, t_s = self.profile, self._horizon_s
        if self.state is EngineState.CRASHED:
            return 0
        load_start_s = self.boot_s + p.scheduler_init_other_s
        gib = _CUDA_CONTEXT_GIB if t_s >= self.boot_s + 0.3 * p.scheduler_init_other_s else 0.0
        if t_s > load_start_s:
            gib += p.weight_memory_gb * min(1.0, (t_s - load_start_s) / max(p.weight_load_s, 1e-9))
        if t_s >= load_start_s + p.weight_load_s + p.kv_cache_allocation_s:
            gib += p.kv_capacity_tokens * p.kv_bytes_per_token / _GIB
        if self.ranks:
            gib += p.graph_memory_gb
        return int(gib * _GIB)

    def num_running(self) -> int:
        return sum(len(r.decoding) + (r.chunked is not None) for r in self.ranks)

    def num_waiting(self) -> int:
        return sum(len(r.waiting) for r in self.ranks)

    def kv_usage_ratio(self) -> float:
        if not self.ranks:
            return 0.0
        return sum(r.kv_used for r in self.ranks) / (len(self.ranks) * self.profile.kv_capacity_tokens)
