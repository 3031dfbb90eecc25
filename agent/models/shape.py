"""What the memory arithmetic needs from a model's config.json: its `ModelShape`.

Parameters are counted for Llama-style blocks (q, k, v, o; a gated MLP of 3 matrices), MoE
experts included; a config that lacks a size, or holds one the arithmetic cannot use, is an
`UnsizedModel`, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError
from agent.validate import shown

UNSIZED_FIX = (
    "check that vLLM supports it; sandbox-agent cannot compute its fit, so pick a model whose "
    "config.json lists hidden_size, num_attention_heads and num_hidden_layers"
)


class UnsizedModel(AgentError):
    """config.json lacks what the arithmetic needs (it relies on transformers' defaults)."""


def _weight_bits(quant: Mapping[str, Any]) -> int:
    """Bits per weight of a `quantization_config`; 16 when not quantized."""
    method = str(quant.get("quant_method") or "")
    if not method:
        return 16
    if method in ("fp8", "fbgemm_fp8", "eetq", "experts_int8"):
        return 8
    if method == "bitsandbytes":
        return 4 if quant.get("load_in_4bit") else 8
    if method == "modelopt":  # quant_algo FP8, NVFP4, W4A8_AWQ, ...
        algo = str(quant.get("quant_algo") or "").upper()
        return 4 if "4" in algo else 8
    if method == "compressed-tensors":  # RedHatAI's FP8 / INT8 / W4A16: bits per group
        groups = (quant.get("config_groups") or {}).values()
        bits = [int((g.get("weights") or {}).get("num_bits") or 0) for g in groups]
        return max(bits, default=0) or 8
    return int(quant.get("bits") or quant.get("w_bit") or 4)  # AWQ, GPTQ, mxfp4, ...


@dataclass(frozen=True)
class ModelShape:
    """What the memory arithmetic needs from config.json."""

    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    experts: int = 1  # routed experts held in memory per layer (1: dense)
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    tied_embeddings: bool = False
    weight_bits: int = 16
    quantization: str | None = None
    float32_checkpoint: bool = False
    mla_latent: int = 0  # kv_lora_rank + qk_rope_head_dim for MLA models, else 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """The shape from config.json; UnsizedModel when it lacks a size or holds one the
        arithmetic cannot use (0, negative, not a number)."""
        try:
            shape = cls._read(config)
        except UnsizedModel:
            raise
        except (AttributeError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise UnsizedModel(
                f"config.json holds a size the arithmetic cannot use ({type(exc).__name__}: "
                f"{shown(str(exc))})",
                fix=UNSIZED_FIX,
            ) from None
        sizes = {
            "num_hidden_layers": shape.layers,
            "hidden_size": shape.hidden_size,
            "num_attention_heads": shape.attention_heads,
            "num_key_value_heads": shape.kv_heads,
            "head_dim": shape.head_dim,
            "vocab_size": shape.vocab_size,
            "max_position_embeddings": shape.max_position_embeddings,
            "experts": shape.experts,
        }
        bad = [f"{name} {value}" for name, value in sizes.items() if value < 1]
        if bad:
            raise UnsizedModel(
                f"config.json gives {', '.join(bad)}: every size must be at least 1",
                fix=UNSIZED_FIX,
            )
        return shape

    @classmethod
    def _read(cls, config: Mapping[str, Any]) -> ModelShape:
        cfg = dict(config.get("text_config") or {}) or dict(
            config
        )  # multimodal: the language model
        if "text_config" in config:
            cfg.setdefault("quantization_config", config.get("quantization_config"))
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
        except KeyError as exc:
            raise UnsizedModel(
                f"config.json lacks {exc} needed to size the model (it relies on transformers' "
                "defaults for its architecture)",
                fix=UNSIZED_FIX,
            ) from None
        experts = int(
            cfg.get("num_local_experts")
            or cfg.get("num_experts")
            or cfg.get("n_routed_experts")
            or 1
        )
        quant = cfg.get("quantization_config") or {}
        # transformers >= 4.56 writes `dtype`; multimodal configs may keep it at the top only
        dtype = next(
            (str(c[k]) for c in (cfg, config) for k in ("torch_dtype", "dtype") if c.get(k)),
            "bfloat16",
        )
        mla = int(cfg.get("kv_lora_rank") or 0)
        return cls(
            layers=layers,
            hidden_size=hidden,
            attention_heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or (hidden // heads if heads > 0 else 0)),
            intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab_size=int(cfg.get("vocab_size") or 32000),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 4096),
            experts=experts,
            expert_intermediate_size=int(cfg.get("moe_intermediate_size") or 0),
            shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            weight_bits=_weight_bits(quant),
            quantization=str(quant.get("quant_method") or "") or None,
            float32_checkpoint=dtype == "float32",
            mla_latent=mla + int(cfg.get("qk_rope_head_dim") or 0) if mla else 0,
        )

    # --- parameters: Llama-style blocks (q, k, v, o; gated MLP of 3 matrices) ------------
    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def layer_params(self) -> int:
        h, q, kv = (
            self.hidden_size,
            self.attention_heads * self.head_dim,
            self.kv_heads * self.head_dim,
        )
        attention = h * q + 2 * h * kv + q * h
        if self.experts > 1:
            expert = 3 * h * (self.expert_intermediate_size or self.intermediate_size)
            mlp = (
                self.experts * expert
                + 3 * h * self.shared_expert_intermediate_size
                + h * self.experts
            )
        else:
            mlp = 3 * h * self.intermediate_size
        return attention + mlp + 2 * h  # + two RMSNorm weights

    @property
    def params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params + self.hidden_size

    def estimated_weight_bytes(self) -> int:
        """Weights as loaded: 2 bytes per parameter, or `bits` for quantized linear layers
        (+3 % for their scales); embeddings stay 16-bit."""
        if self.weight_bits >= 16:
            return self.params * 2
        linear = self.layers * self.layer_params
        return int(linear * self.weight_bits / 8 * 1.03) + (self.params - linear) * 2

    def kv_bytes_per_token(self, tp: int, kv_dtype_bytes: int = 2) -> int:
        """KV cache bytes one token takes on each GPU of a tensor-parallel group of `tp`."""
        if self.mla_latent:
            return self.layers * self.mla_latent * kv_dtype_bytes
        heads_per_gpu = max(1, self.kv_heads // tp)
        return 2 * self.layers * heads_per_gpu * self.head_dim * kv_dtype_bytes
