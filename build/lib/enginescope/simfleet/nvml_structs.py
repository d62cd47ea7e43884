"""The small NVML-shaped objects the simulated NVML hands out: handles, event sets, event data.

Everything else pynvml-shaped (constants, ctypes structs, exception classes) is pynvml's own,
so code written against the real library sees the same types.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pynvml

XID_EVENT = pynvml.nvmlEventTypeXidCriticalError
NO_INSTANCE = 0xFFFFFFFF  # NVML's "not a MIG instance" id


@dataclass(slots=True)
class SimEventData:
    """Same attributes as pynvml's c_nvmlEventData_t (``device`` is the simulated handle)."""

    device: Any
    eventType: int  # noqa: N815 - NVML's field name
    eventData: int  # noqa: N815
    gpuInstanceId: int = NO_INSTANCE  # noqa: N815
    computeInstanceId: int = NO_INSTANCE  # noqa: N815


@dataclass(frozen=True, slots=True)
class Handle:
    """A device handle: hashable and comparable, as the GPU source needs."""

    index: int


@dataclass(slots=True)
class EventSet:
    registered: dict[int, int] = field(default_factory=dict)  # device index -> event mask
    queue: deque[SimEventData] = field(default_factory=deque)


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml maps the code to its NVMLError_* subclass
