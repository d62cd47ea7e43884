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
    spec:       decode_step_base_s * (1 + spec_verify_overhead)      (draft passes)
                + batch * (decode_step_per_seq_s + spec_verify_token_s * (verify_width - 1))
                verify_width = spec_num_draft_tokens; each verify step emits a chain-accepted
                number of tokens per sequence (mean spec_accept_length; simfleet.spec_decode).

Calibration of DEFAULT (published serving benchmarks cited in docs/simulator.md, and the 0.5.23
single-GPU fixture): batch-1 decode
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

from enginescope.simfleet.gpus import on_gpu
from enginescope.simfleet.spec_decode import SPEC_METHODS, drafts_per_step

ENGINES = ("sglang", "vllm")


class ProfileError(ValueError):
    """A profile name, key or value that the simulator cannot use."""


@dataclass(frozen=True)
class EngineProfile:
    # identity / topology
    engine: str = "sglang"  # sglang | vllm: whose metrics and HTTP quirks (enginescope.simfleet.vllm_engine)
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
    # fixed costs a lone request pays: tokenizer + IPC + detokenizer per request, and one eager
    # (no CUDA graph) prefill forward, x gpus.tp_prefill_factor(tp_size) for its all-reduces
    request_overhead_s: float = 0.003
    prefill_fixed_s: float = 0.004
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
    # speculative decoding (spec_accept_length 1.0 = off); acceptance model in simfleet.spec_decode
    spec_accept_length: float = 1.0  # mean tokens per verify step (accepted drafts + bonus)
    spec_method: str = "EAGLE"  # EAGLE | EAGLE3 | MTP (chain of num_steps) | DFLASH (one block)
    spec_num_steps: int = 3
    spec_num_draft_tokens: int = 4  # DFLASH: the block size
    spec_verify_overhead: float = 0.35  # drafting + verify bookkeeping, x decode_step_base_s
    spec_verify_token_s: float = 0.00005  # compute of each extra verified token per sequence
    spec_accept_decay: float = 1.0  # conditional acceptance x this per deeper draft position
    spec_request_sigma: float = 0.3  # spread of one request's acceptance (logit scale)
    # request shape defaults
    output_tokens_mean: int = 256
    chars_per_token: float = 4.0
    extra_prompt_tokens: int = 0
    request_waiting_timeout_s: float = 0.0
    # --tokenizer-metrics-allowed-custom-labels: comma-separated x-custom-labels keys that become
    # labels of the tokenizer's request metrics ("" = none, SGLang's default)
    tokenizer_metrics_allowed_custom_labels: str = ""
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
    def spec_drafts(self) -> int:
        """Draft positions one verify step checks."""
        return drafts_per_step(self.spec_method, self.spec_num_steps, self.spec_num_draft_tokens)

    @property
    def spec_max_accept_tokens(self) -> int:
        """Most tokens one verify step can emit (every draft accepted + the bonus token)."""
        return self.spec_drafts + 1

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
    def from_mapping(
        cls, mapping: dict[str, Any], source: str = "[simulation]", base: EngineProfile | None = None
    ) -> EngineProfile:
        """Build a profile from ``{"profile": name, <field>: value, ...}``.

        ``source`` names the input (e.g. a recipe path) in error messages; ``base`` replaces the
        named profile (or DEFAULT) as the starting point.
        """
        if not isinstance(mapping, dict):
            raise ProfileError(f"{source}: expected a table, got {type(mapping).__name__}")
        overrides = dict(mapping)
        base_name = overrides.pop("profile", None)
        if base is None:
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
        if not isinstance(value, str) or (not value and key not in _MAY_BE_EMPTY):
            raise ProfileError(f"{source}: {key} must be a non-empty string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{source}: {key} must be a number, got {value!r}")
    if type_name == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ProfileError(f"{source}: {key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


_MAY_BE_EMPTY = ("tokenizer_metrics_allowed_custom_labels",)
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
    "request_overhead_s",
    "prefill_fixed_s",
    "weight_memory_gb",
    "graph_memory_gb",
    "spec_verify_overhead",
    "spec_request_sigma",
    "spec_verify_token_s",
    "extra_prompt_tokens",
    "request_waiting_timeout_s",
    "scheduler_init_other_s",
    "weight_load_s",
    "kv_cache_allocation_s",
    "cuda_graph_capture_s",
    "draft_cuda_graph_capture_s",
    "server_warmup_s",
)
_RATIOS = ("prefix_cache_hit_ratio", "new_token_ratio_init", "new_token_ratio_min", "spec_accept_decay")


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
    if p.engine not in ENGINES:
        raise ProfileError(f"engine must be one of {', '.join(ENGINES)}, got {p.engine!r}")
    if p.spec_method not in SPEC_METHODS:
        raise ProfileError(f"spec_method must be one of {', '.join(SPEC_METHODS)}, got {p.spec_method!r}")
    max_accept = float(p.spec_max_accept_tokens)
    if not 1.0 <= p.spec_accept_length <= max_accept:
        bound = (
            "the DFLASH block"
            if p.spec_method == "DFLASH"
            else "spec_num_steps + 1 and spec_num_draft_tokens"
        )
        raise ProfileError(
            f"spec_accept_length must be within 1..{max_accept:g} ({bound} bound it), got {p.spec_accept_length!r}"
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
        prefill_fixed_s=0.012,
        request_overhead_s=0.004,
        # 80 GB x 0.88 - 32.9 GB of weights per rank = 37.5 GiB of KV at 80 KiB per token per rank
        kv_capacity_tokens=490000,
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
        prefill_fixed_s=0.03,  # eager prefill of ~94 MoE layers with expert all-to-all
        request_overhead_s=0.005,
        kv_capacity_tokens=1200000,
        kv_bytes_per_token=24576,
        weight_memory_gb=29.8,
        graph_memory_gb=2.4,
        spec_accept_length=2.8,
        spec_method="EAGLE",
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
    # EAGLE-3 on the calibration model: SGLang's docs run Llama-3.1-8B with a 5-step draft; a chain
    # (topk 1) of 5 drafts accepting ~3.5 tokens/step reproduces the published 2.36x at batch 1.
    "llama-8b-h100-eagle3": dataclasses.replace(
        DEFAULT,
        spec_method="EAGLE3",
        spec_accept_length=3.5,
        spec_num_steps=5,
        spec_num_draft_tokens=6,
        spec_verify_overhead=0.35,
        draft_cuda_graph_capture_s=12.1,
    ),
    # Qwen3-8B with a 1-step MTP head (MTP-style chain of 1 draft + bonus).
    "qwen3-8b-h100-mtp": dataclasses.replace(
        DEFAULT,
        model_name="Qwen/Qwen3-8B",
        kv_bytes_per_token=147456,
        kv_capacity_tokens=388000,
        weight_memory_gb=16.4,
        spec_method="MTP",
        spec_accept_length=1.85,
        spec_num_steps=1,
        spec_num_draft_tokens=2,
        spec_verify_overhead=0.08,
        draft_cuda_graph_capture_s=4.0,
    ),
    # DFlash: one drafter pass proposes a 16-token block (arXiv 2602.06036); the drafter is a few
    # layers of the target's width, so one pass costs ~40 % of a target decode step; acceptance
    # falls along the block (decay) and averages ~4.6 tokens/verify on chat traffic.
    "qwen3-8b-h100-dflash": dataclasses.replace(
        DEFAULT,
        model_name="Qwen/Qwen3-8B",
        kv_bytes_per_token=147456,
        kv_capacity_tokens=380000,
        weight_memory_gb=17.4,
        spec_method="DFLASH",
        spec_accept_length=4.6,
        spec_num_steps=1,
        spec_num_draft_tokens=16,
        spec_verify_overhead=0.40,
        spec_accept_decay=0.97,
        draft_cuda_graph_capture_s=9.0,
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


# The calibration model on the other GPUs (enginescope.simfleet.gpus: bandwidth, FLOPs, HBM).
PROFILES.update({f"llama-8b-{gpu.lower()}": on_gpu(DEFAULT, gpu) for gpu in ("A100", "H200", "B200")})


def profile_for_recipe(recipe: Any) -> EngineProfile:
    """The profile that stands in for ``recipe`` offline (``enginescope.simfleet.recipe_profile``)."""
    from enginescope.simfleet.recipe_profile import profile_for_recipe as build

    return build(recipe)
