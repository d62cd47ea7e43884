"""Simulated SGLang 0.5.23 engine: one replica (tokenizer manager + schedulers + GPU model).

Behaviour comes from the queueing model in ``enginescope.simfleet.scheduler`` (continuous batching, chunked
prefill, KV capacity with retraction, prefix-cache hits, speculative decoding) driven by the
per-model costs of an ``EngineProfile``. Metrics land in SGLang's families (``engine.registry``,
rendered by ``enginescope.simfleet.exposition``); finished requests go to the optional per-request export
(``enginescope.simfleet.request_export``) and ground truth (``enginescope.simfleet.groundtruth``).

Public API (times are engine-clock seconds unless the name says epoch)::

    engine = SimEngine(profile=DEFAULT, name="replica-0", seed=0, clock=None,
                       export_dir=None, groundtruth=None)
        clock=None: virtual clock moved only by step()/advance_to() (deterministic tests);
        clock=time.monotonic: real time, driven by ``await engine.run(tick_s=0.025)``, which wakes
        at every iteration end (tokens stream per decode step) and at least every tick_s.
    engine.step(dt_s) / engine.advance_to(t_s)   run every scheduler iteration that ends by then
    await engine.run(tick_s)                      real-time driver; sleeps ~1 s when idle; stop: close()
    engine.submit(prompt_tokens, max_new_tokens=None, output_tokens=None, stream=False,
                  endpoint="/v1/completions", rid=None, sampling=None, sink=None,
                  structured=False, ignore_eos=False) -> SimRequest
        raises EngineUnavailable(status=503) while starting/draining, (status=None) when crashed;
        ValueError for a prompt that does not fit the context. ``sampling`` holds the request's
        sampling values (temperature, top_p, ...) for the per-request export. ``sink(OutputEvent)`` gets every
        output batch; the last one has finished=True (error_status set on aborts/crash).
    engine.abort(rid) -> bool                     client went away
    knobs: set_spec_accept_length(x) (1.0 = off), set_prefix_cache_hit_ratio(x), set_speed_factor(f)
           (1.0 normal, 0.6 throttled), crash(), restart(), begin_drain(), close()
    state: engine.state (EngineState), engine.ready, engine.pid, engine.drained,
           engine.add_listener(cb(engine)) called on every state change
    load (simulated GPU; ``enginescope.simfleet.engine_load``): gpu_busy_fraction(window_s=1.0) 0..1,
           tokens_per_s(window_s=1.0),
           generation_tokens_per_s(window_s=1.0), kv_used_bytes() per GPU,
           gpu_memory_used_bytes() per GPU, num_running(), num_waiting(), epoch(t_s)
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enginescope.simfleet import vllm_engine
from enginescope.simfleet.engine_admission import (
    EngineState,
    EngineUnavailable,
    check_admission,
    sample_accepted_tokens,
    sample_cached_tokens,
    sample_output_tokens,
)
from enginescope.simfleet.engine_load import EngineLoadFigures
from enginescope.simfleet.engine_metrics import EngineMetrics
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.metric_registry import MetricRegistry
from enginescope.simfleet.profile import DEFAULT, EngineProfile, ProfileError
from enginescope.simfleet.request_export import RequestExporter, abort_record, finished_record
from enginescope.simfleet.scheduler import NON_STREAM_OUTPUT_INTERVAL, SchedulerRank
from enginescope.simfleet.sim_request import WAITING_TIMEOUT_MESSAGE, OutputEvent, SimRequest
from enginescope.simfleet.spec_decode import request_offset

__all__ = ["EngineState", "EngineUnavailable", "SimEngine"]

_MIN_SLEEP_S = 0.0002  # never spin: the loop also serves HTTP and the sidecars


class SimEngine(EngineLoadFigures):
    """One simulated replica: lifecycle, knobs, request intake and the scheduler clock."""

    def __init__(
        self,
        profile: EngineProfile = DEFAULT,
        *,
        name: str = "replica-0",
        seed: int = 0,
        clock: Callable[[], float] | None = None,
        export_dir: str | Path | None = None,
        groundtruth: GroundTruth | None = None,
    ) -> None:
        self.profile = profile
        self.name = name
        self._rng = random.Random(seed)
        self._clock = clock
        self._horizon_s = clock() if clock else 0.0
        self.epoch_offset_s = time.time() - self._horizon_s
        self.spec_accept_length = profile.spec_accept_length
        self.class_accept_lengths: dict[tuple[str, str], float] = {}  # (label, value) -> mean length
        self.prefix_cache_hit_ratio = profile.prefix_cache_hit_ratio
        self.speed_factor = 1.0
        # vLLM has no per-request export file; only the SGLang simulation writes one
        self.exporter = RequestExporter(export_dir) if export_dir and profile.engine == "sglang" else None
        self.groundtruth = groundtruth
        self._listeners: list[Callable[[SimEngine], None]] = []
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._boot(self._horizon_s)

    # ---- lifecycle -----------------------------------------------------------------------------
    def _boot(self, t: float) -> None:
        self.pid = self._rng.randint(2000, 60000)
        if self.profile.engine == "vllm":
            self.registry = vllm_engine.new_registry()
            self.metrics: EngineMetrics | vllm_engine.VllmMetrics = vllm_engine.VllmMetrics(
                self.profile, self.registry, self.pid
            )
        else:
            self.registry = MetricRegistry()
            self.metrics = EngineMetrics(self.profile, self.registry, self.pid)
        # vLLM's front end gets every engine step's output; SGLang batches non-streamed ones
        self._output_interval = 1 if self.profile.engine == "vllm" else NON_STREAM_OUTPUT_INTERVAL
        self.state = EngineState.STARTING
        self.boot_s = t
        p = self.profile
        self.scheduler_ready_s = t + p.startup_total_s - p.server_warmup_s
        self.ready_s = t + p.startup_total_s
        self.ranks: list[SchedulerRank] = []
        self._requests: dict[str, SimRequest] = {}
        self._dp_cycle = itertools.cycle(range(p.dp_size))
        self._cpu = {"last_s": t, "requests": 0, "tokens": 0}
        self._accounting_flush_s = t

    def add_listener(self, callback: Callable[[SimEngine], None]) -> None:
        self._listeners.append(callback)

    def _set_state(self, state: EngineState) -> None:
        self.state = state
        for callback in list(self._listeners):
            callback(self)
        self._poke()

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def drained(self) -> bool:
        return not self._requests

    def now_s(self) -> float:
        return self._clock() if self._clock else self._horizon_s

    def epoch(self, t_s: float) -> float:
        return t_s + self.epoch_offset_s

    def crash(self) -> None:
        """The process dies: in-flight requests lose their connection, the server stops answering."""
        if self.state is EngineState.CRASHED:
            return
        lost = list(self._requests.values())
        self._requests.clear()
        self.ranks = []
        for req in lost:
            req.emit(
                OutputEvent(req.rid, 0, req.output_tokens, self.now_s(), finished=True, error_status=None)
            )
        self._set_state(EngineState.CRASHED)

    def restart(self) -> None:
        """A fresh process: cold start again, every counter back to zero."""
        if self.state is not EngineState.CRASHED:
            self.crash()
        self._horizon_s = max(self._horizon_s, self.now_s())
        self._boot(self._horizon_s)
        self._set_state(EngineState.STARTING)

    def begin_drain(self) -> None:
        if self.state in (EngineState.READY, EngineState.STARTING):
            self._set_state(EngineState.DRAINING)

    def close(self) -> None:
        self._closed = True
        self._poke()
        if self.exporter:
            self.exporter.close()

    # ---- knobs ---------------------------------------------------------------------------------
    def set_spec_accept_length(self, accept_length: float) -> None:
        self.spec_accept_length = self._checked_length(accept_length)

    def set_class_accept_length(self, label: str, value: str, accept_length: float) -> None:
        """Mean acceptance of one traffic class (requests whose custom label ``label`` is ``value``)."""
        self.class_accept_lengths[(label, value)] = self._checked_length(accept_length)

    def _checked_length(self, accept_length: float) -> float:
        limit = self.profile.spec_max_accept_tokens
        if not 1.0 <= accept_length <= limit:
            raise ProfileError(f"spec accept length must be within 1..{limit}, got {accept_length!r}")
        return float(accept_length)

    @property
    def spec_enabled(self) -> bool:
        """Speculation runs when the engine or any traffic class accepts more than one token/step."""
        return self.spec_accept_length > 1.0

    def accept_length_for(self, req: SimRequest) -> float:
        """The mean acceptance of ``req``'s traffic class (the engine's own when it has none)."""
        for item in (req.custom_labels or {}).items():
            found = self.class_accept_lengths.get(item)
            if found is not None:
                return found
        return self.spec_accept_length

    def set_prefix_cache_hit_ratio(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ProfileError(f"prefix cache hit ratio must be within 0..1, got {ratio!r}")
        self.prefix_cache_hit_ratio = float(ratio)

    def set_speed_factor(self, factor: float) -> None:
        if not 0.0 < factor <= 2.0:
            raise ProfileError(f"speed factor must be within (0, 2], got {factor!r}")
        self.speed_factor = float(factor)

    # ---- requests ------------------------------------------------------------------------------
    def submit(
        self,
        prompt_tokens: int,
        *,
        max_new_tokens: int | None = None,
        output_tokens: int | None = None,
        stream: bool = False,
        endpoint: str = "/v1/completions",
        rid: str | None = None,
        sampling: dict[str, Any] | None = None,
        sink: Callable[[OutputEvent], None] | None = None,
        structured: bool = False,
        ignore_eos: bool = False,
        custom_labels: dict[str, str] | None = None,
    ) -> SimRequest:
        prompt_tokens, max_new_tokens = check_admission(
            self.state, self.profile, prompt_tokens, max_new_tokens
        )
        if ignore_eos:
            target = max_new_tokens
        else:
            target = output_tokens or sample_output_tokens(self._rng, self.profile.output_tokens_mean)
        now = self.now_s()
        rid = rid or uuid.UUID(int=self._rng.getrandbits(128)).hex
        req = SimRequest(
            rid=rid,
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_new_tokens,
            target_output_tokens=max(1, target),
            stream=stream,
            endpoint=endpoint,
            created_s=now,
            tokenize_s=self.profile.request_overhead_s + 1.5e-7 * prompt_tokens,
            sink=sink,
            structured=structured,
            dp_rank=next(self._dp_cycle),
            custom_labels=dict(custom_labels) if custom_labels else None,
            spec_offset=request_offset(self._rng, self.profile.spec_request_sigma),
        )
        req.params = {"received_time": now, **(sampling or {})}
        req.cached_tokens = sample_cached_tokens(self._rng, self.prefix_cache_hit_ratio, prompt_tokens)
        req.prefill_target = prompt_tokens
        req.queue_enter_s = req.scheduler_arrival_s
        self._requests[rid] = req
        self.ranks[req.dp_rank].waiting.append(req)
        self._poke()
        return req

    def sample_accepted_tokens(self, req: SimRequest, room: int) -> int:
        """Tokens one verify step emits for ``req`` (accepted drafts + bonus), mean = accept length."""
        tokens = sample_accepted_tokens(self._rng, self.profile, self.accept_length_for(req), req, room)
        self.metrics.spec_verified(self.profile.spec_drafts, tokens - 1)
        return tokens

    def abort(self, rid: str) -> bool:
        req = self._requests.pop(rid, None)
        if req is None or not self.ranks:
            return False
        self.ranks[req.dp_rank].abort(req)
        self.metrics.request_aborted(req)
        return True

    # ---- callbacks from the schedulers (tokenizer-manager side) --------------------------------
    def deliver(self, req: SimRequest, tokens: int, t: float) -> None:
        req.output_tokens += tokens
        finish = req.finish_reason_at(req.output_tokens)
        first = req.first_token_s is None
        pending = req.output_tokens - req.last_output_tokens
        if first:
            req.first_token_s = req.last_output_s = t
            self.metrics.first_token(req, t - req.created_s)
        elif req.stream or finish or pending >= self._output_interval:
            interval = t - req.last_output_s
            self.metrics.output_chunk(req, interval, pending)
            req.itl_chunks.append((interval, pending))
            req.last_output_s = t
        else:
            return
        req.last_output_tokens = req.output_tokens
        self._cpu["tokens"] += tokens
        if finish:
            req.finish_reason, req.finished_s = finish, t
            self._finished(req)
        req.emit(
            OutputEvent(req.rid, pending, req.output_tokens, t, finished=bool(finish), finish_reason=finish)
        )

    def _finished(self, req: SimRequest) -> None:
        self._requests.pop(req.rid, None)
        e2e_s = req.finished_s - req.created_s
        tpot_s = None
        if req.output_tokens >= 2:
            tpot_s = (req.finished_s - req.first_token_s) / (req.output_tokens - 1)
        self.metrics.request_finished(req, e2e_s, tpot_s)
        self._cpu["requests"] += 1
        if self.exporter and "HEALTH_CHECK" not in req.rid:  # SGLang skips health-check requests
            self.exporter.write(finished_record(req, self), self.epoch(req.finished_s))
        if self.groundtruth is not None:
            self.groundtruth.record(req, self)

    def on_waiting_timeout(self, req: SimRequest, t: float) -> None:
        self._abort_from_queue(req, t, 503, WAITING_TIMEOUT_MESSAGE)

    def on_scheduler_abort(self, req: SimRequest, t: float, status: int, message: str) -> None:
        self._abort_from_queue(req, t, status, message)

    def _abort_from_queue(self, req: SimRequest, t: float, status: int, message: str) -> None:
        self._requests.pop(req.rid, None)
        req.aborted = True
        req.finished_s = t
        req.finish_reason = {"type": "abort", "status_code": status, "message": message}
        self.metrics.request_aborted(req)
        if self.exporter:
            self.exporter.write(abort_record(req, self), self.epoch(t))
        if self.groundtruth is not None:
            self.groundtruth.record(req, self)
        req.emit(OutputEvent(req.rid, 0, 0, t, True, req.finish_reason, error_status=status))

    # ---- driving -------------------------------------------------------------------------------
    def step(self, dt_s: float) -> None:
        self.advance_to(self._horizon_s + dt_s)

    def advance_to(self, t_s: float) -> None:
        if self.state is EngineState.CRASHED:
            self._horizon_s = max(self._horizon_s, t_s)
            return
        if not self.ranks and t_s >= self.scheduler_ready_s:
            self._schedulers_ready()
        if self.state is EngineState.STARTING and t_s >= self.ready_s:
            self.metrics.startup_phase("tokenizer_e2e", self.profile.startup_total_s)
            self._set_state(EngineState.READY)
        for rank in self.ranks:
            rank.advance_to(t_s)
        self._horizon_s = max(self._horizon_s, t_s)
        if self.ranks and t_s - self._accounting_flush_s >= 1.0:
            self._flush_accounting(t_s)

    def _schedulers_ready(self) -> None:
        p, t = self.profile, self.scheduler_ready_s
        self.metrics.startup_phase("load_weight", p.weight_load_s)
        self.metrics.startup_phase("kv_cache_allocation", p.kv_cache_allocation_s)
        self.metrics.startup_phase("scheduler_e2e", t - self.boot_s)
        self.metrics.cuda_graph_captured()
        self.metrics.scheduler_ready()
        self.ranks = [SchedulerRank(self, dp, t) for dp in range(p.dp_size)]
        self._accounting_flush_s = t

    def _flush_accounting(self, t_s: float) -> None:
        for rank in self.ranks:
            acc = rank.unflushed
            self.metrics.time_accounting(rank.dp_rank, acc["busy"], acc["overhead"], acc["idle"])
            rank.unflushed = {"busy": 0.0, "overhead": 0.0, "idle": 0.0}
        self._accounting_flush_s = t_s
        elapsed = t_s - self._cpu["last_s"]
        if elapsed >= 5.0:  # SGLang's CPU monitors sample every 5 s
            cpu = self._cpu
            self.metrics.process_cpu(
                tokenizer_s=0.012 * elapsed + 0.0006 * cpu["requests"] + 2e-6 * cpu["tokens"],
                detokenizer_s=0.001 * elapsed + 1e-6 * cpu["tokens"],
            )
            self._cpu = {"last_s": t_s, "requests": 0, "tokens": 0}

    def _until_next_iteration_s(self, tick_s: float) -> float:
        """Sleep until the next scheduler iteration ends, so its tokens leave when they are decoded
        (per decode step, per accepted block with speculation), as SGLang streams them."""
        ends = [rank.next_end_s for rank in self.ranks if rank.next_end_s is not None]
        if not ends or self._clock is None:
            return tick_s
        return min(tick_s, max(_MIN_SLEEP_S, min(ends) - self._clock()))

    def _busy(self) -> bool:
        return any(rank.busy for rank in self.ranks)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self, tick_s: float = 0.025) -> None:
        """Real-time driver (needs ``clock``); returns after close()."""
        if self._clock is None:
            raise RuntimeError("SimEngine.run() needs a real clock, e.g. SimEngine(clock=time.monotonic)")
        self._wake = asyncio.Event()
        while not self._closed:
            self.advance_to(self._clock())
            if self.state is EngineState.STARTING:
                await asyncio.sleep(min(0.25, max(tick_s, self.ready_s - self._clock())))
            elif self._busy():
                await asyncio.sleep(self._until_next_iteration_s(tick_s))
            else:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
