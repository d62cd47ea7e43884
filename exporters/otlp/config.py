"""OTLP export settings from the standard OTEL_* variables and the sidecar's ``--otlp-*`` flags.

Flags win over variables; a metrics-specific variable wins over the generic one, as in the
OTel spec. Header values (API keys) are secrets: ``repr``/``str`` and :meth:`OtlpConfig.redact`
never show them, and neither may any log line or error built from this module.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote, urlsplit, urlunsplit

log = logging.getLogger(__name__)

DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
HTTP_METRICS_PATH = "/v1/metrics"
DEFAULT_BACKLOG_BYTES = 16 * 1024 * 1024
# Datadog's direct intake rejects requests over ~500 KB uncompressed; stay under it everywhere.
DEFAULT_MAX_REQUEST_BYTES = 480_000
# A series not scraped for this long leaves the export (a gone pid/rank, a relabelled model).
DEFAULT_SERIES_TTL_S = 300.0
# OTel SDK's default cardinality limit per instrument is 2000; the whole sink gets 10000.
DEFAULT_MAX_SERIES = 10_000
GENAI_OPERATIONS = ("chat", "text_completion", "embeddings", "generate_content")
REDACTED = "***"


class OtlpConfigError(ValueError):
    """A bad OTLP setting; the message names the variable or flag."""


class Protocol(StrEnum):
    GRPC = "grpc"
    HTTP_PROTOBUF = "http/protobuf"


class Temporality(StrEnum):
    CUMULATIVE = "cumulative"
    DELTA = "delta"
    # As in the SDK: histograms are delta, (observed) counters stay cumulative.
    LOWMEMORY = "lowmemory"


class NameStyle(StrEnum):
    SEMCONV = "semconv"  # gen_ai.* / hw.* where a convention exists, enginescope.* otherwise
    NATIVE = "native"  # the engine's own metric names (raw samples + histograms)


@dataclass(frozen=True, repr=False)
class OtlpConfig:
    endpoint: str = ""  # full URL the exporter posts to ("" = OTLP export disabled)
    protocol: Protocol = Protocol.HTTP_PROTOBUF
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"  # none | gzip | deflate
    timeout_s: float = 10.0
    insecure: bool | None = None  # gRPC only; None = from the URL scheme
    temporality: Temporality = Temporality.CUMULATIVE
    interval_s: float = 60.0
    service_name: str = ""
    resource_attributes: tuple[tuple[str, str], ...] = ()
    names: NameStyle = NameStyle.SEMCONV
    backlog_bytes: int = DEFAULT_BACKLOG_BYTES  # memory held by unsent data (serialized, compressed)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # serialized, before compression
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    # gen_ai.operation.name when the engine's labels do not say (required by the conventions)
    genai_operation: str = "chat"
    series_ttl_s: float = DEFAULT_SERIES_TTL_S
    max_series: int = DEFAULT_MAX_SERIES
    _secrets: tuple[str, ...] = field(default=(), compare=False)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)

    @property
    def delta_histograms(self) -> bool:
        return self.temporality in (Temporality.DELTA, Temporality.LOWMEMORY)

    @property
    def delta_counters(self) -> bool:
        return self.temporality is Temporality.DELTA

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be printed: header values and URL passwords."""
        values = {v for _, v in self.headers if v} | set(self._secrets)
        password = urlsplit(self.endpoint).password if self.endpoint else None
        if password:
            values.add(password)
        # Longest first so a secret containing another is replaced whole.
        return tuple(sorted(values, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return text

    def safe_endpoint(self) -> str:
        return redact_url(self.endpoint)

    def __repr__(self) -> str:
        header_names = ",".join(k for k, _ in self.headers)
        return (
            f"OtlpConfig(endpoint={self.safe_endpoint()!r}, protocol={self.protocol.value}, "
            f"headers=[{header_names}]={REDACTED if self.headers else ''}, "
            f"compression={self.compression}, timeout_s={self.timeout_s}, "
            f"temporality={self.temporality.value}, interval_s={self.interval_s}, names={self.names.value}, "
            f"backlog_bytes={self.backlog_bytes}, max_request_bytes={self.max_request_bytes}, "
            f"series_ttl_s={self.series_ttl_s}, max_series={self.max_series})"
        )

    __str__ = __repr__

    @classmethod
    def from_env_and_args(cls, env: Mapping[str, str], args: argparse.Namespace | None = None) -> OtlpConfig:
        """Resolve settings: ``--otlp-*`` flags, then OTEL_* variables, then defaults."""
        flags = vars(args) if args is not None else {}

        def pick(flag: str, *variables: str) -> tuple[str | None, str]:
            value = flags.get(flag)
            if value is not None:
                return str(value), "--" + flag.replace("_", "-")
            for name in variables:
                if env.get(name, "").strip():
                    return env[name].strip(), name
            return None, ""

        protocol = _parse_protocol(*pick("otlp_protocol", _m("PROTOCOL"), _g("PROTOCOL")))
        endpoint = _resolve_endpoint(flags.get("otlp_endpoint"), env, protocol)
        raw_headers, headers_src = pick("otlp_headers", _m("HEADERS"), _g("HEADERS"))
        headers = parse_key_values(raw_headers or "", headers_src)
        compression = _parse_choice(
            *pick("otlp_compression", _m("COMPRESSION"), _g("COMPRESSION")),
            ("none", "gzip", "deflate"),
            "none",
        )
        timeout_s = _parse_timeout(flags.get("otlp_timeout_s"), env)
        insecure = _parse_insecure(flags.get("otlp_insecure"), env)
        temporality = Temporality(
            _parse_choice(
                *pick("otlp_temporality", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
                tuple(t.value for t in Temporality),
                Temporality.CUMULATIVE.value,
            )
        )
        interval_s = _parse_interval(flags.get("otlp_interval_s"), env)
        service_name, _ = pick("otlp_service_name", "OTEL_SERVICE_NAME")
        raw_attrs, attrs_src = pick("otlp_resource_attributes", "OTEL_RESOURCE_ATTRIBUTES")
        names = NameStyle(flags.get("otlp_names") or NameStyle.SEMCONV.value)
        backlog_bytes = _positive_int(
            flags.get("otlp_backlog_bytes"), DEFAULT_BACKLOG_BYTES, "--otlp-backlog-bytes"
        )
        max_request = _positive_int(
            flags.get("otlp_max_request_bytes"), DEFAULT_MAX_REQUEST_BYTES, "--otlp-max-request-bytes"
        )
        ttl_flag = flags.get("otlp_series_ttl_s")
        series_ttl_s = (
            DEFAULT_SERIES_TTL_S if ttl_flag is None else _positive_float(ttl_flag, "--otlp-series-ttl-s")
        )
        max_series = _positive_int(flags.get("otlp_max_series"), DEFAULT_MAX_SERIES, "--otlp-max-series")
        operation = flags.get("otlp_genai_operation") or "chat"
        return cls(
            endpoint=endpoint,
            protocol=protocol,
            headers=headers,
            compression=compression,
            timeout_s=timeout_s,
            insecure=insecure,
            temporality=temporality,
            interval_s=interval_s,
            service_name=service_name or "",
            resource_attributes=parse_key_values(raw_attrs or "", attrs_src),
            names=names,
            backlog_bytes=backlog_bytes,
            max_request_bytes=min(max_request, backlog_bytes),
            genai_operation=operation,
            series_ttl_s=series_ttl_s,
            max_series=max_series,
        )


def _g(suffix: str) -> str:
    return f"OTEL_EXPORTER_OTLP_{suffix}"


def _m(suffix: str) -> str:
    return f"OTEL_EXPORTER_OTLP_METRICS_{suffix}"


def _parse_protocol(value: str | None, source: str) -> Protocol:
    if value is None:
        return Protocol.HTTP_PROTOBUF  # the spec's default
    try:
        return Protocol(value.lower())
    except ValueError:
        raise OtlpConfigError(
            f"{source}={value!r}: expected grpc or http/protobuf (http/json is not supported)"
        ) from None


def _parse_choice(value: str | None, source: str, choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value.lower() not in choices:
        raise OtlpConfigError(f"{source}={value!r}: expected one of {', '.join(choices)}")
    return value.lower()


def _resolve_endpoint(flag: str | None, env: Mapping[str, str], protocol: Protocol) -> str:
    """The flag and the generic variable are base URLs (HTTP appends /v1/metrics); the
    metrics-specific variable is used as-is. Nothing configured means export is off."""
    if flag:
        return _signal_url(flag, protocol)
    specific = env.get(_m("ENDPOINT"), "").strip()
    if specific:
        _check_url(specific, _m("ENDPOINT"))
        return specific
    generic = env.get(_g("ENDPOINT"), "").strip()
    if generic:
        _check_url(generic, _g("ENDPOINT"))
        return _signal_url(generic, protocol)
    return ""


def _signal_url(base: str, protocol: Protocol) -> str:
    _check_url(base, "--otlp-endpoint")
    if protocol is Protocol.GRPC or base.rstrip("/").endswith(HTTP_METRICS_PATH):
        return base
    return base.rstrip("/") + HTTP_METRICS_PATH


def _check_url(url: str, source: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OtlpConfigError(
            f"{source}={redact_url(url)!r}: expected an http:// or https:// URL with a host"
        )


def redact_url(url: str) -> str:
    """Hide the password of ``https://user:pass@host`` URLs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username}:{REDACTED}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_KEY = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~:/-]+$")


def parse_key_values(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """Parse the W3C-baggage-like ``k=v,k2=v2`` list of OTEL_*_HEADERS / OTEL_RESOURCE_ATTRIBUTES.

    Values are percent-decoded (``Basic%20abc`` -> ``Basic abc``). Errors name the source but
    never echo a value, since header values are secrets.
    """
    pairs: dict[str, str] = {}
    for index, item in enumerate(text.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip())
        if not sep or not key or not _KEY.match(key):
            raise OtlpConfigError(f"{source}: entry {index + 1} is not key=value (value not shown)")
        pairs[key] = unquote(value.strip())
    return tuple(pairs.items())


def _parse_timeout(flag: float | None, env: Mapping[str, str]) -> float:
    if flag is not None:
        return _positive_float(flag, "--otlp-timeout-s")
    for name in (_m("TIMEOUT"), _g("TIMEOUT")):
        if env.get(name, "").strip():
            # The spec says milliseconds (the Python SDK alone reads seconds).
            timeout_ms = _positive_float(env[name], name)
            if timeout_ms < 100:
                log.warning("%s=%s is read as milliseconds, as the OTel spec says", name, env[name])
            return timeout_ms / 1000.0
    return 10.0


def _parse_interval(flag: float | None, env: Mapping[str, str]) -> float:
    if flag is not None:
        return _positive_float(flag, "--otlp-interval-s")
    if env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip():
        return _positive_float(env["OTEL_METRIC_EXPORT_INTERVAL"], "OTEL_METRIC_EXPORT_INTERVAL") / 1000.0
    return 60.0


def _parse_insecure(flag: bool | None, env: Mapping[str, str]) -> bool | None:
    if flag is not None:
        return bool(flag)
    for name in (_m("INSECURE"), _g("INSECURE")):
        if env.get(name, "").strip():
            return env[name].strip().lower() == "true"
    return None


def _positive_float(value: object, source: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OtlpConfigError(f"{source}={value!r}: expected a number") from None
    if not number > 0:
        raise OtlpConfigError(f"{source}={value!r}: must be > 0")
    return number


def _positive_int(value: object, default: int, source: str) -> int:
    if value is None:
        return default
    number = _positive_float(value, source)
    return int(number)


def add_otlp_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--otlp-*`` flags of ``enginescope sidecar``; each overrides its OTEL_* variable."""
    group = parser.add_argument_group("OpenTelemetry export (flags override OTEL_* variables)")
    add = group.add_argument
    add("--otlp-endpoint", help="OTLP base URL, as OTEL_EXPORTER_OTLP_ENDPOINT (unset = no OTLP export)")
    add("--otlp-protocol", choices=[p.value for p in Protocol], help="default http/protobuf")
    add(
        "--otlp-headers",
        help="k=v,k2=v2 (e.g. API keys); prefer OTEL_EXPORTER_OTLP_HEADERS: flags show up in `ps`",
    )
    add("--otlp-compression", choices=["none", "gzip", "deflate"])
    add("--otlp-timeout-s", type=float, help="per-export timeout (default 10)")
    add("--otlp-insecure", action="store_const", const=True, help="gRPC without TLS")
    add(
        "--otlp-temporality",
        choices=[t.value for t in Temporality],
        help="cumulative (default; Grafana/Prometheus) or delta (Datadog)",
    )
    add("--otlp-interval-s", type=float, help="export interval (default 60, OTEL_METRIC_EXPORT_INTERVAL)")
    add("--otlp-service-name", help="service.name (default OTEL_SERVICE_NAME, the app, or 'enginescope')")
    add("--otlp-resource-attributes", help="extra resource attributes k=v,... (OTEL_RESOURCE_ATTRIBUTES)")
    add("--otlp-names", choices=[n.value for n in NameStyle], help="semconv (default) or engine-native names")
    add(
        "--otlp-backlog-bytes",
        type=int,
        help=f"max memory held by unsent data: serialized OTLP, compressed if --otlp-compression "
        f"(default {DEFAULT_BACKLOG_BYTES})",
    )
    add(
        "--otlp-series-ttl-s",
        type=float,
        help=f"a series not scraped for this long stops being exported (default {DEFAULT_SERIES_TTL_S:g})",
    )
    add(
        "--otlp-max-series",
        type=int,
        help=f"cap on exported series; more fold into otel.metric.overflow=true (default {DEFAULT_MAX_SERIES})",
    )
    add(
        "--otlp-genai-operation",
        choices=GENAI_OPERATIONS,
        help="gen_ai.operation.name when the engine's labels carry no endpoint (default chat)",
    )
    add(
        "--otlp-max-request-bytes",
        type=int,
        help=f"max request size before compression (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
