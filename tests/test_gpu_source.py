"""GpuSource against the simulated NVML: columns and units, cadence, failures, events, aggregates."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from enginescope.collectors.gpu import ALL_COLUMNS, GpuSource
from enginescope.collectors.model import Batch, EventKind, Identity
from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now_s


class Counting:
    """Wraps an NVML surface and counts calls per function name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def fleet(
    busy: list[float], specs: list[SimGpuSpec] | None = None, **source_kw: Any
) -> tuple[Clock, SimulatedNvml, GpuSource]:
    clock = Clock()
    specs = specs or [SimGpuSpec() for _ in busy]
    loads: list[Callable[[], float]] = [(lambda i=i: busy[i]) for i in range(len(specs))]
    sim = SimulatedNvml(specs, loads, clock=clock)
    nvml = source_kw.pop("nvml", sim)
    return clock, sim, GpuSource(nvml, Identity(replica="r1"), now_fn=clock, **source_kw)


def poll(clock: Clock, source: GpuSource, seconds: float = 1.0) -> Batch:
    clock.now_s += seconds
    return source.collect(clock.now_s)


def signals(batch: Batch) -> dict[str, float]:
    return {s.signal: s.value for s in batch.signals}


def kinds(batch: Batch) -> list[str]:
    return [e.kind for e in batch.events]


def test_rows_carry_every_column_with_units_converted() -> None:
    clock, sim, source = fleet([0.5, 1.0])
    first = poll(clock, source)
    assert first.identity.replica == "r1" and not first.events
    for _ in range(3):
        batch = poll(clock, source)
    assert [r.gpu_uuid for r in batch.gpu] == [
        sim.nvmlDeviceGetUUID(sim.nvmlDeviceGetHandleByIndex(i)) for i in (0, 1)
    ]
    row, h = batch.gpu[0].fields, sim.nvmlDeviceGetHandleByIndex(0)
    assert set(row) == set(ALL_COLUMNS)
    assert (row["gpu_index"], row["gpu_name"], row["pci_bus_id"]) == (
        0,
        "NVIDIA H100 80GB HBM3",
        "00000000:18:00.0",
    )
    assert row["driver_version"] == "550.54.15"
    assert row["power_w"] == 385.0  # 385000 mW
    assert row["power_limit_w"] == 700.0
    assert row["energy_j"] == sim.nvmlDeviceGetTotalEnergyConsumption(h) / 1000  # mJ -> J
    assert row["temperature_c"] == sim.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    assert row["memory_temperature_c"] == row["temperature_c"] + 6
    assert (row["gpu_utilization_pct"], row["memory_utilization_pct"]) == (50.0, 30.0)
    mem = sim.nvmlDeviceGetMemoryInfo(h)
    assert (row["fb_used_bytes"], row["fb_free_bytes"], row["fb_total_bytes"]) == (
        mem.used,
        mem.free,
        mem.total,
    )
    assert (row["sm_clock_mhz"], row["sm_clock_max_mhz"], row["mem_clock_mhz"], row["mem_clock_max_mhz"]) == (
        1980,
        1980,
        2619,
        2619,
    )
    assert row["pcie_tx_bytes_per_s"] == pytest.approx(1.5e9, rel=1e-9)  # 3 GB/s at full load, half busy
    assert row["pcie_rx_bytes_per_s"] == pytest.approx(0.75e9, rel=1e-9)
    assert (row["nvlink_links_active"], row["nvlink_links_present"]) == (18, 18)
    assert (row["ecc_sbe_volatile"], row["ecc_dbe_volatile"], row["row_remap_failure"]) == (0, 0, False)
    assert (row["persistence_mode"], row["compute_mode"]) == (1, pynvml.NVML_COMPUTEMODE_DEFAULT)
    assert (
        row["clock_event_reasons"] == 0
        and row["throttle_sw_power_cap"] is False
        and row["throttle_thermal"] is False
    )
    assert row["fan_pct"] is None and row["xid_last"] is None


def test_replica_signals_aggregate_the_gpus() -> None:
    clock, _, source = fleet([0.0, 1.0])
    for _ in range(3):
        batch = poll(clock, source, 2.0)
    rows = [r.fields for r in batch.gpu]
    got = signals(batch)
    assert got["gpu_power_w"] == 70.0 + 700.0
    assert got["gpu_utilization_pct"] == 50.0
    assert got["gpu_sm_clock_mhz"] == 345.0  # the idle GPU's clock is the minimum
    assert got["gpu_temperature_c"] == max(r["temperature_c"] for r in rows)
    assert got["gpu_memory_used_bytes"] == sum(r["fb_used_bytes"] for r in rows)
    assert got["gpu_throttled"] == 0.0
    assert {s.interval_s for s in batch.signals} == {2.0}


