"""The OTLP-path dashboard and rules resolve against what a real OTLP receiver got from the
sidecar's OTLP sink, after the documented OTLP->Prometheus translation (otlptranslator rules,
``service.instance.id`` -> ``instance``, promoted resource attributes as labels)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from decimal import Decimal

import pytest

from enginescope.collectors.model import Identity
from enginescope.exporters.obs_dialect import (
    PROMOTED_RESOURCE_ATTRIBUTES,
    otlp_label_name,
    otlp_metric_name,
)
from enginescope.exporters.observability_gen import generate_all, load_recipes
from enginescope.exporters.otlp.config import OtlpConfig, Protocol
from enginescope.exporters.otlp.sink import OtlpSink
from tests.otlp_data import INTERVAL_S, full_batch
from tests.otlp_receivers import HttpReceiver

FILES = {f.name: f.text for f in generate_all(load_recipes())}
MODEL = "llama-3.1-8b-instruct"  # the llama recipe's served name: its SLO variables are the defaults
SGLANG_LIKE_BOUNDS = (0.01, 0.03, 0.1, 0.4, 1.0, 10.0, math.inf)
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@pytest.mark.parametrize(
    ("name", "unit", "kind", "monotonic", "expected"),
    [  # examples of the otlptranslator documentation and the OTel compatibility spec
        ("http.server.request.duration", "s", "histogram", False, "http_server_request_duration_seconds"),
        ("requests.count", "1", "sum", True, "requests_count_total"),
        ("memory.usage", "By", "gauge", False, "memory_usage_bytes"),
        ("system.cpu.utilization", "1", "gauge", False, "system_cpu_utilization_ratio"),
        ("enginescope.generation.throughput", "{token}/s", "gauge", False, "enginescope_generation_throughput_per_second"),
        ("enginescope.tokens", "{token}", "sum", True, "enginescope_tokens_total"),
        ("hw.temperature", "Cel", "gauge", False, "hw_temperature_celsius"),
    ],
)  # fmt: skip
def test_translation_follows_the_documented_rules(name, unit, kind, monotonic, expected):
    assert otlp_metric_name(name, unit, kind, monotonic) == expected


def _le(bound: float) -> str:
    """``le`` as OTLP ingestion writes it (Go's shortest 'f' formatting)."""
    return "+Inf" if bound == float("inf") else format(Decimal(repr(bound)).normalize(), "f")


def translate(points) -> dict[str, list[dict[str, str]]]:
    """Prometheus series (name -> label sets) from received OTLP points."""
    series: dict[str, list[dict[str, str]]] = {}
    for p in points:
        labels = {otlp_label_name(k): v for k, v in p.attributes.items()}
        labels["instance"] = p.resource["service.instance.id"]
        labels["job"] = p.resource["service.name"]
        for attr in PROMOTED_RESOURCE_ATTRIBUTES:
            if attr in p.resource:
                labels[otlp_label_name(attr)] = p.resource[attr]
        name = otlp_metric_name(p.name, p.unit, p.kind, p.monotonic)
        if p.kind == "histogram":
            for bound in (*p.explicit_bounds, float("inf")):
                series.setdefault(name + "_bucket", []).append({**labels, "le": _le(bound)})
            series.setdefault(name + "_count", []).append(labels)
            series.setdefault(name + "_sum", []).append(labels)
        else:
            series.setdefault(name, []).append(labels)
    return series


def _matches(labels: dict[str, str], matchers: str) -> bool:
    for label, op, value in MATCHER.findall(matchers):
        value = value.replace("\\\\", "\\")
        got = labels.get(label, "")
        ok = {"=": got == value, "!=": got != value, "=~": re.fullmatch(value, got) is not None,
              "!~": re.fullmatch(value, got) is None}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _concrete(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$replica", ".*")
    return re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], expr)


@pytest.fixture(scope="module")
def received():
    receiver = HttpReceiver().start()
    config = OtlpConfig(endpoint=receiver.endpoint + "/v1/metrics", protocol=Protocol.HTTP_PROTOBUF,
                        timeout_s=2.0, interval_s=3600.0)  # fmt: skip
    identity = Identity("ta-a", "sglang", MODEL, "us-east-1", "H100", app="llm-serve")
    t0_s = 1_780_000_000.0
    # the reader's clock follows the data, so the series are live (not past their TTL) at export
    sink = OtlpSink(config, identity, clock=lambda: t0_s + 3 * INTERVAL_S)
    rng = random.Random(3)
    try:
        for i in range(3):
            batch = full_batch(identity, t0_s + i * INTERVAL_S, rng,
                               events=("gpu_xid", "engine_restart", "container_started", "scale_up"))  # fmt: skip
            # bounds as SGLang's include them (the recipe's SLOs sit on or between them)
            batch.histograms = [dataclasses.replace(h, bounds=SGLANG_LIKE_BOUNDS) for h in batch.histograms]
            batch.gpu[0].fields.update({"temperature_c": 61, "gpu_utilization_pct": 80, "sm_clock_mhz": 1980,
                                        "fb_used_bytes": 1e9, "clock_event_reasons": 0x4})  # fmt: skip
            sink.write(batch)
        sink.flush()
        assert receiver.wait_for(lambda points: bool(points), 10.0)
        yield translate(receiver.points())
    finally:
        sink.close()
        receiver.stop()


def _unresolved(exprs: list[str], series: dict[str, list[dict[str, str]]]) -> list[str]:
    missing = []
    for expr in exprs:
        selectors = SELECTOR.findall(expr)
        assert selectors, expr
        for name, matchers in selectors:
            if not any(_matches(labels, matchers) for labels in series.get(name, [])):
                missing.append(f"{name}{{{matchers}}} in {expr}")
    return missing


def test_every_otlp_dashboard_query_resolves(received):
    dashboard = json.loads(FILES["grafana-dashboard-otlp.json"])
    variables = {v["name"]: v.get("query") for v in dashboard["templating"]["list"] if v["type"] == "textbox"}
    exprs = [
        t["expr"] for p in dashboard["panels"] for t in p["targets"] if not t["expr"].startswith("vector(")
    ]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    assert _unresolved([_concrete(e, variables) for e in exprs], received) == []
    # the template variables' label exists on the series they read
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            name, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["definition"]).groups()
            assert any(label in labels for labels in received[name]), var["definition"]


def test_every_otlp_rule_query_resolves(received):
    group = FILES["prometheus-alerts-otlp.yml"].split("- name: enginescope-llama-3.1-8b-h100\n")[1]
    group = group.split("  - name: ")[0]
    exprs = [json.loads(e) for e in re.findall(r"^\s+expr: (\".*\")$", group, re.M)]
    assert len(exprs) >= 7
    assert _unresolved(exprs, received) == []


def test_the_prometheus_dashboard_queries_do_not_resolve_on_the_otlp_path(received):
    """Why the OTLP path needs its own dashboard: the endpoint's names and labels are not there."""
    dashboard = json.loads(FILES["grafana-dashboard.json"])
    exprs = [
        t["expr"] for p in dashboard["panels"] for t in p["targets"] if not t["expr"].startswith("vector(")
    ]
    variables = {v["name"]: v.get("query") for v in dashboard["templating"]["list"] if v["type"] == "textbox"}
    assert len(_unresolved([_concrete(e, variables) for e in exprs], received)) > len(exprs) // 2
