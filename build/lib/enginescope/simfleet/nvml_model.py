"""Power/thermal model of one simulated GPU under engine load (see ``enginescope.simfleet.nvml``).

State advances lazily: every NVML call first brings its GPU up to the clock with
:func:`advance` (integrate energy and PCIe bytes, move temperature toward its target, sample
the load), then :func:`settle` derives power, clocks and slowdown reasons from that state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import pynvml

from enginescope.simfleet.nvml_structs import Handle

COOLING_FAILURE_RISE_C = 50.0  # failed airflow: well past the slowdown point even at partial load
PCIE_TX_BYTES_PER_S_AT_FULL_LOAD = 3.0e9
PCIE_RX_BYTES_PER_S_AT_FULL_LOAD = 1.5e9
_MIN_THERMAL_CLOCK_FACTOR = 0.4
_THERMAL_CLOCK_DROP_PER_C = 0.08


@dataclass(frozen=True, slots=True)
class SimGpuSpec:
    """Static description of one simulated GPU (defaults: H100 SXM 80GB)."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str | None = None  # default: derived from index, stable across runs
    pci_bus_id: str | None = None  # default: 00000000:<index+0x18>:00.0
    memory_total_bytes: int = 81559 * 2**20
    memory_used_fraction: float = 0.9  # engines preallocate weights + KV cache
    idle_power_w: float = 70.0
    tdp_w: float = 700.0
    power_limit_w: float | None = None  # default: TDP
    sm_clock_max_mhz: int = 1980
    sm_clock_idle_mhz: int = 345
    mem_clock_mhz: int = 2619
    ambient_c: float = 28.0
    full_load_rise_c: float = 44.0  # steady-state rise above ambient at TDP
    thermal_tau_s: float = 45.0
    slowdown_temp_c: float = 87.0
    memory_temp_offset_c: float = 6.0
    nvlink_links: int = 18
    has_fan: bool = False  # datacenter boards report fan speed NotSupported
    unsupported: frozenset[str | int] = frozenset()  # NVML function names and field ids


@dataclass(slots=True)
class SimGpu:
    """Mutable state of one simulated GPU."""

    spec: SimGpuSpec
    handle: Handle
    uuid: str
    bus_id: str
    load_fn: Callable[[], float]
    t_s: float  # clock reading the state was last advanced to
    temp_c: float
    power_limit_w: float
    busy: float = 0.0  # 0-1, sampled from load_fn at each advance
    # Power drawn while busy relative to a compute-bound kernel (0-1): small-batch decode keeps
    # the GPU "utilised" (NVML counts any running kernel) at well under TDP.
    intensity_fn: Callable[[], float] | None = None
    intensity: float = 1.0
    power_w: float = 0.0
    clock_factor: float = 1.0  # SM clock relative to max (thermal x power cap)
    reasons: int = 0  # NVML clocks-event reason bits
    energy_mj: float = 0.0
    pcie_tx_bytes: float = 0.0
    pcie_rx_bytes: float = 0.0
    cooling_failed: bool = False
    lost: bool = False


def new_gpu(
    index: int,
    spec: SimGpuSpec,
    load_fn: Callable[[], float],
    now_s: float,
    intensity_fn: Callable[[], float] | None = None,
) -> SimGpu:
    """An idle GPU at its idle steady-state temperature."""
    digest = hashlib.sha1(f"simgpu-{index}-{spec.name}".encode()).hexdigest()
    uuid = spec.uuid or f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    gpu = SimGpu(
        spec=spec,
        handle=Handle(index),
        uuid=uuid,
        bus_id=spec.pci_bus_id or f"00000000:{index + 0x18:02X}:00.0",
        load_fn=load_fn,
        intensity_fn=intensity_fn,
        t_s=now_s,
        temp_c=spec.ambient_c + spec.full_load_rise_c * spec.idle_power_w / spec.tdp_w,
        power_limit_w=spec.power_limit_w or spec.tdp_w,
    )
    settle(gpu)
    return gpu


def advance(gpu: SimGpu, now_s: float) -> None:
    """Integrate counters and temperature over the time since the last advance, then resample load."""
    dt_s = now_s - gpu.t_s
    if dt_s <= 0:
        return
    gpu.energy_mj += gpu.power_w * dt_s * 1000.0
    gpu.pcie_tx_bytes += gpu.busy * PCIE_TX_BYTES_PER_S_AT_FULL_LOAD * dt_s
    gpu.pcie_rx_bytes += gpu.busy * PCIE_RX_BYTES_PER_S_AT_FULL_LOAD * dt_s
    spec = gpu.spec
    target_c = spec.ambient_c + spec.full_load_rise_c * gpu.power_w / spec.tdp_w
    if gpu.cooling_failed:
        target_c += COOLING_FAILURE_RISE_C
    # first-order lag, exact for a constant target over dt_s
    gpu.temp_c += (target_c - gpu.temp_c) * (1.0 - math.exp(-dt_s / spec.thermal_tau_s))
    gpu.t_s = now_s
    gpu.busy = min(1.0, max(0.0, float(gpu.load_fn())))
    if gpu.intensity_fn is not None:
        gpu.intensity = min(1.0, max(0.0, float(gpu.intensity_fn())))
    settle(gpu)


def settle(gpu: SimGpu) -> None:
    """Power, clocks and reasons from the current busy fraction, temperature and limit."""
    spec = gpu.spec
    reasons = 0
    if gpu.busy < 0.01:
        reasons |= pynvml.nvmlClocksEventReasonGpuIdle
    thermal_factor = 1.0
    if gpu.temp_c >= spec.slowdown_temp_c:
        reasons |= pynvml.nvmlClocksEventReasonHwThermalSlowdown
        over_c = gpu.temp_c - spec.slowdown_temp_c + 1.0
        thermal_factor = max(_MIN_THERMAL_CLOCK_FACTOR, 1.0 - _THERMAL_CLOCK_DROP_PER_C * over_c)
    dynamic_w = (spec.tdp_w - spec.idle_power_w) * gpu.busy * gpu.intensity * thermal_factor
    power_factor = 1.0
    headroom_w = gpu.power_limit_w - spec.idle_power_w
    if dynamic_w > headroom_w:
        reasons |= pynvml.nvmlClocksEventReasonSwPowerCap
        power_factor = max(0.0, headroom_w) / dynamic_w
        dynamic_w = max(0.0, headroom_w)
    gpu.power_w = spec.idle_power_w + dynamic_w
    gpu.clock_factor = thermal_factor * power_factor
    gpu.reasons = reasons
