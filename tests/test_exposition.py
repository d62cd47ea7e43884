"""Exposition parser: formats, quirks, malformed input, cache correctness, prometheus_client parity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics_theirs
from prometheus_client.parser import text_string_to_metric_families as parse_text_theirs

from enginescope.collectors.exposition import ExpositionError, ExpositionParser, parse_exposition, render_text

FIXTURES = Path(__file__).parent / "fixtures"
SGLANG = FIXTURES / "sglang/0.5.23-single-gpu"


def flat(result) -> dict:
    """(sample name, labels) -> repr(value): NaN-safe equality."""
    return {(s.name, s.labels): repr(s.value) for f in result.families for s in f.samples}


def theirs(families) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): repr(float(s.value)) for f in families for s in f.samples
    }


def family(result, name):
    return next(f for f in result.families if f.name == name)


# -- formats ------------------------------------------------------------------------------


def test_label_escapes_and_special_values():
    text = (
        '# TYPE m gauge\nm{a="back\\\\slash",b="q\\"uote",c="new\\nline",d="} # {x}"} NaN\n'
        'm{a="2"} +Inf\nm{a="3"} -Inf\nm{a="4"} 2.597317e+06\n'
    )
    result = parse_exposition(text, strict=True)
    samples = family(result, "m").samples
    assert samples[0].labels == (("a", "back\\slash"), ("b", 'q"uote'), ("c", "new\nline"), ("d", "} # {x}"))
    assert math.isnan(samples[0].value)
    assert [s.value for s in samples[1:]] == [math.inf, -math.inf, 2597317.0]


def test_timestamps_are_ms_in_text_and_seconds_in_openmetrics():
    text_result = parse_exposition("# TYPE g gauge\ng 1 1700000000123\n", strict=True)
    assert family(text_result, "g").samples[0].timestamp_s == pytest.approx(1700000000.123)
    om = parse_exposition("# TYPE g gauge\ng 1 1700000000.5\n# EOF\n", strict=True)
    assert om.openmetrics and family(om, "g").samples[0].timestamp_s == 1700000000.5


def test_histogram_summary_and_untyped_grouping():
    text = (
        "# TYPE h histogram\n"
        'h_sum{a="x"} 3\nh_bucket{a="x",le="1"} 1\nh_bucket{a="x",le="+Inf"} 2\nh_count{a="x"} 2\n'
        "# TYPE s summary\n"
        's{quantile="0.5"} 0.2\ns_sum 4\ns_count 9\n'
        "loose_metric 7\n"
    )
    result = parse_exposition(text, strict=True)
    assert [(f.name, f.type) for f in result.families] == [
        ("h", "histogram"),
        ("s", "summary"),
        ("loose_metric", "untyped"),
    ]
    hist = family(result, "h")
    assert [s.ref.role for s in hist.samples] == ["sum", "bucket", "bucket", "count"]
    assert [s.ref.bound for s in hist.samples if s.ref.role == "bucket"] == [1.0, math.inf]
    assert {s.ref.series_labels for s in hist.samples} == {(("a", "x"),)}
    quantile = family(result, "s").samples[0]
    assert quantile.ref.role == "quantile" and quantile.ref.bound == 0.5 and quantile.ref.series_labels == ()


def test_counter_names_with_and_without_total_agree():
    text_004 = '# HELP c_total Things.\n# TYPE c_total counter\nc_total{x="1"} 5\n'
    openmetrics = '# HELP c Things.\n# TYPE c counter\nc_total{x="1"} 5\nc_created{x="1"} 1.7e9\n# EOF\n'
    a, b = parse_exposition(text_004, strict=True), parse_exposition(openmetrics, strict=True)
    assert [(f.name, f.type, f.help) for f in a.families] == [("c", "counter", "Things.")]
    assert [(f.name, f.type, f.help) for f in b.families] == [("c", "counter", "Things.")]
    assert family(a, "c").samples[0].name == family(b, "c").samples[0].name == "c_total"
    assert [s.ref.role for s in family(b, "c").samples] == ["total", "created"]


def test_sglang_multiprocess_quirks_stay_gauges():
    result = parse_exposition((SGLANG / "metrics.txt").read_text(), strict=True)
    retracted = family(result, "sglang:num_retracted_reqs").samples
    assert ("pid", "31121") in retracted[0].labels and retracted[0].value == 0.0
    routing = family(result, "sglang:routing_key_running_req_count")
    assert routing.type == "gauge" and len(routing.samples) == 11
    assert all(s.ref.role == "value" and s.ref.bound is None for s in routing.samples)
    assert routing.samples[-1].labels[1:3] == (("gt", "200"), ("le", "+Inf"))
    assert math.isnan(family(result, "sglang:fwd_occupancy").samples[0].value)


# -- real fixtures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "sglang/0.5.23-single-gpu/metrics.txt",
        "sglang/docs-sample.txt",
        "vllm/0.33.0-plain/metrics.txt",
        "vllm/docs-sample.txt",
    ],
)
def test_fixtures_match_prometheus_client(path):
    text = (FIXTURES / path).read_text()
    result = parse_exposition(text)
    assert result.errors == []
    assert flat(result) == theirs(parse_text_theirs(text))


def test_sglang_malformed_openmetrics_maps_back_to_families():
    plain = parse_exposition((SGLANG / "metrics.txt").read_text(), "text/plain; version=0.0.4")
    om_text = (SGLANG / "metrics.openmetrics.txt").read_text()
    om = parse_exposition(om_text, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.errors == [] and om.openmetrics
    assert [(f.name, f.type, f.help) for f in om.families] == [
        (f.name, f.type, f.help) for f in plain.families
    ]
    assert not any(f.type == "untyped" for f in om.families)
    # The OpenMetrics scrape came second: only the /metrics request counters moved in between.
    moved = {k for k in flat(plain).keys() ^ flat(om).keys()} | {
        k for k in flat(plain).keys() & flat(om).keys() if flat(plain)[k] != flat(om)[k]
    }
    assert moved and all(("endpoint", "/metrics") in labels for _, labels in moved)


# -- malformed input ----------------------------------------------------------------------

MALFORMED = [
    ('g{a="1} 3\n', "unterminated label value"),
    ('g{a="1",a="2"} 3\n', "duplicate label"),
    ('g{a="x\\t"} 3\n', "invalid escape"),
    ('g{1a="x"} 3\n', "invalid label name"),
    ('g{a="x" b="y"} 3\n', "expected ','"),
    ("g 3 4 5\n", "unexpected text after the timestamp"),
    ("g abc\n", "invalid value"),
    ("g\n", "missing value"),
    ("g 1 notatime\n", "invalid timestamp"),
    ("9g 1\n", "no metric name at the start"),
    ("g{a='x'} 1\n", "expected '=\"'"),
]


@pytest.mark.parametrize(("bad_line", "reason"), MALFORMED)
def test_malformed_line_is_reported_and_the_rest_survives(bad_line, reason):
    text = "# TYPE ok gauge\nok 1\n# TYPE g gauge\n" + bad_line + 'g{a="fine"} 2\n'
    result = parse_exposition(text)
    assert len(result.errors) == 1
    error = result.errors[0]
    assert isinstance(error, ExpositionError)
    assert error.line_no == 4 and error.line == bad_line.rstrip("\n") and reason in error.reason
    assert f"line 4: {reason}" in str(error)
    assert flat(result)[("ok", ())] == "1.0" and flat(result)[("g", (("a", "fine"),))] == "2.0"
    with pytest.raises(ExpositionError, match="line 4"):
        parse_exposition(text, strict=True)


@pytest.mark.parametrize(
    ("text", "line_no", "reason"),
    [
        ("# TYPE g gauge\n# TYPE g counter\ng 1\n", 2, "second # TYPE"),
        ("# TYPE g sometype\ng 1\n", 1, "unknown metric type"),
        ("# TYPE g gauge\ng 1\n# EOF\ng 2\n", 4, "content after '# EOF'"),
        ("# TYPE h histogram\nh 1\n", 2, "not valid for histogram"),
        ('# TYPE h histogram\nh_bucket{x="1"} 1\n', 2, "no 'le' label"),
        ('# TYPE h histogram\nh_bucket{le="big"} 1\n', 2, "invalid le label"),
    ],
)
def test_malformed_structure(text, line_no, reason):
    errors = parse_exposition(text).errors
    assert [(e.line_no, reason in e.reason) for e in errors] == [(line_no, True)]


def test_bad_line_in_histogram_drops_only_that_family():
    text = (
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} x\nh_count 2\nh_sum 1\n'
        "# TYPE g gauge\ng 5\n"
    )
    result = parse_exposition(text)
    assert [f.name for f in result.families] == ["g"]
    assert result.errors[0].line_no == 3 and "histogram family 'h' dropped" in result.errors[0].reason


def test_openmetrics_without_eof_is_reported_but_kept():
    result = parse_exposition("# TYPE g gauge\ng 1\n", "application/openmetrics-text")
    assert flat(result) == {("g", ()): "1.0"}
    assert "does not end with '# EOF'" in result.errors[0].reason


# -- cache / layout correctness -------------------------------------------------------------


def test_warm_parser_equals_cold_parser_as_series_come_and_go():
    scrapes = [
        '# TYPE a counter\na_total{x="1"} 1\n# TYPE b gauge\nb 2\n',
        '# TYPE a counter\na_total{x="1"} 3\n# TYPE b gauge\nb 4\n',  # same layout: replayed
        '# TYPE a counter\na_total{x="1"} 5\na_total{x="2"} 1\n# TYPE b gauge\nb 4\n',  # appears
        '# TYPE b gauge\nb 5\na_total{x="1"} 6\n',  # family declaration gone: now untyped
        '# TYPE b gauge\nb 5\na_total{x="1"} 6 1700000000000\n',  # timestamp
        '# TYPE b counter\nb_total 9\n# TYPE a gauge\na_total{x="1"} 7\n',  # types swap
        '# TYPE b counter\nb_total 10\n# TYPE a gauge\na_total{x="1"} oops\n',  # bad value
    ]
    warm = ExpositionParser()
    for text in scrapes:
        cold = ExpositionParser().parse(text)
        got = warm.parse(text)
        assert [(f.name, f.type) for f in got.families] == [(f.name, f.type) for f in cold.families]
        assert [f.samples for f in got.families] == [f.samples for f in cold.families]
        assert [str(e) for e in got.errors] == [str(e) for e in cold.errors]


def test_round_trip_through_render_text():
    first = parse_exposition((SGLANG / "metrics.txt").read_text(), strict=True)
    again = parse_exposition(render_text(first.families), strict=True)
    assert flat(again) == flat(first)
    assert [(f.name, f.type, f.help) for f in again.families] == [
        (f.name, f.type, f.help) for f in first.families
    ]


# -- property: anything prometheus_client renders parses to the same values ---------------------

label_values = st.text(alphabet=st.sampled_from('ab \\"\n{},=#}é\t'), max_size=6)
metric_values = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@st.composite
def registries(draw):
    registry = CollectorRegistry()
    for i, kind in enumerate(draw(st.lists(st.sampled_from("cghs"), min_size=1, max_size=4))):
        name = f"m{i}_{draw(st.sampled_from(['x', 'sglang:y', 'z_seconds']))}"
        labelnames = draw(st.sampled_from([(), ("a",), ("a", "le_ish")]))
        make = {"c": Counter, "g": Gauge, "h": Histogram, "s": Summary}[kind]
        metric = make(name, "help \\ with\nnewline", labelnames, registry=registry)
        for values in draw(st.lists(st.tuples(*[label_values] * len(labelnames)), min_size=1, max_size=3)):
            child = metric.labels(*values) if labelnames else metric
            for value in draw(st.lists(metric_values, min_size=1, max_size=3)):
                if kind == "c":
                    child.inc(abs(value))
                elif kind == "g":
                    child.set(value)
                else:  # OpenMetrics forbids negative _sum
                    child.observe(abs(value))
    return registry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_prometheus_client_renderings_parse_to_the_same_values(registry):
    text = generate_latest(registry).decode()
    ours_text = parse_exposition(text, "text/plain; version=0.0.4", strict=True)
    assert flat(ours_text) == theirs(parse_text_theirs(text))
    om_text = generate_openmetrics(registry).decode()
    ours_om = parse_exposition(om_text, "application/openmetrics-text", strict=True)
    assert flat(ours_om) == flat(ours_text)  # incl. the ':'-names OpenMetrics mangles (#1177)
    if ":" not in om_text:
        assert flat(ours_om) == theirs(parse_openmetrics_theirs(om_text))
