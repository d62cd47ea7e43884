"""Issue-10/14 findings in the dashboard, each pinned by a test that failed before its fix:
pseudo-replicas counted as replicas, 'higher' percentiles, throttle causes parsed from event
text, SLO inputs showing 0.000 and a caption describing another rule than the code's."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from enginescope.collectors.model import Batch, EventRow, Identity, SignalRow
from enginescope.dashboard import diagnosis
from enginescope.dashboard.data import list_replicas, open_connection
from enginescope.recipes.schema import RECIPES_DIR
from enginescope.store import StoreWriter
from tests.history import Fleet, Incident, generate

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
RECIPE = RECIPES_DIR / "llama-3.1-8b-h100.toml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two replicas and a spike (which adds a third), plus what a fleet watcher writes under
    the pseudo-replica ``fleet``: a fleet signal and a scale_up event."""
    path = tmp_path_factory.mktemp("store")
    generate(path, Fleet(START, 1200, replicas=2, incidents=[Incident("spike", 600, 300)], request_rate=2.0))
    writer = StoreWriter(path, Identity("fleet", engine="simfleet"), background=False)
    t_s = START.timestamp()
    rows = [SignalRow(t_s + i, "fleet_replicas", 2.0, 1.0) for i in range(0, 1200, 10)]
    writer.write(
        Batch(
            Identity("fleet", engine="simfleet"),
            signals=rows,
            events=[EventRow(t_s + 700, "scale_up", "x", 3)],
        )
    )
    writer.close()
    return path


def _app(store: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("ENGINESCOPE_STORE", str(store))
    for var in ("ENGINESCOPE_RECIPE", "ENGINESCOPE_SLO_TTFT_P95_S", "ENGINESCOPE_SLO_ITL_P95_S",
                "ENGINESCOPE_SLO_E2E_P95_S"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _page_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_replica_list_and_counts_exclude_the_fleet_pseudo_replica(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(list_replicas(open_connection(store))["replica"]) == [
        "replica-00",
        "replica-01",
        "replica-02",
    ]
    at = _app(store, monkeypatch, range="all")
    assert "3 replica(s) in the store" in _page_text(at)
    (picker,) = [m for m in at.multiselect if m.label.startswith("Replicas")]
    assert "fleet" not in picker.options and len(picker.options) == 3


def test_exact_percentiles_interpolate_linearly_like_duckdb(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(store, monkeypatch, range="all", view="requests")
    table = at.dataframe[0].value
    con = duckdb.connect()
    rows = con.execute(
        "SELECT quantile_cont(ttft_s, 0.99) AS lin, quantile_disc(ttft_s, 0.99) AS disc, "
        f"list(ttft_s) AS v FROM read_parquet('{store}/requests/**/*.parquet')"
    ).fetchone()
    shown = float(table.loc[table["quantile"] == "p99", "exact from requests (s)"].iloc[0])
    assert rows[0] != pytest.approx(rows[1], rel=1e-9)  # the data tells the two methods apart
    assert shown == pytest.approx(rows[0], rel=1e-12)
    assert shown == pytest.approx(float(np.quantile(rows[2], 0.99, method="linear")), rel=1e-12)


def _throttle_inputs(
    details: tuple[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """One replica throttled from 12:00:10 to 12:03:20 (hw_power_brake), with two
    gpu_throttle events whose detail text is in spellings the diagnosis must not rely on."""
    t0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")
    on, off = t0 + pd.Timedelta(seconds=10), t0 + pd.Timedelta(seconds=200)
    events = pd.DataFrame({"ts": [on, off], "replica": ["r1", "r1"], "kind": ["gpu_throttle"] * 2,
                           "detail": list(details), "replica_count": [None, None]})  # fmt: skip
    t = pd.date_range(t0, periods=600, freq="1s")
    hot = ((t >= on) & (t < off)).astype(float)
    series = pd.DataFrame({"t": t, "replica": "r1", "signal": "gpu_throttled", "mean": hot, "peak": hot,
                           "low": hot, "rate": np.nan})  # fmt: skip
    gpu = pd.DataFrame({"ts": t, "replica": "r1", "throttle_hw_power_brake": hot, "throttle_hw_thermal": 0.0})
    return events, series, gpu, t0 + pd.Timedelta(seconds=600)


def test_throttle_ending_is_read_from_structured_data_not_event_text() -> None:
    events, series, gpu, end = _throttle_inputs(("GPU 0: slowdown", "GPU 0: clocks back to normal"))
    for structured in ({}, {"gpu": gpu}):  # the gpu_throttled signal; the gpu table
        found = diagnosis.diagnose({}, series, events, None, 1, end, **structured)
        assert len(found) == 1, diagnosis.summary_lines(found)
        assert found[0].cause.key == "gpu_throttling"
        assert found[0].start == events["ts"].iloc[0] and found[0].end >= events["ts"].iloc[1]


def test_throttle_evidence_names_the_registry_reason_from_the_gpu_table() -> None:
    events, series, gpu, end = _throttle_inputs(("GPU 0: power_brake (was none)", "GPU 0: none"))
    (found,) = diagnosis.diagnose({}, series, events, None, 1, end, gpu=gpu)
    evidence = " ".join(found.cause.evidence)
    assert "r1 (hw_power_brake)" in evidence and "hw_thermal" not in evidence


def test_slo_inputs_are_empty_until_set_and_labels_carry_units(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(store, monkeypatch, range="all")
    inputs = {n.label: n.value for n in at.number_input}
    assert set(inputs) == {"TTFT p95 SLO (s)", "ITL p95 SLO (s)", "e2e p95 SLO (s)"}
    assert all(v is None for v in inputs.values()), inputs
    at = _app(store, monkeypatch, range="all", slo_itl="0.07")
    assert {n.label: n.value for n in at.number_input}["ITL p95 SLO (s)"] == pytest.approx(0.07)


def test_slo_inputs_default_to_the_stores_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Path
) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shutil.copyfile(RECIPE, copy / "recipe.toml")
    at = _app(copy, monkeypatch, range="all")
    inputs = {n.label: n.value for n in at.number_input}
    assert inputs == {"TTFT p95 SLO (s)": 0.5, "ITL p95 SLO (s)": 0.03, "e2e p95 SLO (s)": 10.0}


def test_threshold_caption_and_code_are_one_rule(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an SLO the caption states the rule ``diagnosis.thresholds`` applies, and the
    threshold drawn is that rule applied to the p95 series the chart shows."""
    at = _app(store, monkeypatch, range="all")
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert diagnosis.baseline_rule() in captions
    assert "25th-percentile p95" in captions and "TTFT 3x" in captions and "ITL 1.5x" in captions
    assert "median" not in captions
    charts = {c.proto.spec: c for c in at.get("vega_lite_chart")}
    (ttft,) = [c for spec, c in charts.items() if re.search(r'"text": "TTFT', spec)]
    data = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in ttft.proto.datasets}
    p95 = next(df for df in data.values() if "series" in df and "p95" in set(df["series"]))
    p95 = p95.loc[p95["series"] == "p95", "value"]
    rule = next(df for df in data.values() if "label" in df and "y" in df)
    assert float(rule["y"].iloc[0]) == pytest.approx(3.0 * p95.quantile(0.25), rel=1e-9)
