"""Renders a simulated engine's metrics byte-for-byte like SGLang 0.5.23's /metrics.

Content negotiation follows prometheus_client 0.26 as SGLang mounts it: an Accept header naming
``application/openmetrics-text`` gets OpenMetrics, anything else text format 0.0.4. The OpenMetrics
body reproduces prometheus/client_python#1177: without ``escaping=allow-utf-8`` the sample names
are escaped (``sglang_x_total``) while ``# HELP``/``# TYPE`` keep ``sglang:`` and drop ``_total`` for
counters, so a strict parser cannot match samples to families.
"""

from __future__ import annotations

from enginescope.simfleet.metric_registry import Family, HistogramChild, MetricRegistry, float_to_go_string

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"


def wants_openmetrics(accept: str | None) -> bool:
    for media_range in (accept or "").split(","):
        if media_range.split(";")[0].strip() == "application/openmetrics-text":
            return True
    return False


def render(registry: MetricRegistry, accept: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) for a scrape with the given Accept header."""
    if registry.style == "vllm":  # vLLM ignores Accept and always serves text
        from enginescope.simfleet import vllm_engine

        return vllm_engine.CONTENT_TYPE, vllm_engine.render_text(registry).encode()
    if wants_openmetrics(accept):
        return OPENMETRICS_CONTENT_TYPE, render_openmetrics(registry).encode()
    return TEXT_CONTENT_TYPE, render_text(registry).encode()


def _help_text(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _help_openmetrics(text: str) -> str:
    return _help_text(text).replace('"', r"\"")


def _samples(family: Family, sample_name: str, out: list[str]) -> None:
    fmt = float_to_go_string
    for child in family.children.values():
        if isinstance(child, HistogramChild):
            out.append(f"{sample_name}_sum{child.braces} {fmt(child.sum)}\n")
            running = 0.0
            for braces, count in zip(child.bucket_braces, child.counts, strict=True):
                running += count
                out.append(f"{sample_name}_bucket{braces} {fmt(running)}\n")
            out.append(f"{sample_name}_count{child.braces} {fmt(running)}\n")
        else:
            out.append(f"{sample_name}{child.braces} {fmt(child.value)}\n")


def render_text(registry: MetricRegistry) -> str:
    out: list[str] = []
    for family in registry.families():
        spec = family.spec
        out.append(f"# HELP {spec.name} {_help_text(spec.help)}\n# TYPE {spec.name} {spec.kind}\n")
        _samples(family, spec.name, out)
    return "".join(out)


def render_openmetrics(registry: MetricRegistry) -> str:
    out: list[str] = []
    for family in registry.families():
        spec = family.spec
        meta_name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        out.append(f"# HELP {meta_name} {_help_openmetrics(spec.help)}\n# TYPE {meta_name} {spec.kind}\n")
        _samples(family, spec.name.replace(":", "_"), out)
    out.append("# EOF\n")
    return "".join(out)
