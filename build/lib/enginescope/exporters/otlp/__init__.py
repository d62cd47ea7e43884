"""OpenTelemetry (OTLP) export: settings, Batch -> OTLP mapping, and the async sink."""

from enginescope.exporters.otlp.config import OtlpConfig, OtlpConfigError, add_otlp_arguments
from enginescope.exporters.otlp.mapping import OtlpMapper, build_resource
from enginescope.exporters.otlp.sink import OtlpSink, OtlpStats, otlp_sink_from_args, otlp_sink_from_env

__all__ = [
    "OtlpConfig",
    "OtlpConfigError",
    "OtlpMapper",
    "OtlpSink",
    "OtlpStats",
    "add_otlp_arguments",
    "build_resource",
    "otlp_sink_from_args",
    "otlp_sink_from_env",
]
