"""What the GPU source reads from NVML, and how each reading becomes columns with units.

Each ``FieldReader`` is one NVML call that fills one or more columns of the ``gpu``
table. Readers are independent: a reader that fails leaves only its own columns None.
``cadence`` says how often it runs: every poll (``FAST``), every ``slow_every`` polls
(``SLOW``; the last value is carried over in between), or once per device (``STATIC``).
See docs/gpu-fields.md for the DCGM field each column corresponds to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pynvml

from enginescope.collectors.gpu_columns import IDENTITY_COLUMNS
from enginescope.collectors.model import SignalRow
from enginescope.collectors.signals import SLOWDOWN_MASK, THROTTLE_REASONS, throttle_names

Value = float | int | str | bool | None


class Cadence(Enum):
    FAST = "fast"
    SLOW = "slow"
    STATIC = "static"


@dataclass(frozen=True, slots=True)
class FieldReader:
    name: str  # key for the per-device unsupported cache and for log lines
    columns: tuple[str, ...]
    read: Callable[[Any, Any], tuple[Value, ...]]  # (nvml, handle) -> one value per column
    cadence: Cadence = Cadence.FAST
    # Older call for the same columns, used once ``read`` proves unsupported (e.g. a driver
    # or nvidia-ml-py release that predates the newer function).
    fallback: FieldReader | None = None


# Clock-event ("throttle") reason bits -> boolean columns ``throttle_<reason>`` (registry names).
THROTTLE_FLAG_BITS: tuple[tuple[str, int], ...] = tuple((r.column, r.bit) for r in THROTTLE_REASONS)
THERMAL_MASK = pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
REASON_COLUMNS = ("clock_event_reasons", *(c for c, _ in THROTTLE_FLAG_BITS), "throttle_thermal")


def reason_names(mask: int) -> list[str]:
    """Names of the slowdown reasons set in ``mask`` (the registry's spelling)."""
    return throttle_names(mask)


def decode_reasons(mask: int) -> tuple[Value, ...]:
    return (mask, *(bool(mask & bit) for _, bit in THROTTLE_FLAG_BITS), bool(mask & THERMAL_MASK))


def text(value: str | bytes) -> str:
    """NVML strings as str: older nvidia-ml-py releases returned bytes from some getters."""
    return value.decode() if isinstance(value, bytes) else value


def _reasons(fn_name: str) -> Callable[[Any, Any], tuple[Value, ...]]:
    def read(nvml: Any, h: Any) -> tuple[Value, ...]:
        return decode_reasons(int(getattr(nvml, fn_name)(h)))

    return read


def _memory(nvml: Any, h: Any) -> tuple[Value, ...]:
    info = nvml.nvmlDeviceGetMemoryInfo(h)  # v1: used includes driver-reserved memory
    return (int(info.used), int(info.free), int(info.total))


def _utilization(nvml: Any, h: Any) -> tuple[Value, ...]:
    rates = nvml.nvmlDeviceGetUtilizationRates(h)
    return (float(rates.gpu), float(rates.memory))


def _remapped(nvml: Any, h: Any) -> tuple[Value, ...]:
    corr, unc, pending, failure = nvml.nvmlDeviceGetRemappedRows(h)
    return (int(corr), int(unc), bool(pending), bool(failure))


def _nvlink(nvml: Any, h: Any) -> tuple[Value, ...]:
    """Active and present NVLink links; links are probed until the first missing one."""
    active = present = 0
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(h, link)
        except (pynvml.NVMLError_InvalidArgument, pynvml.NVMLError_NotSupported):
            if present == 0:
                raise
            break
        present += 1
        active += int(state == pynvml.NVML_FEATURE_ENABLED)
    return (active, present)


def _pcie_throughput(nvml: Any, h: Any) -> tuple[Value, ...]:
    # NVML reports KB/s sampled over a 20 ms window; treated as KiB as nvitop/nvtop do.
    tx = nvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_TX_BYTES)
    rx = nvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_RX_BYTES)
    return (float(tx) * 1024.0, float(rx) * 1024.0)


