"""``enginescope query``: SQL and presets, the three output formats, clean user errors."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enginescope.cli import main
from enginescope.collectors.model import Batch, EventRow, HistogramRow, Identity, SignalRow
from enginescope.store import StoreWriter

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    writer = StoreWriter(tmp_path, Identity("r1", engine="sglang", model="m"), background=False)
    batch = Batch(Identity("r1", engine="sglang", model="m"))
    batch.signals = [SignalRow(T0 + i, "queue_depth", float(i), 1.0) for i in range(3)]
    batch.events = [EventRow(T0, "engine_up", "ready, finally")]
    batch.histograms = [
        HistogramRow(T0 + i, "h", (), (0.1, 1.0, math.inf), (2.0, 4.0, 4.0), 1.0, 4.0, 1.0, "ttft_seconds")
        for i in range(2)
    ]
    writer.write(batch)
    writer.close()
    return tmp_path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["query", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_format_is_aligned(store: Path, capsys) -> None:
    code, out, _ = _run(capsys, "SELECT signal, value FROM signals ORDER BY value", "--store", str(store))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["signal", "value"]
    assert [line.split() for line in lines[2:5]] == [
        ["queue_depth", "0.0"],
        ["queue_depth", "1.0"],
        ["queue_depth", "2.0"],
    ]
    assert len({len(line) for line in lines[:5]}) == 1 and lines[-1] == "(3 rows)"


def test_csv_and_json_formats(store: Path, capsys) -> None:
    sql = "SELECT ts, detail, replica_count FROM events"
    _, out, _ = _run(capsys, sql, "--store", str(store), "--format", "csv")
    assert list(csv.reader(io.StringIO(out))) == [
        ["ts", "detail", "replica_count"],
        ["2026-11-28T12:00:00+00:00", "ready, finally", ""],
    ]
    _, out, _ = _run(
        capsys,
        "SELECT value, signal FROM signals ORDER BY value DESC",
        "--store",
        str(store),
        "--format",
        "json",
    )
    assert json.loads(out)[0] == {"value": 2.0, "signal": "queue_depth"} and len(json.loads(out)) == 3


def test_quantile_macro_from_cli(store: Path, capsys) -> None:
    sql = "SELECT histogram_quantile(0.75, any_value(bounds), sum_buckets(counts)) AS p FROM histograms"
    _, out, _ = _run(capsys, sql, "--store", str(store), "--format", "json")
    assert json.loads(out) == [{"p": 0.55}]


def test_env_var_default_store(store: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ENGINESCOPE_STORE", str(store))
    code, out, _ = _run(capsys, "SELECT count(*) AS n FROM signals", "--format", "csv")
    assert code == 0 and out == "n\n3\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["SELEC nonsense"], "syntax error"),
        (["SELECT * FROM no_such_view"], "no_such_view"),
        (["--preset", "no_such_preset"], "unknown preset 'no_such_preset'"),
        ([], "give either SQL or --preset"),
    ],
)
def test_user_errors_are_one_line(store: Path, capsys, argv: list[str], message: str) -> None:
    code, out, err = _run(capsys, *argv, "--store", str(store))
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_missing_store_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "SELECT 1", "--store", str(tmp_path / "absent"))
    assert code == 2 and "does not exist" in err


def test_presets_list_and_run(store: Path, capsys) -> None:
    queries = pytest.importorskip("enginescope.views.queries")
    code, out, _ = _run(capsys, "--list-presets")
    assert code == 0 and all(name in out for name in queries.PRESETS)
    code, out, err = _run(
        capsys, "--preset", "events", "--store", str(store), "--format", "json", "--param", "kinds=engine_up"
    )
    assert code == 0, err
    assert [row["kind"] for row in json.loads(out)] == ["engine_up"]
    code, _, err = _run(capsys, "--preset", "events", "--store", str(store), "--param", "nope=1")
    assert code == 2 and "no parameter 'nope'" in err