def test_not_supported_field_is_none_logged_once_and_never_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_power = frozenset({"nvmlDeviceGetPowerUsage", pynvml.NVML_FI_DEV_MEMORY_TEMP})
    clock = Clock()
    sim = SimulatedNvml([SimGpuSpec(unsupported=no_power), SimGpuSpec(unsupported=no_power)], clock=clock)
    counting = Counting(sim)
    source = GpuSource(counting, now_fn=clock)
    with caplog.at_level(logging.INFO, logger="enginescope.collectors.gpu"):
        batches = [poll(clock, source) for _ in range(6)]
    rows = [r.fields for b in batches for r in b.gpu]
    assert len(rows) == 12
    assert all(r["power_w"] is None and r["memory_temperature_c"] is None for r in rows)
    assert all(isinstance(r["temperature_c"], float) for r in rows)  # other columns unaffected
    assert counting.calls["nvmlDeviceGetPowerUsage"] == 2  # once per GPU, then cached
    assert counting.calls["nvmlDeviceGetFieldValues"] == 12  # PCIe counters still read every poll
    power_logs = [r for r in caplog.records if "power_w" in r.getMessage()]
    temp_logs = [r for r in caplog.records if "memory_temperature_c" in r.getMessage()]
    assert len(power_logs) == 1 and len(temp_logs) == 1
    assert "gpu_power_w" not in signals(batches[-1])  # a sum over some GPUs would understate
    assert "gpu_temperature_c" in signals(batches[-1])


def test_static_once_slow_every_n_polls_fast_every_poll() -> None:
    clock = Clock()
    counting = Counting(SimulatedNvml([SimGpuSpec(), SimGpuSpec()], clock=clock))
    source = GpuSource(counting, slow_every=5, now_fn=clock)
    batches = [poll(clock, source) for _ in range(10)]
    assert counting.calls["nvmlDeviceGetMaxClockInfo"] == 4  # SM + MEM per GPU, at discovery
    assert counting.calls["nvmlDeviceGetName"] == 2
    assert counting.calls["nvmlDeviceGetEnforcedPowerLimit"] == 4  # polls 1 and 6, per GPU
    assert counting.calls["nvmlDeviceGetPowerUsage"] == 20
    assert all(r.fields["power_limit_w"] == 700.0 for b in batches for r in b.gpu)  # carried over


