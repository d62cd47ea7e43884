"""Reading one GPU for the NVML source (``enginescope.collectors.gpu``): per-device state and one poll's columns.

A reader the device does not support is asked once, logged once and then skipped (or
replaced by its older ``fallback`` call). ``nvmlDeviceGetFieldValues`` fetches memory
temperature and the PCIe byte counters in one call; when the counters are unsupported the
PCIe columns switch to the slower ``nvmlDeviceGetPcieThroughput`` reader.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from enginescope.collectors.gpu_fields import (
    FIELD_VALUE_IDS,
    FV_MEMORY_TEMP,
    FV_PCIE_RX,
    FV_PCIE_TX,
    LOST_ERRORS,
    PCIE_COLUMNS,
    PCIE_FALLBACK,
    READERS,
    UNSUPPORTED_ERRORS,
    Cadence,
    FieldReader,
    Value,
    field_value,
)

# One logger name for the whole GPU source, wherever its code lives: operators filter on it.
log = logging.getLogger("enginescope.collectors.gpu")

FAST_READERS = tuple(r for r in READERS if r.cadence is Cadence.FAST)
SLOW_READERS = tuple(r for r in READERS if r.cadence is Cadence.SLOW)
STATIC_READERS = tuple(r for r in READERS if r.cadence is Cadence.STATIC)
# Per-field return codes of nvmlDeviceGetFieldValues that mean "never ask for this field again".
_FV_UNSUPPORTED = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_INVALID_ARGUMENT,
    pynvml.NVML_ERROR_NO_PERMISSION,
}
_FV_COLUMN_NAMES = {FV_MEMORY_TEMP: "memory_temperature_c", FV_PCIE_TX: "pcie_tx", FV_PCIE_RX: "pcie_rx"}


class GpuLost(Exception):
    """A device answered GpuIsLost/GpuNotFound: stop polling it."""


class OnceLog:
    """Logs each distinct condition once per source, so a failing field cannot flood the log."""

    def __init__(self) -> None:
        self._seen_keys: set[str] = set()

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._seen_keys:
            self._seen_keys.add(key)
            log.log(level, msg, *args)

    def unsupported(self, device_label: str, what: str, columns: tuple[str, ...], exc: Exception) -> None:
        self(
            f"unsupported:{what}:{','.join(columns)}",
            logging.INFO,
            "%s: %s not supported (%s); column(s) %s left empty and not asked again",
            device_label,
            what,
            exc,
            ", ".join(columns),
        )


@dataclass(slots=True)
class Device:
    index: int
    handle: Any
    uuid: str
    static: dict[str, Value]  # identity + STATIC reader columns, copied into every row
    unsupported: set[str] = field(default_factory=set)  # reader names never asked again
    carried: dict[str, Value] = field(default_factory=dict)  # SLOW columns between reads
    slow_readers: list[FieldReader] = field(default_factory=lambda: list(SLOW_READERS))
    fv_ids: list[int] = field(default_factory=lambda: list(FIELD_VALUE_IDS))
    slowdown_mask: int = 0  # last active slowdown reasons, for gpu_throttle events
    xid_last: int | None = None
    pcie_prev: tuple[float, int, int] | None = None  # (t_s, tx_bytes, rx_bytes)

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.uuid})"


def handle_key(handle: Any) -> Any:
    """A hashable identity for a device handle: pynvml's are ctypes pointers (compared by address)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return handle


