"""The non-GPU parts of benchmarks/gpu_check_real.py, driven by the simulated NVML."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pynvml
import pytest

from enginescope.collectors.gpu import GpuSource
from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml

ROOT = Path(__file__).resolve().parents[1]


def load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_real", ROOT / "benchmarks" / "gpu_check_real.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check_real"] = module
    spec.loader.exec_module(module)
    return module


check = load_check()


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def simulate(load_busy: float, specs: list[SimGpuSpec] | None = None) -> tuple[dict, list[str], GpuSource]:
    """Idle 8 s, then GPU 0 at ``load_busy`` for 22 s (GPU 1 stays idle), polled every 0.5 s."""
    clock, busy = Clock(), [0.0, 0.0]
    sim = SimulatedNvml(
        specs or [SimGpuSpec(), SimGpuSpec()], [lambda: busy[0], lambda: busy[1]], clock=clock
    )
    source = GpuSource(sim, now_fn=clock)
    by_uuid: dict = {}
    events: list[str] = []
    check.poll_phase(source, "idle", 8.0, 0.5, by_uuid, events, clock=clock, sleep=clock.sleep)
    busy[0] = load_busy
    check.poll_phase(source, "load", 22.0, 0.5, by_uuid, events, clock=clock, sleep=clock.sleep)
    return by_uuid, events, source


def test_analysis_passes_when_the_gpu_responds_to_load() -> None:
    by_uuid, events, source = simulate(1.0)
    uuid = check.pick_loaded_gpu(by_uuid)
    assert uuid == source.gpu_uuids[0]
    samples = by_uuid[uuid]
    assert len(samples) == 16 + 44
    result = check.analyze(samples)
    assert result["ok"] is True, result
    assert {name for name, c in result["checks"].items() if c["ok"]} == {
        "power",
        "utilization",
        "temperature",
        "sm_clock",
        "energy",
    }
    assert "idle 70.0 W -> load 700.0 W" in result["checks"]["power"]["detail"]
    assert check.empty_columns(samples) == ["fan_pct", "xid_last"]
    assert events == []


def test_analysis_fails_when_readings_do_not_move() -> None:
    by_uuid, _, source = simulate(0.0)
    result = check.analyze(by_uuid[source.gpu_uuids[0]])
    assert result["ok"] is False
    failed = {name for name, c in result["checks"].items() if c["ok"] is False}
    assert {"power", "utilization", "temperature", "sm_clock"} <= failed


def test_missing_columns_are_skipped_not_failed() -> None:
    no_power = SimGpuSpec(
        unsupported=frozenset({"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption"})
    )
    by_uuid, _, source = simulate(1.0, [no_power, no_power])
    result = check.analyze(by_uuid[source.gpu_uuids[0]])
    assert result["checks"]["power"]["ok"] is None and result["checks"]["energy"]["ok"] is None
    assert result["ok"] is True  # the remaining checks pass
    assert check.analyze([])["ok"] is False  # nothing to judge is not a pass


def test_poll_cost_reports_per_poll_percentiles() -> None:
    clock = Clock()
    source = GpuSource(SimulatedNvml([SimGpuSpec()] * 3, clock=clock), now_fn=clock)
    cost = check.measure_poll_cost(source, 20, clock=clock)
    assert cost["polls"] == 20 and cost["gpus"] == 3
    assert 0 < cost["cpu_ms_p50"] <= cost["cpu_ms_p95"] <= cost["cpu_ms_max"]
    assert 0 < cost["wall_ms_p50"] <= cost["wall_ms_max"]


def test_main_without_a_driver_exits_2_and_writes_json(tmp_path: Path) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVML driver is present")
    out = tmp_path / "gpu_check.json"
    status = check.main(["--idle-s", "0.01", "--interval-s", "0.01", "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == 2 and result["exit_status"] == 2 and result["ok"] is False
    assert "NVMLError_LibraryNotFound" in result["error"]


def test_clock_below_idle_passes_only_when_a_slowdown_reason_explains_it() -> None:
    def sample(phase: str, sm: int, capped: bool) -> tuple:
        return (phase, 0.0, {"sm_clock_mhz": sm, "sm_clock_max_mhz": 1980, "throttle_sw_power_cap": capped})

    boosted_idle = [sample("idle", 1980, False)]
    capped = check.analyze(boosted_idle + [sample("load", 1600, True)])["checks"]["sm_clock"]
    unexplained = check.analyze(boosted_idle + [sample("load", 1600, False)])["checks"]["sm_clock"]
    assert capped["ok"] is True and "slowdown reason" in capped["detail"]
    assert unexplained["ok"] is False
