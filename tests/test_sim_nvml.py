"""The simulated NVML: pynvml's surface (names, units, types, errors) and a load-following model."""

from __future__ import annotations

import pynvml
import pytest

from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml


class Clock:
    def __init__(self) -> None:
        self.now_s = 5000.0

    def __call__(self) -> float:
        return self.now_s


def make(busy: list[float], clock: Clock, **spec: object) -> SimulatedNvml:
    sim = SimulatedNvml([SimGpuSpec(**spec)], [lambda: busy[0]], clock=clock)  # type: ignore[arg-type]
    sim.nvmlInit()
    return sim


def run(clock: Clock, sim: SimulatedNvml, seconds: int) -> None:
    """Advance in 1 s steps, touching the device each second as a poller would."""
    h = sim.nvmlDeviceGetHandleByIndex(0)
    for _ in range(seconds):
        clock.now_s += 1.0
        sim.nvmlDeviceGetPowerUsage(h)


def test_surface_has_pynvml_types_units_and_constants() -> None:
    clock = Clock()
    sim = make([0.0], clock, memory_total_bytes=80 * 2**30, memory_used_fraction=0.5)
    assert sim.nvmlDeviceGetCount() == 1
    h = sim.nvmlDeviceGetHandleByIndex(0)
    assert sim.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    assert sim.nvmlDeviceGetUUID(h).startswith("GPU-")
    assert isinstance(sim.nvmlDeviceGetPciInfo(h), pynvml.nvmlPciInfo_t)
    assert sim.nvmlDeviceGetPciInfo(h).busId == "00000000:18:00.0"
    util = sim.nvmlDeviceGetUtilizationRates(h)
    assert isinstance(util, pynvml.c_nvmlUtilization_t) and (util.gpu, util.memory) == (0, 0)
    mem = sim.nvmlDeviceGetMemoryInfo(h)
    assert isinstance(mem, pynvml.c_nvmlMemory_t)
    assert (mem.total, mem.used, mem.free) == (80 * 2**30, 40 * 2**30, 40 * 2**30)
    assert sim.nvmlDeviceGetPowerUsage(h) == 70_000  # mW at idle
    assert sim.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
    assert sim.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) == 1980
    assert sim.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) == 345  # idle clock
    assert sim.nvmlDeviceGetCurrentClocksEventReasons(h) == pynvml.nvmlClocksEventReasonGpuIdle
    # constants and exception classes are pynvml's own
    assert (
        sim.NVML_CLOCK_SM is pynvml.NVML_CLOCK_SM
        and sim.NVMLError_NotSupported is pynvml.NVMLError_NotSupported
    )
    with pytest.raises(AttributeError):
        sim.nvmlDeviceGetVbiosVersion  # noqa: B018 - a real pynvml function the simulator lacks


def test_device_follows_load_power_temperature_utilisation_energy() -> None:
    clock, busy = Clock(), [0.0]
    sim = make(busy, clock)
    h = sim.nvmlDeviceGetHandleByIndex(0)
    run(clock, sim, 10)
    idle_temp = sim.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    energy_0 = sim.nvmlDeviceGetTotalEnergyConsumption(h)
    busy[0] = 0.5
    run(clock, sim, 1)
    # power = idle + (TDP - idle) * busy = 70 + 630 * 0.5 W
    assert sim.nvmlDeviceGetPowerUsage(h) == 385_000
    assert sim.nvmlDeviceGetUtilizationRates(h).gpu == 50
    busy[0] = 1.0
    run(clock, sim, 300)  # > 6 thermal time constants
    assert sim.nvmlDeviceGetPowerUsage(h) == 700_000
    hot_temp = sim.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    assert hot_temp == 72 and idle_temp == 32  # ambient 28 + 44 * P/TDP
    assert sim.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) == 1980
    # energy integrates power: 1 s idle-ish (70 W) + 1 s at 385 W + 299 s at 700 W, in mJ
    assert sim.nvmlDeviceGetTotalEnergyConsumption(h) - energy_0 == pytest.approx(
        (70 + 385 + 299 * 700) * 1000, rel=1e-6
    )


def test_cooling_failure_throttles_and_slows_the_engine() -> None:
    clock, busy = Clock(), [1.0]
    sim = make(busy, clock)
    h = sim.nvmlDeviceGetHandleByIndex(0)
    run(clock, sim, 200)
    assert sim.speed_factor(0) == 1.0
    sim.set_cooling_failure(0)
    run(clock, sim, 300)
    reasons = sim.nvmlDeviceGetCurrentClocksEventReasons(h)
    assert reasons & pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert sim.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) >= 87
    sm = sim.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
    assert sm < 1980 * 0.9
    assert sim.speed_factor(0) == pytest.approx(sm / 1980, abs=0.01)
    assert sim.nvmlDeviceGetPowerUsage(h) < 650_000  # lower clocks draw less
    sim.set_cooling_failure(0, False)
    run(clock, sim, 400)
    assert not sim.nvmlDeviceGetCurrentClocksEventReasons(h) & pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert sim.speed_factor() == 1.0


