"""A real Prometheus (Debian package ``prometheus``, binary /usr/bin/prometheus) scrapes
PromEndpointSink; PromQL results must equal enginescope.collectors.quantile on the rows fed, the
generated dashboard's queries must all return data and the generated alerts must fire."""

from __future__ import annotations

import dataclasses
import json
import math
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
from tests.binaries import require
from tests.otlp_data import INTERVAL_S, full_batch
from tests.otlp_receivers import free_port

pytestmark = pytest.mark.slow
MODEL = "llama-3.1-8b-instruct"  # the llama recipe's served name: its alert rules apply
SGLANG_LIKE_BOUNDS = (0.01, 0.03, 0.1, 0.4, 1.0, 10.0, math.inf)
REPLICAS = [Identity(f"ta-{n}", "sglang", MODEL, "us-east-1", "H100") for n in ("a", "b")]


@pytest.fixture(autouse=True)
def _prometheus_binary() -> None:
    require("prometheus")  # skipped where missing, failed under CI (tests/binaries.py)


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
            [require("prometheus"), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
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


def _realistic(batch):
    """SGLang-like bucket bounds (the recipe's SLOs sit on or between them) and a full GPU row."""
    batch.histograms = [dataclasses.replace(h, bounds=SGLANG_LIKE_BOUNDS) for h in batch.histograms]
    batch.gpu[0].fields.update({"temperature_c": 61, "gpu_utilization_pct": 80, "sm_clock_mhz": 1980})
    return batch


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
        sink.write(_realistic(full_batch(identity, t0, None)))
    prom.wait(lambda: prom.scalar("count_over_time(enginescope_ttft_seconds_count{replica='ta-a'}[1m])") >= 2,
              "baseline scrapes")  # fmt: skip
    rng = random.Random(11)
    fed = [full_batch(identity, t0 + INTERVAL_S * (i + 1), rng, events=("scale_up",) if i == 0 else ())
           for i in range(4) for identity in REPLICAS]  # fmt: skip
    for batch in fed:
        _realistic(batch)
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
        concrete = expr.replace("$__rate_interval", "1m")
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
    # SLO attainment: the share of TTFTs within the largest bound <= 0.5 s (0.4 s here)
    attainment = next(p for p in dashboard["panels"] if p["title"].startswith("TTFT SLO attainment"))
    expr = attainment["targets"][0]["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
    expr = expr.replace("$replica", ".*")
    expected = summed[bounds.index(0.4)] / total
    assert prom.scalar(expr) == pytest.approx(expected, rel=1e-9)


# --- engine dashboards and staleness through the endpoint (issue 11) ----------------------------

SGLANG_QUERIES = Path(__file__).parent / "fixtures" / "sglang" / "published-dashboard-queries.txt"


def _bump_histogram(text: str, family: str, added: dict[float, int], added_sum_s: float) -> str:
    """Add observations to every series of one histogram family of an exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith(family + "_"):
            head, value = line.rsplit(" ", 1)
            if head.startswith(family + "_bucket"):
                le = float(re.search(r'le="([^"]+)"', head).group(1))
                value = str(float(value) + sum(n for bound, n in added.items() if bound <= le))
            elif head.startswith(family + "_count"):
                value = str(float(value) + sum(added.values()))
            elif head.startswith(family + "_sum"):
                value = str(float(value) + added_sum_s)
            line = f"{head} {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_sglang_published_dashboard_queries_all_return_data_through_the_sidecar(tmp_path):
    from enginescope.sidecar import Sidecar, SidecarConfig
    from tests.exposition_server import ExpositionServer
    from tests.test_sidecar_e2e import FIXTURE

    queries = [q for q in SGLANG_QUERIES.read_text().splitlines() if q and not q.startswith("#")]
    endpoint = PromEndpointSink(port=0)
    text = FIXTURE.read_text()
    with ExpositionServer(text) as server:
        sidecar = Sidecar(
            SidecarConfig(engine_url=server.url, store_dir=tmp_path / "s", extra_sinks=[endpoint])
        )
        prom = Prometheus(tmp_path, f"127.0.0.1:{endpoint.port}")
        try:
            for step in range(12):  # the engine keeps serving requests while Prometheus scrapes
                for family in ("sglang:time_to_first_token_seconds", "sglang:e2e_request_latency_seconds"):
                    text = _bump_histogram(text, family, {0.4: 2, 2.0: 1}, added_sum_s=2.5)
                server.body = text
                sidecar.tick()
                time.sleep(0.5)
                if step == 0:
                    prom.wait(lambda: prom.query("sglang:num_queue_reqs"), "first scrape")
            model = prom.api("label/model_name/values")[0]
            for query in queries:
                expr = query.replace("$__rate_interval", "1m").replace("$model_name", model)
                assert prom.query(expr), f"SGLang dashboard query returned no data: {query}"
        finally:
            prom.stop()
            sidecar.stop()


def _has(prom: Prometheus, expr: str) -> bool:
    try:
        return bool(prom.query(expr))
    except OSError:  # not listening yet
        return False


def test_no_frozen_or_duplicate_series_after_the_ttl(tmp_path):
    from enginescope.collectors.model import Batch, SignalRow

    sink = PromEndpointSink(port=0, ttl_s=2.0)
    prom = Prometheus(tmp_path, f"127.0.0.1:{sink.port}")
    late = Identity("late", "sglang", "", "us-east-1", "H100")  # started before --model was known
    churn = Identity("churn", "sglang", MODEL, "us-east-1", "H100")
    down = Identity("down", "sglang", MODEL, "us-east-1", "H100")

    def tick(phase: int) -> None:
        now = time.time()
        late_id = late if phase == 0 else dataclasses.replace(late, model=MODEL)
        sink.write(_realistic(full_batch(late_id, now, None)))
        ranks = ("0", "1") if phase == 0 else ("1",)  # rank 0 goes away
        sink.write(
            Batch(churn, signals=[SignalRow(now, "queue_depth", 3.0, 1.0, (("rank", r),)) for r in ranks])
        )
        if phase == 0:
            sink.write(_realistic(full_batch(down, now, None)))
        else:  # the engine stops answering: only engine_up = 0 and the GPUs still report
            sink.write(Batch(down, signals=[SignalRow(now, "engine_up", 0.0, 1.0)]))

    try:
        deadline = time.monotonic() + 40  # Prometheus takes a few seconds to start scraping
        while not _has(prom, 'enginescope_queue_depth{replica="churn", rank="0"}'):
            assert time.monotonic() < deadline, "phase 0 never scraped"
            tick(0)
            time.sleep(0.5)
        for _ in range(3):
            tick(0)
            time.sleep(0.5)
        assert prom.query('enginescope_engine_up{replica="late", model=""}')
        for _ in range(10):  # past the TTL and a few scrapes
            tick(1)
            time.sleep(0.5)
        assert prom.query('enginescope_queue_depth{replica="churn", rank="0"}') == []  # gone
        assert len(prom.query('enginescope_queue_depth{replica="churn"}')) == 1
        assert prom.query('{replica="late", model=""}') == []  # no frozen copy under model=""
        assert prom.scalar('count(enginescope_engine_up{replica="late"})') == 1  # no duplicate
        assert prom.query('enginescope_ttft_seconds_count{replica="down"}') == []  # engine down
        assert prom.query('enginescope_queue_depth{replica="down"}') == []
        assert prom.scalar('enginescope_engine_up{replica="down"}') == 0
        assert prom.scalar(f'sum(enginescope_engine_up{{model="{MODEL}"}})') == 1  # "replicas up" is true
    finally:
        prom.stop()
        sink.close()
