"""Fleet watcher: poll the deployed Server, turn changes into ``scale_up``/``scale_down`` events.

Modal has no container start/stop event stream, so the watcher samples the fleet and diffs
consecutive snapshots (:func:`diff_events`, pure). It writes under replica ``fleet-<app>``
(one writer per replica folder: the store's compaction assumes it, and every endpoint app shares
the store Volume): events with ``replica_count`` plus ``fleet_replicas``/``fleet_backlog`` signals. The last snapshot is
kept in ``<store>/state/fleet/<app>.json`` so each scheduled run continues the previous one's
diff instead of starting blind.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from enginescope.collectors.identity import fleet_replica
from enginescope.collectors.model import Batch, EventKind, EventRow, Identity, SignalRow
from enginescope.recipes.schema import Recipe

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 5.0
WINDOW_S = 50.0  # one scheduled run (every 60 s) polls for this long


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant. ``replicas`` is None when only a count is known."""

    ts_s: float
    replica_count: int
    replicas: frozenset[str] | None = None
    backlog: int | None = None
    running_inputs: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ts_s": self.ts_s,
            "replica_count": self.replica_count,
            "replicas": sorted(self.replicas) if self.replicas is not None else None,
            "backlog": self.backlog,
            "running_inputs": self.running_inputs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetSnapshot:
        replicas = data.get("replicas")
        return cls(
            ts_s=float(data["ts_s"]),
            replica_count=int(data["replica_count"]),
            replicas=frozenset(replicas) if replicas is not None else None,
            backlog=data.get("backlog"),
            running_inputs=data.get("running_inputs"),
        )


def diff_events(prev: FleetSnapshot | None, cur: FleetSnapshot) -> list[EventRow]:
    """Scale events between two snapshots; the first snapshot is a baseline (no events).

    With container ids, a replaced container shows as one ``scale_down`` and one
    ``scale_up`` even when the count is unchanged.
    """
    if prev is None:
        return []
    if prev.replicas is not None and cur.replicas is not None:
        gone = sorted(prev.replicas - cur.replicas)
        new = sorted(cur.replicas - prev.replicas)
        events = []
        if gone:
            detail = f"{prev.replica_count} -> {prev.replica_count - len(gone)}: stopped {', '.join(gone)}"
            events.append(EventRow(cur.ts_s, EventKind.SCALE_DOWN, detail, prev.replica_count - len(gone)))
        if new:
            detail = f"{cur.replica_count - len(new)} -> {cur.replica_count}: started {', '.join(new)}"
            events.append(EventRow(cur.ts_s, EventKind.SCALE_UP, detail, cur.replica_count))
        return events
    if cur.replica_count == prev.replica_count:
        return []
    kind = EventKind.SCALE_UP if cur.replica_count > prev.replica_count else EventKind.SCALE_DOWN
    detail = f"{prev.replica_count} -> {cur.replica_count}"
    if cur.backlog:
        detail += f" (backlog {cur.backlog})"
    return [EventRow(cur.ts_s, kind, detail, cur.replica_count)]


def snapshot_signals(cur: FleetSnapshot, interval_s: float) -> list[SignalRow]:
    rows = [SignalRow(cur.ts_s, "fleet_replicas", float(cur.replica_count), interval_s)]
    if cur.backlog is not None:
        rows.append(SignalRow(cur.ts_s, "fleet_backlog", float(cur.backlog), interval_s))
    if cur.running_inputs is not None:
        rows.append(SignalRow(cur.ts_s, "fleet_running_inputs", float(cur.running_inputs), interval_s))
    return rows


class FleetProbe(Protocol):
    def poll(self, now_s: float) -> FleetSnapshot: ...


