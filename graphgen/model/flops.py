"""Model FLOPs under the stated standard definition, independent of any plan."""

from __future__ import annotations

from graphgen.config import ModelSpec


def matmul_params(m: ModelSpec) -> float:
    """Weights that take part in a matmul per token: every block's linears and the LM head.

    The input embedding is a lookup, not a matmul, so it is left out; a tied LM head still
    multiplies, so it is counted once.
    """
    a, kv, d, h, f = m.heads, m.n_kv_heads, m.d_head, m.hidden, m.ffn_hidden
    up = f * (2 if m.activation == "swiglu" else 1)
    per_layer = h * (a + 2 * kv) * d + a * d * h + h * up + f * h
    return m.layers * per_layer + m.vocab * h


def total_params(m: ModelSpec) -> float:
    """All trainable parameters (embeddings, norms and biases included)."""
    a, kv, d, h, f = m.heads, m.n_kv_heads, m.d_head, m.hidden, m.ffn_hidden
    up = f * (2 if m.activation == "swiglu" else 1)
    norms = (2 if m.norm == "layernorm" else 1) * h
    bias = ((a + 2 * kv) * d + h + up + h) if m.bias else 0
    per_layer = h * (a + 2 * kv) * d + a * d * h + h * up + f * h + 2 * norms + bias
    emb = m.vocab * h * (1 if m.tied_embeddings else 2)
    pos = (m.max_position or 0) * h if m.position_encoding == "learned" else 0
    return m.layers * per_layer + emb + pos + norms


def model_flops_per_token(m: ModelSpec, seq_len: int) -> float:
    """Standard model FLOPs per token for one training step (PaLM, Chowdhery et al. 2022, App. B).

    6 x matmul parameters (forward 2, backward 4) plus 12 x layers x heads x head_dim x seq for
    attention scores, non-causal, without recompute.
    """
    return 6.0 * matmul_params(m) + 12.0 * m.layers * m.heads * m.d_head * seq_len


def recompute_flops_per_token(m: ModelSpec, seq_len: int, recompute: str, flash_attention: bool,
                              every: int = 1) -> float:
    """Forward FLOPs re-executed per token by activation recompute, in the convention above.

    Full recompute reruns every block's forward; selective reruns the attention-score products,
    which a fused attention kernel already recomputes inside its own backward (not counted).
    """
    attn_fwd = 4.0 * m.layers * m.heads * m.d_head * seq_len
    if recompute == "full":
        blocks = -(-m.layers // every) / m.layers  # fraction of blocks checkpointed (every k-th)
        return blocks * (2.0 * (matmul_params(m) - m.vocab * m.hidden) + attn_fwd)
    if recompute == "selective" and not flash_attention:
        return attn_fwd
    return 0.0
