"""A real Prometheus (Debian package ``prometheus``, binary /usr/bin/prometheus) scrapes
PromEndpointSink; PromQL results must equal enginescope.collectors.quantile on the rows fed, the
generated dashboard's queries must all return data and the generated alerts must fire."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from enginescope.collectors.model import Identity
from enginescope.collectors.quantile import histogram_quantile
from enginescope.exporters.observability_gen import DEFAULT_OUT_DIR
from enginescope.exporters.prom_endpoint import PromEndpointSink
from tests.otlp_data import INTERVAL_S, full_batch
from tests.otlp_receivers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="apt-get install prometheus"),
]
MODEL = "llama-3.1-8b-instruct"  # the llama recipe's served name: its alert rules apply
REPLICAS = [Identity(f"ta-{n}", "sglang", MODEL, "us-east-1", "H100") for n in ("a", "b")]


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        shutil.copy(DEFAULT_OUT_DIR / "prometheus-alerts.yml", tmp / "alerts.yml")
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            f"scrape_configs:\n  - job_name: enginescope\n    honor_labels: true\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait(self, predicate, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if predicate():
                    return
            except (OSError, AssertionError, ValueError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def setup(tmp_path):
    sink = PromEndpointSink(port=0)  # one target serving two replicas: one scrape time for all series
    prom = Prometheus(tmp_path, f"127.0.0.1:{sink.port}")
    yield sink, prom
    prom.stop()
    sink.close()


def test_promql_over_the_endpoint_matches_collectors_quantile(setup):
    sink, prom = setup
    t0 = time.time()
    for identity in REPLICAS:  # zero baseline: the series exist before any increase
        sink.write(full_batch(identity, t0, None))
    prom.wait(lambda: prom.scalar("count_over_time(enginescope_ttft_seconds_count{replica='ta-a'}[1m])") >= 2,
              "baseline scrapes")  # fmt: skip
    rng = random.Random(11)
    fed = [full_batch(identity, t0 + INTERVAL_S * (i + 1), rng, events=("scale_up",) if i == 0 else ())
           for i in range(4) for identity in REPLICAS]  # fmt: skip
    for batch in fed:
        sink.write(batch)
    ttft_rows = [h for b in fed for h in b.histograms if h.signal == "ttft_seconds"]
    bounds = ttft_rows[0].bounds
    summed = [sum(r.counts[i] for r in ttft_rows) for i in range(len(bounds))]
    total = summed[-1]
    prom.wait(lambda: prom.scalar("sum(enginescope_ttft_seconds_count)") == total, "fed rows scraped")
    prom.wait(lambda: prom.scalar("count_over_time(enginescope_ttft_seconds_count{replica='ta-a'}[2s])") >= 1,
              "one more scrape")  # fmt: skip

    for q in (0.5, 0.95, 0.99):
        expr = f"histogram_quantile({q}, sum by (le) (increase(enginescope_ttft_seconds_bucket[1m])))"
        assert prom.scalar(expr) == pytest.approx(histogram_quantile(q, bounds, summed), rel=1e-9)
    mean = "sum(rate(enginescope_ttft_seconds_sum[1m])) / sum(rate(enginescope_ttft_seconds_count[1m]))"
    assert prom.scalar(mean) == pytest.approx(sum(r.sum for r in ttft_rows) / total, rel=1e-9)
    gen = sum(s.value for b in fed for s in b.signals if s.signal == "generation_tokens")
    prompt = sum(s.value for b in fed for s in b.signals if s.signal == "prompt_tokens")
    ratio = (
        "sum(rate(enginescope_generation_tokens_total[1m])) / sum(rate(enginescope_prompt_tokens_total[1m]))"
    )
    assert prom.scalar(ratio) == pytest.approx(gen / prompt, rel=1e-9)
    assert prom.scalar("sum(enginescope_generation_tokens_total)") == gen

    # every query of the generated Grafana dashboard runs and returns data
    dashboard = json.loads((DEFAULT_OUT_DIR / "grafana-dashboard.json").read_text())
    variables = {v["name"]: v.get("query") for v in dashboard["templating"]["list"] if v["type"] == "textbox"}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
        concrete = concrete.replace("$model", ".*").replace("$replica", ".*")
        concrete = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], concrete)
        assert prom.query(concrete), f"no data for dashboard query {expr}"

    # the generated alerts for this recipe evaluate against these names: slow TTFT, throttled GPUs
    def active_alerts() -> set[str]:
        return {
            a["labels"]["alertname"]
            for a in prom.api("alerts")["alerts"]
            if a["labels"]["recipe"] == "llama-3.1-8b-h100"
        }

    prom.wait(lambda: {"TTFTP95AboveSLO", "GpuThrottling"} <= active_alerts(), "alerts pending")
    assert histogram_quantile(0.95, bounds, summed) > 0.5  # why TTFT fires: the recipe's SLO is 0.5 s
