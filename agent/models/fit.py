"""Fit: does a model fit on these GPUs, and with which tensor-parallel size and context?

Pure arithmetic on config.json and a list of GPU memory totals (bytes); no GPU library,
no network. Per GPU, vLLM must hold, within `total x gpu_memory_utilization`:

    weights / tp  +  overhead  +  context x KV bytes per token (per GPU)

KV bytes per token and GPU = 2 (K and V) x layers x max(1, kv_heads / tp) x head_dim x 2 bytes:
vLLM splits KV heads across the tensor-parallel group and replicates them when there are
fewer heads than GPUs. MLA models (DeepSeek) cache one latent per layer, never split.
Sliding-window layers (Mistral v0.1, Gemma) are counted as full attention: vLLM needs less
for them, so the context given here is a floor, never more than fits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.errors import AgentError, BadInput
from agent.models.shape import ModelShape, UnsizedModel
from agent.results import Record
from agent.validate import shown

__all__ = ["ModelShape", "UnsizedModel"]  # re-exported: the fit's inputs

GB = 10**9
GIB = 2**30
# CUDA context, the activations of vLLM's profiling batch, CUDA graphs and NCCL buffers.
# vLLM 0.11 measures ~1.2-1.8 GiB on one GPU for 7-8B models; 2 GiB keeps a margin.
OVERHEAD_BYTES = 2 * GIB
MIN_CONTEXT = 2048
CONTEXT_STEP = 256  # contexts are rounded down to a multiple of this (vLLM's block sizes divide it)
# Bytes per weight as vLLM loads them: float32 checkpoints are served in 16-bit ("auto" dtype).
DTYPE_BYTES = {"float32": 2, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8": 1}


NO_FIT_FIX = (
    "use more or larger GPUs, a quantized variant (AWQ, GPTQ, FP8) or a smaller model; "
    "`sandbox-agent model fit MODEL --gpu-memory 80GB --gpus 8` plans for other hardware"
)


class NoFit(AgentError):
    """Nothing fits: raised before a byte of weights is downloaded or a container started."""


def valid_tp_sizes(shape: ModelShape, gpu_count: int) -> list[int]:
    """Tensor-parallel sizes vLLM accepts: powers of two up to the GPU count that divide the
    attention heads, and divide or are divided by the KV heads."""
    sizes = []
    tp = 1
    while tp <= gpu_count:
        kv_ok = shape.kv_heads % tp == 0 or tp % shape.kv_heads == 0
        if shape.attention_heads % tp == 0 and kv_ok:
            sizes.append(tp)
        tp *= 2
    return sizes


@dataclass(frozen=True)
class FitOption:
    tensor_parallel_size: int
    usable_per_gpu: int
    weights_per_gpu: int
    kv_budget_per_gpu: int
    kv_bytes_per_token: int
    kv_tokens: int


@dataclass(frozen=True)
class FitPlan(Record):
    fits: bool
    tensor_parallel_size: int | None
    max_model_len: int | None
    model_max_len: int
    gpu_count: int
    gpu_memory: tuple[int, ...]
    gpu_memory_utilization: float
    weights_bytes: int
    weights_source: Literal["files", "config"]
    overhead_per_gpu: int
    options: tuple[FitOption, ...]
    reason: str

    def summary(self) -> str:
        if not self.fits:
            return self.reason
        return (
            f"fits: tensor_parallel_size {self.tensor_parallel_size}, max_model_len "
            f"{self.max_model_len} (model maximum {self.model_max_len}); {self.reason}"
        )


def plan(
    shape: ModelShape,
    gpu_memory: Sequence[int],
    *,
    utilization: float = 0.90,
    weight_bytes: int | None = None,
    max_model_len: int | Literal["auto"] = "auto",
    tensor_parallel_size: int | Literal["auto"] = "auto",
    min_context: int = MIN_CONTEXT,
    overhead: int = OVERHEAD_BYTES,
) -> FitPlan:
    """The largest tensor-parallel group that fits, with the longest context that fits.

    Using every GPU the head count allows gives the most KV cache and throughput. `weight_bytes`
    (the safetensors sizes) is used when known, else the estimate from config.json.
    """
    mem = sorted((int(m) for m in gpu_memory), reverse=True)
    source: Literal["files", "config"] = "files" if weight_bytes else "config"
    weights = weight_bytes or shape.estimated_weight_bytes()
    if weight_bytes and shape.float32_checkpoint and shape.weight_bits >= 16:
        weights //= 2  # vLLM serves float32 checkpoints in 16-bit
    base: dict[str, Any] = dict(
        model_max_len=shape.max_position_embeddings,
        gpu_count=len(mem),
        gpu_memory=tuple(mem),
        gpu_memory_utilization=utilization,
        weights_bytes=weights,
        weights_source=source,
        overhead_per_gpu=overhead,
    )
    if not mem:
        return FitPlan(False, None, None, options=(), reason="no GPU to fit the model on", **base)
    sizes = valid_tp_sizes(shape, len(mem))
    if tensor_parallel_size != "auto":
        if tensor_parallel_size not in sizes:
            why = (
                f"model.tensor_parallel_size {tensor_parallel_size} is not usable: vLLM needs "
                f"a power of two up to the {len(mem)} GPU(s) that divides "
                f"{shape.attention_heads} attention heads ({shape.kv_heads} KV heads); "
                f"usable here: {sizes}"
            )
            return FitPlan(False, None, None, options=(), reason=why, **base)
        sizes = [tensor_parallel_size]
    options = []
    for tp in sizes:
        usable = int(mem[tp - 1] * utilization)  # the smallest card of the group limits it
        per_gpu = math.ceil(weights / tp)
        budget = usable - per_gpu - overhead
        per_token = shape.kv_bytes_per_token(tp)
        options.append(
            FitOption(tp, usable, per_gpu, budget, per_token, max(0, budget) // per_token)
        )
    best = max(options, key=lambda o: (o.kv_tokens, o.tensor_parallel_size))
    cap = shape.max_position_embeddings
    wanted = cap if max_model_len == "auto" else int(max_model_len)
    need = min_context if max_model_len == "auto" else wanted
    if max_model_len != "auto" and wanted > cap:
        reason = f"model.max_model_len {wanted} is longer than the model's maximum {cap}"
        return FitPlan(False, None, None, options=tuple(options), reason=reason, **base)
    if best.kv_tokens < min(need, cap):
        return FitPlan(
            False,
            None,
            None,
            options=tuple(options),
            reason=_refusal(shape, best, need, base),
            **base,
        )
    context = wanted if best.kv_tokens >= wanted else best.kv_tokens // CONTEXT_STEP * CONTEXT_STEP
    reason = (
        f"{best.tensor_parallel_size} x {_gb(best.usable_per_gpu)} usable, weights "
        f"{_gb(best.weights_per_gpu)} + overhead {_gb(overhead)} per GPU, KV cache for "
        f"{best.kv_tokens} tokens"
    )
    return FitPlan(
        True, best.tensor_parallel_size, context, options=tuple(options), reason=reason, **base
    )


def require_fit(shape: ModelShape, gpu_memory: Sequence[int], **kwargs: Any) -> FitPlan:
    """`plan`, raising `NoFit` (numbers in the message) when nothing fits."""
    result = plan(shape, gpu_memory, **kwargs)
    if not result.fits:
        raise NoFit(result.reason, fix=NO_FIT_FIX)
    return result


def _refusal(shape: ModelShape, best: FitOption, need: int, base: dict[str, Any]) -> str:
    tp = best.tensor_parallel_size
    kv = need * best.kv_bytes_per_token
    required = best.weights_per_gpu + base["overhead_per_gpu"] + kv
    total = base["weights_bytes"] + tp * (base["overhead_per_gpu"] + kv)
    return (
        f"the model does not fit: on {tp} of {base['gpu_count']} GPU(s) each needs weights "
        f"{_gb(best.weights_per_gpu)} + overhead {_gb(base['overhead_per_gpu'])} + KV cache "
        f"{_gb(kv)} for {need} tokens = {_gb(required)}, but has {_gb(best.usable_per_gpu)} "
        f"({_gb(base['gpu_memory'][tp - 1])} x {base['gpu_memory_utilization']:.2f}); "
        f"about {_gb(math.ceil(total / base['gpu_memory_utilization']))} of GPU memory "
        "in all is needed "
        f"(weights {_gb(base['weights_bytes'])})"
    )


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB"


MAX_GPU_MEMORY = 10**13  # 10 TB: more than any one GPU has; beyond it is a typo
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(GB|GIB|G|MB|MIB|M|TB|TIB|T)?\s*$", re.I)
_UNITS = {
    "": GB,
    "G": GB,
    "GB": GB,
    "GIB": GIB,
    "M": 10**6,
    "MB": 10**6,
    "MIB": 2**20,
    "T": 10**12,
    "TB": 10**12,
    "TIB": 2**40,
}


def parse_memory(text: str, where: str = "--gpu-memory") -> int:
    """'24GB' -> 24e9 bytes (GB is decimal, GiB binary; a bare number is GB)."""
    match = _SIZE.match(str(text)) if len(str(text)) <= 32 else None
    size = float(match.group(1)) * _UNITS[(match.group(2) or "").upper()] if match else 0.0
    if not match or not 0 < size <= MAX_GPU_MEMORY:
        raise BadInput(
            where,
            f"{shown(text)} is not a memory size of one GPU (up to 10 TB)",
            fix="write it like 24GB, 80GB or 40GiB",
        )
    return int(size)
