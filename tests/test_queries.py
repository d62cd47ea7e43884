"""Query presets against a synthetic store: bound parameters, numbers checked independently."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from enginescope.cli import CliError
from enginescope.cmd_dashboard import build_env
from enginescope.collectors.quantile import histogram_quantile
from enginescope.dashboard.data import open_connection
from enginescope.dashboard.state import ViewState, slo_from_recipe
from enginescope.recipes.schema import RECIPES_DIR
from enginescope.views import queries
from enginescope.views.panels import INCIDENT_PANELS, scalar_signals

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tests.history import Fleet, Incident, generate  # noqa: E402

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    generate(path, Fleet(START, 1200, replicas=2, incidents=[Incident("restart", 600, 300, 1)]))
    return path


def test_per_replica_minute_quantiles_equal_histogram_quantile_of_summed_buckets(store: Path) -> None:
    con = open_connection(store)
    df = queries.run_preset(con, "latency_per_replica", {"signal": "e2e_seconds"})
    minute = df.loc[df["replica"] == "replica-00"].iloc[3]
    t0 = minute["t"].to_pydatetime()
    rows = ds.dataset(store / "histograms", format="parquet").to_table(
        filter=(ds.field("signal") == "e2e_seconds") & (ds.field("replica") == "replica-00")
        & (ds.field("ts") >= t0) & (ds.field("ts") < t0 + dt.timedelta(minutes=1))
    )  # fmt: skip
    counts = np.sum(np.stack(rows.column("counts").to_pylist()), axis=0).tolist()
    bounds = rows.column("bounds")[0].as_py()
    for q, col in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert minute[col] == pytest.approx(histogram_quantile(q, bounds, counts), rel=1e-9)
    assert minute["observations"] == counts[-1]


def test_raw_and_rollup_presets_agree_on_minute_buckets(store: Path) -> None:
    con = open_connection(store)
    raw = queries.run_preset(con, "latency_raw", {"bucket_s": 60, "signal": "ttft_seconds"})
    rollup = queries.run_preset(con, "latency_fleet", {"signal": "ttft_seconds"})
    assert len(raw) == len(rollup) > 10
    assert np.allclose(raw["p99"], rollup["p99"]) and (raw["observations"] == rollup["observations"]).all()


def test_generated_signal_rollup_matches_raw_series(store: Path) -> None:
    """gen_history writes signals_1m with the store's own re-sum: same numbers as raw rows."""
    con = open_connection(store)
    names = ["queue_depth", "generation_tokens", "engine_up", "gpu_sm_clock_mhz"]
    raw = queries.run_preset(con, "signal_series", {"signals": names, "bucket_s": 120})
    rolled = queries.run_preset(con, "signal_series_1m", {"signals": names, "bucket_s": 120})
    assert len(raw) == len(rolled) == 10 * 2 * len(names)  # 20 min in 2-min buckets, 2 replicas
    for column in ("mean", "peak", "low", "rate"):
        assert np.allclose(raw[column], rolled[column], rtol=1e-12, equal_nan=True)
    assert (raw["t"] == rolled["t"]).all() and (raw["replica"] == rolled["replica"]).all()


def test_rollup_presets_reject_sub_minute_buckets(store: Path) -> None:
    """latency_fleet reads the minute rollup: bucket_s=10 must fail, not return 60 s buckets."""
    con = open_connection(store)
    for preset in ("latency_fleet", "latency_per_replica", "signal_series_1m"):
        with pytest.raises(duckdb.Error, match="multiple of 60"):
            queries.run_preset(con, preset, {"bucket_s": 10})
    two_min = queries.run_preset(con, "latency_fleet", {"bucket_s": 120})
    assert (two_min["t"].diff().dropna() == pd.Timedelta(seconds=120)).all()
    raw = queries.run_preset(con, "latency_raw", {"bucket_s": 10})
    assert (raw["t"].diff().dropna() == pd.Timedelta(seconds=10)).all()


def test_filters_are_bound_not_formatted(store: Path) -> None:
    con = open_connection(store)
    hostile = ["replica-00' OR '1'='1"]
    assert queries.run_preset(con, "queue_depth", {"replicas": hostile}).empty
    one = queries.run_preset(con, "queue_depth", {"replicas": ["replica-01"]})
    assert set(one["replica"]) == {"replica-01"} and set(one["signal"]) == {"queue_depth", "running_requests"}


def test_events_replica_count_and_slowest_requests(store: Path) -> None:
    con = open_connection(store)
    events = queries.run_preset(con, "events", {"kinds": ["engine_restart"]})
    assert list(events["replica"]) == ["replica-01"]
    count = queries.run_preset(con, "replica_count", {"bucket_s": 30})
    assert count["replicas_up"].max() == 2 and count["replicas_up"].min() == 1  # during the restart
    slow = queries.run_preset(con, "slowest_requests", {"limit": 5})
    assert len(slow) == 5 and slow["e2e_s"].is_monotonic_decreasing


def test_unknown_preset_or_parameter_is_a_clear_error(store: Path) -> None:
    con = open_connection(store)
    with pytest.raises(KeyError, match="unknown preset"):
        queries.run_preset(con, "nope")
    with pytest.raises(KeyError, match="has no parameter"):
        queries.run_preset(con, "events", {"signal": "x"})


def test_panels_are_engine_neutral_data_with_units() -> None:
    ids = [p.id for p in INCIDENT_PANELS]
    assert len(ids) == len(set(ids))
    assert all(p.unit for p in INCIDENT_PANELS)
    assert {p.slo_key for p in INCIDENT_PANELS if p.slo_key} == {"ttft_p95_s", "itl_p95_s", "e2e_p95_s"}
    assert not any(":" in s for p in INCIDENT_PANELS for s in p.signals)  # canonical, not engine names
    assert "gpu_sm_clock_mhz" in scalar_signals()


def test_url_state_round_trips_and_tolerates_bad_links() -> None:
    state = ViewState.from_params({"view": "replica", "range": "custom", "t0": "2026-03-01T12:00:00",
                                   "t1": "2026-03-01T13:00:00+00:00", "replicas": "a,b", "slo_ttft": "0.5"})  # fmt: skip
    assert ViewState.from_params(state.to_params()).to_params() == state.to_params()
    assert state.replicas == ("a", "b") and state.slo == {"ttft_p95_s": 0.5}
    bad = ViewState.from_params({"view": "x", "range": "custom", "t0": "yesterday", "slo_itl": "-1"})
    assert (bad.view, bad.range, bad.slo) == ("incident", "1h", {})


def test_recipe_slo_and_flags_reach_the_app_env(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text((RECIPES_DIR / "llama-3.1-8b-h100.toml").read_text())  # a whole recipe
    assert slo_from_recipe(recipe) == {"ttft_p95_s": 0.5, "itl_p95_s": 0.03, "e2e_p95_s": 10.0}
    args = argparse.Namespace(
        store=tmp_path, recipe=recipe, slo_ttft_p95_s=None, slo_itl_p95_s=None, slo_e2e_p95_s=2.0
    )
    env = build_env(args, base={})
    assert env["ENGINESCOPE_RECIPE"] == str(recipe.resolve()) and env["ENGINESCOPE_SLO_E2E_P95_S"] == "2.0"
    recipe.write_text(recipe.read_text().replace("ttft_p95_s = 0.5", "ttft_p95_s = 'fast'"))
    with pytest.raises(CliError, match="r.toml"):
        build_env(args, base={})
