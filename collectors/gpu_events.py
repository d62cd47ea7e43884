"""GPU events for the NVML source (``enginescope.collectors.gpu``): XID errors and throttle changes.

XIDs arrive through one NVML event set for all GPUs and are drained without waiting (a
0 ms wait answers NVMLError_Timeout when nothing is queued), so a poll never blocks.
Throttle events are edges: one when the set of active slowdown reasons changes.
"""

from __future__ import annotations

import logging
from typing import Any

import pynvml

from enginescope.collectors.gpu_device import Device, OnceLog, handle_key, log
from enginescope.collectors.gpu_fields import SLOWDOWN_MASK, Value, reason_names
from enginescope.collectors.model import Batch, EventKind, EventRow

_XID = pynvml.nvmlEventTypeXidCriticalError


class XidEvents:
    """The XID event set: registration, draining into ``gpu_xid`` events, and freeing."""

    def __init__(self, nvml: Any, log_once: OnceLog, max_events_per_poll: int) -> None:
        self._nvml = nvml
        self._log_once = log_once
        self._max_events_per_poll = max_events_per_poll
        self._event_set: Any = None
        self._by_handle: dict[Any, Device] = {}  # includes lost GPUs: their last XID still names them

    def track(self, dev: Device) -> None:
        self._by_handle[handle_key(dev.handle)] = dev

    def open(self, devices: list[Device]) -> None:
        """One event set for XIDs of all GPUs; a GPU that refuses registration is logged once."""
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except (pynvml.NVMLError, AttributeError) as exc:
            log.info("GPU XID events unavailable (%s); xid_last stays empty", exc)
            return
        for dev in devices:
            try:
                nvml.nvmlDeviceRegisterEvents(dev.handle, _XID, event_set)
            except pynvml.NVMLError as exc:
                log.info("%s: XID events unavailable (%s)", dev.label, exc)
        self._event_set = event_set

    def free(self) -> None:
        """Release the event set (it is forgotten even when NVML raises)."""
        event_set, self._event_set = self._event_set, None
        if event_set is not None:
            self._nvml.nvmlEventSetFree(event_set)

    def drain(self, now_s: float, batch: Batch) -> None:
        """Take queued XID events without waiting; each sets its GPU's ``xid_last``."""
        if self._event_set is None:
            return
        for _ in range(self._max_events_per_poll):
            try:
                data = self._nvml.nvmlEventSetWait(self._event_set, 0)
            except pynvml.NVMLError_Timeout:
                return
            except pynvml.NVMLError as exc:
                key = f"events:{type(exc).__name__}"
                self._log_once(key, logging.WARNING, "GPU event wait failed (%s)", exc)
                return
            if int(data.eventType) & _XID:
                self._record_xid(int(data.eventData), data.device, now_s, batch)

    def _record_xid(self, xid: int, handle: Any, now_s: float, batch: Batch) -> None:
        dev = self._by_handle.get(handle_key(handle))
        if dev is not None:
            dev.xid_last = xid
        label = dev.label if dev is not None else "GPU (unknown)"
        log.warning("%s: Xid %d", label, xid)
        attrs: dict[str, str | int | float] = {"xid": xid}
        if dev is not None:
            attrs |= {"gpu_index": dev.index, "gpu_uuid": dev.uuid}
        batch.events.append(EventRow(now_s, EventKind.GPU_XID, f"{label}: Xid {xid}", attributes=attrs))


def throttle_change(dev: Device, fields: dict[str, Value], now_s: float) -> EventRow | None:
    """A ``gpu_throttle`` event when the device's active slowdown reasons changed since last poll."""
    mask = fields.get("clock_event_reasons")
    if not isinstance(mask, int):
        return None
    active = mask & SLOWDOWN_MASK
    if active == dev.slowdown_mask:
        return None
    now_names = ",".join(reason_names(active)) or "none"
    was_names = ",".join(reason_names(dev.slowdown_mask)) or "none"
    attrs: dict[str, str | int | float] = {
        "gpu_index": dev.index,
        "gpu_uuid": dev.uuid,
        "reasons": ",".join(reason_names(active)),  # registry names; "" when the slowdown ended
        "was": ",".join(reason_names(dev.slowdown_mask)),
    }
    dev.slowdown_mask = active
    return EventRow(
        now_s, EventKind.GPU_THROTTLE, f"{dev.label}: {now_names} (was {was_names})", attributes=attrs
    )
