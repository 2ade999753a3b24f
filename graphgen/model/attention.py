"""Attention blocks: the block builder per attention kind (full, sliding window), and the core's
kernel implementations (fused flash attention, or unfused scores/softmax/values)."""

from __future__ import annotations

import math
from collections.abc import Callable

from graphgen.model.common import column_input_saved, norm, residual_add
from graphgen.model.ops import Op, OpKind
from graphgen.model.params import attention_linears
from graphgen.model.shape import BlockShape
from graphgen.registry import Registry

CoreBuilder = Callable[[BlockShape, int], tuple[Op, ...]]
ATTENTION_KERNELS: Registry[CoreBuilder] = Registry("attention kernel")


def key_span(sh: BlockShape, kind: str) -> int:
    """Keys the last query attends to: the sequence, or the window of a sliding-window layer."""
    s = sh.workload.seq_len
    return min(s, sh.model.sliding_window) if kind == "sliding" and sh.model.sliding_window else s


def causal_fraction(s: int, window: int) -> float:
    """Fraction of the s x s score matrix a causal kernel computes: 1/2 for full causal attention
    (the masked half is skipped), less for a window narrower than the sequence."""
    if window >= s:
        return 0.5
    return (window * s - window * (window - 1) / 2) / (s * s)


@ATTENTION_KERNELS.register("fused")
def fused_core(sh: BlockShape, window: int) -> tuple[Op, ...]:
    """Flash attention: no s x s matrix; backward runs 5 products to forward's 2. A sliding window
    skips the keys outside it and walks only `window` keys per query block."""
    m, w, t, e = sh.model, sh.workload, sh.tp, sh.e
    b, s, a, kv, d = w.micro_batch, w.seq_len, m.heads, m.n_kv_heads, m.d_head
    T = sh.tokens
    score = 2 * b * a * s * s * d / t  # one s x s x d product over all heads of this rank
    return (Op("flash_attention", OpKind.ATTENTION, flops=2 * score * causal_fraction(s, window),
               bytes=e * T * (2 * a + 2 * kv) * d / t, in_layout=sh.heads, out_layout=sh.heads,
               out_bytes=e * T * a * d, saved_bytes=e * T * (a + 2 * kv) * d / t + 4 * b * a * s / t,
               bwd_flops_factor=2.5, bwd_bytes_factor=2.5, seq_len=window,
               attention_blocks=b * (a / t) * math.ceil(s / 128), local_out_bytes=e * T * a * d / t),)


@ATTENTION_KERNELS.register("unfused")
def unfused_core(sh: BlockShape, window: int) -> tuple[Op, ...]:
    """Scores, softmax and values as separate kernels over the full s x s matrix (a mask, not a
    narrower product, implements causality and windows), recomputed under selective recompute."""
    m, w, t, e = sh.model, sh.workload, sh.tp, sh.e
    b, s, a, kv, d = w.micro_batch, w.seq_len, m.heads, m.n_kv_heads, m.d_head
    T = sh.tokens
    drop = 1 if m.dropout > 0 else 0
    score = 2 * b * a * s * s * d / t
    probs = b * a * s * s / t
    return (
        Op("attn_scores", OpKind.MATMUL, flops=score, bytes=e * (T * (a + kv) * d / t + probs), in_layout=sh.heads,
           out_layout=sh.heads, out_bytes=e * probs * t, saved_bytes=e * T * (a + kv) * d / t,
           recompute_selective=True, local_out_bytes=sh.local(e * probs * t, False)),
        Op("softmax", OpKind.ELEMENTWISE, flops=5 * probs, bytes=(2 * e + drop) * probs, in_layout=sh.heads,
           out_layout=sh.heads, out_bytes=e * probs * t, saved_bytes=(e + drop) * probs, recompute_selective=True,
           selective_freed_bytes=(e + drop) * probs, local_out_bytes=sh.local(e * probs * t, False)),
        Op("attn_values", OpKind.MATMUL, flops=score, bytes=e * (probs + 2 * T * a * d / t), in_layout=sh.heads,
           out_layout=sh.heads, out_bytes=e * T * a * d, saved_bytes=(e * probs if drop else 0) + e * T * kv * d / t,
           recompute_selective=True, selective_freed_bytes=e * probs if drop else 0,
           local_out_bytes=sh.local(e * T * a * d, False)),
    )


def attention_ops(sh: BlockShape, kind: str) -> tuple[Op, ...]:
    """One attention sub-block: norm, qkv projection (column parallel), rotary embedding, the core,
    output projection (row parallel) and the residual add."""
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    qkv, out = attention_linears(m)
    ops: list[Op] = [norm(sh, "ln_attn")]
    ops.append(Op("qkv_proj", OpKind.MATMUL, flops=2 * T * qkv.weights / t,
                  bytes=e * (T * m.hidden + qkv.weights / t + T * qkv.d_out / t), in_layout=sh.replicated,
                  out_layout=sh.heads,
                  shards_input=sh.column_shards, out_bytes=e * T * qkv.d_out,
                  weight_params=qkv.weights / t + (qkv.d_out / t if qkv.bias else 0), saved_bytes=column_input_saved(sh),
                  shape=(qkv.d_in, qkv.d_out / t), local_out_bytes=e * T * qkv.d_out / t))
    if m.position_encoding == "rope":
        # Rotary embedding in complex arithmetic (eager) reads and writes fp32 copies: ~10 passes, not 2.
        passes, kernels = (10, 6) if sh.eager else (2, 1)
        rot = T * (m.heads + m.n_kv_heads) * m.d_head / t
        ops.append(Op("rope", OpKind.ELEMENTWISE, flops=3 * rot, bytes=passes * e * rot, in_layout=sh.heads,
                      out_layout=sh.heads, out_bytes=e * T * qkv.d_out, gemm_kernels=kernels,
                      local_out_bytes=e * T * qkv.d_out / t))
    core = "fused" if sh.workload.flash_attention else "unfused"
    ops.extend(ATTENTION_KERNELS[core](sh, key_span(sh, kind)))
    ops.append(Op("out_proj", OpKind.MATMUL, flops=2 * T * out.weights / t,
                  bytes=e * (T * out.d_in / t + out.weights / t + T * m.hidden), in_layout=sh.heads,
                  out_layout=sh.row_out, out_bytes=e * T * m.hidden,
                  weight_params=out.weights / t + (m.hidden if out.bias else 0), shape=(out.d_in / t, m.hidden),
                  saved_bytes=e * T * out.d_in / t, local_out_bytes=e * T * m.hidden / t))
    ops.append(residual_add(sh, "attn_residual"))
    return tuple(ops)


ATTENTION_BLOCKS: Registry[Callable[[BlockShape], tuple[Op, ...]]] = Registry("attention block")
ATTENTION_BLOCKS.add("full", lambda sh: attention_ops(sh, "full"))
ATTENTION_BLOCKS.add("sliding", lambda sh: attention_ops(sh, "sliding"))
