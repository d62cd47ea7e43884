"""Fleet watcher: snapshot diffs become scale events; state carries across scheduled runs."""

from __future__ import annotations

from enginescope.collectors.model import Batch, EventKind
from enginescope.deploy.watcher import FleetSnapshot, FleetWatcher, diff_events, fleet_identity, watch_window
from enginescope.recipes import RECIPES_DIR, load_recipe

RECIPE = load_recipe(RECIPES_DIR / "llama-3.1-8b-h100.toml")


def snap(ts_s, count, ids=None, backlog=None):
    return FleetSnapshot(ts_s, count, frozenset(ids) if ids is not None else None, backlog)


def test_first_snapshot_is_a_baseline():
    assert diff_events(None, snap(0, 3)) == []


def test_count_changes_become_scale_events():
    up = diff_events(snap(0, 1), snap(5, 3, backlog=40))
    assert [(e.kind, e.replica_count, e.detail) for e in up] == [
        (EventKind.SCALE_UP, 3, "1 -> 3 (backlog 40)")
    ]
    down = diff_events(snap(5, 3), snap(10, 0))
    assert [(e.kind, e.replica_count, e.ts_s) for e in down] == [(EventKind.SCALE_DOWN, 0, 10)]
    assert diff_events(snap(0, 2), snap(5, 2)) == []


def test_container_ids_reveal_replacements_at_equal_count():
    events = diff_events(snap(0, 2, {"ta-a", "ta-b"}), snap(5, 2, {"ta-a", "ta-c"}))
    assert [(e.kind, e.replica_count) for e in events] == [(EventKind.SCALE_DOWN, 1), (EventKind.SCALE_UP, 2)]
    assert "ta-b" in events[0].detail and "ta-c" in events[1].detail


class ScriptedProbe:
    def __init__(self, snapshots):
        self.snapshots = list(snapshots)

    def poll(self, now_s):
        item = self.snapshots.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class ListSink:
    def __init__(self):
        self.batches: list[Batch] = []

    def write(self, batch):
        self.batches.append(batch)


def test_watcher_survives_failed_polls_and_resumes_from_saved_state(tmp_path):
    state = tmp_path / "state.json"
    ident = fleet_identity(RECIPE, "enginescope-x")
    sink = ListSink()
    first = FleetWatcher(ScriptedProbe([snap(0, 1, {"ta-a"}), RuntimeError("api down")]), sink, ident, state)
    assert first.poll_once(0, 5) == []
    assert first.poll_once(5, 5) == []  # a failed poll is a gap, not a crash
    # the next scheduled run starts from the saved snapshot, so the scale-up is not lost
    second = FleetWatcher(ScriptedProbe([snap(60, 2, {"ta-a", "ta-b"}, backlog=7)]), sink, ident, state)
    events = second.poll_once(60, 5)
    assert [(e.kind, e.replica_count) for e in events] == [(EventKind.SCALE_UP, 2)]
    signals = {s.signal: s.value for s in sink.batches[-1].signals}
    assert signals == {"fleet_replicas": 2.0, "fleet_backlog": 7.0}
    assert sink.batches[-1].identity.replica == "fleet-enginescope-x"


def test_watch_window_writes_events_to_the_store(tmp_path):
    from enginescope.store import open_store

    now = [0.0]  # time advances only while the watcher sleeps
    probe = ScriptedProbe([snap(0, 1), snap(5, 2), snap(10, 4), snap(15, 1)])
    written = watch_window(probe, RECIPE, tmp_path, app_name="enginescope-x", window_s=15, interval_s=5,
                           clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    assert written == 3
    con = open_store(tmp_path)
    rows = con.execute("select kind, replica_count, replica from events order by ts").fetchall()
    assert rows == [("scale_up", 2, "fleet-enginescope-x"), ("scale_up", 4, "fleet-enginescope-x"),
                    ("scale_down", 1, "fleet-enginescope-x")]  # fmt: skip
