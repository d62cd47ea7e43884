"""Queueing model of one SGLang scheduler (one DP group): continuous batching with chunked prefill.

Each scheduler iteration (one forward pass) may carry a prefill chunk of up to
``chunked_prefill_size_tokens`` and one decode step for every running sequence; its duration
comes from the profile's cost model divided by the runtime speed factor. Admission is FCFS and
follows SGLang's PrefillAdder budget: a new request needs its uncached prompt plus its (clipped)
max_new_tokens in free KV slots, after reserving ``new_token_ratio`` x the remaining output of the
running requests. When a decode step cannot grow the KV cache, requests with the fewest output
tokens are retracted (their KV released, themselves re-queued at the front) and new_token_ratio
jumps up, exactly the SGLang mechanism behind ``num_retracted_requests_total``.

Iterations run on a virtual clock; ``advance_to(t)`` runs every iteration that *ends* by t, so
events are never delivered ahead of the driving clock.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from enginescope.simfleet.gpus import tp_prefill_factor
from enginescope.simfleet.sim_request import SimRequest

if TYPE_CHECKING:
    from enginescope.simfleet.engine import SimEngine

CLIP_MAX_NEW_TOKENS = 4096  # SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION
RETRACT_DECODE_STEPS = 20  # headroom SGLang keeps after retracting
DECODE_LOG_INTERVAL = 40  # --decode-log-interval
NON_STREAM_OUTPUT_INTERVAL = 50  # SGLANG_FORCE_STREAM_INTERVAL
IDLE_REPUBLISH_S = 30.0
LOAD_WINDOW_S = 5.0


@dataclass
class _Plan:
    chunks: list[tuple[SimRequest, int]] = field(default_factory=list)  # (request, tokens computed)
    admits: list[SimRequest] = field(default_factory=list)
    compute_s: float = 0.0
    duration_s: float = 0.0


class SchedulerRank:
    def __init__(self, engine: SimEngine, dp_rank: int, start_s: float) -> None:
        self.engine = engine
        self.p = engine.profile
        self.dp_rank = dp_rank
        self.now_s = start_s
        self.waiting: collections.deque[SimRequest] = collections.deque()
        self.decoding: list[SimRequest] = []
        self.chunked: SimRequest | None = None
        self.next_end_s: float | None = None  # end of the iteration in flight (None: idle)
        self.kv_used = 0
        self.kv_evictable = 0
        self.new_token_ratio = self.p.new_token_ratio_init
        # stats-log window
        self._decode_iters = 0
        self._window_start_s = start_s
        self._window_decode_tokens = 0
        self._gen_throughput = 0.0
        self._pending = {"prefill_compute": 0, "prefill_cache": 0, "decode": 0}
        self._last_hit_rate = 0.0
        self._spec = {"verify": 0, "accepted": 0, "correct": 0}
        # values only a decode report writes; prefill and idle reports leave them as they were
        self._decode_report: dict[str, float] = {"gen_throughput": 0.0}
        self._retracted_since_report = self._retracted_reported = 0
        self._last_publish_s = -math.inf
        self._last_graph = 1
        # time accounting not yet flushed to metrics, and the recent-load window
        self.unflushed = {"busy": 0.0, "overhead": 0.0, "idle": 0.0}
        self.load_log: collections.deque[tuple[float, float, int, int]] = collections.deque()

    # ---- driving -------------------------------------------------------------------------------
    def advance_to(self, horizon_s: float) -> None:
        self.next_end_s = None
        while True:
            self._expire_waiting()
            plan = self._plan()
            if plan is None:
                nxt = self._next_arrival_s()
                until = horizon_s if nxt is None else min(horizon_s, nxt)
                if until > self.now_s:
                    self.unflushed["idle"] += until - self.now_s
                    self.now_s = until
                if not self.busy:  # Scheduler.on_idle
                    self.new_token_ratio = self.p.new_token_ratio_init
                    self._maybe_republish_idle()
                if self.now_s >= horizon_s:
                    return
                continue
            if self.now_s + plan.duration_s > horizon_s:
                self.next_end_s = self.now_s + plan.duration_s  # the real-time driver wakes then
                return
            self._commit(plan)

    def _next_arrival_s(self) -> float | None:
        later = [r.scheduler_arrival_s for r in self.waiting if r.scheduler_arrival_s > self.now_s]
        return min(later) if later else None

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.decoding or self.chunked)

    def visible_waiting(self) -> int:
        return sum(1 for r in self.waiting if r.scheduler_arrival_s <= self.now_s)

    # ---- planning ------------------------------------------------------------------------------
    def _reserve(self, req: SimRequest) -> float:
        return min(req.remaining_new_tokens, CLIP_MAX_NEW_TOKENS) * self.new_token_ratio

    def _plan(self) -> _Plan | None:
        p, t = self.p, self.now_s
        if self.decoding:
            self._retract_if_needed()
        plan = _Plan()
        if self.chunked is None and not (self.waiting and self.waiting[0].scheduler_arrival_s <= t):
            if not self.decoding:
                return None
            plan.compute_s = self._compute_s(0)
            plan.duration_s = plan.compute_s + p.scheduler_overhead_s
            return plan
        budget = p.chunked_prefill_size_tokens
        free = self.p.kv_capacity_tokens - self.kv_used - sum(self._reserve(r) for r in self.decoding)
        if self.chunked is not None:
            take = min(self.chunked.prefill_target - self.chunked.prefill_done, budget)
            plan.chunks.append((self.chunked, take))
            budget -= take
            free -= self.chunked.prefill_target - self.chunked.prefill_done + self._reserve(self.chunked)
        running = len(self.decoding) + (self.chunked is not None)
        for req in self.waiting:
            if req.scheduler_arrival_s > t or running >= p.max_running_requests or budget <= 0:
                break
            uncached = req.prefill_target - req.cached_tokens
            need = uncached + min(req.remaining_new_tokens, CLIP_MAX_NEW_TOKENS)
            if need > free:
                break
            take = min(uncached, budget)
            plan.chunks.append((req, take))
            plan.admits.append(req)
            free -= need
            budget -= take
            running += 1
        if not plan.chunks and not self.decoding:
            self._abort_unservable_head()
            return None
        plan.compute_s = self._compute_s(sum(n for _, n in plan.chunks))
        plan.duration_s = plan.compute_s + p.scheduler_overhead_s
        return plan

    def _compute_s(self, prefill_tokens: int) -> float:
        p, engine = self.p, self.engine
        batch = len(self.decoding)
        seconds = prefill_tokens / p.prefill_tokens_per_s
        if batch:
            spec = engine.spec_enabled
            extra_width = p.spec_num_draft_tokens - 1 if spec else 0
            base = p.decode_step_base_s * (1.0 + p.spec_verify_overhead if spec else 1.0)
            context = sum(r.kv_tokens for r in self.decoding)
            per_seq = p.decode_step_per_seq_s + p.spec_verify_token_s * extra_width
            seconds += base + per_seq * batch + p.decode_step_per_kv_token_s * context
        elif prefill_tokens:
            seconds += p.decode_step_base_s  # fixed cost of a forward pass
        if prefill_tokens:
            seconds += p.prefill_fixed_s * tp_prefill_factor(p.tp_size)
        return seconds / engine.speed_factor

    def _abort_unservable_head(self) -> None:
        """A request that cannot fit even into an empty cache would block the queue forever."""
        if self.waiting and self.kv_used == 0 and self.waiting[0].scheduler_arrival_s <= self.now_s:
            req = self.waiting[0]
            if (
                req.prefill_target + min(req.remaining_new_tokens, CLIP_MAX_NEW_TOKENS)
                > self.p.kv_capacity_tokens
            ):
                self.waiting.popleft()
                self.engine.on_scheduler_abort(req, self.now_s, 400, "Request too long for the KV cache.")

    def _expire_waiting(self) -> None:
        timeout_s = self.p.request_waiting_timeout_s
        if timeout_s <= 0:
            return
        expired = [
            r for r in self.waiting if not r.admitted_once and self.now_s - r.scheduler_arrival_s >= timeout_s
        ]
        for req in expired:
            self.waiting.remove(req)
            self.engine.on_waiting_timeout(req, req.scheduler_arrival_s + timeout_s)

    def _retract_if_needed(self) -> None:
        step_tokens = self.p.spec_max_accept_tokens if self.engine.spec_enabled else 1
        if len(self.decoding) * step_tokens <= self.p.kv_capacity_tokens - self.kv_used:
            return
        victims: list[SimRequest] = []
        order = sorted(self.decoding, key=lambda r: (r.output_tokens, -r.prompt_tokens))
        while order and (
            len(self.decoding) * RETRACT_DECODE_STEPS * step_tokens > self.p.kv_capacity_tokens - self.kv_used
        ):
            victim = order.pop(0)
            if len(self.decoding) == 1:
                break  # SGLang keeps at least one request running
            self.decoding.remove(victim)
            self._release(victim)
            victim.retractions += 1
            victim.prefill_target = victim.seq_len
            victim.prefill_done = 0
            victim.queue_enter_s = self.now_s
            victims.append(victim)
        if not victims:
            return
        self.waiting.extendleft(reversed(victims))
        self._retracted_since_report += len(victims)
        decoded = sum(r.output_tokens for r in self.decoding)
        max_new = sum(r.max_new_tokens for r in self.decoding) or 1
        self.new_token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(self.decoding)) / max_new)
        self.engine.metrics.retracted(self.dp_rank, victims)

    # ---- KV cache ------------------------------------------------------------------------------
    def _alloc(self, tokens: int) -> None:
        shortfall = self.kv_used + self.kv_evictable + tokens - self.p.kv_capacity_tokens
        if shortfall > 0:
            evicted = min(shortfall, self.kv_evictable)
            self.kv_evictable -= evicted
            # radix-tree eviction costs ~a microsecond per 100 tokens of tree walk
            self.engine.metrics.evicted(self.dp_rank, evicted, 0.0002 + evicted * 1e-8)
        self.kv_used += tokens

    def _lock_cached(self, tokens: int) -> None:
        hit = min(tokens, self.kv_evictable)
        self.kv_evictable -= hit
        self.kv_used += hit
        if tokens > hit:
            self._alloc(tokens - hit)

    def _release(self, req: SimRequest) -> None:
        """Finished or retracted sequences stay in the radix cache as evictable tokens."""
        self.kv_used -= req.kv_tokens
        self.kv_evictable += req.kv_tokens
        req.kv_tokens = 0

    # ---- commit --------------------------------------------------------------------------------
    def _commit(self, plan: _Plan) -> None:
        t_start = self.now_s
        t_end = t_start + plan.duration_s
        decode_batch = list(self.decoding)
        for req in plan.admits:
            self.waiting.popleft()
            self._admit(req, t_start)
        prefill_new = prefill_cached = 0
        for req, take in plan.chunks:
            self._alloc(take)
            req.kv_tokens += take
            req.prefill_done += take
            prefill_new += take
            if req in plan.admits:
                prefill_cached += req.cached_tokens
            if req.in_prefill:
                self.chunked = req
                self.engine.metrics.prefill_stage(self.dp_rank, "chunked_prefill", t_end - t_start)
                continue
            self.chunked = None if self.chunked is req else self.chunked
            if req.prefill_finished_s is None:
                req.prefill_finished_s = t_end
                self.engine.metrics.prefill_stage(
                    self.dp_rank, "prefill_forward", t_end - req.forward_entry_s
                )
            self._alloc(1)
            req.kv_tokens += 1
            self.decoding.append(req)
            self.engine.deliver(req, 1, t_end)
        decode_tokens = self._decode_step(decode_batch, t_end)
        self._retire(t_end)
        self.now_s = t_end
        self.unflushed["busy"] += plan.compute_s
        self.unflushed["overhead"] += plan.duration_s - plan.compute_s
        self.load_log.append((t_end, plan.compute_s, prefill_new, decode_tokens))
        while self.load_log and self.load_log[0][0] < t_end - LOAD_WINDOW_S:
            self.load_log.popleft()
        self.engine.metrics.forward_pass(
            self.dp_rank,
            bool(plan.chunks),
            len(decode_batch),
            tokens=(prefill_new, prefill_cached, decode_tokens),
        )
        self._after_iteration(plan, prefill_new, prefill_cached, decode_batch, decode_tokens)

    def _admit(self, req: SimRequest, t: float) -> None:
        wait_s = t - req.queue_enter_s
        req.queue_time_total_s += wait_s
        if req.forward_entry_s is None:
            req.forward_entry_s = t
            req.queue_time_first_s = wait_s
            self.engine.metrics.request_started(self.dp_rank, req, wait_s)
        req.admitted_once = True
        self._lock_cached(req.cached_tokens)
        req.kv_tokens = req.cached_tokens
        req.prefill_done = req.cached_tokens

    def _decode_step(self, batch: list[SimRequest], t_end: float) -> int:
        if not batch:
            return 0
        engine = self.engine
        spec = engine.spec_enabled
        produced = 0
        grants = []
        for req in batch:
            room = min(req.max_new_tokens, req.target_output_tokens) - req.output_tokens
            tokens = engine.sample_accepted_tokens(req, room) if spec else 1
            grants.append(tokens)
            produced += tokens
        self._alloc(produced)  # one allocation per batch, like alloc_token_slots
        deliver = engine.deliver
        for req, tokens in zip(batch, grants, strict=True):
            req.kv_tokens += tokens
            deliver(req, tokens, t_end)
        if spec:
            self._spec["verify"] += len(batch)
            self._spec["accepted"] += produced
            self._spec["correct"] += produced - len(batch)
        step = (self.p.new_token_ratio_init - self.p.new_token_ratio_min) / self.p.new_token_ratio_decay_steps
        self.new_token_ratio = max(self.p.new_token_ratio_min, self.new_token_ratio - step)
        return produced

    def _retire(self, t_end: float) -> None:
        done = [r for r in self.decoding if r.finished_s is not None]
        for req in done:
            self.decoding.remove(req)
            self._release(req)

    def abort(self, req: SimRequest) -> bool:
        if req in self.waiting:
            self.waiting.remove(req)
            return True
        if req is self.chunked:
            self.chunked = None
            self._release(req)
            return True
        if req in self.decoding:
            self.decoding.remove(req)
            self._release(req)
            return True
        return False

    # ---- stats logging -------------------------------------------------------------------------
    def _after_iteration(
        self, plan: _Plan, prefill_new: int, prefill_cached: int, batch: list[SimRequest], decode_tokens: int
    ) -> None:
        self._pending["prefill_compute"] += prefill_new
        self._pending["prefill_cache"] += prefill_cached
        self._pending["decode"] += decode_tokens
        self._window_decode_tokens += decode_tokens
        if self.p.engine == "vllm":  # vLLM's engine core reports its scheduler stats every step
            self.publish(cache_hit_rate=prefill_cached / max(1, prefill_cached + prefill_new))
        elif plan.chunks:  # every prefill batch reports, a chunk continuation included
            self.publish(cache_hit_rate=prefill_cached / max(1, prefill_cached + prefill_new))
        if batch:
            self._decode_iters += 1
            self._last_graph = int(len(batch) <= self.p.cuda_graph_max_bs)
            if self._decode_iters % DECODE_LOG_INTERVAL == 0:
                self._decode_log(batch)

    def _decode_log(self, batch: list[SimRequest]) -> None:
        """SGLang's decode report: throughput since the previous one (idle time included)."""
        elapsed = self.now_s - self._window_start_s
        report = self._decode_report
        report["gen_throughput"] = self._window_decode_tokens / elapsed if elapsed > 0 else 0.0
        self._window_start_s, self._window_decode_tokens = self.now_s, 0
        report["decode_sum_seq_lens"] = sum(r.kv_tokens for r in batch)
        spec, p = self._spec, self.p
        if self.engine.spec_enabled and spec["verify"]:
            report["spec_accept_length"] = spec["accepted"] / spec["verify"]
            report["spec_accept_rate"] = spec["correct"] / (spec["verify"] * (p.spec_num_draft_tokens - 1))
            report["spec_num_steps"] = p.spec_num_steps
            report["spec_num_draft_tokens"] = p.spec_num_draft_tokens
        else:
            for name in ("spec_accept_length", "spec_accept_rate", "spec_num_steps", "spec_num_draft_tokens"):
                report[name] = 0.0
        self._spec = {"verify": 0, "accepted": 0, "correct": 0}
        self.publish(cache_hit_rate=0.0)  # SGLang's decode report zeroes the hit rate

    def _maybe_republish_idle(self) -> None:
        """Idle schedulers rewrite the gauges only once 30 s passed since the last report."""
        if self.now_s - self._last_publish_s > IDLE_REPUBLISH_S:
            self._decode_report["gen_throughput"] = 0.0
            self._retracted_since_report = self._retracted_reported  # not recounted when idle
            self.publish(cache_hit_rate=self._last_hit_rate)

    def publish(self, cache_hit_rate: float) -> None:
        cap = self.p.kv_capacity_tokens
        self._last_hit_rate = cache_hit_rate
        gauges = {
            **self._decode_report,
            "num_running_reqs": len(self.decoding) + (self.chunked is not None),
            "num_queue_reqs": self.visible_waiting(),
            "num_grammar_queue_reqs": 0,
            "cache_hit_rate": cache_hit_rate,
            "token_usage": round(self.kv_used / cap, 2),
            "full_token_usage": self.kv_used / cap,
            "num_used_tokens": self.kv_used,
            "kv_available_tokens": cap - self.kv_used - self.kv_evictable,
            "kv_evictable_tokens": self.kv_evictable,
            "kv_used_tokens": self.kv_used,
            "utilization": 0.0,  # SGLang 0.5.23 leaves it at 0 (code TODO)
            "fwd_occupancy": math.nan,  # needs SGLANG_ENABLE_METRICS_DEVICE_TIMER
            "new_token_ratio": self.new_token_ratio,
            "is_cuda_graph": self._last_graph,
            "num_unique_running_routing_keys": 0,
        }
        metrics = self.engine.metrics
        metrics.publish_gauges(self.dp_rank, gauges, retracted_reqs=self._retracted_since_report)
        self._retracted_reported, self._retracted_since_report = self._retracted_since_report, 0
        pending = self._pending
        metrics.log_interval_tokens(
            self.dp_rank, pending["prefill_compute"], pending["prefill_cache"], pending["decode"]
        )
        self._pending = {"prefill_compute": 0, "prefill_cache": 0, "decode": 0}
        self._last_publish_s = self.now_s
