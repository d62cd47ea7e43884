"""Recipe validation: typed access to TOML tables and one checker per recipe section.

Every error names the file, the dotted field and what is allowed, e.g. ``recipes/x.toml:
autoscaling.max_containers: must be >= min_containers (got 0 < 1)``; an unknown field is an
error too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any

from enginescope.collectors.signals import SLOS
from enginescope.recipes.specs import (
    AutoscalingSpec,
    EngineSpec,
    GpuSpec,
    ModelSpec,
    ParallelSpec,
    Recipe,
    RecipeError,
    ServerSpec,
    SidecarSpec,
    SloSpec,
    SpeculativeSpec,
)

SCHEMA_VERSION = 1
ENGINES = ("sglang", "vllm")  # vllm: simulated and scraped; deploy/ launches SGLang only
SPEC_METHODS = ("NONE", "EAGLE", "EAGLE3", "DFLASH")
# Modal's documented GPU types (the client does not validate names; Modal does at deploy time).
GPU_TYPES = (
    "T4",
    "L4",
    "A10",
    "L40S",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "RTX-PRO-6000",
    "H100",
    "H100!",
    "H200",
    "B200",
    "B200+",
    "B300",
)
MAX_GPUS = 8
MAX_EXIT_GRACE_S = 3600  # Modal Servers cap exit_grace_period here


_REQUIRED = object()  # default marking a field the recipe must set


class _Table:
    """Typed access to one TOML table; every error names file and dotted field."""

    def __init__(self, path: Path, prefix: str, data: Any) -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(data, dict):
            raise self.error("", f"must be a table (got {type(data).__name__})")
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> RecipeError:
        field = f"{self.prefix}.{key}" if self.prefix and key else (self.prefix or key)
        return RecipeError(f"{self.path}: {field}: {message}")

    def sub(self, key: str, *, required: bool = True) -> _Table:
        if key not in self.data and not required:
            self.used.add(key)
            return _Table(self.path, key, {})
        if key not in self.data:
            raise self.error(key, "missing table")
        self.used.add(key)
        return _Table(self.path, f"{self.prefix}.{key}" if self.prefix else key, self.data[key])

    def raw(self, key: str, default: Any) -> Any:
        """The value as TOML gave it (marks the key used); ``_REQUIRED`` makes a missing key an error."""
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "required field is missing")
        return default

    def str(self, key: str, default: Any = None, choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string (got {value!r})")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def int(self, key: str, default: Any = None, minimum: int | None = None) -> Any:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer (got {value!r})")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum} (got {value})")
        return value

    def float(self, key: str, default: Any = None, positive: bool = True) -> Any:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number (got {value!r})")
        if positive and value <= 0:
            raise self.error(key, f"must be > 0 (got {value})")
        return float(value)

    def bool(self, key: str, default: Any = None) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (got {value!r})")
        return value

    def str_list(self, key: str, default: Any = None) -> tuple[str, ...]:
        value = self.raw(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be a list of non-empty strings (got {value!r})")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"unknown field; known fields here: {known}")


def parse_recipe(raw: dict[str, Any], path: Path) -> Recipe:
    """Validate an already-parsed TOML document; ``path`` is named in every error."""
    top = _Table(path, "", raw)
    version = top.int("schema_version", _REQUIRED)
    if version != SCHEMA_VERSION:
        raise top.error("schema_version", f"must be {SCHEMA_VERSION} (got {version})")
    gpu = _gpu(top.sub("gpu"))
    parallel = _parallel(top.sub("parallel", required=False), gpu)
    simulation = top.raw("simulation", {})
    if not isinstance(simulation, dict):
        raise top.error("simulation", f"must be a table (got {type(simulation).__name__})")
    recipe = Recipe(
        path=path,
        name=top.str("name", path.stem),
        description=top.str("description", ""),
        schema_version=version,
        model=_model(top.sub("model")),
        engine=_engine(top.sub("engine")),
        gpu=gpu,
        parallel=parallel,
        speculative=_speculative(top.sub("speculative", required=False)),
        autoscaling=_autoscaling(top.sub("autoscaling", required=False)),
        server=_server(top.sub("server", required=False)),
        regions=top.str_list("regions", []),
        slo=_slo(top.sub("slo")),
        sidecar=_sidecar(top.sub("sidecar", required=False)),
        simulation=MappingProxyType(dict(simulation)),
    )
    top.done()
    return recipe


_COMMIT = re.compile(r"[0-9a-f]{40}")


class UnpinnedRevisionWarning(UserWarning):
    """A recipe's model.revision is a branch or tag (e.g. "main"), not a commit."""


