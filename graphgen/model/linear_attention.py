"""Gated DeltaNet layers (Yang et al. 2024, arXiv 2412.06464), as Megatron-Core's GatedDeltaNet and HF's
Qwen3NextGatedDeltaNet run them: a column-parallel input projection, a short causal depthwise
convolution over queries, keys and values, the chunked gated delta rule (flash-linear-attention's
chunk_gated_delta_rule), a norm gated by z, and a row-parallel output projection. Tensor parallelism
splits the heads; nothing passes between context-parallel ranks (refused by the scenario check).

The delta-rule kernel is priced on the roofline like a GEMM: its FLOPs (Megatron's count) at the GEMM
efficiency of its size, or its HBM traffic when that takes longer, which it does: it reads q, k, v and
the gates, writes the output, and writes one fp32 (key x value) state per head for every chunk of CHUNK
tokens, which its backward reads again.
"""

from __future__ import annotations

from graphgen.model.common import column_input, norm, residual_add
from graphgen.model.flops import gated_delta_core_fwd
from graphgen.model.ops import Op, OpKind
from graphgen.model.params import gated_delta_linears
from graphgen.model.shape import BlockShape

CHUNK = 64  # flash-linear-attention fla/ops/gated_delta_rule/chunk.py: chunk_size 64


def gated_delta_ops(sh: BlockShape) -> tuple[Op, ...]:
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    la = m.linear_attention
    qk, v = la.key_heads * la.key_head_dim, la.value_heads * la.value_head_dim
    proj, out = gated_delta_linears(m)
    conv = 2 * qk + v  # the channels the convolution runs over
    state = 4 * la.value_heads * la.key_head_dim * la.value_head_dim / CHUNK  # fp32 bytes per token
    core_in = e * T * conv / t + 4 * T * 2 * la.value_heads / t  # q, k, v and the fp32 decay and step
    return (
        norm(sh, "ln_attn"),
        Op("gdn_in_proj", OpKind.MATMUL, flops=2 * T * proj.weights / t,
           bytes=e * (T * m.hidden + proj.weights / t + T * proj.d_out / t), in_layout=sh.replicated,
           out_layout=sh.heads, shards_input=sh.column_shards, out_bytes=e * T * proj.d_out,
           weight_params=proj.weights / t, **column_input(sh), shape=(m.hidden, proj.d_out / t),
           local_out_bytes=e * T * proj.d_out / t, norm_input=True),
        # The convolution's weights and the per-head decay and step parameters (A_log, dt_bias): the core
        # itself is a product of activations, with input gradients only.
        Op("gdn_conv", OpKind.ELEMENTWISE, flops=2 * T * la.conv_kernel * conv / t, bytes=2 * e * T * conv / t,
           in_layout=sh.heads, out_layout=sh.heads, out_bytes=e * T * conv,
           weight_params=(la.conv_kernel * conv + 2 * la.value_heads) / t, saved_bytes=e * T * conv / t,
           local_out_bytes=e * T * conv / t),
        Op("gdn_core", OpKind.MATMUL, flops=T * (gated_delta_core_fwd(m) - 2 * la.conv_kernel * conv) / t,
           bytes=core_in + e * T * v / t + T * state / t, in_layout=sh.heads, out_layout=sh.heads,
           out_bytes=e * T * v, saved_bytes=core_in, local_out_bytes=e * T * v / t),
        Op("gdn_norm", OpKind.NORM, flops=8 * T * v / t, bytes=3 * e * T * v / t, in_layout=sh.heads,
           out_layout=sh.heads, out_bytes=e * T * v, weight_params=la.value_head_dim,
           saved_bytes=2 * e * T * v / t, local_out_bytes=e * T * v / t),
        Op("out_proj", OpKind.MATMUL, flops=2 * T * out.weights / t, bytes=e * (T * v / t + out.weights / t + T * m.hidden),
           in_layout=sh.heads, out_layout=sh.row_out, out_bytes=e * T * m.hidden, weight_params=out.weights / t,
           shape=(v / t, m.hidden), saved_bytes=e * T * v / t, local_out_bytes=e * T * m.hidden / t),
        residual_add(sh, "attn_residual"),
    )
