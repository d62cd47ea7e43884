"""The validated form of a recipe file: one frozen dataclass per TOML table.

Built only by :func:`enginescope.recipes.validate.parse_recipe` (every field checked there); consumers
import them from :mod:`enginescope.recipes.schema`, which re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginescope.collectors.signals import SLO_SIGNALS


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ModelSpec:
    hf_id: str
    revision: str
    served_name: str
    cache_volume: str
    hf_secret: str | None


@dataclass(frozen=True)
class EngineSpec:
    name: str
    version: str
    image: str
    extra_args: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class GpuSpec:
    type: str
    count: int

    @property
    def modal_gpu(self) -> str:
        """Modal's ``gpu=`` string, e.g. ``"H100:8"``."""
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


@dataclass(frozen=True)
class ParallelSpec:
    tp: int
    dp: int
    ep: int
    dp_attention: bool


@dataclass(frozen=True)
class SpeculativeSpec:
    method: str
    draft_model: str | None
    num_steps: int
    num_draft_tokens: int
    topk: int

    @property
    def enabled(self) -> bool:
        return self.method != "NONE"


@dataclass(frozen=True)
class AutoscalingSpec:
    min_containers: int
    max_containers: int
    buffer_containers: int
    target_concurrency: int
    max_concurrency: int
    scaledown_window_s: int
    scaleup_window_s: int

    def simfleet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``enginescope.simfleet.autoscaler.AutoscalerConfig``."""
        return {
            "min_containers": self.min_containers,
            "max_containers": self.max_containers,
            "buffer_containers": self.buffer_containers,
            "scaledown_window_s": float(self.scaledown_window_s),
            "scaleup_window_s": float(self.scaleup_window_s),
            "target_inputs": self.target_concurrency,
            "max_inputs": self.max_concurrency,
        }


@dataclass(frozen=True)
class ServerSpec:
    port: int
    startup_timeout_s: int
    exit_grace_period_s: int
    health_timeout_s: int


@dataclass(frozen=True)
class SloSpec:
    """Field names are the registry's SLO keys (``enginescope.collectors.signals.SLOS``)."""

    ttft_p95_s: float
    itl_p95_s: float
    e2e_p95_s: float

    def limit(self, key: str) -> float:
        """The bound for an SLO key, in seconds."""
        if key not in SLO_SIGNALS:
            raise KeyError(f"unknown SLO key {key!r}; known: {', '.join(SLO_SIGNALS)}")
        return float(getattr(self, key))


@dataclass(frozen=True)
class SidecarSpec:
    interval_s: float
    store_volume: str
    store_path: str
    commit_interval_s: float
    otlp_secret: str | None
    request_log: bool


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    description: str
    schema_version: int
    model: ModelSpec
    engine: EngineSpec
    gpu: GpuSpec
    parallel: ParallelSpec
    speculative: SpeculativeSpec
    autoscaling: AutoscalingSpec
    server: ServerSpec
    regions: tuple[str, ...]
    slo: SloSpec
    sidecar: SidecarSpec
    simulation: Mapping[str, Any]

    def simulation_mapping(self) -> dict[str, Any]:
        """The ``[simulation]`` table with topology defaults taken from the recipe itself.

        The simulated engine should report the model name, GPU and parallelism the real one
        would; explicit keys in ``[simulation]`` still win.
        """
        derived: dict[str, Any] = {
            "model_name": self.model.served_name,
            "gpu_type": self.gpu.type.rstrip("!+"),
            "tp_size": self.parallel.tp,
            "dp_size": self.parallel.dp,
            "ep_size": self.parallel.ep,
        }
        if self.speculative.enabled:
            derived["spec_num_steps"] = self.speculative.num_steps
            derived["spec_num_draft_tokens"] = self.speculative.num_draft_tokens
        else:
            derived["spec_accept_length"] = 1.0
        return {**derived, **self.simulation}
