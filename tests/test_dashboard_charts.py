"""Chart specs: time is shown in UTC, as the page says, in 24-hour labels."""

from __future__ import annotations

import pandas as pd

from enginescope.dashboard import charts
from enginescope.views.panels import INCIDENT_PANELS


def _temporal_encodings(node, found: list[dict]) -> list[dict]:
    if isinstance(node, dict):
        if node.get("type") == "temporal":
            found.append(node)
        for value in node.values():
            _temporal_encodings(value, found)
    elif isinstance(node, list):
        for value in node:
            _temporal_encodings(value, found)
    return found


def test_time_axis_and_tooltips_are_utc_24_hour() -> None:
    """Before: Vega's default labels printed 23:23 as '11:23', in the browser's time zone."""
    t0 = pd.Timestamp("2026-12-07 23:20", tz="UTC")
    ts = pd.date_range(t0, periods=5, freq="1min")
    latency = pd.DataFrame({"t": ts, "replica": "fleet", "p50": 0.1, "p95": 0.2, "p99": 0.3})
    events = pd.DataFrame({"ts": [ts[2]], "kind": ["scale_up"], "replica": ["fleet"], "detail": ["1 -> 2"]})
    panel = next(p for p in INCIDENT_PANELS if p.id == "ttft")
    domain = (ts[0], ts[-1])
    spec = charts.latency_chart(latency, panel, domain, charts.numbered_events(events, domain))
    x = spec["encoding"]["x"]
    assert x["scale"]["type"] == "utc"
    assert x["axis"]["format"] == "%H:%M" and x["axis"]["formatType"] == "utc"
    temporal = _temporal_encodings(spec["layer"], [])
    assert temporal and all(enc.get("formatType") == "utc" for enc in temporal if "format" in enc)


def test_every_time_series_chart_carries_the_brush() -> None:
    t0 = pd.Timestamp("2026-12-07 23:20", tz="UTC")
    ts = pd.date_range(t0, periods=3, freq="1min")
    latency = pd.DataFrame({"t": ts, "replica": "fleet", "p50": 0.1, "p95": 0.2, "p99": 0.3})
    panel = next(p for p in INCIDENT_PANELS if p.id == "ttft")
    spec = charts.latency_chart(latency, panel, (ts[0], ts[-1]), pd.DataFrame())
    params = [p for layer in spec["layer"] for p in layer.get("params", [])]
    assert params == [{"name": charts.BRUSH, "select": {"type": "interval", "encodings": ["x"]}}]


def test_a_brush_selection_becomes_the_pages_custom_window() -> None:
    """What Streamlit hands back for a drag across a chart (epoch ms, or ISO text), to the URL
    state every chart and the diagnosis read."""
    from enginescope.dashboard.state import ViewState

    lo, hi = pd.Timestamp("2026-12-07 23:21:30", tz="UTC"), pd.Timestamp("2026-12-07 23:24", tz="UTC")
    for values in ([hi.value // 10**6, lo.value // 10**6], [lo.isoformat(), hi.isoformat()]):
        assert charts.brushed_range({"selection": {charts.BRUSH: {"t": values}}}) == (lo, hi)
    assert charts.brushed_range({"selection": {charts.BRUSH: {}}}) is None  # a click, no drag
    assert charts.brushed_range({"selection": {charts.BRUSH: {"t": [lo.isoformat()] * 2}}}) is None
    state = ViewState.from_params({}, {})
    state.range, state.t0, state.t1 = "custom", lo.to_pydatetime(), hi.to_pydatetime()
    again = ViewState.from_params(state.to_params(), {})
    assert (again.range, again.t0, again.t1) == ("custom", lo.to_pydatetime(), hi.to_pydatetime())
