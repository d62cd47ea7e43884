"""tests/binaries.py: a test that needs promtool/prometheus skips where they are missing, but
fails under CI (env CI set), so CI cannot pass by silently skipping them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.binaries import require

USERS = (
    "test_alert_rules.py",
    "test_generated_configs.py",
    "test_prom_endpoint.py",
    "test_prometheus_server.py",
)


def test_a_missing_binary_skips_outside_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool"):
        require("promtool")


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_binary_fails_under_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="promtool.*CI"):
        require("promtool")


def test_ci_false_still_skips(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require("prometheus")


def test_a_present_binary_is_returned(monkeypatch, tmp_path):
    tool = tmp_path / "promtool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require("promtool") == str(tool)


@pytest.mark.parametrize("name", USERS)
def test_binary_tests_use_the_helper_not_a_bare_skipif(name):
    text = (Path(__file__).parent / name).read_text()
    assert not re.search(r"skipif\(\s*shutil\.which", text), f"{name}: use tests.binaries.require"
    assert "from tests.binaries import require" in text
