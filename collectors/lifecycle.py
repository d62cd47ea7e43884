"""One owner for lifecycle events: starting -> ready -> draining -> stopped, engine up/down inside.

Every lifecycle event of a replica (``container_started``, ``engine_ready``, ``engine_up``,
``engine_down``, ``draining``, ``container_stopped``) passes through :class:`Lifecycle`, which
records a transition once and drops what is not one:

- an engine that has never answered is *starting*, not down: no ``engine_down`` before the
  first successful scrape (a cold start takes minutes);
- ``engine_down`` only when the engine was up, ``engine_up`` only when it was down;
- ``engine_ready`` once per engine start. Who decides readiness is fixed up front:
  ``ready_by="health"`` (the sidecar: the engine's ``/health`` answers) or ``"owner"`` (the
  Modal container: healthy *and* warmed up, via :meth:`ready`). A restarted engine (down,
  then up) is ready again when ``/health`` answers again, whoever decided the first time;
- ``draining`` and ``container_stopped`` once each, in that order.

Thread-safe: the scrape loop and the container's lifecycle hooks call it concurrently.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from enginescope.collectors.model import EventKind, EventRow

LIFECYCLE_KINDS = frozenset(
    {
        EventKind.CONTAINER_STARTED,
        EventKind.ENGINE_READY,
        EventKind.ENGINE_UP,
        EventKind.ENGINE_DOWN,
        EventKind.DRAINING,
        EventKind.CONTAINER_STOPPED,
    }
)


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class Lifecycle:
    def __init__(self, ready_by: str = "health") -> None:
        if ready_by not in ("health", "owner"):
            raise ValueError(f"ready_by must be 'health' or 'owner' (got {ready_by!r})")
        self.ready_by = ready_by
        self.phase = Phase.STARTING
        self.engine_up: bool | None = None  # None: never answered yet
        self._engine_ready = False  # engine_ready recorded for the current engine start
        self._started = False
        self._lock = threading.Lock()

    # -- the owner's transitions --------------------------------------------------------

    def start(self, ts_s: float, detail: str = "") -> list[EventRow]:
        with self._lock:
            if self._started:
                return []
            self._started = True
            return [EventRow(ts_s, EventKind.CONTAINER_STARTED, detail)]

    def ready(self, ts_s: float, detail: str = "") -> list[EventRow]:
        """The owner says the engine is ready (``ready_by="owner"``: healthy and warmed up)."""
        with self._lock:
            return self._ready(ts_s, detail)

    def drain(self, ts_s: float, detail: str = "") -> list[EventRow]:
        with self._lock:
            if self.phase in (Phase.DRAINING, Phase.STOPPED):
                return []
            self.phase = Phase.DRAINING
            return [EventRow(ts_s, EventKind.DRAINING, detail)]

    def stop(self, ts_s: float, detail: str = "") -> list[EventRow]:
        with self._lock:
            if self.phase is Phase.STOPPED:
                return []
            self.phase = Phase.STOPPED
            return [EventRow(ts_s, EventKind.CONTAINER_STOPPED, detail)]

    # -- what the engine source observed ---------------------------------------------------

    def observe(self, events: list[EventRow], up: bool | None) -> list[EventRow]:
        """Filter one tick's events through the state machine.

        ``events``: what the sources produced (non-lifecycle events pass through unchanged);
        ``up``: whether this tick's scrape answered (None: no scrape this tick).
        """
        with self._lock:
            kept: list[EventRow] = []
            for event in events:
                if event.kind not in LIFECYCLE_KINDS:
                    kept.append(event)
                elif event.kind == EventKind.ENGINE_DOWN:
                    kept += self._down(event)
                elif event.kind == EventKind.ENGINE_UP:
                    kept += self._up(event)
                elif event.kind == EventKind.ENGINE_READY and self._health_decides():
                    kept += self._ready(event.ts_s, event.detail)
                # other lifecycle kinds come only from the owner's calls above
            if up is not None and self.engine_up is None and up:
                self.engine_up = True  # first answer: starting is over, no event of its own
            return kept

    # -- internals (lock held) -------------------------------------------------------------

    def _health_decides(self) -> bool:
        # The owner decides the first readiness; after an engine restart /health does.
        return self.ready_by == "health" or self.phase is not Phase.STARTING

    def _ready(self, ts_s: float, detail: str) -> list[EventRow]:
        if self._engine_ready or self.phase in (Phase.DRAINING, Phase.STOPPED):
            return []
        self._engine_ready = True
        self.phase = Phase.READY
        return [EventRow(ts_s, EventKind.ENGINE_READY, detail)]

    def _down(self, event: EventRow) -> list[EventRow]:
        if not self.engine_up:  # never answered (still starting) or already down
            return []
        self.engine_up = False
        self._engine_ready = False  # the next start is ready again when /health answers
        return [event]

    def _up(self, event: EventRow) -> list[EventRow]:
        if self.engine_up is not False:
            self.engine_up = True
            return []
        self.engine_up = True
        return [event]
