"""Attention blocks: the block builder per attention kind (full, sliding window, DeepSeek's latent
attention), and the core's kernel implementations (fused flash attention, or unfused
scores/softmax/values).

Context parallelism: each rank holds 1/cp of the sequence (two chunks, so causal work balances)
and needs every key and value. The ring variant passes K/V chunks peer to peer while the kernel
computes (Megatron's p2p; backward passes K/V again and the K/V gradients back); the all-gather
variant gathers them before the kernel and reduce-scatters their gradients after. Either is a
collective on the cp axis beside the core op (`Op.side_comm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from graphgen.model.common import column_input, column_input_saved, column_regather, norm, residual_add
from graphgen.model.linear_attention import gated_delta_ops
from graphgen.model.ops import Op, OpKind
from graphgen.model.params import attention_linears
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import Collective
from graphgen.registry import Registry


@dataclass(frozen=True)
class Dims:
    """Per-head widths and key/value heads of the attention core."""

    qk: int
    v: int
    kv_heads: int


def dims(sh: BlockShape) -> Dims:
    m = sh.model
    if m.mla is not None:  # after the up projection every head has its own key and value
        return Dims(m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim, m.mla.v_head_dim, m.heads)
    return Dims(m.d_head, m.d_head, m.n_kv_heads)


CoreBuilder = Callable[[BlockShape, int], tuple[Op, ...]]
ATTENTION_KERNELS: Registry[CoreBuilder] = Registry("attention kernel")


def key_span(sh: BlockShape, kind: str) -> int:
    """Keys the last query attends to: the sequence, or the window of a sliding-window layer."""
    s = sh.workload.seq_len
    return min(s, sh.model.sliding_window) if kind == "sliding" and sh.model.sliding_window else s


def causal_fraction(s: int, window: int, sample: int | None = None) -> float:
    """Fraction of the s x s score matrix a causal kernel computes: 1/2 for full causal attention
    (the masked half is skipped), less for a window narrower than the sequence, and for packed
    samples of `sample` tokens only the blocks on the diagonal (s / sample of them)."""
    n = min(sample or s, s)
    pairs = n * n / 2 if window >= n else window * n - window * (window - 1) / 2
    return pairs * (s / n) / (s * s)


def _cp_comm(sh: BlockShape, d: Dims) -> tuple:
    """(axis, pass, kind, full bytes, overlapped, after the op) of the cp exchange of keys and values.
    a2a: this rank's queries, keys and values go to the ranks owning their heads before the kernel and
    the output comes back after it; backward sends the output gradient and returns the input gradients
    (Transformer Engine >= 2.8 exchanges only dO on the output side, as MooreThreads/SimuMax notes)."""
    if sh.cp == 1:
        return ()
    w, e, t = sh.workload, sh.e, sh.tp
    kv = e * w.micro_batch * w.seq_len * d.kv_heads * (d.qk + d.v) / t
    AG, RS, A2A = Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL
    if sh.cp_algorithm == "a2a":
        local = e * sh.tokens / t
        qkv, out = local * (sh.model.heads * d.qk + d.kv_heads * (d.qk + d.v)), local * sh.model.heads * d.v
        return (("cp", "fwd", A2A, qkv, False, False), ("cp", "fwd", A2A, out, False, True),
                ("cp", "bwd", A2A, out, False, False), ("cp", "bwd", A2A, qkv, False, True))
    if sh.cp_algorithm == "ring":
        return (("cp", "fwd", AG, kv, True, False), ("cp", "bwd", AG, kv, True, False),
                ("cp", "bwd", RS, kv, True, True))
    return (("cp", "fwd", AG, kv, False, False), ("cp", "bwd", RS, kv, False, True))


def _kernel_keys(sh: BlockShape, window: int) -> float:
    """How far one kernel call's query blocks walk along the keys, which sets its rate: ring context
    parallelism calls the kernel once per key/value chunk it receives (s / cp keys), all-gather and
    all-to-all CP call it over the whole sequence."""
    keys = min(window, sh.workload.attention_len)
    return min(keys, sh.workload.seq_len / sh.cp) if sh.cp > 1 and sh.cp_algorithm == "ring" else keys


@ATTENTION_KERNELS.register("fused")
def fused_core(sh: BlockShape, window: int) -> tuple[Op, ...]:
    """Flash attention: no s x s matrix; backward runs 5 products to forward's 2. A sliding window
    skips the keys outside it and walks only `window` keys per query block."""
    m, w, t, e, d = sh.model, sh.workload, sh.tp, sh.e, dims(sh)
    b, s, a = w.micro_batch, w.seq_len, m.heads
    T = sh.tokens
    fwd = 2 * b * a * s * s * (d.qk + d.v) / t / sh.cp * causal_fraction(s, window, w.packed_sample_len)
    return (Op("flash_attention", OpKind.ATTENTION, flops=fwd,
               bytes=e * T * (a * d.qk + d.kv_heads * (d.qk + d.v) + a * d.v) / t, in_layout=sh.heads,
               out_layout=sh.heads, out_bytes=e * T * a * d.v,
               saved_bytes=e * T * (a * d.qk + d.kv_heads * (d.qk + d.v)) / t + 4 * b * a * s / t / sh.cp,
               bwd_flops_factor=2.5, bwd_bytes_factor=2.5, seq_len=_kernel_keys(sh, window),
               attention_blocks=b * (a / t) * math.ceil(s / sh.cp / 128), head_dim=max(d.qk, d.v),
               local_out_bytes=e * T * a * d.v / t,
               side_comm=_cp_comm(sh, d)),)


@ATTENTION_KERNELS.register("unfused")
def unfused_core(sh: BlockShape, window: int) -> tuple[Op, ...]:
    """Scores, softmax and values as separate kernels over the full s x s matrix (a mask, not a
    narrower product, implements causality and windows), recomputed under selective recompute."""
    m, w, t, e, d = sh.model, sh.workload, sh.tp, sh.e, dims(sh)
    b, s, a, kv = w.micro_batch, w.seq_len, m.heads, d.kv_heads
    T = sh.tokens
    drop = 1 if m.dropout > 0 else 0
    probs = b * a * s * s / t / sh.cp
    sides = _cp_comm(sh, d)  # what runs before the kernel rides on the scores, what runs after on the values
    before, after = tuple(c for c in sides if not c[5]), tuple(c for c in sides if c[5])
    return (
        Op("attn_scores", OpKind.MATMUL, flops=2 * probs * d.qk, bytes=e * (T * (a + kv) * d.qk / t + probs),
           in_layout=sh.heads, out_layout=sh.heads, out_bytes=e * probs * t, saved_bytes=e * T * (a + kv) * d.qk / t,
           recompute_selective=True, local_out_bytes=sh.local(e * probs * t, False), side_comm=before),
        Op("softmax", OpKind.ELEMENTWISE, flops=5 * probs, bytes=(2 * e + drop) * probs, in_layout=sh.heads,
           out_layout=sh.heads, out_bytes=e * probs * t, saved_bytes=(e + drop) * probs, recompute_selective=True,
           selective_freed_bytes=(e + drop) * probs, local_out_bytes=sh.local(e * probs * t, False)),
        Op("attn_values", OpKind.MATMUL, flops=2 * probs * d.v, bytes=e * (probs + 2 * T * a * d.v / t),
           in_layout=sh.heads, out_layout=sh.heads, out_bytes=e * T * a * d.v,
           saved_bytes=(e * probs if drop else 0) + e * T * kv * d.v / t, recompute_selective=True,
           selective_freed_bytes=e * probs if drop else 0, local_out_bytes=sh.local(e * T * a * d.v, False),
           side_comm=after),
    )


@ATTENTION_KERNELS.register("decode")
def decode_core(sh: BlockShape, window: int) -> tuple[Op, ...]:
    """One new token per sequence attending to its cached keys and values (flash-decoding, paged): the
    kernel streams the KV cache from HBM, so its time is the cache's bytes at the device's memory-bound
    rate; the new token's key and value are written into the cache."""
    m, t, e, d = sh.model, sh.tp, sh.e, dims(sh)
    b, a = sh.workload.micro_batch, m.heads
    keys = min(sh.kv_len, window) if window else sh.kv_len
    kv_per_token = _cache_width(sh) / t
    return (Op("decode_attention", OpKind.ELEMENTWISE, flops=2 * b * a * keys * (d.qk + d.v) / t,
               bytes=sh.kv_bytes * b * (keys + 1) * kv_per_token + e * b * a * (d.qk + d.v) / t,
               in_layout=sh.heads, out_layout=sh.heads, out_bytes=e * b * a * d.v, local_out_bytes=e * b * a * d.v / t),)


