"""PromQL for the panels of ``enginescope.views.panels``, per data path (``obs_dialect``).

Latency panels are ``histogram_quantile`` over ``sum by (le)`` of bucket rates: never averaged
percentiles. Event markers and event alerts also catch a counter series whose first sample is
already non-zero (``increase()`` needs two samples, so a new label set written together with
its first event would be missed): ``x > 0 unless x offset <window>``.
"""

from __future__ import annotations

from enginescope.collectors.signals import quantile_label
from enginescope.exporters.obs_dialect import GPU_LABEL, Dialect, Series, gpu_device_series
from enginescope.views.panels import Panel, PanelKind

RATE = "$__rate_interval"  # never $__interval: empty when it is under two scrape intervals


def quantile_expr(q: float, name: str, selector: str, window: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({name}_bucket{{{selector}}}[{window}])))"


def per_replica(series: Series, dialect: Dialect, filter_: str) -> str:
    """One value per replica (and model): GPU series reduced as the sidecar reduces them."""
    sel = series.select(filter_)
    if series.per_gpu:
        return f"{series.gpu_agg} by ({dialect.replica}, {dialect.model}) ({sel})"
    return sel


def new_or_increased(selector: str, window: str) -> str:
    """Series whose counter rose within ``window``, including one that first appeared non-zero."""
    return f"(increase({selector}[{window}]) > 0) or ({selector} > 0 unless {selector} offset {window})"


def slo_le_matcher(slo_key: str) -> str:
    """``le`` of the SLO bound: text-format scrapes write ``1.0``, OTLP ingestion writes ``1``."""
    return f'le=~"${slo_key}(\\\\.0+)?"'


def panel_queries(panel: Panel, dialect: Dialect) -> list[tuple[str, str]]:
    """(PromQL, legend) per line of a panel."""
    rep = dialect.replica
    legend = f"{{{{{rep}}}}}" if panel.per_replica else panel.title
    out: list[tuple[str, str]] = []
    for signal in panel.signals:
        if panel.kind is PanelKind.GPU_DEVICE:
            series = gpu_device_series(signal, dialect)
            gpu = GPU_LABEL[dialect.key]
            out.append(
                (f"max by ({rep}, {gpu}) ({series.select(dialect.filter)})", f"{{{{{rep}}}}} {{{{{gpu}}}}}")
            )
            continue
        series = dialect.series(signal)
        sel = series.select(dialect.filter)
        if panel.kind is PanelKind.LATENCY:
            for q in panel.quantiles:
                out.append((quantile_expr(q, series.name, dialect.filter, RATE), quantile_label(q)))
            if panel.slo_key:
                out.append((f"vector(${panel.slo_key})", "SLO p95"))
        elif panel.kind is PanelKind.HEATMAP:
            out.append(
                (f"sum by (le) (increase({series.name}_bucket{{{dialect.filter}}}[{RATE}]))", "{{le}}")
            )
        elif panel.kind is PanelKind.SLO_ATTAINMENT:
            within = f"{series.name}_bucket{{{dialect.filter}, {slo_le_matcher(panel.slo_key or '')}}}"
            total = f"{series.name}_count{{{dialect.filter}}}"
            out.append((f"sum(rate({within}[{RATE}])) / sum(rate({total}[{RATE}]))", "within SLO"))
        elif panel.kind is PanelKind.GAUGE:
            inner = per_replica(series, dialect, dialect.filter)
            agg = f"avg by ({rep}) " if panel.per_replica else "avg "
            out.append((f"{agg}({inner})", legend))
        elif panel.kind is PanelKind.RATE:
            agg = f"sum by ({rep}) " if panel.per_replica else "sum "
            out.append((f"{agg}(rate({sel}[{RATE}]))", legend))
        elif panel.kind is PanelKind.REPLICA_COUNT:
            out.append((f"sum({sel})", panel.title))
    return out


def events_marker(dialect: Dialect, kinds: tuple[str, ...]) -> str:
    selector = dialect.events("|".join(kinds), dialect.filter).split("{", 1)[1].rstrip("}")
    sel = f"{dialect.events_name}{{{selector}}}"
    return f"sum by ({dialect.event_kind}, {dialect.replica}) ({new_or_increased(sel, RATE)})"
