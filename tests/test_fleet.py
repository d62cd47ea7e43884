"""Fleet: Modal-like identities, scale-up under load, drain and scale-down after the window."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from pathlib import Path

import pytest

from enginescope.loadgen.generator import LoadConfig, LoadGenerator, LogNormalTokens, Poisson, RequestMix
from enginescope.simfleet.autoscaler import AutoscalerConfig
from enginescope.simfleet.fleet import Fleet, FleetConfig, ReplicaState, new_task_id
from enginescope.simfleet.profile import DEFAULT

FAST = dataclasses.replace(
    DEFAULT,
    scheduler_init_other_s=0.3,
    weight_load_s=0.2,
    kv_cache_allocation_s=0.1,
    cuda_graph_capture_s=0.2,
    server_warmup_s=0.2,
    decode_step_base_s=0.02,  # slow decode: a few requests/s keep several in flight
)


def test_task_ids_look_like_modal_and_sort_by_time() -> None:
    rng = random.Random(1)
    ids = [new_task_id(1_700_000_000.0 + i, rng) for i in range(50)]
    assert all(re.fullmatch(r"ta-[0-9A-HJKMNP-TV-Z]{26}", task_id) for task_id in ids)
    assert len(set(ids)) == 50
    assert ids == sorted(ids)  # ULIDs: the time prefix orders them


@pytest.mark.slow
def test_scales_up_under_load_then_drains_and_scales_down(tmp_path: Path) -> None:
    config = FleetConfig(
        profile=FAST,
        autoscaler=AutoscalerConfig(
            min_containers=1, max_containers=3, target_inputs=4, scaledown_window_s=3.0
        ),
        store_dir=tmp_path,
        scrape_interval_s=0.5,
        control_interval_s=0.5,
    )
    lines: list[str] = []

    async def scenario() -> tuple[int, int, list[ReplicaState]]:
        fleet = Fleet(config, on_change=lines.append)
        await fleet.start()
        assert await fleet.wait_ready(1, 10.0)
        mix = RequestMix(LogNormalTokens(50, 0.3, 8, 100), LogNormalTokens(60, 0.2, 30, 90))
        load = LoadGenerator(fleet.router, Poisson(12.0), mix, LoadConfig(model="m", seed=3))
        await load.run(4.0)
        peak = max(d.desired for d in fleet.decisions)
        await asyncio.sleep(6.0)  # idle past scaledown_window
        live_after = len(fleet.live())
        states = [r.state for r in fleet.replicas.values()]
        assert all(r.ok for r in load.results), [r.error for r in load.results if not r.ok][:3]
        await fleet.stop()
        return peak, live_after, states

    peak, live_after, states = asyncio.run(scenario())
    assert peak >= 2  # ~12 req/s x ~1.5 s each is well above target_inputs=4 on one replica
    assert live_after == 1  # back to min_containers
    assert states.count(ReplicaState.STOPPED) == len(states) - 1

    from enginescope.store import open_store

    con = open_store(tmp_path)
    fleet_events = con.sql(
        "select kind, replica_count, detail from events where replica = 'fleet' order by ts"
    ).fetchall()
    kinds = [kind for kind, _, _ in fleet_events]
    assert kinds[0] == "scale_up" and "scale_down" in kinds
    downs = [row for row in fleet_events if row[0] == "scale_down"]
    assert downs[-1][1] == 1  # ends at min_containers
    assert all("scaledown_window" in detail for _, _, detail in downs)
    drained = con.sql("select distinct replica from events where kind = 'draining'").fetchall()
    assert len(drained) == len(states) - 1
    assert any("ready after" in line for line in lines)
