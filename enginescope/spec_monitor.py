"""The drift detector run periodically: records a ``spec_acceptance_drift`` event per new drift.

Wiring (the demo's fleet loop, a sidecar, or a cron job)::

    monitor = SpecDriftMonitor(store_dir, emit=lambda ev: fleet.record(ev.kind, ev.detail, ts_s=ev.ts_s))
    task = asyncio.create_task(monitor.run(interval_s=60))      # or monitor.check() on a timer

``enginescope demo`` does exactly this for scenarios with speculative decoding (enginescope/demo.py).

``emit`` receives an ``EventRow``; ``sink_emitter(sink, identity)`` writes it through any Sink
(e.g. the fleet pseudo-replica's StoreWriter). Events already in the store suppress repeats,
so restarting the monitor does not record a drift twice. ``store_dir`` is a folder or an
object-store URL (``s3://bucket/prefix``, credentials from the AWS environment variables).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enginescope.collectors.model import Batch, EventKind, EventRow, Identity
from enginescope.store import open_store
from enginescope.views.spec_drift import Drift, DriftConfig, detect
from enginescope.views.spec_events import event_detail

log = logging.getLogger(__name__)

Emit = Callable[[EventRow], None]


def sink_emitter(sink: Any, identity: Identity) -> Emit:
    """An ``emit`` that writes each event through ``sink`` (anything with ``write(Batch)``)."""
    return lambda event: sink.write(Batch(identity, events=[event]))


class SpecDriftMonitor:
    def __init__(
        self,
        store_dir: str | Path,
        emit: Emit,
        config: DriftConfig | None = None,
        clock: Callable[[], float] = time.time,
        since_s: float | None = None,
    ) -> None:
        # A folder or an object-store URL (s3://bucket/prefix): open_store takes both as given.
        self.store_dir = store_dir
        self.emit = emit
        self.config = config or DriftConfig()
        self.clock = clock
        self.drifts: list[Drift] = []  # every drift this monitor recorded
        # The next check tests every step boundary after this (epoch s); None: only the latest.
        # Set it to the start of the data when the monitor starts late (a demo's replayed history).
        self.since_s = since_s
        self._con: Any = None

    def check(self, now_s: float | None = None) -> list[Drift]:
        """Test the step boundaries since the last check; emit and return the new drifts.

        Never raises: a store that cannot be read yet is retried at the next check.
        """
        now_s = self.clock() if now_s is None else now_s
        try:
            if self._con is None:
                self._con = open_store(self.store_dir)
            known = [(d.traffic_class, d.detected_s) for d in self.drifts]
            found = detect(self._con, now_s, self.config, self.since_s, known)
        except Exception as exc:  # the caller (fleet loop, sidecar) must keep running
            log.warning("spec drift check of %s failed: %s", self.store_dir, exc)
            return []
        self.since_s = now_s
        for drift in found:
            self.emit(EventRow(drift.detected_s, EventKind.SPEC_ACCEPTANCE_DRIFT, event_detail(drift)))
            log.info("speculative acceptance drift: %s", event_detail(drift))
        self.drifts.extend(found)
        return found

    async def run(self, interval_s: float | None = None, stop: asyncio.Event | None = None) -> None:
        """``check`` every ``interval_s`` (default the detector's step) until ``stop`` is set."""
        interval_s = interval_s or self.config.step_s
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await asyncio.to_thread(self.check)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass
