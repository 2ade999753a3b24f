"""Model FLOPs under the stated standard definition, independent of any plan."""

from __future__ import annotations

from graphgen.config.model import ModelSpec
from graphgen.model.params import matmul_params, total_params

__all__ = ["attention_keys", "matmul_params", "model_flops_per_token", "recompute_flops_per_token", "total_params"]


def attention_keys(m: ModelSpec, seq_len: int) -> int:
    """Keys summed over layers that a query attends to: the sequence in full-attention layers, the
    window in sliding-window layers."""
    window = min(seq_len, m.sliding_window or seq_len)
    sliding = sum(1 for layer in range(m.layers) if m.attention_kind(layer) == "sliding")
    return (m.layers - sliding) * seq_len + sliding * window


def model_flops_per_token(m: ModelSpec, seq_len: int) -> float:
    """Standard model FLOPs per token for one training step (PaLM, Chowdhery et al. 2022, App. B).

    6 x matmul parameters (forward 2, backward 4) plus 12 x heads x head_dim x the keys each query
    attends to, summed over layers (seq_len per layer, or the window of a sliding-window layer), for
    attention scores, non-causal, without recompute.
    """
    return 6.0 * matmul_params(m) + 12.0 * m.heads * m.d_head * attention_keys(m, seq_len)


def recompute_flops_per_token(m: ModelSpec, seq_len: int, recompute: str, flash_attention: bool,
                              every: int = 1) -> float:
    """Forward FLOPs re-executed per token by activation recompute, in the convention above.

    Full recompute reruns every block's forward; selective reruns the attention-score products,
    which a fused attention kernel already recomputes inside its own backward (not counted).
    """
    attn_fwd = 4.0 * m.heads * m.d_head * attention_keys(m, seq_len)
    if recompute == "full":
        blocks = -(-m.layers // every) / m.layers  # fraction of blocks checkpointed (every k-th)
        return blocks * (2.0 * (matmul_params(m) - m.vocab * m.hidden) + attn_fwd)
    if recompute == "selective" and not flash_attention:
        return attn_fwd
    return 0.0
