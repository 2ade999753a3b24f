"""The input embedding and the output head (final norm, LM head, loss)."""

from __future__ import annotations

from graphgen.model.common import column_input_saved, dropout_mask_bytes, norm
from graphgen.model.ops import Op, OpKind
from graphgen.model.shape import BlockShape


def embedding_ops(sh: BlockShape) -> tuple[Op, ...]:
    """Vocab-parallel lookup: each rank holds V/tp rows, so the output is a partial sum over tp."""
    m, e, T, t = sh.model, sh.e, sh.tokens, sh.tp
    params = sh.vocab * m.hidden / t + (m.max_position or sh.workload.seq_len) * m.hidden * (
        m.position_encoding == "learned")
    return (Op("embedding", OpKind.EMBEDDING, flops=0.0, bytes=2 * e * T * m.hidden, in_layout=sh.replicated,
               out_layout=sh.row_out,
               out_bytes=e * T * m.hidden, weight_params=params, saved_bytes=dropout_mask_bytes(sh),
               shape=(sh.vocab / t, m.hidden), bwd_flops_factor=0.0, bwd_bytes_factor=3.0,
               local_out_bytes=sh.local(e * T * m.hidden, False)),)


def head_ops(sh: BlockShape) -> tuple[Op, ...]:
    """Final norm, column-parallel LM head and vocab-parallel cross-entropy.

    The loss keeps fp32 logits; per-token max, sum-exp and target logit are partial sums over the
    vocab shards (3 fp32 values per token to all-reduce). Fused: the kernel keeps only the logits'
    gradient in bf16; unfused: an fp32 softmax copy.
    """
    m, w, e, T, t, V = sh.model, sh.workload, sh.e, sh.tokens, sh.tp, sh.vocab
    # A tied LM head reuses the embedding table on the same rank only when one stage holds both.
    params = 0.0 if (m.tied_embeddings and sh.pp == 1) else V * m.hidden / t
    fused = w.fused_cross_entropy
    return (
        norm(sh, "ln_final"),
        Op("lm_head", OpKind.MATMUL, flops=2 * T * m.hidden * V / t, bytes=e * (T * m.hidden + V * m.hidden / t + T * V / t),
           in_layout=sh.replicated, out_layout=sh.vocab_shard, shards_input=sh.column_shards, out_bytes=e * T * V,
           weight_params=params,
           saved_bytes=column_input_saved(sh), shape=(m.hidden, V / t), local_out_bytes=sh.local(e * T * V, False)),
        Op("cross_entropy", OpKind.LOSS, flops=6 * T * V / t, bytes=(2 * e if fused else e + 8) * T * V / t,
           in_layout=sh.vocab_shard, out_layout=sh.row_out, out_bytes=12 * T,
           saved_bytes=(e if fused else 4) * T * V / t, bwd_flops_factor=0.5, bwd_bytes_factor=1.0,
           local_out_bytes=sh.local(12 * T, False)),
    )
