"""The dashboard's speculative-acceptance panel and the What-happened cause for a drift."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from enginescope.dashboard import diagnosis, spec_panel
from enginescope.store import open_store
from enginescope.views import spec_events
from enginescope.views.spec_drift import scan_frame
from tests.spec_traffic import T0_S, generate, write_traffic

DROP_AT_S = 70 * 60.0


@pytest.fixture(scope="module")
def drifts() -> list:
    frame = generate(T0_S, DROP_AT_S + 600, seed=3, drop=("code", DROP_AT_S, 0.15))
    found = scan_frame(frame, T0_S, T0_S + DROP_AT_S + 600)
    assert [d.traffic_class for d in found] == ["code"]
    return found


def test_acceptance_series_from_the_store(tmp_path: Path) -> None:
    frame = generate(T0_S, 600, seed=8)
    write_traffic(tmp_path / "store", frame)
    got = spec_events.acceptance_series(open_store(tmp_path / "store"), T0_S, T0_S + 900, 60)
    frame["t"] = pd.to_datetime((frame["ts_s"] // 60) * 60, unit="s", utc=True)
    frame = frame.loc[frame["ts_s"] < T0_S + 900]
    want = frame.groupby(["t", "traffic_class"]).agg(
        accept_length=("accept_length", "mean"), requests=("accept_length", "size"), tokens=("tokens", "sum"),
        steps=("steps", "sum"),
    ).reset_index()  # fmt: skip
    merged = got.merge(want, on=["t", "traffic_class"], suffixes=("", "_want"))
    assert len(merged) == len(want) == len(got)
    assert (merged["requests"] == merged["requests_want"]).all()
    assert merged["accept_length"].to_numpy() == pytest.approx(merged["accept_length_want"].to_numpy())
    assert merged["tokens_per_step"].to_numpy() == pytest.approx(
        (merged["tokens"] / merged["steps"]).to_numpy()
    )


def test_chart_marks_the_drop_with_units_on_every_axis(drifts: list) -> None:
    series = pd.DataFrame(
        {"t": pd.to_datetime([T0_S, T0_S + 60], unit="s", utc=True), "traffic_class": ["code", "code"],
         "accept_length": [3.5, 3.0], "requests": [70, 72], "tokens_per_step": [3.5, 3.0]}
    )  # fmt: skip
    drops = spec_panel.drift_rows(drifts)
    domain = (pd.Timestamp(T0_S, unit="s", tz="UTC"), pd.Timestamp(T0_S + 5400, unit="s", tz="UTC"))
    spec = spec_panel.acceptance_chart(series, drops, domain)
    assert spec["encoding"]["x"]["title"] == "time (UTC)"
    assert spec["layer"][0]["encoding"]["y"]["title"] == "acceptance length (tokens/verify step)"
    assert "tokens/verify step" in spec["title"]["text"]
    marks = spec["datasets"]["drops"]
    d = drifts[0]
    assert marks["t"].iloc[0] == pd.Timestamp(d.onset_s, unit="s", tz="UTC")
    assert marks["t_end"].iloc[0] == pd.Timestamp(d.detected_s, unit="s", tz="UTC")
    assert (
        f"-{d.lost_tokens_per_s:.0f} tok/s" in marks["label"].iloc[0]
        and "code: 3.5" in marks["label"].iloc[0]
    )
    table = spec_panel.cost_table(drops)
    assert "lost throughput (tokens/s)" in table and "lost GPU time (GPU-hours)" in table
    assert table["lost throughput (tokens/s)"].iloc[0] == pytest.approx(d.lost_tokens_per_s, abs=0.05)


def _latency(signal_p95: dict[str, tuple[float, float]], start: pd.Timestamp, end: pd.Timestamp) -> dict:
    t = pd.date_range(pd.Timestamp(T0_S, unit="s", tz="UTC"), periods=80, freq="30s")
    out = {}
    for signal, (normal, during) in signal_p95.items():
        p95 = [during if start <= x < end else normal for x in t]
        out[signal] = pd.DataFrame(
            {"t": t, "p50": [v / 2 for v in p95], "p95": p95, "p99": [v * 1.2 for v in p95]}
        )
    return out


def _events(drift, detected: pd.Timestamp) -> pd.DataFrame:
    detail = spec_events.event_detail(drift)
    return pd.DataFrame(
        {"ts": [detected], "replica": ["fleet"], "kind": ["spec_acceptance_drift"], "detail": [detail],
         "replica_count": [None]}
    )  # fmt: skip


def _diagnose(latency: dict, events: pd.DataFrame) -> list[diagnosis.Incident]:
    series = pd.DataFrame(columns=["t", "replica", "signal", "mean", "peak", "low", "rate"])
    return diagnosis.diagnose(latency, series, events, None, 30)


def test_what_happened_names_the_drift_when_decode_latency_rose(drifts: list) -> None:
    d = drifts[0]
    onset = pd.Timestamp(d.onset_s, unit="s", tz="UTC")
    start = pd.Timestamp(T0_S + 1200, unit="s", tz="UTC")
    d.onset_s = start.timestamp()  # the drop began where the synthetic ITL rise begins
    end = start + pd.Timedelta(minutes=10)
    incidents = _diagnose(
        _latency({"itl_seconds": (0.02, 0.035)}, start, end), _events(d, start + pd.Timedelta(minutes=3))
    )
    d.onset_s = onset.timestamp()
    assert len(incidents) == 1 and incidents[0].cause is not None
    assert incidents[0].cause.key == "spec_acceptance_drift"
    text = "\n".join(diagnosis.summary_lines(incidents))
    assert "likely cause: Speculative acceptance drop (class code)" in text
    expected = (
        f"speculative acceptance of class code fell from {d.baseline_accept_length:.2f} to "
        f"{d.current_accept_length:.2f} tokens/step at {start:%H:%M} UTC"
    )
    assert expected in text and f"lost {d.lost_tokens_per_s:.0f} tok/s" in text
    assert "ITL p95 0.035 s vs 0.02 s outside" in text


def test_a_drift_that_explains_no_latency_change_is_not_the_cause(drifts: list) -> None:
    d = drifts[0]
    start = pd.Timestamp(T0_S + 1200, unit="s", tz="UTC")
    end = start + pd.Timedelta(minutes=10)
    latency = _latency({"ttft_seconds": (0.2, 2.0), "itl_seconds": (0.02, 0.02)}, start, end)
    (incident,) = _diagnose(latency, _events(d, start))
    assert "spec_acceptance_drift" not in [c.key for c in incident.causes]
    # A drift whose onset comes after the incident explains nothing either.
    late = _latency({"itl_seconds": (0.02, 0.035)}, start, end)
    (incident,) = _diagnose(late, _events(d, end + pd.Timedelta(minutes=30)))
    assert "spec_acceptance_drift" not in [c.key for c in incident.causes]


def test_incident_view_draws_the_panel_from_the_stored_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamlit AppTest of the real app over a store with drift traffic and the monitor's event."""
    from streamlit.testing.v1 import AppTest

    from enginescope.collectors.identity import fleet_replica
    from enginescope.collectors.model import Batch, Identity, SignalRow
    from enginescope.spec_monitor import SpecDriftMonitor, sink_emitter
    from enginescope.store import StoreWriter

    store = tmp_path / "store"
    write_traffic(store, generate(T0_S, DROP_AT_S + 600, seed=3, drop=("code", DROP_AT_S, 0.15)))
    fleet = Identity(replica=fleet_replica())
    writer = StoreWriter(store, fleet, background=False)
    up = [SignalRow(T0_S + s, "fleet_replicas", 2.0, 10.0) for s in range(0, int(DROP_AT_S) + 600, 10)]
    writer.write(Batch(fleet, signals=up))  # the app needs signals to know the store's time range
    monitor = SpecDriftMonitor(store, sink_emitter(writer, fleet))
    found = [d for minute in range(68, 81) for d in monitor.check(T0_S + minute * 60)]
    writer.close()
    assert [d.traffic_class for d in found] == ["code"]
    monkeypatch.setenv("ENGINESCOPE_STORE", str(store))
    app = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.query_params["range"] = "custom"
    at.query_params["t0"] = pd.Timestamp(T0_S + 3000, unit="s", tz="UTC").isoformat()
    at.query_params["t1"] = pd.Timestamp(T0_S + DROP_AT_S + 600, unit="s", tz="UTC").isoformat()
    at.run()
    assert not at.exception, at.exception
    assert "Speculative acceptance by traffic class" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Lost throughput (tokens/s)"] == f"{found[0].lost_tokens_per_s:,.0f}"
    table = at.dataframe[-1].value
    assert list(table["class"]) == ["code"] and "lost GPU time (GPU-hours)" in table
