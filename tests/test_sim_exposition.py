"""The simulated /metrics body against SGLang 0.5.23's real exposition (tests/fixtures/sim/)."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enginescope.collectors.exposition import parse_exposition
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    render,
    render_openmetrics,
    render_text,
)
from enginescope.simfleet.profile import DEFAULT, PROFILES

FIXTURES = Path(__file__).parent / "fixtures" / "sim"
REAL_TEXT = (FIXTURES / "sglang-0.5.23-metrics.txt").read_text()
REAL_OM = (FIXTURES / "sglang-0.5.23-metrics.openmetrics.txt").read_text()
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def loaded_engine(profile=DEFAULT) -> SimEngine:
    engine = SimEngine(profile, seed=5)
    engine.step(profile.startup_total_s)
    m = engine.metrics
    for endpoint, method in (
        ("/health", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"),
    ):
        m.http_started(endpoint, method)
        m.http_finished(endpoint, method, 200)
    for i in range(60):
        engine.submit(800 + 37 * i, max_new_tokens=300, stream=i % 3 != 0, structured=i == 7)
        engine.step(0.1)
    engine.abort(engine.submit(100, max_new_tokens=50).rid)
    engine.step(8.0)
    m.http_started("/metrics", "GET")  # the scrape being rendered counts itself
    return engine


@pytest.fixture(scope="module")
def engine() -> SimEngine:
    return loaded_engine()


def shape(text: str) -> dict[str, tuple[str, set[tuple[str, ...]], tuple[str, ...]]]:
    """family -> (type, label-name sets, bucket bounds as written)."""
    out = {}
    for family in text_string_to_metric_families(text):
        names = {tuple(k for k in s.labels if k != "le") for s in family.samples}
        les = tuple(dict.fromkeys(s.labels["le"] for s in family.samples if s.name.endswith("_bucket")))
        out[family.name] = (family.type, names, les)
    return out


def test_families_types_labels_and_buckets_match_real_sglang(engine: SimEngine) -> None:
    real, sim = shape(REAL_TEXT), shape(render_text(engine.registry))
    missing = set(real) - set(sim)
    assert not missing, f"families of the real exposition the simulator lacks: {sorted(missing)}"
    for name, (kind, labels, les) in real.items():
        assert sim[name][0] == kind, name
        assert sim[name][1] == labels, name
        assert sim[name][2] == les, name
    assert not any(n.startswith(("process_", "python_")) for n in sim)
    assert "_created" not in render_text(engine.registry)


def test_line_layout_matches_multiprocess_quirks(engine: SimEngine) -> None:
    body = render_text(engine.registry)
    assert re.search(r"^sglang:fwd_occupancy\{[^}]*\} NaN$", body, re.M)
    assert re.search(r'^sglang:http_requests_active\{endpoint="/metrics",method="GET"\} 1\.0$', body, re.M)
    assert re.search(r'^sglang:num_retracted_reqs\{[^}]*pid="\d+"[^}]*\} 0\.0$', body, re.M)
    assert "pid=" not in "".join(line for line in body.splitlines() if "num_retracted_reqs" not in line
                                 and "num_paused_reqs" not in line)  # fmt: skip
    for line in body.splitlines():
        if line.startswith("sglang:") and "{" in line:
            names = re.findall(r'(\w+)="', line[line.index("{") :])
            assert names == sorted(names), line
    # each histogram child: _sum, ascending buckets ending +Inf, then _count equal to the +Inf bucket
    ttft = [line for line in body.splitlines() if line.startswith("sglang:time_to_first_token_seconds")]
    assert ttft[0].split("{")[0].endswith("_sum") and ttft[20].split("{")[0].endswith("_count")
    assert 'le="+Inf"' in ttft[19] and ttft[19].split()[-1] == ttft[20].split()[-1]
    # same family order as the real endpoint for the families both have
    order = lambda text: [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]  # noqa: E731
    sim_order = order(body)
    shared = [name for name in order(REAL_TEXT) if name in sim_order]
    assert shared == [name for name in sim_order if name in shared]


def test_large_values_use_go_float_format() -> None:
    engine = loaded_engine()
    engine.registry.set("sglang:num_used_tokens", engine.metrics.groups[0][0].base, 2597317)
    body = render_text(engine.registry)
    assert re.search(r"^sglang:num_used_tokens\{.*\} 2\.597317e\+06$", body, re.M)
    assert 'le="1.1e+06"' in body


def to_openmetrics_like_sglang(text: str) -> str:
    """The transformation SGLang's buggy OpenMetrics output applies, learnt from the fixture pair."""
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("# HELP ", "# TYPE ")):
            type_line = line if line.startswith("# TYPE") else lines[i + 1]
            _, tag, name, rest = line.split(" ", 3)
            if type_line.endswith(" counter"):
                name = name.removesuffix("_total")
            out.append(f"# {tag} {name} {rest}")
        else:
            name, sep, rest = line.partition("{") if "{" in line.split(" ")[0] else line.partition(" ")
            out.append(name.replace(":", "_") + sep + rest)
    return "\n".join(out) + "\n# EOF\n"


