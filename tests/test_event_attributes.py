"""Events carry structured attributes into the store, so readers never parse detail text."""

from __future__ import annotations

import json
from pathlib import Path

from enginescope.collectors.model import Batch, EventKind, EventRow, Identity
from enginescope.store import StoreWriter, open_store


def test_event_attributes_round_trip_through_the_store(tmp_path: Path) -> None:
    identity = Identity(replica="r1", engine="sglang", model="m")
    attrs = {"gpu_index": 3, "gpu_uuid": "GPU-abc", "reasons": "sw_power_cap,hw_thermal", "was": ""}
    writer = StoreWriter(tmp_path, identity, background=False)
    writer.write(Batch(identity, events=[EventRow(1.7e9, EventKind.GPU_THROTTLE, "text", attributes=attrs),
                                         EventRow(1.7e9 + 1, EventKind.ENGINE_READY)]))  # fmt: skip
    writer.close()
    con = open_store(tmp_path)
    rows = con.sql("SELECT kind, attributes FROM events ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == ["gpu_throttle", "engine_ready"]
    assert json.loads(rows[0][1]) == attrs and rows[1][1] is None
    reasons = con.execute("SELECT attributes->>'reasons' FROM events WHERE kind = 'gpu_throttle'").fetchone()
    assert reasons == ("sw_power_cap,hw_thermal",)
