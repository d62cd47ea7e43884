"""Incident-view panel: speculative acceptance by traffic class, each drop marked, and its cost.

Drops come from the store's ``spec_acceptance_drift`` events (recorded by
``enginescope.spec_monitor``); a window without events but with per-request spec data is
scanned on the fly (up to ``MAX_SCAN_S``) so a store without a monitor still shows them.
``acceptance_chart`` and ``drift_rows`` are pure (DataFrames in, dicts out) for tests.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

from enginescope.views import spec_drift, spec_events

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
DROP_COLOUR = "#d62728"
UNIT = "tokens/verify step"
MAX_SCAN_S = 6 * 3600.0  # an on-the-fly scan reads the window plus the baseline hour
Spec = dict[str, Any]
_DROP_COLUMNS = ["detected", "class", "baseline_accept_length", "current_accept_length", "onset", "p_value",
                 "lost_tokens_per_s", "lost_gpu_hours"]  # fmt: skip


def load(
    con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float, bucket_s: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(acceptance per bucket and class, drops in the window)."""
    series = spec_events.acceptance_series(con, t0_s, t1_s, bucket_s)
    drops = spec_events.recorded_drift_details(con, t0_s, t1_s)
    if drops.empty and not series.empty and t1_s - t0_s <= MAX_SCAN_S:
        drops = drift_rows(spec_drift.scan(con, t0_s, t1_s))
    return series, drops


def drift_rows(drifts: list[spec_drift.Drift]) -> pd.DataFrame:
    """Drifts in the shape of ``recorded_drift_details``."""
    rows = [
        {
            "detected": pd.Timestamp(d.detected_s, unit="s", tz="UTC"),
            "class": d.traffic_class,
            "baseline_accept_length": d.baseline_accept_length,
            "current_accept_length": d.current_accept_length,
            "onset": pd.Timestamp(d.onset_s, unit="s", tz="UTC"),
            "p_value": d.p_value,
            "lost_tokens_per_s": d.lost_tokens_per_s,
            "lost_gpu_hours": d.lost_gpu_hours,
        }
        for d in drifts
    ]
    return pd.DataFrame(rows, columns=_DROP_COLUMNS)


def acceptance_chart(
    series: pd.DataFrame, drops: pd.DataFrame, domain: tuple[pd.Timestamp, pd.Timestamp]
) -> Spec:
    """One line per class (mean acceptance length per request, per bucket); each drop is a red
    rule at its onset, a shaded span to its detection and a label with the fall and its cost."""
    classes = sorted(series["traffic_class"].unique()) if not series.empty else []
    colours = {"domain": classes, "range": [PALETTE[i % len(PALETTE)] for i in range(len(classes))]}
    lines = {
        "data": {"name": "acceptance"},
        "mark": {"type": "line", "interpolate": "step-after", "strokeWidth": 1.5},
        "encoding": {
            "y": {"field": "accept_length", "type": "quantitative", "title": f"acceptance length ({UNIT})",
                  "scale": {"zero": False}},
            "color": {"field": "traffic_class", "type": "nominal", "scale": colours, "title": "traffic class"},
            "tooltip": [
                {"field": "t", "type": "temporal", "title": "time (UTC)", "format": "%H:%M:%S"},
                {"field": "traffic_class", "type": "nominal", "title": "class"},
                {"field": "accept_length", "type": "quantitative", "title": UNIT, "format": ".2f"},
                {"field": "requests", "type": "quantitative", "title": "requests"},
            ],
        },
    }  # fmt: skip
    datasets: dict[str, Any] = {"acceptance": series}
    layers = [lines]
    if not drops.empty:
        marks = drops.assign(
            t=drops["onset"],
            t_end=drops["detected"],
            label=[_label(r) for r in drops.to_dict("records")],
        )[["t", "t_end", "class", "label"]]
        datasets["drops"] = marks
        tooltip = [{"field": "label", "type": "nominal", "title": "drop"}]
        layers += [
            {"data": {"name": "drops"}, "mark": {"type": "rect", "color": DROP_COLOUR, "opacity": 0.10},
             "encoding": {"x2": {"field": "t_end"}, "tooltip": tooltip}},
            {"data": {"name": "drops"}, "mark": {"type": "rule", "color": DROP_COLOUR, "strokeWidth": 1.5},
             "encoding": {"tooltip": tooltip}},
            {"data": {"name": "drops"}, "mark": {"type": "text", "color": DROP_COLOUR, "align": "left",
                                                 "baseline": "top", "dx": 3, "dy": 3, "fontSize": 10},
             "encoding": {"text": {"field": "label"}, "y": {"value": 0}}},
        ]  # fmt: skip
    return {
        "title": {"text": f"Speculative acceptance by traffic class ({UNIT})", "anchor": "start", "fontSize": 13},
        "height": 220,
        "datasets": datasets,
        "encoding": {"x": {"field": "t", "type": "temporal", "title": "time (UTC)",
                           "scale": {"domain": [domain[0].isoformat(), domain[1].isoformat()]}}},
        "layer": layers,
    }  # fmt: skip


def _label(r: dict[str, Any]) -> str:
    a, b = r["baseline_accept_length"], r["current_accept_length"]
    fall = 1 - b / a if a else 0.0
    return f"{r['class']}: {a:.2f}→{b:.2f} (-{100 * fall:.0f}%) at {r['onset']:%H:%M}, -{r['lost_tokens_per_s']:.0f} tok/s"


def cost_table(drops: pd.DataFrame) -> pd.DataFrame:
    """The drops with units in every column name, for ``st.dataframe``."""
    return pd.DataFrame(
        {
            "class": drops["class"],
            "onset (UTC)": drops["onset"].dt.strftime("%H:%M:%S"),
            f"baseline ({UNIT})": drops["baseline_accept_length"].round(3),
            f"since onset ({UNIT})": drops["current_accept_length"].round(3),
            "p-value": drops["p_value"].map(lambda p: f"{p:.1e}"),
            "lost throughput (tokens/s)": drops["lost_tokens_per_s"].round(1),
            "lost GPU time (GPU-hours)": drops["lost_gpu_hours"].round(4),
        }
    )


def render(store: str, window: Any) -> None:
    """Draw the panel under the incident view; nothing when the window has no spec request data."""
    import streamlit as st

    from enginescope.dashboard import cached

    con = cached.connection(store)
    if con is None:
        return
    t0_s, t1_s = window.t0.timestamp(), window.t1.timestamp()
    series, drops = load(con, t0_s, t1_s, window.effective_bucket_s)
    if series.empty:
        return
    st.subheader("Speculative acceptance by traffic class")
    domain = (pd.Timestamp(window.t0), pd.Timestamp(window.t1))
    st.vega_lite_chart(acceptance_chart(series, drops, domain), width="stretch")
    if drops.empty:
        st.caption(
            "No significant acceptance drop in this window (per-class Welch test, see docs/spec-drift.md)."
        )
        return
    total_tps, total_gpu_h = float(drops["lost_tokens_per_s"].sum()), float(drops["lost_gpu_hours"].sum())
    left, right = st.columns(2)
    left.metric("Lost throughput (tokens/s)", f"{total_tps:,.0f}")
    right.metric("Lost GPU time since onset (GPU-hours)", f"{total_gpu_h:,.3f}")
    st.dataframe(cost_table(drops), hide_index=True, width="stretch")
    st.caption("Evidence and request ids for a retraining job: `enginescope spec-report --store STORE`.")
