"""GPU telemetry Source: polls NVML (dcgm-exporter's default fields, without DCGM).

One ``collect`` reads every visible GPU into a ``GpuRow`` (keyed by UUID), adds the
per-replica ``gpu_*`` signals and emits ``gpu_xid`` / ``gpu_throttle`` / ``gpu_lost`` /
``gpu_source_disabled`` events. ``nvml`` is the real ``pynvml`` module by default; the
simulated one (``simfleet.nvml``) has the same surface.

Cost rules: static things (name, PCI id, max clocks) are read once per device, slow
things every ``slow_every`` polls, and a field a device does not support is asked for
once, logged once, and never again. No NVML call here blocks (XID events are drained
with a 0 ms wait). The source never raises: NVML missing disables it with one log line.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from collectors.gpu_fields import (
    ALL_COLUMNS,
    FIELD_VALUE_IDS,
    FV_MEMORY_TEMP,
    FV_PCIE_RX,
    FV_PCIE_TX,
    LOST_ERRORS,
    PCIE_COLUMNS,
    PCIE_FALLBACK,
    READERS,
    SLOWDOWN_MASK,
    UNSUPPORTED_ERRORS,
    Cadence,
    FieldReader,
    Value,
    field_value,
    reason_names,
    replica_signals,
    text,
)
from collectors.model import Batch, EventKind, EventRow, GpuRow, Identity

__all__ = ["ALL_COLUMNS", "GpuSource"]

log = logging.getLogger(__name__)

_FAST = tuple(r for r in READERS if r.cadence is Cadence.FAST)
_SLOW = tuple(r for r in READERS if r.cadence is Cadence.SLOW)
_STATIC = tuple(r for r in READERS if r.cadence is Cadence.STATIC)
_XID = pynvml.nvmlEventTypeXidCriticalError
_FV_UNSUPPORTED = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_INVALID_ARGUMENT,
    pynvml.NVML_ERROR_NO_PERMISSION,
}


class _GpuLost(Exception):
    """A device answered GpuIsLost/GpuNotFound: stop polling it."""


@dataclass(slots=True)
class _Device:
    index: int
    handle: Any
    uuid: str
    static: dict[str, Value]  # identity + STATIC reader columns, copied into every row
    unsupported: set[str] = field(default_factory=set)  # reader names never asked again
    carried: dict[str, Value] = field(default_factory=dict)  # SLOW columns between reads
    slow_readers: list[FieldReader] = field(default_factory=lambda: list(_SLOW))
    fv_ids: list[int] = field(default_factory=lambda: list(FIELD_VALUE_IDS))
    slowdown_mask: int = 0  # last active slowdown reasons, for gpu_throttle events
    xid_last: int | None = None
    pcie_prev: tuple[float, int, int] | None = None  # (t_s, tx_bytes, rx_bytes)

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.uuid})"


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
        self._now_fn = now_fn
        self._max_events = max_events_per_poll
        self._state = "new"  # new -> running | disabled
        self._initialized = False
        self._devices: list[_Device] = []
        self._by_handle: dict[Any, _Device] = {}  # includes lost GPUs: their last XID still names them
        self._event_set: Any = None
        self._polls = 0
        self._last_now_s: float | None = None
        self._logged: set[str] = set()

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
        nvml = self._nvml
        try:
            if self._event_set is not None:
                nvml.nvmlEventSetFree(self._event_set)
            if self._initialized:
                nvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.debug("NVML shutdown: %s", exc)
        self._event_set = None
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
        self._event_set = self._open_event_set()
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
        dev = _Device(index, handle, uuid, static)
        try:
            for reader in _STATIC:
                self._read(dev, reader, static)
        except _GpuLost as exc:
            batch.events.append(EventRow(now_s, EventKind.GPU_LOST, f"{dev.label}: {exc} at start-up"))
            return
        self._devices.append(dev)
        self._by_handle[_handle_key(handle)] = dev

    def _static_call(self, call: Callable[[], str], what: str) -> str | None:
        try:
            return call()
        except (pynvml.NVMLError, AttributeError) as exc:
            self._log_once(f"static:{what}", logging.INFO, "GPU %s not available (%s)", what, exc)
            return None

    def _open_event_set(self) -> Any:
        """One event set for XIDs of all GPUs; a GPU that refuses registration is logged once."""
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except (pynvml.NVMLError, AttributeError) as exc:
            log.info("GPU XID events unavailable (%s); xid_last stays empty", exc)
            return None
        for dev in self._devices:
            try:
                nvml.nvmlDeviceRegisterEvents(dev.handle, _XID, event_set)
            except pynvml.NVMLError as exc:
                log.info("%s: XID events unavailable (%s)", dev.label, exc)
        return event_set

    # --- polling ------------------------------------------------------------------------------

    def _poll(self, now_s: float, batch: Batch) -> None:
        slow_due = self._polls % self._slow_every == 0
        self._polls += 1
        self._drain_events(now_s, batch)
        for dev in list(self._devices):
            try:
                fields = self._read_device(dev, slow_due)
            except _GpuLost as exc:
                self._lose(dev, now_s, batch, exc)
                continue
            self._check_throttle(dev, fields, now_s, batch)
            batch.gpu.append(GpuRow(now_s, dev.uuid, fields))
        interval_s = now_s - self._last_now_s if self._last_now_s is not None else 0.0
        batch.signals.extend(replica_signals(now_s, interval_s, [r.fields for r in batch.gpu]))
        self._last_now_s = now_s

    def _read_device(self, dev: _Device, slow_due: bool) -> dict[str, Value]:
        fields = dict(dev.static)
        fields["xid_last"] = dev.xid_last
        for reader in _FAST:
            self._read(dev, reader, fields)
        if slow_due:
            for reader in dev.slow_readers:
                self._read(dev, reader, dev.carried)
        self._read_field_values(dev, fields)  # may switch PCIe to the slow fallback (read at once)
        fields.update(dev.carried)
        return fields

    def _read(self, dev: _Device, reader: FieldReader, out: dict[str, Value]) -> None:
        while reader.name in dev.unsupported and reader.fallback is not None:
            reader = reader.fallback
        values: Iterable[Value] = (None,) * len(reader.columns)
        if reader.name not in dev.unsupported:
            try:
                values = reader.read(self._nvml, dev.handle)
            except LOST_ERRORS as exc:
                raise _GpuLost(str(exc)) from exc
            except UNSUPPORTED_ERRORS as exc:
                dev.unsupported.add(reader.name)
                if reader.fallback is not None:
                    log.debug(
                        "%s: %s unavailable (%s), using %s", dev.label, reader.name, exc, reader.fallback.name
                    )
                    self._read(dev, reader.fallback, out)
                    return
                self._log_unsupported(dev, reader.name, reader.columns, exc)
            except pynvml.NVMLError as exc:  # transient: empty this poll, retried next poll
                key = f"error:{reader.name}:{type(exc).__name__}"
                self._log_once(key, logging.WARNING, "%s: %s failed (%s)", dev.label, reader.name, exc)
        out.update(zip(reader.columns, values, strict=True))

    def _read_field_values(self, dev: _Device, fields: dict[str, Value]) -> None:
        """Memory temperature and PCIe byte counters in one nvmlDeviceGetFieldValues call."""
        fields["memory_temperature_c"] = None
        fields.update(dict.fromkeys(PCIE_COLUMNS))
        if not dev.fv_ids:
            return
        try:
            values = self._nvml.nvmlDeviceGetFieldValues(dev.handle, dev.fv_ids)
        except LOST_ERRORS as exc:
            raise _GpuLost(str(exc)) from exc
        except UNSUPPORTED_ERRORS as exc:
            self._drop_field_ids(dev, list(dev.fv_ids), exc)
            return
        except pynvml.NVMLError as exc:
            self._log_once(
                f"error:field_values:{type(exc).__name__}",
                logging.WARNING,
                "%s: field values failed (%s)",
                dev.label,
                exc,
            )
            return
        got: dict[int, float | int] = {}
        stamp_us = 0
        for fv in values:
            ret = int(fv.nvmlReturn)
            if ret == pynvml.NVML_SUCCESS:
                got[int(fv.fieldId)] = field_value(fv)
                stamp_us = max(stamp_us, int(fv.timestamp))
            elif ret == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuLost(str(pynvml.NVMLError(ret)))
            elif ret in _FV_UNSUPPORTED:
                self._drop_field_ids(dev, [int(fv.fieldId)], pynvml.NVMLError(ret))
        if FV_MEMORY_TEMP in got:
            fields["memory_temperature_c"] = float(got[FV_MEMORY_TEMP])
        if FV_PCIE_TX in got and FV_PCIE_RX in got:
            t_s = stamp_us / 1e6 if stamp_us > 0 else self._now_fn()
            fields.update(
                zip(
                    PCIE_COLUMNS,
                    self._pcie_rates(dev, t_s, int(got[FV_PCIE_TX]), int(got[FV_PCIE_RX])),
                    strict=True,
                )
            )

    def _drop_field_ids(self, dev: _Device, ids: list[int], exc: Exception) -> None:
        for fid in ids:
            if fid in dev.fv_ids:
                dev.fv_ids.remove(fid)
        names = {FV_MEMORY_TEMP: "memory_temperature_c", FV_PCIE_TX: "pcie_tx", FV_PCIE_RX: "pcie_rx"}
        self._log_unsupported(dev, "field_values", tuple(names.get(i, str(i)) for i in ids), exc)
        if (FV_PCIE_TX in ids or FV_PCIE_RX in ids) and PCIE_FALLBACK not in dev.slow_readers:
            dev.fv_ids = [i for i in dev.fv_ids if i not in (FV_PCIE_TX, FV_PCIE_RX)]
            dev.slow_readers.append(PCIE_FALLBACK)
            self._read(dev, PCIE_FALLBACK, dev.carried)

    @staticmethod
    def _pcie_rates(dev: _Device, t_s: float, tx: int, rx: int) -> tuple[float | None, float | None]:
        """Bytes/s from the counters; None on the first read, a wrap/reset or a zero interval."""
        prev, dev.pcie_prev = dev.pcie_prev, (t_s, tx, rx)
        if prev is None or t_s <= prev[0]:
            return (None, None)
        dt_s = t_s - prev[0]
        d_tx, d_rx = tx - prev[1], rx - prev[2]
        return (d_tx / dt_s if d_tx >= 0 else None, d_rx / dt_s if d_rx >= 0 else None)

    # --- events ---------------------------------------------------------------------------------

    def _drain_events(self, now_s: float, batch: Batch) -> None:
        """Take queued XID events without waiting (timeout 0 ms -> NVMLError_Timeout when empty)."""
        if self._event_set is None:
            return
        for _ in range(self._max_events):
            try:
                data = self._nvml.nvmlEventSetWait(self._event_set, 0)
            except pynvml.NVMLError_Timeout:
                return
            except pynvml.NVMLError as exc:
                self._log_once(
                    f"events:{type(exc).__name__}", logging.WARNING, "GPU event wait failed (%s)", exc
                )
                return
            if not int(data.eventType) & _XID:
                continue
            xid = int(data.eventData)
            dev = self._device_of(data.device)
            if dev is not None:
                dev.xid_last = xid
            label = dev.label if dev is not None else "GPU (unknown)"
            log.warning("%s: Xid %d", label, xid)
            batch.events.append(EventRow(now_s, EventKind.GPU_XID, f"{label}: Xid {xid}"))

    def _device_of(self, handle: Any) -> _Device | None:
        return self._by_handle.get(_handle_key(handle))

    def _check_throttle(self, dev: _Device, fields: dict[str, Value], now_s: float, batch: Batch) -> None:
        mask = fields.get("clock_event_reasons")
        if not isinstance(mask, int):
            return
        active = mask & SLOWDOWN_MASK
        if active != dev.slowdown_mask:
            now_names = ",".join(reason_names(active)) or "none"
            was_names = ",".join(reason_names(dev.slowdown_mask)) or "none"
            detail = f"{dev.label}: {now_names} (was {was_names})"
            batch.events.append(EventRow(now_s, EventKind.GPU_THROTTLE, detail))
            dev.slowdown_mask = active

    def _lose(self, dev: _Device, now_s: float, batch: Batch, exc: Exception) -> None:
        self._devices.remove(dev)
        log.error("%s lost (%s); it is no longer polled", dev.label, exc)
        batch.events.append(EventRow(now_s, EventKind.GPU_LOST, f"{dev.label}: {exc}"))

    # --- logging ------------------------------------------------------------------------------

    def _log_unsupported(self, dev: _Device, what: str, columns: tuple[str, ...], exc: Exception) -> None:
        self._log_once(
            f"unsupported:{what}:{','.join(columns)}",
            logging.INFO,
            "%s: %s not supported (%s); column(s) %s left empty and not asked again",
            dev.label,
            what,
            exc,
            ", ".join(columns),
        )

    def _log_once(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)


def _handle_key(handle: Any) -> Any:
    """A hashable identity for a device handle: pynvml's are ctypes pointers (compared by address)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return handle
