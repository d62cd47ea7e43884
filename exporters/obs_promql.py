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


# Bucket bounds engines use (SGLang 0.5.x, vLLM defaults: 1, 1.5, 2, 2.5, ... x 10^k): the
# attainment query takes the largest of them present at or under the SLO, since an SLO is
# rarely a bucket bound itself (SGLang's TTFT buckets have 0.4 and 0.6, not 0.5).
_MANTISSAS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.5, 8.0)
_CANDIDATE_BOUNDS = sorted({round(m * 10.0**k, 6) for m in _MANTISSAS for k in range(-3, 4)})


def slo_le_matcher(slo_s: float) -> str:
    """``le`` of every candidate bound at or under the SLO; text-format scrapes write ``1.0``,
    OTLP ingestion writes ``1``, so an optional ``.0`` is allowed."""
    bounds = [b for b in _CANDIDATE_BOUNDS if b <= slo_s + 1e-12]
    alternatives = "|".join(f"{b:g}".replace(".", "\\\\.") for b in bounds)
    return f'le=~"({alternatives})(\\\\.0+)?"'


def panel_queries(panel: Panel, dialect: Dialect, slos: dict[str, float]) -> list[tuple[str, str]]:
    """(PromQL, legend) per line of a panel; ``slos`` maps SLO keys to seconds (attainment)."""
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
            within = f"{series.name}_bucket{{{dialect.filter}, {slo_le_matcher(slos[panel.slo_key or ''])}}}"
            total = f"{series.name}_count{{{dialect.filter}}}"
            within_rate = f"max(sum by (le) (rate({within}[{RATE}])))"  # largest bound <= SLO
            out.append((f"{within_rate} / sum(rate({total}[{RATE}]))", "within SLO"))
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
