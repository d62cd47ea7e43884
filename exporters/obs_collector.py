"""OpenTelemetry Collector (contrib) config: authenticated TLS OTLP in, Grafana Cloud and Datadog out.

Choices:
- The OTLP receiver is reached by sidecars over the internet (Modal containers), so it takes
  TLS (``tls.cert_file``/``key_file``) and a bearer token (``bearertokenauth`` extension); the
  sidecar sends it as ``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <token>``.
- ``cumulativetodelta`` keeps state per series; ``max_staleness`` drops the state of series not
  seen for that long, so churned containers (a new replica id per restart) do not grow it forever.
- Batching is done by each exporter (``sending_queue.batch``), not by the ``batch`` processor,
  which the Collector docs now call legacy: the queue batches what it holds, so a backend
  outage does not lose a processor's in-flight batch.
"""

from __future__ import annotations

COLLECTOR_COMPONENTS = {
    "extensions": ("health_check", "bearertokenauth/sidecars", "basicauth/grafana"),
    "receivers": ("otlp",),
    "processors": ("memory_limiter", "cumulativetodelta"),
    "exporters": ("otlphttp/grafana", "datadog"),
}


def collector_config(header: str) -> str:
    return f"""# {header}
# OpenTelemetry Collector (contrib distribution) receiving the sidecars' OTLP and forwarding
# to Grafana Cloud and Datadog. Sidecars: OTEL_EXPORTER_OTLP_ENDPOINT=https://<collector>:4318
# (HTTP/protobuf, the default) or --otlp-protocol grpc with :4317, and
# OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <ENGINESCOPE_OTLP_TOKEN>". Keep the default
# cumulative temporality: this Collector converts to delta for Datadog only.
# Secrets come from the environment: ENGINESCOPE_OTLP_TOKEN, ENGINESCOPE_TLS_CERT,
# ENGINESCOPE_TLS_KEY (file paths), GRAFANA_CLOUD_OTLP_ENDPOINT, GRAFANA_CLOUD_INSTANCE_ID,
# GRAFANA_CLOUD_API_KEY, DD_API_KEY, DD_SITE. Drop a pipeline you do not use.

extensions:
  health_check:
    endpoint: 0.0.0.0:13133                       # liveness for the container orchestrator
  bearertokenauth/sidecars:
    token: ${{env:ENGINESCOPE_OTLP_TOKEN}}          # what every sidecar must send as Bearer
  basicauth/grafana:
    client_auth:
      username: ${{env:GRAFANA_CLOUD_INSTANCE_ID}}   # the stack's numeric instance ID
      password: ${{env:GRAFANA_CLOUD_API_KEY}}       # access-policy token with metrics:write

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317                    # sidecars with --otlp-protocol grpc
        tls:
          cert_file: ${{env:ENGINESCOPE_TLS_CERT}}  # sidecars reach this over the internet
          key_file: ${{env:ENGINESCOPE_TLS_KEY}}
        auth:
          authenticator: bearertokenauth/sidecars # unauthenticated requests get 401/Unauthenticated
      http:
        endpoint: 0.0.0.0:4318                    # sidecars with http/protobuf (the default)
        tls:
          cert_file: ${{env:ENGINESCOPE_TLS_CERT}}
          key_file: ${{env:ENGINESCOPE_TLS_KEY}}
        auth:
          authenticator: bearertokenauth/sidecars

processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80                          # refuse data before the container is OOM-killed
    spike_limit_percentage: 20
  cumulativetodelta:
    max_staleness: 15m                            # forget a series' state 15 min after its last
                                                  # point: restarted containers are new series.
                                                  # Stateful: run one Collector per set of sidecars
                                                  # (no load balancing across Collector replicas).

exporters:
  otlphttp/grafana:
    endpoint: ${{env:GRAFANA_CLOUD_OTLP_ENDPOINT}}  # https://otlp-gateway-<zone>.grafana.net/otlp, no /v1/metrics
    auth:
      authenticator: basicauth/grafana
    compression: gzip
    retry_on_failure:
      enabled: true
      max_elapsed_time: 300s                      # then drop; the sidecar keeps its own backlog too
    sending_queue:
      enabled: true
      queue_size: 100000                          # data points held while Grafana Cloud is unreachable
      sizer: items
      batch:                                      # exporter-side batching (not the batch processor)
        flush_timeout: 10s
        min_size: 8192                            # points per request to the backend
        max_size: 16384
  datadog:
    api:
      key: ${{env:DD_API_KEY}}
      site: ${{env:DD_SITE}}                        # datadoghq.com, datadoghq.eu, us5.datadoghq.com, ...
    metrics:
      resource_attributes_as_tags: true           # replica, model and GPU type become tags
      histograms:
        mode: distributions                       # engine buckets -> Datadog distributions (percentiles)
        send_aggregation_metrics: true            # also .count/.sum/.min/.max
      sums:
        cumulative_monotonic_mode: to_delta       # safety net if cumulativetodelta is removed
    sending_queue:
      enabled: true
      queue_size: 100000
      sizer: items
      batch:
        flush_timeout: 10s
        min_size: 8192
        max_size: 16384

service:
  extensions: [health_check, bearertokenauth/sidecars, basicauth/grafana]
  pipelines:
    metrics/grafana:                              # Grafana Cloud wants cumulative: no conversion
      receivers: [otlp]
      processors: [memory_limiter]
      exporters: [otlphttp/grafana]
    metrics/datadog:
      receivers: [otlp]
      processors: [memory_limiter, cumulativetodelta]
      exporters: [datadog]
"""
