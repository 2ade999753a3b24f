"""Model FLOPs under the stated standard definition, independent of any plan."""

from __future__ import annotations

from graphgen.config.model import FineTune, ModelSpec
from graphgen.model.finetune import FINETUNE_METHODS
from graphgen.model.params import block_linears, block_matmul_params, matmul_params, total_params

__all__ = ["attention_keys", "matmul_params", "model_flops_per_token", "recompute_flops_per_token", "total_params"]


def _keys(m: ModelSpec, layer: int, seq_len: int) -> int:
    """Keys a query may attend to in one layer, ignoring the causal mask: the sequence, or the window
    of a sliding-window layer (the non-causal count of PaLM-style conventions); none in a linear-
    attention layer."""
    kind = m.attention_kind(layer)
    if kind == "gated_delta":
        return 0
    if kind == "sliding" and m.sliding_window:
        return min(seq_len, m.sliding_window)
    return seq_len


def _causal_keys(m: ModelSpec, layer: int, seq_len: int) -> float:
    """Keys a query attends to on average under the causal mask: query i sees min(i, window) keys, so
    (w s - w (w - 1) / 2) / s for a window w <= s ((s + 1) / 2 for full attention)."""
    w = _keys(m, layer, seq_len)
    return (w * seq_len - w * (w - 1) / 2) / seq_len


def _attention_fwd(m: ModelSpec, layer: int, seq_len: int) -> float:
    """Forward attention FLOPs per token of one layer, as computed under the causal mask: 2 x heads x
    (qk + v width) x the keys a query attends to (4 x heads x head_dim x keys when the widths agree)."""
    if m.attention_kind(layer) == "gated_delta":
        return gated_delta_core_fwd(m)
    qk, v = attention_widths(m)
    return 2.0 * m.heads * (qk + v) * _causal_keys(m, layer, seq_len)


def gated_delta_core_fwd(m: ModelSpec) -> float:
    """Forward FLOPs per token of a Gated DeltaNet layer outside its projections, as Megatron-Core counts
    them (megatron/training/training.py gdn_layer_flops): the convolution, 2 x kernel x (2 qk + v), and
    the delta rule's KK^T, VK^T, state update and read-out, 2 x 4 x value heads x dk x dv."""
    la = m.linear_attention
    qk, v = la.key_heads * la.key_head_dim, la.value_heads * la.value_head_dim
    return 2.0 * (la.conv_kernel * (2 * qk + v) + 4 * la.value_heads * la.key_head_dim * la.value_head_dim)


def attention_widths(m: ModelSpec) -> tuple[int, int]:
    """Per-head query/key and value widths (MLA's differ)."""
    if m.mla is not None:
        return m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim, m.mla.v_head_dim
    return m.d_head, m.d_head


def attention_keys(m: ModelSpec, seq_len: int) -> int:
    """Keys a query attends to, summed over layers."""
    return sum(_keys(m, layer, seq_len) for layer in range(m.layers))


def model_flops_per_token(m: ModelSpec, seq_len: int, finetune: FineTune | None = None) -> float:
    """Standard model FLOPs per token for one training step (PaLM, Chowdhery et al. 2022, App. B, with
    the attention FLOPs the causal mask leaves, as Megatron-Core >= 0.12 counts them).

    Pretraining: 6 x matmul parameters (forward 2, backward 4) plus 12 x heads x head_dim x the keys
    each query attends to under the causal mask, summed over layers, without recompute. Counting the
    masked half too (PaLM) would put MFU above 100 % at long sequences, which no GPU can reach. Fine-tuning counts
    what the method computes, in the same convention: frozen weights have no weight-gradient
    FLOPs, a frozen prefix of layers no backward at all, and adapters their own 6 x parameters.
    """
    if finetune is None or finetune.method == "full":
        return 6.0 * matmul_params(m) + 3.0 * sum(_attention_fwd(m, layer, seq_len) for layer in range(m.layers))
    method = FINETUNE_METHODS[finetune.method]
    frozen = finetune.frozen_layers if method.frozen_prefix else 0
    total = 0.0
    for layer in range(m.layers):
        weights, attn = block_matmul_params(m, layer, active=True), _attention_fwd(m, layer, seq_len)
        total += 2 * weights + attn  # forward
        if layer >= frozen:  # backward: input gradients, attention, and weight gradients if they train
            total += 2 * weights + 2 * attn + (2 * weights if method.trains_block_weights() else 0)
        if method.adapters:
            total += 6.0 * _adapter_params(m, finetune, layer, method.magnitude)
    head = m.vocab * m.hidden
    return total + 2 * head + 2 * head + (2 * head if method.trains_head(finetune) else 0)


def _adapter_params(m: ModelSpec, ft: FineTune, layer: int, magnitude: bool) -> float:
    return sum(ft.lora_rank * (lin.d_in + lin.d_out) + (lin.d_out if magnitude else 0)
               for lin in block_linears(m, layer) if lin.name in ft.target_modules)


def recompute_flops_per_token(m: ModelSpec, seq_len: int, recompute: str, flash_attention: bool,
                              every: int = 1, frozen_layers: int = 0) -> float:
    """Forward FLOPs re-executed per token by activation recompute, in the convention above.

    Full recompute reruns the forward of every checkpointed block that has a backward; selective
    reruns the attention-score products, which a fused attention kernel already recomputes inside
    its own backward (not counted).
    """
    layers = [layer for layer in range(frozen_layers, m.layers)]
    if recompute == "full":
        return sum(2.0 * block_matmul_params(m, layer, active=True) + _attention_fwd(m, layer, seq_len)
                   for layer in layers if layer % every == 0)
    if recompute == "selective" and not flash_attention:  # softmax layers only: a linear-attention core is not rerun
        return sum(_attention_fwd(m, layer, seq_len) for layer in layers if m.attention_kind(layer) != "gated_delta")
    return 0.0


def inference_flops_per_token(m: ModelSpec, query_len: int, key_len: int) -> float:
    """Forward FLOPs per processed token of an inference iteration: 2 x active matmul parameters (the LM
    head included; vLLM computes logits for every token of a decode step) plus attention over the keys
    each query sees: causal over the prompt in a prefill, the whole cache in a decode step."""
    qk, v = attention_widths(m)
    if query_len > 1:
        keys = sum(_causal_keys(m, layer, query_len) for layer in range(m.layers))
    else:
        keys = sum(_keys(m, layer, key_len) for layer in range(m.layers))
    return 2.0 * matmul_params(m) + 2.0 * m.heads * (qk + v) * keys
