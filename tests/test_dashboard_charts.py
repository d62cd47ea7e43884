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
    assert x["axis"]["labelExpr"] == "utcFormat(datum.value, '%H:%M:%S')"  # a 4 min window
    assert charts.time_label_format((t0, t0 + pd.Timedelta(hours=24))) == "%H:%M"
    assert charts.time_label_format((t0, t0 + pd.Timedelta(days=7))) == "%m-%d %H:%M"
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


def test_rendered_axis_labels_are_utc_24_hour() -> None:
    """Rendered by Vega-Lite itself (vl-convert): an axis "format" with "formatType": "utc" was
    silently ignored, so the spec-level test above passed while the page still said 12:33."""
    import json
    import re

    import vl_convert  # a test dependency (pyproject [test])

    t0 = pd.Timestamp("2026-12-08 00:32:29", tz="UTC")
    ts = pd.date_range(t0, periods=60, freq="1s")
    latency = pd.DataFrame({"t": ts, "replica": "fleet", "p50": 0.1, "p95": 0.2, "p99": 0.3})
    panel = next(p for p in INCIDENT_PANELS if p.id == "ttft")
    spec = charts.latency_chart(latency, panel, (ts[0], ts[-1]), pd.DataFrame(), slo_s=0.25)
    spec["datasets"] = {
        name: json.loads(frame.to_json(orient="records", date_format="iso"))
        for name, frame in spec["datasets"].items()
    }
    spec["width"] = 500
    texts = re.findall(r"<text[^>]*>([^<]+)</text>", vl_convert.vegalite_to_svg(spec))
    times = [t for t in texts if ":" in t]
    assert times and all(re.fullmatch(r"00:3[23]:\d\d", t) for t in times), times
