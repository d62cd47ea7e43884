"""Recipe files: one TOML per deployable configuration, validated on load.

A recipe says which model runs on which engine image and GPUs, how Modal scales it, what the
SLOs are, how the sidecar writes the store, and which simulator profile stands in for it
offline. ``recipes/README.md`` is the field reference. Every error names the file, the field
and what is allowed, e.g. ``recipes/x.toml: autoscaling.max_containers: must be >=
min_containers (got 0 < 1)``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

SCHEMA_VERSION = 1
RECIPES_DIR = Path(__file__).resolve().parent
ENGINES = ("sglang",)
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
        """Keyword arguments for ``simfleet.autoscaler.AutoscalerConfig``."""
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
    ttft_p95_s: float
    itl_p95_s: float
    e2e_p95_s: float


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

    def simulation_profile(self) -> Any:
        """The ``simfleet.profile.EngineProfile`` that stands in for this recipe offline."""
        from simfleet.profile import EngineProfile, ProfileError

        try:
            return EngineProfile.from_mapping(self.simulation_mapping(), source=f"{self.path}: simulation")
        except ProfileError as exc:
            raise RecipeError(str(exc)) from None


# -- loading -----------------------------------------------------------------------------------


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

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "required field is missing")
        return default

    def str(self, key: str, default: Any = None, choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string (got {value!r})")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def int(self, key: str, default: Any = None, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer (got {value!r})")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum} (got {value})")
        return value

    def float(self, key: str, default: Any = None, positive: bool = True) -> Any:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number (got {value!r})")
        if positive and value <= 0:
            raise self.error(key, f"must be > 0 (got {value})")
        return float(value)

    def bool(self, key: str, default: Any = None) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (got {value!r})")
        return value

    def str_list(self, key: str, default: Any = None) -> tuple[str, ...]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be a list of non-empty strings (got {value!r})")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"unknown field; known fields here: {known}")


_REQUIRED = object()


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate one recipe file. Raises :class:`RecipeError` naming the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None
    return parse_recipe(raw, path)


def parse_recipe(raw: dict[str, Any], path: Path) -> Recipe:
    top = _Table(path, "", raw)
    version = top.int("schema_version", _REQUIRED)
    if version != SCHEMA_VERSION:
        raise top.error("schema_version", f"must be {SCHEMA_VERSION} (got {version})")
    gpu = _gpu(top.sub("gpu"))
    parallel = _parallel(top.sub("parallel", required=False), gpu)
    simulation = top._get("simulation", {})
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
    recipe.simulation_profile()  # validates [simulation] against the simulator's fields
    return recipe


def _model(t: _Table) -> ModelSpec:
    hf_id = t.str("hf_id", _REQUIRED)
    if "/" not in hf_id:
        raise t.error("hf_id", f"must be a Hugging Face id like 'org/name' (got {hf_id!r})")
    spec = ModelSpec(
        hf_id=hf_id,
        revision=t.str("revision", "main"),
        served_name=t.str("served_name", hf_id),
        cache_volume=t.str("cache_volume", "huggingface-cache"),
        hf_secret=t.str("hf_secret", None),
    )
    t.done()
    return spec


def _engine(t: _Table) -> EngineSpec:
    env = t._get("env", {})
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
    spec = SloSpec(
        ttft_p95_s=t.float("ttft_p95_s", _REQUIRED),
        itl_p95_s=t.float("itl_p95_s", _REQUIRED),
        e2e_p95_s=t.float("e2e_p95_s", _REQUIRED),
    )
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


# -- lookup ------------------------------------------------------------------------------------


def load_all(directory: str | Path = RECIPES_DIR) -> list[Recipe]:
    """Every ``*.toml`` in ``directory``, sorted by file name; the first bad file raises."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecipeError(f"{directory}: not a directory")
    return [load_recipe(p) for p in sorted(directory.glob("*.toml"))]


def find_recipe_for_model(model_id: str, directory: str | Path = RECIPES_DIR) -> Recipe:
    """The recipe serving ``model_id`` (Hugging Face id or served name, case-insensitive)."""
    recipes = load_all(directory)
    wanted = model_id.strip().lower()
    matches = [r for r in recipes if wanted in (r.model.hf_id.lower(), r.model.served_name.lower())]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(str(r.path.name) for r in matches)
        raise RecipeError(f"model {model_id!r} has several recipes ({names}); pick one with --recipe")
    known = ", ".join(sorted({r.model.hf_id for r in recipes})) or "none"
    raise RecipeError(f"no recipe for model {model_id!r} in {directory}; known models: {known}")


def with_gpu(recipe: Recipe, gpu: str) -> Recipe:
    """``recipe`` re-validated on other GPUs (``"H200"``, ``"H100:2"``): ``--gpu`` on the CLI.

    Parallelism left implicit follows the new count; an explicit ``parallel.tp`` that no
    longer fits raises the usual field error.
    """
    kind, _, count = gpu.partition(":")
    if count and not count.isdigit():
        raise RecipeError(f"--gpu: expected TYPE or TYPE:COUNT (got {gpu!r})")
    raw = tomllib.loads(recipe.path.read_text(encoding="utf-8"))
    raw["gpu"] = {"type": kind.upper() if kind.upper() in GPU_TYPES else kind, "count": int(count or 1)}
    return parse_recipe(raw, recipe.path)
