"""One sidecar, two views of the same data: Prometheus scraping the sidecar's /metrics and
``enginescope query`` over the store must give the same quantiles and counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enginescope.exporters.prom_endpoint import PromEndpointSink
from enginescope.sidecar import Sidecar, SidecarConfig
from tests.binaries import require
from tests.exposition_server import ExpositionServer
from tests.test_prometheus_server import Prometheus
from tests.test_sidecar_e2e import FIXTURE, _bump_ttft

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _prometheus_binary() -> None:
    require("prometheus")  # skipped on a workstation without it, a failure under CI


STEPS = [{0.2: 5, 0.4: 2}, {1.0: 3, 4.0: 1}, {0.1: 7, 10.0: 1}]


def _enginescope_query(store: Path, sql: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "enginescope", "query", sql, "--store", str(store), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_promql_and_store_agree(tmp_path: Path) -> None:
    text = FIXTURE.read_text()
    endpoint = PromEndpointSink(port=0)
    with ExpositionServer(text) as server:
        sidecar = Sidecar(
            SidecarConfig(engine_url=server.url, store_dir=tmp_path / "store", extra_sinks=[endpoint])
        )
        sidecar.tick()  # baseline
        for added in STEPS:
            text = _bump_ttft(text, added, added_sum_s=sum(added.values()) * 0.3)
            server.body = text
            sidecar.tick()
        prometheus = Prometheus(tmp_path, endpoint.url.split("//", 1)[1].split("/", 1)[0])
        try:
            total = sum(sum(step.values()) for step in STEPS)
            prometheus.wait(
                lambda: prometheus.scalar("sum(enginescope_ttft_seconds_count)") == total, "scrape", 60
            )
            promql = {
                q: prometheus.scalar(
                    f"histogram_quantile({q}, sum by (le) (enginescope_ttft_seconds_bucket))"
                )
                for q in (0.5, 0.95, 0.99)
            }
            finished = prometheus.scalar("sum(enginescope_ttft_seconds_count)")
        finally:
            prometheus.stop()
            sidecar.stop()

    rows = _enginescope_query(
        tmp_path / "store",
        "SELECT histogram_quantile(0.5, bounds, sum_buckets(counts)) AS p50, "
        "histogram_quantile(0.95, bounds, sum_buckets(counts)) AS p95, "
        "histogram_quantile(0.99, bounds, sum_buckets(counts)) AS p99, sum(count) AS n "
        "FROM histograms WHERE signal = 'ttft_seconds' GROUP BY bounds",
    )
    assert len(rows) == 1
    assert rows[0]["n"] == finished == total
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert rows[0][key] == pytest.approx(promql[q], rel=1e-9), (q, rows[0], promql)
