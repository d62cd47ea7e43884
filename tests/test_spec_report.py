"""``enginescope spec-report``: the drift evidence and the requests behind it, as a Parquet dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from enginescope.cli import main
from enginescope.views.spec_drift import DriftConfig
from tests.spec_traffic import T0_S, generate, write_traffic

DROP_AT_S = 70 * 60.0


@pytest.fixture(scope="module")
def drift_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    store = tmp_path_factory.mktemp("spec_report") / "store"
    frame = generate(T0_S, DROP_AT_S + 600, seed=11, drop=("code", DROP_AT_S, 0.15))
    write_traffic(store, frame, store_params=True)  # the sidecar's request-params opt-in was on
    return store, frame


def _files_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_report_holds_the_evidence_and_the_requests_behind_the_drop(
    drift_store: tuple[Path, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store, frame = drift_store
    out = tmp_path / "report"
    assert main(["spec-report", "--store", str(store), "--since", "90m", "--out", str(out)]) == 0
    assert "code: acceptance" in capsys.readouterr().out
    evidence = pq.read_table(out / "evidence.parquet").to_pylist()
    assert [e["traffic_class"] for e in evidence] == ["code"]
    e = evidence[0]
    assert e["p_value"] < e["alpha"] == pytest.approx(DriftConfig().alpha(4))
    assert 0.10 < e["drop_ratio"] < 0.20 and e["lost_tokens_per_s"] > 0 and e["lost_gpu_hours"] > 0
    drop_ts = pd.Timestamp(T0_S + DROP_AT_S, unit="s", tz="UTC")
    assert abs((pd.Timestamp(e["onset_ts"]) - drop_ts).total_seconds()) < 60
    assert 0 < (pd.Timestamp(e["detected_ts"]) - drop_ts).total_seconds() <= 600
    requests = pads.dataset(out / "requests", format="parquet", partitioning="hive").to_table().to_pandas()
    assert set(requests["traffic_class"]) == {"code"} and set(requests["drift_id"]) == {0}
    code = frame.loc[frame["traffic_class"] == "code"]
    expected = code.loc[
        (code["ts_s"] >= e["onset_ts"].timestamp()) & (code["ts_s"] < e["detected_ts"].timestamp())
    ]
    assert sorted(requests["request_id"]) == sorted(expected["request_id"])
    assert requests["spec_accept_length"].mean() == pytest.approx(e["current_accept_length"])
    assert "params" not in requests.columns  # not asked for
    assert b"input_ids" not in _files_text(out)  # never content
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["drifts"] == 1 and manifest["requests"] == len(requests)
    assert manifest["detector"]["false_alarms_per_day"] == DriftConfig().false_alarms_per_day


def test_with_params_adds_only_the_opt_in_non_content_parameters(
    drift_store: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    store, _ = drift_store
    out = tmp_path / "report"
    assert main(["spec-report", "--store", str(store), "--out", str(out), "--with-params"]) == 0
    requests = pads.dataset(out / "requests", format="parquet", partitioning="hive").to_table().to_pylist()
    params = json.loads(requests[0]["params"])
    assert params["stream"] is True and params["custom_labels"] == {"task": "code"}
    assert "input_ids" not in params and b"input_ids" not in _files_text(out)


def test_stable_traffic_gives_an_empty_typed_report(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_traffic(store, generate(T0_S, 1200, seed=5))
    out = tmp_path / "report"
    assert main(["spec-report", "--store", str(store), "--out", str(out)]) == 0
    evidence = pq.read_table(out / "evidence.parquet")
    assert evidence.num_rows == 0 and {"traffic_class", "p_value", "lost_gpu_hours"} <= set(
        evidence.column_names
    )
    assert evidence.schema.field("p_value").type == "double"
    assert json.loads((out / "manifest.json").read_text())["drifts"] == 0


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["spec-report", "--store", str(tmp_path / "missing")]) == 2
    assert "missing: no such store folder" in capsys.readouterr().err
    (tmp_path / "store").mkdir()
    assert main(["spec-report", "--store", str(tmp_path / "store")]) == 2
    assert "no per-request data" in capsys.readouterr().err
    write_traffic(tmp_path / "store", generate(T0_S, 300, seed=5))
    args = ["spec-report", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert main([*args, "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0 and not (tmp_path / "out" / "keep.txt").exists()
