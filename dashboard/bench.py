"""The bench view: one ``enginescope bench`` run's latency/throughput trade-off curve.

Client-side quantiles are exact (per request); engine-side ones come from the increase of the
engine's own histogram buckets over each level. Both are drawn against the same (client-measured)
throughput, one point per concurrency level, with the SLO the run was judged against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from enginescope.collectors.signals import SLOS
from enginescope.dashboard import cached
from enginescope.dashboard.charts import SLO_COLOUR
from enginescope.dashboard.state import (
    BENCH_THROUGHPUTS,
    STORE_RECIPE,
    ViewState,
    read_recipe,
    slo_from_recipe,
)
from enginescope.recipes.schema import RECIPES_DIR

# (column stem of the bench table, label, SLO key), from the vocabulary registry
LATENCIES = tuple((s.key.removesuffix("_p95_s"), s.label, s.key) for s in SLOS)
SIDE_COLOURS = {"client": "#1f77b4", "engine": "#ff7f0e"}
HEIGHT_PX = 260
Spec = dict[str, Any]


def curve_points(curve: pd.DataFrame, latency: str, throughput_column: str) -> pd.DataFrame:
    """Long rows ``side, concurrency, latency_ms, throughput``; a side without the quantile
    (an endpoint without /metrics has no engine side) has no points."""
    frames = [
        pd.DataFrame({
            "side": side,
            "concurrency": curve["concurrency"].astype("int64"),
            "latency_ms": curve[f"{side}_{latency}_p95_s"].astype("float64") * 1000.0,
            "throughput": curve[throughput_column].astype("float64"),
        }).dropna(subset=["latency_ms", "throughput"])
        for side in SIDE_COLOURS
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def curve_chart(points: pd.DataFrame, label: str, y_title: str, slo_s: float | None) -> Spec:
    """Throughput (y) against p95 latency (x, ms), a line per side in concurrency order, each
    point labelled with its concurrency; the SLO is a vertical rule."""
    colour = {"field": "side", "type": "nominal", "title": None,
              "scale": {"domain": list(SIDE_COLOURS), "range": list(SIDE_COLOURS.values())},
              "legend": {"orient": "bottom"}}  # fmt: skip
    x_title = f"{label} p95 (ms)"
    tooltip = [
        {"field": "side", "type": "nominal"},
        {"field": "concurrency", "type": "quantitative", "title": "concurrency (requests in flight)"},
        {"field": "latency_ms", "type": "quantitative", "title": x_title, "format": ".1f"},
        {"field": "throughput", "type": "quantitative", "title": y_title, "format": ".3g"},
    ]
    layers: list[Spec] = [
        {"mark": {"type": "line", "point": {"filled": True, "size": 50}, "strokeWidth": 1.5},
         "encoding": {"color": colour, "order": {"field": "concurrency", "type": "quantitative"},
                      "tooltip": tooltip}},
        {"mark": {"type": "text", "align": "left", "dx": 5, "dy": -6, "fontSize": 10},
         "encoding": {"text": {"field": "label"}, "color": colour}},
    ]  # fmt: skip
    if slo_s:
        layers += [
            {"data": {"name": "slo"}, "mark": {"type": "rule", "color": SLO_COLOUR, "strokeDash": [6, 3]},
             "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": None,
                          "tooltip": [{"field": "label", "type": "nominal", "title": "SLO"}]}},
            {"data": {"name": "slo"}, "mark": {"type": "text", "color": SLO_COLOUR, "align": "left", "dx": 3,
                                   "baseline": "top", "fontSize": 10, "fontWeight": "bold"},
             "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"value": 2},
                          "text": {"field": "label"}}},
        ]  # fmt: skip
    datasets = {"points": points.assign(label="c=" + points["concurrency"].astype(str))}
    if slo_s:
        datasets["slo"] = pd.DataFrame({"x": [slo_s * 1000.0], "label": [f"SLO p95 {slo_s * 1000:.4g} ms"]})
    return {
        "title": f"{label} p95 vs throughput",
        "height": HEIGHT_PX,
        "datasets": datasets,
        "data": {"name": "points"},
        "encoding": {
            "x": {"field": "latency_ms", "type": "quantitative", "title": x_title, "scale": {"zero": True}},
            "y": {"field": "throughput", "type": "quantitative", "title": y_title, "scale": {"zero": True}},
        },
        "layer": layers,
        "config": {"axis": {"titleFontWeight": "normal"}, "view": {"stroke": "#dddddd"}},
    }


def run_slo(store: str, recipe: str, page_slo: dict[str, float]) -> tuple[dict[str, float], str]:
    """The SLO the run was judged against: its recipe, from the store's ``recipe.toml`` when it
    is that recipe, else from this install's ``recipes/``; failing both, the page's SLOs."""
    for path in (Path(store) / STORE_RECIPE, RECIPES_DIR / f"{recipe}.toml"):
        if _recipe_name(path) == recipe:
            try:
                return slo_from_recipe(path), f"recipe {recipe} ({path})"
            except ValueError as exc:
                st.warning(str(exc))
    return dict(page_slo), "the page's SLOs (the run's recipe file was not found)"


def _recipe_name(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return read_recipe(path).name
    except ValueError:
        return None


def render_bench(store: str, state: ViewState) -> None:
    runs = cached.bench_runs(store)
    if runs.empty:
        st.info(
            f"No bench runs in {store}: `enginescope bench --recipe FILE [--url URL] --store {store}` "
            "sweeps concurrency and stores the latency/throughput curve here."
        )
        return
    run_ids = runs["run_id"].tolist()
    labels = {
        r.run_id: f"{r.run_id} · {r.recipe} · {r.target} · {r.levels} levels" for r in runs.itertuples()
    }
    chosen = st.selectbox(
        "Run (latest first)",
        run_ids,
        index=run_ids.index(state.bench_run) if state.bench_run in run_ids else 0,
        format_func=labels.get,
    )
    names = list(BENCH_THROUGHPUTS)
    tput = st.radio(
        "Throughput",
        names,
        index=names.index(state.bench_throughput),
        format_func=lambda k: BENCH_THROUGHPUTS[k][1],
        horizontal=True,
    )
    if (chosen, tput) != (state.bench_run or run_ids[0], state.bench_throughput):
        state.bench_run, state.bench_throughput = chosen, tput
        st.query_params.update(state.to_params())
    curve = cached.bench_curve(store, chosen)
    run = runs.loc[runs["run_id"] == chosen].iloc[0]
    slo, source = run_slo(store, run["recipe"], state.slo)
    st.markdown(f"**{run['model']}** at `{run['url']}` ({run['target']}) · recipe `{run['recipe']}`")
    st.caption(_notes(curve, source))
    column, y_title = BENCH_THROUGHPUTS[tput]
    for (key, label, slo_key), cell in zip(LATENCIES, st.columns(len(LATENCIES)), strict=True):
        with cell:
            spec = curve_chart(curve_points(curve, key, column), label, y_title, slo.get(slo_key))
            st.vega_lite_chart(spec, width="stretch")
    st.markdown("**Levels** (latencies in s, `output_tps` in tokens/s, `throughput_rps` in requests/s)")
    st.dataframe(curve.drop(columns=["run_id", "recipe", "model", "url", "target"]), hide_index=True)


def _notes(curve: pd.DataFrame, slo_source: str) -> str:
    notes = [
        f"SLO lines: {slo_source}",
        "client side: exact per-request quantiles; engine side: the engine's histogram bucket "
        "increases over each level (interpolated within a bucket); throughput is client-measured "
        "for both; points are labelled with the concurrency (requests in flight)",
    ]
    if curve["engine_ttft_p95_s"].isna().all():
        notes.append("no engine side: the endpoint exposed no /metrics histograms")
    if (curve["itl_slo_side"] == "engine").any():
        notes.append(
            "simulated target: client-side ITL measures the simulated stream's flush cadence, "
            "so meets_slo judged the engine-side ITL"
        )
    return " · ".join(notes)