class ModalServerProbe:
    """Reads a deployed Modal Server (needs credentials; only used inside Modal or with a token).

    Container ids come from ``Server._experimental_list_containers()``; backlog and the
    container count from the Server's backing Function ``get_current_stats()``. Both are
    private/experimental in modal 1.6.4, so each is optional and failures degrade to the other.
    """

    def __init__(self, app_name: str, server_name: str) -> None:
        import modal

        self.server = modal.Server.from_name(app_name, server_name)

    def poll(self, now_s: float) -> FleetSnapshot:
        replicas: frozenset[str] | None = None
        backlog = running = count = None
        try:
            replicas = frozenset(c.container_id for c in self.server._experimental_list_containers())
        except Exception as exc:
            log.warning("listing containers failed: %s", exc)
        try:
            stats = self.server._get_service_function().get_current_stats()
            backlog, running, count = stats.backlog, stats.num_running_inputs, stats.num_total_runners
        except Exception as exc:
            log.warning("current stats failed: %s", exc)
        if replicas is None and count is None:
            raise RuntimeError("neither container listing nor current stats are available")
        replica_count = len(replicas) if replicas is not None else int(count or 0)
        return FleetSnapshot(now_s, replica_count, replicas, backlog, running)


class FleetWatcher:
    """Poll, diff against the last snapshot, write events and signals to a sink."""

    def __init__(self, probe: FleetProbe, sink: Any, identity: Identity, state_path: Path) -> None:
        self.probe, self.sink, self.identity, self.state_path = probe, sink, identity, state_path
        self.last = self._load_state()

    def poll_once(self, now_s: float, interval_s: float) -> list[EventRow]:
        try:
            cur = self.probe.poll(now_s)
        except Exception as exc:  # a failed poll is a gap, never a crash
            log.warning("fleet poll failed: %s", exc)
            return []
        events = diff_events(self.last, cur)
        self.sink.write(Batch(self.identity, signals=snapshot_signals(cur, interval_s), events=events))
        self.last = cur
        self._save_state(cur)
        return events

    def _load_state(self) -> FleetSnapshot | None:
        try:
            return FleetSnapshot.from_json(json.loads(self.state_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_state(self, snap: FleetSnapshot) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap.to_json()))
        tmp.replace(self.state_path)  # atomic: a crash never leaves half a state file


def fleet_identity(recipe: Recipe, app_name: str) -> Identity:
    region = recipe.regions[0] if recipe.regions else ""
    return Identity(
        replica=fleet_replica(app_name), engine=recipe.engine.name, model=recipe.model.served_name,
        region=region, gpu_type=recipe.gpu.type.rstrip("!+"), app=app_name,
    )  # fmt: skip


def _commit_containers(writer: Any, reload: Callable[[], None] | None) -> None:
    """Commit what the engine containers flushed since the last poll (never raises)."""
    try:
        if reload is not None:
            reload()  # the containers' files and manifests, as of their last Volume commit
        committed = writer.commit_deferred()
        if committed:
            log.info("committed %d files the engine containers flushed", committed)
    except Exception as exc:  # the watcher's own events must still be written
        log.warning("committing the containers' files failed (next poll retries): %s", exc)


def watch_window(
    probe: FleetProbe,
    recipe: Recipe,
    store_dir: Path,
    *,
    app_name: str,
    window_s: float = WINDOW_S,
    interval_s: float = POLL_INTERVAL_S,
    commit: Callable[[], None] | None = None,
    reload: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll for ``window_s`` (one scheduled run), write to the store; returns events written.

    The watcher is the store's one committer (one scheduled run at a time): each poll it
    reloads the Volume, commits the engine containers' deferred manifests to the Delta logs
    and, through its writer's compaction, compacts their files (see ``store.pending``)."""
    from enginescope.store import StoreWriter

    identity = fleet_identity(recipe, app_name)
    writer = StoreWriter(store_dir, identity)
    watcher = FleetWatcher(probe, writer, identity, store_dir / "state" / "fleet" / f"{app_name}.json")
    written = 0
    try:
        end_s = clock() + window_s
        while True:
            _commit_containers(writer, reload)
            written += len(watcher.poll_once(clock(), interval_s))
            if clock() + interval_s > end_s:
                break
            sleep(interval_s)
    finally:
        writer.flush()
        writer.close()
        if commit is not None:
            commit()
    return written