def test_openmetrics_body_has_the_1177_shape_of_the_fixture(engine: SimEngine) -> None:
    expected = to_openmetrics_like_sglang(REAL_TEXT).splitlines()
    real_om = REAL_OM.splitlines()
    # the transformation reproduces the real OpenMetrics body (the /metrics counter moved by one scrape)
    changed = [ln for ln in difflib.unified_diff(expected, real_om, lineterm="", n=0) if ln[:1] in "+-"]
    assert len(changed) == 5 and all('endpoint="/metrics"' in ln for ln in changed[2:]), changed
    assert render_openmetrics(engine.registry) == to_openmetrics_like_sglang(render_text(engine.registry))
    content_type, body = render(engine.registry, PROMETHEUS_ACCEPT)
    assert content_type == OPENMETRICS_CONTENT_TYPE
    assert (
        "# TYPE sglang:prompt_tokens counter" in body.decode()
        and "\nsglang_prompt_tokens_total{" in body.decode()
    )
    assert body.endswith(b"# EOF\n")
    for accept in (None, "*/*", "text/plain;version=0.0.4"):
        assert render(engine.registry, accept)[0] == TEXT_CONTENT_TYPE


def values(result) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for f in result.families for s in f.samples}


def test_sidecar_parser_reads_the_same_values(engine: SimEngine) -> None:
    text = render_text(engine.registry)
    expected = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            expected[(s.name, tuple(sorted(s.labels.items())))] = s.value
    parsed_text = parse_exposition(text, TEXT_CONTENT_TYPE, strict=True)
    parsed_om = parse_exposition(render_openmetrics(engine.registry), OPENMETRICS_CONTENT_TYPE, strict=True)
    for parsed in (values(parsed_text), values(parsed_om)):
        assert parsed.keys() == expected.keys()
        for key, value in expected.items():
            assert parsed[key] == value or (math.isnan(value) and math.isnan(parsed[key])), key


def test_tensor_parallel_profile_has_per_rank_series() -> None:
    profile = PROFILES["llama-70b-4xh100"]
    engine = loaded_engine(profile)
    families = {f.name: f for f in text_string_to_metric_families(render_text(engine.registry))}

    def ranks(family: str) -> set[str]:
        return {s.labels["tp_rank"] for s in families[family].samples}

    assert ranks("sglang:queue_time_seconds") == {"0", "1", "2", "3"}
    assert ranks("sglang:max_total_num_tokens") == {"0", "1", "2", "3"}
    assert ranks("sglang:num_running_reqs") == {"0"}  # only the stats-logging rank writes gauges
    assert ranks("sglang:realtime_tokens") == {"0"}
    pids = {s.labels["pid"] for s in families["sglang:num_retracted_reqs"].samples}
    assert len(pids) == 4
