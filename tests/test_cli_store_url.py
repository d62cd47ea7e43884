"""``--store s3://bucket/prefix`` for the sidecar and the dashboard (the query CLI is covered in
test_store_s3.py), and one-line errors for stores a command cannot use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from enginescope.cli import main
from tests.exposition_server import ExpositionServer
from tests.s3server import BUCKET, s3_server

FIXTURE = Path(__file__).parent / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"


@pytest.mark.slow
def test_sidecar_and_dashboard_use_an_s3_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: --store was a Path, so s3://b/p became the local folder s3:/b/p."""
    store = f"s3://{BUCKET}/fleet"
    with s3_server() as env, ExpositionServer(FIXTURE.read_text()) as engine:
        child_env = {**os.environ, **env}
        args = ["--engine-url", engine.url, "--store", store, "--interval-s", "0.2", "--gpu", "none"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "enginescope.cli", "sidecar", "--replica", "s3-rep", *args],
            cwd=tmp_path, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        engine.wait_for_scrapes(5, timeout_s=30)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert not any(tmp_path.iterdir())  # no local folder named after the URL (s3:/...)

        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from enginescope.dashboard import data

        con = data.open_connection(store)
        assert con is not None
        assert data.list_replicas(con)["replica"].tolist() == ["s3-rep"]
        kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY ts").fetchall()]
        assert kinds == ["container_started", "engine_ready", "draining", "container_stopped"]
        assert con.execute("SELECT count(*) FROM signals WHERE signal = 'queue_depth'").fetchone()[0] >= 3


def test_dashboard_command_hands_the_url_to_streamlit_unchanged() -> None:
    from enginescope.cli import build_parser
    from enginescope.cmd_dashboard import build_env

    args = build_parser().parse_args(["dashboard", "--store", "s3://bucket/prefix/"])
    assert build_env(args, base={})["ENGINESCOPE_STORE"] == "s3://bucket/prefix"


def test_sidecar_on_an_old_layout_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a traceback from StoreWriter and exit 1."""
    old = tmp_path / "signals" / "date=2026-11-28" / "replica=r"
    old.mkdir(parents=True)
    (old / "h10_0000000000000001_0000000000000001.parquet").write_bytes(b"")
    with ExpositionServer(FIXTURE.read_text()) as engine:
        code = main(["sidecar", "--engine-url", engine.url, "--store", str(tmp_path), "--gpu", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "enginescope store migrate" in err and "Traceback" not in err


def test_unsupported_store_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["query", "--store", "ftp://host/x", "SELECT 1"])
    assert stop.value.code == 2
    assert "unsupported URL scheme" in capsys.readouterr().err
