"""Performance profiles for the simulated SGLang 0.5.23 engine.

An :class:`EngineProfile` holds every parameter of the queueing model in ``enginescope.simfleet.engine``;
field names carry their unit. Recipes select one in their ``[simulation]`` table::

    [simulation]
    profile = "llama-8b-h100"        # a key of PROFILES (default: DEFAULT)
    weight_load_s = 2.0              # any field below overrides the named profile
    kv_capacity_tokens = 60000

and load it with ``EngineProfile.from_mapping(table)``. ``to_mapping()`` gives the inverse.

Iteration-time model (per scheduler iteration, all divided by the runtime speed factor)::

    decode_s  = decode_step_base_s + decode_step_per_seq_s * batch * verify_width
                + decode_step_per_kv_token_s * sum(context lengths)
    prefill_s = chunk_tokens / prefill_tokens_per_s          (shares the iteration with decode)
    spec adds   spec_verify_overhead * decode_step_base_s     (draft passes), verify_width =
                spec_num_draft_tokens; each verify step emits spec_accept_length tokens per seq.

Calibration of DEFAULT (serving-benchmarks.md and the 0.5.23 single-GPU fixture): batch-1 decode
is 6.3 ms/token (158 tok/s, the published no-speculation number for Llama-3.1-8B on one H100);
~64 running ShareGPT-like sequences (~40k context tokens) give ~12 ms ITL; prefill runs at
~25k tokens/s (a saturated H100 run reported 27.7k input tok/s), so a 500-token prompt below
saturation waits ~30 ms for its first token. KV capacity, memory and startup figures are the
fixture's (max_total_num_tokens 437312, 14.96 GB weights, 53.38 GB KV, 11.3 s decode-graph capture).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ProfileError(ValueError):
    """A profile name, key or value that the simulator cannot use."""


@dataclass(frozen=True)
class EngineProfile:
    # identity / topology
    model_name: str = "meta-llama/Llama-3.1-8B-Instruct"
    gpu_type: str = "H100"
    gpu_memory_gb: float = 80.0
    tp_size: int = 1
    dp_size: int = 1
    pp_size: int = 1
    ep_size: int = 1
    # scheduler limits
    max_running_requests: int = 512
    context_len_tokens: int = 131072
    chunked_prefill_size_tokens: int = 8192
    page_size_tokens: int = 1
    cuda_graph_max_bs: int = 256
    # compute model (seconds per iteration, at speed factor 1.0)
    prefill_tokens_per_s: float = 25000.0
    decode_step_base_s: float = 0.0063
    decode_step_per_seq_s: float = 0.00006
    decode_step_per_kv_token_s: float = 4.0e-8
    scheduler_overhead_s: float = 0.0003
    # KV cache
    kv_capacity_tokens: int = 437312
    kv_bytes_per_token: int = 131072
    weight_memory_gb: float = 14.96
    graph_memory_gb: float = 0.71
    prefix_cache_hit_ratio: float = 0.2
    # SGLang's retraction guard: reserve new_token_ratio * remaining output tokens per request
    new_token_ratio_init: float = 0.7
    new_token_ratio_min: float = 0.098
    new_token_ratio_decay_steps: int = 600
    # speculative decoding (spec_accept_length 1.0 = off)
    spec_accept_length: float = 1.0
    spec_num_steps: int = 3
    spec_num_draft_tokens: int = 4
    spec_verify_overhead: float = 0.35
    # request shape defaults
    output_tokens_mean: int = 256
    chars_per_token: float = 4.0
    extra_prompt_tokens: int = 0
    request_waiting_timeout_s: float = 0.0
    # cold start, in launch order (fixture: scheduler ready after 38.6 s, server after 45.2 s)
    scheduler_init_other_s: float = 20.49  # process spawn, imports, NCCL/distributed init
    weight_load_s: float = 4.87
    kv_cache_allocation_s: float = 1.94
    cuda_graph_capture_s: float = 11.3
    draft_cuda_graph_capture_s: float = 0.0
    server_warmup_s: float = 6.6  # tokenizer manager + warmup request after the schedulers are ready

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def spec_enabled(self) -> bool:
        return self.spec_accept_length > 1.0

    @property
    def num_scheduler_ranks(self) -> int:
        return self.tp_size * self.dp_size * self.pp_size

    @property
    def startup_total_s(self) -> float:
        """Wall time from process start until /health answers 200."""
        return (
            self.scheduler_init_other_s
            + self.weight_load_s
            + self.kv_cache_allocation_s
            + self.cuda_graph_capture_s
            + self.draft_cuda_graph_capture_s
            + self.server_warmup_s
        )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], source: str = "[simulation]") -> EngineProfile:
        """Build a profile from ``{"profile": name, <field>: value, ...}``.

        ``source`` names the input (e.g. a recipe path) in error messages.
        """
        if not isinstance(mapping, dict):
            raise ProfileError(f"{source}: expected a table, got {type(mapping).__name__}")
        overrides = dict(mapping)
        base_name = overrides.pop("profile", None)
        base = DEFAULT if base_name is None else get_profile(base_name, source)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ProfileError(
                f"{source}: unknown simulation key(s) {', '.join(unknown)}; known keys: "
                f"profile, {', '.join(sorted(known))}"
            )
        coerced = {key: _coerce(source, key, known[key].type, value) for key, value in overrides.items()}
        try:
            return dataclasses.replace(base, **coerced)
        except ProfileError as exc:
            raise ProfileError(f"{source}: {exc}") from None

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def get_profile(name: Any, source: str = "profile") -> EngineProfile:
    if not isinstance(name, str) or name not in PROFILES:
        raise ProfileError(f"{source}: unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def _coerce(source: str, key: str, type_name: Any, value: Any) -> Any:
    type_name = str(type_name)
    if type_name == "str":
        if not isinstance(value, str) or not value:
            raise ProfileError(f"{source}: {key} must be a non-empty string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{source}: {key} must be a number, got {value!r}")
    if type_name == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ProfileError(f"{source}: {key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


_POSITIVE = (
    "gpu_memory_gb",
    "tp_size",
    "dp_size",
    "pp_size",
    "ep_size",
    "max_running_requests",
    "context_len_tokens",
    "chunked_prefill_size_tokens",
    "page_size_tokens",
    "cuda_graph_max_bs",
    "prefill_tokens_per_s",
    "decode_step_base_s",
    "kv_capacity_tokens",
    "kv_bytes_per_token",
    "new_token_ratio_decay_steps",
    "spec_num_steps",
    "spec_num_draft_tokens",
    "output_tokens_mean",
    "chars_per_token",
)
_NON_NEGATIVE = (
    "decode_step_per_seq_s",
    "decode_step_per_kv_token_s",
    "scheduler_overhead_s",
    "weight_memory_gb",
    "graph_memory_gb",
    "spec_verify_overhead",
    "extra_prompt_tokens",
    "request_waiting_timeout_s",
    "scheduler_init_other_s",
    "weight_load_s",
    "kv_cache_allocation_s",
    "cuda_graph_capture_s",
    "draft_cuda_graph_capture_s",
    "server_warmup_s",
)
_RATIOS = ("prefix_cache_hit_ratio", "new_token_ratio_init", "new_token_ratio_min")


def _validate(p: EngineProfile) -> None:
    for name in _POSITIVE + _NON_NEGATIVE + _RATIOS + ("spec_accept_length",):
        value = getattr(p, name)
        if not math.isfinite(value):
            raise ProfileError(f"{name} must be finite, got {value!r}")
    for name in _POSITIVE:
        if getattr(p, name) <= 0:
            raise ProfileError(f"{name} must be > 0, got {getattr(p, name)!r}")
    for name in _NON_NEGATIVE:
        if getattr(p, name) < 0:
            raise ProfileError(f"{name} must be >= 0, got {getattr(p, name)!r}")
    for name in _RATIOS:
        if not 0.0 <= getattr(p, name) <= 1.0:
            raise ProfileError(f"{name} must be within 0..1, got {getattr(p, name)!r}")
    max_accept = float(min(p.spec_num_steps + 1, p.spec_num_draft_tokens))
    if not 1.0 <= p.spec_accept_length <= max_accept:
        raise ProfileError(
            f"spec_accept_length must be within 1..{max_accept:g} (spec_num_steps + 1 and "
            f"spec_num_draft_tokens bound it), got {p.spec_accept_length!r}"
        )
    if p.new_token_ratio_min > p.new_token_ratio_init:
        raise ProfileError("new_token_ratio_min must not exceed new_token_ratio_init")
    if p.chunked_prefill_size_tokens > p.kv_capacity_tokens:
        raise ProfileError("chunked_prefill_size_tokens must not exceed kv_capacity_tokens")


DEFAULT = EngineProfile()

PROFILES: dict[str, EngineProfile] = {
    "llama-8b-h100": DEFAULT,
    # Published: ~22-24 ms ITL at 4-8 req/s, ~55 ms TTFT (TP4, SGLang benchmark README).
    "llama-70b-4xh100": EngineProfile(
        model_name="meta-llama/Llama-3.1-70B-Instruct",
        tp_size=4,
        max_running_requests=512,
        prefill_tokens_per_s=14000.0,
        decode_step_base_s=0.0175,
        decode_step_per_seq_s=0.00008,
        decode_step_per_kv_token_s=5.0e-8,
        kv_capacity_tokens=690000,
        kv_bytes_per_token=81920,  # 320 KiB per token across 4 ranks
        weight_memory_gb=32.9,
        graph_memory_gb=1.1,
        weight_load_s=38.0,
        cuda_graph_capture_s=17.5,
        kv_cache_allocation_s=2.6,
        server_warmup_s=8.0,
        scheduler_init_other_s=28.0,
    ),
    # MoE FP8 with EAGLE-3 speculation; speed-up ~2.3x at batch 1 shrinking to ~1.4x near batch 64.
    "moe-fp8-8xh100-eagle": EngineProfile(
        model_name="Qwen/Qwen3-235B-A22B-Instruct-2507-FP8",
        tp_size=8,
        ep_size=8,
        max_running_requests=256,
        prefill_tokens_per_s=18000.0,
        decode_step_base_s=0.0150,
        decode_step_per_seq_s=0.00009,
        decode_step_per_kv_token_s=3.0e-8,
        kv_capacity_tokens=1200000,
        kv_bytes_per_token=24576,
        weight_memory_gb=29.8,
        graph_memory_gb=2.4,
        spec_accept_length=2.8,
        spec_num_steps=3,
        spec_num_draft_tokens=4,
        spec_verify_overhead=0.35,
        weight_load_s=95.0,
        cuda_graph_capture_s=24.0,
        draft_cuda_graph_capture_s=62.7,
        kv_cache_allocation_s=3.5,
        server_warmup_s=9.0,
        scheduler_init_other_s=45.0,
    ),
    # Vision-language: image tokens inflate prompts and the vision tower slows prefill.
    "vlm-7b-h100": EngineProfile(
        model_name="Qwen/Qwen2.5-VL-7B-Instruct",
        prefill_tokens_per_s=16000.0,
        decode_step_base_s=0.0060,
        kv_capacity_tokens=920000,
        kv_bytes_per_token=57344,
        weight_memory_gb=15.6,
        graph_memory_gb=0.8,
        extra_prompt_tokens=1200,
        prefix_cache_hit_ratio=0.1,
        weight_load_s=6.1,
        scheduler_init_other_s=22.0,
        cuda_graph_capture_s=12.4,
    ),
}


def profile_for_recipe(recipe: Any) -> EngineProfile:
    """The profile that stands in for ``recipe`` (an ``enginescope.recipes.schema.Recipe``) offline.

    The recipe's model, GPU and parallelism set the profile's identity; its ``[simulation]`` table
    overrides any field. Errors name the recipe file.
    """
    from enginescope.recipes.schema import RecipeError

    try:
        return EngineProfile.from_mapping(recipe.simulation_mapping(), source=f"{recipe.path}: simulation")
    except ProfileError as exc:
        raise RecipeError(str(exc)) from None
