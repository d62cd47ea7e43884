"""Modal-like autoscaling policy: a pure function of (time, in-flight per replica, config).

Modelled on Modal's documented knobs (``min_containers``, ``max_containers``,
``buffer_containers``, ``scaledown_window``, ``scaleup_window`` and
``@modal.concurrent(target_inputs=..., max_inputs=...)``):

* demand is the inputs in flight on every container plus the router's backlog;
* the instant need is ``ceil(demand / target_inputs)``, plus ``buffer_containers`` idle
  containers while there is any load;
* scale-up happens as soon as the need (sustained over ``scaleup_window_s``, 0 = at once)
  exceeds the current count;
* scale-down happens only when the need has stayed below the current count for a whole
  ``scaledown_window_s``: the policy keeps the largest need seen within that window;
* the result is clamped to ``[min_containers, max_containers]``.

No clocks, threads or I/O here: callers pass ``now_s``, so tests drive time by hand.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AutoscalerConfig:
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window_s: float = 60.0
    scaleup_window_s: float = 0.0
    target_inputs: int = 10  # @modal.concurrent(target_inputs=...)
    max_inputs: int | None = None  # @modal.concurrent(max_inputs=...): router cap per container

    def __post_init__(self) -> None:
        if self.min_containers < 0:
            raise ValueError(f"min_containers must be >= 0, got {self.min_containers}")
        if self.max_containers is not None and self.max_containers < max(self.min_containers, 1):
            raise ValueError(
                f"max_containers ({self.max_containers}) must be >= 1 and >= min_containers "
                f"({self.min_containers})"
            )
        if self.buffer_containers < 0:
            raise ValueError(f"buffer_containers must be >= 0, got {self.buffer_containers}")
        if self.target_inputs < 1:
            raise ValueError(f"target_inputs must be >= 1, got {self.target_inputs}")
        if self.max_inputs is not None and self.max_inputs < self.target_inputs:
            raise ValueError(
                f"max_inputs ({self.max_inputs}) must be >= target_inputs ({self.target_inputs})"
            )
        if self.scaledown_window_s < 0 or self.scaleup_window_s < 0:
            raise ValueError("scaledown_window_s and scaleup_window_s must be >= 0")


@dataclass(frozen=True)
class Decision:
    """What the policy wants now. ``desired`` is clamped; ``reason`` explains a change."""

    desired: int
    current: int
    demand: int
    reason: str

    @property
    def delta(self) -> int:
        return self.desired - self.current


def instant_need(demand: int, config: AutoscalerConfig) -> int:
    """Containers needed for ``demand`` concurrent inputs right now (before clamping)."""
    if demand <= 0:
        return 0
    return math.ceil(demand / config.target_inputs) + config.buffer_containers


def clamp(count: int, config: AutoscalerConfig) -> int:
    count = max(count, config.min_containers)
    if config.max_containers is not None:
        count = min(count, config.max_containers)
    return count


class Autoscaler:
    """Stateful only in the need history it keeps for the scale-up/scale-down windows."""

    def __init__(self, config: AutoscalerConfig) -> None:
        self.config = config
        self._history: deque[tuple[float, int]] = deque()

    def decide(self, now_s: float, in_flight: Sequence[int], backlog: int = 0) -> Decision:
        """``in_flight``: inputs on each live container (starting ones count as 0)."""
        if backlog < 0 or any(n < 0 for n in in_flight):
            raise ValueError("in-flight counts and backlog must be >= 0")
        current = len(in_flight)
        demand = sum(in_flight) + backlog
        need = instant_need(demand, self.config)
        self._remember(now_s, need)
        sustained = self._extreme_over(now_s, self.config.scaleup_window_s, min)
        recent_peak = self._extreme_over(now_s, self.config.scaledown_window_s, max)

        if sustained > current:
            wanted, why = sustained, self._up_reason(demand, current, need)
        elif recent_peak < current:
            wanted = recent_peak
            why = f"need {recent_peak} < {current} for scaledown_window {self.config.scaledown_window_s:g}s"
        else:
            wanted, why = current, ""
        desired = clamp(wanted, self.config)
        if desired != wanted:  # keep the demand that asked for more, then the bound that capped it
            why = "; ".join(part for part in (why, self._bound_reason(desired, wanted)) if part)
        return Decision(
            desired=desired, current=current, demand=demand, reason=why if desired != current else ""
        )

    def _up_reason(self, demand: int, current: int, need: int) -> str:
        target = self.config.target_inputs
        reason = f"concurrency {demand} > target {target} x {current}"
        if self.config.buffer_containers and need > 0:
            reason += f" (+{self.config.buffer_containers} buffer)"
        return reason

    def _bound_reason(self, desired: int, wanted: int) -> str:
        if desired > wanted:
            return f"min_containers {self.config.min_containers}"
        return f"max_containers {self.config.max_containers} caps need {wanted}"

    def _remember(self, now_s: float, need: int) -> None:
        if self._history and now_s < self._history[-1][0]:
            raise ValueError(f"time went backwards: {now_s} < {self._history[-1][0]}")
        self._history.append((now_s, need))
        horizon_s = max(self.config.scaledown_window_s, self.config.scaleup_window_s)
        # Keep one sample older than the horizon: it still defines the need at the window's start.
        while len(self._history) > 1 and self._history[1][0] <= now_s - horizon_s:
            self._history.popleft()

    def _extreme_over(self, now_s: float, window_s: float, pick: Callable[[list[int]], int]) -> int:
        """min/max of the need in force at any time within ``[now_s - window_s, now_s]``."""
        since_s = now_s - window_s
        inside = [(ts_s, need) for ts_s, need in self._history if ts_s >= since_s]
        older = [need for ts_s, need in self._history if ts_s < since_s]
        values = [need for _, need in inside]
        if older and window_s > 0 and inside[0][0] > since_s:
            values.append(older[-1])  # still in force at the window's start
        return pick(values)