class DeviceReader:
    """Fills a device's columns from NVML; raises :class:`GpuLost` when the device is gone."""

    def __init__(self, nvml: Any, now_fn: Callable[[], float], log_once: OnceLog) -> None:
        self._nvml = nvml
        self._now_fn = now_fn
        self._log_once = log_once

    def read_device(self, dev: Device, slow_due: bool) -> dict[str, Value]:
        """Every column of one poll: static, fast, field values, and the slow ones (read or carried)."""
        fields = dict(dev.static)
        fields["xid_last"] = dev.xid_last
        for reader in FAST_READERS:
            self.read(dev, reader, fields)
        if slow_due:
            for reader in dev.slow_readers:
                self.read(dev, reader, dev.carried)
        self._read_field_values(dev, fields)  # may switch PCIe to the slow fallback (read at once)
        fields.update(dev.carried)
        return fields

    def read(self, dev: Device, reader: FieldReader, out: dict[str, Value]) -> None:
        """One reader's columns into ``out``; None for each when unsupported or failing this poll."""
        while reader.name in dev.unsupported and reader.fallback is not None:
            reader = reader.fallback
        values: Iterable[Value] = (None,) * len(reader.columns)
        if reader.name not in dev.unsupported:
            try:
                values = reader.read(self._nvml, dev.handle)
            except LOST_ERRORS as exc:
                raise GpuLost(str(exc)) from exc
            except UNSUPPORTED_ERRORS as exc:
                dev.unsupported.add(reader.name)
                if reader.fallback is not None:
                    log.debug(
                        "%s: %s unavailable (%s), using %s", dev.label, reader.name, exc, reader.fallback.name
                    )
                    self.read(dev, reader.fallback, out)
                    return
                self._log_once.unsupported(dev.label, reader.name, reader.columns, exc)
            except pynvml.NVMLError as exc:  # transient: empty this poll, retried next poll
                key = f"error:{reader.name}:{type(exc).__name__}"
                self._log_once(key, logging.WARNING, "%s: %s failed (%s)", dev.label, reader.name, exc)
        out.update(zip(reader.columns, values, strict=True))

    # --- nvmlDeviceGetFieldValues -------------------------------------------------------------

    def _read_field_values(self, dev: Device, fields: dict[str, Value]) -> None:
        """Memory temperature and PCIe byte counters in one nvmlDeviceGetFieldValues call."""
        fields["memory_temperature_c"] = None
        fields.update(dict.fromkeys(PCIE_COLUMNS))
        values = self._query_field_values(dev)
        if values is None:
            return
        got, stamp_us = self._successful_values(dev, values)
        if FV_MEMORY_TEMP in got:
            fields["memory_temperature_c"] = float(got[FV_MEMORY_TEMP])
        if FV_PCIE_TX in got and FV_PCIE_RX in got:
            t_s = stamp_us / 1e6 if stamp_us > 0 else self._now_fn()
            rates = self._pcie_rates(dev, t_s, int(got[FV_PCIE_TX]), int(got[FV_PCIE_RX]))
            fields.update(zip(PCIE_COLUMNS, rates, strict=True))

    def _query_field_values(self, dev: Device) -> Any:
        """The raw field values, or None when there is nothing to read or the call failed."""
        if not dev.fv_ids:
            return None
        try:
            return self._nvml.nvmlDeviceGetFieldValues(dev.handle, dev.fv_ids)
        except LOST_ERRORS as exc:
            raise GpuLost(str(exc)) from exc
        except UNSUPPORTED_ERRORS as exc:
            self._drop_field_ids(dev, list(dev.fv_ids), exc)
        except pynvml.NVMLError as exc:
            key = f"error:field_values:{type(exc).__name__}"
            self._log_once(key, logging.WARNING, "%s: field values failed (%s)", dev.label, exc)
        return None

    def _successful_values(self, dev: Device, values: Any) -> tuple[dict[int, float | int], int]:
        """(field id -> value, newest timestamp in us) of the fields that read; drops unsupported ones."""
        got: dict[int, float | int] = {}
        stamp_us = 0
        for fv in values:
            ret = int(fv.nvmlReturn)
            if ret == pynvml.NVML_SUCCESS:
                got[int(fv.fieldId)] = field_value(fv)
                stamp_us = max(stamp_us, int(fv.timestamp))
            elif ret == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLost(str(pynvml.NVMLError(ret)))
            elif ret in _FV_UNSUPPORTED:
                self._drop_field_ids(dev, [int(fv.fieldId)], pynvml.NVMLError(ret))
        return got, stamp_us

    def _drop_field_ids(self, dev: Device, ids: list[int], exc: Exception) -> None:
        for fid in ids:
            if fid in dev.fv_ids:
                dev.fv_ids.remove(fid)
        columns = tuple(_FV_COLUMN_NAMES.get(i, str(i)) for i in ids)
        self._log_once.unsupported(dev.label, "field_values", columns, exc)
        if (FV_PCIE_TX in ids or FV_PCIE_RX in ids) and PCIE_FALLBACK not in dev.slow_readers:
            # rates need both counters: drop the other one too and poll the throughput call instead
            dev.fv_ids = [i for i in dev.fv_ids if i not in (FV_PCIE_TX, FV_PCIE_RX)]
            dev.slow_readers.append(PCIE_FALLBACK)
            self.read(dev, PCIE_FALLBACK, dev.carried)

    @staticmethod
    def _pcie_rates(dev: Device, t_s: float, tx: int, rx: int) -> tuple[float | None, float | None]:
        """Bytes/s from the counters; None on the first read, a wrap/reset or a zero interval."""
        prev, dev.pcie_prev = dev.pcie_prev, (t_s, tx, rx)
        if prev is None or t_s <= prev[0]:
            return (None, None)
        dt_s = t_s - prev[0]
        d_tx, d_rx = tx - prev[1], rx - prev[2]
        return (d_tx / dt_s if d_tx >= 0 else None, d_rx / dt_s if d_rx >= 0 else None)