def _ecc(error_type: int) -> Callable[[Any, Any], tuple[Value, ...]]:
    def read(nvml: Any, h: Any) -> tuple[Value, ...]:
        return (int(nvml.nvmlDeviceGetTotalEccErrors(h, error_type, pynvml.NVML_VOLATILE_ECC)),)

    return read


def _one(fn_name: str, scale: float | None = None, *args: int) -> Callable[[Any, Any], tuple[Value, ...]]:
    """A reader for a getter returning one number; ``scale`` converts units (mW -> W)."""

    def read(nvml: Any, h: Any) -> tuple[Value, ...]:
        raw = getattr(nvml, fn_name)(h, *args)
        return (float(raw) * scale if scale is not None else int(raw),)

    return read


def _first(fn_name: str) -> Callable[[Any, Any], tuple[Value, ...]]:
    """Encoder/decoder utilisation getters return [percent, sampling period us]."""

    def read(nvml: Any, h: Any) -> tuple[Value, ...]:
        return (float(getattr(nvml, fn_name)(h)[0]),)

    return read


_CLK = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM

READERS: tuple[FieldReader, ...] = (
    # static: read once per device
    FieldReader(
        "max_sm_clock",
        ("sm_clock_max_mhz",),
        _one("nvmlDeviceGetMaxClockInfo", None, _CLK[0]),
        Cadence.STATIC,
    ),
    FieldReader(
        "max_mem_clock",
        ("mem_clock_max_mhz",),
        _one("nvmlDeviceGetMaxClockInfo", None, _CLK[1]),
        Cadence.STATIC,
    ),
    # fast: every poll
    FieldReader("power", ("power_w",), _one("nvmlDeviceGetPowerUsage", 1e-3)),
    FieldReader("energy", ("energy_j",), _one("nvmlDeviceGetTotalEnergyConsumption", 1e-3)),
    FieldReader(
        "temperature",
        ("temperature_c",),
        _one("nvmlDeviceGetTemperatureV", 1.0, pynvml.NVML_TEMPERATURE_GPU),
        fallback=FieldReader(
            "temperature_legacy",
            ("temperature_c",),
            _one("nvmlDeviceGetTemperature", 1.0, pynvml.NVML_TEMPERATURE_GPU),
        ),
    ),
    FieldReader("utilization", ("gpu_utilization_pct", "memory_utilization_pct"), _utilization),
    FieldReader("memory", ("fb_used_bytes", "fb_free_bytes", "fb_total_bytes"), _memory),
    FieldReader("sm_clock", ("sm_clock_mhz",), _one("nvmlDeviceGetClockInfo", None, _CLK[0])),
    FieldReader("mem_clock", ("mem_clock_mhz",), _one("nvmlDeviceGetClockInfo", None, _CLK[1])),
    FieldReader(  # renamed from ...ThrottleReasons in R535
        "clock_event_reasons",
        REASON_COLUMNS,
        _reasons("nvmlDeviceGetCurrentClocksEventReasons"),
        fallback=FieldReader(
            "clock_throttle_reasons", REASON_COLUMNS, _reasons("nvmlDeviceGetCurrentClocksThrottleReasons")
        ),
    ),
    # slow: every slow_every polls, carried over in between
    FieldReader(
        "power_limit", ("power_limit_w",), _one("nvmlDeviceGetEnforcedPowerLimit", 1e-3), Cadence.SLOW
    ),
    FieldReader("fan", ("fan_pct",), _one("nvmlDeviceGetFanSpeed", 1.0), Cadence.SLOW),
    FieldReader(
        "persistence_mode", ("persistence_mode",), _one("nvmlDeviceGetPersistenceMode"), Cadence.SLOW
    ),
    FieldReader("compute_mode", ("compute_mode",), _one("nvmlDeviceGetComputeMode"), Cadence.SLOW),
    FieldReader(
        "ecc_sbe", ("ecc_sbe_volatile",), _ecc(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED), Cadence.SLOW
    ),
    FieldReader(
        "ecc_dbe", ("ecc_dbe_volatile",), _ecc(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED), Cadence.SLOW
    ),
    FieldReader(
        "remapped_rows",
        (
            "remapped_rows_correctable",
            "remapped_rows_uncorrectable",
            "remapped_rows_pending",
            "row_remap_failure",
        ),
        _remapped,
        Cadence.SLOW,
    ),
    FieldReader("pcie_replay", ("pcie_replay_count",), _one("nvmlDeviceGetPcieReplayCounter"), Cadence.SLOW),
    FieldReader(
        "enc_util", ("enc_utilization_pct",), _first("nvmlDeviceGetEncoderUtilization"), Cadence.SLOW
    ),
    FieldReader(
        "dec_util", ("dec_utilization_pct",), _first("nvmlDeviceGetDecoderUtilization"), Cadence.SLOW
    ),
    FieldReader("nvlink", ("nvlink_links_active", "nvlink_links_present"), _nvlink, Cadence.SLOW),
)

