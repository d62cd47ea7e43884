"""Open-loop load generator speaking the OpenAI HTTP API (stdlib asyncio only).

Works against the simulated engines and any real OpenAI-compatible endpoint. Arrivals follow
a time-varying Poisson process (``Poisson``, ``Step``, ``Spike``, ``Diurnal`` or a
``Schedule`` of them), prompt/output lengths a lognormal ShareGPT-like mix. Requests go
through a :class:`enginescope.loadgen.router.Router`, optionally under a concurrency cap, are retried on
another replica when a connection fails, and each one is recorded client-side (TTFT, every
inter-token gap, end-to-end latency) as a :class:`RequestResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from enginescope.collectors.signals import QUANTILES, quantile_label
from enginescope.loadgen.openai_client import ClientError, OpenAIRequest, send_request
from enginescope.loadgen.router import Lease, NoBackendError, Router

# ---------------------------------------------------------------------------------------
# Arrival patterns: rate_at(t_s) in requests/s, t_s = seconds since the run started.


class ArrivalPattern(Protocol):
    def rate_at(self, t_s: float) -> float: ...

    def max_rate_rps(self) -> float: ...


@dataclass(frozen=True)
class Poisson:
    rate_rps: float

    def rate_at(self, t_s: float) -> float:
        return self.rate_rps

    def max_rate_rps(self) -> float:
        return self.rate_rps


@dataclass(frozen=True)
class Step:
    base_rps: float
    high_rps: float
    at_s: float

    def rate_at(self, t_s: float) -> float:
        return self.high_rps if t_s >= self.at_s else self.base_rps

    def max_rate_rps(self) -> float:
        return max(self.base_rps, self.high_rps)


@dataclass(frozen=True)
class Spike:
    base_rps: float
    peak_rps: float
    start_s: float
    duration_s: float

    def rate_at(self, t_s: float) -> float:
        inside = self.start_s <= t_s < self.start_s + self.duration_s
        return self.peak_rps if inside else self.base_rps

    def max_rate_rps(self) -> float:
        return max(self.base_rps, self.peak_rps)


@dataclass(frozen=True)
class Diurnal:
    """Sinusoidal day/night cycle compressed into ``period_s``; trough first."""

    mean_rps: float
    amplitude: float = 0.5  # fraction of the mean, 0..1
    period_s: float = 600.0

    def rate_at(self, t_s: float) -> float:
        phase = 2 * math.pi * t_s / self.period_s
        return self.mean_rps * (1 - self.amplitude * math.cos(phase))

    def max_rate_rps(self) -> float:
        return self.mean_rps * (1 + self.amplitude)


@dataclass(frozen=True)
class Schedule:
    """Patterns one after another: ``[(start_s, pattern), ...]``; each sees time since its start."""

    segments: tuple[tuple[float, ArrivalPattern], ...]

    def _segment(self, t_s: float) -> tuple[float, ArrivalPattern]:
        current = self.segments[0]
        for segment in self.segments:
            if segment[0] <= t_s:
                current = segment
        return current

    def rate_at(self, t_s: float) -> float:
        start_s, pattern = self._segment(t_s)
        return pattern.rate_at(t_s - start_s)

    def max_rate_rps(self) -> float:
        return max(pattern.max_rate_rps() for _, pattern in self.segments)


PATTERNS = ("poisson", "step", "spike", "diurnal")


def make_pattern(name: str, rate_rps: float, duration_s: float) -> ArrivalPattern:
    """CLI shapes around a base rate: spike = 4x for the middle fifth, step = 2x from half-time."""
    if rate_rps <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate_rps}")
    if name == "poisson":
        return Poisson(rate_rps)
    if name == "step":
        return Step(rate_rps, 2 * rate_rps, duration_s / 2)
    if name == "spike":
        return Spike(rate_rps, 4 * rate_rps, 0.4 * duration_s, 0.2 * duration_s)
    if name == "diurnal":
        return Diurnal(rate_rps, 0.5, duration_s)
    raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}")


def next_arrival_s(
    pattern: ArrivalPattern, after_s: float, rng: random.Random, horizon_s: float
) -> float | None:
    """Next arrival of the non-homogeneous Poisson process after ``after_s`` (thinning).

    Returns None if there is none before ``horizon_s``.
    """
    peak_rps = pattern.max_rate_rps()
    if peak_rps <= 0:
        return None
    t_s = after_s
    while True:
        t_s += rng.expovariate(peak_rps)
        if t_s >= horizon_s:
            return None
        if rng.random() * peak_rps < pattern.rate_at(t_s):
            return t_s


def arrival_offsets(pattern: ArrivalPattern, duration_s: float, seed: int = 0) -> list[float]:
    """All arrival times in ``[0, duration_s)`` for a fixed pattern (pure; used by tests)."""
    rng = random.Random(seed)
    offsets: list[float] = []
    t_s = 0.0
    while (t_s := next_arrival_s(pattern, t_s, rng, duration_s)) is not None:
        offsets.append(t_s)
    return offsets


# ---------------------------------------------------------------------------------------
# Request shapes


@dataclass(frozen=True)
class LogNormalTokens:
    median_tokens: float
    sigma: float
    min_tokens: int = 1
    max_tokens: int = 8192

    def sample(self, rng: random.Random) -> int:
        value = rng.lognormvariate(math.log(self.median_tokens), self.sigma)
        return int(min(max(round(value), self.min_tokens), self.max_tokens))


@dataclass(frozen=True)
class TrafficClass:
    """One class of traffic (e.g. a task type): its share and, optionally, its own lengths."""

    name: str
    weight: float = 1.0
    prompt: LogNormalTokens | None = None  # None: the mix's
    output: LogNormalTokens | None = None


@dataclass(frozen=True)
class RequestMix:
    prompt: LogNormalTokens
    output: LogNormalTokens
    name: str = "custom"
    # Traffic classes (``TrafficClass`` or ``(name, weight)``): each request draws one and sends it
    # as SGLang's custom-labels header ``x-custom-labels: {"<class_label>": "<name>"}``; () = none.
    classes: tuple[TrafficClass | tuple[str, float], ...] = ()
    class_label: str = "task"

    def __post_init__(self) -> None:
        classes = tuple(c if isinstance(c, TrafficClass) else TrafficClass(*c) for c in self.classes)
        object.__setattr__(self, "classes", classes)

    def sample_class(self, rng: random.Random) -> TrafficClass | None:
        """One request's traffic class (None when the mix has none)."""
        if not self.classes:
            return None
        return rng.choices(self.classes, [c.weight for c in self.classes])[0]  # type: ignore[misc]

    def sample(self, rng: random.Random) -> tuple[str, int, int]:
        """(class name or "", prompt tokens, max output tokens) of one request."""
        chosen = self.sample_class(rng)
        prompt = chosen.prompt if chosen is not None and chosen.prompt is not None else self.prompt
        output = chosen.output if chosen is not None and chosen.output is not None else self.output
        return (chosen.name if chosen is not None else ""), prompt.sample(rng), output.sample(rng)