def test_power_limit_caps_power_and_sets_sw_power_cap() -> None:
    clock, busy = Clock(), [1.0]
    sim = make(busy, clock)
    h = sim.nvmlDeviceGetHandleByIndex(0)
    sim.set_power_limit_w(0, 400.0)
    run(clock, sim, 2)
    assert sim.nvmlDeviceGetPowerUsage(h) == 400_000
    assert sim.nvmlDeviceGetCurrentClocksEventReasons(h) & pynvml.nvmlClocksEventReasonSwPowerCap
    assert sim.speed_factor(0) == pytest.approx(330 / 630)


def test_xid_is_delivered_through_the_event_set_and_wait_never_blocks() -> None:
    clock = Clock()
    sim = SimulatedNvml([SimGpuSpec(), SimGpuSpec()], clock=clock)
    sim.nvmlInit()
    event_set = sim.nvmlEventSetCreate()
    h1 = sim.nvmlDeviceGetHandleByIndex(1)
    sim.nvmlDeviceRegisterEvents(h1, pynvml.nvmlEventTypeXidCriticalError, event_set)
    with pytest.raises(pynvml.NVMLError_Timeout):
        sim.nvmlEventSetWait(event_set, 0)
    sim.inject_xid(0, 13)  # GPU 0 not registered: not delivered
    sim.inject_xid(1, 48)
    data = sim.nvmlEventSetWait(event_set, 0)
    assert (data.eventType, data.eventData, data.device) == (pynvml.nvmlEventTypeXidCriticalError, 48, h1)
    with pytest.raises(pynvml.NVMLError_Timeout):
        sim.nvmlEventSetWait(event_set, 1000)


def test_faults_lost_gpu_not_supported_and_init_errors() -> None:
    clock = Clock()
    sim = SimulatedNvml(
        [SimGpuSpec(unsupported=frozenset({"nvmlDeviceGetPowerUsage"})), SimGpuSpec()], clock=clock
    )
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        sim.nvmlDeviceGetCount()
    sim.nvmlInit()
    h0, h1 = sim.nvmlDeviceGetHandleByIndex(0), sim.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        sim.nvmlDeviceGetPowerUsage(h0)
    assert sim.nvmlDeviceGetPowerUsage(h1) == 70_000
    with pytest.raises(pynvml.NVMLError_NotSupported):
        sim.nvmlDeviceGetFanSpeed(h1)  # datacenter board: no fan reading
    sim.lose_gpu(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        sim.nvmlDeviceGetTemperature(h1, pynvml.NVML_TEMPERATURE_GPU)
    assert sim.nvmlDeviceGetCount() == 2
    missing = SimulatedNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(pynvml.NVMLError_LibraryNotFound) as info:
        missing.nvmlInit()
    assert info.value.value == 12


def test_field_values_report_per_field_status() -> None:
    clock, busy = Clock(), [1.0]
    sim = make(busy, clock, unsupported=frozenset({pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES}))
    h = sim.nvmlDeviceGetHandleByIndex(0)
    run(clock, sim, 2)
    ids = [
        pynvml.NVML_FI_DEV_MEMORY_TEMP,
        pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
        pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES,
    ]
    temp, tx, rx = sim.nvmlDeviceGetFieldValues(h, ids)
    assert temp.nvmlReturn == pynvml.NVML_SUCCESS and temp.value.uiVal == round(
        sim.nvmlDeviceGetTemperature(h, 0) + 6
    )
    assert tx.nvmlReturn == pynvml.NVML_SUCCESS and tx.value.ullVal == 3_000_000_000  # 1 s at 3 GB/s
    assert tx.timestamp == int(clock.now_s * 1e6)
    assert rx.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_small_batch_decode_is_fully_utilised_but_well_under_tdp() -> None:
    clock = Clock()
    intensity = [0.55]
    sim = SimulatedNvml([SimGpuSpec()], [lambda: 1.0], intensity_fn=lambda: intensity[0], clock=clock)
    sim.nvmlInit()
    h = sim.nvmlDeviceGetHandleByIndex(0)
    run(clock, sim, 5)
    small_batch_w = sim.nvmlDeviceGetPowerUsage(h) / 1000
    intensity[0] = 1.0
    run(clock, sim, 5)
    full_w = sim.nvmlDeviceGetPowerUsage(h) / 1000
    assert sim.nvmlDeviceGetUtilizationRates(h).gpu == 100
    assert small_batch_w == pytest.approx(70 + 630 * 0.55)
    assert full_w == pytest.approx(700)