# Columns filled from nvmlDeviceGetFieldValues (one call per poll for all of them).
FV_MEMORY_TEMP = pynvml.NVML_FI_DEV_MEMORY_TEMP
FV_PCIE_TX = pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES
FV_PCIE_RX = pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES
FIELD_VALUE_IDS = (FV_MEMORY_TEMP, FV_PCIE_TX, FV_PCIE_RX)
PCIE_COLUMNS = ("pcie_tx_bytes_per_s", "pcie_rx_bytes_per_s")
# Fallback when the PCIe byte counters are missing: the sampled throughput getter.
PCIE_FALLBACK = FieldReader("pcie_throughput", PCIE_COLUMNS, _pcie_throughput, Cadence.SLOW)

ALL_COLUMNS: tuple[str, ...] = (
    *IDENTITY_COLUMNS,
    *(c for r in READERS for c in r.columns),
    "memory_temperature_c",
    *PCIE_COLUMNS,
)

_VALUE_ATTR = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


def field_value(fv: Any) -> float | int:
    """The number in one ``c_nvmlFieldValue_t`` (its union member depends on valueType)."""
    return getattr(fv.value, _VALUE_ATTR.get(int(fv.valueType), "ullVal"))


# Errors meaning "this device will never answer this call": cache and stop asking.
UNSUPPORTED_ERRORS: tuple[type[Exception], ...] = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLError_NoPermission,
    pynvml.NVMLError_InvalidArgument,
    AttributeError,  # the nvml object (old nvidia-ml-py, simulator) lacks the function
)
LOST_ERRORS: tuple[type[Exception], ...] = (pynvml.NVMLError_GpuIsLost, pynvml.NVMLError_GpuNotFound)


def replica_signals(now_s: float, interval_s: float, rows: list[dict[str, Value]]) -> list[SignalRow]:
    """Per-replica GPU aggregates. Sums need every GPU's value (a partial sum would lie)."""

    def values(column: str) -> list[float]:
        return [float(v) for r in rows if isinstance(v := r.get(column), int | float)]

    out: list[SignalRow] = []

    def add(signal: str, value: float | None) -> None:
        if value is not None:
            out.append(SignalRow(now_s, signal, value, interval_s))

    power, used = values("power_w"), values("fb_used_bytes")
    temps, utils, clocks = values("temperature_c"), values("gpu_utilization_pct"), values("sm_clock_mhz")
    masks = [int(m) for m in values("clock_event_reasons")]
    add("gpu_power_w", sum(power) if rows and len(power) == len(rows) else None)
    add("gpu_temperature_c", max(temps) if temps else None)
    add("gpu_utilization_pct", sum(utils) / len(utils) if utils else None)
    add("gpu_sm_clock_mhz", min(clocks) if clocks else None)
    add("gpu_memory_used_bytes", sum(used) if rows and len(used) == len(rows) else None)
    add("gpu_throttled", float(any(m & SLOWDOWN_MASK for m in masks)) if masks else None)
    return out
