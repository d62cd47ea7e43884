"""The generated alert rules pass Debian's ``promtool check rules`` and the ``promtool test rules``
cases in tests/rules/, one file per data path (SLOs, a queue growing 3/min, flapping vs scrape
timeouts and Modal churn, an XID counter that first appears at 1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from enginescope.exporters.obs_dialect import DIALECTS
from enginescope.exporters.obs_rules import recipe_rules
from enginescope.exporters.observability_gen import CHECKED_IN_DIR, generate_all, load_recipes, stale_files
from tests.binaries import require

RULES_TESTS = Path(__file__).parent / "rules"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_checked_in_rules_are_current():
    # promtool test rules reads the checked-in file: it must be what the generator writes
    assert not [n for n in stale_files(generate_all(load_recipes()), CHECKED_IN_DIR) if n.endswith(".yml")]


@pytest.mark.parametrize("name", ["prometheus-alerts.yml", "prometheus-alerts-otlp.yml"])
def test_promtool_check_rules(name):
    result = _promtool("check", "rules", str(CHECKED_IN_DIR / name))
    assert result.returncode == 0, result.stdout + result.stderr
    per_recipe = len(recipe_rules(load_recipes()[0], DIALECTS[0]))
    assert f"SUCCESS: {per_recipe * len(load_recipes())} rules found" in result.stdout


RULE_TESTS = {  # promtool test rules file -> the generated rules it tests
    "alerts_test.yml": "prometheus-alerts.yml",
    "alerts_otlp_test.yml": "prometheus-alerts-otlp.yml",
}


@pytest.mark.parametrize("test_file", sorted(RULE_TESTS))
def test_promtool_test_rules_cover_every_alert(test_file):
    text = (RULES_TESTS / test_file).read_text()
    assert f"  - ../../deploy/observability/{RULE_TESTS[test_file]}\n" in text
    alerts = {rule.name for rule in recipe_rules(load_recipes()[0], DIALECTS[0])}
    assert {a for a in alerts if f"alertname: {a}\n" not in text} == set()
    result = _promtool("test", "rules", str(RULES_TESTS / test_file))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
