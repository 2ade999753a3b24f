"""The input embedding and the output head (final norm, LM head, loss)."""

from __future__ import annotations

import dataclasses

from graphgen.model.block import layer_ops
from graphgen.model.common import column_input, dropout_mask_bytes, norm
from graphgen.model.kinds import layer_kind
from graphgen.model.ops import Op, OpKind
from graphgen.model.shape import BlockShape


def embedding_ops(sh: BlockShape) -> tuple[Op, ...]:
    """Vocab-parallel lookup: each rank holds V/tp rows, so the output is a partial sum over tp.

    Its backward writes a dense gradient of the whole table: PyTorch's embedding_dense_backward zero-fills
    one (aten/src/ATen/native/cuda/Embedding.cu) before scattering the tokens' rows into it; a framework
    that keeps fp32 main gradients beside the parameters then adds it into its buffer (sh.main_grad_bytes:
    read the gradient, read and write the buffer)."""
    m, e, T, t = sh.model, sh.e, sh.tokens, sh.tp
    params = sh.vocab * m.hidden / t + (m.max_position or sh.workload.seq_len) * m.hidden * (
        m.position_encoding == "learned")
    lookup = 2 * e * T * m.hidden
    table = params * (e + (e + 2 * sh.main_grad_bytes if sh.main_grad_bytes else 0.0))
    return (Op("embedding", OpKind.EMBEDDING, flops=0.0, bytes=lookup, in_layout=sh.replicated,
               out_layout=sh.row_out,
               out_bytes=e * T * m.hidden, weight_params=params, saved_bytes=dropout_mask_bytes(sh),
               shape=(sh.vocab / t, m.hidden), bwd_flops_factor=0.0, bwd_bytes_factor=(3 * lookup + table) / lookup,
               local_out_bytes=sh.local(e * T * m.hidden, False)),)


def head_ops(sh: BlockShape) -> tuple[Op, ...]:
    """Final norm, column-parallel LM head and vocab-parallel cross-entropy, then any
    multi-token-prediction modules (mtp_ops)."""
    m = sh.model
    # A tied LM head reuses the embedding table on the same rank only when one stage holds both.
    params = 0.0 if (m.tied_embeddings and sh.pp == 1) else sh.vocab * m.hidden / sh.tp
    ops = _output(sh, "", params)
    for i in range(m.mtp_layers):
        ops += mtp_ops(sh, f"mtp{i}.")
    return ops


def mtp_ops(sh: BlockShape, prefix: str) -> tuple[Op, ...]:
    """One multi-token-prediction module (DeepSeek-V3 Section 2.2, Megatron-Core's MTP block): norms of
    the hidden state and of the next token's embedding, their concatenation projected 2h -> h
    (duplicated on every tensor-parallel rank), a transformer block like the last layer, and its own
    pass through the shared output head and loss."""
    m, e, T, h = sh.model, sh.e, sh.tokens, sh.model.hidden
    block = layer_ops(sh, layer_kind(m, m.layers - 1))
    ops = (
        Op(prefix + "norms", OpKind.NORM, flops=16 * T * h, bytes=4 * e * T * h, in_layout=sh.resid, out_layout=sh.resid,
           out_bytes=2 * e * T * h, weight_params=2 * h, saved_bytes=2 * e * T * h, local_out_bytes=sh.local(2 * e * T * h, False)),
        Op(prefix + "proj", OpKind.MATMUL, flops=2 * T * 2 * h * h, bytes=e * (2 * T * h + 2 * h * h + T * h),
           in_layout=sh.replicated, out_layout=sh.resid, out_bytes=e * T * h, weight_params=2 * h * h,
           saved_bytes=2 * e * T * h, shape=(2 * h, h), local_out_bytes=e * T * h),
        *(dataclasses.replace(op, name=prefix + op.name) for op in block),
    )
    return ops + _output(sh, prefix, 0.0)


def _output(sh: BlockShape, prefix: str, head_params: float) -> tuple[Op, ...]:
    """Norm, LM head and loss. The loss keeps fp32 logits; per-token max, sum-exp and target logit are
    partial sums over the vocab shards (3 fp32 values per token to all-reduce). Fused: one kernel reads
    the logits and writes their gradient in place (e bytes each way per logit). Unfused: separate passes
    over fp32 logits, as Megatron's vocab_parallel_cross_entropy runs them (megatron/core/tensor_parallel/
    cross_entropy.py @core_r0.8.0): upcast (e + 4), max (4), subtract (8), exp (8), sum (4), divide
    into the saved softmax (8) forward; subtract the one-hot and scale (8), cast back (4 + e) backward."""
    m, w, e, T, t, V = sh.model, sh.workload, sh.e, sh.tokens, sh.tp, sh.vocab
    params = head_params
    fused = w.fused_cross_entropy
    return (
        norm(sh, prefix + "ln_final"),
        Op(prefix + "lm_head", OpKind.MATMUL, flops=2 * T * m.hidden * V / t, bytes=e * (T * m.hidden + V * m.hidden / t + T * V / t),
           in_layout=sh.replicated, out_layout=sh.vocab_shard, shards_input=sh.column_shards, out_bytes=e * T * V,
           weight_params=params,
           **column_input(sh), shape=(m.hidden, V / t), local_out_bytes=sh.local(e * T * V, False),
           high_precision=True),
        Op(prefix + "cross_entropy", OpKind.LOSS, flops=6 * T * V / t, bytes=(2 * e if fused else e + 36) * T * V / t,
           in_layout=sh.vocab_shard, out_layout=sh.row_out, out_bytes=12 * T,
           saved_bytes=(e if fused else 4) * T * V / t, bwd_flops_factor=0.5,
           bwd_bytes_factor=1.0 if fused else (e + 12) / (e + 36),
           local_out_bytes=sh.local(12 * T, False)),
    )
