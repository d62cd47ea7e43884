"""Request router in front of the replicas, like Modal's input router.

A request leases one ready backend, runs, then releases it. Policies:

* ``least-outstanding``: the backend with the fewest requests in flight (ties: round robin);
* ``p2c``: power of two choices, the less loaded of two random backends.

``max_inputs`` (``@modal.concurrent(max_inputs=...)``) caps requests per backend; when every
backend is full (or none is ready, e.g. during a cold start) requests wait in the backlog,
which the autoscaler counts as demand. Draining backends leave the candidate set but keep
their outstanding counts until their requests finish.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

POLICIES = ("least-outstanding", "p2c")


class NoBackendError(RuntimeError):
    """No backend became available within the caller's wait limit."""


@dataclass(frozen=True)
class Lease:
    replica: str
    base_url: str


class Router:
    def __init__(
        self,
        policy: str = "least-outstanding",
        max_inputs: int | None = None,
        seed: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; known: {', '.join(POLICIES)}")
        if max_inputs is not None and max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {max_inputs}")
        self.policy = policy
        self.max_inputs = max_inputs
        self._rng = random.Random(seed)
        self._backends: dict[str, str] = {}
        self._outstanding: dict[str, int] = {}
        self._backlog = 0
        self._turn = 0
        self._waiters: list[asyncio.Future[None]] = []

    # --- backend set (owned by the fleet) -------------------------------------------------
    def set_backends(self, backends: Mapping[str, str]) -> None:
        """Replace the ready set: ``{replica: base_url}``."""
        self._backends = dict(backends)
        self._notify()

    @property
    def backends(self) -> dict[str, str]:
        return dict(self._backends)

    def outstanding(self) -> dict[str, int]:
        """Requests in flight per replica, including replicas that are draining."""
        return {name: count for name, count in self._outstanding.items() if count > 0}

    @property
    def backlog(self) -> int:
        """Requests waiting for a backend with free capacity."""
        return self._backlog

    # --- leasing (used by the load generator) ---------------------------------------------
    async def acquire(self, exclude: Iterable[str] = (), timeout_s: float | None = None) -> Lease:
        """Wait for a backend with capacity; prefer ones not in ``exclude`` (e.g. just failed)."""
        excluded = set(exclude)
        lease = self._try_pick(excluded)
        if lease is not None:
            return lease
        self._backlog += 1
        try:
            async with asyncio.timeout(timeout_s):
                while (lease := self._try_pick(excluded)) is None:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            raise NoBackendError(f"no backend with capacity within {timeout_s:g}s") from None
        finally:
            self._backlog -= 1
        return lease

    def release(self, lease: Lease) -> None:
        count = self._outstanding.get(lease.replica, 0) - 1
        self._outstanding[lease.replica] = max(count, 0)
        self._notify()

    def _try_pick(self, excluded: set[str]) -> Lease | None:
        candidates = [name for name in self._backends if self._has_capacity(name)]
        preferred = [name for name in candidates if name not in excluded]
        chosen = self._choose(preferred or candidates)
        if chosen is None:
            return None
        self._outstanding[chosen] = self._outstanding.get(chosen, 0) + 1
        return Lease(chosen, self._backends[chosen])

    def _has_capacity(self, name: str) -> bool:
        return self.max_inputs is None or self._outstanding.get(name, 0) < self.max_inputs

    def _choose(self, candidates: list[str]) -> str | None:
        if not candidates:
            return None
        if self.policy == "p2c" and len(candidates) > 2:
            candidates = self._rng.sample(candidates, 2)
        load = {name: self._outstanding.get(name, 0) for name in candidates}
        fewest = min(load.values())
        tied = [name for name in candidates if load[name] == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def _notify(self) -> None:
        """Wake every waiter; each re-checks capacity (few waiters, so no thundering herd)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