# ShareGPT conversations: heavy-tailed, median prompt ~1-2 hundred tokens, similar outputs.
SHAREGPT_LIKE = RequestMix(
    prompt=LogNormalTokens(180, 1.0, 4, 4096), output=LogNormalTokens(140, 0.8, 4, 1024), name="sharegpt"
)

_WORDS = ("the", "and", "for", "you", "are", "not", "but", "can", "all", "new", "one", "may", "see", "use")


def make_prompt(tokens: int, rng: random.Random) -> str:
    """~``tokens`` tokens of text: 3-letter words plus a space are ~4 characters per token."""
    return " ".join(rng.choice(_WORDS) for _ in range(max(tokens, 1)))


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class RequestResult:
    request_id: str
    scheduled_s: float  # arrival offset since the run started
    start_ts_s: float  # epoch seconds when the first attempt was sent
    prompt_tokens: int
    max_tokens: int
    ok: bool = False
    replica: str = ""
    ttft_s: float | None = None  # from the first attempt's send to the first token
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    attempts: int = 0
    error: str = ""
    traffic_class: str = ""  # the custom label sent (RequestMix.classes), "" for none

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


@dataclass
class LoadConfig:
    model: str = "default"
    api: str = "chat"  # chat | completions
    stream: bool = True
    max_concurrency: int | None = None
    request_timeout_s: float = 300.0
    max_attempts: int = 3
    ignore_eos: bool = True  # so max_tokens fixes the output length (SGLang/vLLM extension)
    api_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers (e.g. Modal-Key/Modal-Secret)
    seed: int = 0


