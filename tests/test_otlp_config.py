"""OTEL_* variables and --otlp-* flags -> OtlpConfig; secrets never printed."""

from __future__ import annotations

import argparse
import logging

import pytest

from enginescope.exporters.otlp.config import (
    NameStyle,
    OtlpConfig,
    OtlpConfigError,
    Protocol,
    Temporality,
    add_otlp_arguments,
)

SECRET = "glc_eyJvIjoiMTIzNCIsIm4iOiJzZWNyZXQifQ=="


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_otlp_arguments(parser)
    return parser.parse_args(argv)


def test_disabled_without_endpoint():
    assert not OtlpConfig.from_env_and_args({}, parse([])).enabled


def test_standard_variables():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Basic%20{SECRET},X-Scope=a",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",  # milliseconds, per the spec
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,team=ml%20infra",
        "OTEL_SERVICE_NAME": "chat-llm",
    }
    config = OtlpConfig.from_env_and_args(env, parse([]))
    assert config.endpoint == "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/metrics"
    assert config.protocol is Protocol.HTTP_PROTOBUF
    assert dict(config.headers) == {"Authorization": f"Basic {SECRET}", "X-Scope": "a"}
    assert config.compression == "gzip" and config.timeout_s == 2.5 and config.interval_s == 15.0
    assert config.temporality is Temporality.DELTA and config.delta_counters and config.delta_histograms
    assert dict(config.resource_attributes) == {"deployment.environment.name": "prod", "team": "ml infra"}
    assert config.service_name == "chat-llm"


def test_metrics_specific_variables_win_and_are_used_as_is():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://specific:9999/custom",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2",
    }
    config = OtlpConfig.from_env_and_args(env, parse([]))
    assert config.endpoint == "http://specific:9999/custom" and config.headers == (("b", "2"),)


def test_flags_win_over_variables():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    args = parse([
        "--otlp-endpoint", "http://collector:4317", "--otlp-protocol", "grpc", "--otlp-temporality", "delta",
        "--otlp-interval-s", "5", "--otlp-timeout-s", "3", "--otlp-names", "native", "--otlp-backlog-bytes", "1000",
        "--otlp-headers", "dd-api-key=abc",
    ])  # fmt: skip
    config = OtlpConfig.from_env_and_args(env, args)
    assert config.endpoint == "http://collector:4317"  # gRPC: no /v1/metrics path
    assert config.protocol is Protocol.GRPC and config.temporality is Temporality.DELTA
    assert config.interval_s == 5 and config.timeout_s == 3 and config.names is NameStyle.NATIVE
    assert (
        config.backlog_bytes == 1000 and config.max_request_bytes == 1000
    )  # a request never exceeds the backlog
    assert config.headers == (("dd-api-key", "abc"),)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "http/json",
        ),
        ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes"}, "TEMPORALITY_PREFERENCE"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(OtlpConfigError, match=needle):
        OtlpConfig.from_env_and_args(env, parse([]))


def test_headers_never_printed(caplog):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://user:{SECRET}x@otlp.example.com",
        "OTEL_EXPORTER_OTLP_HEADERS": f"dd-api-key={SECRET}",
    }
    config = OtlpConfig.from_env_and_args(env, parse([]))
    for text in (repr(config), str(config), f"{config}", config.safe_endpoint()):
        assert SECRET not in text
    assert "dd-api-key" in repr(config)  # the header names are fine to show
    assert config.redact(f"failed with header {SECRET}") == "failed with header ***"
    # a malformed header list is reported without echoing the value
    with pytest.raises(OtlpConfigError) as err:
        OtlpConfig.from_env_and_args({"OTEL_EXPORTER_OTLP_HEADERS": f"Bearer {SECRET}"}, parse([]))
    assert SECRET not in str(err.value) and "OTEL_EXPORTER_OTLP_HEADERS" in str(err.value)


def test_timeout_below_100ms_warns_about_milliseconds(caplog):
    with caplog.at_level(logging.WARNING):
        config = OtlpConfig.from_env_and_args({"OTEL_EXPORTER_OTLP_TIMEOUT": "10"}, parse([]))
    assert config.timeout_s == 0.01 and "milliseconds" in caplog.text


def test_sink_factory_is_off_without_endpoint_and_on_with_one():
    from enginescope.exporters.otlp import otlp_sink_from_args, otlp_sink_from_env

    assert otlp_sink_from_env({}) is None
    sink = otlp_sink_from_args(
        parse(["--otlp-endpoint", "http://127.0.0.1:4318", "--otlp-timeout-s", "0.2"]), {}
    )
    try:
        assert sink is not None and sink.config.endpoint == "http://127.0.0.1:4318/v1/metrics"
    finally:
        sink.close()
