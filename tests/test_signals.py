"""The vocabulary registry is the one source: every consumer's table agrees with it."""

from __future__ import annotations

import pynvml
import pytest

from enginescope.collectors import catalog, gpu_columns, gpu_events, gpu_fields, signals
from enginescope.collectors.signals import THROTTLE_REASONS, Kind, Scope
from enginescope.exporters.otlp import names as otlp_names


def test_throttle_bits_are_nvml_abi() -> None:
    nvml_bits = {
        "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
        "app_clocks": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
        "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
        "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
        "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
        "sw_thermal": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
        "hw_thermal": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
        "hw_power_brake": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
        "display_clock": pynvml.nvmlClocksEventReasonDisplayClockSetting,
    }
    assert {r.name: r.bit for r in THROTTLE_REASONS} == nvml_bits


@pytest.mark.parametrize("reason", [r for r in THROTTLE_REASONS if r.slowdown], ids=lambda r: r.name)
def test_one_name_per_throttle_bit(reason: signals.ThrottleReason) -> None:
    """Column, gpu_throttle event detail and OTLP attribute spell a reason the same way."""
    assert reason.column in gpu_fields.REASON_COLUMNS
    decoded = dict(zip(gpu_fields.REASON_COLUMNS, gpu_fields.decode_reasons(reason.bit), strict=True))
    assert decoded[reason.column] is True
    assert gpu_fields.reason_names(reason.bit) == [reason.name]
    assert otlp_names.CLOCK_EVENT_REASONS[reason.bit] == reason.name
    assert gpu_events.SLOWDOWN_MASK == signals.SLOWDOWN_MASK


def test_catalog_signal_tuples_come_from_registry() -> None:
    assert catalog.HISTOGRAM_SIGNALS == signals.names(Kind.HISTOGRAM)
    assert catalog.GAUGE_SIGNALS == signals.names(Kind.GAUGE)
    assert catalog.COUNTER_SIGNALS == signals.names(Kind.COUNTER)


def test_every_catalog_rule_names_a_registered_signal() -> None:
    for engine in catalog.ENGINES:
        for rule in catalog.catalog_for(engine).rules:
            assert signals.SIGNALS[rule.signal].scope == Scope.ENGINE, rule


def test_gpu_aggregates_are_registered() -> None:
    rows = [{"power_w": 300.0, "temperature_c": 60, "utilization_pct": 50, "sm_clock_mhz": 1980,
             "memory_used_bytes": 10, "clock_event_reasons": 0}]  # fmt: skip
    produced = {row.signal for row in gpu_fields.replica_signals(0.0, 1.0, rows)}
    assert produced and produced <= set(signals.names(Kind.GAUGE, Scope.GPU))


def test_slo_keys_map_to_histogram_signals() -> None:
    for slo in signals.SLOS:
        assert signals.SIGNALS[slo.signal].kind == Kind.HISTOGRAM
        assert slo.key == f"{slo.signal.split('_')[0]}_{signals.quantile_label(slo.quantile)}_s"


def test_unknown_signal_error_names_it() -> None:
    with pytest.raises(KeyError, match="nope"):
        signals.signal("nope")


def test_fleet_pseudo_replicas_are_recognised() -> None:
    from enginescope.collectors.identity import fleet_replica, is_fleet_replica

    assert is_fleet_replica(fleet_replica()) and is_fleet_replica(fleet_replica("llama"))
    assert not is_fleet_replica("ta-01JABC") and not is_fleet_replica("fleetwood")


def test_recipe_slo_fields_are_the_registry_keys() -> None:
    import dataclasses

    from enginescope.recipes.specs import SloSpec

    assert tuple(f.name for f in dataclasses.fields(SloSpec)) == tuple(s.key for s in signals.SLOS)
    spec = SloSpec(ttft_p95_s=1.0, itl_p95_s=0.05, e2e_p95_s=20.0)
    assert [spec.limit(s.key) for s in signals.SLOS] == [1.0, 0.05, 20.0]
    with pytest.raises(KeyError, match="tpot_p95_s"):
        spec.limit("tpot_p95_s")


