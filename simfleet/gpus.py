"""GPU models for the simulated engines: memory size and bandwidth, dense FLOPs, and what they bound.

Decode is memory-bound (each step streams the weights and the KV it reads), so a profile's decode
costs scale with HBM bandwidth; prefill is compute-bound, so its throughput scales with dense
tensor FLOPs; the KV pool is what ``--mem-fraction-static`` of HBM leaves after weights and graphs.

Datasheet figures (SXM parts, dense, i.e. without 2:4 sparsity):

* A100 80GB SXM: 80 GB HBM2e, 2.039 TB/s, 312 TFLOPS BF16 (NVIDIA A100 Tensor Core GPU datasheet,
  nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf).
  No FP8 tensor cores: FP8 checkpoints run as W8A16, so FP8 FLOPs = BF16 FLOPs here.
* H100 SXM: 80 GB HBM3, 3.35 TB/s, 989 TFLOPS BF16, 1979 TFLOPS FP8 (NVIDIA H100 datasheet,
  resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet; the sheet's 1,979 /
  3,958 figures are with sparsity).
* H200 SXM: 141 GB HBM3e, 4.8 TB/s, same Hopper compute as H100 (NVIDIA H200 datasheet,
  nvidia.com/en-us/data-center/h200/).
* B200 (HGX/DGX B200): 180 GB HBM3e per GPU (DGX B200: 1,440 GB for 8), 8 TB/s, 2.25 PFLOPS BF16,
  4.5 PFLOPS FP8 dense (NVIDIA DGX B200 datasheet, nvidia.com/en-us/data-center/dgx-b200/).

Modal lists these as ``A100-80GB``, ``H100``, ``H200`` and ``B200`` (modal.com/docs/guide/gpu).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enginescope.simfleet.profile import EngineProfile

_GIB = float(1 << 30)


@dataclass(frozen=True)
class GpuModel:
    name: str
    hbm_gb: float  # as datasheets state it; nvidia-smi reports about this many GiB (H100: 81559 MiB)
    hbm_bandwidth_tb_s: float
    bf16_tflops: float  # dense
    fp8_tflops: float  # dense; = bf16 where the GPU has no FP8 tensor cores

    @property
    def hbm_gib(self) -> float:
        return self.hbm_gb


GPUS: dict[str, GpuModel] = {
    "A100": GpuModel("A100", 80.0, 2.039, 312.0, 312.0),
    "H100": GpuModel("H100", 80.0, 3.35, 989.0, 1979.0),
    "H200": GpuModel("H200", 141.0, 4.8, 989.0, 1979.0),
    "B200": GpuModel("B200", 180.0, 8.0, 2250.0, 4500.0),
}
_ALIASES = {"A100-80GB": "A100", "H100!": "H100", "B200+": "B200"}


def get_gpu(name: str) -> GpuModel:
    """The model of a Modal GPU type (``H100``, ``H100!``, ``A100-80GB``, ...)."""
    key = _ALIASES.get(name, name)
    if key not in GPUS:
        raise ValueError(f"no simulated GPU model for {name!r}; known: {', '.join(GPUS)}")
    return GPUS[key]


def kv_capacity_tokens(
    gpu_memory_gib: float, mem_fraction: float, weight_gib: float, graph_gib: float, kv_bytes_per_token: int
) -> int:
    """KV slots per rank: SGLang sizes the pool so weights + KV take ``mem_fraction`` of the GPU's
    memory; CUDA graphs and activations live in the rest, minus what the graphs overflow."""
    kv_gib = (
        gpu_memory_gib * mem_fraction - weight_gib - max(0.0, graph_gib - gpu_memory_gib * (1 - mem_fraction))
    )
    if kv_gib <= 0:
        raise ValueError(
            f"no room for the KV cache: {mem_fraction:g} x {gpu_memory_gib:.1f} GiB holds less than the "
            f"{weight_gib:.1f} GiB of weights per GPU"
        )
    return int(kv_gib * _GIB / kv_bytes_per_token)


def implied_mem_fraction(profile: EngineProfile) -> float:
    """The --mem-fraction-static a profile's KV pool corresponds to (weights + KV over memory)."""
    kv_gib = profile.kv_capacity_tokens * profile.kv_bytes_per_token / _GIB
    return min(0.95, (kv_gib + profile.weight_memory_gb) / get_gpu(profile.gpu_type).hbm_gib)


def on_gpu(profile: EngineProfile, gpu_name: str, fp8: bool = False) -> EngineProfile:
    """``profile`` (calibrated on ``profile.gpu_type``) moved to another GPU: decode costs scale
    with 1/bandwidth, prefill and verify-token compute with FLOPs, the KV pool with memory size."""
    source, target = get_gpu(profile.gpu_type), get_gpu(gpu_name)
    if source.name == target.name:
        return profile
    bandwidth = source.hbm_bandwidth_tb_s / target.hbm_bandwidth_tb_s  # > 1: slower memory
    flops_of = (lambda g: g.fp8_tflops) if fp8 else (lambda g: g.bf16_tflops)
    compute = flops_of(target) / flops_of(source)  # > 1: faster tensor cores
    fraction = implied_mem_fraction(profile)
    capacity = kv_capacity_tokens(
        target.hbm_gib,
        fraction,
        profile.weight_memory_gb,
        profile.graph_memory_gb,
        profile.kv_bytes_per_token,
    )
    return dataclasses.replace(
        profile,
        gpu_type=target.name,
        gpu_memory_gb=round(target.hbm_gib, 2),
        decode_step_base_s=profile.decode_step_base_s * bandwidth,
        decode_step_per_kv_token_s=profile.decode_step_per_kv_token_s * bandwidth,
        # batched decode GEMMs stay memory-bound at serving batch sizes: per-sequence cost tracks
        # bandwidth; verified draft tokens and prefill are compute-bound
        decode_step_per_seq_s=profile.decode_step_per_seq_s * bandwidth,
        spec_verify_token_s=profile.spec_verify_token_s / compute,
        prefill_tokens_per_s=profile.prefill_tokens_per_s * compute,
        kv_capacity_tokens=max(capacity, profile.chunked_prefill_size_tokens),
    )


def tp_prefill_factor(tp_size: int) -> float:
    """Fixed prefill cost relative to TP1: every layer adds two all-reduces whose latency grows
    with the ring (assessment: ~+35 % per doubling of the TP group for small prompts)."""
    return 1.0 + 0.35 * math.log2(max(1, tp_size))
