"""The ``bench`` view of the store and the dashboard's Bench view over a real ``enginescope bench``
run; SLOs read from the store's ``recipe.toml``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from enginescope.cmd_bench import write_bench
from enginescope.store import open_store
from enginescope.store.reader import BENCH_SCHEMA
from enginescope.views import queries

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")
RECIPE = REPO / "recipes" / "qwen3-8b-classifier-h100.toml"  # SLO p95: TTFT 0.15, ITL 0.02, e2e 0.3 s
OLD_RUN = "20200101T000000-old000"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real simulated sweep (two 1 s levels, ~3 s), an older run written through cmd_bench's
    own writer, and a half-written temp file that no reader may open."""
    path = tmp_path_factory.mktemp("bench_store")
    cli = Path(sys.executable).with_name("enginescope")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "enginescope.cli"]
    cmd += ["bench", "--recipe", str(RECIPE), "--store", str(path), "--levels", "1,4", "--duration-s", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (latest,) = _runs(path)
    rows = pq.read_table(latest).to_pylist()
    older = [{k: v for k, v in r.items() if k not in ("run_id", "url")} | {"ts_s": r["ts_s"] - 86400.0,
             "concurrency": 2 * r["concurrency"], "throughput_rps": r["throughput_rps"] / 2}
             for r in rows]  # fmt: skip
    write_bench(path, older, {"run_id": OLD_RUN, "url": "http://old.example"})
    (path / "bench" / ".tmp-half-written.parquet").write_bytes(b"PAR1 not a whole file")
    return path


def _runs(store: Path) -> list[Path]:
    return [p for p in (store / "bench").glob("*.parquet") if not p.name.startswith(".")]


def _stored(store: Path, run_id: str) -> pd.DataFrame:
    table = pq.read_table(store / "bench" / f"{run_id}.parquet").to_pandas()
    return table.sort_values("concurrency").reset_index(drop=True)


def _latest_id(store: Path) -> str:
    return next(p.stem for p in _runs(store) if p.stem != OLD_RUN)


def _app(
    store: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None, **params: str
) -> AppTest:
    monkeypatch.setenv("ENGINESCOPE_STORE", str(store))
    for var in ("ENGINESCOPE_RECIPE", "ENGINESCOPE_SLO_TTFT_P95_S", "ENGINESCOPE_SLO_ITL_P95_S",
                "ENGINESCOPE_SLO_E2E_P95_S"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    for var, value in (env or {}).items():
        monkeypatch.setenv(var, value)
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _chart_data(chart) -> dict[str, pd.DataFrame]:
    return {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets}


def test_bench_view_is_typed_and_skips_temp_files(store: Path, tmp_path: Path) -> None:
    empty = open_store(tmp_path / "none")
    types = dict(empty.execute("SELECT column_name, column_type FROM (DESCRIBE bench)").fetchall())
    assert types["concurrency"] == "BIGINT" and types["engine_ttft_p95_s"] == "DOUBLE"
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["meets_slo"] == "BOOLEAN"
    assert empty.execute("SELECT count(*) FROM bench").fetchone() == (0,)
    # The anchor's types are the ones cmd_bench writes (a drift here would retype real runs).
    written = pq.read_schema(store / "bench" / f"{_latest_id(store)}.parquet")
    assert {f.name: f.type for f in written} == {f.name: f.type for f in BENCH_SCHEMA}
    for sandbox in (False, True):
        con = open_store(store, sandbox=sandbox)
        counts = dict(con.execute("SELECT run_id, count(*) FROM bench GROUP BY run_id").fetchall())
        assert counts == {_latest_id(store): 2, OLD_RUN: 2}


def test_bench_presets_summarise_runs(store: Path) -> None:
    con = open_store(store)
    runs = queries.run_preset(con, "bench_runs")
    assert runs["run_id"].tolist() == [_latest_id(store), OLD_RUN]  # latest first
    stored = _stored(store, _latest_id(store))
    latest = runs.iloc[0]
    assert latest["levels"] == 2 and latest["max_concurrency"] == 4
    meeting = stored.loc[stored["meets_slo"]]
    assert latest["max_output_tps_meeting_slo"] == pytest.approx(meeting["output_tps"].max())
    curve = queries.run_preset(con, "bench_curve")  # '' = latest
    assert curve["concurrency"].tolist() == [1, 4]
    assert curve["client_ttft_p95_s"].tolist() == pytest.approx(stored["client_ttft_p95_s"].tolist())
    old = queries.run_preset(con, "bench_curve", {"run_id": OLD_RUN})
    assert old["concurrency"].tolist() == [2, 8]


@pytest.mark.slow
def test_bench_view_draws_the_latest_run(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(store, monkeypatch, view="bench")
    latest = _latest_id(store)
    stored = _stored(store, latest)
    assert at.selectbox[0].value == latest
    table = at.dataframe[0].value
    for column in ("concurrency", "output_tps", "throughput_rps", "client_ttft_p95_s", "engine_itl_p95_s"):
        assert table[column].tolist() == pytest.approx(stored[column].tolist(), rel=1e-12), column
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3
    specs = [c.proto.spec for c in charts]
    for label in ("TTFT p95 (ms)", "ITL p95 (ms)", "e2e p95 (ms)"):
        assert any(label in s for s in specs), label
    assert all("output throughput (tokens/s)" in s for s in specs)
    ttft = _chart_data(charts[0])
    for side in ("client", "engine"):
        points = ttft["points"].loc[ttft["points"]["side"] == side].sort_values("concurrency")
        assert points["concurrency"].tolist() == [1, 4] and points["label"].tolist() == ["c=1", "c=4"]
        assert points["latency_ms"].tolist() == pytest.approx((stored[f"{side}_ttft_p95_s"] * 1000).tolist())
        assert points["throughput"].tolist() == pytest.approx(stored["output_tps"].tolist())
    # The run's recipe (found in recipes/ by name) sets the SLO line: TTFT p95 150 ms.
    assert ttft["slo"]["x"].tolist() == [pytest.approx(150.0)]
    assert _chart_data(charts[1])["slo"]["x"].tolist() == [pytest.approx(20.0)]
    assert any("SLO lines: recipe qwen3-8b-classifier-h100" in c.value for c in at.caption)


@pytest.mark.slow
def test_url_picks_the_run_and_throughput(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(store, monkeypatch, view="bench", run=OLD_RUN, tput="rps")
    stored = _stored(store, OLD_RUN)
    assert at.selectbox[0].value == OLD_RUN
    assert at.dataframe[0].value["concurrency"].tolist() == [2, 8]
    chart = at.get("vega_lite_chart")[2]
    assert "throughput (requests/s)" in chart.proto.spec
    points = _chart_data(chart)["points"]
    client = points.loc[points["side"] == "client"].sort_values("concurrency")
    assert client["throughput"].tolist() == pytest.approx(stored["throughput_rps"].tolist())
    assert at.query_params["run"] == OLD_RUN and at.query_params["tput"] == "rps"
    at.selectbox[0].set_value(_latest_id(store)).run()  # picking a run writes it to the URL
    assert at.query_params["run"] == _latest_id(store)


def test_store_without_bench_runs_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path, monkeypatch, view="bench")
    assert "No bench runs" in at.info[0].value and "enginescope bench" in at.info[0].value
    assert not at.get("vega_lite_chart")


def test_slos_come_from_the_stores_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copyfile(RECIPE, tmp_path / "recipe.toml")  # what `enginescope demo --recipe` leaves
    at = _app(tmp_path, monkeypatch)
    inputs = {n.label: n.value for n in at.number_input}
    assert inputs == {"TTFT p95 SLO (s)": pytest.approx(0.15), "ITL p95 SLO (s)": pytest.approx(0.02),
                      "e2e p95 SLO (s)": pytest.approx(0.3)}  # fmt: skip
    assert "SLOs from recipe.toml in the store" in [c.value for c in at.sidebar.caption]
    assert at.query_params["slo_ttft"] == "0.15"
    # The URL wins over the store's recipe, key by key.
    at = _app(tmp_path, monkeypatch, slo_ttft="0.5")
    assert {n.label: n.value for n in at.number_input}["TTFT p95 SLO (s)"] == pytest.approx(0.5)
    assert {n.label: n.value for n in at.number_input}["e2e p95 SLO (s)"] == pytest.approx(0.3)
    # A flag of `enginescope dashboard` means the operator chose: the store's recipe is not read.
    at = _app(tmp_path, monkeypatch, env={"ENGINESCOPE_SLO_E2E_P95_S": "2"})
    inputs = {n.label: n.value for n in at.number_input}
    assert inputs["e2e p95 SLO (s)"] == pytest.approx(2.0) and inputs["TTFT p95 SLO (s)"] is None
    assert "SLOs from recipe.toml in the store" not in [c.value for c in at.sidebar.caption]


def test_bad_store_recipe_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = re.sub(r"ttft_p95_s = [0-9.]+", "ttft_p95_s = -1", RECIPE.read_text())
    (tmp_path / "recipe.toml").write_text(text)
    at = _app(tmp_path, monkeypatch)
    assert "recipe.toml" in at.error[0].value and "ttft_p95_s" in at.error[0].value
