"""The per-GPU columns of the ``gpu`` table, defined once: kind, unit, meaning, OTel instrument.

The GPU source (``gpu_fields``) fills these columns; the Prometheus endpoint and the OTLP mapper
derive every per-device series from this table (name, counter or gauge, unit, HELP), so the two
exports cannot disagree. Units are UCUM as in ``signals``. A column of kind ``None`` is not a
value: an identity (a label or resource attribute) or the raw clock-event bit mask, which goes
out split into one series per reason.

OTel names follow semantic conventions v1.41.0 (hardware: ``hw.gpu.*``, ``hw.errors``,
``hw.power``, ``hw.energy``, ``hw.temperature``) where one exists, else ``enginescope.gpu.*``
without units in the name. Counters are totals since the driver loaded, as NVML reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginescope.collectors.signals import THROTTLE_REASONS, Kind, OtelNaming

G, C = Kind.GAUGE, Kind.COUNTER


@dataclass(frozen=True, slots=True)
class GpuColumn:
    name: str
    kind: Kind | None  # None: identity or bit mask, never served as a value
    unit: str  # UCUM unit of the stored value ("%" is 0-100 as NVML reports it)
    description: str
    otel: OtelNaming | None = None  # per-device OTel instrument; None: not a plain OTel series
    otel_updown: bool = False  # the convention's instrument is an UpDownCounter
    prom_stem: str | None = None  # Prometheus family stem where the column name reads badly


# Instruments shared by several columns (told apart by an attribute) carry one description.
def _util(task: str) -> OtelNaming:
    return OtelNaming(
        "hw.gpu.utilization", (("hw.gpu.task", task),), description="Fraction of time spent in a task"
    )


def _errors(error_type: str) -> OtelNaming:
    return OtelNaming("hw.errors", (("error.type", error_type),), description="Errors encountered by the GPU")


def _remapped(cause: str) -> OtelNaming:
    attrs = (("enginescope.gpu.remap.cause", cause),)
    return OtelNaming("enginescope.gpu.memory.remapped_rows", attrs, description="Memory rows remapped")


def _nvlink(state: str) -> OtelNaming:
    attrs = (("enginescope.gpu.nvlink.state", state),)
    return OtelNaming("enginescope.gpu.nvlink.links", attrs, description="NVLink links")


def _io(direction: str) -> OtelNaming:
    attrs = (("network.io.direction", direction),)
    return OtelNaming(
        "hw.gpu.io", attrs, description="Bytes transferred over PCIe (integrated from the sampled rate)"
    )


_TEMPERATURE = OtelNaming("hw.temperature", description="Temperature of the sensor")

_COLUMNS: tuple[GpuColumn, ...] = (
    GpuColumn("gpu_index", None, "", "NVML device index"),
    GpuColumn("gpu_name", None, "", "Product name (hw.model)"),
    GpuColumn("pci_bus_id", None, "", "PCI bus id"),
    GpuColumn("driver_version", None, "", "Driver version (hw.driver_version)"),
    GpuColumn("xid_last", None, "", "Last XID error code seen"),
    GpuColumn("clock_event_reasons", None, "", "NVML clock-event reason bit mask"),
    GpuColumn("power_w", G, "W", "Board power draw", OtelNaming("hw.power")),
    GpuColumn("energy_j", C, "J", "Energy consumed since the driver loaded", OtelNaming("hw.energy"),
              prom_stem="energy"),
    GpuColumn("power_limit_w", G, "W", "Enforced power limit", OtelNaming("enginescope.gpu.power.limit")),
    GpuColumn("temperature_c", G, "Cel", "GPU core temperature", _TEMPERATURE),
    GpuColumn("memory_temperature_c", G, "Cel", "GPU memory temperature", _TEMPERATURE),
    GpuColumn("gpu_utilization_pct", G, "%", "Fraction of time the GPU ran kernels", _util("general")),
    GpuColumn("enc_utilization_pct", G, "%", "Fraction of time the encoder was busy", _util("encoder")),
    GpuColumn("dec_utilization_pct", G, "%", "Fraction of time the decoder was busy", _util("decoder")),
    # NVML's "memory utilization" is the memory controller's busy time, not memory used.
    GpuColumn("memory_utilization_pct", G, "%", "Fraction of time device memory was read or written",
              OtelNaming("enginescope.gpu.memory_controller.utilization")),
    GpuColumn("fb_used_bytes", G, "By", "GPU memory used", OtelNaming("hw.gpu.memory.usage"), otel_updown=True),
    GpuColumn("fb_free_bytes", G, "By", "GPU memory free"),
    GpuColumn("fb_total_bytes", G, "By", "Size of the GPU memory", OtelNaming("hw.gpu.memory.limit"),
              otel_updown=True),
    GpuColumn("sm_clock_mhz", G, "MHz", "SM clock", OtelNaming("enginescope.gpu.clock.sm")),
    GpuColumn("mem_clock_mhz", G, "MHz", "Memory clock", OtelNaming("enginescope.gpu.clock.memory")),
    GpuColumn("sm_clock_max_mhz", G, "MHz", "Maximum SM clock", OtelNaming("enginescope.gpu.clock.sm.max")),
    GpuColumn("mem_clock_max_mhz", G, "MHz", "Maximum memory clock",
              OtelNaming("enginescope.gpu.clock.memory.max")),
    GpuColumn("fan_pct", G, "%", "Fan speed as a fraction of its maximum", OtelNaming("enginescope.gpu.fan.speed")),
    GpuColumn("persistence_mode", G, "1", "1 when persistence mode is on",
              OtelNaming("enginescope.gpu.persistence_mode")),
    GpuColumn("compute_mode", G, "1", "NVML compute mode (nvmlComputeMode_t)",
              OtelNaming("enginescope.gpu.compute_mode")),
    GpuColumn("ecc_sbe_volatile", C, "{error}", "Corrected ECC errors since the driver loaded",
              _errors("ecc_corrected"), prom_stem="ecc_corrected_errors"),
    GpuColumn("ecc_dbe_volatile", C, "{error}", "Uncorrected ECC errors since the driver loaded",
              _errors("ecc_uncorrected"), prom_stem="ecc_uncorrected_errors"),
    GpuColumn("pcie_replay_count", C, "{error}", "PCIe replays since the driver loaded",
              _errors("pcie_replay"), prom_stem="pcie_replays"),
    GpuColumn("remapped_rows_correctable", C, "{row}", "Memory rows remapped after correctable errors (kept across resets)",
              _remapped("correctable")),
    GpuColumn("remapped_rows_uncorrectable", C, "{row}", "Memory rows remapped after uncorrectable errors (kept across resets)",
              _remapped("uncorrectable")),
    GpuColumn("remapped_rows_pending", G, "1", "1 while a row remap waits for a GPU reset",
              OtelNaming("enginescope.gpu.memory.remap.pending")),
    GpuColumn("row_remap_failure", G, "1", "1 when row remapping failed",
              OtelNaming("enginescope.gpu.memory.remap.failed")),
    GpuColumn("nvlink_links_active", G, "{link}", "NVLink links up", _nvlink("active")),
    GpuColumn("nvlink_links_present", G, "{link}", "NVLink links present", _nvlink("present")),
    GpuColumn("pcie_tx_bytes_per_s", G, "By/s", "PCIe transmit throughput", _io("transmit")),
    GpuColumn("pcie_rx_bytes_per_s", G, "By/s", "PCIe receive throughput", _io("receive")),
    *(GpuColumn(r.column, G, "1", f"1 while the {r.name} clock-event reason is active") for r in THROTTLE_REASONS),
    GpuColumn("throttle_thermal", G, "1", "1 while a thermal slowdown (software or hardware) is active"),
)  # fmt: skip

MASK_COLUMN = "clock_event_reasons"
GPU_COLUMNS: dict[str, GpuColumn] = {c.name: c for c in _COLUMNS}
IDENTITY_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in _COLUMNS if c.kind is None and c.name != MASK_COLUMN
)


def gpu_column(name: str) -> GpuColumn:
    try:
        return GPU_COLUMNS[name]
    except KeyError:
        raise KeyError(f"unknown GPU column {name!r}; register it in collectors/gpu_columns.py") from None


def markdown_table() -> list[str]:
    """The per-GPU column table of docs/signals.md."""
    lines = ["| GPU column | kind | unit (UCUM) | OTel instrument | meaning |", "|---|---|---|---|---|"]
    for c in _COLUMNS:
        kind = c.kind or ("bit mask" if c.name == MASK_COLUMN else "identity")
        otel = f"`{c.otel.name}`" + "".join(f" {k}={v}" for k, v in c.otel.attributes) if c.otel else ""
        lines.append(f"| `{c.name}` | {kind} | `{c.unit}` | {otel} | {c.description} |")
    return lines
