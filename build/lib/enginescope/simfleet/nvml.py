"""Simulated NVML: pynvml's surface over a small power/thermal model of GPUs under engine load.

``SimulatedNvml`` is a module-like object: the NVML functions the GPU source uses, with
pynvml's names, units and return types (mW, mJ, degrees C, MHz, bytes, ctypes structs from
pynvml), pynvml's constants, and pynvml's own exception classes (raised via
``pynvml.NVMLError(code)``), so ``except pynvml.NVMLError_NotSupported`` works unchanged.

Model per GPU, advanced lazily from the injectable ``clock`` on every call:
- busy fraction b = the device's load function (0-1), sampled at each advance;
- power = idle + (TDP - idle) * b * clock_factor, capped at the power limit (SwPowerCap);
- temperature lags (first order, ``thermal_tau_s``) toward ambient + rise * power / TDP,
  plus ``COOLING_FAILURE_RISE_C`` while a cooling fault is active;
- at or above ``slowdown_temp_c`` the HW thermal slowdown reason is set and the SM clock
  (hence power) drops; ``speed_factor()`` tells a simulated engine how much slower it runs;
- energy integrates power; PCIe byte counters integrate traffic proportional to load.
Faults: ``set_cooling_failure``, ``set_power_limit_w``, ``inject_xid`` (delivered through
the event-set API), ``lose_gpu`` (GpuIsLost from then on), ``reset_counters`` (driver
reload), NotSupported per function or field id (``SimGpuSpec.unsupported``), and
``init_error`` (e.g. library missing at ``nvmlInit``).

Layout: this module is the NVML function surface; the GPU model (``SimGpuSpec``, power,
thermals, clocks) is in ``enginescope.simfleet.nvml_model`` and the handle/event objects in
``enginescope.simfleet.nvml_structs``. ``COOLING_FAILURE_RISE_C``, ``SimGpuSpec`` and ``SimEventData``
are re-exported here.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import pynvml

from enginescope.simfleet.nvml_model import (
    COOLING_FAILURE_RISE_C,
    PCIE_RX_BYTES_PER_S_AT_FULL_LOAD,
    PCIE_TX_BYTES_PER_S_AT_FULL_LOAD,
    SimGpu,
    SimGpuSpec,
    advance,
    new_gpu,
    settle,
)
from enginescope.simfleet.nvml_structs import XID_EVENT, EventSet, Handle, SimEventData, nvml_error

__all__ = ["COOLING_FAILURE_RISE_C", "SimEventData", "SimGpuSpec", "SimulatedNvml"]


class SimulatedNvml:
    """A stand-in for the ``pynvml`` module (see the module docstring)."""

    def __init__(
        self,
        devices: Sequence[SimGpuSpec] = (SimGpuSpec(),),
        load_fns: Sequence[Callable[[], float]] | Callable[[], float] | None = None,
        *,
        intensity_fn: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        driver_version: str = "550.54.15",
        init_error: int | None = None,
    ) -> None:
        if callable(load_fns):
            fns: list[Callable[[], float]] = [load_fns] * len(devices)
        else:
            fns = list(load_fns) if load_fns is not None else [lambda: 0.0] * len(devices)
        if len(fns) != len(devices):
            raise ValueError(f"load_fns has {len(fns)} entries for {len(devices)} devices")
        self._clock = clock
        self._driver_version = driver_version
        self._init_error = init_error
        self._init_count = 0
        self._lock = threading.Lock()
        self._event_sets: list[EventSet] = []
        now = clock()
        self._gpus = [
            new_gpu(i, spec, fn, now, intensity_fn)
            for i, (spec, fn) in enumerate(zip(devices, fns, strict=True))
        ]

    def __getattr__(self, name: str) -> Any:
        """pynvml's constants, structs and exception classes; never its functions."""
        value = getattr(pynvml, name)
        if isinstance(value, types.FunctionType):
            raise AttributeError(f"SimulatedNvml does not implement {name}")
        return value

    # --- fault injection and engine coupling (not part of NVML) ---------------------------------

    def set_cooling_failure(self, index: int, failed: bool = True) -> None:
        with self._lock:
            self._advance(self._gpus[index])
            self._gpus[index].cooling_failed = failed

    def set_power_limit_w(self, index: int, limit_w: float) -> None:
        with self._lock:
            gpu = self._gpus[index]
            self._advance(gpu)
            gpu.power_limit_w = limit_w
            settle(gpu)

    def inject_xid(self, index: int, xid: int) -> None:
        """Queue an XID event on every event set that registered XIDs for this GPU."""
        gpu = self._gpus[index]
        for event_set in self._event_sets:
            if event_set.registered.get(index, 0) & XID_EVENT:
                event_set.queue.append(SimEventData(gpu.handle, XID_EVENT, xid))

    def lose_gpu(self, index: int, xid: int | None = 79) -> None:
        """The GPU falls off the bus: Xid 79 is delivered, then every call raises GpuIsLost."""
        if xid is not None:
            self.inject_xid(index, xid)
        self._gpus[index].lost = True

    def reset_counters(self, index: int) -> None:
        """A driver reload: the energy and PCIe byte counters restart from zero."""
        with self._lock:
            gpu = self._gpus[index]
            self._advance(gpu)
            gpu.energy_mj = gpu.pcie_tx_bytes = gpu.pcie_rx_bytes = 0.0

    def speed_factor(self, index: int | None = None) -> float:
        """Engine speed relative to unthrottled (1.0); None: the slowest live GPU (TP waits for it)."""
        with self._lock:
            gpus = [self._gpus[index]] if index is not None else [g for g in self._gpus if not g.lost]
            for gpu in gpus:
                self._advance(gpu)
            return min((g.clock_factor for g in gpus), default=1.0)

    # --- model ----------------------------------------------------------------------------------

    def _advance(self, gpu: SimGpu) -> None:
        advance(gpu, self._clock())

    def _gpu(self, handle: Any, fn_name: str) -> SimGpu:
        """Checks shared by every device call, then brings the model up to the clock."""
        if self._init_count == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if not isinstance(handle, Handle) or not 0 <= handle.index < len(self._gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self._gpus[handle.index]
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn_name in gpu.spec.unsupported:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        with self._lock:
            self._advance(gpu)
        return gpu

    # --- NVML: library and system -------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise nvml_error(self._init_error)
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        if self._init_count == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        if self._init_count == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        return self._driver_version

    def nvmlDeviceGetCount(self) -> int:
        if self._init_count == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self._gpus)  # a lost GPU is still enumerated, as on real drivers

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        return self._gpu(Handle(index), "nvmlDeviceGetHandleByIndex").handle

    # --- NVML: identity -------------------------------------------------------------------------

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetIndex").handle.index

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").spec.name

    def nvmlDeviceGetPciInfo(self, handle: Any) -> pynvml.nvmlPciInfo_t:
        gpu = self._gpu(handle, "nvmlDeviceGetPciInfo")
        info = pynvml.nvmlPciInfo_t()
        info.busId = info.busIdLegacy = gpu.bus_id  # pynvml's struct stores bytes, returns str
        info.domain, info.bus, info.device = 0, gpu.handle.index + 0x18, 0
        return info

    # --- NVML: power, thermal, clocks ---------------------------------------------------------

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._gpu(handle, "nvmlDeviceGetPowerUsage").power_w * 1000.0)  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return round(self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_w * 1000.0)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return round(self._gpu(handle, "nvmlDeviceGetPowerManagementLimit").power_limit_w * 1000.0)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return int(self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption").energy_mj)  # mJ

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return round(gpu.temp_c)

    def nvmlDeviceGetTemperatureV(
        self, handle: Any, sensor: int, version: int = pynvml.nvmlTemperature_v1
    ) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperatureV")
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if version != pynvml.nvmlTemperature_v1:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        return round(gpu.temp_c)

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetClockInfo")
        if clock_type in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            if gpu.reasons & pynvml.nvmlClocksEventReasonGpuIdle:
                return gpu.spec.sm_clock_idle_mhz
            return round(gpu.spec.sm_clock_max_mhz * gpu.clock_factor)
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return gpu.spec.mem_clock_mhz
        raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock_type: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetMaxClockInfo")
        if clock_type in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            return gpu.spec.sm_clock_max_mhz
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return gpu.spec.mem_clock_mhz
        raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons").reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").reasons

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetFanSpeed")
        if not gpu.spec.has_fan:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return min(100, round(30 + 1.5 * (gpu.temp_c - gpu.spec.ambient_c)))

    # --- NVML: utilisation and memory --------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> pynvml.c_nvmlUtilization_t:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=round(100 * gpu.busy), memory=round(60 * gpu.busy))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        total = gpu.spec.memory_total_bytes
        used = min(total, int(total * gpu.spec.memory_used_fraction + gpu.busy * 0.02 * total))
        if version:
            return pynvml.c_nvmlMemory_v2_t(
                version=version, total=total, reserved=0, free=total - used, used=used
            )
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetEncoderUtilization(self, handle: Any) -> list[int]:
        self._gpu(handle, "nvmlDeviceGetEncoderUtilization")
        return [0, 167_000]  # [percent, sampling period us]

    def nvmlDeviceGetDecoderUtilization(self, handle: Any) -> list[int]:
        self._gpu(handle, "nvmlDeviceGetDecoderUtilization")
        return [0, 167_000]

    # --- NVML: PCIe, NVLink, reliability, modes -----------------------------------------------

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetPcieThroughput")
        per_s = (
            PCIE_TX_BYTES_PER_S_AT_FULL_LOAD
            if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES
            else PCIE_RX_BYTES_PER_S_AT_FULL_LOAD
        )
        return round(gpu.busy * per_s / 1024)  # KB/s

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: Sequence[int | tuple[int, int]]) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        readings = _field_readings(gpu)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        stamp_us = int(gpu.t_s * 1e6)
        for slot, fid in zip(values, field_ids, strict=True):
            slot.fieldId, slot.scopeId = fid if isinstance(fid, tuple) else (fid, 0)
            reading = readings.get(slot.fieldId)
            if reading is None or slot.fieldId in gpu.spec.unsupported:
                slot.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            slot.nvmlReturn, slot.valueType, slot.timestamp = pynvml.NVML_SUCCESS, reading[0], stamp_us
            setattr(slot.value, reading[1], reading[2])
        return values

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetNvLinkState")
        if gpu.spec.nvlink_links == 0:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < gpu.spec.nvlink_links:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter_type: int) -> int:
        self._gpu(handle, "nvmlDeviceGetTotalEccErrors")
        return 0

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        self._gpu(handle, "nvmlDeviceGetRemappedRows")
        return (0, 0, 0, 0)  # (correctable, uncorrectable, pending, failure)

    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int:
        self._gpu(handle, "nvmlDeviceGetPcieReplayCounter")
        return 0

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        self._gpu(handle, "nvmlDeviceGetPersistenceMode")
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:
        self._gpu(handle, "nvmlDeviceGetComputeMode")
        return pynvml.NVML_COMPUTEMODE_DEFAULT

    # --- NVML: events ---------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> EventSet:
        if self._init_count == 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        event_set = EventSet()
        self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._gpu(handle, "nvmlDeviceGetSupportedEventTypes")
        return XID_EVENT | pynvml.nvmlEventTypeSingleBitEccError | pynvml.nvmlEventTypeDoubleBitEccError

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: EventSet) -> None:
        gpu = self._gpu(handle, "nvmlDeviceRegisterEvents")
        index = gpu.handle.index
        event_set.registered[index] = event_set.registered.get(index, 0) | event_types

    def nvmlEventSetWait(self, event_set: EventSet, timeoutms: int) -> SimEventData:
        """Never blocks: with nothing queued it raises NVMLError_Timeout at once."""
        if not event_set.queue:
            raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)
        return event_set.queue.popleft()

    def nvmlEventSetFree(self, event_set: EventSet) -> None:
        if event_set in self._event_sets:
            self._event_sets.remove(event_set)


def _field_readings(gpu: SimGpu) -> dict[int, tuple[int, str, float]]:
    """Field id -> (NVML value type, c_nvmlValue_t member, value) for the fields this GPU models."""
    unsigned, unsigned_long = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    return {
        pynvml.NVML_FI_DEV_MEMORY_TEMP: (
            unsigned,
            "uiVal",
            round(gpu.temp_c + gpu.spec.memory_temp_offset_c),
        ),
        pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: (unsigned_long, "ullVal", int(gpu.pcie_tx_bytes)),
        pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: (unsigned_long, "ullVal", int(gpu.pcie_rx_bytes)),
        pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: (unsigned_long, "ullVal", int(gpu.energy_mj)),
    }