def test_docs_signal_reference_is_generated_from_the_registry() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "signals.md"
    assert doc.read_text() == signals.markdown_reference(), (
        "run: python -m enginescope.collectors.signals > docs/signals.md"
    )


def test_fleet_watcher_signals_are_registered() -> None:
    from enginescope.deploy.watcher import FleetSnapshot, snapshot_signals

    rows = snapshot_signals(FleetSnapshot(0.0, 3, backlog=5, running_inputs=7), 10.0)
    assert {r.signal for r in rows} == set(signals.names(Kind.GAUGE, Scope.FLEET))


def test_gpu_identity_columns_have_one_definition() -> None:
    """The GPU source's identity columns are labels/attributes in both exporters, never values."""
    from enginescope.exporters import prom_names

    for column in gpu_columns.IDENTITY_COLUMNS:
        assert column in gpu_fields.ALL_COLUMNS
        assert prom_names.gpu_column_metric(column) is None
        assert column not in otlp_names.GPU_COLUMNS


def test_every_column_the_gpu_source_fills_is_registered() -> None:
    assert set(gpu_fields.ALL_COLUMNS) == set(gpu_columns.GPU_COLUMNS)


def test_otel_names_are_the_registrys() -> None:
    """The OTLP mapper names every exported signal from the registry (it kept its own table)."""
    from enginescope.exporters.otlp import names

    assert set(signals.OTEL_NAMES) <= set(signals.SIGNALS)
    for name, naming in signals.OTEL_NAMES.items():
        exported = names.for_signal(name)
        assert exported is not None and (exported.name, exported.attributes) == (
            naming.name,
            naming.attributes,
        )
    gpu = [s.name for s in signals.SIGNALS.values() if s.scope is signals.Scope.GPU]
    assert gpu and all(names.for_signal(name) is None for name in gpu)


def test_every_panel_shows_its_signals_registry_unit() -> None:
    """A signal's unit is written once: the Streamlit and Grafana panels show the registry's
    chart unit (per second for rates). Before, the panels had their own table and the KV,
    prefix-cache and acceptance-rate panels said "ratio 0–1" where the registry said "ratio"."""
    from enginescope.views.panels import EXPORT_PANELS, PanelKind

    for panel in EXPORT_PANELS:
        if panel.kind in (PanelKind.GAUGE, PanelKind.LATENCY, PanelKind.HEATMAP):
            assert panel.unit == signals.signal(panel.signals[0]).chart_unit, panel.id
        elif panel.kind is PanelKind.RATE:
            assert panel.unit == signals.signal(panel.signals[0]).chart_unit + "/s", panel.id
        elif panel.kind is PanelKind.GPU_DEVICE:  # a per-GPU column: its replica aggregate's unit
            assert panel.unit == signals.signal(panel.unit_signal).chart_unit, panel.id
        elif panel.kind is PanelKind.REPLICA_COUNT:
            assert panel.unit == signals.signal("fleet_replicas").chart_unit
        else:
            assert panel.unit == signals.RATIO_UNIT, panel.id


def test_a_gpu_column_has_one_kind_and_unit_in_both_exporters() -> None:
    """Per-GPU columns are registered once (``gpu_columns``). Before, Prometheus guessed units
    from name suffixes and kept its own counter list, so remapped rows (a count, a counter in
    DCGM) were gauges there and counters over OTLP."""
    from enginescope.exporters import prom_names

    prom_suffix = {"W": "_watts", "J": "_joules", "MHz": "_hertz", "By": "_bytes", "Cel": "_celsius",
                   "%": "_ratio", "By/s": "_bytes_per_second"}  # fmt: skip
    for column in gpu_fields.ALL_COLUMNS:
        registered = gpu_columns.gpu_column(column)
        prom, otel = prom_names.gpu_column_metric(column), otlp_names.GPU_COLUMNS.get(column)
        if registered.kind is None:
            assert prom is None and otel is None, column
            continue
        assert prom is not None and prom.kind is registered.kind, column
        assert prom.name.endswith(prom_suffix.get(registered.unit, "")), column
        if otel is not None:
            assert (otel.kind is otlp_names.Kind.COUNTER) == (registered.kind is Kind.COUNTER), column
            assert otel.unit == ("1" if registered.unit == "%" else registered.unit), column
