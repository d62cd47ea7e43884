"""Prometheus alert rules per recipe and data path; thresholds are each recipe's ``[slo]``.

Rule choices (each has a ``promtool test rules`` case in tests/rules/):
- ``ReplicaFlapping`` counts engine restarts the sidecar saw and replica-id churn (a Modal
  container that restarts comes back under a new replica id), never ``engine_up`` flips: two
  scrape timeouts are not a flap. Churn = replica ids new in 30 min minus the net growth of the
  replica count (a scale-up adds ids too), so scale-up and scale-down never page.
- ``QueueGrowing`` uses ``deriv()`` in requests per minute: 3/min sustained is a real backlog.
- ``GpuXid`` also fires for a series whose first sample is already 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from enginescope.collectors.signals import SLOS
from enginescope.exporters.obs_dialect import Dialect
from enginescope.exporters.obs_promql import new_or_increased, per_replica, quantile_expr
from enginescope.recipes.schema import Recipe


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str


def recipe_rules(recipe: Recipe, dialect: Dialect) -> list[Rule]:
    model = dialect.model_is(recipe.model.served_name)
    rep, mod = dialect.replica, dialect.model
    rules = []
    for slo in SLOS:
        threshold = getattr(recipe.slo, slo.key)
        name = dialect.series(slo.signal).name
        rules.append(Rule(
            f"{slo.label.upper()}P95AboveSLO",
            f"{quantile_expr(slo.quantile, name, model, '5m')} > {threshold}",
            "5m", "page",
            f"{slo.title} over 5m is above the SLO of {threshold} s (interpolated in the engine's buckets)",
        ))  # fmt: skip
    queue = dialect.series("queue_depth").select(model)
    up = dialect.series("engine_up").select(model)
    restarts = dialect.events("engine_restart", model)
    xid = dialect.events("gpu_xid", model)
    throttled = per_replica(dialect.series("gpu_throttled"), dialect, model)
    new_ids = f"count by ({mod}) (last_over_time({up}[30m]) unless last_over_time({up}[30m] offset 30m))"
    growth = f"count by ({mod}) ({up}) - (count by ({mod}) ({up} offset 30m) or count by ({mod}) ({up}) * 0)"
    rules += [
        Rule("QueueGrowing", f"deriv({queue}[10m]) * 60 > 1 and {queue} > 5", "10m", "warn",
             f"queue depth on {{{{ $labels.{rep} }}}} grows by more than 1 request/min for 10 min"),
        Rule("ReplicaFlapping",
             f"increase({restarts}[30m]) >= 3 or ({new_ids} - clamp_min({growth}, 0)) >= 3",
             "5m", "page",
             f"{{{{ $labels.{mod} }}}}: 3 or more engine restarts or replaced replicas in 30 minutes"
             f"{{{{ if $labels.{rep} }}}} ({{{{ $labels.{rep} }}}}){{{{ end }}}}"),
        Rule("GpuThrottling", f"avg_over_time(({throttled})[10m:1m]) > 0.5", "10m", "warn",
             f"GPUs of {{{{ $labels.{rep} }}}} are held back by power/thermal/HW slowdown"),
        Rule("GpuXid", new_or_increased(xid, "10m"), "0m", "page", f"XID error on {{{{ $labels.{rep} }}}}"),
    ]  # fmt: skip
    return rules


def alert_rules(recipes: list[Recipe], dialect: Dialect, header: str) -> str:
    lines = [
        f"# {header}",
        f"# Data path: {dialect.title}. Load with rule_files: in prometheus.yml (or the ruler).",
        "# Thresholds are each recipe's [slo].",
        "groups:",
    ]
    for recipe in recipes:
        lines += [f"  - name: enginescope-{recipe.name}", "    rules:"]
        for rule in recipe_rules(recipe, dialect):
            lines += [
                f"      - alert: {rule.name}",
                f"        expr: {_yaml_str(rule.expr)}",
                f"        for: {rule.for_}",
                "        labels:",
                f"          severity: {rule.severity}",
                f"          recipe: {recipe.name}",
                "        annotations:",
                f"          summary: {_yaml_str(rule.summary)}",
            ]
    return "\n".join(lines) + "\n"


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar
