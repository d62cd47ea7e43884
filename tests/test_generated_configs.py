"""deploy/observability/ is up to date, and what it contains is consistent and valid."""

from __future__ import annotations

import json
import random
import re
import subprocess
import urllib.request

from enginescope.cli import main
from enginescope.collectors.model import Identity
from enginescope.exporters.obs_dialect import OTLP, PROM
from enginescope.exporters.obs_rules import recipe_rules
from enginescope.exporters.observability_gen import DEFAULT_OUT_DIR, generate_all, load_recipes, stale_files
from enginescope.exporters.prom_endpoint import PromEndpointSink
from enginescope.views.panels import EXPORT_PANELS, PanelKind
from tests.binaries import require
from tests.otlp_data import full_batch

FILES = {f.name: f.text for f in generate_all(load_recipes())}


def test_checked_in_files_are_not_stale():
    stale = stale_files(generate_all(load_recipes()), DEFAULT_OUT_DIR)
    assert stale == [], f"run `enginescope generate-configs` (stale: {stale})"


def test_check_flag_detects_an_edited_file(tmp_path, capsys):
    assert main(["generate-configs", "--out", str(tmp_path)]) == 0
    assert main(["generate-configs", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "grafana-dashboard.json").write_text("{}")
    capsys.readouterr()
    assert main(["generate-configs", "--out", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    stale_lines = [line for line in out.splitlines() if line.startswith("stale:")]
    assert stale_lines == [
        f"stale: {tmp_path / 'grafana-dashboard.json'} (run `enginescope generate-configs`)"
    ]


def test_dashboard_mirrors_the_panel_definitions():
    for name, dialect in (("grafana-dashboard.json", PROM), ("grafana-dashboard-otlp.json", OTLP)):
        dashboard = json.loads(FILES[name])
        panels = dashboard["panels"]
        assert [p["title"].rsplit(" (", 1)[0] for p in panels] == [p.title for p in EXPORT_PANELS]
        assert all(p["title"].endswith(")") for p in panels)  # every chart states its unit
        units = {p["title"]: p["fieldConfig"]["defaults"].get("unit") for p in panels}
        assert units["TTFT (s)"] == "s" and units["KV cache usage (ratio 0–1)"] == "percentunit"
        assert units["GPU power (W)"] == "watt"
        for panel, spec in zip(panels, EXPORT_PANELS, strict=True):
            exprs = " ".join(t["expr"] for t in panel["targets"])
            if spec.kind is not PanelKind.GPU_DEVICE:
                assert all(dialect.series(s).name in exprs for s in spec.signals), panel["title"]
            assert "$__interval" not in exprs
            if spec.kind == "latency":  # quantiles from summed bucket rates, never averaged percentiles
                assert all(
                    re.fullmatch(r"histogram_quantile\([0-9.]+, sum by \(le\) \(rate\(\w+_bucket\{.*\}\[\$__rate_interval\]\)\)\)", t["expr"])
                    for t in panel["targets"] if not t["expr"].startswith("vector(")
                )  # fmt: skip
                assert len(panel["targets"]) == len(spec.quantiles) + bool(spec.slo_key)  # + the SLO line
        assert "$__interval]" not in json.dumps(dashboard["annotations"])
    kinds = {p.kind for p in EXPORT_PANELS}
    assert {PanelKind.HEATMAP, PanelKind.SLO_ATTAINMENT, PanelKind.GPU_DEVICE} <= kinds
    signals = {s for p in EXPORT_PANELS for s in p.signals}
    wanted = {"tpot_seconds", "queue_time_seconds", "cache_hit_ratio", "requests_finished",
              "requests_aborted", "retractions", "spec_accept_rate"}  # fmt: skip
    assert wanted <= signals


def test_every_dashboard_and_alert_metric_is_served_by_the_endpoint():
    sink = PromEndpointSink(port=0)
    try:
        batch = full_batch(
            Identity("ta-a", "sglang", "m", "r", "H100"), 100.0, random.Random(2), events=("gpu_xid",)
        )
        batch.gpu[0].fields.update({"temperature_c": 60, "gpu_utilization_pct": 90})
        sink.write(batch)
        with urllib.request.urlopen(sink.url, timeout=5) as response:
            served = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", response.read().decode(), re.M))
    finally:
        sink.close()
    dashboard = json.loads(FILES["grafana-dashboard.json"])
    text = json.dumps(dashboard) + FILES["prometheus-alerts.yml"]
    referenced = set(re.findall(r"\b(enginescope_[a-z0-9_]+)", text))
    assert referenced and referenced <= served, referenced - served


def test_alert_thresholds_are_the_recipe_slos():
    text = FILES["prometheus-alerts.yml"]
    for recipe in load_recipes():
        group = text.split(f"- name: enginescope-{recipe.name}\n")[1].split("- name: ")[0]
        model = f'model=\\"{recipe.model.served_name}\\"'
        for alert, value in (("TTFTP95AboveSLO", recipe.slo.ttft_p95_s), ("ITLP95AboveSLO", recipe.slo.itl_p95_s),
                             ("E2EP95AboveSLO", recipe.slo.e2e_p95_s)):  # fmt: skip
            expr = re.search(rf"alert: {alert}\n\s+expr: (.*)\n", group).group(1)
            assert expr.startswith('"histogram_quantile(0.95, sum by (le) (rate(') and model in expr
            assert expr.endswith(f'> {value}"')
        for alert in ("QueueGrowing", "ReplicaFlapping", "GpuThrottling", "GpuXid"):
            assert f"alert: {alert}\n" in group


def test_promtool_accepts_the_rules_and_scrape_config(tmp_path):
    promtool = require("promtool")
    for name in ("prometheus-alerts.yml", "prometheus-scrape.yml"):
        (tmp_path / name).write_text(FILES[name])
    rules = subprocess.run([promtool, "check", "rules", str(tmp_path / "prometheus-alerts.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    n_recipes = len(load_recipes())
    per_recipe = len(recipe_rules(load_recipes()[0], PROM))
    assert f"SUCCESS: {per_recipe * n_recipes} rules found" in rules.stdout
    config = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus-scrape.yml")],
                            capture_output=True, text=True)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def _section(text: str, name: str) -> str:
    return re.search(rf"^{name}:\n((?:  .*\n|\s*\n)*)", text, re.M).group(1)


def test_collector_config_pipelines_use_defined_components():
    """Schema check (no Collector binary with these components installs from PyPI: docs/exports.md)."""
    text = FILES["otel-collector.yaml"]
    defined = {
        section: set(re.findall(r"^  ([a-z_/]+):", _section(text, section), re.M))
        for section in ("extensions", "receivers", "processors", "exporters")
    }
    pipelines = re.findall(r"^    (metrics/\w+):[^\n]*\n((?:      .*\n)+)", text, re.M)
    assert {name for name, _ in pipelines} == {"metrics/grafana", "metrics/datadog"}
    for name, body in pipelines:
        for section in ("receivers", "processors", "exporters"):
            used = re.search(rf"{section}: \[(.*)\]", body).group(1).split(", ")
            assert set(used) <= defined[section], (name, section)
        assert ("cumulativetodelta" in body) == (name == "metrics/datadog")  # Grafana Cloud stays cumulative
        assert "batch" not in re.search(r"processors: \[(.*)\]", body).group(1)  # exporters batch
    service_ext = re.search(r"^  extensions: \[(.*)\]", text, re.M).group(1).split(", ")
    assert (
        set(service_ext)
        == defined["extensions"]
        == {"health_check", "bearertokenauth/sidecars", "basicauth/grafana"}
    )
    assert "authenticator: basicauth/grafana" in text and "${env:DD_API_KEY}" in text
    # the receiver: TLS and bearer-token auth on both protocols
    receiver = _section(text, "receivers")
    assert receiver.count("authenticator: bearertokenauth/sidecars") == 2
    assert receiver.count("cert_file: ${env:ENGINESCOPE_TLS_CERT}") == 2 and receiver.count("key_file:") == 2
    # cumulativetodelta forgets churned series; each exporter batches in its sending queue
    assert re.search(r"cumulativetodelta:\n\s+max_staleness: \d+m", text)
    exporters = _section(text, "exporters")
    assert exporters.count("sending_queue:") == 2 and exporters.count("batch:") == 2
    assert len(re.findall(r"#", text)) >= 20  # every knob line carries a comment or is structural


def test_generate_configs_defaults_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate-configs"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert stale_files(generate_all(load_recipes()), tmp_path) == []


def test_datadog_dashboard_and_monitors_come_from_the_panels_and_the_otlp_names():
    from enginescope.exporters.otlp import names as otlp

    sent = {m.name for m in otlp.SIGNAL_NAMES.values() if m is not None}
    sent |= {m.name for m in otlp.GPU_COLUMNS.values()} | {otlp.TEMPERATURE.name, otlp.EVENTS.name}
    sent |= {otlp.GPU_REASON.name, otlp.GPU_IO.name, otlp.GPU_MEMORY_UTILIZATION.name, otlp.GPU_STATUS.name}
    dashboard = json.loads(FILES["datadog-dashboard.json"])
    widgets = dashboard["widgets"]
    assert len(widgets) == len(EXPORT_PANELS)
    for widget, panel in zip(widgets, EXPORT_PANELS, strict=True):
        definition = widget["definition"]
        if panel.kind is PanelKind.SLO_ATTAINMENT:  # distributions keep no buckets
            assert definition["type"] == "note" and panel.title in definition["content"]
            continue
        assert definition["title"] == f"{panel.title} ({panel.unit})"
        for request in definition["requests"]:
            metric = re.match(r"^(?:\w+):([a-z0-9_.]+)\{", request["q"]).group(1)
            assert metric in sent, (panel.title, request["q"])
            assert "$model" in request["q"] and "$replica" in request["q"]
        if panel.kind is PanelKind.LATENCY:
            assert [r["q"].split(":")[0] for r in definition["requests"]] == ["p50", "p95", "p99"]
    monitors = json.loads(FILES["datadog-monitors.json"])
    for recipe in load_recipes():
        mine = {m["name"].split("] ", 1)[1]: m for m in monitors if m["name"].startswith(f"[{recipe.name}]")}
        ttft = mine["TTFT p95 above SLO"]
        assert ttft["query"].startswith("percentile(last_5m):p95:gen_ai.server.time_to_first_token{")
        assert ttft["query"].endswith(f"> {recipe.slo.ttft_p95_s}")
        assert ttft["options"]["thresholds"]["critical"] == recipe.slo.ttft_p95_s
        assert f"enginescope.model:{recipe.model.served_name}" in ttft["query"]
        assert {"Queue growing", "Replica flapping", "GPU XID"} <= set(mine)