def _cache_width(sh: BlockShape) -> float:
    """Elements one token keeps in one layer's KV cache: keys and values per KV head, or MLA's compressed
    latent and its rotary key (DeepSeek-V2 Sec. 2.1.2: the cache holds c_KV and k_R only)."""
    m = sh.model
    if m.mla is not None:
        return (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * sh.tp  # replicated on every TP rank
    d = dims(sh)
    return d.kv_heads * (d.qk + d.v)


def _core(sh: BlockShape, kind: str) -> tuple[Op, ...]:
    if sh.kv_len:
        window = sh.model.sliding_window if kind == "sliding" and sh.model.sliding_window else 0
        return ATTENTION_KERNELS["decode"](sh, window)
    return ATTENTION_KERNELS["fused" if sh.workload.flash_attention else "unfused"](sh, key_span(sh, kind))


def _out_proj(sh: BlockShape) -> Op:
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    out = attention_linears(m)[-1]
    return Op("out_proj", OpKind.MATMUL, flops=2 * T * out.weights / t,
              bytes=e * (T * out.d_in / t + out.weights / t + T * m.hidden), in_layout=sh.heads,
              out_layout=sh.row_out, out_bytes=e * T * m.hidden,
              weight_params=out.weights / t + (m.hidden if out.bias else 0), shape=(out.d_in / t, m.hidden),
              saved_bytes=e * T * out.d_in / t, local_out_bytes=e * T * m.hidden / t)


def _rope(sh: BlockShape, width: float, out_bytes: float) -> Op:
    """Rotary embedding over `width` values per token on this rank. In complex arithmetic (eager) it
    reads and writes fp32 copies: about 10 passes instead of 2."""
    passes, kernels = (10, 6) if sh.eager else (2, 1)
    return Op("rope", OpKind.ELEMENTWISE, flops=3 * sh.tokens * width, bytes=passes * sh.e * sh.tokens * width,
              in_layout=sh.heads, out_layout=sh.heads, out_bytes=out_bytes, gemm_kernels=kernels,
              local_out_bytes=out_bytes / sh.tp)


def attention_ops(sh: BlockShape, kind: str) -> tuple[Op, ...]:
    """One attention sub-block: norm, qkv projection (column parallel), rotary embedding, the core,
    output projection (row parallel) and the residual add."""
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    qkv = attention_linears(m)[0]
    ops: list[Op] = [norm(sh, "ln_attn")]
    ops.append(Op("qkv_proj", OpKind.MATMUL, flops=2 * T * qkv.weights / t,
                  bytes=e * (T * m.hidden + qkv.weights / t + T * qkv.d_out / t), in_layout=sh.replicated,
                  out_layout=sh.heads, shards_input=sh.column_shards, out_bytes=e * T * qkv.d_out,
                  weight_params=qkv.weights / t + (qkv.d_out / t if qkv.bias else 0), **column_input(sh),
                  shape=(qkv.d_in, qkv.d_out / t), local_out_bytes=e * T * qkv.d_out / t, norm_input=True))
    if m.position_encoding == "rope":
        ops.append(_rope(sh, (m.heads + m.n_kv_heads) * m.d_head * m.rotary_fraction / t, e * T * qkv.d_out))
    gate = (_output_gate(sh),) if m.attention_output_gate else ()
    return (*ops, *_core(sh, kind), *gate, _out_proj(sh), residual_add(sh, "attn_residual"))


def _output_gate(sh: BlockShape) -> Op:
    """Gated attention (Qwen3-Next; Megatron --attention-output-gate): the core's output times the
    sigmoid of a gate the query projection also produces; backward needs both."""
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    width = m.heads * dims(sh).v / t
    return Op("attn_gate", OpKind.ELEMENTWISE, flops=5 * T * width, bytes=3 * e * T * width, in_layout=sh.heads,
              out_layout=sh.heads, out_bytes=e * T * width * t, saved_bytes=2 * e * T * width,
              local_out_bytes=e * T * width)


def mla_ops(sh: BlockShape, kind: str = "full") -> tuple[Op, ...]:
    """Multi-head latent attention (DeepSeek-V2 Section 2.1; Megatron-Core's MLASelfAttention): the
    down projections to the query and key/value latents (and the shared rotary key) are duplicated on
    every tensor-parallel rank; their norms; the up projections, column parallel by heads (with no
    query latent, the query projection sits beside the key/value up projection)."""
    m, t, e, T, mla = sh.model, sh.tp, sh.e, sh.tokens, sh.model.mla
    lins = {lin.name: lin for lin in attention_linears(m)}
    down = [lins[n] for n in ("q_down", "kv_down") if n in lins]
    up = [lins[n] for n in ("q_up", "q_proj", "kv_up") if n in lins]
    down_w, up_w = sum(lin.weights for lin in down), sum(lin.weights for lin in up) / t
    latent = (mla.q_lora_rank or 0) + mla.kv_lora_rank
    up_in = latent + (0 if mla.q_lora_rank else m.hidden)
    up_out = sum(lin.d_out for lin in up)
    d = dims(sh)
    ops = [norm(sh, "ln_attn"),
           Op("mla_down", OpKind.MATMUL, flops=2 * T * down_w, bytes=e * (T * m.hidden + down_w + T * (latent + mla.qk_rope_head_dim)),
              in_layout=sh.replicated, out_layout=sh.replicated, out_bytes=e * T * latent,
              weight_params=down_w, **column_input(sh), shape=(m.hidden, down_w / m.hidden),
              gemm_kernels=len(down), local_out_bytes=e * T * latent),
           Op("mla_norm", OpKind.NORM, flops=8 * T * latent, bytes=2 * e * T * latent, in_layout=sh.replicated,
              out_layout=sh.replicated, out_bytes=e * T * latent, weight_params=latent, saved_bytes=e * T * latent),
           Op("mla_up", OpKind.MATMUL, flops=2 * T * up_w, bytes=e * (T * up_in + up_w + T * up_out / t),
              in_layout=sh.replicated, out_layout=sh.heads, shards_input=sh.column_shards, out_bytes=e * T * up_out,
              weight_params=up_w, gemm_kernels=len(up), shape=(up_in, up_out / t), local_out_bytes=e * T * up_out / t,
              # without a query latent the query projection reads the hidden state, which sequence
              # parallelism shards and gathers again for its weight gradient, as any column-parallel input
              saved_bytes=e * T * latent + (0.0 if mla.q_lora_rank else column_input_saved(sh)),
              side_comm=() if mla.q_lora_rank else column_regather(sh))]
    ops.append(_rope(sh, m.heads * mla.qk_rope_head_dim / t + mla.qk_rope_head_dim, e * T * m.heads * d.qk))
    return (*ops, *_core(sh, kind), _out_proj(sh), residual_add(sh, "attn_residual"))


ATTENTION_BLOCKS: Registry[Callable[[BlockShape], tuple[Op, ...]]] = Registry("attention block")
ATTENTION_BLOCKS.add("full", lambda sh: attention_ops(sh, "full"))
ATTENTION_BLOCKS.add("sliding", lambda sh: attention_ops(sh, "sliding"))
ATTENTION_BLOCKS.add("mla", lambda sh: mla_ops(sh))
ATTENTION_BLOCKS.add("gated_delta", gated_delta_ops)