@pytest.mark.parametrize(
    "code, name",
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVMLError_LibraryNotFound"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVMLError_DriverNotLoaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NVMLError_NoPermission"),
    ],
)
def test_nvml_unavailable_disables_with_one_log_line_and_one_event(
    code: int, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = GpuSource(SimulatedNvml(init_error=code))
    ticks: list[int] = []
    with caplog.at_level(logging.DEBUG, logger="enginescope.collectors.gpu"):
        batches = [source.collect(100.0 + i) for i in range(5)]
        ticks = [i for i, _ in enumerate(batches)]  # a sidecar-like loop carries on
    assert ticks == [0, 1, 2, 3, 4]
    assert kinds(batches[0]) == [EventKind.GPU_SOURCE_DISABLED]
    assert name in batches[0].events[0].detail
    assert all(b.is_empty() for b in batches[1:])
    assert source.disabled
    records = [r for r in caplog.records if r.name == "enginescope.collectors.gpu"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "GPU telemetry disabled" in records[0].getMessage()
    source.close()


def test_default_pynvml_without_driver_disables_cleanly() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVML driver is present")
    source = GpuSource()
    first, second = source.collect(1.0), source.collect(2.0)
    assert kinds(first) == [EventKind.GPU_SOURCE_DISABLED] and second.is_empty()


def test_gpu_lost_mid_run_reports_once_and_others_keep_reporting() -> None:
    clock, sim, source = fleet([1.0, 1.0, 1.0])
    poll(clock, source)
    lost_uuid = source.gpu_uuids[1]
    sim.lose_gpu(1)  # Xid 79 then GpuIsLost
    batch = poll(clock, source)
    assert sorted(kinds(batch)) == [EventKind.GPU_LOST, EventKind.GPU_XID]
    lost = next(e for e in batch.events if e.kind == EventKind.GPU_LOST)
    xid = next(e for e in batch.events if e.kind == EventKind.GPU_XID)
    assert lost_uuid in lost.detail and lost_uuid in xid.detail and "Xid 79" in xid.detail
    assert [r.fields["gpu_index"] for r in batch.gpu] == [0, 2]
    later = [poll(clock, source) for _ in range(3)]
    assert all(not b.events and [r.fields["gpu_index"] for r in b.gpu] == [0, 2] for b in later)
    assert signals(later[-1])["gpu_power_w"] == 1400.0


def test_xid_event_is_surfaced_and_kept_as_xid_last() -> None:
    clock, sim, source = fleet([0.2, 0.2])
    poll(clock, source)
    sim.inject_xid(0, 48)
    batch = poll(clock, source)
    assert kinds(batch) == [EventKind.GPU_XID]
    assert batch.events[0].detail == f"GPU 0 ({source.gpu_uuids[0]}): Xid 48"
    assert batch.events[0].attributes == {"xid": 48, "gpu_index": 0, "gpu_uuid": source.gpu_uuids[0]}
    assert [r.fields["xid_last"] for r in batch.gpu] == [48, None]
    after = poll(clock, source)
    assert not after.events and after.gpu[0].fields["xid_last"] == 48


def test_throttle_reason_changes_emit_events() -> None:
    clock, sim, source = fleet([1.0])
    assert not poll(clock, source).events
    sim.set_power_limit_w(0, 400.0)
    capped = poll(clock, source)
    assert kinds(capped) == [EventKind.GPU_THROTTLE]
    assert capped.events[0].detail.endswith(": sw_power_cap (was none)")
    assert capped.events[0].attributes == {
        "gpu_index": 0, "gpu_uuid": source.gpu_uuids[0], "reasons": "sw_power_cap", "was": ""
    }  # fmt: skip
    assert capped.gpu[0].fields["throttle_sw_power_cap"] is True and capped.gpu[0].fields["power_w"] == 400.0
    assert signals(capped)["gpu_throttled"] == 1.0
    assert not poll(clock, source).events  # unchanged reasons: no new event
    sim.set_power_limit_w(0, 700.0)
    sim.set_cooling_failure(0)
    details = [e.detail for _ in range(300) for e in poll(clock, source).events]
    assert details[0].endswith(": none (was sw_power_cap)")
    assert any(d.endswith(": hw_thermal (was none)") for d in details)
    hot = poll(clock, source).gpu[0].fields
    assert hot["throttle_hw_thermal"] is True and hot["throttle_thermal"] is True
    assert hot["sm_clock_mhz"] < hot["sm_clock_max_mhz"]


def test_pcie_falls_back_to_throughput_getter_when_counters_missing() -> None:
    spec = SimGpuSpec(unsupported=frozenset({pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES}))
    clock = Clock()
    counting = Counting(SimulatedNvml([spec], [lambda: 1.0], clock=clock))
    source = GpuSource(counting, now_fn=clock)
    rows = [poll(clock, source).gpu[0].fields for _ in range(4)]
    assert rows[-1]["pcie_tx_bytes_per_s"] == round(3e9 / 1024) * 1024  # KB/s -> bytes/s
    assert rows[-1]["pcie_rx_bytes_per_s"] == round(1.5e9 / 1024) * 1024
    assert rows[-1]["memory_temperature_c"] is not None  # still from the field values
    assert counting.calls["nvmlDeviceGetPcieThroughput"] == 2 * 1  # TX+RX once, then every 10 polls


def test_counter_reset_gives_no_negative_rate() -> None:
    clock, sim, source = fleet([1.0])
    for _ in range(4):
        poll(clock, source)
    sim.reset_counters(0)  # counter drops from 9 GB to 0, then 1 s of traffic
    after_reset = poll(clock, source).gpu[0].fields
    assert after_reset["pcie_tx_bytes_per_s"] is None
    assert poll(clock, source).gpu[0].fields["pcie_tx_bytes_per_s"] == pytest.approx(3e9)


def test_unexpected_exception_never_escapes_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SimulatedNvml):
        def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int, version: int = 0) -> int:
            raise RuntimeError("driver bug")

    clock = Clock()
    source = GpuSource(Broken(clock=clock), now_fn=clock)
    with caplog.at_level(logging.ERROR, logger="enginescope.collectors.gpu"):
        batches = [poll(clock, source) for _ in range(3)]
    assert all(isinstance(b, Batch) for b in batches)
    assert len([r for r in caplog.records if "driver bug" in r.getMessage()]) == 1


def test_transient_error_empties_the_column_for_one_poll_only() -> None:
    class Flaky(SimulatedNvml):
        failures = 1

        def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
            return super().nvmlDeviceGetUtilizationRates(handle)

    clock = Clock()
    source = GpuSource(Flaky(load_fns=lambda: 1.0, clock=clock), now_fn=clock)
    first, second = poll(clock, source).gpu[0].fields, poll(clock, source).gpu[0].fields
    assert first["gpu_utilization_pct"] is None and first["power_w"] == 700.0
    assert second["gpu_utilization_pct"] == 100.0


def test_older_driver_uses_the_legacy_calls_without_losing_columns(caplog: pytest.LogCaptureFixture) -> None:
    old = frozenset({"nvmlDeviceGetTemperatureV", "nvmlDeviceGetCurrentClocksEventReasons"})
    clock = Clock()
    counting = Counting(SimulatedNvml([SimGpuSpec(unsupported=old)], [lambda: 1.0], clock=clock))
    source = GpuSource(counting, now_fn=clock)
    sim = counting.inner
    sim.set_power_limit_w(0, 500.0)
    with caplog.at_level(logging.INFO, logger="enginescope.collectors.gpu"):
        rows = [poll(clock, source).gpu[0].fields for _ in range(3)]
    assert rows[-1]["temperature_c"] == sim.nvmlDeviceGetTemperature(sim.nvmlDeviceGetHandleByIndex(0), 0)
    assert rows[-1]["throttle_sw_power_cap"] is True
    assert counting.calls["nvmlDeviceGetTemperatureV"] == 1  # tried once, then the legacy call
    assert counting.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "fan_pct" in logged and "temperature_c" not in logged and "clock_event_reasons" not in logged
