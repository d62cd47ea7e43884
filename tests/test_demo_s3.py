"""``enginescope demo --store s3://...``: the sidecars write the object store, the local working
files (ground truth, the simulated per-request export, tailer state) go to a local work folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.s3server import BUCKET, s3_server

DURATION_S = 20


@pytest.mark.slow
def test_demo_writes_an_s3_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("moto.server")
    url = f"s3://{BUCKET}/demo"
    with s3_server() as env:
        began_s = time.monotonic()
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "enginescope",
                "demo",
                "--headless",
                "--scenario",
                "spike",
                "--duration-s",
                str(DURATION_S),
                "--store",
                url,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=DURATION_S + 60,
            cwd=tmp_path,
            env={**os.environ, **env},
        )
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
        assert time.monotonic() - began_s < DURATION_S + 40
        assert f"store: {url}" in completed.stdout

        # Nothing was written to a folder named like the URL.
        assert not list(tmp_path.rglob("s3:*")), sorted(p.name for p in tmp_path.rglob("*"))
        works = list((tmp_path / "enginescope-demo").iterdir())
        assert len(works) == 1, works
        work = works[0]
        assert f"work dir: {work.resolve()}" in completed.stdout
        replicas = sorted(p.stem for p in (work / "groundtruth").glob("*.jsonl"))
        assert replicas, "no ground truth in the work dir"
        assert sorted(p.name for p in (work / "requestlog").iterdir()) == replicas
        assert (work / "loadgen" / "requests.jsonl").is_file()
        assert sorted(p.name for p in (work / "state").iterdir()) == replicas  # tailer state

        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from enginescope.store import open_store

        con = open_store(url)

        def per_replica(table: str) -> dict[str, int]:
            return dict(con.sql(f"select replica, count(*) from {table} group by replica").fetchall())

        signals, requests, events = per_replica("signals"), per_replica("requests"), per_replica("events")
        served = [r for r in replicas if (work / "groundtruth" / f"{r}.jsonl").stat().st_size > 0]
        assert served, "no replica served a request"
        for replica in replicas:
            assert signals.get(replica, 0) > 0, (replica, signals)
            assert events.get(replica, 0) > 0, (replica, events)
        for replica in served:  # the per-request export reached the store through the sidecar
            assert requests.get(replica, 0) > 0, (replica, requests)
        assert events.get("fleet", 0) > 0  # scale events and scenario annotations


@pytest.mark.parametrize("store", ["s3://bucket/prefix", "s3://bucket/prefix/"])
def test_demo_parses_a_url_store_and_hands_the_dashboard_the_url(store: str) -> None:
    import argparse

    from enginescope import cmd_dashboard, cmd_demo
    from enginescope.simfleet.fleet import local_work_dir

    parser = argparse.ArgumentParser()
    cmd_demo.add_arguments(parser)
    args = parser.parse_args(["--store", store, "--work-dir", "w"])
    assert args.store == "s3://bucket/prefix" and args.work_dir == Path("w")
    dash = argparse.Namespace(store=args.store, port=1, address="127.0.0.1", recipe=None)
    for key in cmd_dashboard.SLO_FLAGS:
        setattr(dash, f"slo_{key}", None)
    assert cmd_dashboard.build_env(dash, {})["ENGINESCOPE_STORE"] == "s3://bucket/prefix"
    assert local_work_dir(args.store, Path("w")) == Path("w")
    with pytest.raises(ValueError, match="work_dir"):
        local_work_dir(args.store)  # a URL store needs a local work folder
