"""The lifecycle state machine: exact event sequences, slow starts, restarts, one ready."""

from __future__ import annotations

import pytest

from enginescope.collectors.lifecycle import Lifecycle, Phase
from enginescope.collectors.model import EventKind, EventRow

K = EventKind


def ev(kind: str, ts_s: float = 0.0) -> EventRow:
    return EventRow(ts_s, kind, "")


def kinds(rows: list[EventRow]) -> list[str]:
    return [str(r.kind) for r in rows]


def test_slow_start_records_no_engine_down_before_the_first_answer():
    life = Lifecycle()
    out = life.start(0.0)
    for t in range(1, 5):  # the engine is still loading weights: scrapes fail
        out += life.observe([ev(K.ENGINE_DOWN, t)], up=False)
    out += life.observe([ev(K.ENGINE_READY, 5), ev(K.ENGINE_UP, 5)], up=True)
    out += life.observe([], up=True)
    out += life.drain(9.0) + life.drain(9.5) + life.stop(10.0) + life.stop(11.0)
    assert kinds(out) == ["container_started", "engine_ready", "draining", "container_stopped"]
    assert life.phase is Phase.STOPPED


def test_owner_decides_first_readiness_and_health_decides_after_a_restart():
    life = Lifecycle(ready_by="owner")
    out = life.start(0.0)
    out += life.observe([ev(K.ENGINE_READY, 1)], up=True)  # /health OK during warm-up: not ready yet
    out += life.ready(2.0) + life.ready(2.5)  # once
    out += life.observe([ev(K.ENGINE_DOWN, 3)], up=False)
    out += life.observe([ev(K.ENGINE_DOWN, 4)], up=False)  # still down: nothing new
    out += life.observe([ev(K.ENGINE_READY, 5), ev(K.ENGINE_UP, 5), ev(K.ENGINE_RESTART, 5)], up=True)
    assert kinds(out) == [
        "container_started", "engine_ready", "engine_down", "engine_ready", "engine_up", "engine_restart",
    ]  # fmt: skip


def test_nothing_is_ready_after_draining_and_other_events_pass_through():
    life = Lifecycle()
    life.start(0.0)
    life.drain(1.0)
    out = life.observe([ev(K.ENGINE_READY, 2), ev(K.GPU_XID, 2), ev(K.SCENARIO, 2)], up=True)
    assert kinds(out) == ["gpu_xid", "scenario"]
    with pytest.raises(ValueError, match="ready_by"):
        Lifecycle(ready_by="someone")
