"""GPU telemetry Source: polls NVML (dcgm-exporter's default fields, without DCGM).

One ``collect`` reads every visible GPU into a ``GpuRow`` (keyed by UUID), adds the
per-replica ``gpu_*`` signals and emits ``gpu_xid`` / ``gpu_throttle`` / ``gpu_lost`` /
``gpu_source_disabled`` events. ``nvml`` is the real ``pynvml`` module by default; the
simulated one (``enginescope.simfleet.nvml``) has the same surface.

Cost rules: static things (name, PCI id, max clocks) are read once per device, slow
things every ``slow_every`` polls, and a field a device does not support is asked for
once, logged once, and never again. No NVML call here blocks (XID events are drained
with a 0 ms wait). The source never raises: NVML missing disables it with one log line.

Layout: this module is the Source (start-up, polling, lifecycle); reading one device is in
``enginescope.collectors.gpu_device`` and XID/throttle events in ``enginescope.collectors.gpu_events``. All three log
as ``enginescope.collectors.gpu``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pynvml

from enginescope.collectors.gpu_device import STATIC_READERS, Device, DeviceReader, GpuLost, OnceLog
from enginescope.collectors.gpu_events import XidEvents, throttle_change
from enginescope.collectors.gpu_fields import ALL_COLUMNS, LOST_ERRORS, Value, replica_signals, text
from enginescope.collectors.model import Batch, EventKind, EventRow, GpuRow, Identity

__all__ = ["ALL_COLUMNS", "GpuSource"]

log = logging.getLogger(__name__)


class GpuSource:
    """The ``gpu`` Source.

    ``nvml``: a module-like NVML surface (default: ``pynvml``). ``identity``: stamped on the
    batches (the sidecar restamps them anyway). ``slow_every``: polls between reads of the
    slow-changing fields. ``now_fn``: clock for PCIe counter rates when NVML gives no timestamp.
    """

    name = "gpu"

    def __init__(
        self,
        nvml: Any = None,
        identity: Identity | None = None,
        *,
        slow_every: int = 10,
        now_fn: Callable[[], float] = time.time,
        max_events_per_poll: int = 64,
    ) -> None:
        if slow_every < 1:
            raise ValueError(f"slow_every must be >= 1, got {slow_every}")
        self.identity = identity if identity is not None else Identity(replica="")  # the sidecar restamps
        self._nvml = nvml if nvml is not None else pynvml
        self._slow_every = slow_every
        self._state = "new"  # new -> running | disabled
        self._initialized = False
        self._devices: list[Device] = []
        self._polls = 0
        self._last_now_s: float | None = None
        self._log_once = OnceLog()
        self._reader = DeviceReader(self._nvml, now_fn, self._log_once)
        self._xid_events = XidEvents(self._nvml, self._log_once, max_events_per_poll)

    @property
    def disabled(self) -> bool:
        return self._state == "disabled"

    @property
    def gpu_uuids(self) -> list[str]:
        """UUIDs of the GPUs still being polled."""
        return [d.uuid for d in self._devices]

    def collect(self, now_s: float) -> Batch:
        batch = Batch(identity=self.identity)
        if self._state == "disabled":
            return batch
        try:
            if self._state == "new":
                self._start(now_s, batch)
            if self._state == "running":
                self._poll(now_s, batch)
        except Exception as exc:  # a collector never crashes the sidecar
            self._log_once(f"unexpected:{type(exc).__name__}", logging.ERROR, "GPU poll failed: %r", exc)
        return batch

    def close(self) -> None:
        try:
            self._xid_events.free()
            if self._initialized:
                self._nvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.debug("NVML shutdown: %s", exc)
        self._initialized = False

    # --- start-up ---------------------------------------------------------------------------

    def _start(self, now_s: float, batch: Batch) -> None:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
            self._initialized = True
            count = int(nvml.nvmlDeviceGetCount())
        except (pynvml.NVMLError, OSError) as exc:
            self._disable(now_s, batch, f"NVML unavailable ({type(exc).__name__}: {exc})")
            return
        driver = self._static_call(lambda: text(nvml.nvmlSystemGetDriverVersion()), "driver_version")
        for index in range(count):
            self._add_device(index, driver, now_s, batch)
        if not self._devices and not batch.events:
            self._disable(now_s, batch, "no GPU visible to NVML")
            return
        self._xid_events.open(self._devices)
        self._state = "running"

    def _disable(self, now_s: float, batch: Batch, reason: str) -> None:
        log.warning("GPU telemetry disabled: %s; the sidecar carries on without GPU data", reason)
        batch.events.append(EventRow(now_s, EventKind.GPU_SOURCE_DISABLED, reason))
        self._state = "disabled"
        self.close()

    def _add_device(self, index: int, driver: str | None, now_s: float, batch: Batch) -> None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = text(nvml.nvmlDeviceGetUUID(handle))
        except LOST_ERRORS as exc:
            batch.events.append(EventRow(now_s, EventKind.GPU_LOST, f"GPU {index}: {exc} at start-up"))
            return
        except pynvml.NVMLError as exc:
            log.warning("GPU %d skipped: cannot get its handle/UUID (%s)", index, exc)
            return
        static: dict[str, Value] = {
            "gpu_index": index,
            "gpu_name": self._static_call(lambda: text(nvml.nvmlDeviceGetName(handle)), "gpu_name"),
            "pci_bus_id": self._static_call(
                lambda: text(nvml.nvmlDeviceGetPciInfo(handle).busId), "pci_bus_id"
            ),
            "driver_version": driver,
        }
        dev = Device(index, handle, uuid, static)
        try:
            for reader in STATIC_READERS:
                self._reader.read(dev, reader, static)
        except GpuLost as exc:
            batch.events.append(EventRow(now_s, EventKind.GPU_LOST, f"{dev.label}: {exc} at start-up"))
            return
        self._devices.append(dev)
        self._xid_events.track(dev)

    def _static_call(self, call: Callable[[], str], what: str) -> str | None:
        try:
            return call()
        except (pynvml.NVMLError, AttributeError) as exc:
            self._log_once(f"static:{what}", logging.INFO, "GPU %s not available (%s)", what, exc)
            return None

    # --- polling ------------------------------------------------------------------------------

    def _poll(self, now_s: float, batch: Batch) -> None:
        slow_due = self._polls % self._slow_every == 0
        self._polls += 1
        self._xid_events.drain(now_s, batch)
        for dev in list(self._devices):
            try:
                fields = self._reader.read_device(dev, slow_due)
            except GpuLost as exc:
                self._lose(dev, now_s, batch, exc)
                continue
            throttle_event = throttle_change(dev, fields, now_s)
            if throttle_event is not None:
                batch.events.append(throttle_event)
            batch.gpu.append(GpuRow(now_s, dev.uuid, fields))
        interval_s = now_s - self._last_now_s if self._last_now_s is not None else 0.0
        batch.signals.extend(replica_signals(now_s, interval_s, [r.fields for r in batch.gpu]))
        self._last_now_s = now_s

    def _lose(self, dev: Device, now_s: float, batch: Batch, exc: Exception) -> None:
        self._devices.remove(dev)
        log.error("%s lost (%s); it is no longer polled", dev.label, exc)
        batch.events.append(EventRow(now_s, EventKind.GPU_LOST, f"{dev.label}: {exc}"))
