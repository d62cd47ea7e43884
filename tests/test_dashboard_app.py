"""AppTest renders of every view over a synthetic store; the numbers shown match the store."""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from streamlit.testing.v1 import AppTest

from enginescope.collectors.quantile import histogram_quantile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tests.history import Fleet, Incident, generate  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DURATION_S = 1800


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    fleet = Fleet(START, DURATION_S, replicas=2, incidents=[Incident("spike", 900, 300)], request_rate=2.0)
    generate(path, fleet)
    return path


def _app(store: Path | str, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("ENGINESCOPE_STORE", str(store))
    for var in ("ENGINESCOPE_RECIPE", "ENGINESCOPE_SLO_TTFT_P95_S"):
        monkeypatch.delenv(var, raising=False)
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    return "\n".join(
        [m.value for m in at.markdown] + [i.value for i in at.info] + [c.value for c in at.caption]
    )


def test_incident_view_shows_diagnosis_and_every_panel(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(store, monkeypatch, range="all", slo_ttft="1")
    text = _text(at)
    assert "Incident 1:" in text and "Prefill queueing" in text and "SLO 1 s" in text
    charts = at.get("vega_lite_chart")
    hidden = [c.value for c in at.caption if c.value.startswith("No data in this window, hidden")]
    assert len(charts) == 13 - (hidden[0].count(",") + 1 if hidden else 0)
    # Event markers on every chart: the scale_up row is in each chart's data, not just its colour scale.
    assert all(any(b"scale_up" in d.data.data for d in c.proto.datasets) for c in charts)
    specs = [c.proto.spec for c in charts]
    assert any("TTFT p50/p95/p99 (s)" in s for s in specs) and any("GPU power (W)" in s for s in specs)
    assert at.query_params["range"] == "all" and at.query_params["slo_ttft"] == "1"


def test_window_p99_matches_summed_buckets(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The requests view's histogram estimate equals histogram_quantile over buckets summed here."""
    at = _app(store, monkeypatch, range="all", view="requests")
    table = at.dataframe[0].value
    shown = float(table.loc[table["quantile"] == "p99", "histogram estimate (s)"].iloc[0])
    rows = ds.dataset(store / "histograms", format="parquet").to_table(
        filter=ds.field("signal") == "ttft_seconds"
    )
    counts = np.sum(np.stack(rows.column("counts").to_pylist()), axis=0)
    bounds = rows.column("bounds")[0].as_py()
    expected = histogram_quantile(0.99, bounds, counts.tolist())
    assert shown == pytest.approx(expected, rel=1e-9)
    exact = float(table.loc[table["quantile"] == "p99", "exact from requests (s)"].iloc[0])
    assert not math.isnan(exact) and exact > 0


def test_replica_view_lists_slowest_requests(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(store, monkeypatch, range="all", view="replica", replica="replica-01")
    slow = at.dataframe[1].value
    assert len(slow) == 20 and set(slow["replica"]) == {"replica-01"}
    assert slow["e2e_s"].is_monotonic_decreasing
    rows = ds.dataset(store / "requests", format="parquet").to_table(
        filter=ds.field("replica") == "replica-01"
    )
    assert slow["e2e_s"].iloc[0] == pytest.approx(max(rows.column("e2e_s").to_pylist()))


def test_sql_view_runs_a_preset(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(store, monkeypatch, view="sql")
    at.button[0].click().run()
    assert not at.exception, at.exception
    events = at.dataframe[0].value
    assert {"scale_up", "container_started"} <= set(events["kind"])


def test_missing_and_empty_store_render_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(tmp_path / "nowhere", monkeypatch)
    assert "No store at" in at.info[0].value
    at = _app(tmp_path, monkeypatch)
    assert "holds no data yet" in at.info[0].value


def test_one_replica_store_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate(tmp_path, Fleet(START, 600, replicas=1, incidents=[]))
    at = _app(tmp_path, monkeypatch, range="15m", per_replica="1")
    assert "1 replica(s)" in _text(at)
    assert len(at.get("vega_lite_chart")) >= 4  # the key charts at least; empty panels are hidden
