"""FLOP-counting conventions frameworks use for the TFLOP/s and MFU they log, so a prediction can be
reported the way a user's own framework would report it (each framework profile names its own).

Each is FLOPs per token of one training step for a model at a sequence length; `recompute` is the
plan's, for conventions that count the recompute pass; `stated_params` a parameter count a source
states itself (llm-foundry's NumParams includes MPT's learned position table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphgen.config.model import FineTune, ModelSpec
from graphgen.model.flops import (
    attention_keys,
    attention_widths,
    matmul_params,
    model_flops_per_token,
    total_params,
)
from graphgen.registry import Registry


@dataclass(frozen=True)
class FlopConvention:
    name: str
    description: str
    per_token: Callable[[ModelSpec, int, str, float | None], float]
    peak: str = "precision"  # MFU's peak: the run's precision ("precision") or the bf16 peak ("bf16")
    # Fine-tuning counted as the method computes it (frozen weights without weight gradients, adapters
    # their own 6 x parameters), not as pretraining.
    finetune: bool = False

    def flops_per_token(self, m: ModelSpec, s: int, recompute: str, stated: float | None,
                        finetune: FineTune | None = None) -> float:
        base = self.per_token(m, s, recompute, stated)
        if self.finetune and finetune is not None and finetune.method != "full":
            base += model_flops_per_token(m, s, finetune) - model_flops_per_token(m, s)
        return base


FLOP_CONVENTIONS: Registry[FlopConvention] = Registry("FLOP convention")


def _palm(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    """6 x matmul parameters + 12 x layers x heads x (qk + v) / 2 x keys, the masked half included."""
    qk, v = attention_widths(m)
    return 6.0 * matmul_params(m) + 6.0 * m.heads * (qk + v) * attention_keys(m, s)


def _standard(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    return model_flops_per_token(m, s)


def _megatron_core(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    """Megatron-Core's own count (megatron/training/training.py num_floating_point_operations @bbc762d5,
    2025-10): the causal count without the GEMMs its formula has no term for, the MoE router (hidden x
    experts), the shared-expert gate and the attention output gate's half of the query projection."""
    left_out = 0.0
    for layer in range(m.layers):
        if m.moe is not None and m.is_moe(layer):
            left_out += m.hidden * (m.moe.experts + (1 if m.moe.shared_gate and m.moe.shared_width else 0))
        if m.attention_output_gate and m.mla is None and m.attention_kind(layer) != "gated_delta":
            left_out += m.hidden * m.heads * m.d_head
    return model_flops_per_token(m, s) - 6.0 * left_out


def _megatron_hfu(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    h, L, V = m.hidden, m.layers, m.vocab
    f = 72.0 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    return f * (4.0 / 3.0 if recompute == "full" else 1.0)


def _llmfoundry(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    return 6.0 * (stated or total_params(m)) + 12.0 * m.layers * m.hidden * s


def _torchtitan(m: ModelSpec, s: int, recompute: str, stated: float | None) -> float:
    return 6.0 * (total_params(m) - m.vocab * m.hidden) + 12.0 * m.layers * m.heads * m.d_head * s


for _c in (
    FlopConvention("standard", "Rankflow standard model FLOPs (README: MFU definition): 6 x matmul parameters + "
                   "12 x layers x heads x head_dim x the keys a query attends to under the causal mask, recompute "
                   "not counted; fine-tuning as the method computes it", _standard, finetune=True),
    FlopConvention("causal", "6 x matmul parameters + 6 x layers x heads x head_dim x seq (causal attention), "
                   "recompute not counted (Megatron-Core >= 0.12, Megatron-Bridge, NeMo 2025); fine-tuning as "
                   "the method computes it", _standard, finetune=True),
    # NeMo counts fine-tuning by its method: its 24.07 performance summary (NVIDIA/NeMo docs/source/performance/
    # performance_summary.md @070a0bb) logs LoRA at 2/3 of the model TFLOP per token of SFT on the same model.
    FlopConvention("megatron_core", "Megatron-Core's num_floating_point_operations (2025): the causal count "
                   "without the MoE router, the shared-expert gate and the attention output gate, which its "
                   "formula has no term for; fine-tuning as the method computes it", _megatron_core, finetune=True),
    FlopConvention("palm", "6 x matmul parameters + 12 x layers x heads x head_dim x seq (non-causal attention, "
                   "PaLM App. B), recompute not counted; fine-tuning as the method computes it (frozen weights "
                   "without weight gradients, as NeMo logs LoRA)", _palm, finetune=True),
    FlopConvention("megatron_hfu", "Megatron/Narayanan eq. 3: 72*l*h^2*(1 + s/(6h) + V/(16*l*h)) per token, x4/3 "
                   "under full recompute (hardware FLOPs)", _megatron_hfu),
    FlopConvention("llmfoundry", "llm-foundry: 6 x all parameters + 12 x layers x hidden x seq per token "
                   "(model FLOPs)", _llmfoundry),
    FlopConvention("torchtitan", "torchtitan: 6 x non-embedding parameters + 12 x layers x heads x head_dim x seq "
                   "(model FLOPs)", _torchtitan),
):
    FLOP_CONVENTIONS.add(_c.name, _c)

__all__ = ["FLOP_CONVENTIONS", "FlopConvention", "matmul_params"]