class LoadGenerator:
    """Drive a router with open-loop arrivals. ``pattern`` and ``mix`` may be swapped mid-run."""

    def __init__(
        self,
        router: Router,
        pattern: ArrivalPattern,
        mix: RequestMix = SHAREGPT_LIKE,
        config: LoadConfig | None = None,
        on_result: Callable[[RequestResult], None] | None = None,
    ) -> None:
        self.router = router
        self.pattern = pattern
        self.mix = mix
        self.config = config or LoadConfig()
        self.results: list[RequestResult] = []
        self._on_result = on_result
        self._rng = random.Random(self.config.seed)
        self._ids = itertools.count()
        self._slots = asyncio.Semaphore(self.config.max_concurrency) if self.config.max_concurrency else None
        self.in_flight = 0
        self._stop_arrivals = asyncio.Event()

    def stop_arrivals(self) -> None:
        """End the run early: no new arrivals; ``run`` still waits for requests in flight."""
        self._stop_arrivals.set()

    async def run(self, duration_s: float = math.inf) -> list[RequestResult]:
        """Issue arrivals for ``duration_s`` seconds (or until ``stop_arrivals``), then wait for
        the requests in flight."""
        loop = asyncio.get_running_loop()
        start_s = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        t_s = 0.0
        try:
            while (t_s := self._next(t_s, duration_s)) is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_arrivals.wait(), max(0.0, start_s + t_s - loop.time()))
                if self._stop_arrivals.is_set():
                    break
                if self._slots is not None:
                    await self._slots.acquire()
                task = loop.create_task(self._one(t_s))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return self.results

    def _next(self, after_s: float, duration_s: float) -> float | None:
        # Re-reads self.pattern on every arrival, so a swapped pattern applies immediately.
        return next_arrival_s(self.pattern, after_s, self._rng, duration_s)

    async def _one(self, scheduled_s: float) -> None:
        mix = self.mix
        traffic_class, prompt_tokens, max_tokens = mix.sample(self._rng)
        request = OpenAIRequest(
            model=self.config.model,
            prompt=make_prompt(prompt_tokens, self._rng),
            max_tokens=max_tokens,
            api=self.config.api,
            stream=self.config.stream,
            ignore_eos=self.config.ignore_eos,
            api_key=self.config.api_key,
            headers=self.config.headers,
            custom_labels=((mix.class_label, traffic_class),) if traffic_class else (),
        )
        result = RequestResult(
            f"req-{next(self._ids)}", scheduled_s, time.time(), prompt_tokens, request.max_tokens
        )
        result.traffic_class = traffic_class
        self.in_flight += 1
        try:
            await self._attempts(request, result)
        finally:
            self.in_flight -= 1
            if self._slots is not None:
                self._slots.release()
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)

    async def _attempts(self, request: OpenAIRequest, result: RequestResult) -> None:
        failed: list[str] = []
        started_s = time.perf_counter()
        while result.attempts < self.config.max_attempts:
            result.attempts += 1
            try:
                lease = await self.router.acquire(exclude=failed, timeout_s=self.config.request_timeout_s)
            except NoBackendError as exc:
                result.error = str(exc)
                return
            try:
                await self._send(request, result, lease, started_s)
                return
            except (ClientError, OSError, TimeoutError) as exc:
                result.error = f"{lease.base_url}: {exc}"
                failed.append(lease.replica)
            finally:
                self.router.release(lease)

    async def _send(
        self, request: OpenAIRequest, result: RequestResult, lease: Lease, started_s: float
    ) -> None:
        async with asyncio.timeout(self.config.request_timeout_s):
            response = await send_request(lease.base_url, request)
        result.replica = lease.replica
        result.output_tokens = response.output_tokens
        result.itl_s = response.itl_s
        if response.first_token_s is not None:
            result.ttft_s = response.first_token_s - started_s
        result.e2e_s = response.done_s - started_s
        result.ok, result.error = True, ""


# ---------------------------------------------------------------------------------------
# Summary and export (exact, from per-request data)


def percentile(values: list[float], q: float) -> float:
    """Exact q-quantile (0..1) with linear interpolation between order statistics; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_series(done: list[RequestResult]) -> dict[str, list[float]]:
    """Client-side latencies (s) of finished requests: TTFT, every inter-token gap, e2e."""
    return {
        "ttft": [r.ttft_s for r in done if r.ttft_s is not None],
        "itl": [gap for r in done for gap in r.itl_s],
        "e2e": [r.e2e_s for r in done if r.e2e_s is not None],
    }


def summarize(results: list[RequestResult]) -> dict[str, object]:
    """Counts plus p50/p95/p99 of TTFT, ITL (every gap of every request) and e2e, in seconds."""
    done = [r for r in results if r.ok]
    series = {f"{name}_s": values for name, values in latency_series(done).items()}
    summary: dict[str, object] = {
        "requests": len(results),
        "ok": len(done),
        "failed": len(results) - len(done),
        "retried": sum(1 for r in results if r.attempts > 1),
        "output_tokens": sum(r.output_tokens for r in done),
    }
    for name, values in series.items():
        summary[name] = {quantile_label(q): percentile(values, q) for q in QUANTILES}
    return summary


def write_results(results: list[RequestResult], path: Path) -> None:
    """One row per request: ``.parquet`` via pyarrow, anything else as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([dataclasses.asdict(r) for r in results]), path)
        return
    with path.open("w", encoding="utf-8") as out:
        for result in results:
            out.write(result.to_json() + "\n")