def _model(t: _Table) -> ModelSpec:
    hf_id = t.str("hf_id", _REQUIRED)
    if "/" not in hf_id:
        raise t.error("hf_id", f"must be a Hugging Face id like 'org/name' (got {hf_id!r})")
    revision = t.str("revision", "main")
    if not _COMMIT.fullmatch(revision):  # a branch or tag moves: the fleet would serve mixed weights
        warnings.warn(f"{t.error('revision', '').args[0]}{revision!r} is not a commit hash; pin the "
                      "model's commit for production", UnpinnedRevisionWarning, stacklevel=2)  # fmt: skip
    spec = ModelSpec(
        hf_id=hf_id,
        revision=revision,
        served_name=t.str("served_name", hf_id),
        cache_volume=t.str("cache_volume", "huggingface-cache"),
        hf_secret=t.str("hf_secret", None),
    )
    t.done()
    return spec


def _engine(t: _Table) -> EngineSpec:
    env = t.raw("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise t.error("env", f"must be a table of strings (got {env!r})")
    spec = EngineSpec(
        name=t.str("name", _REQUIRED, choices=ENGINES),
        version=t.str("version", _REQUIRED),
        image=t.str("image", _REQUIRED),
        extra_args=t.str_list("extra_args", []),
        env=MappingProxyType(dict(env)),
    )
    if spec.version not in spec.image.rpartition(":")[2]:
        raise t.error("image", f"tag must contain engine.version {spec.version!r} (got {spec.image!r})")
    owned = {"--model-path", "--port", "--host", "--tp", "--dp", "--enable-metrics", "--served-model-name"}
    clash = sorted(owned.intersection(a.split("=")[0] for a in spec.extra_args))
    if clash:
        raise t.error("extra_args", f"{clash[0]} is set from other recipe fields; remove it here")
    t.done()
    return spec


def _gpu(t: _Table) -> GpuSpec:
    spec = GpuSpec(type=t.str("type", _REQUIRED, choices=GPU_TYPES), count=t.int("count", 1, minimum=1))
    if spec.count > MAX_GPUS:
        raise t.error("count", f"must be <= {MAX_GPUS} (Modal's per-container limit; got {spec.count})")
    t.done()
    return spec


def _parallel(t: _Table, gpu: GpuSpec) -> ParallelSpec:
    spec = ParallelSpec(
        tp=t.int("tp", gpu.count, minimum=1),
        dp=t.int("dp", 1, minimum=1),
        ep=t.int("ep", 1, minimum=1),
        dp_attention=t.bool("dp_attention", False),
    )
    if spec.dp_attention:
        # DP attention splits attention inside the TP group: TP spans every GPU.
        if spec.tp != gpu.count or spec.tp % spec.dp:
            raise t.error(
                "dp",
                f"with dp_attention, tp must equal gpu.count and be divisible by dp "
                f"(got tp={spec.tp}, dp={spec.dp}, gpu.count={gpu.count})",
            )
    elif spec.tp * spec.dp != gpu.count:
        raise t.error("tp", f"tp * dp must equal gpu.count (got {spec.tp} * {spec.dp} != {gpu.count})")
    if spec.ep > spec.tp * spec.dp:
        raise t.error("ep", f"must be <= tp * dp (got {spec.ep} > {spec.tp * spec.dp})")
    t.done()
    return spec


def _speculative(t: _Table) -> SpeculativeSpec:
    method = t.str("method", "NONE", choices=SPEC_METHODS)
    spec = SpeculativeSpec(
        method=method,
        draft_model=t.str("draft_model", None),
        num_steps=t.int("num_steps", 3, minimum=1),
        num_draft_tokens=t.int("num_draft_tokens", 4, minimum=1),
        topk=t.int("topk", 1, minimum=1),
    )
    if method in ("EAGLE3", "DFLASH") and spec.draft_model is None:
        raise t.error(
            "draft_model",
            f"is required for method {method} (EAGLE without a draft uses the model's MTP layers)",
        )
    if method == "NONE" and spec.draft_model is not None:
        raise t.error("draft_model", "must be absent when method is NONE")
    bound = spec.num_steps * spec.topk + 1
    if spec.num_draft_tokens > bound:
        raise t.error(
            "num_draft_tokens", f"must be <= num_steps * topk + 1 (got {spec.num_draft_tokens} > {bound})"
        )
    t.done()
    return spec


def _autoscaling(t: _Table) -> AutoscalingSpec:
    spec = AutoscalingSpec(
        min_containers=t.int("min_containers", 0, minimum=0),
        max_containers=t.int("max_containers", 1, minimum=1),
        buffer_containers=t.int("buffer_containers", 0, minimum=0),
        target_concurrency=t.int("target_concurrency", 32, minimum=1),
        max_concurrency=t.int("max_concurrency", 64, minimum=1),
        scaledown_window_s=t.int("scaledown_window_s", 300, minimum=2),
        scaleup_window_s=t.int("scaleup_window_s", 0, minimum=0),
    )
    if spec.max_containers < spec.min_containers:
        raise t.error(
            "max_containers", f"must be >= min_containers (got {spec.max_containers} < {spec.min_containers})"
        )
    if spec.max_concurrency < spec.target_concurrency:
        raise t.error(
            "max_concurrency",
            f"must be >= target_concurrency (got {spec.max_concurrency} < {spec.target_concurrency})",
        )
    t.done()
    return spec


def _server(t: _Table) -> ServerSpec:
    spec = ServerSpec(
        port=t.int("port", 8000, minimum=1),
        startup_timeout_s=t.int("startup_timeout_s", 1200, minimum=1),
        exit_grace_period_s=t.int("exit_grace_period_s", 25, minimum=0),
        health_timeout_s=t.int("health_timeout_s", 1100, minimum=1),
    )
    if spec.port > 65535:
        raise t.error("port", f"must be <= 65535 (got {spec.port})")
    if spec.exit_grace_period_s > MAX_EXIT_GRACE_S:
        raise t.error(
            "exit_grace_period_s", f"must be <= {MAX_EXIT_GRACE_S} (got {spec.exit_grace_period_s})"
        )
    if spec.health_timeout_s > spec.startup_timeout_s:
        raise t.error(
            "health_timeout_s",
            f"must be <= startup_timeout_s (got {spec.health_timeout_s} > {spec.startup_timeout_s})",
        )
    t.done()
    return spec


def _slo(t: _Table) -> SloSpec:
    spec = SloSpec(**{slo.key: t.float(slo.key, _REQUIRED) for slo in SLOS})
    if spec.e2e_p95_s < spec.ttft_p95_s:
        raise t.error("e2e_p95_s", f"must be >= ttft_p95_s (got {spec.e2e_p95_s} < {spec.ttft_p95_s})")
    t.done()
    return spec


def _sidecar(t: _Table) -> SidecarSpec:
    spec = SidecarSpec(
        interval_s=t.float("interval_s", 1.0),
        store_volume=t.str("store_volume", "enginescope-store"),
        store_path=t.str("store_path", "/store"),
        commit_interval_s=t.float("commit_interval_s", 30.0),
        otlp_secret=t.str("otlp_secret", None),
        request_log=t.bool("request_log", True),
    )
    if not spec.store_path.startswith("/"):
        raise t.error(
            "store_path", f"must be an absolute path inside the container (got {spec.store_path!r})"
        )
    if spec.commit_interval_s < spec.interval_s:
        raise t.error(
            "commit_interval_s", f"must be >= interval_s (got {spec.commit_interval_s} < {spec.interval_s})"
        )
    t.done()
    return spec
