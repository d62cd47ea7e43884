"""The simulated engine a recipe stands for: its named profile, moved to the recipe's GPU, with the
engine flags the real server would get (``[engine] extra_args``) applied, then ``[simulation]``.

Precedence (later wins): the named profile (``[simulation] profile``) -> the recipe's topology
(model name, TP/DP/EP, speculative method and draft shape) -> the GPU model when the recipe's GPU
differs from the profile's calibration GPU (``enginescope.simfleet.gpus.on_gpu``) -> engine flags
(``--max-running-requests``, ``--chunked-prefill-size``, ``--mem-fraction-static``, ...; vLLM's
``--max-num-seqs``, ``--max-num-batched-tokens``, ``--gpu-memory-utilization``) -> explicit
``[simulation]`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enginescope.simfleet.gpus import get_gpu, kv_capacity_tokens, on_gpu
from enginescope.simfleet.profile import DEFAULT, EngineProfile, ProfileError, get_profile


def _positive_int(flag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{flag} must be an integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{flag} must be >= 1, got {number}")
    return number


def _fraction(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{flag} must be a number, got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise ValueError(f"{flag} must be within (0, 1), got {number}")
    return number


# flag -> (profile field, parser); SGLang's and vLLM's spellings of the same cap.
_INT_FLAGS: dict[str, str] = {
    "--max-running-requests": "max_running_requests",
    "--max-num-seqs": "max_running_requests",
    "--chunked-prefill-size": "chunked_prefill_size_tokens",
    "--max-num-batched-tokens": "chunked_prefill_size_tokens",
    "--cuda-graph-max-bs": "cuda_graph_max_bs",
    "--context-length": "context_len_tokens",
    "--max-model-len": "context_len_tokens",
    "--page-size": "page_size_tokens",
}
_MEM_FLAGS = ("--mem-fraction-static", "--gpu-memory-utilization")
_LIST_FLAGS = {"--tokenizer-metrics-allowed-custom-labels": "tokenizer_metrics_allowed_custom_labels"}


def _split(args: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``[(flag, values), ...]`` from an argv list (``--x v``, ``--x=v``, ``--x a b``)."""
    pairs: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            pairs.append((flag, [value] if eq else []))
        elif pairs:
            pairs[-1][1].append(arg)
    return pairs


def engine_arg_overrides(args: Sequence[str], profile: EngineProfile) -> dict[str, Any]:
    """Profile fields the engine flags in ``args`` set (flags the simulator does not model are
    ignored). ``profile`` gives the memory figures ``--mem-fraction-static`` sizes the KV pool from."""
    fields: dict[str, Any] = {}
    for flag, values in _split(args):
        if flag in _INT_FLAGS:
            if len(values) != 1:
                raise ValueError(f"{flag} takes one value, got {values!r}")
            if flag == "--chunked-prefill-size" and values[0] == "-1":
                continue  # chunking off: the simulator keeps its chunk as the prefill budget
            fields[_INT_FLAGS[flag]] = _positive_int(flag, values[0])
        elif flag in _MEM_FLAGS:
            if len(values) != 1:
                raise ValueError(f"{flag} takes one value, got {values!r}")
            fields["kv_capacity_tokens"] = _kv_for_fraction(profile, _fraction(flag, values[0]), flag)
        elif flag in _LIST_FLAGS:
            if not values:
                raise ValueError(f"{flag} needs at least one label name")
            fields[_LIST_FLAGS[flag]] = ",".join(values)
    return fields


def _kv_for_fraction(profile: EngineProfile, fraction: float, flag: str) -> int:
    gpu_gib = get_gpu(profile.gpu_type).hbm_gib
    try:
        tokens = kv_capacity_tokens(
            gpu_gib, fraction, profile.weight_memory_gb, profile.graph_memory_gb, profile.kv_bytes_per_token
        )
    except ValueError as exc:
        raise ValueError(f"{flag} {fraction:g}: {exc}") from None
    return max(tokens, profile.chunked_prefill_size_tokens)


def profile_for_recipe(recipe: Any) -> EngineProfile:
    """The profile that stands in for ``recipe`` (an ``enginescope.recipes.schema.Recipe``) offline.

    Errors name the recipe file (as ``RecipeError``).
    """
    from enginescope.recipes.schema import RecipeError

    source = f"{recipe.path}: simulation"
    explicit = dict(recipe.simulation)
    mapping = recipe.simulation_mapping()
    try:
        base_name = mapping.pop("profile", None)
        base = DEFAULT if base_name is None else get_profile(base_name, source)
        gpu_type = mapping.pop("gpu_type", base.gpu_type)
        if "gpu_type" not in explicit and gpu_type != base.gpu_type:
            base = on_gpu(base, gpu_type, fp8="fp8" in recipe.model.hf_id.lower())
        if "engine" not in explicit:
            mapping["engine"] = recipe.engine.name
        speculative = recipe.speculative
        if speculative.enabled and "spec_method" not in explicit:
            mapping["spec_method"] = speculative.method
        topology = {k: v for k, v in mapping.items() if k not in explicit}
        base = EngineProfile.from_mapping(topology, source, base=base)
        flags = engine_arg_overrides(recipe.engine.extra_args, base)
        flags = {k: v for k, v in flags.items() if k not in explicit}
        return EngineProfile.from_mapping({**flags, **explicit}, source, base=base)
    except (ProfileError, ValueError) as exc:
        raise RecipeError(str(exc) if str(exc).startswith(str(recipe.path)) else f"{source}: {exc}") from None
